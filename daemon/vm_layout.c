// SPDX-License-Identifier: GPL-2.0
/*
 * vm_layout.c - the guest-physical -> backing map of one VM, from QEMU.
 *
 * Discovery runs in five steps, each checked against the previous ones:
 *
 *  1. query-memdev: the RAM backends (ids, sizes).  Only memory regions
 *     named after a memdev count as guest RAM; other "ram" regions (VGA
 *     VRAM, option ROM shadows) are not ours to reclaim.
 *  2. "info mtree -f": the flat view of address space "memory" lists every
 *     guest-physical range with the region that backs it and the offset
 *     into that region ("ram0 @0000000080000000" for the above-4g alias).
 *  3. "gpa2hva" at the first and last byte of each range: QEMU's own
 *     virtual address for it, and proof that the range is contiguous.
 *  4. /proc/PID/maps: the mapping holding that address gives the backing
 *     file (dev, inode), whether it is MAP_SHARED, and the file offset.
 *     file_offset - region_offset must be one constant per region, else
 *     QEMU's answers disagree and discovery fails (-EPROTO).
 *  5. /proc/PID/fd: the fd whose (dev, inode) matches is reopened through
 *     /proc/PID/fd/N (fallback /proc/PID/map_files); fstatfs() tells
 *     hugetlbfs from shmem and gives the page size.
 *
 * Private or anonymous mappings give kind VM_BACKING_ANONYMOUS with no fd:
 * punching the file would not free QEMU's private copies, so only the
 * "hint" backend can serve such a VM.
 *
 * The layout is a snapshot.  Memory hotplug or a QEMU restart invalidates
 * it; the owner rediscovers on the relevant QMP events.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cleanup.h"
#include "hostmem.h"
#include "qmp.h"
#include "vm_layout.h"

CLEANUP_DEFINE(vm_layout_json_putp, struct json_object *, json_object_put)

const char *vm_backing_kind_name(enum vm_backing_kind kind)
{
	switch (kind) {
	case VM_BACKING_ANONYMOUS: return "anonymous";
	case VM_BACKING_MEMFD: return "memfd";
	case VM_BACKING_HUGETLBFS: return "hugetlbfs";
	case VM_BACKING_FILE: return "file";
	}
	return "?";
}

static int vm_layout_parse_hex(const char *s, size_t n, uint64_t *ret)
{
	uint64_t v = 0;

	if (n == 0 || n > 16)
		return -EPROTO;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		unsigned int d;

		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else
			return -EPROTO;
		v = v << 4 | d;
	}
	*ret = v;
	return 0;
}

/*
 * "  0000000100000000-000000017fffffff (prio 0, ram): ram0 @0000000080000000"
 * Returns 1 for a ram entry, 0 for another entry type, -EPROTO if malformed.
 */
static int vm_layout_parse_mtree_line(const char *line, size_t len,
				      struct vm_mtree_entry *e)
{
	const char *p = line, *end = line + len, *dash, *sp, *type, *name;
	uint64_t start, last;
	size_t nlen;

	while (p < end && *p == ' ')
		p++;
	dash = memchr(p, '-', end - p);
	if (!dash)
		return -EPROTO;
	sp = memchr(dash, ' ', end - dash);
	if (!sp || vm_layout_parse_hex(p, dash - p, &start) < 0 ||
	    vm_layout_parse_hex(dash + 1, sp - dash - 1, &last) < 0 ||
	    last < start)
		return -EPROTO;
	if (end - sp < 7 || memcmp(sp, " (prio ", 7) != 0)
		return -EPROTO;
	type = memchr(sp, ',', end - sp);
	if (!type || end - type < 2 || type[1] != ' ')
		return -EPROTO;
	type += 2;
	name = memchr(type, ')', end - type);
	if (!name || end - name < 3 || memcmp(name, "): ", 3) != 0)
		return -EPROTO;
	if (name - type != 3 || memcmp(type, "ram", 3) != 0)
		return 0;
	name += 3;
	nlen = end - name;
	e->region_offset = 0;
	/* optional " @<16 hex digits>" suffix: offset into the region */
	if (nlen > 18 && name[nlen - 18] == ' ' && name[nlen - 17] == '@') {
		if (vm_layout_parse_hex(name + nlen - 16, 16, &e->region_offset) < 0)
			return -EPROTO;
		nlen -= 18;
	}
	if (nlen == 0 || nlen >= VM_LAYOUT_NAME_MAX)
		return -EPROTO;
	if (last == UINT64_MAX && start == 0)
		return -EPROTO;		/* length would overflow */
	memcpy(e->name, name, nlen);
	e->name[nlen] = '\0';
	e->gpa = start;
	e->len = last - start + 1;
	if (e->region_offset + e->len < e->region_offset)
		return -EPROTO;
	return 1;
}

int vm_layout_parse_mtree(const char *text, struct vm_mtree_entry **ret_entries,
			  size_t *ret_n)
{
	_cleanup_free_ struct vm_mtree_entry *v = NULL;
	bool in_view = false, in_memory = false, found = false, in_entries = false;
	size_t n = 0;
	const char *line = text;
	int r;

	if (!text)
		return -EINVAL;
	while (*line) {
		const char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) : strlen(line);

		if (len > 0 && line[len - 1] == '\r')
			len--;
		if (len >= 9 && memcmp(line, "FlatView ", 9) == 0) {
			in_view = true;
			in_memory = false;
			in_entries = false;
		} else if (in_view && len >= 12 && memcmp(line, " AS \"memory\"", 12) == 0) {
			if (found) {
				return -EPROTO;	/* two views claim "memory" */
			}
			in_memory = true;
			found = true;
		} else if (in_view && len >= 4 && memcmp(line, " AS ", 4) == 0) {
			/* another address space sharing this view */
		} else if (in_view && len >= 20 && memcmp(line, " Root memory region", 19) == 0) {
			in_entries = true;
		} else if (in_view && len >= 2 && memcmp(line, "  ", 2) == 0 && in_entries) {
			if (in_memory) {
				struct vm_mtree_entry e;

				r = vm_layout_parse_mtree_line(line, len, &e);
				if (r < 0)
					return r;
				if (r > 0) {
					struct vm_mtree_entry *nv;

					if (n >= VM_LAYOUT_MAX_RANGES * 4)
						return -E2BIG;
					nv = realloc(v, (n + 1) * sizeof(*v));
					if (!nv)
						return -ENOMEM;
					v = nv;
					v[n++] = e;
				}
			}
		} else if (len == 0) {
			in_entries = false;
		}
		if (!nl)
			break;
		line = nl + 1;
	}
	if (!found)
		return -EPROTO;
	*ret_entries = TAKE_PTR(v);
	*ret_n = n;
	return 0;
}

int vm_layout_parse_gpa2hva(const char *text, const char *expect_name,
			    uint64_t *ret_hva)
{
	static const char prefix[] = "Host virtual address for 0x";
	const char *p, *open, *close, *hex, *end;
	uint64_t hva;

	if (!text || strncmp(text, prefix, sizeof(prefix) - 1) != 0)
		return -ENOENT;		/* "not RAM" / "No memory is mapped" */
	p = text + sizeof(prefix) - 1;
	open = strstr(p, " (");
	if (!open)
		return -EPROTO;
	close = strstr(open, ") is 0x");
	if (!close)
		return -EPROTO;
	if (expect_name && ((size_t)(close - open - 2) != strlen(expect_name) ||
			    memcmp(open + 2, expect_name, close - open - 2) != 0))
		return -EPROTO;
	hex = close + 7;
	end = hex;
	while ((*end >= '0' && *end <= '9') || (*end >= 'a' && *end <= 'f') ||
	       (*end >= 'A' && *end <= 'F'))
		end++;
	if (vm_layout_parse_hex(hex, end - hex, &hva) < 0)
		return -EPROTO;
	while (*end == '\r' || *end == '\n')
		end++;
	if (*end)
		return -EPROTO;
	*ret_hva = hva;
	return 0;
}

int vm_layout_parse_maps_line(const char *line, size_t len,
			      struct vm_maps_entry *ret_entry)
{
	struct vm_maps_entry e = { 0 };
	const char *p = line, *end = line + len, *f;
	uint64_t v;
	size_t plen;

	/* start-end */
	f = memchr(p, '-', end - p);
	if (!f || vm_layout_parse_hex(p, f - p, &e.start) < 0)
		return -EPROTO;
	p = f + 1;
	f = memchr(p, ' ', end - p);
	if (!f || vm_layout_parse_hex(p, f - p, &e.end) < 0 || e.end <= e.start)
		return -EPROTO;
	p = f + 1;
	/* perms: rwxs / rwxp */
	if (end - p < 5 || p[4] != ' ' || (p[3] != 's' && p[3] != 'p'))
		return -EPROTO;
	e.shared = p[3] == 's';
	p += 5;
	/* offset */
	f = memchr(p, ' ', end - p);
	if (!f || vm_layout_parse_hex(p, f - p, &e.offset) < 0)
		return -EPROTO;
	p = f + 1;
	/* dev major:minor */
	f = memchr(p, ':', end - p);
	if (!f || vm_layout_parse_hex(p, f - p, &v) < 0 || v > 0xfffff)
		return -EPROTO;
	e.dev_major = (unsigned int)v;
	p = f + 1;
	f = memchr(p, ' ', end - p);
	if (!f || vm_layout_parse_hex(p, f - p, &v) < 0 || v > 0xfffff)
		return -EPROTO;
	e.dev_minor = (unsigned int)v;
	p = f + 1;
	/* inode (decimal) */
	v = 0;
	if (p >= end || *p < '0' || *p > '9')
		return -EPROTO;
	while (p < end && *p >= '0' && *p <= '9') {
		if (v > (UINT64_MAX - 9) / 10)
			return -EPROTO;
		v = v * 10 + (*p++ - '0');
	}
	e.inode = v;
	while (p < end && *p == ' ')
		p++;
	plen = end - p;
	if (plen >= sizeof(e.path))
		plen = sizeof(e.path) - 1;
	memcpy(e.path, p, plen);
	e.path[plen] = '\0';
	*ret_entry = e;
	return 0;
}

int vm_layout_find_mapping(const char *maps_text, uint64_t hva, uint64_t len,
			   struct vm_maps_entry *ret_entry)
{
	const char *line = maps_text;

	if (len == 0 || hva + len < hva)
		return -ERANGE;
	while (line && *line) {
		const char *nl = strchr(line, '\n');
		size_t l = nl ? (size_t)(nl - line) : strlen(line);
		struct vm_maps_entry e;
		int r;

		r = vm_layout_parse_maps_line(line, l, &e);
		if (r < 0)
			return r;
		if (hva >= e.start && hva < e.end) {
			if (hva + len > e.end)
				return -ERANGE;	/* straddles two mappings */
			*ret_entry = e;
			return 0;
		}
		line = nl ? nl + 1 : NULL;
	}
	return -ENOENT;
}

/* ---- discovery ---- */

struct vm_memdev {
	char id[VM_LAYOUT_NAME_MAX];
	uint64_t size;
};

static int vm_layout_query_memdevs(struct qmp *q, struct vm_memdev **ret_devs,
				   size_t *ret_n)
{
	_cleanup_(vm_layout_json_putp) struct json_object *ret = NULL;
	_cleanup_free_ struct vm_memdev *devs = NULL;
	struct json_object *id, *size;
	size_t n;
	int r;

	r = qmp_execute(q, "query-memdev", NULL, QMP_DEFAULT_TIMEOUT_MS, &ret);
	if (r < 0)
		return r;
	if (!json_object_is_type(ret, json_type_array))
		return -EPROTO;
	n = json_object_array_length(ret);
	if (n > VM_LAYOUT_MAX_RANGES)
		return -E2BIG;
	devs = calloc(n ? n : 1, sizeof(*devs));
	if (!devs)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		struct json_object *d = json_object_array_get_idx(ret, i);
		const char *s;

		if (!json_object_object_get_ex(d, "id", &id) ||
		    !json_object_is_type(id, json_type_string) ||
		    !json_object_object_get_ex(d, "size", &size) ||
		    !json_object_is_type(size, json_type_int)) {
			/* a memdev without id cannot be matched to a region */
			continue;
		}
		s = json_object_get_string(id);
		if (strlen(s) >= VM_LAYOUT_NAME_MAX)
			return -EPROTO;
		strcpy(devs[i].id, s);
		devs[i].size = json_object_get_uint64(size);
	}
	*ret_devs = TAKE_PTR(devs);
	*ret_n = n;
	return 0;
}

static int vm_layout_gpa2hva(struct qmp *q, uint64_t gpa, const char *name,
			     uint64_t *ret_hva)
{
	char cmd[64], *out = NULL;
	int r;

	snprintf(cmd, sizeof(cmd), "gpa2hva 0x%" PRIx64, gpa);
	r = qmp_hmp(q, cmd, QMP_DEFAULT_TIMEOUT_MS, &out);
	if (r < 0)
		return r;
	r = vm_layout_parse_gpa2hva(out, name, ret_hva);
	free(out);
	return r == -ENOENT ? -EPROTO : r;
}

/* Opens the file QEMU maps as e, through its fd table or map_files. */
static int vm_layout_open_backing(pid_t pid, const struct vm_maps_entry *e,
				  int *ret_fd)
{
	dev_t dev = makedev(e->dev_major, e->dev_minor);
	char dpath[64], path[320];
	struct dirent *de;
	struct stat st;
	DIR *dir;
	int fd = -1;

	snprintf(dpath, sizeof(dpath), "/proc/%d/fd", (int)pid);
	dir = opendir(dpath);
	if (!dir)
		return -errno;
	while ((de = readdir(dir))) {
		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dpath, de->d_name);
		if (stat(path, &st) < 0 || st.st_dev != dev || st.st_ino != e->inode)
			continue;
		fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd >= 0)
			break;
	}
	closedir(dir);
	if (fd < 0) {
		snprintf(path, sizeof(path), "/proc/%d/map_files/%" PRIx64 "-%" PRIx64,
			 (int)pid, e->start, e->end);
		fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd < 0)
			return -ENOENT;
	}
	/* the fd could have been replaced between stat() and open() */
	if (fstat(fd, &st) < 0 || st.st_dev != dev || st.st_ino != e->inode) {
		close(fd);
		return -ESTALE;
	}
	*ret_fd = fd;
	return 0;
}

static int vm_layout_fill_backing(pid_t pid, struct vm_backing *b,
				  const struct vm_maps_entry *e)
{
	struct statfs sfs;
	struct stat st;
	int fd = -1, r;

	b->shared = e->shared;
	b->dev = makedev(e->dev_major, e->dev_minor);
	b->ino = e->inode;
	b->page_size = (uint64_t)sysconf(_SC_PAGESIZE);
	b->fd = -1;
	if (!e->shared || e->inode == 0) {
		b->kind = VM_BACKING_ANONYMOUS;
		return 0;
	}
	r = vm_layout_open_backing(pid, e, &fd);
	if (r < 0)
		return r;
	if (fstatfs(fd, &sfs) < 0 || fstat(fd, &st) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	if (sfs.f_type == HUGETLBFS_MAGIC) {
		b->kind = VM_BACKING_HUGETLBFS;
		b->page_size = (uint64_t)sfs.f_bsize;
	} else if (strncmp(e->path, "/memfd:", 7) == 0) {
		b->kind = VM_BACKING_MEMFD;
	} else {
		b->kind = VM_BACKING_FILE;
	}
	b->file_size = (uint64_t)st.st_size;
	b->fd = fd;
	return 0;
}

static int vm_layout_cmp_range(const void *a, const void *b)
{
	const struct vm_ram_range *x = a, *y = b;

	return x->gpa < y->gpa ? -1 : x->gpa > y->gpa;
}

bool vm_layout_equal(const struct vm_layout *a, const struct vm_layout *b)
{
	if (a->nranges != b->nranges || a->nbackings != b->nbackings)
		return false;
	for (size_t i = 0; i < a->nranges; i++) {
		const struct vm_ram_range *x = &a->ranges[i], *y = &b->ranges[i];

		if (x->gpa != y->gpa || x->len != y->len ||
		    x->region_offset != y->region_offset ||
		    x->file_offset != y->file_offset || x->hva != y->hva ||
		    strcmp(a->backings[x->backing].name, b->backings[y->backing].name))
			return false;
	}
	for (size_t i = 0; i < a->nbackings; i++) {
		const struct vm_backing *x = &a->backings[i], *y = &b->backings[i];

		if (strcmp(x->name, y->name) || x->kind != y->kind || x->size != y->size ||
		    x->dev != y->dev || x->ino != y->ino)
			return false;
	}
	return true;
}

void vm_layout_free(struct vm_layout *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->nbackings; i++) {
		if (l->backings[i].fd >= 0)
			close(l->backings[i].fd);
	}
	free(l->backings);
	free(l->ranges);
	free(l);
}

CLEANUP_DEFINE(vm_layout_freep, struct vm_layout *, vm_layout_free)

/* Adds one mtree ram entry of memdev `dev` to l. */
static int vm_layout_add_range(struct vm_layout *l, struct qmp *q,
			       const char *maps, const struct vm_mtree_entry *m,
			       const struct vm_memdev *dev)
{
	struct vm_ram_range *rg = &l->ranges[l->nranges];
	struct vm_backing *b = NULL;
	struct vm_maps_entry e;
	uint64_t hva, hva_last, file_off;
	unsigned int bi;
	int r;

	if (m->region_offset + m->len > dev->size)
		return -EPROTO;
	r = vm_layout_gpa2hva(q, m->gpa, m->name, &hva);
	if (r < 0)
		return r;
	r = vm_layout_gpa2hva(q, m->gpa + m->len - 1, m->name, &hva_last);
	if (r < 0)
		return r;
	if (hva_last - hva != m->len - 1 || hva < m->region_offset)
		return -EPROTO;
	r = vm_layout_find_mapping(maps, hva, m->len, &e);
	if (r < 0)
		return r == -ENOENT || r == -ERANGE ? -EPROTO : r;
	file_off = e.offset + (hva - e.start);

	for (bi = 0; bi < l->nbackings; bi++) {
		if (strcmp(l->backings[bi].name, m->name) == 0) {
			b = &l->backings[bi];
			break;
		}
	}
	if (!b) {
		b = &l->backings[l->nbackings];
		memset(b, 0, sizeof(*b));
		strcpy(b->name, m->name);
		b->size = dev->size;
		b->hva = hva - m->region_offset;
		b->file_base = file_off - m->region_offset;
		r = vm_layout_fill_backing(l->pid, b, &e);
		if (r < 0)
			return r;
		bi = l->nbackings++;
	} else if (b->hva != hva - m->region_offset ||
		   b->ino != e.inode || b->dev != makedev(e.dev_major, e.dev_minor) ||
		   (b->kind != VM_BACKING_ANONYMOUS &&
		    b->file_base != file_off - m->region_offset)) {
		/* aliases of one region must agree on where it lives */
		return -EPROTO;
	}
	if (b->kind != VM_BACKING_ANONYMOUS && file_off + m->len > b->file_size)
		return -EPROTO;

	rg->gpa = m->gpa;
	rg->len = m->len;
	rg->region_offset = m->region_offset;
	rg->file_offset = b->kind == VM_BACKING_ANONYMOUS ? m->region_offset : file_off;
	rg->hva = hva;
	rg->backing = bi;
	l->nranges++;
	return 0;
}

int vm_layout_discover(struct qmp *q, pid_t pid, struct vm_layout **ret_layout)
{
	_cleanup_free_ struct vm_mtree_entry *mt = NULL;
	_cleanup_free_ struct vm_memdev *devs = NULL;
	_cleanup_free_ char *mtree = NULL, *maps = NULL;
	_cleanup_(vm_layout_freep) struct vm_layout *l = NULL;
	size_t nmt = 0, ndevs = 0;
	char path[64];
	int r;

	if (pid <= 0) {
		r = qmp_peer_pid(q, &pid);
		if (r < 0)
			return r;
	}
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->pid = pid;

	r = vm_layout_query_memdevs(q, &devs, &ndevs);
	if (r < 0)
		return r;
	r = qmp_hmp(q, "info mtree -f", QMP_DEFAULT_TIMEOUT_MS, &mtree);
	if (r < 0)
		return r;
	r = vm_layout_parse_mtree(mtree, &mt, &nmt);
	if (r < 0)
		return r;
	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	r = hostmem_read_text(path, HOSTMEM_TEXT_MAX, &maps, NULL);
	if (r < 0)
		return r;

	l->ranges = calloc(VM_LAYOUT_MAX_RANGES, sizeof(*l->ranges));
	l->backings = calloc(VM_LAYOUT_MAX_RANGES, sizeof(*l->backings));
	if (!l->ranges || !l->backings)
		return -ENOMEM;
	for (size_t i = 0; i < nmt; i++) {
		const struct vm_memdev *dev = NULL;

		for (size_t j = 0; j < ndevs; j++) {
			if (strcmp(devs[j].id, mt[i].name) == 0)
				dev = &devs[j];
		}
		if (!dev)
			continue;	/* ROM shadow, VRAM, ...: not guest RAM */
		if (l->nranges == VM_LAYOUT_MAX_RANGES)
			return -E2BIG;
		r = vm_layout_add_range(l, q, maps, &mt[i], dev);
		if (r < 0)
			return r;
	}
	if (l->nranges == 0)
		return -ENOENT;
	qsort(l->ranges, l->nranges, sizeof(*l->ranges), vm_layout_cmp_range);
	for (size_t i = 1; i < l->nranges; i++) {
		if (l->ranges[i - 1].gpa + l->ranges[i - 1].len > l->ranges[i].gpa)
			return -EPROTO;
	}
	*ret_layout = TAKE_PTR(l);
	return 0;
}

int vm_layout_translate(const struct vm_layout *l, uint64_t gpa, uint64_t len,
			const struct vm_ram_range **ret_range,
			uint64_t *ret_file_offset)
{
	size_t lo = 0, hi;

	if (!l || len == 0 || gpa + len < gpa)
		return -ERANGE;
	hi = l->nranges;
	/* last range with start <= gpa */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (l->ranges[mid].gpa <= gpa)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return -ERANGE;
	const struct vm_ram_range *rg = &l->ranges[lo - 1];

	if (gpa - rg->gpa >= rg->len || len > rg->len - (gpa - rg->gpa))
		return -ERANGE;
	if (ret_range)
		*ret_range = rg;
	if (ret_file_offset)
		*ret_file_offset = rg->file_offset + (gpa - rg->gpa);
	return 0;
}

uint64_t vm_layout_ram_bytes(const struct vm_layout *l)
{
	uint64_t total = 0;

	for (size_t i = 0; i < l->nranges; i++)
		total += l->ranges[i].len;
	return total;
}
