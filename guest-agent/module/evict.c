// SPDX-License-Identifier: GPL-2.0
/*
 * vmdefrag eviction: free the objects that pin a block, through their owners.
 *
 * A slab page makes its block unmovable: alloc_contig_range() cannot migrate
 * it, and stock kernels give slab no way to move objects.  What they do give
 * a module is the owners' own ways to drop unused objects.  This file uses
 * only those, for the blocks capture.c picked because every unmovable page
 * in them is a slab page of a cache eviction knows (scan.c: cause
 * SLAB_RECLAIM).  It never dereferences a guessed object: every object it
 * touches is reached through an enumeration that owns it, under that
 * enumeration's lock, and taken by the owner's reference rules:
 *
 *   superblocks  iterate_supers_type(ext4): each one with s_umount held
 *                shared, so no umount can run under us;
 *   dentries     the superblock's dentry LRU (list_lru_walk_node(), LRU
 *                lock held): a dentry inside a target block with a zero
 *                count under its d_lock is unused (a directory with cached
 *                children, an open file, a cwd or a mount all hold counts);
 *                we take a reference there, then, outside the walk, unhash
 *                it only if ours is still the only reference and dput() it:
 *                the dcache frees it (RCU-delayed).  Negative dentries go
 *                the same way;
 *   directories  held by their cached children, never on the LRU: reached
 *                through their inodes (s_inodes below) and d_find_alias();
 *                one whose dentry or inode lies in a target block has its
 *                unused children shrunk (shrink_dcache_parent()), then is
 *                dropped like any unused dentry (which lets its inode go).
 *                That takes the directory's whole unused subtree: most of
 *                eviction's cost in dentries is there;
 *   inodes       the superblock's s_inodes list (s_inode_list_lock, then
 *                i_lock, as the VFS nests them): an inode inside a target
 *                block that is not new or being freed is referenced, its
 *                unused aliases pruned (d_prune_aliases()), and, if then
 *                ours is the only reference, it is clean (no dirty state,
 *                no dirty or writeback pages) and holds no page cache
 *                (EVICT_SLAB) or only clean unmapped page cache that
 *                invalidate_mapping_pages() removed (EVICT_ALL), it is
 *                marked I_DONTCACHE (d_mark_dontcache()) and our iput()
 *                evicts it.  Should someone take it meanwhile, their last
 *                iput() evicts it, writing it back first if they dirtied it:
 *                nothing dirty is ever dropped;
 *   buffer heads when a target block holds buffer_head slab pages (any
 *                policy): the xarray of every ext4 inode with pages, and
 *                of the filesystem's block device (metadata buffers), is
 *                walked under RCU; a folio with buffer heads is
 *                trylocked and its ring read, and if a head lies in a
 *                target block and the folio is clean, the filesystem's
 *                release_folio lets the heads go (ext4 asks jbd2; a head
 *                in use, dirty or on a journal list stays): the folio
 *                stays cached.  The CPUs' bh LRUs, whose references keep
 *                heads busy, are emptied first (invalidate_bh_lrus());
 *   page cache   EVICT_ALL only, in the same walk: a folio whose heads
 *                stayed is invalidated; and a node inside a target block
 *                (the leaf or one of its parents, up to
 *                VDF_EVICT_MAX_SPAN pages) has the index range it covers
 *                invalidated, never on a kernel whose page cache's nodes
 *                move (vdf_compat_xa_nodes_move(): the movable-slab
 *                series moved them, and one still in place is busy, not
 *                worth pages).  invalidate_mapping_pages() leaves dirty,
 *                locked, mapped and writeback folios (and buffers in use)
 *                alone.  Shadow entries of reclaimed pages keep their node
 *                like pages do (also in a mapping with no page left): their
 *                nodes are found the same way, and the invalidation clears
 *                them;
 *   extent status  ext4's cache of extent tree lookups, private to ext4
 *                (per inode, under ext4's own lock): when a target block
 *                holds such slab pages, ext4's own shrinker of the
 *                superblock is called, as memory pressure would call it
 *                (vdf_evict_es_sb()).  Not targeted: it drops every entry
 *                that is not delayed allocation; no dentry, inode or page
 *                goes with them.
 *
 * The page cache invalidated is counted by why it went (debugfs
 * pagecache_pages.*): with an evicted inode, for an xarray node, for a
 * buffer head; and the folios whose heads went without them
 * (bh_released_folios).
 *
 * Then rcu_barrier() lets the RCU-delayed frees run and kmem_cache_shrink()
 * returns the emptied slabs of the block's caches to the page allocator.
 * What is in use, dirty or not understood stays, and its block stays
 * unmovable: capture.c simply fails to vacate it.  What stayed is counted
 * per policy and cache, and why target inodes stayed, in debugfs
 * vmdefrag/evict (vdf_evict_show()).
 *
 * Locking: called by capture.c under vdf_capture_mutex, process context,
 * sleeps.  The totals are atomic; the table of what stayed is under
 * vdf_evict_lock (debugfs reads it without the mutex).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bsearch.h>
#include <linux/buffer_head.h>
#include <linux/dcache.h>
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/kallsyms.h>
#include <linux/list_lru.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/pagemap.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/seq_file.h>
#include <linux/shrinker.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/xarray.h>

#include "compat.h"
#include "vmdefrag.h"

/* Most dentries or inodes referenced at once per superblock pass. */
#define VDF_EVICT_BATCH		4096
/* Most walks of a dentry LRU per pass (each takes up to a batch). */
#define VDF_EVICT_WALKS		8
/* Passes over each superblock per eviction. */
#define VDF_EVICT_PASSES	2
/* Widest page-cache range invalidated for one xarray node: 16 MiB. */
#define VDF_EVICT_MAX_SPAN	4096UL

static atomic64_t vdf_evict_dentries = ATOMIC64_INIT(0);
static atomic64_t vdf_evict_inodes = ATOMIC64_INIT(0);
static atomic64_t vdf_evict_pages = ATOMIC64_INIT(0);
static atomic64_t vdf_evict_blocks_done = ATOMIC64_INIT(0);

/* Why page cache was invalidated (debugfs vmdefrag/evict). */
enum vdf_evict_why {
	VDF_WHY_INODE,		/* the whole mapping of an inode to evict */
	VDF_WHY_NODE,		/* the range an xarray node in a target indexes */
	VDF_WHY_BH,		/* a folio whose buffer head lies in a target */
	VDF_WHY_NR,
};
static atomic64_t vdf_evict_pages_why[VDF_WHY_NR];
/* Folios whose buffer heads were let go, the folio kept. */
static atomic64_t vdf_evict_bh_released = ATOMIC64_INIT(0);

/* Why an inode of a target block stayed (debugfs vmdefrag/evict). */
enum vdf_evict_kept {
	VDF_KEPT_NONE,
	VDF_KEPT_BUSY,		/* referenced elsewhere, unlinked, or going */
	VDF_KEPT_DIRTY,		/* dirty inode or pages, or writeback */
	VDF_KEPT_PAGES,		/* page cache left (or the policy keeps it) */
	VDF_KEPT_NR,
};
static atomic64_t vdf_evict_kept[VDF_KEPT_NR];

struct vdf_evict_ctx {
	const unsigned long *idx;	/* target blocks, sorted */
	unsigned int nr;
	u32 policy;			/* enum vmdefrag_evict */
	void **refs;			/* dentries or inodes referenced */
	unsigned int nr_refs;
	bool es_pages;			/* a target holds extent status slabs */
	bool bh_pages;			/* a target holds buffer head slabs */
	unsigned long bh_released;	/* folios whose heads were let go */
	unsigned long es;		/* extent status entries dropped */
	unsigned long pages_why[VDF_WHY_NR];
	struct vdf_evict_result res;
};

static int vdf_evict_cmp(const void *key, const void *elt)
{
	unsigned long a = *(const unsigned long *)key;
	unsigned long b = *(const unsigned long *)elt;

	return a < b ? -1 : a > b;
}

/* Whether kernel address @p lies in one of the target blocks. */
static bool vdf_evict_target(const struct vdf_evict_ctx *ctx, const void *p)
{
	unsigned long idx;

	if (!virt_addr_valid(p))
		return false;
	idx = vdf_pfn_block(PHYS_PFN(__pa(p)));
	return bsearch(&idx, ctx->idx, ctx->nr, sizeof(*ctx->idx), vdf_evict_cmp);
}

/* ---- dentries ---- */

/*
 * list_lru walk callback, LRU lock held: reference the unused dentries of
 * the target blocks.  Never changes the list.
 */
static enum lru_status vdf_evict_dentry_cb(struct list_head *item,
					   struct list_lru_one *list,
					   spinlock_t *lock, void *arg)
{
	struct dentry *dentry = container_of(item, struct dentry, d_lru);
	struct vdf_evict_ctx *ctx = arg;

	if (ctx->nr_refs >= VDF_EVICT_BATCH || !vdf_evict_target(ctx, dentry))
		return LRU_SKIP;
	if (!spin_trylock(&dentry->d_lock))
		return LRU_SKIP;
	if (dentry->d_lockref.count == 0) {
		dget_dlock(dentry);
		ctx->refs[ctx->nr_refs++] = dentry;
	}
	spin_unlock(&dentry->d_lock);
	return LRU_SKIP;
}

/* Drop our reference on @dentry, unhashing it first if ours is the last. */
static void vdf_evict_dentry_put(struct vdf_evict_ctx *ctx, struct dentry *dentry)
{
	bool drop;

	spin_lock(&dentry->d_lock);
	/* ours is the only reference: no user, no child, no mount */
	drop = dentry->d_lockref.count == 1 && !IS_ROOT(dentry) &&
	       !d_unhashed(dentry) && !d_mountpoint(dentry);
	if (drop)
		__d_drop(dentry);
	spin_unlock(&dentry->d_lock);
	dput(dentry);
	if (drop)
		ctx->res.dentries++;
}

static void vdf_evict_dentries_sb(struct super_block *sb, struct vdf_evict_ctx *ctx)
{
	unsigned int i;
	int nid;

	unsigned int walk;
	bool full;

	/* a full batch may have left some: walk again, a few times at most */
	for (walk = 0, full = true; full && walk < VDF_EVICT_WALKS; walk++) {
		ctx->nr_refs = 0;
		for_each_node_state(nid, N_NORMAL_MEMORY) {
			unsigned long nr = ULONG_MAX;

			list_lru_walk_node(&sb->s_dentry_lru, nid,
					   vdf_evict_dentry_cb, ctx, &nr);
		}
		full = ctx->nr_refs >= VDF_EVICT_BATCH;
		for (i = 0; i < ctx->nr_refs; i++) {
			vdf_evict_dentry_put(ctx, ctx->refs[i]);
			cond_resched();
		}
		ctx->nr_refs = 0;
	}
}

/*
 * A directory's dentry is held by its cached children, so it is never on
 * the LRU: reach it through its inode.  If it lies in a target block, or
 * the inode does (@inode_target: the dentry holds the inode), shrink its
 * unused children, then drop it if it is unused itself.
 */
static void vdf_evict_dir(struct vdf_evict_ctx *ctx, struct inode *inode,
			  bool inode_target)
{
	struct dentry *alias = d_find_alias(inode);

	if (!alias)
		return;
	if ((!inode_target && !vdf_evict_target(ctx, alias)) || IS_ROOT(alias)) {
		dput(alias);
		return;
	}
	shrink_dcache_parent(alias);
	vdf_evict_dentry_put(ctx, alias);
}

/* ---- page cache ---- */

/* Whether a buffer head of @folio (locked) lies in a target block. */
static bool vdf_evict_folio_bh(const struct vdf_evict_ctx *ctx, struct folio *folio)
{
	struct buffer_head *head, *bh;

	head = folio_buffers(folio);
	if (!head)
		return false;
	bh = head;
	do {
		if (vdf_evict_target(ctx, bh))
			return true;
		bh = bh->b_this_page;
	} while (bh && bh != head);
	return false;
}

/*
 * Let go of the buffer heads of @folio (locked) if it is clean and they
 * are idle: the folio stays cached.  The filesystem's own release_folio
 * decides (ext4's asks jbd2); with no gfp, nothing waits.
 */
static bool vdf_evict_release_bh(struct vdf_evict_ctx *ctx, struct folio *folio)
{
	if (folio_test_dirty(folio) || folio_test_writeback(folio) ||
	    !filemap_release_folio(folio, 0))
		return false;
	ctx->bh_released++;
	return true;
}

/* Whether the page cache of mappings is walked (vdf_evict_mapping()). */
static bool vdf_evict_walks_mappings(const struct vdf_evict_ctx *ctx)
{
	return ctx->policy == VMDEFRAG_EVICT_ALL || ctx->bh_pages;
}

/* Invalidate [@first, @last] of @mapping if clean; counts what went. */
static void vdf_evict_range(struct vdf_evict_ctx *ctx,
			    struct address_space *mapping,
			    pgoff_t first, pgoff_t last, enum vdf_evict_why why)
{
	unsigned long pages = invalidate_mapping_pages(mapping, first, last);

	ctx->res.pages += pages;
	ctx->pages_why[why] += pages;
}

/*
 * The first index range of @xas's current folio, or of a node above it, to
 * invalidate because the node lies in a target block; false if none.
 * Under rcu_read_lock().
 */
static bool vdf_evict_node_range(const struct vdf_evict_ctx *ctx,
				 const struct xa_state *xas,
				 pgoff_t *ret_first, pgoff_t *ret_last)
{
	struct xa_node *node = xas->xa_node;
	unsigned long span = 0;

	for (; node && !xa_is_internal((void *)node);
	     node = rcu_dereference(node->parent)) {
		unsigned long width;

		if (node->shift >= BITS_PER_LONG - XA_CHUNK_SHIFT)
			break;
		width = XA_CHUNK_SIZE << node->shift;
		if (width > VDF_EVICT_MAX_SPAN)
			break;
		if (vdf_evict_target(ctx, node))
			span = width;
	}
	if (!span)
		return false;
	*ret_first = xas->xa_index & ~(span - 1);
	*ret_last = *ret_first + span - 1;
	return true;
}

/*
 * Let go of the buffer heads in the target blocks (the folios stay when
 * their heads can go); under EVICT_ALL also invalidate the clean page
 * cache of @mapping that the target blocks' xarray nodes index, and the
 * folios whose heads stayed.
 */
static void vdf_evict_mapping(struct vdf_evict_ctx *ctx,
			      struct address_space *mapping)
{
	XA_STATE(xas, &mapping->i_pages, 0);
	/* evict-slab keeps page cache; moving nodes need no eviction */
	bool skip_nodes = ctx->policy != VMDEFRAG_EVICT_ALL ||
			  vdf_compat_xa_nodes_move(&mapping->i_pages);
	pgoff_t first, last;
	struct folio *folio;

	rcu_read_lock();
	xas_for_each(&xas, folio, ULONG_MAX) {
		bool bh = false;

		if (xas_retry(&xas, folio))
			continue;
		/*
		 * A shadow entry (a value) keeps its node like a folio does;
		 * invalidate_mapping_pages() clears shadows in its range.
		 */
		if (skip_nodes ||
		    !vdf_evict_node_range(ctx, &xas, &first, &last)) {
			if (xa_is_value(folio) || !folio_test_private(folio))
				goto next;
			/* buffer heads: read them under the folio lock */
			if (!folio_try_get(folio))
				goto next;
			xas_pause(&xas);
			rcu_read_unlock();
			if (folio_trylock(folio)) {
				if (folio->mapping == mapping &&
				    vdf_evict_folio_bh(ctx, folio))
					bh = !vdf_evict_release_bh(ctx, folio) &&
					     ctx->policy == VMDEFRAG_EVICT_ALL;
				folio_unlock(folio);
			}
			first = folio->index;
			last = first + folio_nr_pages(folio) - 1;
			folio_put(folio);
			if (bh)
				vdf_evict_range(ctx, mapping, first, last, VDF_WHY_BH);
			cond_resched();
			rcu_read_lock();
			continue;
		}
		xas_pause(&xas);
		rcu_read_unlock();
		vdf_evict_range(ctx, mapping, first, last, VDF_WHY_NODE);
		cond_resched();
		rcu_read_lock();
		if (last == ULONG_MAX)
			break;
		xas_set(&xas, last + 1);
		continue;
next:
		if (need_resched()) {
			xas_pause(&xas);
			rcu_read_unlock();
			cond_resched();
			rcu_read_lock();
		}
	}
	rcu_read_unlock();
}

/* ---- inodes ---- */

static bool vdf_evict_inode_clean(struct inode *inode)
{
	struct address_space *mapping = inode->i_mapping;

	return !(inode->i_state & I_DIRTY_ALL) &&
	       !mapping_tagged(mapping, PAGECACHE_TAG_DIRTY) &&
	       !mapping_tagged(mapping, PAGECACHE_TAG_WRITEBACK);
}

/* Whether @inode is used by others than us, unlinked, or going. */
static bool vdf_evict_inode_busy(struct inode *inode)
{
	return atomic_read(&inode->i_count) != 1 || !inode->i_nlink ||
	       (inode->i_state & (I_NEW | I_FREEING | I_WILL_FREE));
}

/* Drop our reference on @inode (of a target block), evicting it if we may. */
static void vdf_evict_inode_put(struct vdf_evict_ctx *ctx, struct inode *inode)
{
	struct address_space *mapping = inode->i_mapping;
	enum vdf_evict_kept kept;

	d_prune_aliases(inode);
	/*
	 * An inode someone else holds stays whatever we do: keep its page
	 * cache too (an open file's pages are worth more than nothing).
	 */
	if (ctx->policy == VMDEFRAG_EVICT_ALL && !mapping_empty(mapping) &&
	    !mapping_mapped(mapping) && vdf_evict_inode_clean(inode) &&
	    !vdf_evict_inode_busy(inode))
		vdf_evict_range(ctx, mapping, 0, ULONG_MAX, VDF_WHY_INODE);

	spin_lock(&inode->i_lock);
	if (vdf_evict_inode_busy(inode))
		kept = VDF_KEPT_BUSY;
	else if (!vdf_evict_inode_clean(inode))
		kept = VDF_KEPT_DIRTY;
	else if (mapping->nrpages)
		kept = VDF_KEPT_PAGES;
	else
		kept = VDF_KEPT_NONE;
	spin_unlock(&inode->i_lock);
	if (kept == VDF_KEPT_NONE) {
		d_mark_dontcache(inode);
		ctx->res.inodes++;
	} else {
		atomic64_inc(&vdf_evict_kept[kept]);
	}
	iput(inode);
}

/*
 * Walk @sb's inodes: reference those of the target blocks (evicted after
 * the walk, as eviction takes them off the list), and under EVICT_ALL
 * invalidate what the target blocks index in the others' page cache.
 */
static void vdf_evict_inodes_flush(struct vdf_evict_ctx *ctx)
{
	unsigned int i;

	for (i = 0; i < ctx->nr_refs; i++) {
		struct inode *inode = ctx->refs[i];

		if (S_ISDIR(inode->i_mode))
			vdf_evict_dir(ctx, inode, true);
		if (vdf_evict_walks_mappings(ctx) && !mapping_empty(inode->i_mapping))
			vdf_evict_mapping(ctx, inode->i_mapping);
		vdf_evict_inode_put(ctx, inode);
		cond_resched();
	}
	ctx->nr_refs = 0;
}

static void vdf_evict_inodes_sb(struct super_block *sb, struct vdf_evict_ctx *ctx)
{
	struct inode *inode, *toput = NULL;

	ctx->nr_refs = 0;
	spin_lock(&sb->s_inode_list_lock);
	list_for_each_entry(inode, &sb->s_inodes, i_sb_list) {
		bool target = vdf_evict_target(ctx, inode);

		if (!target && !S_ISDIR(inode->i_mode) &&
		    (!vdf_evict_walks_mappings(ctx) ||
		     mapping_empty(inode->i_mapping)))
			continue;
		spin_lock(&inode->i_lock);
		if (inode->i_state & (I_NEW | I_FREEING | I_WILL_FREE)) {
			spin_unlock(&inode->i_lock);
			continue;
		}
		atomic_inc(&inode->i_count);	/* __iget(), i_lock held */
		spin_unlock(&inode->i_lock);
		if (target && ctx->nr_refs < VDF_EVICT_BATCH) {
			ctx->refs[ctx->nr_refs++] = inode;
			continue;
		}
		/*
		 * Our reference keeps it on the list while the lock is off;
		 * the batch (never this inode) may go meanwhile.
		 */
		spin_unlock(&sb->s_inode_list_lock);
		if (target) {
			/* batch full: evict it, then this one joins the next */
			vdf_evict_inodes_flush(ctx);
			ctx->refs[ctx->nr_refs++] = inode;
		} else {
			if (S_ISDIR(inode->i_mode))
				vdf_evict_dir(ctx, inode, false);
			if (vdf_evict_walks_mappings(ctx) &&
			    !mapping_empty(inode->i_mapping))
				vdf_evict_mapping(ctx, inode->i_mapping);
			iput(toput);
			toput = inode;
		}
		cond_resched();
		spin_lock(&sb->s_inode_list_lock);
	}
	spin_unlock(&sb->s_inode_list_lock);
	iput(toput);
	vdf_evict_inodes_flush(ctx);
}

/* ---- extent status ---- */

/* Whether @fn is the start of the function named @name (kallsyms). */
static bool vdf_evict_fn_is(unsigned long fn, const char *name)
{
	char buf[KSYM_SYMBOL_LEN];
	size_t len = strlen(name);

	sprint_symbol(buf, fn);
	return !strncmp(buf, name, len) && !strncmp(buf + len, "+0x0/", 5);
}

/* Whether @s (not yet trusted) is ext4's extent status shrinker. */
static bool vdf_evict_es_shrinker_at(struct shrinker *s)
{
	unsigned long fn[2];

	BUILD_BUG_ON(offsetof(struct shrinker, scan_objects) !=
		     offsetof(struct shrinker, count_objects) + sizeof(long));
	if (!virt_addr_valid(s) ||
	    copy_from_kernel_nofault(fn, &s->count_objects, sizeof(fn)))
		return false;
	return fn[0] >= PAGE_OFFSET && fn[1] >= PAGE_OFFSET &&
	       vdf_evict_fn_is(fn[1], "ext4_es_scan") &&
	       vdf_evict_fn_is(fn[0], "ext4_es_count");
}

/*
 * ext4's extent status shrinker of @sb (s_umount held, so it stays
 * registered), or NULL.  Extent status entries belong to ext4's private
 * inode (EXT4_I(inode)->i_es_tree, under its i_es_lock): no module can
 * reach them one by one.  What ext4 offers is its shrinker, registered
 * per superblock, which drops every entry that is not delayed and was not
 * referenced since its last call.  Its struct lives in ext4_sb_info
 * (sb->s_fs_info, private): embedded in it before 6.7, pointed to from it
 * since shrinker_alloc() (compat.h: SHRINKER_ALLOCATED).  It is found by
 * reading the words of ext4_sb_info (ksize() bounds it) and taking the one
 * whose callbacks kallsyms names ext4_es_count and ext4_es_scan.
 */
static struct shrinker *vdf_evict_es_shrinker(struct super_block *sb)
{
	unsigned long *sbi = sb->s_fs_info;
	size_t i, n;

	if (!sbi || !virt_addr_valid(sbi))
		return NULL;
	n = ksize(sbi) / sizeof(*sbi);
	for (i = 0; i < n; i++) {
		unsigned long w = READ_ONCE(sbi[i]);
		struct shrinker *s;

		if (w < PAGE_OFFSET)
			continue;
#ifdef SHRINKER_ALLOCATED
		s = (struct shrinker *)w;
#else
		if (i * sizeof(*sbi) < offsetof(struct shrinker, scan_objects) ||
		    !vdf_evict_fn_is(w, "ext4_es_scan"))
			continue;
		s = (struct shrinker *)((char *)&sbi[i] -
					offsetof(struct shrinker, scan_objects));
#endif
		if (vdf_evict_es_shrinker_at(s))
			return s;
	}
	return NULL;
}

/*
 * Drop @sb's reclaimable extent status entries, as memory pressure would:
 * two calls, as the first only clears the referenced bits of entries used
 * since the last one.  The entries are caches of the extent tree, read
 * again from the inode or its buffers when needed: no page cache, dentry
 * or inode goes with them.
 */
static void vdf_evict_es_sb(struct super_block *sb, struct vdf_evict_ctx *ctx)
{
	struct shrinker *s = vdf_evict_es_shrinker(sb);
	struct shrink_control sc = { .gfp_mask = GFP_KERNEL };
	int pass;

	if (!s)
		return;
	for (pass = 0; pass < 2; pass++) {
		unsigned long freed;

		sc.nr_to_scan = 1UL << 30;
		sc.nr_scanned = sc.nr_to_scan;
		freed = s->scan_objects(s, &sc);
		if (freed != SHRINK_STOP)
			ctx->es += freed;
		cond_resched();
	}
}

/*
 * iterate_supers_type() callback: @sb with s_umount held shared.  Two
 * passes: what the first freed (children, aliases) lets more go in the
 * second.
 */
static void vdf_evict_sb(struct super_block *sb, void *arg)
{
	struct vdf_evict_ctx *ctx = arg;
	int pass;

	for (pass = 0; pass < VDF_EVICT_PASSES; pass++) {
		vdf_evict_dentries_sb(sb, ctx);
		vdf_evict_inodes_sb(sb, ctx);
	}
	if (vdf_evict_walks_mappings(ctx) && sb->s_bdev)
		vdf_evict_mapping(ctx, vdf_compat_bdev_mapping(sb->s_bdev));
	if (ctx->es_pages)
		vdf_evict_es_sb(sb, ctx);
}

/* ---- emptied slabs ---- */

#define VDF_EVICT_CACHES	8

/*
 * Note in @caches (*@nr of them) each cache eviction knows with a slab page
 * in block @idx, to kmem_cache_shrink() once each afterwards.
 */
static void vdf_evict_block_caches(unsigned long idx, unsigned long *caches,
				   unsigned int *nr)
{
	unsigned long pfn = vdf_block_pfn(idx), end = pfn + VDF_BLOCK_PAGES;
	unsigned int i;

	for (; pfn < end; pfn++) {
		struct page *page = pfn_to_online_page(pfn);
		unsigned long cache;

		if (!page || !PageSlab(page) || PageTail(page))
			continue;
		cache = vdf_slabcal_cache_of(page);
		for (i = 0; i < *nr; i++)
			if (caches[i] == cache)
				break;
		if (i < *nr || *nr == VDF_EVICT_CACHES)
			continue;
		if (vdf_slabcal_kind(cache, NULL) == VDF_SLAB_KIND_OTHER)
			continue;
		caches[(*nr)++] = cache;
	}
}

/* ---- what stayed ---- */

/*
 * What eviction left in its target blocks, per policy since load: the
 * blocks evicted, those left with no slab page at all (their slab no
 * longer pins them), and per cache the slab pages left and the blocks
 * they are in.  debugfs vmdefrag/evict prints it; the tests and the bench
 * read it to tell which owners kept which blocks.  Under vdf_evict_lock
 * (the reader runs outside vdf_capture_mutex).
 */
#define VDF_EVICT_LEFT_CACHES	12
#define VDF_EVICT_NR_POLICIES	2	/* EVICT_SLAB, EVICT_ALL */

struct vdf_evict_left {
	u64 blocks;
	u64 slab_free;		/* no slab page left */
	u64 free;		/* every page free: nothing left to vacate */
	unsigned int nr;
	struct {
		char name[32];
		u64 pages;
		u64 blocks;
	} cache[VDF_EVICT_LEFT_CACHES];
};

static DEFINE_SPINLOCK(vdf_evict_lock);
static struct vdf_evict_left vdf_evict_left[VDF_EVICT_NR_POLICIES];
static atomic64_t vdf_evict_es_entries = ATOMIC64_INIT(0);

static struct vdf_evict_left *vdf_evict_left_of(u32 policy)
{
	return &vdf_evict_left[policy == VMDEFRAG_EVICT_ALL];
}

/* Count the slab pages left in block @idx by cache into @left. */
static void vdf_evict_tally_left(unsigned long idx, struct vdf_evict_left *left)
{
	unsigned long pfn = vdf_block_pfn(idx), end = pfn + VDF_BLOCK_PAGES;
	struct {
		unsigned long cache;
		unsigned int pages;
	} seen[VDF_EVICT_LEFT_CACHES];
	unsigned int i, nr = 0;
	struct vdf_block blk;
	char name[32];

	for (; pfn < end; pfn++) {
		struct page *page = pfn_to_online_page(pfn);
		unsigned long cache;

		if (!page || !PageSlab(page))
			continue;
		cache = vdf_slabcal_cache_of(compound_head(page));
		for (i = 0; i < nr; i++)
			if (seen[i].cache == cache)
				break;
		if (i == nr) {
			if (nr == VDF_EVICT_LEFT_CACHES)
				continue;
			seen[nr].cache = cache;
			seen[nr++].pages = 0;
		}
		seen[i].pages++;
	}
	vdf_scan_block(idx, vdf_scan_block_zone(idx), &blk, NULL);
	spin_lock(&vdf_evict_lock);
	left->blocks++;
	if (!nr)
		left->slab_free++;
	if (blk.class == VMDEFRAG_CLASS_FREE)
		left->free++;
	spin_unlock(&vdf_evict_lock);
	for (i = 0; i < nr; i++) {
		unsigned int k;

		/* names are read with copy_from_kernel_nofault(): no lock */
		vdf_slabcal_name(seen[i].cache, name, sizeof(name));
		spin_lock(&vdf_evict_lock);
		for (k = 0; k < left->nr; k++)
			if (!strcmp(left->cache[k].name, name))
				break;
		if (k == left->nr && left->nr < VDF_EVICT_LEFT_CACHES)
			strscpy(left->cache[left->nr++].name, name, sizeof(name));
		if (k < left->nr) {
			left->cache[k].pages += seen[i].pages;
			left->cache[k].blocks++;
		}
		spin_unlock(&vdf_evict_lock);
	}
}

/* debugfs vmdefrag/evict: key=value lines of what eviction left. */
static int vdf_evict_show(struct seq_file *m, void *v)
{
	static const char *const names[VDF_EVICT_NR_POLICIES] = {
		"evict-slab", "evict"
	};
	unsigned int p, k;

	seq_printf(m, "es_entries=%lld\n", atomic64_read(&vdf_evict_es_entries));
	seq_printf(m, "inodes_kept_busy=%lld\ninodes_kept_dirty=%lld\n"
		   "inodes_kept_pages=%lld\n",
		   atomic64_read(&vdf_evict_kept[VDF_KEPT_BUSY]),
		   atomic64_read(&vdf_evict_kept[VDF_KEPT_DIRTY]),
		   atomic64_read(&vdf_evict_kept[VDF_KEPT_PAGES]));
	seq_printf(m, "pagecache_pages.inode=%lld\npagecache_pages.node=%lld\n"
		   "pagecache_pages.buffer_head=%lld\n",
		   atomic64_read(&vdf_evict_pages_why[VDF_WHY_INODE]),
		   atomic64_read(&vdf_evict_pages_why[VDF_WHY_NODE]),
		   atomic64_read(&vdf_evict_pages_why[VDF_WHY_BH]));
	seq_printf(m, "bh_released_folios=%lld\n",
		   atomic64_read(&vdf_evict_bh_released));
	seq_printf(m, "slab_mobility=%d\n", IS_ENABLED(CONFIG_SLAB_MOBILITY));
	spin_lock(&vdf_evict_lock);
	for (p = 0; p < VDF_EVICT_NR_POLICIES; p++) {
		const struct vdf_evict_left *left = &vdf_evict_left[p];

		seq_printf(m, "%s.blocks=%llu\n%s.slab_free_blocks=%llu\n"
			   "%s.free_blocks=%llu\n",
			   names[p], left->blocks, names[p], left->slab_free,
			   names[p], left->free);
		for (k = 0; k < left->nr; k++)
			seq_printf(m, "%s.left_pages.%s=%llu\n%s.left_blocks.%s=%llu\n",
				   names[p], left->cache[k].name, left->cache[k].pages,
				   names[p], left->cache[k].name, left->cache[k].blocks);
	}
	spin_unlock(&vdf_evict_lock);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(vdf_evict);

/* Add debugfs vmdefrag/evict under @dir (main.c, best effort). */
void vdf_evict_debugfs(struct dentry *dir)
{
	debugfs_create_file("evict", 0400, dir, NULL, &vdf_evict_fops);
}

/* Whether one of the blocks @idx (@nr) holds a slab page of @kind. */
static bool vdf_evict_has_kind(const unsigned long *idx, unsigned int nr,
			       enum vdf_slab_kind kind)
{
	unsigned long caches[VDF_EVICT_CACHES];
	unsigned int i, n;

	for (i = 0; i < nr; i++) {
		n = 0;
		vdf_evict_block_caches(idx[i], caches, &n);
		while (n--)
			if (vdf_slabcal_kind(caches[n], NULL) == kind)
				return true;
	}
	return false;
}

/*
 * Free what the owners let go of in the blocks @idx (@nr of them, sorted
 * ascending) under @policy; *@ret_res counts it.  Returns 0, -EINVAL for
 * EVICT_NONE, -ENOMEM, or -ENOENT when no filesystem eviction knows is
 * present (nothing was done).  May sleep; call under vdf_capture_mutex.
 */
int vdf_evict_blocks(const unsigned long *idx, unsigned int nr, u32 policy,
		     struct vdf_evict_result *ret_res)
{
	struct vdf_evict_ctx ctx = { .idx = idx, .nr = nr, .policy = policy };
	unsigned long caches[VDF_EVICT_CACHES];
	struct file_system_type *fs;
	unsigned int i, nr_caches = 0;

	if (policy != VMDEFRAG_EVICT_SLAB && policy != VMDEFRAG_EVICT_ALL)
		return -EINVAL;
	/* never load a filesystem module: only one in use has our caches */
	if (!vdf_slabcal_seen_ext4())
		return -ENOENT;
	fs = get_fs_type("ext4");
	if (!fs)
		return -ENOENT;
	ctx.refs = kvmalloc_array(VDF_EVICT_BATCH, sizeof(*ctx.refs), GFP_KERNEL);
	if (!ctx.refs) {
		module_put(fs->owner);
		return -ENOMEM;
	}
	ctx.es_pages = vdf_evict_has_kind(idx, nr, VDF_SLAB_KIND_INODE_PART);
	ctx.bh_pages = vdf_evict_has_kind(idx, nr, VDF_SLAB_KIND_BH);
	/*
	 * Each CPU keeps its last buffer heads referenced (the bh LRU): such
	 * a head is busy for invalidation.  Let go of them first, as umount
	 * and block device invalidation do.
	 */
	if (ctx.bh_pages)
		invalidate_bh_lrus();
	iterate_supers_type(fs, vdf_evict_sb, &ctx);
	module_put(fs->owner);
	kvfree(ctx.refs);

	/* dentries, inodes and xarray nodes are freed after a grace period */
	rcu_barrier();
	for (i = 0; i < nr; i++) {
		vdf_evict_block_caches(idx[i], caches, &nr_caches);
		cond_resched();
	}
	/* emptied slabs may wait on the partial lists: free them */
	for (i = 0; i < nr_caches; i++)
		kmem_cache_shrink((struct kmem_cache *)caches[i]);
	for (i = 0; i < nr; i++) {
		vdf_evict_tally_left(idx[i], vdf_evict_left_of(policy));
		cond_resched();
	}

	atomic64_add(ctx.res.dentries, &vdf_evict_dentries);
	atomic64_add(ctx.res.inodes, &vdf_evict_inodes);
	atomic64_add(ctx.res.pages, &vdf_evict_pages);
	atomic64_add(ctx.es, &vdf_evict_es_entries);
	for (i = 0; i < VDF_WHY_NR; i++)
		atomic64_add(ctx.pages_why[i], &vdf_evict_pages_why[i]);
	atomic64_add(ctx.bh_released, &vdf_evict_bh_released);
	*ret_res = ctx.res;
	return 0;
}

/* A block was emptied after an eviction. */
void vdf_evict_note_block(void)
{
	atomic64_inc(&vdf_evict_blocks_done);
}

void vdf_evict_totals(u64 *ret_dentries, u64 *ret_inodes, u64 *ret_pages,
		      u64 *ret_blocks)
{
	*ret_dentries = atomic64_read(&vdf_evict_dentries);
	*ret_inodes = atomic64_read(&vdf_evict_inodes);
	*ret_pages = atomic64_read(&vdf_evict_pages);
	*ret_blocks = atomic64_read(&vdf_evict_blocks_done);
}
