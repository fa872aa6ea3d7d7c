/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vmdefrag.ko internal interfaces between its files:
 *
 *   main.c     module init/exit, statistics counters
 *   genl.c     generic netlink family: requests, replies, events
 *   scan.c     block classification (the estimate behind SCAN and CAPTURE)
 *   capture.c  vacate, capture, compact and release of blocks
 *   pressure.c safety floor, shrinker, OOM notifier
 *   slabcal.c  slab cache naming by calibrated offsets
 *   evict.c    targeted eviction of the objects that pin a block
 */
#ifndef _VMDEFRAG_H
#define _VMDEFRAG_H

#include <linux/atomic.h>
#include <linux/mmzone.h>
#include <linux/netlink.h>
#include <linux/types.h>

#include "vmdefrag_genl.h"

/* Pages per block; equal to pageblock_nr_pages (checked at init). */
#define VDF_BLOCK_PAGES		(1UL << (VMDEFRAG_BLOCK_SHIFT - PAGE_SHIFT))

static inline unsigned long vdf_block_pfn(unsigned long idx)
{
	return idx << (VMDEFRAG_BLOCK_SHIFT - PAGE_SHIFT);
}

static inline unsigned long vdf_pfn_block(unsigned long pfn)
{
	return pfn >> (VMDEFRAG_BLOCK_SHIFT - PAGE_SHIFT);
}

/* ---- main.c: statistics, in the order of VMDEFRAG_A_STAT_* ---- */
enum vdf_stat {
	VDF_STAT_BLOCKS_SCANNED,
	VDF_STAT_BLOCKS_VACATED,
	VDF_STAT_BLOCKS_FAILED_BUSY,
	VDF_STAT_BLOCKS_FAILED_NOMEM,
	VDF_STAT_BLOCKS_FAILED_OTHER,
	VDF_STAT_PAGES_MIGRATED,
	VDF_STAT_VACATE_NS,
	VDF_STAT_BLOCKS_RELEASED,
	VDF_STAT_PRESSURE_RELEASES,
	VDF_STAT_OOM_RELEASES,
	VDF_STAT_BLOCKS_COMPACTED,
	VDF_STAT_NR
};

extern atomic64_t vdf_stats[VDF_STAT_NR];

static inline void vdf_stat_add(enum vdf_stat stat, u64 val)
{
	atomic64_add(val, &vdf_stats[stat]);
}

/*
 * ---- main.c: work counters, not on the wire: debugfs vmdefrag/work ----
 * What vacating cost, for the bench and for profiling (names in main.c).
 */
enum vdf_work {
	VDF_WORK_CONTIG_CALLS,	/* alloc_contig_range() calls */
	VDF_WORK_CONTIG_FAILED,	/* of them, failed */
	VDF_WORK_RUNS_SPLIT,	/* failed runs of several blocks, split */
	VDF_WORK_BLOCKS_TRIED,	/* blocks in all the calls */
	VDF_WORK_PAGES_MOVED,	/* PGMIGRATE_SUCCESS during the calls */
	VDF_WORK_FAILED_NS,	/* time in the calls that failed */
	VDF_WORK_RANK_NS,	/* time classifying all blocks to rank them */
	VDF_WORK_NR
};

extern atomic64_t vdf_work[VDF_WORK_NR];

static inline void vdf_work_add(enum vdf_work w, u64 val)
{
	atomic64_add(val, &vdf_work[w]);
}

/* ---- scan.c ---- */

/* One classified block. */
struct vdf_block {
	unsigned long idx;	/* block index: pfn >> pageblock_order */
	u16 cost;		/* in-use movable pages to migrate */
	u16 free;		/* pages free in the buddy allocator */
	u16 slab_pages;		/* reclaimable slab pages (SLAB_RECLAIM) */
	u8 class;		/* enum vmdefrag_block_class */
	u8 cause;		/* enum vmdefrag_unmovable_cause if UNMOVABLE */
	u8 migratetype;		/* enum vmdefrag_migratetype, not if OFFLINE */
	/* with a report: the report's slab slot of a cache in this
	 * UNMOVABLE block, else VMDEFRAG_MAP_NO_SLAB
	 */
	u8 slab_slot;
	bool whole_buddy;	/* one free buddy of order >= 9 covers it */
};

/* Slab pages in unmovable blocks, tallied by kmem_cache address. */
#define VDF_SLAB_SLOTS		64
#define VDF_SLAB_OVERFLOW	1UL	/* slot for caches past the table */

struct vdf_slab_slot {
	unsigned long cache;	/* 0: unknown, VDF_SLAB_OVERFLOW: the rest */
	u64 pages;
	u64 blocks;
	u64 reclaim_blocks;	/* of blocks, the SLAB_RECLAIM ones */
};

struct vdf_scan_report {
	u64 managed_pages;
	u64 free_pages;
	u64 classes[__VMDEFRAG_CLASS_MAX];
	u64 cost_hist[VMDEFRAG_COST_BUCKETS];
	u64 causes[__VMDEFRAG_CAUSE_MAX];
	u64 migratetypes[__VMDEFRAG_MT_MAX];
	unsigned int nr_slab;
	struct vdf_slab_slot slab[VDF_SLAB_SLOTS];
	u64 movable_pages;		/* cost of all MOVABLE blocks */
	u64 slab_reclaim_pages;		/* cost of all SLAB_RECLAIM blocks */
	u64 slab_reclaim_objects;	/* objects those pages can hold */
	u64 scan_ns;
};

/* Called for every classified block; a non-zero return stops the walk. */
typedef int (*vdf_scan_fn)(const struct vdf_block *blk, void *arg);

int vdf_scan_all(struct vdf_scan_report *rep, vdf_scan_fn fn, void *arg);
struct zone *vdf_scan_block_zone(unsigned long idx);
void vdf_scan_block(unsigned long idx, struct zone *zone,
		    struct vdf_block *ret_blk, struct vdf_scan_report *rep);
int vdf_scan_ram_span(unsigned long *ret_start_pfn, unsigned long *ret_end_pfn);

/* ---- slabcal.c ---- */

/* What eviction can do with a cache's objects (evict.c). */
enum vdf_slab_kind {
	VDF_SLAB_KIND_OTHER,	/* nothing: the page pins its block */
	VDF_SLAB_KIND_DENTRY,
	VDF_SLAB_KIND_INODE,
	VDF_SLAB_KIND_INODE_PART,	/* freed with its inode */
	VDF_SLAB_KIND_XA_NODE,
	VDF_SLAB_KIND_BH,
};

int vdf_slabcal_init(void);
enum vdf_slab_kind vdf_slabcal_kind(unsigned long cache, unsigned int *ret_size);
bool vdf_slabcal_seen_ext4(void);
unsigned long vdf_slabcal_cache_of(struct page *head);
void vdf_slabcal_name(unsigned long cache, char *buf, size_t len);

/* ---- capture.c ---- */

/* A list of block indices, as captured or released by one operation. */
struct vdf_blocks {
	unsigned long *idx;
	unsigned int nr;
	unsigned int cap;
};

int vdf_blocks_add(struct vdf_blocks *b, unsigned long idx);
void vdf_blocks_free(struct vdf_blocks *b);

struct vdf_range {
	u64 addr;
	u64 len;
};

struct vdf_capture_req {
	u64 bytes;
	u32 mode;			/* enum vmdefrag_mode */
	u32 budget_ms;
	u64 floor_bytes;		/* 0: the module-wide floor */
	const struct vdf_range *pref;	/* preferred ranges, validated */
	unsigned int nr_pref;
	bool strict;			/* only the preferred ranges */
	bool host;			/* for the host: blocks become PENDING */
	u32 evict;			/* enum vmdefrag_evict */
	u32 portid;			/* requester's netlink port */
};

int vdf_capture_init(void);
void vdf_capture_exit(void);
int vdf_capture_run(const struct vdf_capture_req *req, struct vdf_blocks *done,
		    int *ret_stop);
int vdf_capture_release_ranges(const struct vdf_range *r, unsigned int nr,
			       struct vdf_blocks *done);
int vdf_capture_release_bytes(u64 bytes, struct vdf_blocks *done);
unsigned long vdf_capture_release_some(unsigned long max_blocks,
				       enum vmdefrag_release_reason reason);
void vdf_capture_release_all(void);
bool vdf_capture_held(unsigned long idx);
bool vdf_capture_next(unsigned long *idx);
unsigned long vdf_capture_count(void);
unsigned long vdf_capture_pending(void);
bool vdf_capture_mark_pending(unsigned long idx, u32 owner);
int vdf_capture_ack(const struct vdf_range *r, unsigned int nr,
		    unsigned long *ret_blocks);
void vdf_capture_owner_gone(u32 owner);

/* ---- evict.c ---- */

/* What one eviction dropped. */
struct vdf_evict_result {
	unsigned long dentries;
	unsigned long inodes;
	unsigned long pages;	/* page cache pages invalidated */
};

int vdf_evict_blocks(const unsigned long *idx, unsigned int nr, u32 policy,
		     struct vdf_evict_result *ret_res);
void vdf_evict_note_block(void);
void vdf_evict_debugfs(struct dentry *dir);
void vdf_evict_totals(u64 *ret_dentries, u64 *ret_inodes, u64 *ret_pages,
		      u64 *ret_blocks);

/* ---- pressure.c ---- */
int vdf_pressure_init(void);
void vdf_pressure_exit(void);
u64 vdf_pressure_floor_bytes(void);
int vdf_pressure_set_floor(u64 bytes, struct netlink_ext_ack *extack);
long vdf_pressure_headroom(u64 floor_bytes);

/* ---- genl.c ---- */
int vdf_genl_init(void);
void vdf_genl_exit(void);
void vdf_genl_notify(u8 cmd, struct vdf_blocks *blocks,
		     enum vmdefrag_release_reason reason, gfp_t gfp);

#endif /* _VMDEFRAG_H */
