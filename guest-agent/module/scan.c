// SPDX-License-Identifier: GPL-2.0
/*
 * vmdefrag scanner: classify guest-physical memory in 2 MiB blocks.
 *
 * The scanner walks every populated zone of every online node in pageblock
 * steps and classifies each block by reading the struct pages of its 512
 * pages, without taking zone->lock or any page reference.  The result is an
 * estimate by design: pages change state under us, and the only consumer
 * that acts on it (capture.c) lets alloc_contig_range() decide for real.
 * What a racy read may cost is a wrong class, never a crash: every struct
 * page we read belongs to an online memory section (pfn_to_online_page()),
 * compound heads are checked the same way before they are read, and buddy
 * orders and compound sizes are clamped before they are used as steps.
 *
 * A block is, first match wins (enum vmdefrag_block_class):
 *
 *   CAPTURED   held by capture.c;
 *   OFFLINE    not wholly inside one populated zone, in a memory hole or an
 *              offline section, or every page of it PageReserved;
 *   FREE       every page free in the buddy allocator;
 *   UNMOVABLE  at least one page alloc_contig_range() cannot migrate, with a
 *              cause (first present wins): slab, page table, reserved,
 *              pinned (an LRU folio that may be DMA-pinned), other (any
 *              in-use kernel page we cannot name: compound non-LRU pages
 *              such as hugetlb, vmalloc and stack pages, ...);
 *   MOVABLE    everything else: free pages plus LRU and non-LRU movable
 *              (__PageMovable) pages, whose number is the vacate cost.
 *
 * Pages with a zero refcount that are not buddy pages (on a per-cpu list,
 * or being freed) cost nothing.  The pageblock migratetype of every online
 * block is read (compat.h) and counted for the report; it does not change
 * the class: alloc_contig_range() isolates a block whatever its type.
 *
 * Slab pages of unmovable blocks are tallied by kmem_cache address into
 * the report's slab table (slabcal.c turns addresses into names later);
 * with a report, an UNMOVABLE block also names one of its caches by its
 * slot in that table (blk->slab_slot, what the MAP command draws).
 * Each slab page is also sorted by what eviction can do with its cache
 * (slabcal.c, by name, remembered per block for the few caches a block
 * holds): an UNMOVABLE block whose only unmovable pages are slab pages of
 * reclaimable caches (dentry, ext4 inodes, xarray nodes, buffer heads) gets
 * cause SLAB_RECLAIM instead of SLAB, and its slab pages are its cost
 * (blk->slab_pages): what evict.c must empty before it can be vacated.
 *
 * Locking: none.  The caller serializes use of a report; vdf_scan_all() may
 * sleep (cond_resched() between blocks).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/ktime.h>
#include <linux/memory_hotplug.h>
#include <linux/mm.h>
#include <linux/mmzone.h>
#include <linux/nodemask.h>
#include <linux/page_ref.h>
#include <linux/sched.h>

#include "compat.h"
#include "vmdefrag.h"

static const u16 vdf_scan_cost_bounds[VMDEFRAG_COST_BUCKETS] = VMDEFRAG_COST_BOUNDS;

/* Per-block page counts while classifying. */
struct vdf_scan_tally {
	unsigned int free;
	unsigned int cost;
	unsigned int cause[__VMDEFRAG_CAUSE_MAX];
	u64 slab_seen;		/* slab table slots present in this block */
	unsigned int slab_other;	/* slab pages eviction cannot free */
	unsigned int slab_reclaim;	/* slab pages it may free */
	u64 slab_objects;		/* objects the latter can hold */
	unsigned int nr_kinds;		/* caches remembered below */
	struct {
		unsigned long cache;
		u8 kind;		/* enum vdf_slab_kind */
		unsigned int size;	/* object size, known kinds only */
	} kinds[8];
	bool whole_buddy;
};

static unsigned int vdf_scan_cost_bucket(unsigned int cost)
{
	unsigned int i;

	for (i = 0; i < VMDEFRAG_COST_BUCKETS - 1; i++)
		if (cost <= vdf_scan_cost_bounds[i])
			break;
	return i;
}

/* Count @pages slab pages of the slab headed by @head in @rep's table. */
static void vdf_scan_tally_slab(struct vdf_scan_report *rep, struct page *head,
				unsigned int pages, struct vdf_scan_tally *t)
{
	unsigned long cache = vdf_slabcal_cache_of(head);
	unsigned int i;

	for (i = 0; i < rep->nr_slab; i++)
		if (rep->slab[i].cache == cache)
			goto found;
	if (rep->nr_slab < VDF_SLAB_SLOTS - 1) {
		i = rep->nr_slab++;
		rep->slab[i].cache = cache;
	} else {
		i = VDF_SLAB_SLOTS - 1;
		if (rep->nr_slab < VDF_SLAB_SLOTS) {
			rep->nr_slab++;
			rep->slab[i].cache = VDF_SLAB_OVERFLOW;
		}
	}
found:
	rep->slab[i].pages += pages;
	t->slab_seen |= BIT_ULL(i);
}

/* Sort @pages slab pages of the slab headed by @head by what eviction can do. */
static void vdf_scan_slab_kind(struct page *head, unsigned int pages,
			       struct vdf_scan_tally *t)
{
	unsigned long cache = vdf_slabcal_cache_of(head);
	unsigned int i, size = 0;
	u8 kind;

	for (i = 0; i < t->nr_kinds; i++)
		if (t->kinds[i].cache == cache)
			break;
	if (i < t->nr_kinds) {
		kind = t->kinds[i].kind;
		size = t->kinds[i].size;
	} else {
		kind = vdf_slabcal_kind(cache, &size);
		if (t->nr_kinds < ARRAY_SIZE(t->kinds)) {
			t->kinds[t->nr_kinds].cache = cache;
			t->kinds[t->nr_kinds].kind = kind;
			t->kinds[t->nr_kinds].size = size;
			t->nr_kinds++;
		}
	}
	if (kind == VDF_SLAB_KIND_OTHER) {
		t->slab_other += pages;
		return;
	}
	t->slab_reclaim += pages;
	if (size)
		t->slab_objects += (u64)pages * PAGE_SIZE / size;
}

/* The uapi name of the pageblock migratetype of online @pfn. */
static u8 vdf_scan_migratetype(unsigned long pfn)
{
	switch (vdf_compat_migratetype(pfn)) {
	case MIGRATE_UNMOVABLE:
		return VMDEFRAG_MT_UNMOVABLE;
	case MIGRATE_MOVABLE:
		return VMDEFRAG_MT_MOVABLE;
	case MIGRATE_RECLAIMABLE:
		return VMDEFRAG_MT_RECLAIMABLE;
	case MIGRATE_HIGHATOMIC:
		return VMDEFRAG_MT_HIGHATOMIC;
#ifdef CONFIG_CMA
	case MIGRATE_CMA:
		return VMDEFRAG_MT_CMA;
#endif
#ifdef CONFIG_MEMORY_ISOLATION
	case MIGRATE_ISOLATE:
		return VMDEFRAG_MT_ISOLATE;
#endif
	default:
		return VMDEFRAG_MT_OTHER;
	}
}

/*
 * Classify the compound page that @page (at @pfn) belongs to, for the part
 * of it inside [@pfn, @end).  Returns how many pages were accounted.
 */
static unsigned long vdf_scan_compound(struct page *page, unsigned long pfn,
				       unsigned long end,
				       struct vdf_scan_report *rep,
				       struct vdf_scan_tally *t)
{
	struct page *head = compound_head(page);
	unsigned long hpfn = page_to_pfn(head);
	unsigned long nr, step;

	if (hpfn > pfn || pfn_to_online_page(hpfn) != head) {
		t->cause[VMDEFRAG_CAUSE_OTHER]++;
		return 1;
	}
	nr = compound_nr(head);
	if (nr < 2 || nr > (1UL << (PUD_SHIFT - PAGE_SHIFT)) || hpfn + nr <= pfn) {
		t->cause[VMDEFRAG_CAUSE_OTHER]++;
		return 1;
	}
	step = min(hpfn + nr, end) - pfn;

	if (PageSlab(head)) {
		t->cause[VMDEFRAG_CAUSE_SLAB] += step;
		vdf_scan_slab_kind(head, step, t);
		if (rep)
			vdf_scan_tally_slab(rep, head, step, t);
	} else if (PageLRU(head) || __PageMovable(head)) {
		if (folio_maybe_dma_pinned(page_folio(head)))
			t->cause[VMDEFRAG_CAUSE_PINNED] += step;
		else
			t->cost += step;
	} else if (!page_ref_count(head)) {
		/* being freed or prepared: costs nothing, blocks nothing */
	} else {
		t->cause[VMDEFRAG_CAUSE_OTHER] += step;
	}
	return step;
}

/*
 * Whether block @start lies inside a free buddy larger than a block whose
 * head is in an earlier block (x86-64: the second half of an order-10
 * buddy).  Its own first page then carries no PageBuddy mark.
 */
static bool vdf_scan_in_big_buddy(unsigned long start)
{
	unsigned int order;

	for (order = pageblock_order + 1; order <= VDF_MAX_BUDDY_ORDER; order++) {
		unsigned long head = ALIGN_DOWN(start, 1UL << order);
		struct page *page;

		if (head == start)
			continue;
		page = pfn_to_online_page(head);
		if (page && PageBuddy(page) &&
		    READ_ONCE(page_private(page)) >= order &&
		    READ_ONCE(page_private(page)) <= VDF_MAX_BUDDY_ORDER)
			return true;
	}
	return false;
}

/* Classify the page at @pfn; returns how many pages were accounted. */
static unsigned long vdf_scan_page(unsigned long pfn, unsigned long start,
				   unsigned long end,
				   struct vdf_scan_report *rep,
				   struct vdf_scan_tally *t)
{
	struct page *page = pfn_to_page(pfn);

	if (PageBuddy(page)) {
		unsigned long order = READ_ONCE(page_private(page));
		unsigned long step;

		if (order > VDF_MAX_BUDDY_ORDER)
			order = 0;
		step = min(1UL << order, end - pfn);
		if (pfn == start && order >= pageblock_order)
			t->whole_buddy = true;
		t->free += step;
		return step;
	}
	if (PageCompound(page))
		return vdf_scan_compound(page, pfn, end, rep, t);

	if (PageReserved(page)) {
		t->cause[VMDEFRAG_CAUSE_RESERVED]++;
	} else if (PageSlab(page)) {
		t->cause[VMDEFRAG_CAUSE_SLAB]++;
		vdf_scan_slab_kind(page, 1, t);
		if (rep)
			vdf_scan_tally_slab(rep, page, 1, t);
	} else if (PageTable(page)) {
		t->cause[VMDEFRAG_CAUSE_PAGETABLE]++;
	} else if (!page_ref_count(page)) {
		/* on a per-cpu free list or being freed */
	} else if (PageLRU(page) || __PageMovable(page)) {
		if (folio_maybe_dma_pinned(page_folio(page)))
			t->cause[VMDEFRAG_CAUSE_PINNED]++;
		else
			t->cost++;
	} else {
		t->cause[VMDEFRAG_CAUSE_OTHER]++;
	}
	return 1;
}

/* Fold one block's tally into its class and, if given, into @rep. */
static void vdf_scan_finish(struct vdf_block *blk, const struct vdf_scan_tally *t,
			    struct vdf_scan_report *rep)
{
	unsigned int i, unmovable = 0;

	for (i = 0; i < __VMDEFRAG_CAUSE_MAX; i++)
		unmovable += t->cause[i];

	blk->free = t->free;
	blk->cost = t->cost;
	blk->whole_buddy = t->whole_buddy;
	if (t->free >= VDF_BLOCK_PAGES) {
		blk->class = VMDEFRAG_CLASS_FREE;
	} else if (t->cause[VMDEFRAG_CAUSE_RESERVED] >= VDF_BLOCK_PAGES) {
		blk->class = VMDEFRAG_CLASS_OFFLINE;
	} else if (unmovable) {
		blk->class = VMDEFRAG_CLASS_UNMOVABLE;
		for (i = 0; i < __VMDEFRAG_CAUSE_MAX; i++)
			if (t->cause[i])
				break;
		blk->cause = i;
		if (unmovable == t->cause[VMDEFRAG_CAUSE_SLAB] && !t->slab_other) {
			blk->cause = VMDEFRAG_CAUSE_SLAB_RECLAIM;
			blk->slab_pages = t->slab_reclaim;
		}
	} else {
		blk->class = VMDEFRAG_CLASS_MOVABLE;
	}

	if (!rep)
		return;
	if (blk->class == VMDEFRAG_CLASS_UNMOVABLE && t->slab_seen)
		blk->slab_slot = __ffs64(t->slab_seen);
	rep->free_pages += t->free;
	if (blk->class == VMDEFRAG_CLASS_MOVABLE) {
		rep->cost_hist[vdf_scan_cost_bucket(blk->cost)]++;
		rep->movable_pages += blk->cost;
	}
	if (blk->class == VMDEFRAG_CLASS_UNMOVABLE) {
		bool reclaim = blk->cause == VMDEFRAG_CAUSE_SLAB_RECLAIM;

		rep->causes[blk->cause]++;
		for (i = 0; i < VDF_SLAB_SLOTS; i++) {
			if (!(t->slab_seen & BIT_ULL(i)))
				continue;
			rep->slab[i].blocks++;
			if (reclaim)
				rep->slab[i].reclaim_blocks++;
		}
		if (reclaim) {
			rep->slab_reclaim_pages += blk->slab_pages;
			rep->slab_reclaim_objects += t->slab_objects;
		}
	}
}

/*
 * Classify block @idx of @zone into @ret_blk; with @rep, also add it to the
 * report (class histogram, cost histogram, causes, slab table).
 */
void vdf_scan_block(unsigned long idx, struct zone *zone,
		    struct vdf_block *ret_blk, struct vdf_scan_report *rep)
{
	unsigned long start = vdf_block_pfn(idx);
	unsigned long end = start + VDF_BLOCK_PAGES;
	struct vdf_scan_tally t = { 0 };
	struct page *first, *last;
	unsigned long pfn;

	BUILD_BUG_ON(sizeof(t.slab_seen) * BITS_PER_BYTE < VDF_SLAB_SLOTS);
	BUILD_BUG_ON(VDF_BLOCK_PAGES > U16_MAX);
	memset(ret_blk, 0, sizeof(*ret_blk));
	ret_blk->idx = idx;
	ret_blk->slab_slot = VMDEFRAG_MAP_NO_SLAB;

	first = pfn_to_online_page(start);
	last = pfn_to_online_page(end - 1);
	if (!zone || !first || !last || page_zone(first) != zone ||
	    page_zone(last) != zone || start < zone->zone_start_pfn ||
	    end > zone_end_pfn(zone)) {
		ret_blk->class = VMDEFRAG_CLASS_OFFLINE;
	} else if (vdf_capture_held(idx)) {
		ret_blk->class = VMDEFRAG_CLASS_CAPTURED;
	} else if (!PageBuddy(first) && vdf_scan_in_big_buddy(start)) {
		t.free = VDF_BLOCK_PAGES;
		t.whole_buddy = true;
		vdf_scan_finish(ret_blk, &t, rep);
	} else {
		for (pfn = start; pfn < end; )
			pfn += vdf_scan_page(pfn, start, end, rep, &t);
		vdf_scan_finish(ret_blk, &t, rep);
	}
	if (ret_blk->class != VMDEFRAG_CLASS_OFFLINE)
		ret_blk->migratetype = vdf_scan_migratetype(start);
	if (rep) {
		rep->classes[ret_blk->class]++;
		if (ret_blk->class != VMDEFRAG_CLASS_OFFLINE)
			rep->migratetypes[ret_blk->migratetype]++;
	}
}

/* The zone block @idx starts in, or NULL if its first page is not online. */
struct zone *vdf_scan_block_zone(unsigned long idx)
{
	struct page *page = pfn_to_online_page(vdf_block_pfn(idx));

	return page ? page_zone(page) : NULL;
}

/* Walk the blocks of one zone; stops early when @fn returns non-zero. */
static int vdf_scan_zone(struct zone *zone, struct vdf_scan_report *rep,
			 vdf_scan_fn fn, void *arg)
{
	unsigned long pfn = ALIGN_DOWN(zone->zone_start_pfn, VDF_BLOCK_PAGES);
	unsigned long end = zone_end_pfn(zone);
	struct vdf_block blk;
	int ret;

	for (; pfn < end; pfn += VDF_BLOCK_PAGES) {
		struct page *page = pfn_to_online_page(pfn);

		/* interleaved zones: a block is visited from its own zone */
		if (page && page_zone(page) != zone)
			continue;
		vdf_scan_block(vdf_pfn_block(pfn), zone, &blk, rep);
		vdf_stat_add(VDF_STAT_BLOCKS_SCANNED, 1);
		if (fn) {
			ret = fn(&blk, arg);
			if (ret)
				return ret;
		}
		cond_resched();
	}
	return 0;
}

/*
 * Classify every block of every populated zone.  @rep (optional) receives
 * the totals; @fn (optional) is called for each block and stops the walk
 * with its non-zero return value, which is returned.  May sleep.
 */
int vdf_scan_all(struct vdf_scan_report *rep, vdf_scan_fn fn, void *arg)
{
	ktime_t t0 = ktime_get();
	int nid, z, ret;

	for_each_online_node(nid) {
		pg_data_t *pgdat = NODE_DATA(nid);

		for (z = 0; z < MAX_NR_ZONES; z++) {
			struct zone *zone = &pgdat->node_zones[z];

			if (!populated_zone(zone))
				continue;
			if (rep)
				rep->managed_pages += zone_managed_pages(zone);
			ret = vdf_scan_zone(zone, rep, fn, arg);
			if (ret)
				return ret;
		}
	}
	if (rep)
		rep->scan_ns = ktime_to_ns(ktime_sub(ktime_get(), t0));
	return 0;
}

/*
 * The guest-physical span of all populated zones, [start, end) in pfns.
 * Returns 0, or -ENODEV if there is no populated zone.
 */
int vdf_scan_ram_span(unsigned long *ret_start_pfn, unsigned long *ret_end_pfn)
{
	unsigned long start = ULONG_MAX, end = 0;
	int nid, z;

	for_each_online_node(nid) {
		pg_data_t *pgdat = NODE_DATA(nid);

		for (z = 0; z < MAX_NR_ZONES; z++) {
			struct zone *zone = &pgdat->node_zones[z];

			if (!populated_zone(zone))
				continue;
			start = min(start, zone->zone_start_pfn);
			end = max(end, zone_end_pfn(zone));
		}
	}
	if (start >= end)
		return -ENODEV;
	*ret_start_pfn = start;
	*ret_end_pfn = end;
	return 0;
}
