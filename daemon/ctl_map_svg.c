// SPDX-License-Identifier: GPL-2.0
/*
 * ctl_map_svg.c - draws a VM's block map as SVG.
 *
 * One square per 2 MiB block, CTL_MAP_COLUMNS to a row (a row is 128 MiB of
 * guest-physical space), gpa 0 at the top left.  A block's colour is its
 * kind (enum ctl_map_kind): what the host did with it first (reclaimed,
 * captured), else what the guest's fresh scan says (free, movable, pinned
 * by slab, pinned by other unmovable memory, not RAM).  Huge-mapped on the
 * host is independent of the kind: a dark dot in the square.  Each square
 * has a <title> (shown on hover): its number, gpa, kind, the slab cache the
 * guest named, and whether the host maps it huge.  Below the grid: a
 * legend with the count and size of every kind, and the totals.
 *
 * Cache names come from the guest: the wire already holds them to printable
 * ASCII of at most 31 bytes; here they are bounded again and XML-escaped,
 * like every string written.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_client.h"
#include "ctl_map_svg.h"
#include "ctl_proto.h"
#include "vm.h"

#define CTL_MAP_COLUMNS	64
#define CTL_MAP_CELL	12	/* px per block, gap included */
#define CTL_MAP_MARGIN	16
#define CTL_MAP_LEGEND_ROW	20

static const struct {
	const char *name;
	const char *color;
	const char *what;
} ctl_map_kinds[CTL_MAP_NKINDS] = {
	[CTL_MAP_RECLAIMED] = { "reclaimed", "#ffffff", "reclaimed on the host" },
	[CTL_MAP_CAPTURED] = { "captured", "#9b59b6", "captured by the guest for the host" },
	[CTL_MAP_FREE] = { "free", "#7bd389", "free in the guest" },
	[CTL_MAP_MOVABLE] = { "movable", "#5dade2", "movable pages only" },
	[CTL_MAP_SLAB] = { "slab", "#f39c12", "pinned by slab" },
	[CTL_MAP_UNMOVABLE] = { "unmovable", "#e74c3c", "pinned by other unmovable memory" },
	[CTL_MAP_OFFLINE] = { "offline", "#4d4d4d", "reserved, offline or not guest RAM" },
};

const char *ctl_map_kind_name(enum ctl_map_kind kind)
{
	return kind < CTL_MAP_NKINDS ? ctl_map_kinds[kind].name : "?";
}

static unsigned int ctl_map_host_flags(char host)
{
	if (host >= '0' && host <= '9')
		return (unsigned int)(host - '0');
	if (host >= 'a' && host <= 'f')
		return (unsigned int)(host - 'a' + 10);
	return 0;
}

enum ctl_map_kind ctl_map_block_kind(char guest, char host)
{
	unsigned int h = ctl_map_host_flags(host);

	if (h & VM_HOST_RECLAIMED)
		return CTL_MAP_RECLAIMED;
	if ((h & VM_HOST_CAPTURED) || guest == 'C')
		return CTL_MAP_CAPTURED;
	switch (guest) {
	case 'F': return CTL_MAP_FREE;
	case 'M': return CTL_MAP_MOVABLE;
	case 'S': case 'E': return CTL_MAP_SLAB;
	case 'P': case 'R': case 'N': case 'U': return CTL_MAP_UNMOVABLE;
	default: return CTL_MAP_OFFLINE;
	}
}

/* Writes s, at most max bytes of it, XML-escaped. */
static void ctl_map_xml(FILE *f, const char *s, size_t max)
{
	for (size_t i = 0; s[i] && i < max; i++) {
		unsigned char ch = (unsigned char)s[i];

		switch (ch) {
		case '&': fputs("&amp;", f); break;
		case '<': fputs("&lt;", f); break;
		case '>': fputs("&gt;", f); break;
		case '"': fputs("&quot;", f); break;
		case '\'': fputs("&apos;", f); break;
		default:
			fputc(ch >= 0x20 && ch < 0x7f ? ch : '?', f);
		}
	}
}

static const char *ctl_map_cause_text(char guest)
{
	switch (guest) {
	case 'S': return "slab";
	case 'E': return "reclaimable slab";
	case 'P': return "page tables";
	case 'R': return "reserved pages";
	case 'N': return "pinned pages";
	case 'U': return "other kernel memory";
	default: return NULL;
	}
}

int ctl_map_svg(struct json_object *map, FILE *f, struct ctl_map_totals *ret_totals)
{
	struct json_object *jg = ctl_client_get(map, "guest");
	struct json_object *jh = ctl_client_get(map, "host");
	struct json_object *names = ctl_client_get(map, "slab_caches");
	struct json_object *slabs = ctl_client_get(map, "slabs");
	struct ctl_map_totals t = { 0 };
	const char *guest, *host, *vm = ctl_client_str(map, "vm") ?: "?";
	bool huge_known = json_object_get_boolean(ctl_client_get(map, "huge_known"));
	size_t n, nslabs, si = 0;
	unsigned int rows, width, height;

	if (!jg || !jh || !json_object_is_type(jg, json_type_string) ||
	    !json_object_is_type(jh, json_type_string))
		return -EBADMSG;
	guest = json_object_get_string(jg);
	host = json_object_get_string(jh);
	n = strlen(guest);
	if (strlen(host) != n)
		return -EBADMSG;
	nslabs = slabs && json_object_is_type(slabs, json_type_array) ?
		 json_object_array_length(slabs) : 0;
	rows = (unsigned int)((n + CTL_MAP_COLUMNS - 1) / CTL_MAP_COLUMNS);
	width = 2 * CTL_MAP_MARGIN + CTL_MAP_COLUMNS * CTL_MAP_CELL;
	if (width < 560)
		width = 560;
	height = 2 * CTL_MAP_MARGIN + 28 + rows * CTL_MAP_CELL + 16 +
		 (CTL_MAP_NKINDS + 2) * CTL_MAP_LEGEND_ROW;

	fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%u\" height=\"%u\" "
		"viewBox=\"0 0 %u %u\" font-family=\"sans-serif\" font-size=\"12\">\n",
		width, height, width, height);
	fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"#f4f4f4\"/>\n");
	fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"15\" font-weight=\"bold\">"
		"VM ", CTL_MAP_MARGIN, CTL_MAP_MARGIN + 8);
	ctl_map_xml(f, vm, 63);
	fprintf(f, ": %zu blocks of 2 MiB, %d per row</text>\n", n, CTL_MAP_COLUMNS);
	fprintf(f, "<g id=\"blocks\" transform=\"translate(%d,%d)\">\n", CTL_MAP_MARGIN,
		CTL_MAP_MARGIN + 28);
	for (size_t i = 0; i < n; i++) {
		enum ctl_map_kind k = ctl_map_block_kind(guest[i], host[i]);
		bool huge = ctl_map_host_flags(host[i]) & VM_HOST_HUGE;
		unsigned int x = (unsigned int)(i % CTL_MAP_COLUMNS) * CTL_MAP_CELL;
		unsigned int y = (unsigned int)(i / CTL_MAP_COLUMNS) * CTL_MAP_CELL;
		const char *cache = NULL, *cause = ctl_map_cause_text(guest[i]);

		t.kind[k]++;
		t.huge += huge;
		/* slabs lists [block, index] in ascending block order */
		while (si < nslabs) {
			struct json_object *p = json_object_array_get_idx(slabs, si);
			uint64_t b = (uint64_t)json_object_get_int64(
				json_object_array_get_idx(p, 0));

			if (b > i)
				break;
			si++;
			if (b == i && names) {
				int idx = json_object_get_int(json_object_array_get_idx(p, 1));

				if (idx >= 0 && (size_t)idx < json_object_array_length(names))
					cache = json_object_get_string(
						json_object_array_get_idx(names, (size_t)idx));
			}
		}
		fprintf(f, "<rect class=\"%s\" x=\"%u\" y=\"%u\" width=\"%d\" height=\"%d\" "
			"fill=\"%s\" stroke=\"#999\" stroke-width=\"0.5\"><title>block %zu "
			"(gpa 0x%" PRIx64 "): %s", ctl_map_kinds[k].name, x, y,
			CTL_MAP_CELL - 2, CTL_MAP_CELL - 2, ctl_map_kinds[k].color, i,
			(uint64_t)(i * PROTO_BLOCK_SIZE), ctl_map_kinds[k].what);
		if (cause && k != CTL_MAP_SLAB)
			fprintf(f, " (%s)", cause);
		if (cache) {
			fputs(", slab cache '", f);
			ctl_map_xml(f, cache, PROTO_NAME_LEN - 1);
			fputs("'", f);
		}
		if (huge)
			fputs(", huge-mapped on the host", f);
		fputs("</title></rect>\n", f);
		if (huge)
			fprintf(f, "<circle class=\"huge\" cx=\"%u\" cy=\"%u\" r=\"2\" "
				"fill=\"#111\"/>\n", x + (CTL_MAP_CELL - 2) / 2,
				y + (CTL_MAP_CELL - 2) / 2);
	}
	fputs("</g>\n", f);

	t.blocks = n;
	{
		unsigned int y = CTL_MAP_MARGIN + 28 + rows * CTL_MAP_CELL + 24;

		fprintf(f, "<g id=\"legend\" transform=\"translate(%d,%u)\">\n",
			CTL_MAP_MARGIN, y);
		for (int k = 0; k < CTL_MAP_NKINDS; k++) {
			fprintf(f, "<rect x=\"0\" y=\"%d\" width=\"12\" height=\"12\" "
				"fill=\"%s\" stroke=\"#999\"/><text x=\"18\" y=\"%d\" "
				"class=\"total\" data-kind=\"%s\" data-blocks=\"%" PRIu64
				"\">%s: %" PRIu64 " blocks (%" PRIu64 " MiB)</text>\n",
				k * CTL_MAP_LEGEND_ROW, ctl_map_kinds[k].color,
				k * CTL_MAP_LEGEND_ROW + 10, ctl_map_kinds[k].name, t.kind[k],
				ctl_map_kinds[k].what, t.kind[k], t.kind[k] * 2);
		}
		fprintf(f, "<circle cx=\"6\" cy=\"%d\" r=\"2\" fill=\"#111\"/><text x=\"18\" "
			"y=\"%d\" class=\"total\" data-kind=\"huge\" data-blocks=\"%" PRIu64
			"\">dot: huge-mapped on the host: ", CTL_MAP_NKINDS * CTL_MAP_LEGEND_ROW + 6,
			CTL_MAP_NKINDS * CTL_MAP_LEGEND_ROW + 10, t.huge);
		if (huge_known)
			fprintf(f, "%" PRIu64 " blocks (%" PRIu64 " MiB)</text>\n", t.huge,
				t.huge * 2);
		else
			fputs("not measured (the daemon cannot read QEMU's pagemap)</text>\n", f);
		fprintf(f, "<text x=\"0\" y=\"%d\" font-weight=\"bold\">total: %" PRIu64
			" blocks (%" PRIu64 " MiB of guest-physical space)</text>\n",
			(CTL_MAP_NKINDS + 1) * CTL_MAP_LEGEND_ROW + 14, t.blocks,
			t.blocks * 2);
		fputs("</g>\n", f);
	}
	fputs("</svg>\n", f);
	*ret_totals = t;
	return ferror(f) ? -EIO : 0;
}
