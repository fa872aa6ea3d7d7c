/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * vmdefrag generic netlink interface: vmdefrag.ko <-> vmdefrag-agent.
 *
 * This header is the one definition of the family shared by the guest
 * kernel module and guest userspace (the agent and test clients).  It is
 * included by the module as-is and by userspace through -Iinclude.
 *
 * Model
 * -----
 * Guest-physical memory is handled in blocks of VMDEFRAG_BLOCK_SIZE (2 MiB,
 * one x86-64 pageblock).  A block is in one of three states from the
 * module's point of view:
 *
 *   guest-owned  --CAPTURE(capture mode)-->  captured  --RELEASE-->  guest-owned
 *   guest-owned  --CAPTURE(compact mode)-->  guest-owned, but freed to the
 *                                            buddy allocator as one order-9 block
 *
 * A captured block belongs to the module: the guest allocator will not hand
 * out any page of it until it is released (by request, by the shrinker under
 * guest pressure, by the OOM notifier, or at module unload).  The host may
 * reclaim the backing of a captured block at any time and must back it again
 * before or when the guest touches it after release.
 *
 * Ranges
 * ------
 * Ranges travel as VMDEFRAG_A_RANGES: a nest of VMDEFRAG_A_RANGE entries, each
 * a nest of { VMDEFRAG_A_RANGE_ADDR, VMDEFRAG_A_RANGE_LEN }, guest-physical
 * byte addresses, both multiples of VMDEFRAG_BLOCK_SIZE.  Replies coalesce
 * adjacent blocks into one range.  LIST is a dump (NLM_F_DUMP) because a
 * large guest can hold more ranges than fit one message.
 *
 * Commands (all require CAP_SYS_ADMIN)
 * ------------------------------------
 * SCAN     request:  -
 *          reply:    totals (VMDEFRAG_A_TOTAL_* and friends), a histogram
 *                    of block classes (VMDEFRAG_A_CLASSES), a histogram of
 *                    vacate cost (VMDEFRAG_A_COST_HIST), unmovable blocks by
 *                    cause (VMDEFRAG_A_UNMOVABLE) and slab pages in unmovable
 *                    blocks by cache (VMDEFRAG_A_SLAB_CACHES); the census of
 *                    slab eviction: blocks pinned only by reclaimable slab
 *                    are cause SLAB_RECLAIM, with what freeing them costs
 *                    (VMDEFRAG_A_SLAB_RECLAIM_*) and what eviction dropped
 *                    so far (VMDEFRAG_A_EVICTED_*).
 * CAPTURE  request:  VMDEFRAG_A_BYTES (how much to empty), VMDEFRAG_A_MODE,
 *                    optional VMDEFRAG_A_RANGES (preferred ranges, emptied
 *                    before any other block: the host passes the ranges its
 *                    backing actually holds), optional VMDEFRAG_A_BUDGET_MS,
 *                    optional VMDEFRAG_A_FLOOR_BYTES (overrides the module
 *                    parameter for this request only if larger),
 *                    optional VMDEFRAG_A_EVICT (enum vmdefrag_evict).
 *          reply:    VMDEFRAG_A_BYTES (bytes emptied), VMDEFRAG_A_RANGES
 *                    (the ranges captured by this request; compact mode:
 *                    the ranges emptied and freed as order-9 blocks),
 *                    VMDEFRAG_A_ERRNO (why it stopped short, 0 if it did not).
 * RELEASE  request:  VMDEFRAG_A_RANGES, or VMDEFRAG_A_BYTES, not both.
 *          reply:    VMDEFRAG_A_BYTES (bytes released), VMDEFRAG_A_RANGES.
 *                    Ranges not captured are skipped, not an error.
 * LIST     dump:     one or more messages with VMDEFRAG_A_RANGES, covering
 *                    every captured block in ascending address order.
 * STATS    request:  -
 *          reply:    VMDEFRAG_A_STAT_* counters (monotonic since load) and
 *                    VMDEFRAG_A_CAPTURED_BYTES, VMDEFRAG_A_FLOOR_BYTES.
 * SET      request:  VMDEFRAG_A_FLOOR_BYTES (module-wide floor).
 * ACK      request:  VMDEFRAG_A_RANGES, or the flag VMDEFRAG_A_ALL, not both.
 *          reply:    VMDEFRAG_A_BYTES (bytes moved from PENDING to HOST).
 *                    Ranges not PENDING are skipped, not an error.
 *
 * Flags: CAPTURE and LIST take VMDEFRAG_A_HOST (the request is made on
 * behalf of the host: see "Host handshake"); CAPTURE takes VMDEFRAG_A_STRICT
 * (empty only the preferred VMDEFRAG_A_RANGES, never any other block: the
 * host asks for blocks its backing holds, and capturing an unbacked block
 * would return nothing to it).  SCAN and STATS replies carry
 * VMDEFRAG_A_PENDING_BYTES (bytes held in the PENDING state).
 *
 * Host handshake
 * --------------
 * A captured block is in one of three sub-states:
 *
 *   LOCAL    captured by a local requester (no VMDEFRAG_A_HOST): no host
 *            will punch it; releasable at any time.
 *   PENDING  captured or listed with VMDEFRAG_A_HOST and reported to the
 *            host, which may be reclaiming its backing right now: NOT
 *            releasable by the shrinker or the OOM notifier, only by an
 *            explicit RELEASE.
 *   HOST     acknowledged by the host (ACK): releasable under pressure;
 *            after release the host backs the range again on fault.
 *
 *   CAPTURE + HOST        new blocks -> PENDING (without HOST: LOCAL)
 *   LIST + HOST           every listed block -> PENDING (a restarted
 *                         host reconciles and may reclaim what it lists)
 *   ACK ranges            PENDING -> HOST
 *   ACK + ALL             every PENDING block -> HOST (the host link is
 *                         down: no reclaim can be in flight)
 *   requester's socket    its PENDING blocks -> HOST
 *   closes
 *   RELEASE, shrinker,    block removed (shrinker and OOM skip PENDING);
 *   OOM, unload           unload releases every block, so the agent must
 *                         be stopped before the module is unloaded.
 *
 * MAP      request:  VMDEFRAG_A_MAP_FIRST (first block index: gpa / block
 *                    size), VMDEFRAG_A_MAP_MAX (most blocks, 1..
 *                    VMDEFRAG_MAP_MAX_BLOCKS).
 *          reply:    a fresh scan, block by block: VMDEFRAG_A_MAP_FIRST,
 *                    VMDEFRAG_A_MAP_END (the block index past the guest's
 *                    RAM span), VMDEFRAG_A_MAP_CLASSES (binary, one byte
 *                    per block from FIRST: VMDEFRAG_MAP_BYTE(class, cause);
 *                    blocks outside every zone are OFFLINE),
 *                    VMDEFRAG_A_MAP_SLABS (binary, one byte per block: the
 *                    index in VMDEFRAG_A_SLAB_CACHES of a slab cache found
 *                    in an UNMOVABLE block, VMDEFRAG_MAP_NO_SLAB if none)
 *                    and VMDEFRAG_A_SLAB_CACHES (names only, in index
 *                    order, at most VMDEFRAG_MAP_MAX_SLABS).
 *
 * Events (multicast group VMDEFRAG_MCGRP_EVENTS)
 * -----------------------------------------------
 * EVENT_CAPTURED  VMDEFRAG_A_RANGES captured (by any requester).
 * EVENT_RELEASED  VMDEFRAG_A_RANGES released, VMDEFRAG_A_REASON says why.
 */
#ifndef _UAPI_VMDEFRAG_GENL_H
#define _UAPI_VMDEFRAG_GENL_H

#define VMDEFRAG_GENL_NAME	"vmdefrag"
#define VMDEFRAG_GENL_VERSION	1
#define VMDEFRAG_MCGRP_EVENTS	"events"

#define VMDEFRAG_BLOCK_SHIFT	21
#define VMDEFRAG_BLOCK_SIZE	(1ULL << VMDEFRAG_BLOCK_SHIFT)

/*
 * Most ranges a request may carry in VMDEFRAG_A_RANGES.  A netlink
 * attribute's length is 16 bits, and one range takes
 * VMDEFRAG_RANGE_NLA_BYTES in the nest (its own nest header plus two u64
 * attributes), so 2048 ranges (57 KiB) fit with room to spare.
 */
#define VMDEFRAG_MAX_REQ_RANGES	2048
#define VMDEFRAG_RANGE_NLA_BYTES	(4 + 2 * (4 + 8))
/* Most slab caches reported by SCAN (the largest by pages). */
#define VMDEFRAG_MAX_SLAB_CACHES	32
/* Longest slab cache name reported, including the NUL. */
#define VMDEFRAG_SLAB_NAME_LEN	32

enum vmdefrag_cmd {
	VMDEFRAG_CMD_UNSPEC,
	VMDEFRAG_CMD_SCAN,
	VMDEFRAG_CMD_CAPTURE,
	VMDEFRAG_CMD_RELEASE,
	VMDEFRAG_CMD_LIST,
	VMDEFRAG_CMD_STATS,
	VMDEFRAG_CMD_SET,
	VMDEFRAG_CMD_EVENT_CAPTURED,
	VMDEFRAG_CMD_EVENT_RELEASED,
	VMDEFRAG_CMD_ACK,
	VMDEFRAG_CMD_MAP,

	__VMDEFRAG_CMD_MAX,
	VMDEFRAG_CMD_MAX = __VMDEFRAG_CMD_MAX - 1
};

/* VMDEFRAG_A_MODE */
enum vmdefrag_mode {
	VMDEFRAG_MODE_CAPTURE,	/* keep emptied blocks for the host */
	VMDEFRAG_MODE_COMPACT,	/* free emptied blocks as order-9 buddies */
};

/* VMDEFRAG_A_REASON of EVENT_RELEASED */
enum vmdefrag_release_reason {
	VMDEFRAG_RELEASE_REQUEST,	/* RELEASE command */
	VMDEFRAG_RELEASE_SHRINKER,	/* guest memory pressure */
	VMDEFRAG_RELEASE_OOM,		/* OOM notifier, last resort */
	VMDEFRAG_RELEASE_UNLOAD,	/* module unload */
};

/*
 * Block classes of the SCAN histogram, exactly one per scanned block, first
 * matching class wins in this order.
 */
enum vmdefrag_block_class {
	VMDEFRAG_CLASS_CAPTURED,	/* held by the module */
	VMDEFRAG_CLASS_FREE,		/* every page free in the buddy allocator */
	VMDEFRAG_CLASS_MOVABLE,		/* only free and movable in-use pages */
	VMDEFRAG_CLASS_UNMOVABLE,	/* at least one page we cannot migrate */
	VMDEFRAG_CLASS_OFFLINE,		/* hole, offline or reserved block, or
					 * spans two zones */

	__VMDEFRAG_CLASS_MAX,
	VMDEFRAG_CLASS_MAX = __VMDEFRAG_CLASS_MAX - 1
};

/* Causes of VMDEFRAG_CLASS_UNMOVABLE, counted once per block, first wins. */
enum vmdefrag_unmovable_cause {
	VMDEFRAG_CAUSE_SLAB,		/* slab pages (see SLAB_CACHES) */
	VMDEFRAG_CAUSE_PAGETABLE,	/* page-table pages */
	VMDEFRAG_CAUSE_RESERVED,	/* PageReserved inside an online block */
	VMDEFRAG_CAUSE_PINNED,		/* LRU pages with extra references */
	VMDEFRAG_CAUSE_OTHER,		/* kernel allocations we cannot name */
	VMDEFRAG_CAUSE_SLAB_RECLAIM,	/* only slab pages, all of caches whose
					 * objects eviction can free (dentry,
					 * inode, radix_tree_node, buffer_head):
					 * counted here instead of SLAB */

	__VMDEFRAG_CAUSE_MAX,
	VMDEFRAG_CAUSE_MAX = __VMDEFRAG_CAUSE_MAX - 1
};

/*
 * VMDEFRAG_A_EVICT of CAPTURE: what the module may drop, besides migrating
 * movable pages, to empty a block pinned only by reclaimable slab.
 */
enum vmdefrag_evict {
	VMDEFRAG_EVICT_NONE,	/* "movable": never evict (the default) */
	VMDEFRAG_EVICT_SLAB,	/* "evict-slab": unused dentries, and unused
				 * clean inodes that hold no page cache */
	VMDEFRAG_EVICT_ALL,	/* "evict": also the clean, unmapped page
				 * cache that xarray nodes and buffer heads
				 * of the block index, and inodes' own */
};

/*
 * Pageblock migratetypes of the SCAN histogram VMDEFRAG_A_MIGRATETYPES: the
 * type the guest's page allocator gave each scanned block (OFFLINE blocks
 * are not counted).  A MOVABLE block full of slab says fallback stealing
 * happened; UNMOVABLE and RECLAIMABLE blocks are where slab lives.
 */
enum vmdefrag_migratetype {
	VMDEFRAG_MT_UNMOVABLE,
	VMDEFRAG_MT_MOVABLE,
	VMDEFRAG_MT_RECLAIMABLE,
	VMDEFRAG_MT_HIGHATOMIC,
	VMDEFRAG_MT_CMA,
	VMDEFRAG_MT_ISOLATE,
	VMDEFRAG_MT_OTHER,		/* a value this header does not know */

	__VMDEFRAG_MT_MAX,
	VMDEFRAG_MT_MAX = __VMDEFRAG_MT_MAX - 1
};

/*
 * Vacate-cost histogram buckets: pages to migrate in a MOVABLE block.
 * Bucket i counts blocks whose cost c satisfies
 *   VMDEFRAG_COST_BOUNDS[i - 1] < c <= VMDEFRAG_COST_BOUNDS[i]
 * with an implicit lower bound of -1 for bucket 0 (so bucket 0 is c == 0).
 */
#define VMDEFRAG_COST_BUCKETS	6
#define VMDEFRAG_COST_BOUNDS	{ 0, 16, 64, 128, 256, 512 }

enum vmdefrag_attr {
	VMDEFRAG_A_UNSPEC,
	VMDEFRAG_A_PAD,

	/* requests and replies */
	VMDEFRAG_A_BYTES,		/* u64 */
	VMDEFRAG_A_MODE,		/* u32, enum vmdefrag_mode */
	VMDEFRAG_A_RANGES,		/* nest of VMDEFRAG_A_RANGE */
	VMDEFRAG_A_BUDGET_MS,		/* u32, time budget of a CAPTURE */
	VMDEFRAG_A_FLOOR_BYTES,		/* u64 */
	VMDEFRAG_A_ERRNO,		/* s32, negative errno, 0 on success */
	VMDEFRAG_A_REASON,		/* u32, enum vmdefrag_release_reason */

	/* SCAN totals, all u64 */
	VMDEFRAG_A_TOTAL_BYTES,		/* managed memory scanned */
	VMDEFRAG_A_FREE_BYTES,		/* free in the buddy allocator */
	VMDEFRAG_A_FREE_BLOCK_BYTES,	/* free, in wholly free 2 MiB blocks */
	VMDEFRAG_A_CAPTURABLE_BYTES,	/* estimate: free blocks + movable
					 * blocks, above the floor */
	VMDEFRAG_A_CAPTURED_BYTES,	/* held by the module now */
	VMDEFRAG_A_AVAILABLE_BYTES,	/* si_mem_available() */
	VMDEFRAG_A_SCAN_NS,		/* time the scan took */

	/* SCAN histograms */
	VMDEFRAG_A_CLASSES,		/* nest: attr type = class + 1, u64 blocks */
	VMDEFRAG_A_COST_HIST,		/* nest: attr type = bucket + 1, u64 blocks */
	VMDEFRAG_A_UNMOVABLE,		/* nest: attr type = cause + 1, u64 blocks */
	VMDEFRAG_A_SLAB_CACHES,		/* nest of VMDEFRAG_A_SLAB_CACHE */

	/* STATS counters, all u64, monotonic since load */
	VMDEFRAG_A_STAT_BLOCKS_SCANNED,
	VMDEFRAG_A_STAT_BLOCKS_VACATED,
	VMDEFRAG_A_STAT_BLOCKS_FAILED_BUSY,	/* -EBUSY */
	VMDEFRAG_A_STAT_BLOCKS_FAILED_NOMEM,	/* -ENOMEM */
	VMDEFRAG_A_STAT_BLOCKS_FAILED_OTHER,	/* any other errno */
	VMDEFRAG_A_STAT_PAGES_MIGRATED,		/* estimate from the scan */
	VMDEFRAG_A_STAT_VACATE_NS,		/* time in alloc_contig_range */
	VMDEFRAG_A_STAT_BLOCKS_RELEASED,	/* by request */
	VMDEFRAG_A_STAT_PRESSURE_RELEASES,	/* blocks, shrinker */
	VMDEFRAG_A_STAT_OOM_RELEASES,		/* blocks, OOM notifier */
	VMDEFRAG_A_STAT_BLOCKS_COMPACTED,	/* compact mode */

	/* capture handshake (see "Host handshake" above) */
	VMDEFRAG_A_HOST,		/* flag: CAPTURE/LIST on behalf of the host */
	VMDEFRAG_A_ALL,			/* flag: ACK every PENDING block */
	VMDEFRAG_A_STRICT,		/* flag: CAPTURE only the preferred ranges */
	VMDEFRAG_A_PENDING_BYTES,	/* u64, SCAN/STATS: PENDING blocks */

	VMDEFRAG_A_MIGRATETYPES,	/* SCAN nest: attr type = enum
					 * vmdefrag_migratetype + 1, u64 blocks */

	/* slab eviction (enum vmdefrag_evict, CAUSE_SLAB_RECLAIM) */
	VMDEFRAG_A_EVICT,		/* u32, CAPTURE: enum vmdefrag_evict */
	VMDEFRAG_A_MOVABLE_PAGES,	/* u64, SCAN: pages to migrate, all
					 * MOVABLE blocks */
	VMDEFRAG_A_SLAB_RECLAIM_PAGES,	/* u64, SCAN: slab pages in
					 * SLAB_RECLAIM blocks */
	VMDEFRAG_A_SLAB_RECLAIM_OBJECTS, /* u64, SCAN: objects those pages
					  * can hold (an upper bound) */
	VMDEFRAG_A_EVICTED_DENTRIES,	/* u64, SCAN: since load */
	VMDEFRAG_A_EVICTED_INODES,	/* u64, SCAN: since load */
	VMDEFRAG_A_EVICTED_PAGECACHE_BYTES, /* u64, SCAN: since load */
	VMDEFRAG_A_EVICTED_BLOCKS,	/* u64, SCAN: blocks emptied after an
					 * eviction, since load */

	/* MAP */
	VMDEFRAG_A_MAP_FIRST,		/* u64, first block index */
	VMDEFRAG_A_MAP_MAX,		/* u32, request: most blocks */
	VMDEFRAG_A_MAP_END,		/* u64, reply: block index past the RAM */
	VMDEFRAG_A_MAP_CLASSES,		/* binary, one byte per block */
	VMDEFRAG_A_MAP_SLABS,		/* binary, one byte per block */

	__VMDEFRAG_A_MAX,
	VMDEFRAG_A_MAX = __VMDEFRAG_A_MAX - 1
};

/* MAP: most blocks per request, and the per-block bytes */
#define VMDEFRAG_MAP_MAX_BLOCKS	16384
#define VMDEFRAG_MAP_MAX_SLABS	64
#define VMDEFRAG_MAP_NO_SLAB	0xff
#define VMDEFRAG_MAP_BYTE(class, cause)	((class) | ((cause) << 3))
#define VMDEFRAG_MAP_CLASS(b)	((b) & 0x7)
#define VMDEFRAG_MAP_CAUSE(b)	(((b) >> 3) & 0x7)

/* Inside VMDEFRAG_A_RANGES */
enum vmdefrag_range_attr {
	VMDEFRAG_A_RANGE_UNSPEC,
	VMDEFRAG_A_RANGE,		/* nest of the two below */
	VMDEFRAG_A_RANGE_ADDR,		/* u64, guest-physical, block aligned */
	VMDEFRAG_A_RANGE_LEN,		/* u64, multiple of the block size */

	__VMDEFRAG_A_RANGE_MAX,
	VMDEFRAG_A_RANGE_MAX = __VMDEFRAG_A_RANGE_MAX - 1
};

/* Inside VMDEFRAG_A_SLAB_CACHES */
enum vmdefrag_slab_attr {
	VMDEFRAG_A_SLAB_UNSPEC,
	VMDEFRAG_A_SLAB_CACHE,		/* nest of the three below */
	VMDEFRAG_A_SLAB_NAME,		/* string, <= VMDEFRAG_SLAB_NAME_LEN */
	VMDEFRAG_A_SLAB_PAGES,		/* u64, slab pages of this cache */
	VMDEFRAG_A_SLAB_BLOCKS,		/* u64, blocks it makes unmovable */
	VMDEFRAG_A_SLAB_RECLAIM_BLOCKS,	/* u64, of those, SLAB_RECLAIM ones */

	__VMDEFRAG_A_SLAB_MAX,
	VMDEFRAG_A_SLAB_MAX = __VMDEFRAG_A_SLAB_MAX - 1
};

#endif /* _UAPI_VMDEFRAG_GENL_H */
