/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vmdefrag: the one place where kernel API differences are handled.
 *
 * Supported guest kernels are Debian's 6.1 and 6.12.  The differences the
 * module meets are:
 *
 *  - alloc_contig_range(): a function in 6.1; since memory allocation
 *    profiling (6.10) a macro around the exported alloc_contig_range_noprof().
 *    The macro's presence is the feature test, so a backport is handled too.
 *    The module calls the _noprof variant directly: the pages it takes are
 *    accounted to nobody, as they belong to the host while captured.
 *  - shrinkers: struct shrinker embedded by the caller and
 *    register_shrinker()/unregister_shrinker() before 6.7;
 *    shrinker_alloc()/shrinker_register()/shrinker_free() after.  Both are
 *    wrapped as a create/destroy pair that hands out a pointer; the
 *    SHRINKER_ALLOCATED flag came with the new API and is the feature test.
 *  - the largest buddy order: MAX_ORDER - 1 before 6.8, MAX_PAGE_ORDER after.
 *  - a block device's page cache: bd_inode->i_mapping before 6.10,
 *    bd_mapping after.  The 6.10 series that added bd_mapping also folded
 *    bd_partno into bd_flags: BD_PARTNO is the feature test.

 *  - movable slab objects: only a guest kernel built with vmdefrag's own
 *    series (guest-agent/kernel-patches/) has kmem_cache_vacate_range();
 *    CONFIG_SLAB_MOBILITY, which the series adds, is the feature test.
 *    Stock Debian kernels have neither and the module evicts instead.
 *    With the series' 0006, alloc_contig_range() also vacates the slabs
 *    of mobile caches itself, once the range is isolated (so moved
 *    objects cannot land back in it); the module's own call before its
 *    eviction still decides what is left to evict.
 *  - alloc_contig_range() without init_on_alloc: the same series adds
 *    alloc_contig_range_noinit() (<linux/page-isolation.h>, where a macro
 *    of its name is the feature test).  The module never reads, maps or
 *    hands out a page it takes and frees them back with
 *    free_contig_range(), so it asks the kernel not to clear them (with
 *    init_on_alloc=1 that clearing was most of a capture's CPU).  Stock
 *    kernels have no such call: the module calls alloc_contig_range().
 *    Building with -DVDF_CONTIG_INIT (KCFLAGS) calls alloc_contig_range()
 *    on a patched kernel too: the before/after of tests/bench/vacate-profile.
 */
#ifndef _VMDEFRAG_COMPAT_H
#define _VMDEFRAG_COMPAT_H

#include <linux/blk_types.h>
#include <linux/blkdev.h>
#include <linux/err.h>
#include <linux/fs.h>
#include <linux/gfp.h>
#include <linux/mmzone.h>
#include <linux/page-isolation.h>
#include <linux/shrinker.h>
#include <linux/slab.h>
#include <linux/xarray.h>

#ifdef MAX_PAGE_ORDER
#define VDF_MAX_BUDDY_ORDER	MAX_PAGE_ORDER
#else
#define VDF_MAX_BUDDY_ORDER	(MAX_ORDER - 1)
#endif

/*
 * Empty [start, end) and take every page of it; 0 or a negative errno.
 * The range must lie in one zone.  Undone with free_contig_range().  The
 * pages are not to be read: on a kernel with the series they are not
 * initialised (init_on_alloc) and hold what they held when freed.
 */
static inline int vdf_compat_alloc_contig(unsigned long start,
					  unsigned long end, gfp_t gfp)
{
#if defined(alloc_contig_range_noinit) && !defined(VDF_CONTIG_INIT)
	return alloc_contig_range_noinit(start, end, MIGRATE_MOVABLE, gfp);
#elif defined(alloc_contig_range)
	return alloc_contig_range_noprof(start, end, MIGRATE_MOVABLE, gfp);
#else
	return alloc_contig_range(start, end, MIGRATE_MOVABLE, gfp);
#endif
}

/*
 * Move or let go of the objects of the mobile slab caches in [start, end)
 * and free their emptied slabs (the movable-slab series); 0 when no slab
 * page is left in the range, -EBUSY when some is, -EINTR, -ENOMEM, or
 * -EOPNOTSUPP on a kernel without the series.
 */
static inline int vdf_compat_slab_vacate(unsigned long start, unsigned long end)
{
#ifdef CONFIG_SLAB_MOBILITY
	return kmem_cache_vacate_range(start, end, NULL);
#else
	return -EOPNOTSUPP;
#endif
}

/*
 * Whether the nodes of xarray @xa move (the series flags an inode's page
 * cache XA_FLAGS_MOBILE when it is built with CONFIG_SLAB_MOBILITY):
 * vdf_compat_slab_vacate() moves such nodes, so eviction never drops the
 * page cache they index.  Always false on stock kernels.
 */
static inline bool vdf_compat_xa_nodes_move(const struct xarray *xa)
{
#if defined(CONFIG_SLAB_MOBILITY) && defined(XA_FLAGS_MOBILE)
	return xa->xa_flags & XA_FLAGS_MOBILE;
#else
	return false;
#endif
}

/*
 * Whether vdf_compat_alloc_contig() empties the slabs of mobile caches in
 * its range itself (the series' 0006; the series is applied whole, so its
 * CONFIG_SLAB_MOBILITY is the test).  Then a block pinned only by such
 * slabs is worth the call.
 */
static inline bool vdf_compat_contig_vacates_slab(void)
{
	return IS_ENABLED(CONFIG_SLAB_MOBILITY);
}

typedef unsigned long (*vdf_shrink_fn)(struct shrinker *s,
				       struct shrink_control *sc);

/*
 * Create and register a shrinker; returns it or an ERR_PTR().  The caller
 * never touches the struct's layout beyond the callbacks set here.
 */
static inline struct shrinker *vdf_compat_shrinker_create(const char *name,
							  vdf_shrink_fn count,
							  vdf_shrink_fn scan,
							  int seeks)
{
	struct shrinker *s;

#ifdef SHRINKER_ALLOCATED
	s = shrinker_alloc(0, "%s", name);
	if (!s)
		return ERR_PTR(-ENOMEM);
	s->count_objects = count;
	s->scan_objects = scan;
	s->seeks = seeks;
	shrinker_register(s);
#else
	int ret;

	s = kzalloc(sizeof(*s), GFP_KERNEL);
	if (!s)
		return ERR_PTR(-ENOMEM);
	s->count_objects = count;
	s->scan_objects = scan;
	s->seeks = seeks;
	ret = register_shrinker(s, "%s", name);
	if (ret) {
		kfree(s);
		return ERR_PTR(ret);
	}
#endif
	return s;
}

/* Unregister (waiting for running callbacks) and free a shrinker. */
static inline void vdf_compat_shrinker_destroy(struct shrinker *s)
{
#ifdef SHRINKER_ALLOCATED
	shrinker_free(s);
#else
	unregister_shrinker(s);
	kfree(s);
#endif
}

/*
 * The pageblock migratetype of @pfn, which must be online.  The kernel's
 * get_pfnblock_flags_mask() is not exported, so read the bits where
 * SPARSEMEM keeps them, the section's usemap (mem_section is exported):
 * NR_PAGEBLOCK_BITS bits per pageblock, the migratetype in the low
 * PB_migratetype_bits of them.  The layout is the same in 6.1 and 6.12.
 * A racy read, like every read of the scanner.
 */
static inline unsigned int vdf_compat_migratetype(unsigned long pfn)
{
	struct mem_section *ms = __pfn_to_section(pfn);
	unsigned long bitidx, word;

	bitidx = ((pfn & (PAGES_PER_SECTION - 1)) >> pageblock_order) *
		 NR_PAGEBLOCK_BITS;
	word = READ_ONCE(section_to_usemap(ms)[bitidx / BITS_PER_LONG]);
	return (word >> (bitidx % BITS_PER_LONG)) &
	       ((1UL << PB_migratetype_bits) - 1);
}

/* The page cache of block device @bdev (its metadata buffers). */
static inline struct address_space *vdf_compat_bdev_mapping(struct block_device *bdev)
{
#ifdef BD_PARTNO
	return bdev->bd_mapping;
#else
	return bdev->bd_inode->i_mapping;
#endif
}

#endif /* _VMDEFRAG_COMPAT_H */
