/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vmdefrag host <-> guest wire protocol (virtio-serial port org.vmdefrag.0).
 *
 * This header is the one definition of the protocol: the host daemon
 * (vmdefragd) and the guest agent (vmdefrag-agent) both include it and both
 * link the codec in lib/proto.c.
 *
 * Framing
 * -------
 * The port is a byte stream: frames may arrive split or coalesced at any
 * byte boundary.  Every frame is a 16-byte header followed by `len` payload
 * bytes.  All integers are little-endian on the wire; the structs below are
 * the exact wire layout (no implicit padding, sizes asserted at the end of
 * this file) and, after proto_decode(), hold host-order values.
 *
 *   struct proto_hdr  { magic "VDFP", version, flags, type, id, len }
 *
 * A header with a bad magic, an unknown frame version, unknown flags, or a
 * length above PROTO_MAX_PAYLOAD cannot be resynchronised reliably, so the
 * stream decoder fails for good and the session must be dropped.
 *
 * Messages
 * --------
 * HELLO           both ways, id 0.  Carries the protocol versions the
 *                 sender speaks and, from the guest, its page size, block
 *                 size and RAM size (the host sends zeros there).  The host
 *                 sends HELLO as the first frame of every connection and
 *                 sends nothing else until a guest HELLO arrives; the guest
 *                 answers every host HELLO with its own, and also sends one
 *                 unprompted when it sees the host connect (so a host may
 *                 get two: each HELLO simply restates the guest's facts).
 *                 A host HELLO starts a new session on the guest: a guest
 *                 that lost track of the stream resynchronises on it.  This
 *                 matters because the guest cannot always see a quick host
 *                 close + reopen of the port (virtio-serial only shows the
 *                 current connection state).
 * REQ_*           host -> guest, id != 0, answered by exactly one RESP_* of
 *                 the same id (or a run of them, see PROTO_F_MORE).
 * RESP_*          guest -> host.  Every response body starts with a status:
 *                 0, or a negative errno; a failed response is exactly
 *                 struct proto_status (8 bytes).  A request the guest could
 *                 not decode is answered by RESP_ERROR with its id.
 * EVT_*           guest -> host, id 0: ranges captured (by any requester),
 *                 ranges released (with the reason), periodic statistics,
 *                 memory signals (EVT_MEMINFO, version 3).
 *
 * The capture handshake (see include/uapi/vmdefrag_genl.h, "Host
 * handshake"): every REQ_CAPTURE and REQ_LIST from the host is made on the
 * host's behalf, so the guest holds the blocks it reports PENDING (not
 * releasable under pressure) until the host sends REQ_ACK for them (it has
 * reclaimed their backing, or decided not to).  REQ_LIST is how a host that
 * restarted reconciles: every listed block becomes PENDING again.  When the
 * host disconnects, the guest acknowledges every PENDING block itself: the
 * host closes its end only after its last reclaim returned.
 * PROTO_CAPTURE_STRICT asks the guest to empty only the preferred ranges.
 *
 * Ranges are { gpa, len } in bytes, both multiples of PROTO_BLOCK_SIZE,
 * len > 0, gpa + len without overflow; within one frame ranges are in
 * strictly ascending order and do not overlap.  A list of ranges longer than
 * PROTO_MAX_RANGES is sent as a run of frames of the same type and id, each
 * but the last with PROTO_F_MORE set; the fixed fields (bytes, status,
 * reason) are repeated in each frame of the run.
 *
 * Versions (PROTO_VERSION_MIN/MAX bound what HELLO may negotiate):
 *   1  the message set above;
 *   2  adds the slab-eviction census to RESP_SCAN (PROTO_SCAN_F_CENSUS: a
 *      struct proto_scan_census after the slabs) and the eviction policy
 *      to REQ_CAPTURE (PROTO_CAPTURE_EVICT).  A guest appends the census
 *      only when the host's HELLO offered version 2, so a version-1 host
 *      never sees it; the decoder takes both forms;
 *   3  adds EVT_MEMINFO: the guest's own memory signals (free, available,
 *      watermarks, PSI, allocation rate), every few seconds and at once
 *      when one crosses a threshold, for the host's policy engine.  A
 *      guest sends it only when the host's HELLO offered version 3; a
 *      host that negotiated less drops a session that sends one.
 *
 * Features outside the versions (a HELLO feature bit says the guest has it;
 * a host sends such a request only to a guest that offered the bit):
 *   PROTO_FEAT_MAP  REQ_MAP / RESP_MAP: the guest's blocks one by one, from
 *                   a fresh scan (vmdefragctl map).  See "Block map" below.
 */
#ifndef VMDEFRAG_PROTO_H
#define VMDEFRAG_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include "uapi/vmdefrag_genl.h"

#define PROTO_PORT_NAME		"org.vmdefrag.0"

#define PROTO_MAGIC		0x50464456u	/* "VDFP" little-endian */
#define PROTO_FRAME_VERSION	1		/* header layout version */
#define PROTO_VERSION_MIN	1		/* message set versions */
#define PROTO_VERSION_MAX	3
#define PROTO_VERSION_CENSUS	2		/* first version with the census */
#define PROTO_VERSION_MEMINFO	3		/* first version with EVT_MEMINFO */

#define PROTO_BLOCK_SIZE	VMDEFRAG_BLOCK_SIZE	/* 2 MiB */

/* Limits: every one is checked by the decoder and by the encoder. */
#define PROTO_MAX_FRAME		65536u
#define PROTO_HDR_SIZE		16u
#define PROTO_MAX_PAYLOAD	(PROTO_MAX_FRAME - PROTO_HDR_SIZE)
#define PROTO_MAX_RANGES	2048u	/* per frame: one genl request's worth */
#define PROTO_MAX_SLABS		VMDEFRAG_MAX_SLAB_CACHES	/* 32 */
#define PROTO_NAME_LEN		VMDEFRAG_SLAB_NAME_LEN		/* 32, NUL-padded */
#define PROTO_HIST_MAX		16u	/* entries of each SCAN histogram */
#define PROTO_ERRNO_MAX		4095	/* statuses are 0 or -1..-4095 */

/* Header flags */
#define PROTO_F_MORE		0x01u	/* another frame of this run follows */
#define PROTO_F_ALL		PROTO_F_MORE

/* HELLO features (unknown bits are ignored, not rejected) */
#define PROTO_FEAT_EVENTS	(1ULL << 0)	/* guest sends EVT_CAPTURED/RELEASED */
#define PROTO_FEAT_STATS_EVT	(1ULL << 1)	/* guest sends EVT_STATS */
#define PROTO_FEAT_MODULE	(1ULL << 2)	/* guest module was reachable */
#define PROTO_FEAT_MAP		(1ULL << 3)	/* guest answers REQ_MAP */

#define PROTO_RESP_BIT		0x8000u
#define PROTO_RESP(t)		((uint16_t)((t) | PROTO_RESP_BIT))

enum proto_type {
	PROTO_HELLO		= 0x0001,

	PROTO_REQ_SCAN		= 0x0010,
	PROTO_REQ_CAPTURE	= 0x0011,
	PROTO_REQ_RELEASE	= 0x0012,
	PROTO_REQ_LIST		= 0x0013,
	PROTO_REQ_STATS		= 0x0014,
	PROTO_REQ_SET_FLOOR	= 0x0015,
	PROTO_REQ_ACK		= 0x0016,

	PROTO_EVT_CAPTURED	= 0x0020,
	PROTO_EVT_RELEASED	= 0x0021,
	PROTO_EVT_STATS		= 0x0022,
	PROTO_EVT_MEMINFO	= 0x0023,	/* version 3 */

	PROTO_RESP_ERROR	= PROTO_RESP_BIT,	/* undecodable request */
	PROTO_RESP_SCAN		= PROTO_RESP_BIT | PROTO_REQ_SCAN,
	PROTO_RESP_CAPTURE	= PROTO_RESP_BIT | PROTO_REQ_CAPTURE,
	PROTO_RESP_RELEASE	= PROTO_RESP_BIT | PROTO_REQ_RELEASE,
	PROTO_RESP_LIST		= PROTO_RESP_BIT | PROTO_REQ_LIST,
	PROTO_RESP_STATS	= PROTO_RESP_BIT | PROTO_REQ_STATS,
	PROTO_RESP_SET_FLOOR	= PROTO_RESP_BIT | PROTO_REQ_SET_FLOOR,
	PROTO_RESP_ACK		= PROTO_RESP_BIT | PROTO_REQ_ACK,

	/* block map (PROTO_FEAT_MAP) */
	PROTO_REQ_MAP		= 0x0017,
	PROTO_RESP_MAP		= PROTO_RESP_BIT | PROTO_REQ_MAP,
};

/* ---- wire structs (little-endian on the wire) ------------------------- */

struct proto_hdr {
	uint32_t magic;		/* PROTO_MAGIC */
	uint8_t  version;	/* PROTO_FRAME_VERSION */
	uint8_t  flags;		/* PROTO_F_* */
	uint16_t type;		/* enum proto_type */
	uint32_t id;		/* request id, 0 for HELLO and events */
	uint32_t len;		/* payload bytes, <= PROTO_MAX_PAYLOAD */
};

struct proto_range {
	uint64_t gpa;		/* guest-physical, PROTO_BLOCK_SIZE aligned */
	uint64_t len;		/* > 0, multiple of PROTO_BLOCK_SIZE */
};

struct proto_hello {
	uint16_t version_min;	/* PROTO_VERSION_MIN.. of the sender */
	uint16_t version_max;
	uint32_t reserved;	/* 0 */
	uint64_t features;	/* PROTO_FEAT_* */
	uint32_t page_size;	/* guest: power of two 4 KiB..64 KiB; host: 0 */
	uint32_t block_size;	/* guest: PROTO_BLOCK_SIZE; host: 0 */
	uint64_t ram_bytes;	/* guest: total RAM; host: 0 */
};

/* Status head of every response; a failed response is exactly this. */
struct proto_status {
	int32_t  status;	/* 0 or -errno */
	uint32_t reserved;	/* 0 */
};

struct proto_slab {
	char     name[PROTO_NAME_LEN];	/* printable, NUL-terminated, NUL-padded */
	uint64_t pages;		/* slab pages of this cache */
	uint64_t blocks;	/* blocks it makes unmovable */
};

/* RESP_SCAN: fixed part, then nslabs struct proto_slab. */
struct proto_scan_resp {
	int32_t  status;
	uint32_t reserved;
	uint64_t total_bytes;		/* managed memory scanned */
	uint64_t free_bytes;		/* free in the buddy allocator */
	uint64_t free_block_bytes;	/* free, in wholly free blocks */
	uint64_t capturable_bytes;	/* estimate above the floor */
	uint64_t captured_bytes;	/* held by the module */
	uint64_t available_bytes;	/* MemAvailable */
	uint64_t scan_ns;
	uint8_t  nclasses;	/* <= PROTO_HIST_MAX, entries past it are 0 */
	uint8_t  ncost;
	uint8_t  nunmovable;
	uint8_t  flags;		/* PROTO_SCAN_F_*, 0 in version 1 */
	uint32_t nslabs;	/* <= PROTO_MAX_SLABS */
	uint64_t classes[PROTO_HIST_MAX];	/* enum vmdefrag_block_class */
	uint64_t cost[PROTO_HIST_MAX];		/* VMDEFRAG_COST_BOUNDS buckets */
	uint32_t cost_bounds[PROTO_HIST_MAX];	/* upper bound of each bucket */
	uint64_t unmovable[PROTO_HIST_MAX];	/* enum vmdefrag_unmovable_cause */
};

/* RESP_SCAN flags */
#define PROTO_SCAN_F_CENSUS	0x01u	/* a struct proto_scan_census follows
					 * the slabs (version 2) */

/*
 * RESP_SCAN, version 2: what slab eviction sees and did.  Blocks pinned only
 * by reclaimable slab are the unmovable histogram's VMDEFRAG_CAUSE_SLAB_RECLAIM
 * entry; the costs of emptying each class are here.
 */
struct proto_scan_census {
	uint64_t movable_pages;		/* pages to migrate, MOVABLE blocks */
	uint64_t slab_reclaim_pages;	/* slab pages to free, SLAB_RECLAIM */
	uint64_t slab_reclaim_objects;	/* objects they can hold (bound) */
	uint64_t evicted_dentries;	/* since the module loaded */
	uint64_t evicted_inodes;
	uint64_t evicted_pagecache_bytes;
	uint64_t evicted_blocks;	/* emptied after an eviction */
	/* per slabs[i]: of its blocks, the SLAB_RECLAIM ones (<= blocks);
	 * 0 past nslabs */
	uint64_t slab_reclaim_blocks[PROTO_MAX_SLABS];
};

/*
 * REQ_CAPTURE flags (unknown bits are rejected with -EINVAL).  The eviction
 * policy (enum vmdefrag_evict) is the two-bit field PROTO_CAPTURE_EVICT:
 * 0 "movable" (never evict, what a guest without the field does), 1
 * "evict-slab", 2 "evict"; 3 is invalid.  A guest that predates it
 * rejects a request carrying it: the host sends it only when asked to.
 */
#define PROTO_CAPTURE_STRICT	0x1u	/* empty only the preferred ranges;
					 * needs nranges > 0 */
#define PROTO_CAPTURE_EVICT_SHIFT	8
#define PROTO_CAPTURE_EVICT	(0x3u << PROTO_CAPTURE_EVICT_SHIFT)
#define PROTO_CAPTURE_FLAGS	(PROTO_CAPTURE_STRICT | PROTO_CAPTURE_EVICT)

/*
 * Names of the eviction policies (enum vmdefrag_evict), as the daemon's
 * config, its control socket and vmdefragctl spell them.
 */
static inline const char *proto_evict_name(uint32_t evict)
{
	switch (evict) {
	case VMDEFRAG_EVICT_NONE: return "movable";
	case VMDEFRAG_EVICT_SLAB: return "evict-slab";
	case VMDEFRAG_EVICT_ALL: return "evict";
	default: return NULL;
	}
}

/* The policy named `name`, or -1. */
static inline int proto_evict_from_name(const char *name)
{
	for (uint32_t e = VMDEFRAG_EVICT_NONE; e <= VMDEFRAG_EVICT_ALL; e++)
		if (strcmp(name, proto_evict_name(e)) == 0)
			return (int)e;
	return -1;
}

/* The eviction policy (enum vmdefrag_evict) of REQ_CAPTURE flags. */
static inline uint32_t proto_capture_evict(uint32_t flags)
{
	return (flags & PROTO_CAPTURE_EVICT) >> PROTO_CAPTURE_EVICT_SHIFT;
}

/* REQ_CAPTURE: fixed part, then nranges preferred ranges. */
struct proto_capture_req {
	uint64_t bytes;		/* > 0: how much to empty */
	uint32_t mode;		/* enum vmdefrag_mode */
	uint32_t budget_ms;	/* 0: module default */
	uint64_t floor_bytes;	/* 0: module floor */
	uint32_t nranges;	/* <= PROTO_MAX_RANGES */
	uint32_t flags;		/* PROTO_CAPTURE_* */
};

/* RESP_CAPTURE / RESP_RELEASE: fixed part, then nranges ranges. */
struct proto_ranges_resp {
	int32_t  status;
	int32_t  stop_errno;	/* CAPTURE: why it stopped short (0, -errno);
				 * RELEASE: 0 */
	uint64_t bytes;		/* bytes captured / released (whole run) */
	uint32_t nranges;
	uint32_t reserved;	/* 0 */
};

/* REQ_RELEASE: exactly one of bytes > 0 or nranges > 0. */
struct proto_release_req {
	uint64_t bytes;
	uint32_t nranges;
	uint32_t reserved;	/* 0 */
};

/* RESP_LIST: fixed part, then nranges ranges, runs with PROTO_F_MORE. */
struct proto_list_resp {
	int32_t  status;
	uint32_t nranges;
};

/* Module counters (EVT_STATS body; RESP_STATS is status + this). */
struct proto_stats {
	uint64_t blocks_scanned;
	uint64_t blocks_vacated;
	uint64_t blocks_failed_busy;
	uint64_t blocks_failed_nomem;
	uint64_t blocks_failed_other;
	uint64_t pages_migrated;
	uint64_t vacate_ns;
	uint64_t blocks_released;
	uint64_t pressure_releases;
	uint64_t oom_releases;
	uint64_t blocks_compacted;
	uint64_t captured_bytes;
	uint64_t floor_bytes;
};

struct proto_stats_resp {
	int32_t  status;
	uint32_t reserved;
	struct proto_stats stats;
};

struct proto_set_floor_req {
	uint64_t floor_bytes;
};

/* REQ_ACK flags (unknown bits are rejected with -EINVAL) */
#define PROTO_ACK_ALL		0x1u	/* every PENDING block; nranges 0 */
#define PROTO_ACK_FLAGS		PROTO_ACK_ALL

/*
 * REQ_ACK: the host is done with these PENDING blocks (PENDING -> HOST):
 * fixed part, then nranges ranges; exactly one of PROTO_ACK_ALL or
 * nranges > 0.  Ranges not PENDING in the guest are skipped.
 */
struct proto_ack_req {
	uint64_t bytes_unused;	/* 0 */
	uint32_t flags;		/* PROTO_ACK_* */
	uint32_t nranges;	/* <= PROTO_MAX_RANGES */
};

/* RESP_ACK */
struct proto_ack_resp {
	int32_t  status;
	uint32_t reserved;	/* 0 */
	uint64_t bytes;		/* bytes acknowledged (moved to HOST) */
};

/* EVT_CAPTURED (reason 0) / EVT_RELEASED: fixed part, then ranges. */
struct proto_evt_ranges {
	uint32_t reason;	/* EVT_RELEASED: enum vmdefrag_release_reason;
				 * EVT_CAPTURED: 0 */
	uint32_t nranges;
};

/*
 * EVT_MEMINFO (version 3): the guest's memory signals, read from
 * /proc/meminfo, /proc/zoneinfo, /proc/pressure/memory and /proc/vmstat.
 * Every byte count is at most total_bytes, except the allocation rate;
 * low <= high watermark; PSI averages are hundredths of a percent
 * (0..10000) and full <= some (average and total: the agent clamps what
 * it read so), valid only with PROTO_MEMINFO_F_PSI (else
 * all four PSI fields are 0); captured/floor/vacate_ns valid only with
 * PROTO_MEMINFO_F_MODULE (else 0).  PROTO_MEMINFO_F_URGENT: sent at once
 * because a signal crossed a threshold, not on the period.
 */
#define PROTO_MEMINFO_F_PSI	0x1u	/* psi_* are valid */
#define PROTO_MEMINFO_F_MODULE	0x2u	/* captured/floor are valid */
#define PROTO_MEMINFO_F_URGENT	0x4u	/* a threshold was crossed */
#define PROTO_MEMINFO_FLAGS	(PROTO_MEMINFO_F_PSI | PROTO_MEMINFO_F_MODULE | \
				 PROTO_MEMINFO_F_URGENT)
#define PROTO_MEMINFO_RAM_MAX	(1ULL << 50)	/* 1 PiB: bound of total_bytes */
#define PROTO_MEMINFO_RATE_MAX	(1ULL << 40)	/* 1 TiB/s: bound of alloc rate */
#define PROTO_MEMINFO_PSI_MAX	10000u		/* 100.00 % */
#define PROTO_MEMINFO_INTERVAL_MAX 3600000u	/* ms */

struct proto_meminfo {
	uint64_t total_bytes;		/* MemTotal, > 0 */
	uint64_t free_bytes;		/* MemFree */
	uint64_t available_bytes;	/* MemAvailable */
	uint64_t wmark_low_bytes;	/* sum of every zone's low watermark */
	uint64_t wmark_high_bytes;	/* ... and high watermark */
	uint64_t alloc_bytes_per_sec;	/* pgalloc_* deltas, per second */
	uint64_t captured_bytes;	/* held by the module (F_MODULE) */
	uint64_t floor_bytes;		/* the module's floor (F_MODULE) */
	uint64_t vacate_ns;		/* guest CPU the module spent vacating
					 * since it loaded (F_MODULE) */
	uint64_t psi_some_total_us;	/* /proc/pressure/memory totals */
	uint64_t psi_full_total_us;
	uint32_t psi_some_avg10;	/* hundredths of a percent */
	uint32_t psi_full_avg10;
	uint32_t flags;			/* PROTO_MEMINFO_F_* */
	uint32_t interval_ms;		/* the agent's period, 1..3600000 */
};

/*
 * Block map (PROTO_FEAT_MAP)
 * --------------------------
 * REQ_MAP asks for max_blocks blocks from block index first_block (gpa /
 * PROTO_BLOCK_SIZE); the guest scans afresh and answers RESP_MAP: the
 * same first_block, end_block (the index past its RAM span: the host asks
 * again from first_block + nblocks while that is below it), nblocks <=
 * max_blocks, then nslabs slab cache names (PROTO_NAME_LEN each, the
 * proto_slab name rules), nblocks class bytes (VMDEFRAG_MAP_BYTE(class,
 * cause): cause only for UNMOVABLE, else 0) and nblocks slab bytes (an
 * index below nslabs, for UNMOVABLE blocks only, or PROTO_MAP_NO_SLAB).
 */
#define PROTO_MAP_MAX_BLOCKS	VMDEFRAG_MAP_MAX_BLOCKS	/* 16384 per frame */
#define PROTO_MAP_MAX_SLABS	VMDEFRAG_MAP_MAX_SLABS	/* 64 */
#define PROTO_MAP_NO_SLAB	VMDEFRAG_MAP_NO_SLAB
#define PROTO_MAP_MAX_END	(1ULL << 23)	/* 16 TiB of guest-physical space */

struct proto_map_req {
	uint64_t first_block;	/* < PROTO_MAP_MAX_END */
	uint32_t max_blocks;	/* 1..PROTO_MAP_MAX_BLOCKS */
	uint32_t reserved;	/* 0 */
};

/* RESP_MAP: fixed part, then names, classes, slabs (see above). */
struct proto_map_resp {
	int32_t  status;
	uint32_t reserved;	/* 0 */
	uint64_t first_block;
	uint64_t end_block;	/* first_block + nblocks <= end_block <= MAX_END */
	uint32_t nblocks;	/* <= PROTO_MAP_MAX_BLOCKS */
	uint32_t nslabs;	/* <= PROTO_MAP_MAX_SLABS */
};

/* The variable part of a decoded RESP_MAP. */
struct proto_map_data {
	char names[PROTO_MAP_MAX_SLABS][PROTO_NAME_LEN];
	uint8_t classes[PROTO_MAP_MAX_BLOCKS];
	uint8_t slabs[PROTO_MAP_MAX_BLOCKS];
};

/* ---- decoded messages -------------------------------------------------- */

/*
 * One decoded (or to-be-encoded) message, all values in host order.  The
 * variable parts live in ranges[] / slabs[]; their counts are the nranges /
 * nslabs fields of the body.  About 66 KiB: allocate it, one per session.
 */
struct proto_msg {
	uint16_t type;		/* enum proto_type */
	uint8_t  flags;		/* PROTO_F_* */
	uint32_t id;
	union {
		struct proto_hello hello;
		struct proto_status status;		/* any failed RESP_*,
							 * RESP_ERROR,
							 * RESP_SET_FLOOR */
		struct proto_scan_resp scan;		/* RESP_SCAN */
		struct proto_capture_req capture;	/* REQ_CAPTURE */
		struct proto_release_req release;	/* REQ_RELEASE */
		struct proto_ranges_resp ranges_resp;	/* RESP_CAPTURE/RELEASE */
		struct proto_list_resp list;		/* RESP_LIST */
		struct proto_stats_resp stats_resp;	/* RESP_STATS */
		struct proto_stats stats;		/* EVT_STATS */
		struct proto_set_floor_req set_floor;	/* REQ_SET_FLOOR */
		struct proto_evt_ranges evt;		/* EVT_CAPTURED/RELEASED */
		struct proto_ack_req ack;		/* REQ_ACK */
		struct proto_ack_resp ack_resp;		/* RESP_ACK */
		struct proto_meminfo meminfo;		/* EVT_MEMINFO */
		struct proto_map_req map_req;		/* REQ_MAP */
		struct proto_map_resp map;		/* RESP_MAP */
	} u;
	struct proto_range ranges[PROTO_MAX_RANGES];
	struct proto_slab slabs[PROTO_MAX_SLABS];
	struct proto_scan_census census;	/* RESP_SCAN with F_CENSUS */
	struct proto_map_data map;		/* RESP_MAP */
};

/* A whole frame handed out by the stream decoder (payload is borrowed). */
struct proto_frame {
	uint16_t type;
	uint8_t  flags;
	uint32_t id;
	uint32_t len;
	const uint8_t *payload;	/* valid until the next decoder call */
};

/*
 * Incremental stream decoder.  States: collecting a header, collecting a
 * payload, failed (sticky negative errno).  Bounded: it never holds more
 * than one maximum frame.
 */
struct proto_decoder {
	int error;		/* 0, or the errno that killed the stream */
	size_t have;		/* bytes held in buf */
	size_t consumed;	/* bytes of buf handed out, dropped next call */
	uint8_t buf[PROTO_MAX_FRAME];
};

void proto_decoder_init(struct proto_decoder *d);

/*
 * Copy up to len bytes into the decoder; returns the number taken (0 when
 * a whole frame is waiting to be taken by proto_decoder_next(), or the
 * stream has failed).
 */
size_t proto_decoder_feed(struct proto_decoder *d, const void *data, size_t len);

/*
 * 1 and *ret_frame when a whole frame with a valid header is ready; 0 when
 * more bytes are needed; a negative errno, for good, when the stream is
 * corrupt: -EPROTO bad magic, -EPROTONOSUPPORT unknown frame version,
 * -EMSGSIZE length above PROTO_MAX_PAYLOAD, -EBADMSG unknown flags.
 */
int proto_decoder_next(struct proto_decoder *d, struct proto_frame *ret_frame);

/*
 * Validate a frame's payload against its type and decode it into *ret_msg
 * (untouched unless the whole frame is valid).  Errors:
 *   -EOPNOTSUPP  unknown type
 *   -EBADMSG     payload length does not match the type / counts, nonzero
 *                reserved field, id or flags not allowed for the type
 *   -E2BIG       a count above its limit
 *   -EINVAL      a field out of range (enum, status, version, sizes,
 *                misaligned or empty range, ranges out of order)
 *   -EOVERFLOW   gpa + len of a range overflows
 *   -EILSEQ      a name without NUL, with garbage after the NUL, or with
 *                non-printable characters
 */
int proto_decode(const struct proto_frame *f, struct proto_msg *ret_msg);

/*
 * The codec's verdict on a message: true for a failed response, whose body
 * is only its status (u.status: a negative errno, or any status of a
 * RESP_ERROR), false for anything else -- a successful response, even an
 * empty RESP_LIST or a RESP_SET_FLOOR whose 8 bytes are a status of 0, a
 * request, an event.  The decoder and the encoder use this same rule, so a
 * user of a decoded message asks here and never recomputes it.
 */
bool proto_msg_failed(const struct proto_msg *m);

/* proto_decode() of a raw frame (header + payload) known to be whole. */
int proto_decode_buf(const void *buf, size_t len, struct proto_msg *ret_msg);

/*
 * Encode *msg (validated with the same rules as the decoder) as one frame
 * into buf; *ret_len gets the frame length.  -ENOBUFS if size is too small.
 */
int proto_encode(const struct proto_msg *msg, void *buf, size_t size,
		 size_t *ret_len);

/* Encode a failed response: type PROTO_RESP(req_type) or RESP_ERROR. */
int proto_encode_status(uint16_t type, uint32_t id, int32_t status,
			void *buf, size_t size, size_t *ret_len);

/* Highest version both HELLOs speak; -EPROTONOSUPPORT if none. */
int proto_hello_negotiate(const struct proto_hello *local,
			  const struct proto_hello *remote,
			  uint16_t *ret_version);

/* Validate one range / a list (the decoder's rules); 0 or negative errno. */
int proto_range_check(const struct proto_range *r);
int proto_ranges_check(const struct proto_range *r, uint32_t n);

/* Static name of a type for logs ("REQ_SCAN"), "?" if unknown. */
const char *proto_type_name(uint16_t type);

/* ---- layout checks ---------------------------------------------------- */

_Static_assert(sizeof(struct proto_hdr) == PROTO_HDR_SIZE, "proto_hdr");
_Static_assert(sizeof(struct proto_range) == 16, "proto_range");
_Static_assert(sizeof(struct proto_hello) == 32, "proto_hello");
_Static_assert(sizeof(struct proto_status) == 8, "proto_status");
_Static_assert(sizeof(struct proto_slab) == 48, "proto_slab");
_Static_assert(sizeof(struct proto_scan_resp) == 72 + 3 * 8 * PROTO_HIST_MAX +
	       4 * PROTO_HIST_MAX, "proto_scan_resp");
_Static_assert(sizeof(struct proto_scan_census) == 7 * 8 + 8 * PROTO_MAX_SLABS,
	       "proto_scan_census");
_Static_assert(sizeof(struct proto_capture_req) == 32, "proto_capture_req");
_Static_assert(sizeof(struct proto_ranges_resp) == 24, "proto_ranges_resp");
_Static_assert(sizeof(struct proto_release_req) == 16, "proto_release_req");
_Static_assert(sizeof(struct proto_list_resp) == 8, "proto_list_resp");
_Static_assert(sizeof(struct proto_stats) == 13 * 8, "proto_stats");
_Static_assert(sizeof(struct proto_stats_resp) == 8 + 13 * 8, "proto_stats_resp");
_Static_assert(sizeof(struct proto_set_floor_req) == 8, "proto_set_floor_req");
_Static_assert(sizeof(struct proto_evt_ranges) == 8, "proto_evt_ranges");
_Static_assert(sizeof(struct proto_ack_req) == 16, "proto_ack_req");
_Static_assert(sizeof(struct proto_ack_resp) == 16, "proto_ack_resp");
_Static_assert(sizeof(struct proto_meminfo) == 11 * 8 + 4 * 4, "proto_meminfo");
_Static_assert(sizeof(struct proto_map_req) == 16, "proto_map_req");
_Static_assert(sizeof(struct proto_map_resp) == 32, "proto_map_resp");
_Static_assert(sizeof(struct proto_map_resp) + PROTO_MAP_MAX_SLABS * PROTO_NAME_LEN +
	       2 * PROTO_MAP_MAX_BLOCKS <= PROTO_MAX_PAYLOAD,
	       "PROTO_MAP_MAX_BLOCKS must fit one frame");
_Static_assert(sizeof(struct proto_capture_req) +
	       PROTO_MAX_RANGES * sizeof(struct proto_range) <= PROTO_MAX_PAYLOAD,
	       "PROTO_MAX_RANGES must fit one frame");
_Static_assert(sizeof(struct proto_scan_resp) +
	       PROTO_MAX_SLABS * sizeof(struct proto_slab) +
	       sizeof(struct proto_scan_census) <= PROTO_MAX_PAYLOAD,
	       "PROTO_MAX_SLABS must fit one frame");
_Static_assert(PROTO_MAX_RANGES <= VMDEFRAG_MAX_REQ_RANGES,
	       "a frame's ranges must fit one genl request");
_Static_assert(4 + VMDEFRAG_MAX_REQ_RANGES * VMDEFRAG_RANGE_NLA_BYTES <= 0xffff,
	       "a request's ranges must fit one netlink attribute");
_Static_assert(__VMDEFRAG_CLASS_MAX <= PROTO_HIST_MAX &&
	       __VMDEFRAG_CAUSE_MAX <= PROTO_HIST_MAX &&
	       VMDEFRAG_COST_BUCKETS <= PROTO_HIST_MAX, "PROTO_HIST_MAX");

#endif /* VMDEFRAG_PROTO_H */
