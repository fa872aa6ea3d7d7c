/* SPDX-License-Identifier: GPL-2.0 */
/*
 * gen_corpus.c - writes the seed corpus of fuzz_proto into a directory.
 *
 * One valid frame of every message type (with a few ranges / slab caches so
 * the fuzzer starts from the array paths), each prefixed with the chunking
 * byte fuzz_proto reads first, plus one file holding every frame back to
 * back.  Generated at build time so no binary blobs live in git.
 *
 * Usage: gen_corpus DIR
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmdefrag/proto.h"

#define MIB (1ULL << 20)

static struct proto_msg msg;
static uint8_t all[16 * PROTO_MAX_FRAME];
static size_t all_len = 1;

static void gen_ranges(uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		msg.ranges[i].gpa = (i * 4 + 1) * 2 * MIB;
		msg.ranges[i].len = 2 * MIB * (1 + i % 2);
	}
}

static int gen_write(const char *dir, const char *name, const uint8_t *buf,
		     size_t len)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f)
		return -errno;
	if (fwrite(buf, 1, len, f) != len) {
		fclose(f);
		return -EIO;
	}
	return fclose(f) ? -errno : 0;
}

/* Encode msg as seed `name` and append it to the coalesced stream. */
static int gen_emit(const char *dir, const char *name, uint8_t chunk)
{
	static uint8_t buf[PROTO_MAX_FRAME + 1];
	size_t len;
	int r;

	r = proto_encode(&msg, buf + 1, sizeof(buf) - 1, &len);
	if (r < 0) {
		fprintf(stderr, "gen_corpus: %s: encode: %s\n", name, strerror(-r));
		return r;
	}
	buf[0] = chunk;
	memcpy(all + all_len, buf + 1, len);
	all_len += len;
	r = gen_write(dir, name, buf, len + 1);
	if (r < 0)
		fprintf(stderr, "gen_corpus: %s: %s\n", name, strerror(-r));
	memset(&msg, 0, sizeof(msg));
	return r;
}

int main(int argc, char **argv)
{
	static const uint32_t bounds[] = VMDEFRAG_COST_BOUNDS;
	const char *dir;
	int r = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: gen_corpus DIR\n");
		return 2;
	}
	dir = argv[1];

	msg.type = PROTO_HELLO;
	msg.u.hello = (struct proto_hello){ 1, 1, 0, PROTO_FEAT_EVENTS, 4096,
					    PROTO_BLOCK_SIZE, 1024 * MIB };
	r |= gen_emit(dir, "hello", 0);

	msg.type = PROTO_REQ_SCAN;
	msg.id = 1;
	r |= gen_emit(dir, "req_scan", 1);

	msg.type = PROTO_REQ_CAPTURE;
	msg.id = 2;
	msg.u.capture.bytes = 8 * MIB;
	msg.u.capture.mode = VMDEFRAG_MODE_CAPTURE;
	msg.u.capture.nranges = 3;
	gen_ranges(3);
	r |= gen_emit(dir, "req_capture", 3);

	msg.type = PROTO_REQ_CAPTURE;
	msg.id = 14;
	msg.u.capture.bytes = 4 * MIB;
	msg.u.capture.flags = PROTO_CAPTURE_STRICT;
	msg.u.capture.nranges = 2;
	gen_ranges(2);
	r |= gen_emit(dir, "req_capture_strict", 2);

	msg.type = PROTO_REQ_ACK;
	msg.id = 15;
	msg.u.ack.nranges = 3;
	gen_ranges(3);
	r |= gen_emit(dir, "req_ack", 4);

	msg.type = PROTO_REQ_ACK;
	msg.id = 16;
	msg.u.ack.flags = PROTO_ACK_ALL;
	r |= gen_emit(dir, "req_ack_all", 0);

	msg.type = PROTO_RESP_ACK;
	msg.id = 17;
	msg.u.ack_resp.bytes = 6 * MIB;
	r |= gen_emit(dir, "resp_ack", 0);

	msg.type = PROTO_RESP_ACK;
	msg.id = 18;
	msg.u.status.status = -ENODEV;
	r |= gen_emit(dir, "resp_ack_failed", 0);

	msg.type = PROTO_REQ_RELEASE;
	msg.id = 3;
	msg.u.release.nranges = 2;
	gen_ranges(2);
	r |= gen_emit(dir, "req_release", 0);

	msg.type = PROTO_REQ_LIST;
	msg.id = 4;
	r |= gen_emit(dir, "req_list", 0);

	msg.type = PROTO_REQ_STATS;
	msg.id = 5;
	r |= gen_emit(dir, "req_stats", 0);

	msg.type = PROTO_REQ_SET_FLOOR;
	msg.id = 6;
	msg.u.set_floor.floor_bytes = 64 * MIB;
	r |= gen_emit(dir, "req_set_floor", 0);

	msg.type = PROTO_EVT_CAPTURED;
	msg.flags = PROTO_F_MORE;
	msg.u.evt.nranges = 2;
	gen_ranges(2);
	r |= gen_emit(dir, "evt_captured", 5);

	msg.type = PROTO_EVT_RELEASED;
	msg.u.evt.reason = VMDEFRAG_RELEASE_OOM;
	msg.u.evt.nranges = 1;
	gen_ranges(1);
	r |= gen_emit(dir, "evt_released", 0);

	msg.type = PROTO_EVT_STATS;
	msg.u.stats.captured_bytes = 4 * MIB;
	r |= gen_emit(dir, "evt_stats", 0);

	msg.type = PROTO_EVT_MEMINFO;
	msg.u.meminfo = (struct proto_meminfo){
		.total_bytes = 1024 * MIB, .free_bytes = 600 * MIB,
		.available_bytes = 800 * MIB, .wmark_low_bytes = 4 * MIB,
		.wmark_high_bytes = 5 * MIB, .alloc_bytes_per_sec = MIB,
		.captured_bytes = 64 * MIB, .floor_bytes = 128 * MIB,
		.vacate_ns = 250000000,
		.psi_some_total_us = 1000, .psi_full_total_us = 10,
		.psi_some_avg10 = 150, .psi_full_avg10 = 20,
		.flags = PROTO_MEMINFO_F_PSI | PROTO_MEMINFO_F_MODULE,
		.interval_ms = 2000,
	};
	r |= gen_emit(dir, "evt_meminfo", 0);

	msg.type = PROTO_RESP_ERROR;
	msg.id = 7;
	msg.u.status.status = -EOPNOTSUPP;
	r |= gen_emit(dir, "resp_error", 0);

	msg.type = PROTO_RESP_SCAN;
	msg.id = 8;
	msg.u.scan.total_bytes = 1024 * MIB;
	msg.u.scan.nclasses = __VMDEFRAG_CLASS_MAX;
	msg.u.scan.classes[1] = 3;
	msg.u.scan.ncost = VMDEFRAG_COST_BUCKETS;
	for (unsigned int i = 0; i < VMDEFRAG_COST_BUCKETS; i++)
		msg.u.scan.cost_bounds[i] = bounds[i];
	msg.u.scan.nunmovable = __VMDEFRAG_CAUSE_MAX;
	msg.u.scan.nslabs = 2;
	strcpy(msg.slabs[0].name, "dentry");
	strcpy(msg.slabs[1].name, "kmalloc-1k");
	r |= gen_emit(dir, "resp_scan", 2);

	/* version 2: the slab-eviction census after the slabs */
	msg.type = PROTO_RESP_SCAN;
	msg.id = 8;
	msg.u.scan.flags = PROTO_SCAN_F_CENSUS;
	msg.u.scan.nclasses = __VMDEFRAG_CLASS_MAX;
	msg.u.scan.ncost = VMDEFRAG_COST_BUCKETS;
	for (unsigned int i = 0; i < VMDEFRAG_COST_BUCKETS; i++)
		msg.u.scan.cost_bounds[i] = bounds[i];
	msg.u.scan.nunmovable = __VMDEFRAG_CAUSE_MAX;
	msg.u.scan.unmovable[VMDEFRAG_CAUSE_SLAB_RECLAIM] = 2;
	msg.u.scan.nslabs = 1;
	strcpy(msg.slabs[0].name, "dentry");
	msg.slabs[0].blocks = 2;
	msg.census.slab_reclaim_pages = 40;
	msg.census.slab_reclaim_objects = 400;
	msg.census.slab_reclaim_blocks[0] = 2;
	r |= gen_emit(dir, "resp_scan_census", 2);

	msg.type = PROTO_RESP_CAPTURE;
	msg.id = 9;
	msg.u.ranges_resp.stop_errno = -EBUSY;
	msg.u.ranges_resp.bytes = 6 * MIB;
	msg.u.ranges_resp.nranges = 2;
	gen_ranges(2);
	r |= gen_emit(dir, "resp_capture", 0);

	msg.type = PROTO_RESP_RELEASE;
	msg.id = 10;
	msg.u.status.status = -ENODEV;
	r |= gen_emit(dir, "resp_release_failed", 0);

	msg.type = PROTO_RESP_LIST;
	msg.id = 11;
	msg.flags = PROTO_F_MORE;
	msg.u.list.nranges = 4;
	gen_ranges(4);
	r |= gen_emit(dir, "resp_list", 0);

	msg.type = PROTO_RESP_STATS;
	msg.id = 12;
	msg.u.stats_resp.stats.blocks_scanned = 512;
	r |= gen_emit(dir, "resp_stats", 0);

	msg.type = PROTO_RESP_SET_FLOOR;
	msg.id = 13;
	r |= gen_emit(dir, "resp_set_floor", 0);

	all[0] = 7;
	r |= gen_write(dir, "stream_all", all, all_len);
	return r ? 1 : 0;
}
