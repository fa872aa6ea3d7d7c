/* SPDX-License-Identifier: GPL-2.0 */
/*
 * proto.c - codec of the host <-> guest wire protocol (include/vmdefrag/proto.h).
 *
 * Shared by the host daemon, which treats every guest byte as hostile, and
 * the guest agent, which treats the host as possibly buggy.  Two layers:
 *
 *  1. The stream decoder turns an arbitrarily split or coalesced byte stream
 *     into whole frames.  It moves through three states:
 *        header  - fewer than PROTO_HDR_SIZE bytes held;
 *        payload - a valid header is held, waiting for its len bytes;
 *        failed  - a header was corrupt (magic, version, flags, length).
 *     "failed" is sticky: a byte stream cannot be resynchronised safely
 *     (payload bytes may look like a header), so the caller drops the
 *     session.  The decoder holds at most one maximum frame (64 KiB) and
 *     never allocates.
 *
 *  2. The typed codec.  Each type has one row in proto_types[]: the size of
 *     its fixed body, the kind of array after it (ranges, slabs), which ids
 *     and flags it may carry, and whether it is a response (which may be a
 *     bare 8-byte failure status).  proto_decode() checks the payload length
 *     against the row and the declared count *before* copying anything,
 *     copies the body into struct proto_msg converting from little-endian,
 *     and then runs the same field validation proto_encode() runs on what it
 *     is asked to send, so whatever one side encodes the other decodes.
 *
 * Nothing here logs: every function returns a negative errno for its caller
 * to report.
 */
#include <endian.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "vmdefrag/proto.h"

/* The fixed body of any message (the union of struct proto_msg). */
typedef __typeof__(((struct proto_msg *)0)->u) proto_body_t;

enum proto_array {
	PROTO_ARR_NONE,
	PROTO_ARR_RANGES,
	PROTO_ARR_SLABS,
};

enum proto_id_rule {
	PROTO_ID_ZERO,		/* HELLO, events */
	PROTO_ID_NONZERO,	/* requests, responses */
};

struct proto_type_info {
	uint16_t type;
	const char *name;
	size_t fixed;			/* size of the fixed body */
	enum proto_array array;
	enum proto_id_rule id;
	uint8_t flags;			/* flags allowed */
	bool response;			/* may be a bare failure status */
};

static const struct proto_type_info proto_types[] = {
	{ PROTO_HELLO, "HELLO", sizeof(struct proto_hello),
	  PROTO_ARR_NONE, PROTO_ID_ZERO, 0, false },
	{ PROTO_REQ_SCAN, "REQ_SCAN", 0,
	  PROTO_ARR_NONE, PROTO_ID_NONZERO, 0, false },
	{ PROTO_REQ_CAPTURE, "REQ_CAPTURE", sizeof(struct proto_capture_req),
	  PROTO_ARR_RANGES, PROTO_ID_NONZERO, 0, false },
	{ PROTO_REQ_RELEASE, "REQ_RELEASE", sizeof(struct proto_release_req),
	  PROTO_ARR_RANGES, PROTO_ID_NONZERO, 0, false },
	{ PROTO_REQ_LIST, "REQ_LIST", 0,
	  PROTO_ARR_NONE, PROTO_ID_NONZERO, 0, false },
	{ PROTO_REQ_STATS, "REQ_STATS", 0,
	  PROTO_ARR_NONE, PROTO_ID_NONZERO, 0, false },
	{ PROTO_REQ_SET_FLOOR, "REQ_SET_FLOOR", sizeof(struct proto_set_floor_req),
	  PROTO_ARR_NONE, PROTO_ID_NONZERO, 0, false },
	{ PROTO_REQ_ACK, "REQ_ACK", sizeof(struct proto_ack_req),
	  PROTO_ARR_RANGES, PROTO_ID_NONZERO, 0, false },
	{ PROTO_EVT_CAPTURED, "EVT_CAPTURED", sizeof(struct proto_evt_ranges),
	  PROTO_ARR_RANGES, PROTO_ID_ZERO, PROTO_F_MORE, false },
	{ PROTO_EVT_RELEASED, "EVT_RELEASED", sizeof(struct proto_evt_ranges),
	  PROTO_ARR_RANGES, PROTO_ID_ZERO, PROTO_F_MORE, false },
	{ PROTO_EVT_STATS, "EVT_STATS", sizeof(struct proto_stats),
	  PROTO_ARR_NONE, PROTO_ID_ZERO, 0, false },
	{ PROTO_EVT_MEMINFO, "EVT_MEMINFO", sizeof(struct proto_meminfo),
	  PROTO_ARR_NONE, PROTO_ID_ZERO, 0, false },
	{ PROTO_RESP_ERROR, "RESP_ERROR", sizeof(struct proto_status),
	  PROTO_ARR_NONE, PROTO_ID_NONZERO, 0, true },
	{ PROTO_RESP_SCAN, "RESP_SCAN", sizeof(struct proto_scan_resp),
	  PROTO_ARR_SLABS, PROTO_ID_NONZERO, 0, true },
	{ PROTO_RESP_CAPTURE, "RESP_CAPTURE", sizeof(struct proto_ranges_resp),
	  PROTO_ARR_RANGES, PROTO_ID_NONZERO, PROTO_F_MORE, true },
	{ PROTO_RESP_RELEASE, "RESP_RELEASE", sizeof(struct proto_ranges_resp),
	  PROTO_ARR_RANGES, PROTO_ID_NONZERO, PROTO_F_MORE, true },
	{ PROTO_RESP_LIST, "RESP_LIST", sizeof(struct proto_list_resp),
	  PROTO_ARR_RANGES, PROTO_ID_NONZERO, PROTO_F_MORE, true },
	{ PROTO_RESP_STATS, "RESP_STATS", sizeof(struct proto_stats_resp),
	  PROTO_ARR_NONE, PROTO_ID_NONZERO, 0, true },
	{ PROTO_RESP_SET_FLOOR, "RESP_SET_FLOOR", sizeof(struct proto_status),
	  PROTO_ARR_NONE, PROTO_ID_NONZERO, 0, true },
	{ PROTO_RESP_ACK, "RESP_ACK", sizeof(struct proto_ack_resp),
	  PROTO_ARR_NONE, PROTO_ID_NONZERO, 0, true },
	/* block map: a successful RESP_MAP's variable part is proto_map_*()'s */
	{ PROTO_REQ_MAP, "REQ_MAP", sizeof(struct proto_map_req),
	  PROTO_ARR_NONE, PROTO_ID_NONZERO, 0, false },
	{ PROTO_RESP_MAP, "RESP_MAP", sizeof(struct proto_map_resp),
	  PROTO_ARR_NONE, PROTO_ID_NONZERO, 0, true },
};

static const struct proto_type_info *proto_type_lookup(uint16_t type)
{
	for (size_t i = 0; i < sizeof(proto_types) / sizeof(proto_types[0]); i++)
		if (proto_types[i].type == type)
			return &proto_types[i];
	return NULL;
}

/*
 * The one rule for "failed response": a response type whose status (the
 * first field of every response body) is negative, or any RESP_ERROR.
 * Such a response is sent and read as its bare 8-byte status.
 */
static bool proto_status_failed(const struct proto_type_info *ti, int32_t status)
{
	return ti->response && (ti->type == PROTO_RESP_ERROR || status < 0);
}

const char *proto_type_name(uint16_t type)
{
	const struct proto_type_info *ti = proto_type_lookup(type);

	return ti ? ti->name : "?";
}

/* ---- stream decoder ---------------------------------------------------- */

void proto_decoder_init(struct proto_decoder *d)
{
	d->error = 0;
	d->have = 0;
	d->consumed = 0;
}

/* Drop the frame handed out last time, keeping what follows it. */
static void proto_decoder_drop_consumed(struct proto_decoder *d)
{
	if (!d->consumed)
		return;
	memmove(d->buf, d->buf + d->consumed, d->have - d->consumed);
	d->have -= d->consumed;
	d->consumed = 0;
}

static void proto_hdr_from_le(struct proto_hdr *h)
{
	h->magic = le32toh(h->magic);
	h->type = le16toh(h->type);
	h->id = le32toh(h->id);
	h->len = le32toh(h->len);
}

static int proto_hdr_check(const struct proto_hdr *h)
{
	if (h->magic != PROTO_MAGIC)
		return -EPROTO;
	if (h->version != PROTO_FRAME_VERSION)
		return -EPROTONOSUPPORT;
	if (h->len > PROTO_MAX_PAYLOAD)
		return -EMSGSIZE;
	if (h->flags & ~PROTO_F_ALL)
		return -EBADMSG;
	return 0;
}

size_t proto_decoder_feed(struct proto_decoder *d, const void *data, size_t len)
{
	size_t n;

	if (d->error)
		return 0;
	proto_decoder_drop_consumed(d);
	n = sizeof(d->buf) - d->have;
	if (n > len)
		n = len;
	memcpy(d->buf + d->have, data, n);
	d->have += n;
	return n;
}

int proto_decoder_next(struct proto_decoder *d, struct proto_frame *ret_frame)
{
	struct proto_hdr h;
	int r;

	if (d->error)
		return d->error;
	proto_decoder_drop_consumed(d);
	if (d->have < PROTO_HDR_SIZE)
		return 0;

	memcpy(&h, d->buf, sizeof(h));
	proto_hdr_from_le(&h);
	r = proto_hdr_check(&h);
	if (r < 0) {
		d->error = r;
		return r;
	}
	if (d->have - PROTO_HDR_SIZE < h.len)
		return 0;

	ret_frame->type = h.type;
	ret_frame->flags = h.flags;
	ret_frame->id = h.id;
	ret_frame->len = h.len;
	ret_frame->payload = d->buf + PROTO_HDR_SIZE;
	d->consumed = PROTO_HDR_SIZE + h.len;
	return 1;
}

/* ---- byte order of the bodies (the same swap both ways) ---------------- */

#define SWAP16(x) ((x) = le16toh(x))
#define SWAP32(x) ((x) = le32toh(x))
#define SWAP64(x) ((x) = le64toh(x))
#define SWAPS32(x) ((x) = (int32_t)le32toh((uint32_t)(x)))

static void proto_swap_stats(struct proto_stats *s)
{
	SWAP64(s->blocks_scanned);
	SWAP64(s->blocks_vacated);
	SWAP64(s->blocks_failed_busy);
	SWAP64(s->blocks_failed_nomem);
	SWAP64(s->blocks_failed_other);
	SWAP64(s->pages_migrated);
	SWAP64(s->vacate_ns);
	SWAP64(s->blocks_released);
	SWAP64(s->pressure_releases);
	SWAP64(s->oom_releases);
	SWAP64(s->blocks_compacted);
	SWAP64(s->captured_bytes);
	SWAP64(s->floor_bytes);
}

/* Swap the fixed body of a message of type `type` in place. */
static void proto_swap_body(uint16_t type, bool failed, void *body)
{
	if (failed) {
		struct proto_status *s = body;

		SWAPS32(s->status);
		SWAP32(s->reserved);
		return;
	}
	switch (type) {
	case PROTO_HELLO: {
		struct proto_hello *h = body;

		SWAP16(h->version_min);
		SWAP16(h->version_max);
		SWAP32(h->reserved);
		SWAP64(h->features);
		SWAP32(h->page_size);
		SWAP32(h->block_size);
		SWAP64(h->ram_bytes);
		break;
	}
	case PROTO_REQ_CAPTURE: {
		struct proto_capture_req *c = body;

		SWAP64(c->bytes);
		SWAP32(c->mode);
		SWAP32(c->budget_ms);
		SWAP64(c->floor_bytes);
		SWAP32(c->nranges);
		SWAP32(c->flags);
		break;
	}
	case PROTO_REQ_ACK: {
		struct proto_ack_req *a = body;

		SWAP64(a->bytes_unused);
		SWAP32(a->flags);
		SWAP32(a->nranges);
		break;
	}
	case PROTO_RESP_ACK: {
		struct proto_ack_resp *a = body;

		SWAPS32(a->status);
		SWAP32(a->reserved);
		SWAP64(a->bytes);
		break;
	}
	case PROTO_REQ_RELEASE: {
		struct proto_release_req *rr = body;

		SWAP64(rr->bytes);
		SWAP32(rr->nranges);
		SWAP32(rr->reserved);
		break;
	}
	case PROTO_REQ_SET_FLOOR: {
		struct proto_set_floor_req *s = body;

		SWAP64(s->floor_bytes);
		break;
	}
	case PROTO_REQ_MAP: {
		struct proto_map_req *m = body;

		SWAP64(m->first_block);
		SWAP32(m->max_blocks);
		SWAP32(m->reserved);
		break;
	}
	case PROTO_RESP_MAP: {
		struct proto_map_resp *m = body;

		SWAPS32(m->status);
		SWAP32(m->reserved);
		SWAP64(m->first_block);
		SWAP64(m->end_block);
		SWAP32(m->nblocks);
		SWAP32(m->nslabs);
		break;
	}
	case PROTO_EVT_CAPTURED:
	case PROTO_EVT_RELEASED: {
		struct proto_evt_ranges *e = body;

		SWAP32(e->reason);
		SWAP32(e->nranges);
		break;
	}
	case PROTO_EVT_STATS:
		proto_swap_stats(body);
		break;
	case PROTO_EVT_MEMINFO: {
		struct proto_meminfo *mi = body;

		SWAP64(mi->total_bytes);
		SWAP64(mi->free_bytes);
		SWAP64(mi->available_bytes);
		SWAP64(mi->wmark_low_bytes);
		SWAP64(mi->wmark_high_bytes);
		SWAP64(mi->alloc_bytes_per_sec);
		SWAP64(mi->captured_bytes);
		SWAP64(mi->floor_bytes);
		SWAP64(mi->vacate_ns);
		SWAP64(mi->psi_some_total_us);
		SWAP64(mi->psi_full_total_us);
		SWAP32(mi->psi_some_avg10);
		SWAP32(mi->psi_full_avg10);
		SWAP32(mi->flags);
		SWAP32(mi->interval_ms);
		break;
	}
	case PROTO_RESP_ERROR:
	case PROTO_RESP_SET_FLOOR: {
		struct proto_status *s = body;

		SWAPS32(s->status);
		SWAP32(s->reserved);
		break;
	}
	case PROTO_RESP_SCAN: {
		struct proto_scan_resp *s = body;

		SWAPS32(s->status);
		SWAP32(s->reserved);
		SWAP64(s->total_bytes);
		SWAP64(s->free_bytes);
		SWAP64(s->free_block_bytes);
		SWAP64(s->capturable_bytes);
		SWAP64(s->captured_bytes);
		SWAP64(s->available_bytes);
		SWAP64(s->scan_ns);
		SWAP32(s->nslabs);
		for (unsigned int i = 0; i < PROTO_HIST_MAX; i++) {
			SWAP64(s->classes[i]);
			SWAP64(s->cost[i]);
			SWAP32(s->cost_bounds[i]);
			SWAP64(s->unmovable[i]);
		}
		break;
	}
	case PROTO_RESP_CAPTURE:
	case PROTO_RESP_RELEASE: {
		struct proto_ranges_resp *rr = body;

		SWAPS32(rr->status);
		SWAPS32(rr->stop_errno);
		SWAP64(rr->bytes);
		SWAP32(rr->nranges);
		SWAP32(rr->reserved);
		break;
	}
	case PROTO_RESP_LIST: {
		struct proto_list_resp *l = body;

		SWAPS32(l->status);
		SWAP32(l->nranges);
		break;
	}
	case PROTO_RESP_STATS: {
		struct proto_stats_resp *s = body;

		SWAPS32(s->status);
		SWAP32(s->reserved);
		proto_swap_stats(&s->stats);
		break;
	}
	default:
		break;
	}
}

/* The array count of a (host-order) body, 0 for types without an array. */
static uint32_t proto_body_count(uint16_t type, const proto_body_t *u)
{
	switch (type) {
	case PROTO_REQ_CAPTURE:
		return u->capture.nranges;
	case PROTO_REQ_RELEASE:
		return u->release.nranges;
	case PROTO_REQ_ACK:
		return u->ack.nranges;
	case PROTO_EVT_CAPTURED:
	case PROTO_EVT_RELEASED:
		return u->evt.nranges;
	case PROTO_RESP_SCAN:
		return u->scan.nslabs;
	case PROTO_RESP_CAPTURE:
	case PROTO_RESP_RELEASE:
		return u->ranges_resp.nranges;
	case PROTO_RESP_LIST:
		return u->list.nranges;
	default:
		return 0;
	}
}

/* ---- field validation (host order, shared by decode and encode) -------- */

/*
 * What the validators see: header fields and the fixed body in host order,
 * and the array either in host order (encoding: ranges / slabs) or still
 * on the wire (decoding: wire), so a frame is validated whole before
 * anything is written to the caller's message.
 */
struct proto_view {
	uint16_t type;
	uint8_t flags;
	uint32_t id;
	const proto_body_t *u;
	const struct proto_range *ranges;	/* host order, or NULL */
	const struct proto_slab *slabs;		/* host order, or NULL */
	const uint8_t *wire;			/* the array on the wire */
};

static void proto_view_range(const struct proto_view *v, uint32_t i,
			     struct proto_range *ret_range)
{
	struct proto_range r;

	if (v->ranges) {
		*ret_range = v->ranges[i];
		return;
	}
	memcpy(&r, v->wire + (size_t)i * sizeof(r), sizeof(r));
	ret_range->gpa = le64toh(r.gpa);
	ret_range->len = le64toh(r.len);
}

static const char *proto_view_name(const struct proto_view *v, uint32_t i)
{
	if (v->slabs)
		return v->slabs[i].name;
	return (const char *)v->wire + (size_t)i * sizeof(struct proto_slab) +
	       offsetof(struct proto_slab, name);
}

int proto_range_check(const struct proto_range *r)
{
	if (r->len == 0 || r->gpa % PROTO_BLOCK_SIZE || r->len % PROTO_BLOCK_SIZE)
		return -EINVAL;
	if (r->gpa > UINT64_MAX - r->len)
		return -EOVERFLOW;
	return 0;
}

static int proto_view_ranges_check(const struct proto_view *v, uint32_t n)
{
	struct proto_range prev = { 0 }, cur;

	if (n > PROTO_MAX_RANGES)
		return -E2BIG;
	for (uint32_t i = 0; i < n; i++) {
		int ret;

		proto_view_range(v, i, &cur);
		ret = proto_range_check(&cur);
		if (ret < 0)
			return ret;
		/* ascending, no overlap: the previous range ends at or
		 * before this one starts */
		if (i > 0 && prev.gpa + prev.len > cur.gpa)
			return -EINVAL;
		prev = cur;
	}
	return 0;
}

int proto_ranges_check(const struct proto_range *r, uint32_t n)
{
	struct proto_view v = { .ranges = r };

	return proto_view_ranges_check(&v, n);
}

static int proto_status_check(int32_t status, bool may_fail)
{
	if (status > 0 || status < -PROTO_ERRNO_MAX)
		return -EINVAL;
	if (status < 0 && !may_fail)
		return -EINVAL;
	return 0;
}

static int proto_name_check(const char name[PROTO_NAME_LEN])
{
	size_t n = strnlen(name, PROTO_NAME_LEN);

	if (n == PROTO_NAME_LEN)
		return -EILSEQ;
	if (n == 0)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)name[i] < 0x20 || (unsigned char)name[i] > 0x7e)
			return -EILSEQ;
	for (size_t i = n; i < PROTO_NAME_LEN; i++)
		if (name[i])
			return -EILSEQ;
	return 0;
}

static bool proto_is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

static int proto_hello_check(const struct proto_hello *h)
{
	if (h->reserved)
		return -EBADMSG;
	if (h->version_min == 0 || h->version_min > h->version_max)
		return -EINVAL;
	if (h->page_size &&
	    (!proto_is_pow2(h->page_size) || h->page_size < 4096 ||
	     h->page_size > 65536))
		return -EINVAL;
	if (h->block_size && h->block_size != PROTO_BLOCK_SIZE)
		return -EINVAL;
	return 0;
}

/* EVT_MEMINFO: every field bounded, and consistent with the others. */
static int proto_meminfo_check(const struct proto_meminfo *mi)
{
	uint64_t t = mi->total_bytes;

	if (mi->flags & ~PROTO_MEMINFO_FLAGS)
		return -EBADMSG;
	if (t == 0 || t > PROTO_MEMINFO_RAM_MAX)
		return -EINVAL;
	if (mi->free_bytes > t || mi->available_bytes > t ||
	    mi->wmark_low_bytes > mi->wmark_high_bytes || mi->wmark_high_bytes > t)
		return -EINVAL;
	if (mi->alloc_bytes_per_sec > PROTO_MEMINFO_RATE_MAX)
		return -EINVAL;
	if (mi->interval_ms == 0 || mi->interval_ms > PROTO_MEMINFO_INTERVAL_MAX)
		return -EINVAL;
	if (mi->flags & PROTO_MEMINFO_F_PSI) {
		if (mi->psi_some_avg10 > PROTO_MEMINFO_PSI_MAX ||
		    mi->psi_full_avg10 > mi->psi_some_avg10 ||
		    mi->psi_full_total_us > mi->psi_some_total_us)
			return -EINVAL;
	} else if (mi->psi_some_avg10 || mi->psi_full_avg10 ||
		   mi->psi_some_total_us || mi->psi_full_total_us) {
		return -EBADMSG;
	}
	if (mi->flags & PROTO_MEMINFO_F_MODULE) {
		if (mi->captured_bytes > t || mi->floor_bytes > t)
			return -EINVAL;
	} else if (mi->captured_bytes || mi->floor_bytes || mi->vacate_ns) {
		return -EBADMSG;
	}
	return 0;
}

/* Entries past a histogram's count must be zero. */
static int proto_hist_check(const uint64_t *h, unsigned int n)
{
	if (n > PROTO_HIST_MAX)
		return -E2BIG;
	for (unsigned int i = n; i < PROTO_HIST_MAX; i++)
		if (h[i])
			return -EBADMSG;
	return 0;
}

static int proto_scan_check(const struct proto_view *v)
{
	const struct proto_scan_resp *s = &v->u->scan;
	int r;

	if (s->reserved || (s->flags & ~PROTO_SCAN_F_CENSUS))
		return -EBADMSG;
	r = proto_hist_check(s->classes, s->nclasses);
	if (r < 0)
		return r;
	r = proto_hist_check(s->cost, s->ncost);
	if (r < 0)
		return r;
	r = proto_hist_check(s->unmovable, s->nunmovable);
	if (r < 0)
		return r;
	for (unsigned int i = 0; i < PROTO_HIST_MAX; i++) {
		if (i >= s->ncost && s->cost_bounds[i])
			return -EBADMSG;
		if (i > 0 && i < s->ncost && s->cost_bounds[i] <= s->cost_bounds[i - 1])
			return -EINVAL;
	}
	if (s->nslabs > PROTO_MAX_SLABS)
		return -E2BIG;
	for (uint32_t i = 0; i < s->nslabs; i++) {
		r = proto_name_check(proto_view_name(v, i));
		if (r < 0)
			return r;
	}
	return 0;
}

/*
 * Validate a message seen through v (every rule of the protocol but the
 * lengths, which proto_decode() checks first).  `failed` says the body is
 * a bare failure status.
 */
static int proto_msg_check(const struct proto_type_info *ti,
			   const struct proto_view *v, bool failed)
{
	int r;

	if (v->flags & ~ti->flags)
		return -EBADMSG;
	if ((ti->id == PROTO_ID_ZERO) != (v->id == 0))
		return -EBADMSG;
	if (failed) {
		if (v->u->status.reserved)
			return -EBADMSG;
		if (v->flags)
			return -EBADMSG;
		if (v->u->status.status >= 0 || v->u->status.status < -PROTO_ERRNO_MAX)
			return -EINVAL;
		return 0;
	}

	switch (v->type) {
	case PROTO_HELLO:
		return proto_hello_check(&v->u->hello);
	case PROTO_REQ_SCAN:
	case PROTO_REQ_LIST:
	case PROTO_REQ_STATS:
	case PROTO_REQ_SET_FLOOR:
	case PROTO_EVT_STATS:
		return 0;
	case PROTO_EVT_MEMINFO:
		return proto_meminfo_check(&v->u->meminfo);
	case PROTO_REQ_CAPTURE: {
		const struct proto_capture_req *c = &v->u->capture;

		if (c->bytes == 0 || c->mode > VMDEFRAG_MODE_COMPACT)
			return -EINVAL;
		if (c->flags & ~PROTO_CAPTURE_FLAGS)
			return -EINVAL;
		if ((c->flags & PROTO_CAPTURE_STRICT) && c->nranges == 0)
			return -EINVAL;
		if (proto_capture_evict(c->flags) > VMDEFRAG_EVICT_ALL)
			return -EINVAL;
		return proto_view_ranges_check(v, c->nranges);
	}
	case PROTO_REQ_ACK: {
		const struct proto_ack_req *a = &v->u->ack;

		if (a->bytes_unused)
			return -EBADMSG;
		if (a->flags & ~PROTO_ACK_FLAGS)
			return -EINVAL;
		if (!(a->flags & PROTO_ACK_ALL) == (a->nranges == 0))
			return -EINVAL;
		return proto_view_ranges_check(v, a->nranges);
	}
	case PROTO_REQ_RELEASE: {
		const struct proto_release_req *rr = &v->u->release;

		if (rr->reserved)
			return -EBADMSG;
		if ((rr->bytes == 0) == (rr->nranges == 0))
			return -EINVAL;
		return proto_view_ranges_check(v, rr->nranges);
	}
	case PROTO_EVT_CAPTURED:
	case PROTO_EVT_RELEASED: {
		const struct proto_evt_ranges *e = &v->u->evt;

		if (v->type == PROTO_EVT_CAPTURED ? e->reason != 0 :
		    e->reason > VMDEFRAG_RELEASE_UNLOAD)
			return -EINVAL;
		return proto_view_ranges_check(v, e->nranges);
	}
	case PROTO_RESP_ERROR:
		/* only ever a failure */
		return -EINVAL;
	case PROTO_RESP_SET_FLOOR:
		if (v->u->status.reserved)
			return -EBADMSG;
		return proto_status_check(v->u->status.status, false);
	case PROTO_RESP_SCAN:
		r = proto_status_check(v->u->scan.status, false);
		if (r < 0)
			return r;
		return proto_scan_check(v);
	case PROTO_RESP_CAPTURE:
	case PROTO_RESP_RELEASE: {
		const struct proto_ranges_resp *rr = &v->u->ranges_resp;

		if (rr->reserved)
			return -EBADMSG;
		r = proto_status_check(rr->status, false);
		if (r < 0)
			return r;
		r = proto_status_check(rr->stop_errno, v->type == PROTO_RESP_CAPTURE);
		if (r < 0)
			return r;
		return proto_view_ranges_check(v, rr->nranges);
	}
	case PROTO_RESP_LIST:
		r = proto_status_check(v->u->list.status, false);
		if (r < 0)
			return r;
		return proto_view_ranges_check(v, v->u->list.nranges);
	case PROTO_RESP_STATS:
		if (v->u->stats_resp.reserved)
			return -EBADMSG;
		return proto_status_check(v->u->stats_resp.status, false);
	case PROTO_RESP_ACK:
		if (v->u->ack_resp.reserved)
			return -EBADMSG;
		return proto_status_check(v->u->ack_resp.status, false);
	case PROTO_REQ_MAP: {
		const struct proto_map_req *m = &v->u->map_req;

		if (m->reserved)
			return -EBADMSG;
		if (m->max_blocks == 0 || m->max_blocks > PROTO_MAP_MAX_BLOCKS ||
		    m->first_block >= PROTO_MAP_MAX_END)
			return -EINVAL;
		return 0;
	}
	case PROTO_RESP_MAP:
		/* the fixed part; proto_map_check() does the rest */
		return proto_status_check(v->u->map.status, false);
	default:
		return -EOPNOTSUPP;
	}
}

/* ---- block map (PROTO_FEAT_MAP) ---------------------------------------- */

/*
 * A successful RESP_MAP is the one message whose variable part is not an
 * array of one struct: names, then a byte per block twice.  It is decoded
 * and encoded here, beside the generic path, with the same rules: the
 * whole frame is validated before the caller's message is written.
 */
static size_t proto_map_len(const struct proto_map_resp *m)
{
	return sizeof(*m) + (size_t)m->nslabs * PROTO_NAME_LEN + 2 * (size_t)m->nblocks;
}

/* The variable part against its (host-order) fixed part. */
static int proto_map_check(const struct proto_map_resp *m, const char *names,
			   const uint8_t *classes, const uint8_t *slabs)
{
	int r;

	if (m->reserved)
		return -EBADMSG;
	if (m->nblocks > PROTO_MAP_MAX_BLOCKS || m->nslabs > PROTO_MAP_MAX_SLABS)
		return -E2BIG;
	if (m->end_block > PROTO_MAP_MAX_END || m->first_block > m->end_block ||
	    m->nblocks > m->end_block - m->first_block)
		return -EINVAL;
	for (uint32_t i = 0; i < m->nslabs; i++) {
		r = proto_name_check(names + (size_t)i * PROTO_NAME_LEN);
		if (r < 0)
			return r;
	}
	for (uint32_t i = 0; i < m->nblocks; i++) {
		unsigned int cls = VMDEFRAG_MAP_CLASS(classes[i]);
		unsigned int cause = VMDEFRAG_MAP_CAUSE(classes[i]);
		bool unmovable = cls == VMDEFRAG_CLASS_UNMOVABLE;

		if (classes[i] > 0x3f || cls >= __VMDEFRAG_CLASS_MAX ||
		    cause >= __VMDEFRAG_CAUSE_MAX || (!unmovable && cause))
			return -EINVAL;
		if (slabs[i] != PROTO_MAP_NO_SLAB && (!unmovable || slabs[i] >= m->nslabs))
			return -EINVAL;
	}
	return 0;
}

static int proto_map_decode(const struct proto_type_info *ti,
			    const struct proto_frame *f, struct proto_msg *ret_msg)
{
	struct proto_view v = { 0 };
	proto_body_t body;
	const uint8_t *names, *classes;
	int r;

	if (f->len < sizeof(struct proto_map_resp))
		return -EBADMSG;
	memset(&body, 0, sizeof(body));
	memcpy(&body.map, f->payload, sizeof(body.map));
	proto_swap_body(f->type, false, &body);
	v.type = f->type;
	v.flags = f->flags;
	v.id = f->id;
	v.u = &body;
	r = proto_msg_check(ti, &v, false);
	if (r < 0)
		return r;
	if (body.map.nblocks > PROTO_MAP_MAX_BLOCKS || body.map.nslabs > PROTO_MAP_MAX_SLABS)
		return -E2BIG;
	if (f->len != proto_map_len(&body.map))
		return -EBADMSG;
	names = f->payload + sizeof(body.map);
	classes = names + (size_t)body.map.nslabs * PROTO_NAME_LEN;
	r = proto_map_check(&body.map, (const char *)names, classes,
			    classes + body.map.nblocks);
	if (r < 0)
		return r;
	ret_msg->type = f->type;
	ret_msg->flags = f->flags;
	ret_msg->id = f->id;
	ret_msg->u = body;
	memcpy(ret_msg->map.names, names, (size_t)body.map.nslabs * PROTO_NAME_LEN);
	memcpy(ret_msg->map.classes, classes, body.map.nblocks);
	memcpy(ret_msg->map.slabs, classes + body.map.nblocks, body.map.nblocks);
	return 0;
}

static int proto_map_encode(const struct proto_type_info *ti,
			    const struct proto_msg *msg, void *buf, size_t size,
			    size_t *ret_len)
{
	const struct proto_map_resp *m = &msg->u.map;
	struct proto_view v = { 0 };
	struct proto_hdr h;
	proto_body_t body;
	uint8_t *out = buf;
	size_t total;
	int r;

	v.type = msg->type;
	v.flags = msg->flags;
	v.id = msg->id;
	v.u = &msg->u;
	r = proto_msg_check(ti, &v, false);
	if (r < 0)
		return r;
	r = proto_map_check(m, &msg->map.names[0][0], msg->map.classes, msg->map.slabs);
	if (r < 0)
		return r;
	total = PROTO_HDR_SIZE + proto_map_len(m);
	if (total > size)
		return -ENOBUFS;
	h.magic = htole32(PROTO_MAGIC);
	h.version = PROTO_FRAME_VERSION;
	h.flags = msg->flags;
	h.type = htole16(msg->type);
	h.id = htole32(msg->id);
	h.len = htole32((uint32_t)(total - PROTO_HDR_SIZE));
	memcpy(out, &h, sizeof(h));
	out += sizeof(h);
	memset(&body, 0, sizeof(body));
	body.map = *m;
	proto_swap_body(msg->type, false, &body);
	memcpy(out, &body.map, sizeof(body.map));
	out += sizeof(body.map);
	memcpy(out, msg->map.names, (size_t)m->nslabs * PROTO_NAME_LEN);
	out += (size_t)m->nslabs * PROTO_NAME_LEN;
	memcpy(out, msg->map.classes, m->nblocks);
	out += m->nblocks;
	memcpy(out, msg->map.slabs, m->nblocks);
	*ret_len = total;
	return 0;
}

/* ---- decode ------------------------------------------------------------ */

static size_t proto_elem_size(enum proto_array a)
{
	switch (a) {
	case PROTO_ARR_RANGES:
		return sizeof(struct proto_range);
	case PROTO_ARR_SLABS:
		return sizeof(struct proto_slab);
	default:
		return 0;
	}
}

static uint32_t proto_elem_max(enum proto_array a)
{
	switch (a) {
	case PROTO_ARR_RANGES:
		return PROTO_MAX_RANGES;
	case PROTO_ARR_SLABS:
		return PROTO_MAX_SLABS;
	default:
		return 0;
	}
}

/* Bytes after a (host-order, not failed) body's array: the scan census. */
static size_t proto_tail_size(uint16_t type, const proto_body_t *u)
{
	if (type == PROTO_RESP_SCAN && (u->scan.flags & PROTO_SCAN_F_CENSUS))
		return sizeof(struct proto_scan_census);
	return 0;
}

static void proto_swap_census(struct proto_scan_census *c)
{
	SWAP64(c->movable_pages);
	SWAP64(c->slab_reclaim_pages);
	SWAP64(c->slab_reclaim_objects);
	SWAP64(c->evicted_dentries);
	SWAP64(c->evicted_inodes);
	SWAP64(c->evicted_pagecache_bytes);
	SWAP64(c->evicted_blocks);
	for (unsigned int i = 0; i < PROTO_MAX_SLABS; i++)
		SWAP64(c->slab_reclaim_blocks[i]);
}

/* Most pages a block holds: 4 KiB is the smallest page HELLO allows. */
#define PROTO_BLOCK_PAGES_MAX	(PROTO_BLOCK_SIZE / 4096)

/*
 * The census (host order) against its scan @s: no cache entry past nslabs,
 * no cache with more SLAB_RECLAIM blocks than blocks (@blocks[i], host
 * order), no more pages than the blocks they are counted in can hold, no
 * more objects than 8-byte ones would fill those pages with.
 */
static int proto_census_check(const struct proto_scan_census *c,
			      const struct proto_scan_resp *s, const uint64_t *blocks)
{
	uint32_t nslabs = s->nslabs;
	uint64_t reclaim = s->nunmovable > VMDEFRAG_CAUSE_SLAB_RECLAIM ?
			   s->unmovable[VMDEFRAG_CAUSE_SLAB_RECLAIM] : 0;
	uint64_t movable = s->nclasses > VMDEFRAG_CLASS_MOVABLE ?
			   s->classes[VMDEFRAG_CLASS_MOVABLE] : 0;

	if (reclaim > UINT64_MAX / PROTO_BLOCK_PAGES_MAX ||
	    movable > UINT64_MAX / PROTO_BLOCK_PAGES_MAX)
		return -EINVAL;
	if (c->slab_reclaim_pages > reclaim * PROTO_BLOCK_PAGES_MAX ||
	    c->movable_pages > movable * PROTO_BLOCK_PAGES_MAX ||
	    c->slab_reclaim_objects / (4096 / 8) > c->slab_reclaim_pages)
		return -EINVAL;
	for (uint32_t i = 0; i < PROTO_MAX_SLABS; i++) {
		if (i >= nslabs && c->slab_reclaim_blocks[i])
			return -EBADMSG;
		if (i < nslabs && c->slab_reclaim_blocks[i] > blocks[i])
			return -EINVAL;
	}
	return 0;
}

int proto_decode(const struct proto_frame *f, struct proto_msg *ret_msg)
{
	const struct proto_type_info *ti = proto_type_lookup(f->type);
	struct proto_scan_census census;
	struct proto_view v = { 0 };
	bool failed = false;
	size_t fixed, esize, tail;
	proto_body_t body;
	uint32_t count;
	int r;

	if (!ti)
		return -EOPNOTSUPP;
	if (f->len > PROTO_MAX_PAYLOAD)
		return -EMSGSIZE;

	fixed = ti->fixed;
	if (f->len == sizeof(struct proto_status)) {
		int32_t status;

		memcpy(&status, f->payload, sizeof(status));
		status = (int32_t)le32toh((uint32_t)status);
		if (proto_status_failed(ti, status)) {
			failed = true;
			fixed = sizeof(struct proto_status);
		}
	}
	if (f->type == PROTO_RESP_MAP && !failed)
		return proto_map_decode(ti, f, ret_msg);
	if (f->len < fixed)
		return -EBADMSG;

	memset(&body, 0, sizeof(body));
	memcpy(&body, f->payload, fixed);
	proto_swap_body(f->type, failed, &body);

	count = failed ? 0 : proto_body_count(f->type, &body);
	esize = proto_elem_size(failed ? PROTO_ARR_NONE : ti->array);
	if (count > proto_elem_max(ti->array))
		return -E2BIG;
	/* count <= PROTO_MAX_RANGES and esize <= 48: no overflow in size_t */
	tail = failed ? 0 : proto_tail_size(f->type, &body);
	if (f->len != fixed + (size_t)count * esize + tail)
		return -EBADMSG;

	v.type = f->type;
	v.flags = f->flags;
	v.id = f->id;
	v.u = &body;
	v.wire = f->payload + fixed;
	r = proto_msg_check(ti, &v, failed);
	if (r < 0)
		return r;
	if (tail) {
		uint64_t blocks[PROTO_MAX_SLABS];

		memcpy(&census, f->payload + fixed + (size_t)count * esize, tail);
		proto_swap_census(&census);
		for (uint32_t i = 0; i < count; i++) {
			memcpy(&blocks[i], v.wire + (size_t)i * esize +
			       offsetof(struct proto_slab, blocks), sizeof(blocks[i]));
			blocks[i] = le64toh(blocks[i]);
		}
		r = proto_census_check(&census, &body.scan, blocks);
		if (r < 0)
			return r;
	}

	/* valid: only now fill the caller's message */
	ret_msg->type = f->type;
	ret_msg->flags = f->flags;
	ret_msg->id = f->id;
	ret_msg->u = body;

	if (!failed && ti->array == PROTO_ARR_RANGES) {
		memcpy(ret_msg->ranges, f->payload + fixed, count * esize);
		for (uint32_t i = 0; i < count; i++) {
			SWAP64(ret_msg->ranges[i].gpa);
			SWAP64(ret_msg->ranges[i].len);
		}
	} else if (!failed && ti->array == PROTO_ARR_SLABS) {
		memcpy(ret_msg->slabs, f->payload + fixed, count * esize);
		for (uint32_t i = 0; i < count; i++) {
			SWAP64(ret_msg->slabs[i].pages);
			SWAP64(ret_msg->slabs[i].blocks);
		}
	}
	if (tail)
		ret_msg->census = census;
	return 0;
}

int proto_decode_buf(const void *buf, size_t len, struct proto_msg *ret_msg)
{
	struct proto_frame f;
	struct proto_hdr h;
	int r;

	if (len < PROTO_HDR_SIZE)
		return -EBADMSG;
	memcpy(&h, buf, sizeof(h));
	proto_hdr_from_le(&h);
	r = proto_hdr_check(&h);
	if (r < 0)
		return r;
	if (len - PROTO_HDR_SIZE != h.len)
		return -EBADMSG;
	f.type = h.type;
	f.flags = h.flags;
	f.id = h.id;
	f.len = h.len;
	f.payload = (const uint8_t *)buf + PROTO_HDR_SIZE;
	return proto_decode(&f, ret_msg);
}

/* ---- encode ------------------------------------------------------------ */

bool proto_msg_failed(const struct proto_msg *m)
{
	const struct proto_type_info *ti = proto_type_lookup(m->type);

	/* every response body starts with the int32 status */
	return ti && proto_status_failed(ti, m->u.status.status);
}

int proto_encode(const struct proto_msg *msg, void *buf, size_t size,
		 size_t *ret_len)
{
	const struct proto_type_info *ti = proto_type_lookup(msg->type);
	union {
		struct proto_hdr h;
		uint8_t b[PROTO_HDR_SIZE];
	} hdr;
	uint8_t body[sizeof(msg->u)];
	struct proto_view v = { 0 };
	size_t fixed, esize, tail, total;
	uint32_t count;
	uint8_t *out = buf;
	bool failed;
	int r;

	if (!ti)
		return -EOPNOTSUPP;
	failed = proto_status_failed(ti, msg->u.status.status);
	if (msg->type == PROTO_RESP_MAP && !failed)
		return proto_map_encode(ti, msg, buf, size, ret_len);
	v.type = msg->type;
	v.flags = msg->flags;
	v.id = msg->id;
	v.u = &msg->u;
	v.ranges = msg->ranges;
	v.slabs = msg->slabs;
	r = proto_msg_check(ti, &v, failed);
	if (r < 0)
		return r;

	fixed = failed ? sizeof(struct proto_status) : ti->fixed;
	count = failed ? 0 : proto_body_count(msg->type, &msg->u);
	esize = proto_elem_size(failed ? PROTO_ARR_NONE : ti->array);
	tail = failed ? 0 : proto_tail_size(msg->type, &msg->u);
	if (tail) {
		uint64_t blocks[PROTO_MAX_SLABS];

		for (uint32_t i = 0; i < count; i++)
			blocks[i] = msg->slabs[i].blocks;
		r = proto_census_check(&msg->census, &msg->u.scan, blocks);
		if (r < 0)
			return r;
	}
	total = PROTO_HDR_SIZE + fixed + (size_t)count * esize + tail;
	if (total - PROTO_HDR_SIZE > PROTO_MAX_PAYLOAD)
		return -EMSGSIZE;
	if (total > size)
		return -ENOBUFS;

	hdr.h.magic = htole32(PROTO_MAGIC);
	hdr.h.version = PROTO_FRAME_VERSION;
	hdr.h.flags = msg->flags;
	hdr.h.type = htole16(msg->type);
	hdr.h.id = htole32(msg->id);
	hdr.h.len = htole32((uint32_t)(total - PROTO_HDR_SIZE));
	memcpy(out, hdr.b, PROTO_HDR_SIZE);
	out += PROTO_HDR_SIZE;

	memcpy(body, &msg->u, fixed);
	proto_swap_body(msg->type, failed, body);
	memcpy(out, body, fixed);
	out += fixed;

	for (uint32_t i = 0; i < count; i++) {
		if (ti->array == PROTO_ARR_RANGES) {
			struct proto_range rg = {
				.gpa = htole64(msg->ranges[i].gpa),
				.len = htole64(msg->ranges[i].len),
			};

			memcpy(out, &rg, sizeof(rg));
			out += sizeof(rg);
		} else {
			struct proto_slab sl = msg->slabs[i];

			sl.pages = htole64(sl.pages);
			sl.blocks = htole64(sl.blocks);
			memcpy(out, &sl, sizeof(sl));
			out += sizeof(sl);
		}
	}
	if (tail) {
		struct proto_scan_census c = msg->census;

		proto_swap_census(&c);
		memcpy(out, &c, sizeof(c));
	}
	*ret_len = total;
	return 0;
}

int proto_encode_status(uint16_t type, uint32_t id, int32_t status,
			void *buf, size_t size, size_t *ret_len)
{
	const struct proto_type_info *ti = proto_type_lookup(type);
	struct proto_hdr h;
	size_t total = PROTO_HDR_SIZE + sizeof(struct proto_status);
	struct proto_status s;
	uint8_t *out = buf;

	if (!ti || !ti->response)
		return -EOPNOTSUPP;
	if (status >= 0 || status < -PROTO_ERRNO_MAX || id == 0)
		return -EINVAL;
	if (size < total)
		return -ENOBUFS;

	h.magic = htole32(PROTO_MAGIC);
	h.version = PROTO_FRAME_VERSION;
	h.flags = 0;
	h.type = htole16(type);
	h.id = htole32(id);
	h.len = htole32(sizeof(s));
	s.status = (int32_t)htole32((uint32_t)status);
	s.reserved = 0;
	memcpy(out, &h, sizeof(h));
	memcpy(out + sizeof(h), &s, sizeof(s));
	*ret_len = total;
	return 0;
}

int proto_hello_negotiate(const struct proto_hello *local,
			  const struct proto_hello *remote,
			  uint16_t *ret_version)
{
	uint16_t lo = local->version_min > remote->version_min ?
		      local->version_min : remote->version_min;
	uint16_t hi = local->version_max < remote->version_max ?
		      local->version_max : remote->version_max;

	if (lo > hi)
		return -EPROTONOSUPPORT;
	*ret_version = hi;
	return 0;
}
