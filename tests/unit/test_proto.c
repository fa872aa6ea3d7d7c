/* SPDX-License-Identifier: GPL-2.0 */
/*
 * test_proto.c - unit tests of the wire codec (lib/proto.c).
 *
 * Three tables:
 *   roundtrip_cases  one valid message of every type (and the edge sizes:
 *                    no ranges, PROTO_MAX_RANGES ranges, failed responses);
 *                    each is encoded, checked for its wire bytes, decoded
 *                    back whole, and pushed through the stream decoder one
 *                    byte at a time and all at once.
 *   bad_cases        a valid frame from a builder with one field patched
 *                    (or its length cut / grown) and the errno the decoder
 *                    must return for it: the hostile-input contract.
 *   stream tests     split / coalesced / corrupt byte streams.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "vmdefrag/proto.h"

#define MIB (1ULL << 20)
#define HDR PROTO_HDR_SIZE

/* ---- message builders -------------------------------------------------- */

static struct proto_msg *msg_new(uint16_t type, uint32_t id)
{
	struct proto_msg *m = calloc(1, sizeof(*m));

	assert_non_null(m);
	m->type = type;
	m->id = id;
	return m;
}

static void fill_ranges(struct proto_msg *m, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		/* ascending, gaps between, sizes 2 and 4 MiB */
		m->ranges[i].gpa = (uint64_t)i * 8 * MIB + 4096 * MIB;
		m->ranges[i].len = (i % 2 ? 4 : 2) * MIB;
	}
}

static struct proto_msg *b_hello_guest(void)
{
	struct proto_msg *m = msg_new(PROTO_HELLO, 0);

	m->u.hello.version_min = PROTO_VERSION_MIN;
	m->u.hello.version_max = PROTO_VERSION_MAX;
	m->u.hello.features = PROTO_FEAT_EVENTS | PROTO_FEAT_MODULE | (1ULL << 60);
	m->u.hello.page_size = 4096;
	m->u.hello.block_size = PROTO_BLOCK_SIZE;
	m->u.hello.ram_bytes = 1024 * MIB;
	return m;
}

static struct proto_msg *b_hello_host(void)
{
	struct proto_msg *m = msg_new(PROTO_HELLO, 0);

	m->u.hello.version_min = 1;
	m->u.hello.version_max = 3;
	return m;
}

static struct proto_msg *b_req_scan(void) { return msg_new(PROTO_REQ_SCAN, 1); }
static struct proto_msg *b_req_list(void) { return msg_new(PROTO_REQ_LIST, 0xffffffff); }
static struct proto_msg *b_req_stats(void) { return msg_new(PROTO_REQ_STATS, 3); }

static struct proto_msg *b_req_capture(void)
{
	struct proto_msg *m = msg_new(PROTO_REQ_CAPTURE, 42);

	m->u.capture.bytes = 64 * MIB;
	m->u.capture.mode = VMDEFRAG_MODE_CAPTURE;
	m->u.capture.budget_ms = 500;
	m->u.capture.floor_bytes = 128 * MIB;
	m->u.capture.nranges = 2;
	fill_ranges(m, 2);
	return m;
}

static struct proto_msg *b_req_capture_none(void)
{
	struct proto_msg *m = msg_new(PROTO_REQ_CAPTURE, 43);

	m->u.capture.bytes = 2 * MIB;
	m->u.capture.mode = VMDEFRAG_MODE_COMPACT;
	return m;
}

static struct proto_msg *b_req_capture_max(void)
{
	struct proto_msg *m = msg_new(PROTO_REQ_CAPTURE, 44);

	m->u.capture.bytes = 1ULL << 40;
	m->u.capture.nranges = PROTO_MAX_RANGES;
	fill_ranges(m, PROTO_MAX_RANGES);
	return m;
}

static struct proto_msg *b_req_capture_strict(void)
{
	struct proto_msg *m = b_req_capture();

	m->u.capture.flags = PROTO_CAPTURE_STRICT;
	return m;
}

static struct proto_msg *b_req_ack_ranges(void)
{
	struct proto_msg *m = msg_new(PROTO_REQ_ACK, 45);

	m->u.ack.nranges = 3;
	fill_ranges(m, 3);
	return m;
}

static struct proto_msg *b_req_ack_max(void)
{
	struct proto_msg *m = msg_new(PROTO_REQ_ACK, 46);

	m->u.ack.nranges = PROTO_MAX_RANGES;
	fill_ranges(m, PROTO_MAX_RANGES);
	return m;
}

static struct proto_msg *b_req_ack_all(void)
{
	struct proto_msg *m = msg_new(PROTO_REQ_ACK, 47);

	m->u.ack.flags = PROTO_ACK_ALL;
	return m;
}

static struct proto_msg *b_resp_ack(void)
{
	struct proto_msg *m = msg_new(PROTO_RESP_ACK, 48);

	m->u.ack_resp.bytes = 96 * MIB;
	return m;
}

static struct proto_msg *b_resp_ack_failed(void)
{
	struct proto_msg *m = msg_new(PROTO_RESP_ACK, 49);

	m->u.status.status = -ENODEV;
	return m;
}

static struct proto_msg *b_req_release_ranges(void)
{
	struct proto_msg *m = msg_new(PROTO_REQ_RELEASE, 5);

	m->u.release.nranges = 2;
	fill_ranges(m, 2);
	return m;
}

static struct proto_msg *b_req_release_bytes(void)
{
	struct proto_msg *m = msg_new(PROTO_REQ_RELEASE, 6);

	m->u.release.bytes = 6 * MIB;
	return m;
}

static struct proto_msg *b_req_set_floor(void)
{
	struct proto_msg *m = msg_new(PROTO_REQ_SET_FLOOR, 7);

	m->u.set_floor.floor_bytes = 256 * MIB;
	return m;
}

static struct proto_msg *b_evt_captured(void)
{
	struct proto_msg *m = msg_new(PROTO_EVT_CAPTURED, 0);

	m->flags = PROTO_F_MORE;
	m->u.evt.nranges = 3;
	fill_ranges(m, 3);
	return m;
}

static struct proto_msg *b_evt_released(void)
{
	struct proto_msg *m = msg_new(PROTO_EVT_RELEASED, 0);

	m->u.evt.reason = VMDEFRAG_RELEASE_SHRINKER;
	m->u.evt.nranges = 2;
	fill_ranges(m, 2);
	return m;
}

static void fill_stats(struct proto_stats *s)
{
	uint64_t *v = (uint64_t *)s;

	for (size_t i = 0; i < sizeof(*s) / sizeof(*v); i++)
		v[i] = 0x0102030405060708ULL + i;
}

static struct proto_msg *b_evt_stats(void)
{
	struct proto_msg *m = msg_new(PROTO_EVT_STATS, 0);

	fill_stats(&m->u.stats);
	return m;
}

static struct proto_msg *b_evt_meminfo(void)
{
	struct proto_msg *m = msg_new(PROTO_EVT_MEMINFO, 0);
	struct proto_meminfo *mi = &m->u.meminfo;

	mi->total_bytes = 1024 * MIB;
	mi->free_bytes = 600 * MIB;
	mi->available_bytes = 800 * MIB;
	mi->wmark_low_bytes = 4 * MIB;
	mi->wmark_high_bytes = 5 * MIB;
	mi->alloc_bytes_per_sec = 3 * MIB;
	mi->captured_bytes = 64 * MIB;
	mi->floor_bytes = 128 * MIB;
	mi->vacate_ns = 987654321;
	mi->psi_some_total_us = 123456;
	mi->psi_full_total_us = 23456;
	mi->psi_some_avg10 = 150;	/* 1.50 % */
	mi->psi_full_avg10 = 20;
	mi->flags = PROTO_MEMINFO_F_PSI | PROTO_MEMINFO_F_MODULE;
	mi->interval_ms = 2000;
	return m;
}

/* No PSI (a kernel without it), no module: those fields are all 0. */
static struct proto_msg *b_evt_meminfo_bare(void)
{
	struct proto_msg *m = b_evt_meminfo();
	struct proto_meminfo *mi = &m->u.meminfo;

	mi->captured_bytes = mi->floor_bytes = mi->vacate_ns = 0;
	mi->psi_some_total_us = mi->psi_full_total_us = 0;
	mi->psi_some_avg10 = mi->psi_full_avg10 = 0;
	mi->flags = PROTO_MEMINFO_F_URGENT;
	return m;
}

static struct proto_msg *b_resp_error(void)
{
	struct proto_msg *m = msg_new(PROTO_RESP_ERROR, 9);

	m->u.status.status = -EOPNOTSUPP;
	return m;
}

static struct proto_msg *b_resp_scan(void)
{
	static const uint32_t bounds[] = VMDEFRAG_COST_BOUNDS;
	struct proto_msg *m = msg_new(PROTO_RESP_SCAN, 10);
	struct proto_scan_resp *s = &m->u.scan;

	s->total_bytes = 1024 * MIB;
	s->free_bytes = 700 * MIB;
	s->free_block_bytes = 100 * MIB;
	s->capturable_bytes = 500 * MIB;
	s->captured_bytes = 8 * MIB;
	s->available_bytes = 800 * MIB;
	s->scan_ns = 123456789;
	s->nclasses = __VMDEFRAG_CLASS_MAX;
	for (unsigned int i = 0; i < s->nclasses; i++)
		s->classes[i] = 10 + i;
	s->ncost = VMDEFRAG_COST_BUCKETS;
	for (unsigned int i = 0; i < s->ncost; i++) {
		s->cost[i] = 100 + i;
		s->cost_bounds[i] = bounds[i];
	}
	s->nunmovable = __VMDEFRAG_CAUSE_MAX;
	for (unsigned int i = 0; i < s->nunmovable; i++)
		s->unmovable[i] = 1000 + i;
	s->nslabs = 2;
	strcpy(m->slabs[0].name, "kmalloc-64");
	m->slabs[0].pages = 77;
	m->slabs[0].blocks = 5;
	strcpy(m->slabs[1].name, "ext4_inode_cache");
	m->slabs[1].pages = 300;
	m->slabs[1].blocks = 9;
	return m;
}

/* Version 2: the census after the slabs. */
static struct proto_msg *b_resp_scan_census(void)
{
	struct proto_msg *m = b_resp_scan();

	m->u.scan.flags = PROTO_SCAN_F_CENSUS;
	m->census.movable_pages = 1234;
	m->census.slab_reclaim_pages = 40;
	m->census.slab_reclaim_objects = 800;
	m->census.evicted_dentries = 5;
	m->census.evicted_inodes = 6;
	m->census.evicted_pagecache_bytes = 7 * MIB;
	m->census.evicted_blocks = 8;
	m->census.slab_reclaim_blocks[0] = 0;
	m->census.slab_reclaim_blocks[1] = 9;
	return m;
}

static struct proto_msg *b_resp_scan_max(void)
{
	struct proto_msg *m = b_resp_scan();

	m->u.scan.nslabs = PROTO_MAX_SLABS;
	for (unsigned int i = 0; i < PROTO_MAX_SLABS; i++) {
		memset(m->slabs[i].name, 0, PROTO_NAME_LEN);
		memset(m->slabs[i].name, 'a' + i % 26, PROTO_NAME_LEN - 1);
		m->slabs[i].pages = i;
	}
	return m;
}

static struct proto_msg *b_resp_scan_failed(void)
{
	struct proto_msg *m = msg_new(PROTO_RESP_SCAN, 11);

	m->u.status.status = -ENODEV;
	return m;
}

static struct proto_msg *b_resp_capture(void)
{
	struct proto_msg *m = msg_new(PROTO_RESP_CAPTURE, 12);

	m->flags = PROTO_F_MORE;
	m->u.ranges_resp.stop_errno = -EBUSY;
	m->u.ranges_resp.bytes = 10 * MIB;
	m->u.ranges_resp.nranges = 4;
	fill_ranges(m, 4);
	return m;
}

static struct proto_msg *b_resp_release(void)
{
	struct proto_msg *m = msg_new(PROTO_RESP_RELEASE, 13);

	m->u.ranges_resp.bytes = 6 * MIB;
	m->u.ranges_resp.nranges = 2;
	fill_ranges(m, 2);
	return m;
}

static struct proto_msg *b_resp_list_max(void)
{
	struct proto_msg *m = msg_new(PROTO_RESP_LIST, 14);

	m->flags = PROTO_F_MORE;
	m->u.list.nranges = PROTO_MAX_RANGES;
	fill_ranges(m, PROTO_MAX_RANGES);
	return m;
}

static struct proto_msg *b_resp_list_empty(void)
{
	return msg_new(PROTO_RESP_LIST, 15);
}

static struct proto_msg *b_resp_stats(void)
{
	struct proto_msg *m = msg_new(PROTO_RESP_STATS, 16);

	fill_stats(&m->u.stats_resp.stats);
	return m;
}

static struct proto_msg *b_resp_set_floor(void)
{
	return msg_new(PROTO_RESP_SET_FLOOR, 17);
}

static struct proto_msg *b_resp_set_floor_failed(void)
{
	struct proto_msg *m = msg_new(PROTO_RESP_SET_FLOOR, 18);

	m->u.status.status = -PROTO_ERRNO_MAX;
	return m;
}

typedef struct proto_msg *(*builder_fn)(void);

struct roundtrip_case {
	const char *name;
	builder_fn build;
	size_t wire_len;	/* expected frame length */
};

#define SLAB_SZ sizeof(struct proto_slab)
#define RANGE_SZ sizeof(struct proto_range)

static const struct roundtrip_case roundtrip_cases[] = {
	{ "hello guest", b_hello_guest, HDR + 32 },
	{ "hello host", b_hello_host, HDR + 32 },
	{ "req scan", b_req_scan, HDR },
	{ "req capture", b_req_capture, HDR + 32 + 2 * RANGE_SZ },
	{ "req capture no ranges", b_req_capture_none, HDR + 32 },
	{ "req capture max ranges", b_req_capture_max,
	  HDR + 32 + PROTO_MAX_RANGES * RANGE_SZ },
	{ "req capture strict", b_req_capture_strict, HDR + 32 + 2 * RANGE_SZ },
	{ "req ack ranges", b_req_ack_ranges, HDR + 16 + 3 * RANGE_SZ },
	{ "req ack max ranges", b_req_ack_max, HDR + 16 + PROTO_MAX_RANGES * RANGE_SZ },
	{ "req ack all", b_req_ack_all, HDR + 16 },
	{ "resp ack", b_resp_ack, HDR + 16 },
	{ "resp ack failed", b_resp_ack_failed, HDR + 8 },
	{ "req release ranges", b_req_release_ranges, HDR + 16 + 2 * RANGE_SZ },
	{ "req release bytes", b_req_release_bytes, HDR + 16 },
	{ "req list", b_req_list, HDR },
	{ "req stats", b_req_stats, HDR },
	{ "req set floor", b_req_set_floor, HDR + 8 },
	{ "evt captured", b_evt_captured, HDR + 8 + 3 * RANGE_SZ },
	{ "evt released", b_evt_released, HDR + 8 + 2 * RANGE_SZ },
	{ "evt stats", b_evt_stats, HDR + 104 },
	{ "evt meminfo", b_evt_meminfo, HDR + 104 },
	{ "evt meminfo bare", b_evt_meminfo_bare, HDR + 104 },
	{ "resp error", b_resp_error, HDR + 8 },
	{ "resp scan", b_resp_scan,
	  HDR + sizeof(struct proto_scan_resp) + 2 * SLAB_SZ },
	{ "resp scan census", b_resp_scan_census,
	  HDR + sizeof(struct proto_scan_resp) + 2 * SLAB_SZ +
	  sizeof(struct proto_scan_census) },
	{ "resp scan max slabs", b_resp_scan_max,
	  HDR + sizeof(struct proto_scan_resp) + PROTO_MAX_SLABS * SLAB_SZ },
	{ "resp scan failed", b_resp_scan_failed, HDR + 8 },
	{ "resp capture", b_resp_capture, HDR + 24 + 4 * RANGE_SZ },
	{ "resp release", b_resp_release, HDR + 24 + 2 * RANGE_SZ },
	{ "resp list max", b_resp_list_max, HDR + 8 + PROTO_MAX_RANGES * RANGE_SZ },
	{ "resp list empty", b_resp_list_empty, HDR + 8 },
	{ "resp stats", b_resp_stats, HDR + 112 },
	{ "resp set floor", b_resp_set_floor, HDR + 8 },
	{ "resp set floor failed", b_resp_set_floor_failed, HDR + 8 },
};

#define NCASES(t) (sizeof(t) / sizeof((t)[0]))

static uint32_t msg_nranges(const struct proto_msg *m)
{
	switch (m->type) {
	case PROTO_REQ_CAPTURE: return m->u.capture.nranges;
	case PROTO_REQ_RELEASE: return m->u.release.nranges;
	case PROTO_REQ_ACK: return m->u.ack.nranges;
	case PROTO_EVT_CAPTURED:
	case PROTO_EVT_RELEASED: return m->u.evt.nranges;
	case PROTO_RESP_CAPTURE:
	case PROTO_RESP_RELEASE:
		return m->u.status.status < 0 ? 0 : m->u.ranges_resp.nranges;
	case PROTO_RESP_LIST:
		return m->u.status.status < 0 ? 0 : m->u.list.nranges;
	default: return 0;
	}
}

static void assert_msg_equal(const struct proto_msg *a, const struct proto_msg *b,
			     const char *name)
{
	uint32_t n = msg_nranges(a);

	if (a->type != b->type || a->flags != b->flags || a->id != b->id ||
	    memcmp(&a->u, &b->u, sizeof(a->u)))
		fail_msg("%s: decoded header/body differs", name);
	if (n != msg_nranges(b) || memcmp(a->ranges, b->ranges, n * RANGE_SZ))
		fail_msg("%s: decoded ranges differ", name);
	if (a->type == PROTO_RESP_SCAN && a->u.scan.status == 0 &&
	    memcmp(a->slabs, b->slabs, a->u.scan.nslabs * SLAB_SZ))
		fail_msg("%s: decoded slabs differ", name);
	if (a->type == PROTO_RESP_SCAN && a->u.scan.status == 0 &&
	    (a->u.scan.flags & PROTO_SCAN_F_CENSUS) &&
	    memcmp(&a->census, &b->census, sizeof(a->census)))
		fail_msg("%s: decoded census differs", name);
}

static uint8_t wire[PROTO_MAX_FRAME + 64];

static void test_roundtrip(void **state)
{
	struct proto_msg *out = calloc(1, sizeof(*out));
	struct proto_decoder *d = malloc(sizeof(*d));

	assert_non_null(out);
	assert_non_null(d);
	for (size_t c = 0; c < NCASES(roundtrip_cases); c++) {
		const struct roundtrip_case *tc = &roundtrip_cases[c];
		struct proto_msg *in = tc->build();
		struct proto_frame f;
		size_t len = 0;
		int r;

		r = proto_encode(in, wire, sizeof(wire), &len);
		if (r != 0)
			fail_msg("%s: encode: %d", tc->name, r);
		if (len != tc->wire_len)
			fail_msg("%s: wire length %zu, expected %zu", tc->name,
				 len, tc->wire_len);
		/* little-endian header on the wire */
		assert_memory_equal(wire, "VDFP", 4);
		assert_int_equal(wire[4], PROTO_FRAME_VERSION);
		assert_int_equal(wire[6] | wire[7] << 8, in->type);
		assert_int_equal(wire[12] | wire[13] << 8 | wire[14] << 16 |
				 (uint32_t)wire[15] << 24, len - HDR);

		/* too small a buffer: refused, nothing claimed */
		assert_int_equal(proto_encode(in, wire, len - 1, &len), -ENOBUFS);
		assert_int_equal(len, tc->wire_len);

		memset(out, 0xa5, sizeof(*out));
		r = proto_decode_buf(wire, len, out);
		if (r != 0)
			fail_msg("%s: decode: %d", tc->name, r);
		assert_msg_equal(in, out, tc->name);

		/* one byte at a time through the stream decoder */
		proto_decoder_init(d);
		for (size_t i = 0; i < len; i++) {
			assert_int_equal(proto_decoder_next(d, &f), 0);
			assert_int_equal(proto_decoder_feed(d, wire + i, 1), 1);
		}
		assert_int_equal(proto_decoder_next(d, &f), 1);
		memset(out, 0x5a, sizeof(*out));
		assert_int_equal(proto_decode(&f, out), 0);
		assert_msg_equal(in, out, tc->name);
		assert_int_equal(proto_decoder_next(d, &f), 0);
		free(in);
	}
	free(d);
	free(out);
}

/* ---- malformed inputs -------------------------------------------------- */

struct bad_case {
	const char *name;
	builder_fn build;
	size_t off;		/* byte offset in the frame to patch */
	unsigned int width;	/* 0: no patch, 1/2/4/8: little-endian value */
	uint64_t value;
	long len_delta;		/* cut (<0) or pad with zeros (>0) the
				 * payload, header len follows */
	int expect;		/* errno from proto_decode_buf */
	void (*mutate)(uint8_t *frame);	/* extra damage, after the patch */
};

#define CAP_OFF(f) (HDR + offsetof(struct proto_capture_req, f))
#define CAP_RANGE(i) (HDR + sizeof(struct proto_capture_req) + (i) * RANGE_SZ)
#define HELLO_OFF(f) (HDR + offsetof(struct proto_hello, f))
#define SCAN_OFF(f) (HDR + offsetof(struct proto_scan_resp, f))
#define SCAN_SLAB(i) (HDR + sizeof(struct proto_scan_resp) + (i) * SLAB_SZ)
#define CENSUS_OFF(f) (SCAN_SLAB(2) + offsetof(struct proto_scan_census, f))
#define REL_OFF(f) (HDR + offsetof(struct proto_release_req, f))
#define RR_OFF(f) (HDR + offsetof(struct proto_ranges_resp, f))
#define EVT_OFF(f) (HDR + offsetof(struct proto_evt_ranges, f))
#define HDR_OFF(f) offsetof(struct proto_hdr, f)
#define ACK_OFF(f) (HDR + offsetof(struct proto_ack_req, f))
#define ACK_RANGE(i) (HDR + sizeof(struct proto_ack_req) + (i) * RANGE_SZ)
#define ACKR_OFF(f) (HDR + offsetof(struct proto_ack_resp, f))
#define MI_OFF(f) (HDR + offsetof(struct proto_meminfo, f))

static void mut_unterminated(uint8_t *frame)
{
	memset(frame + SCAN_SLAB(0), 'x', PROTO_NAME_LEN);
}

static void mut_unterminated_last(uint8_t *frame)
{
	frame[SCAN_SLAB(PROTO_MAX_SLABS - 1) + PROTO_NAME_LEN - 1] = 'z';
}

static const struct bad_case bad_cases[] = {
	/* header */
	{ "wrong magic", b_req_scan, 0, 1, 'X', 0, -EPROTO, NULL },
	{ "bad frame version", b_req_scan, HDR_OFF(version), 1, 2, 0, -EPROTONOSUPPORT, NULL },
	{ "unknown flag", b_req_scan, HDR_OFF(flags), 1, 0x80, 0, -EBADMSG, NULL },
	{ "unknown type", b_req_scan, HDR_OFF(type), 2, 0x7777, 0, -EOPNOTSUPP, NULL },
	{ "response bit on unknown", b_req_scan, HDR_OFF(type), 2, 0x8001, 0, -EOPNOTSUPP, NULL },
	{ "oversized length", b_req_scan, HDR_OFF(len), 4, PROTO_MAX_PAYLOAD + 1, 0, -EMSGSIZE, NULL },
	{ "length 4 GiB - 1", b_req_scan, HDR_OFF(len), 4, 0xffffffff, 0, -EMSGSIZE, NULL },
	{ "MORE on a request", b_req_scan, HDR_OFF(flags), 1, PROTO_F_MORE, 0, -EBADMSG, NULL },
	{ "request id 0", b_req_scan, HDR_OFF(id), 4, 0, 0, -EBADMSG, NULL },
	{ "hello with id", b_hello_guest, HDR_OFF(id), 4, 7, 0, -EBADMSG, NULL },
	{ "event with id", b_evt_stats, HDR_OFF(id), 4, 7, 0, -EBADMSG, NULL },
	/* lengths */
	{ "truncated hello", b_hello_guest, 0, 0, 0, -1, -EBADMSG, NULL },
	{ "trailing byte hello", b_hello_guest, 0, 0, 0, 1, -EBADMSG, NULL },
	{ "payload on scan request", b_req_scan, 0, 0, 0, 8, -EBADMSG, NULL },
	{ "truncated scan response", b_resp_scan, 0, 0, 0, -1, -EBADMSG, NULL },
	{ "scan response cut to status", b_resp_scan, 0, 0, 0,
	  8 - (long)(sizeof(struct proto_scan_resp) + 2 * SLAB_SZ), -EBADMSG, NULL },
	{ "failed response too long", b_resp_scan_failed, 0, 0, 0, 8, -EBADMSG, NULL },
	{ "truncated range", b_req_capture, 0, 0, 0, -8, -EBADMSG, NULL },
	{ "extra range", b_req_capture, 0, 0, 0, RANGE_SZ, -EBADMSG, NULL },
	/* counts */
	{ "range count overflow", b_req_capture, CAP_OFF(nranges), 4, 0xffffffff, 0, -E2BIG, NULL },
	{ "range count above max", b_req_capture, CAP_OFF(nranges), 4,
	  PROTO_MAX_RANGES + 1, 0, -E2BIG, NULL },
	{ "range count short", b_req_capture, CAP_OFF(nranges), 4, 1, 0, -EBADMSG, NULL },
	{ "range count long", b_req_capture, CAP_OFF(nranges), 4, 3, 0, -EBADMSG, NULL },
	{ "scan unknown flag", b_resp_scan, SCAN_OFF(flags), 1, 2, 0, -EBADMSG, NULL },
	{ "census flag without census", b_resp_scan, SCAN_OFF(flags), 1,
	  PROTO_SCAN_F_CENSUS, 0, -EBADMSG, NULL },
	{ "census cut off", b_resp_scan_census, 0, 0, 0, -8, -EBADMSG, NULL },
	{ "census cache past nslabs", b_resp_scan_census,
	  CENSUS_OFF(slab_reclaim_blocks) + 8 * 2, 8, 1, 0, -EBADMSG, NULL },
	{ "census reclaim blocks above blocks", b_resp_scan_census,
	  CENSUS_OFF(slab_reclaim_blocks) + 8, 8, 10, 0, -EINVAL, NULL },
	{ "census movable pages above blocks", b_resp_scan_census,
	  CENSUS_OFF(movable_pages), 8, 12 * 512 + 1, 0, -EINVAL, NULL },
	{ "census objects above pages", b_resp_scan_census,
	  CENSUS_OFF(slab_reclaim_objects), 8, 41 * 512, 0, -EINVAL, NULL },
	{ "slab count above max", b_resp_scan, SCAN_OFF(nslabs), 4, PROTO_MAX_SLABS + 1, 0, -E2BIG, NULL },
	{ "class count above max", b_resp_scan, SCAN_OFF(nclasses), 1, PROTO_HIST_MAX + 1, 0, -E2BIG, NULL },
	{ "class past count", b_resp_scan, SCAN_OFF(classes) + 8 * 15, 8, 1, 0, -EBADMSG, NULL },
	{ "cost bound past count", b_resp_scan, SCAN_OFF(cost_bounds) + 4 * 15, 4, 1, 0, -EBADMSG, NULL },
	{ "cost bounds not ascending", b_resp_scan, SCAN_OFF(cost_bounds) + 4, 4, 0, 0, -EINVAL, NULL },
	/* ranges */
	{ "misaligned gpa", b_req_capture, CAP_RANGE(0), 8, 4096 * MIB + 4096, 0, -EINVAL, NULL },
	{ "misaligned len", b_req_capture, CAP_RANGE(0) + 8, 8, MIB, 0, -EINVAL, NULL },
	{ "zero len", b_req_capture, CAP_RANGE(0) + 8, 8, 0, 0, -EINVAL, NULL },
	{ "gpa+len overflow", b_req_capture, CAP_RANGE(1), 8, 0xffffffffffe00000ULL, 0, -EOVERFLOW, NULL },
	{ "gpa+len overflow by len", b_req_capture, CAP_RANGE(1) + 8, 8,
	  0xffffffffffe00000ULL, 0, -EOVERFLOW, NULL },
	{ "overlapping ranges", b_req_capture, CAP_RANGE(1), 8, 4096 * MIB, 0, -EINVAL, NULL },
	{ "descending ranges", b_req_capture, CAP_RANGE(1), 8, 0, 0, -EINVAL, NULL },
	{ "misaligned event range", b_evt_released, HDR + 8, 8, 1, 0, -EINVAL, NULL },
	{ "misaligned response range", b_resp_capture, HDR + 24 + 8, 8, 3 * MIB, 0, -EINVAL, NULL },
	/* names */
	{ "unterminated name", b_resp_scan, 0, 0, 0, 0, -EILSEQ, mut_unterminated },
	{ "unterminated last name", b_resp_scan_max, 0, 0, 0, 0, -EILSEQ, mut_unterminated_last },
	{ "garbage after NUL", b_resp_scan, SCAN_SLAB(1) + 20, 1, 'x', 0, -EILSEQ, NULL },
	{ "control char in name", b_resp_scan, SCAN_SLAB(0) + 2, 1, '\n', 0, -EILSEQ, NULL },
	{ "high byte in name", b_resp_scan, SCAN_SLAB(0) + 2, 1, 0xc3, 0, -EILSEQ, NULL },
	{ "empty name", b_resp_scan, SCAN_SLAB(0), 8, 0, 0, -EINVAL, NULL },
	/* fields */
	{ "hello reserved", b_hello_guest, HELLO_OFF(reserved), 4, 1, 0, -EBADMSG, NULL },
	{ "hello version 0", b_hello_guest, HELLO_OFF(version_min), 2, 0, 0, -EINVAL, NULL },
	{ "hello min > max", b_hello_guest, HELLO_OFF(version_min), 2, 9, 0, -EINVAL, NULL },
	{ "hello page size", b_hello_guest, HELLO_OFF(page_size), 4, 3000, 0, -EINVAL, NULL },
	{ "hello page size 1 MiB", b_hello_guest, HELLO_OFF(page_size), 4, MIB, 0, -EINVAL, NULL },
	{ "hello block size", b_hello_guest, HELLO_OFF(block_size), 4, 4096, 0, -EINVAL, NULL },
	{ "capture mode", b_req_capture, CAP_OFF(mode), 4, 7, 0, -EINVAL, NULL },
	{ "capture 0 bytes", b_req_capture, CAP_OFF(bytes), 8, 0, 0, -EINVAL, NULL },
	{ "capture unknown flag", b_req_capture, CAP_OFF(flags), 4, 2, 0, -EINVAL, NULL },
	{ "capture high flag", b_req_capture_strict, CAP_OFF(flags), 4, 0x80000001u, 0, -EINVAL, NULL },
	{ "capture evict policy 3", b_req_capture, CAP_OFF(flags), 4,
	  PROTO_CAPTURE_EVICT, 0, -EINVAL, NULL },
	{ "strict capture without ranges", b_req_capture_none, CAP_OFF(flags), 4,
	  PROTO_CAPTURE_STRICT, 0, -EINVAL, NULL },
	{ "ack bytes set", b_req_ack_ranges, ACK_OFF(bytes_unused), 8, MIB, 0, -EBADMSG, NULL },
	{ "ack unknown flag", b_req_ack_ranges, ACK_OFF(flags), 4, 4, 0, -EINVAL, NULL },
	{ "ack all with ranges", b_req_ack_ranges, ACK_OFF(flags), 4, PROTO_ACK_ALL, 0, -EINVAL, NULL },
	{ "ack nothing", b_req_ack_all, ACK_OFF(flags), 4, 0, 0, -EINVAL, NULL },
	{ "ack count above max", b_req_ack_ranges, ACK_OFF(nranges), 4,
	  PROTO_MAX_RANGES + 1, 0, -E2BIG, NULL },
	{ "ack count short", b_req_ack_ranges, ACK_OFF(nranges), 4, 2, 0, -EBADMSG, NULL },
	{ "ack misaligned range", b_req_ack_ranges, ACK_RANGE(1), 8, 4104 * MIB + 4096, 0, -EINVAL, NULL },
	{ "ack overlapping ranges", b_req_ack_ranges, ACK_RANGE(2), 8, 4104 * MIB, 0, -EINVAL, NULL },
	{ "ack range overflow", b_req_ack_ranges, ACK_RANGE(2), 8, 0xffffffffffe00000ULL, 0, -EOVERFLOW, NULL },
	{ "ack with MORE", b_req_ack_all, HDR_OFF(flags), 1, PROTO_F_MORE, 0, -EBADMSG, NULL },
	{ "ack id 0", b_req_ack_all, HDR_OFF(id), 4, 0, 0, -EBADMSG, NULL },
	{ "truncated ack", b_req_ack_all, 0, 0, 0, -1, -EBADMSG, NULL },
	{ "ack response reserved", b_resp_ack, ACKR_OFF(reserved), 4, 1, 0, -EBADMSG, NULL },
	{ "ack response positive status", b_resp_ack, ACKR_OFF(status), 4, 3, 0, -EINVAL, NULL },
	{ "ack response with MORE", b_resp_ack, HDR_OFF(flags), 1, PROTO_F_MORE, 0, -EBADMSG, NULL },
	{ "ack response too long", b_resp_ack, 0, 0, 0, 8, -EBADMSG, NULL },
	{ "release bytes and ranges", b_req_release_ranges, REL_OFF(bytes), 8, MIB, 0, -EINVAL, NULL },
	{ "release nothing", b_req_release_bytes, REL_OFF(bytes), 8, 0, 0, -EINVAL, NULL },
	{ "released reason", b_evt_released, EVT_OFF(reason), 4, 9, 0, -EINVAL, NULL },
	{ "captured with reason", b_evt_captured, EVT_OFF(reason), 4, 1, 0, -EINVAL, NULL },
	{ "positive status", b_resp_release, RR_OFF(status), 4, 1, 0, -EINVAL, NULL },
	{ "status below -4095", b_resp_scan_failed, HDR, 4, (uint32_t)-5000, 0, -EINVAL, NULL },
	{ "positive stop errno", b_resp_capture, RR_OFF(stop_errno), 4, 5, 0, -EINVAL, NULL },
	{ "stop errno on release", b_resp_release, RR_OFF(stop_errno), 4, (uint32_t)-EIO, 0, -EINVAL, NULL },
	{ "failed response with MORE", b_resp_scan_failed, HDR_OFF(flags), 1, PROTO_F_MORE, 0, -EBADMSG, NULL },
	{ "failed response reserved", b_resp_scan_failed, HDR + 4, 4, 1, 0, -EBADMSG, NULL },
	{ "error response status 0", b_resp_error, HDR, 4, 0, 0, -EINVAL, NULL },
	{ "set floor response positive", b_resp_set_floor, HDR, 4, 2, 0, -EINVAL, NULL },
	/* EVT_MEMINFO: every field bounded, and consistent */
	{ "meminfo with id", b_evt_meminfo, HDR_OFF(id), 4, 1, 0, -EBADMSG, NULL },
	{ "meminfo with MORE", b_evt_meminfo, HDR_OFF(flags), 1, PROTO_F_MORE, 0, -EBADMSG, NULL },
	{ "meminfo truncated", b_evt_meminfo, 0, 0, 0, -4, -EBADMSG, NULL },
	{ "meminfo trailing", b_evt_meminfo, 0, 0, 0, 8, -EBADMSG, NULL },
	{ "meminfo unknown flag", b_evt_meminfo, MI_OFF(flags), 4, 0x80, 0, -EBADMSG, NULL },
	{ "meminfo total 0", b_evt_meminfo, MI_OFF(total_bytes), 8, 0, 0, -EINVAL, NULL },
	{ "meminfo total 2 PiB", b_evt_meminfo, MI_OFF(total_bytes), 8, 1ULL << 51, 0, -EINVAL, NULL },
	{ "meminfo free > total", b_evt_meminfo, MI_OFF(free_bytes), 8, 1025 * MIB, 0, -EINVAL, NULL },
	{ "meminfo available > total", b_evt_meminfo, MI_OFF(available_bytes), 8, 2048 * MIB, 0, -EINVAL, NULL },
	{ "meminfo low > high", b_evt_meminfo, MI_OFF(wmark_low_bytes), 8, 6 * MIB, 0, -EINVAL, NULL },
	{ "meminfo high > total", b_evt_meminfo, MI_OFF(wmark_high_bytes), 8, 2048 * MIB, 0, -EINVAL, NULL },
	{ "meminfo alloc rate", b_evt_meminfo, MI_OFF(alloc_bytes_per_sec), 8, UINT64_MAX, 0, -EINVAL, NULL },
	{ "meminfo interval 0", b_evt_meminfo, MI_OFF(interval_ms), 4, 0, 0, -EINVAL, NULL },
	{ "meminfo interval 2 h", b_evt_meminfo, MI_OFF(interval_ms), 4, 7200000, 0, -EINVAL, NULL },
	{ "meminfo psi > 100 %", b_evt_meminfo, MI_OFF(psi_some_avg10), 4, 10001, 0, -EINVAL, NULL },
	{ "meminfo psi full > some", b_evt_meminfo, MI_OFF(psi_full_avg10), 4, 151, 0, -EINVAL, NULL },
	{ "meminfo psi full total > some", b_evt_meminfo, MI_OFF(psi_full_total_us), 8, 123457, 0, -EINVAL, NULL },
	{ "meminfo psi without flag", b_evt_meminfo_bare, MI_OFF(psi_some_avg10), 4, 1, 0, -EBADMSG, NULL },
	{ "meminfo psi total without flag", b_evt_meminfo_bare, MI_OFF(psi_some_total_us), 8, 1, 0, -EBADMSG, NULL },
	{ "meminfo captured > total", b_evt_meminfo, MI_OFF(captured_bytes), 8, 1025 * MIB, 0, -EINVAL, NULL },
	{ "meminfo floor > total", b_evt_meminfo, MI_OFF(floor_bytes), 8, 1025 * MIB, 0, -EINVAL, NULL },
	{ "meminfo captured without flag", b_evt_meminfo_bare, MI_OFF(captured_bytes), 8, MIB, 0, -EBADMSG, NULL },
	{ "meminfo vacate time without flag", b_evt_meminfo_bare, MI_OFF(vacate_ns), 8, 1, 0, -EBADMSG, NULL },
};

static void patch_le(uint8_t *p, unsigned int width, uint64_t v)
{
	for (unsigned int i = 0; i < width; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p)
{
	return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Build the malformed frame of a case into wire[]; returns its length. */
static size_t bad_build(const struct bad_case *bc)
{
	struct proto_msg *m = bc->build();
	size_t len = 0;

	if (proto_encode(m, wire, sizeof(wire), &len))
		fail_msg("%s: base message does not encode", bc->name);
	free(m);
	if (bc->len_delta) {
		size_t nlen = (size_t)((long)len + bc->len_delta);

		if (nlen > len)
			memset(wire + len, 0, nlen - len);
		len = nlen;
		patch_le(wire + HDR_OFF(len), 4, len - HDR);
	}
	if (bc->width) {
		assert_true(bc->off + bc->width <= len);
		patch_le(wire + bc->off, bc->width, bc->value);
	}
	if (bc->mutate)
		bc->mutate(wire);
	return len;
}

/* Every byte still the 0xa5 the test filled it with. */
static bool msg_untouched(const struct proto_msg *m)
{
	const uint8_t *p = (const uint8_t *)m;

	for (size_t i = 0; i < sizeof(*m); i++)
		if (p[i] != 0xa5)
			return false;
	return true;
}

static void test_bad_inputs(void **state)
{
	struct proto_msg *out = calloc(1, sizeof(*out));
	struct proto_decoder *d = malloc(sizeof(*d));

	assert_non_null(out);
	assert_non_null(d);
	for (size_t c = 0; c < NCASES(bad_cases); c++) {
		const struct bad_case *bc = &bad_cases[c];
		size_t len = bad_build(bc);
		bool hdr_error = bc->expect == -EPROTO || bc->expect == -EMSGSIZE ||
				 bc->expect == -EPROTONOSUPPORT ||
				 (bc->expect == -EBADMSG && bc->off == HDR_OFF(flags) &&
				  (bc->value & ~PROTO_F_ALL));
		struct proto_frame f;
		int r;

		memset(out, 0xa5, sizeof(*out));
		r = proto_decode_buf(wire, len, out);
		if (r != bc->expect)
			fail_msg("%s: decode_buf returned %d, expected %d",
				 bc->name, r, bc->expect);
		if (!msg_untouched(out))
			fail_msg("%s: failed decode wrote the message", bc->name);

		/* the stream decoder agrees, fed byte by byte */
		proto_decoder_init(d);
		r = 0;
		for (size_t i = 0; i < len && r == 0; i++) {
			assert_int_equal(proto_decoder_feed(d, wire + i, 1), 1);
			r = proto_decoder_next(d, &f);
		}
		if (hdr_error) {
			if (r != bc->expect)
				fail_msg("%s: stream returned %d, expected %d",
					 bc->name, r, bc->expect);
			/* sticky: the session is dead */
			assert_int_equal(proto_decoder_next(d, &f), bc->expect);
			assert_int_equal(proto_decoder_feed(d, wire, 1), 0);
			continue;
		}
		if (r != 1)
			fail_msg("%s: stream returned %d, expected a frame",
				 bc->name, r);
		assert_int_equal(f.len, get_le32(wire + HDR_OFF(len)));
		r = proto_decode(&f, out);
		if (r != bc->expect)
			fail_msg("%s: decode returned %d, expected %d",
				 bc->name, r, bc->expect);
		if (!msg_untouched(out))
			fail_msg("%s: failed decode wrote the message", bc->name);
	}
	free(d);
	free(out);
}

/* decode_buf on buffers that do not hold exactly one frame */
static void test_decode_buf_lengths(void **state)
{
	struct proto_msg *out = calloc(1, sizeof(*out));
	struct proto_msg *m = b_req_capture();
	size_t len = 0;

	assert_int_equal(proto_encode(m, wire, sizeof(wire), &len), 0);
	for (size_t cut = 0; cut < len; cut++)
		assert_int_equal(proto_decode_buf(wire, cut, out), -EBADMSG);
	assert_int_equal(proto_decode_buf(wire, len + 1, out), -EBADMSG);
	assert_int_equal(proto_decode_buf(wire, len, out), 0);
	free(m);
	free(out);
}

/* ---- streams ----------------------------------------------------------- */

static builder_fn stream_msgs[] = {
	b_hello_guest, b_resp_scan, b_resp_list_max, b_req_scan, b_evt_released,
	b_resp_error,
};

/* Encode stream_msgs back to back into buf; returns the total length. */
static size_t stream_build(uint8_t *buf, size_t size, size_t *ends)
{
	size_t off = 0;

	for (size_t i = 0; i < NCASES(stream_msgs); i++) {
		struct proto_msg *m = stream_msgs[i]();
		size_t len;

		assert_int_equal(proto_encode(m, buf + off, size - off, &len), 0);
		off += len;
		ends[i] = off;
		free(m);
	}
	return off;
}

/* Feed `total` bytes in chunks of `chunk`, checking every frame decodes. */
static void stream_run(const uint8_t *buf, size_t total, size_t chunk)
{
	struct proto_decoder *d = malloc(sizeof(*d));
	struct proto_msg *out = calloc(1, sizeof(*out));
	size_t off = 0, nframes = 0;
	struct proto_frame f;

	assert_non_null(d);
	assert_non_null(out);
	proto_decoder_init(d);
	while (off < total) {
		size_t n = total - off < chunk ? total - off : chunk;
		size_t took = proto_decoder_feed(d, buf + off, n);
		int r;

		off += took;
		while ((r = proto_decoder_next(d, &f)) == 1) {
			struct proto_msg *want = stream_msgs[nframes]();

			assert_int_equal(proto_decode(&f, out), 0);
			assert_msg_equal(want, out, "stream");
			free(want);
			nframes++;
		}
		assert_int_equal(r, 0);
		/* the decoder only refuses bytes when a frame is waiting,
		 * and none is now */
		if (took < n)
			assert_true(took > 0);
	}
	assert_int_equal(nframes, NCASES(stream_msgs));
	free(out);
	free(d);
}

static void test_stream_split_coalesced(void **state)
{
	static const size_t chunks[] = { 1, 2, 3, 7, 15, 16, 17, 4096,
					 PROTO_MAX_FRAME, 3 * PROTO_MAX_FRAME };
	size_t size = 4 * PROTO_MAX_FRAME, ends[NCASES(stream_msgs)];
	uint8_t *buf = malloc(size);
	size_t total;

	assert_non_null(buf);
	total = stream_build(buf, size, ends);
	for (size_t i = 0; i < NCASES(chunks); i++)
		stream_run(buf, total, chunks[i]);
	free(buf);
}

/* Whole frames followed by a corrupt header: frames first, then the error. */
static void test_stream_garbage_after_frames(void **state)
{
	size_t size = 4 * PROTO_MAX_FRAME, ends[NCASES(stream_msgs)];
	struct proto_decoder *d = malloc(sizeof(*d));
	uint8_t *buf = malloc(size);
	struct proto_frame f;
	size_t total, off = 0;
	int r, frames = 0;

	assert_non_null(d);
	assert_non_null(buf);
	total = stream_build(buf, size, ends);
	/* corrupt the magic of the third frame */
	buf[ends[1]] ^= 0xff;
	proto_decoder_init(d);
	r = 0;
	while (off < total && r >= 0) {
		off += proto_decoder_feed(d, buf + off, total - off);
		while ((r = proto_decoder_next(d, &f)) == 1)
			frames++;
	}
	assert_int_equal(frames, 2);
	assert_int_equal(r, -EPROTO);
	assert_int_equal(proto_decoder_next(d, &f), -EPROTO);
	free(buf);
	free(d);
}

/* A header announcing a maximum payload is buffered whole, never more. */
static void test_stream_max_frame(void **state)
{
	struct proto_decoder *d = malloc(sizeof(*d));
	uint8_t *buf = calloc(1, PROTO_MAX_FRAME + 16);
	struct proto_frame f;
	size_t took;

	assert_non_null(d);
	assert_non_null(buf);
	patch_le(buf, 4, PROTO_MAGIC);
	buf[4] = PROTO_FRAME_VERSION;
	patch_le(buf + 6, 2, PROTO_REQ_SCAN);
	patch_le(buf + 8, 4, 1);
	patch_le(buf + 12, 4, PROTO_MAX_PAYLOAD);
	/* a second header right behind it */
	memcpy(buf + PROTO_MAX_FRAME, buf, 16);
	patch_le(buf + PROTO_MAX_FRAME + 12, 4, 0);

	proto_decoder_init(d);
	took = proto_decoder_feed(d, buf, PROTO_MAX_FRAME + 16);
	assert_int_equal(took, PROTO_MAX_FRAME);
	assert_int_equal(proto_decoder_feed(d, buf + took, 16), 0);
	assert_int_equal(proto_decoder_next(d, &f), 1);
	assert_int_equal(f.len, PROTO_MAX_PAYLOAD);
	/* a 64 KiB REQ_SCAN is well framed but not a valid SCAN */
	{
		struct proto_msg *out = calloc(1, sizeof(*out));

		assert_int_equal(proto_decode(&f, out), -EBADMSG);
		free(out);
	}
	assert_int_equal(proto_decoder_feed(d, buf + took, 16), 16);
	assert_int_equal(proto_decoder_next(d, &f), 1);
	assert_int_equal(f.len, 0);
	assert_int_equal(proto_decoder_next(d, &f), 0);
	free(buf);
	free(d);
}

/* ---- encoder refusals and helpers -------------------------------------- */

static void test_encode_refuses_invalid(void **state)
{
	struct proto_msg *m = b_req_capture();
	size_t len = 12345;

	m->u.capture.nranges = PROTO_MAX_RANGES + 1;
	assert_int_equal(proto_encode(m, wire, sizeof(wire), &len), -E2BIG);
	m->u.capture.nranges = 2;
	m->ranges[1].gpa = 1;
	assert_int_equal(proto_encode(m, wire, sizeof(wire), &len), -EINVAL);
	m->ranges[1].gpa = 0xffffffffffe00000ULL;
	assert_int_equal(proto_encode(m, wire, sizeof(wire), &len), -EOVERFLOW);
	m->type = 0x1234;
	assert_int_equal(proto_encode(m, wire, sizeof(wire), &len), -EOPNOTSUPP);
	assert_int_equal(len, 12345);
	free(m);

	m = b_resp_scan();
	memset(m->slabs[0].name, 'y', PROTO_NAME_LEN);
	assert_int_equal(proto_encode(m, wire, sizeof(wire), &len), -EILSEQ);
	free(m);
}

static void test_encode_status(void **state)
{
	struct proto_msg *out = calloc(1, sizeof(*out));
	size_t len = 0;

	assert_int_equal(proto_encode_status(PROTO_RESP_CAPTURE, 77, -ENOMEM,
					     wire, sizeof(wire), &len), 0);
	assert_int_equal(len, HDR + 8);
	assert_int_equal(proto_decode_buf(wire, len, out), 0);
	assert_int_equal(out->type, PROTO_RESP_CAPTURE);
	assert_int_equal(out->id, 77);
	assert_int_equal(out->u.status.status, -ENOMEM);
	assert_int_equal(proto_encode_status(PROTO_REQ_SCAN, 1, -EIO, wire,
					     sizeof(wire), &len), -EOPNOTSUPP);
	assert_int_equal(proto_encode_status(PROTO_RESP_SCAN, 1, 0, wire,
					     sizeof(wire), &len), -EINVAL);
	assert_int_equal(proto_encode_status(PROTO_RESP_SCAN, 0, -EIO, wire,
					     sizeof(wire), &len), -EINVAL);
	assert_int_equal(proto_encode_status(PROTO_RESP_SCAN, 1, -EIO, wire,
					     HDR + 7, &len), -ENOBUFS);
	free(out);
}

static void test_negotiate(void **state)
{
	struct proto_hello a = { .version_min = 1, .version_max = 3 };
	struct proto_hello b = { .version_min = 2, .version_max = 5 };
	struct proto_hello c = { .version_min = 4, .version_max = 4 };
	uint16_t v = 0;

	assert_int_equal(proto_hello_negotiate(&a, &b, &v), 0);
	assert_int_equal(v, 3);
	assert_int_equal(proto_hello_negotiate(&b, &c, &v), 0);
	assert_int_equal(v, 4);
	v = 99;
	assert_int_equal(proto_hello_negotiate(&a, &c, &v), -EPROTONOSUPPORT);
	assert_int_equal(v, 99);
}

static void test_type_names(void **state)
{
	assert_string_equal(proto_type_name(PROTO_RESP_SCAN), "RESP_SCAN");
	assert_string_equal(proto_type_name(PROTO_EVT_RELEASED), "EVT_RELEASED");
	assert_string_equal(proto_type_name(0x4242), "?");
}

/*
 * The codec's verdict, proto_msg_failed(), on decoded messages: a frame of
 * exactly 8 payload bytes is a failed response only if the codec says so.
 * An empty successful RESP_LIST and a successful RESP_SET_FLOOR are 8
 * bytes too, and are not failures.
 */
static void test_failed_verdict(void **state)
{
	static const struct {
		uint16_t type;
		int32_t status;
		uint32_t nranges;	/* RESP_LIST only */
		bool failed;
	} cases[] = {
		{ PROTO_RESP_LIST, 0, 0, false },	/* empty, 8 bytes */
		{ PROTO_RESP_LIST, 0, 1, false },
		{ PROTO_RESP_LIST, -ENOMEM, 0, true },	/* bare status */
		{ PROTO_RESP_SET_FLOOR, 0, 0, false },	/* 8 bytes, success */
		{ PROTO_RESP_SET_FLOOR, -EINVAL, 0, true },
		{ PROTO_RESP_SCAN, -ENODEV, 0, true },
		{ PROTO_RESP_ERROR, -EOPNOTSUPP, 0, true },
	};
	uint8_t buf[PROTO_MAX_FRAME];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct proto_msg *m = msg_new(cases[i].type, 7), *d = msg_new(0, 0);
		size_t len;

		if (cases[i].status < 0 || cases[i].type == PROTO_RESP_ERROR) {
			assert_int_equal(proto_encode_status(cases[i].type, 7,
							     cases[i].status, buf,
							     sizeof(buf), &len), 0);
		} else {
			m->u.list.nranges = cases[i].nranges;
			if (cases[i].nranges) {
				m->ranges[0].gpa = 4 * MIB;
				m->ranges[0].len = 2 * MIB;
			}
			assert_int_equal(proto_encode(m, buf, sizeof(buf), &len), 0);
		}
		assert_int_equal(proto_decode_buf(buf, len, d), 0);
		assert_int_equal(proto_msg_failed(d), cases[i].failed);
		if (cases[i].failed)
			assert_int_equal(d->u.status.status, cases[i].status);
		/* the encoder's verdict on what it was given is the same */
		if (!cases[i].failed)
			assert_false(proto_msg_failed(m));
		free(m);
		free(d);
	}
	/* requests and events are never failed responses */
	{
		struct proto_msg *m = msg_new(PROTO_REQ_LIST, 1);

		m->u.status.status = -1;
		assert_false(proto_msg_failed(m));
		free(m);
	}
}

/*
 * The block map (PROTO_FEAT_MAP): REQ_MAP and RESP_MAP round-trip, a
 * failed RESP_MAP is its bare status, and each way of lying in a RESP_MAP
 * frame is refused whole by the decoder (and by the encoder).
 */
static void test_map(void **state)
{
	static struct proto_msg m, back;
	static uint8_t buf[PROTO_MAX_FRAME], bad[PROTO_MAX_FRAME];
	size_t len, names_off, classes_off, slabs_off;
	struct {
		size_t off;
		uint8_t value;
		int err;
	} lies[] = {
		{ 0, 0x40, -EINVAL },			/* class byte with bit 6 */
		{ 0, VMDEFRAG_MAP_BYTE(5, 0), -EINVAL },	/* class past the enum */
		{ 0, VMDEFRAG_MAP_BYTE(VMDEFRAG_CLASS_FREE, 1), -EINVAL },
		{ 1, VMDEFRAG_MAP_BYTE(VMDEFRAG_CLASS_UNMOVABLE, 6), -EINVAL },
	};
	int r;

	memset(&m, 0, sizeof(m));
	m.type = PROTO_REQ_MAP;
	m.id = 3;
	m.u.map_req.first_block = 5;
	m.u.map_req.max_blocks = PROTO_MAP_MAX_BLOCKS;
	assert_int_equal(proto_encode(&m, buf, sizeof(buf), &len), 0);
	assert_int_equal(proto_decode_buf(buf, len, &back), 0);
	assert_int_equal(back.u.map_req.first_block, 5);
	m.u.map_req.max_blocks = PROTO_MAP_MAX_BLOCKS + 1;
	assert_int_equal(proto_encode(&m, buf, sizeof(buf), &len), -EINVAL);
	m.u.map_req.max_blocks = 0;
	assert_int_equal(proto_encode(&m, buf, sizeof(buf), &len), -EINVAL);

	memset(&m, 0, sizeof(m));
	m.type = PROTO_RESP_MAP;
	m.id = 3;
	m.u.map.first_block = 10;
	m.u.map.end_block = 300;
	m.u.map.nblocks = 4;
	m.u.map.nslabs = 2;
	strcpy(m.map.names[0], "dentry");
	strcpy(m.map.names[1], "kmalloc-64");
	m.map.classes[0] = VMDEFRAG_MAP_BYTE(VMDEFRAG_CLASS_FREE, 0);
	m.map.classes[1] = VMDEFRAG_MAP_BYTE(VMDEFRAG_CLASS_UNMOVABLE,
					     VMDEFRAG_CAUSE_SLAB_RECLAIM);
	m.map.classes[2] = VMDEFRAG_MAP_BYTE(VMDEFRAG_CLASS_UNMOVABLE,
					     VMDEFRAG_CAUSE_PAGETABLE);
	m.map.classes[3] = VMDEFRAG_MAP_BYTE(VMDEFRAG_CLASS_OFFLINE, 0);
	memset(m.map.slabs, PROTO_MAP_NO_SLAB, 4);
	m.map.slabs[1] = 1;
	assert_int_equal(proto_encode(&m, buf, sizeof(buf), &len), 0);
	assert_int_equal(len, PROTO_HDR_SIZE + 32 + 2 * PROTO_NAME_LEN + 8);
	memset(&back, 0xaa, sizeof(back));
	assert_int_equal(proto_decode_buf(buf, len, &back), 0);
	assert_int_equal(back.type, PROTO_RESP_MAP);
	assert_int_equal(back.u.map.end_block, 300);
	assert_int_equal(back.u.map.nblocks, 4);
	assert_string_equal(back.map.names[1], "kmalloc-64");
	assert_memory_equal(back.map.classes, m.map.classes, 4);
	assert_memory_equal(back.map.slabs, m.map.slabs, 4);

	names_off = PROTO_HDR_SIZE + 32;
	classes_off = names_off + 2 * PROTO_NAME_LEN;
	slabs_off = classes_off + 4;
	for (size_t i = 0; i < sizeof(lies) / sizeof(lies[0]); i++) {
		memcpy(bad, buf, len);
		bad[classes_off + lies[i].off] = lies[i].value;
		memset(&back, 0xaa, sizeof(back));
		r = proto_decode_buf(bad, len, &back);
		assert_int_equal(r, lies[i].err);
		assert_int_equal(back.type, 0xaaaa);	/* untouched */
	}
	/* a slab index past the names, or on a block that is not unmovable */
	memcpy(bad, buf, len);
	bad[slabs_off + 1] = 2;
	assert_int_equal(proto_decode_buf(bad, len, &back), -EINVAL);
	memcpy(bad, buf, len);
	bad[slabs_off + 0] = 0;
	assert_int_equal(proto_decode_buf(bad, len, &back), -EINVAL);
	/* a name with a control character, or without its NUL */
	memcpy(bad, buf, len);
	bad[names_off + 2] = '\n';
	assert_int_equal(proto_decode_buf(bad, len, &back), -EILSEQ);
	memcpy(bad, buf, len);
	memset(bad + names_off, 'a', PROTO_NAME_LEN);
	assert_int_equal(proto_decode_buf(bad, len, &back), -EILSEQ);
	/* a length that does not match the counts */
	assert_int_equal(proto_decode_buf(buf, len - 1, &back), -EBADMSG);
	/* more blocks than lie between first and end */
	m.u.map.end_block = 13;
	assert_int_equal(proto_encode(&m, buf, sizeof(buf), &len), -EINVAL);
	m.u.map.end_block = PROTO_MAP_MAX_END + 1;
	assert_int_equal(proto_encode(&m, buf, sizeof(buf), &len), -EINVAL);
	m.u.map.end_block = 300;
	m.u.map.nblocks = PROTO_MAP_MAX_BLOCKS + 1;
	assert_int_equal(proto_encode(&m, buf, sizeof(buf), &len), -E2BIG);
	/* the biggest one fits a frame */
	m.u.map.first_block = 0;
	m.u.map.end_block = PROTO_MAP_MAX_BLOCKS;
	m.u.map.nblocks = PROTO_MAP_MAX_BLOCKS;
	m.u.map.nslabs = 0;
	memset(m.map.classes, VMDEFRAG_MAP_BYTE(VMDEFRAG_CLASS_MOVABLE, 0),
	       PROTO_MAP_MAX_BLOCKS);
	memset(m.map.slabs, PROTO_MAP_NO_SLAB, PROTO_MAP_MAX_BLOCKS);
	assert_int_equal(proto_encode(&m, buf, sizeof(buf), &len), 0);
	assert_int_equal(proto_decode_buf(buf, len, &back), 0);
	assert_int_equal(back.u.map.nblocks, PROTO_MAP_MAX_BLOCKS);
	/* a failed RESP_MAP is its status alone */
	assert_int_equal(proto_encode_status(PROTO_RESP_MAP, 9, -EOPNOTSUPP, buf,
					     sizeof(buf), &len), 0);
	assert_int_equal(proto_decode_buf(buf, len, &back), 0);
	assert_true(proto_msg_failed(&back));
	assert_int_equal(back.u.status.status, -EOPNOTSUPP);
	assert_string_equal(proto_type_name(PROTO_RESP_MAP), "RESP_MAP");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_bad_inputs),
		cmocka_unit_test(test_decode_buf_lengths),
		cmocka_unit_test(test_stream_split_coalesced),
		cmocka_unit_test(test_stream_garbage_after_frames),
		cmocka_unit_test(test_stream_max_frame),
		cmocka_unit_test(test_encode_refuses_invalid),
		cmocka_unit_test(test_encode_status),
		cmocka_unit_test(test_negotiate),
		cmocka_unit_test(test_type_names),
		cmocka_unit_test(test_failed_verdict),
		cmocka_unit_test(test_map),
	};

	return cmocka_run_group_tests_name("proto", tests, NULL, NULL);
}
