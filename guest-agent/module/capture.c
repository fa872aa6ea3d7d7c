// SPDX-License-Identifier: GPL-2.0
/*
 * vmdefrag capture: empty 2 MiB blocks and hold or compact them.
 *
 * A CAPTURE request runs in three steps:
 *
 *   preferred  the FREE and MOVABLE blocks of the request's preferred
 *              ranges (the host passes the ranges its backing really
 *              holds, in address order), ranked and vacated as below,
 *              all of them before any other block;
 *   rank       one scan of all memory collects the FREE and MOVABLE blocks
 *              and sorts them by vacate cost, cheapest first (wholly free
 *              blocks cost nothing and come first, so they are taken before
 *              migration can scatter pages into them); the scan stops
 *              early once it holds as many blocks that cost nothing as
 *              the request needs;
 *   vacate     in runs: the cheapest untried candidate and its untried
 *              neighbours that are among the cheapest blocks the request
 *              still needs (up to VDF_RUN_MAX_BLOCKS); each block is
 *              re-classified (the ranking is old by now), the run cut to
 *              the safety floor (pressure.c), then emptied with one
 *              alloc_contig_range(), which isolates the whole run, drains
 *              the LRU and per-cpu lists of every CPU once, migrates the
 *              in-use pages away and hands us every page, or fails and
 *              leaves the blocks exactly as the guest had them.  A failed
 *              run is split in halves, down to the one block that fails.
 *
 * What vacating costs is counted in the work counters (main.c, debugfs):
 * calls, failures, runs split, blocks tried, the pages the guest migrated
 * during the calls (its PGMIGRATE_SUCCESS), time.  On kernels with
 * init_on_alloc=1 (Debian's default) alloc_contig_range() clears every page
 * it takes, 512 per block, although the host discards them: that clearing,
 * not the migrations, is most of a capture's CPU time under TCG.
 *
 * An emptied block then goes one of two ways:
 *
 *   capture    the block is recorded in vdf_capture_xa and the module owns
 *              its pages: the guest allocator cannot hand them out until
 *              they are released; the host may reclaim their backing;
 *   compact    the block is held by the request only (listed in its reply,
 *              not in vdf_capture_xa) until the request ends, and then
 *              freed with free_contig_range(); its pages merge into one
 *              order-9 buddy that free page reporting can pass to the host.
 *              Holding to the end matters: a block freed at once lands on
 *              the per-cpu free lists, the first place the next block's
 *              migration targets are taken from, and would be scattered
 *              again.  Held blocks count against the floor like captured
 *              ones.  See vdf_capture_compact_free() for the final drain.
 *
 * With an eviction policy (VMDEFRAG_A_EVICT, not NONE), a request the
 * free and movable blocks could not satisfy goes on with a fourth step:
 *
 *   evict      the rank step also collects the blocks pinned only by
 *              reclaimable slab (cause SLAB_RECLAIM), ranked with a cost
 *              of VDF_EVICT_PAGE_COST per slab page on top of their movable
 *              pages; when the first of them comes up, evict.c frees what
 *              the owners of the objects of the next VDF_EVICT_ROUND of
 *              them let go of, in one pass over the filesystems, and each
 *              is then tried as above when its turn comes.  Under STRICT
 *              the preferred SLAB_RECLAIM blocks get the same treatment
 *              after the preferred step.  A block whose objects are in use
 *              simply fails to vacate.
 *
 * The request stops when the byte target is reached or, short of it, for
 * the reason it reports (VMDEFRAG_A_ERRNO): -ENOSPC the floor was reached,
 * -ETIMEDOUT the time budget is spent, -EBUSY no candidate is left (the
 * rest is unmovable, already whole, or failed),
 * -ENOMEM migration kept failing for memory, -EINTR a fatal signal, -E2BIG
 * the per-request block limit (VDF_CAPTURE_MAX_BLOCKS, which bounds the
 * reply) was reached and the caller may ask again.
 *
 * Retry policy lives in one place, vdf_capture_policy(), for single blocks
 * (a failed run of several is split first): -EBUSY and -ENOMEM
 * back off exponentially (1 to 64 ms) and move to the next block; a run of
 * -ENOMEM ends the request; -EINTR ends it at once.  Every failure is noted
 * against the block in vdf_capture_failed (tries and time); a block that
 * failed VDF_FAIL_TRIES times is skipped for VDF_FAIL_HOLD_SEC seconds.
 *
 * Release hands blocks back with free_contig_range(): by request (ranges or
 * bytes), under pressure (pressure.c: shrinker and OOM notifier), at unload.
 *
 * Host handshake: a captured block is LOCAL (captured for a local
 * requester), PENDING (captured or listed for the host, which may be
 * punching its backing right now) or HOST (acknowledged by the host).  The
 * state and the netlink port of the requester that made it PENDING are the
 * block's xarray value.  Transitions (uapi header, "Host handshake"):
 * CAPTURE+HOST and LIST+HOST make blocks PENDING, ACK and the requester's
 * socket closing make them HOST.  The shrinker and the OOM notifier never
 * take a PENDING block; RELEASE and unload take any.
 *
 * Locking:
 *   vdf_capture_mutex    serializes requests (capture, release, unload)
 *                        and protects vdf_capture_failed and
 *                        vdf_capture_unloading.  Taken by process context
 *                        only, never by the shrinker or the OOM notifier.
 *   vdf_capture_xa       its own spinlock.  Ownership rule: whoever removes
 *                        an entry (xa_erase(), or xa_cmpxchg() to NULL)
 *                        and gets it back owns the block and frees it,
 *                        exactly once.  That is what lets the shrinker and
 *                        the OOM notifier release blocks without the mutex
 *                        while a request runs.  Entries are inserted only
 *                        under the mutex; their state changes only by
 *                        xa_cmpxchg(), so a state seen is the state acted on.
 *   vdf_capture_nr       entries in vdf_capture_xa (atomic, for counts).
 *   vdf_capture_npending PENDING entries (atomic, for counts).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/delay.h>
#include <linux/gfp.h>
#include <linux/ktime.h>
#include <linux/lockdep.h>
#include <linux/minmax.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/sort.h>
#include <linux/xarray.h>

#include "compat.h"
#include "vmdefrag.h"

#define VDF_CAPTURE_MAX_BLOCKS		2048	/* per request: 4 GiB */
#define VDF_CAPTURE_DEFAULT_BUDGET_MS	30000
#define VDF_FAIL_TRIES			3
#define VDF_FAIL_HOLD_SEC		30
#define VDF_BACKOFF_MAX_MS		64
#define VDF_NOMEM_STREAK		4
#define VDF_CAPTURE_GFP			(GFP_KERNEL | __GFP_NOWARN)
#define VDF_EVICT_PAGE_COST		16	/* see vdf_capture_slab_cost() */
#define VDF_RUN_MAX_BLOCKS		64	/* per alloc_contig_range(): 128 MiB */

static DEFINE_MUTEX(vdf_capture_mutex);
static DEFINE_XARRAY(vdf_capture_xa);
static DEFINE_XARRAY(vdf_capture_failed);	/* under vdf_capture_mutex */
static bool vdf_capture_unloading;		/* under vdf_capture_mutex */
static atomic_long_t vdf_capture_nr = ATOMIC_LONG_INIT(0);
static atomic_long_t vdf_capture_npending = ATOMIC_LONG_INIT(0);

/* Sub-states of a captured block; the xarray value is owner << 2 | state. */
enum vdf_capture_state {
	VDF_CAPTURE_LOCAL,
	VDF_CAPTURE_PENDING,
	VDF_CAPTURE_HOST,
};

static void *vdf_capture_entry(enum vdf_capture_state state, u32 owner)
{
	return xa_mk_value(((unsigned long)owner << 2) | state);
}

static enum vdf_capture_state vdf_capture_state_of(void *entry)
{
	return xa_to_value(entry) & 3;
}

static u32 vdf_capture_owner_of(void *entry)
{
	return xa_to_value(entry) >> 2;
}

struct vdf_cand {
	unsigned long idx;
	unsigned long cost;
	bool slab;		/* SLAB_RECLAIM: evict before trying */
	bool evicted;		/* its round of eviction ran */
	bool tried;		/* taken into a run (or tried alone) */
};

/* One CAPTURE request in progress. */
struct vdf_capture_ctx {
	const struct vdf_capture_req *req;
	struct vdf_blocks *done;
	unsigned long target;		/* blocks wanted */
	u64 floor_bytes;
	ktime_t deadline;
	unsigned int backoff_ms;
	unsigned int nomem_streak;
	int stop;			/* why the request stopped, or 0 */
	struct vdf_cand *cand;		/* sorted by cost once collected */
	unsigned long nr_cand;
	unsigned long cap_cand;		/* blocks in the RAM span */
	unsigned long base;		/* block index of the span's first */
	unsigned int *cand_at;		/* per block: cand position + 1 */
	unsigned long nr_zero;		/* candidates that cost nothing */
	bool may_cut;			/* the rank scan may stop early */
	bool cut;			/* it did */
};

enum vdf_capture_action {
	VDF_ACT_NEXT,
	VDF_ACT_STOP,
};

/* ---- block lists ---- */

/* Make room for @more entries; 0 or -ENOMEM (the list is then unchanged). */
static int vdf_blocks_reserve(struct vdf_blocks *b, unsigned int more)
{
	unsigned int cap;
	unsigned long *idx;

	if (b->nr + more <= b->cap)
		return 0;
	cap = max3(b->cap * 2, b->nr + more, 16U);
	idx = kvmalloc_array(cap, sizeof(*idx), GFP_KERNEL);
	if (!idx)
		return -ENOMEM;
	if (b->nr)
		memcpy(idx, b->idx, b->nr * sizeof(*idx));
	kvfree(b->idx);
	b->idx = idx;
	b->cap = cap;
	return 0;
}

int vdf_blocks_add(struct vdf_blocks *b, unsigned long idx)
{
	int ret = vdf_blocks_reserve(b, 1);

	if (ret)
		return ret;
	b->idx[b->nr++] = idx;
	return 0;
}

void vdf_blocks_free(struct vdf_blocks *b)
{
	kvfree(b->idx);
	b->idx = NULL;
	b->nr = 0;
	b->cap = 0;
}

/* Blocks needed to cover @bytes, rounded up, without overflowing. */
static u64 vdf_capture_bytes_to_blocks(u64 bytes)
{
	return (bytes >> VMDEFRAG_BLOCK_SHIFT) + !!(bytes & (VMDEFRAG_BLOCK_SIZE - 1));
}

/* ---- the captured set ---- */

bool vdf_capture_held(unsigned long idx)
{
	return xa_load(&vdf_capture_xa, idx);
}

unsigned long vdf_capture_count(void)
{
	return atomic_long_read(&vdf_capture_nr);
}

unsigned long vdf_capture_pending(void)
{
	return atomic_long_read(&vdf_capture_npending);
}

/* The first captured block at or after *@idx, stored in *@idx; false at end. */
bool vdf_capture_next(unsigned long *idx)
{
	return xa_find(&vdf_capture_xa, idx, ULONG_MAX, XA_PRESENT);
}

/*
 * Release block @idx if it is captured: take it out of the set (which makes
 * us its only owner) and free its pages.  Returns true if it was released.
 * Any context that may free pages; no lock needed.
 */
static bool vdf_capture_put(unsigned long idx)
{
	void *old = xa_erase(&vdf_capture_xa, idx);

	if (!old)
		return false;
	if (vdf_capture_state_of(old) == VDF_CAPTURE_PENDING)
		atomic_long_dec(&vdf_capture_npending);
	atomic_long_dec(&vdf_capture_nr);
	free_contig_range(vdf_block_pfn(idx), VDF_BLOCK_PAGES);
	return true;
}

/*
 * Release block @idx only if it is captured and not PENDING (the host may
 * be reclaiming a PENDING block: it is not ours to give back under
 * pressure).  Same ownership rule as vdf_capture_put(); no lock needed.
 */
static bool vdf_capture_put_unpinned(unsigned long idx)
{
	void *old = xa_load(&vdf_capture_xa, idx);

	if (!old || vdf_capture_state_of(old) == VDF_CAPTURE_PENDING)
		return false;
	if (xa_cmpxchg(&vdf_capture_xa, idx, old, NULL, 0) != old)
		return false;
	atomic_long_dec(&vdf_capture_nr);
	free_contig_range(vdf_block_pfn(idx), VDF_BLOCK_PAGES);
	return true;
}

/*
 * Move block @idx to @state (owned by @owner) if its current state is in
 * @from (a mask of BIT(state)).  Returns true if it did.  Any context.
 */
static bool vdf_capture_move(unsigned long idx, unsigned int from,
			     enum vdf_capture_state state, u32 owner)
{
	void *old = xa_load(&vdf_capture_xa, idx);
	void *new = vdf_capture_entry(state, owner);
	void *cur;

	while (old && (BIT(vdf_capture_state_of(old)) & from)) {
		if (old == new)
			return true;
		/* replacing a value entry allocates nothing */
		cur = xa_cmpxchg(&vdf_capture_xa, idx, old, new, GFP_NOWAIT);
		if (cur == old) {
			if (vdf_capture_state_of(old) == VDF_CAPTURE_PENDING)
				atomic_long_dec(&vdf_capture_npending);
			if (state == VDF_CAPTURE_PENDING)
				atomic_long_inc(&vdf_capture_npending);
			return true;
		}
		if (xa_is_err(cur))
			return false;
		old = cur;
	}
	return false;
}

/* LIST+HOST: make block @idx PENDING for @owner; false if not captured. */
bool vdf_capture_mark_pending(unsigned long idx, u32 owner)
{
	return vdf_capture_move(idx, BIT(VDF_CAPTURE_LOCAL) | BIT(VDF_CAPTURE_PENDING) |
				BIT(VDF_CAPTURE_HOST), VDF_CAPTURE_PENDING, owner);
}

/*
 * ACK: move the PENDING blocks inside the ranges (all of them if @r is
 * NULL) to HOST; *@ret_blocks counts them.  Returns 0 or -EINTR.
 */
int vdf_capture_ack(const struct vdf_range *r, unsigned int nr,
		    unsigned long *ret_blocks)
{
	unsigned long idx, first, last, moved = 0;
	unsigned int i;
	void *entry;
	int ret;

	ret = mutex_lock_killable(&vdf_capture_mutex);
	if (ret)
		return ret;
	for (i = 0; i < (r ? nr : 1); i++) {
		first = r ? vdf_pfn_block(PHYS_PFN(r[i].addr)) : 0;
		last = r ? first + (r[i].len >> VMDEFRAG_BLOCK_SHIFT) - 1 : ULONG_MAX;
		xa_for_each_range(&vdf_capture_xa, idx, entry, first, last)
			if (vdf_capture_move(idx, BIT(VDF_CAPTURE_PENDING),
					     VDF_CAPTURE_HOST, 0))
				moved++;
		cond_resched();
	}
	mutex_unlock(&vdf_capture_mutex);
	*ret_blocks = moved;
	return 0;
}

/*
 * The netlink socket @owner closed: no reclaim it started can still be in
 * flight, so its PENDING blocks become HOST.  Process context.
 */
void vdf_capture_owner_gone(u32 owner)
{
	unsigned long idx;
	void *entry;

	if (!atomic_long_read(&vdf_capture_npending))
		return;
	xa_for_each(&vdf_capture_xa, idx, entry)
		if (vdf_capture_state_of(entry) == VDF_CAPTURE_PENDING &&
		    vdf_capture_owner_of(entry) == owner)
			vdf_capture_move(idx, BIT(VDF_CAPTURE_PENDING), VDF_CAPTURE_HOST, 0);
}

/* ---- failure memory, under vdf_capture_mutex ---- */

static bool vdf_capture_failed_recently(unsigned long idx)
{
	void *entry;
	unsigned long val;

	lockdep_assert_held(&vdf_capture_mutex);
	entry = xa_load(&vdf_capture_failed, idx);
	if (!entry)
		return false;
	val = xa_to_value(entry);
	if (ktime_get_seconds() - (time64_t)(val >> 4) >= VDF_FAIL_HOLD_SEC) {
		xa_erase(&vdf_capture_failed, idx);
		return false;
	}
	return (val & 0xf) >= VDF_FAIL_TRIES;
}

static void vdf_capture_note_failure(unsigned long idx)
{
	void *entry;
	unsigned long tries;

	lockdep_assert_held(&vdf_capture_mutex);
	entry = xa_load(&vdf_capture_failed, idx);
	tries = entry ? (xa_to_value(entry) & 0xf) : 0;
	tries = min(tries + 1, 15UL);
	/* best effort: losing a record only means an extra retry */
	xa_store(&vdf_capture_failed, idx,
		 xa_mk_value(((unsigned long)ktime_get_seconds() << 4) | tries),
		 GFP_KERNEL | __GFP_NOWARN);
}

/* ---- vacate ---- */

static void vdf_capture_backoff(struct vdf_capture_ctx *ctx)
{
	ctx->backoff_ms = clamp(ctx->backoff_ms * 2, 1U, (unsigned int)VDF_BACKOFF_MAX_MS);
	msleep_interruptible(ctx->backoff_ms);
}

/*
 * The one place where an alloc_contig_range() result for one block
 * becomes a decision: go on with the next block, or stop the request
 * (ctx->stop says why).  Under vdf_capture_mutex (it updates the failure
 * memory).  A failed run of several blocks is split (vdf_capture_vacate())
 * before it comes here.
 */
static enum vdf_capture_action vdf_capture_policy(struct vdf_capture_ctx *ctx,
						  unsigned long idx, int err)
{
	lockdep_assert_held(&vdf_capture_mutex);
	switch (err) {
	case 0:
		ctx->backoff_ms = 0;
		ctx->nomem_streak = 0;
		xa_erase(&vdf_capture_failed, idx);
		return VDF_ACT_NEXT;
	case -EBUSY:
		vdf_stat_add(VDF_STAT_BLOCKS_FAILED_BUSY, 1);
		vdf_capture_note_failure(idx);
		vdf_capture_backoff(ctx);
		return VDF_ACT_NEXT;
	case -ENOMEM:
		vdf_stat_add(VDF_STAT_BLOCKS_FAILED_NOMEM, 1);
		vdf_capture_note_failure(idx);
		if (++ctx->nomem_streak >= VDF_NOMEM_STREAK) {
			ctx->stop = -ENOMEM;
			return VDF_ACT_STOP;
		}
		vdf_capture_backoff(ctx);
		return VDF_ACT_NEXT;
	case -EINTR:
		vdf_stat_add(VDF_STAT_BLOCKS_FAILED_OTHER, 1);
		ctx->stop = -EINTR;
		return VDF_ACT_STOP;
	default:
		vdf_stat_add(VDF_STAT_BLOCKS_FAILED_OTHER, 1);
		vdf_capture_note_failure(idx);
		return VDF_ACT_NEXT;
	}
}

/* Why the request must stop before trying another block, or 0. */
static int vdf_capture_check_stop(struct vdf_capture_ctx *ctx)
{
	long room;

	/* compact mode holds its blocks until the end: same floor */
	if (fatal_signal_pending(current))
		return -EINTR;
	if (ktime_after(ktime_get(), ctx->deadline))
		return -ETIMEDOUT;
	if (ctx->done->nr >= VDF_CAPTURE_MAX_BLOCKS)
		return -E2BIG;
	room = vdf_pressure_headroom(ctx->floor_bytes);
	if (room < (long)VDF_BLOCK_PAGES)
		return -ENOSPC;
	return 0;
}

/*
 * Pages migrated in the guest so far (PGMIGRATE_SUCCESS, all CPUs), or 0
 * without the event counters.  Under vdf_capture_mutex (static buffer).
 */
static unsigned long vdf_capture_vm_migrated(void)
{
#if defined(CONFIG_VM_EVENT_COUNTERS) && defined(CONFIG_MIGRATION)
	static unsigned long ev[NR_VM_EVENT_ITEMS];

	lockdep_assert_held(&vdf_capture_mutex);
	all_vm_events(ev);
	return ev[PGMIGRATE_SUCCESS];
#else
	return 0;
#endif
}

/*
 * alloc_contig_range() over @n blocks from @first, counted: the time, the
 * call, the pages it migrated.  Under vdf_capture_mutex.
 */
static int vdf_capture_contig(unsigned long first, unsigned long n)
{
	unsigned long pfn = vdf_block_pfn(first), moved = vdf_capture_vm_migrated();
	ktime_t t0 = ktime_get();
	u64 ns;
	int err;

	err = vdf_compat_alloc_contig(pfn, pfn + n * VDF_BLOCK_PAGES, VDF_CAPTURE_GFP);
	ns = ktime_to_ns(ktime_sub(ktime_get(), t0));
	vdf_stat_add(VDF_STAT_VACATE_NS, ns);
	vdf_work_add(VDF_WORK_CONTIG_CALLS, 1);
	vdf_work_add(VDF_WORK_BLOCKS_TRIED, n);
	vdf_work_add(VDF_WORK_PAGES_MOVED, vdf_capture_vm_migrated() - moved);
	if (err) {
		vdf_work_add(VDF_WORK_CONTIG_FAILED, 1);
		vdf_work_add(VDF_WORK_FAILED_NS, ns);
	}
	return err;
}

/* The candidate for block @idx, or NULL. */
static struct vdf_cand *vdf_capture_cand_of(struct vdf_capture_ctx *ctx,
					    unsigned long idx)
{
	unsigned int pos;

	if (idx < ctx->base || idx - ctx->base >= ctx->cap_cand)
		return NULL;
	pos = ctx->cand_at[idx - ctx->base];
	return pos ? &ctx->cand[pos - 1] : NULL;
}

/*
 * Whether block @idx of @zone may still be vacated: not captured, not
 * failing lately, and FREE or MOVABLE now (the ranking is old by now), or,
 * for a slab candidate on a kernel whose alloc_contig_range() vacates the
 * slabs of mobile caches itself, still pinned by reclaimable slab only:
 * the call fails at once on a slab it cannot move, and empties the others
 * with the block isolated, where the objects it moves cannot come back.
 * Refreshes its candidate's cost.  Under vdf_capture_mutex.
 */
static bool vdf_capture_fresh(struct vdf_capture_ctx *ctx, unsigned long idx,
			      struct zone *zone)
{
	struct vdf_cand *c = vdf_capture_cand_of(ctx, idx);
	struct vdf_block blk;

	if (vdf_capture_held(idx) || vdf_capture_failed_recently(idx))
		return false;
	vdf_scan_block(idx, zone, &blk, NULL);
	if (c && c->slab && vdf_compat_contig_vacates_slab() &&
	    blk.class == VMDEFRAG_CLASS_UNMOVABLE &&
	    blk.cause == VMDEFRAG_CAUSE_SLAB_RECLAIM)
		return true;
	if (blk.class != VMDEFRAG_CLASS_FREE && blk.class != VMDEFRAG_CLASS_MOVABLE)
		return false;
	if (ctx->req->mode == VMDEFRAG_MODE_COMPACT && blk.whole_buddy)
		return false;
	if (c)
		c->cost = blk.cost;
	return true;
}

/* Capture or list block @idx, just emptied; 0 or the errno that stops. */
static int vdf_capture_keep(struct vdf_capture_ctx *ctx, unsigned long idx)
{
	struct vdf_cand *c = vdf_capture_cand_of(ctx, idx);
	int err;

	vdf_stat_add(VDF_STAT_BLOCKS_VACATED, 1);
	vdf_stat_add(VDF_STAT_PAGES_MIGRATED, c ? c->cost : 0);
	if (ctx->req->mode != VMDEFRAG_MODE_COMPACT) {
		err = xa_insert(&vdf_capture_xa, idx,
				ctx->req->host ?
				vdf_capture_entry(VDF_CAPTURE_PENDING, ctx->req->portid) :
				vdf_capture_entry(VDF_CAPTURE_LOCAL, 0), GFP_KERNEL);
		if (err) {
			/* never keep a block we cannot account for */
			WARN_ON_ONCE(err == -EBUSY);
			return err;
		}
		atomic_long_inc(&vdf_capture_nr);
		if (ctx->req->host)
			atomic_long_inc(&vdf_capture_npending);
	}
	ctx->done->idx[ctx->done->nr++] = idx;
	vdf_capture_policy(ctx, idx, 0);
	return 0;
}

/*
 * Empty the @n adjacent blocks from @first (one zone, each checked by
 * vdf_capture_fresh()) with one alloc_contig_range() call, and capture or
 * compact them.  One call drains the LRU and per-cpu lists of every CPU
 * once and isolates all the blocks before migrating anything, so no page
 * of one block is migrated into another of the run.  The run is cut to
 * what the request still wants and the floor allows.  A failed run is
 * split in halves, each tried on its own, down to the block that fails.
 * Returns VDF_ACT_STOP when the request must end (ctx->stop set, or the
 * target reached).  Under vdf_capture_mutex.
 */
static enum vdf_capture_action vdf_capture_vacate(struct vdf_capture_ctx *ctx,
						  unsigned long first, unsigned long n)
{
	unsigned long i, half;
	int err;

	ctx->stop = vdf_capture_check_stop(ctx);
	if (ctx->stop)
		return VDF_ACT_STOP;
	n = min(n, ctx->target - ctx->done->nr);
	n = min(n, VDF_CAPTURE_MAX_BLOCKS - (unsigned long)ctx->done->nr);
	n = min(n, (unsigned long)vdf_pressure_headroom(ctx->floor_bytes) / VDF_BLOCK_PAGES);
	if (!n)
		return VDF_ACT_NEXT;
	/* room in the reply list first, so a captured block is always listed */
	if (vdf_blocks_reserve(ctx->done, n)) {
		ctx->stop = -ENOMEM;
		return VDF_ACT_STOP;
	}

	err = vdf_capture_contig(first, n);
	if (err && n > 1 && err != -EINTR) {
		vdf_work_add(VDF_WORK_RUNS_SPLIT, 1);
		half = n / 2;
		if (vdf_capture_vacate(ctx, first, half) == VDF_ACT_STOP)
			return VDF_ACT_STOP;
		return vdf_capture_vacate(ctx, first + half, n - half);
	}
	if (err)
		return vdf_capture_policy(ctx, first, err);

	for (i = 0; i < n; i++) {
		err = vdf_capture_keep(ctx, first + i);
		if (err) {
			for (; i < n; i++)
				free_contig_range(vdf_block_pfn(first + i), VDF_BLOCK_PAGES);
			ctx->stop = err;
			return VDF_ACT_STOP;
		}
	}
	if (ctx->done->nr >= ctx->target)
		return VDF_ACT_STOP;
	return VDF_ACT_NEXT;
}

/*
 * Vacate the blocks of [@first, @first + @n) of @zone that are still
 * fresh, each maximal run of them in one call.
 */
static enum vdf_capture_action vdf_capture_span(struct vdf_capture_ctx *ctx,
						unsigned long first, unsigned long n,
						struct zone *zone)
{
	unsigned long i, start = first;

	for (i = first; i <= first + n; i++) {
		if (i < first + n && vdf_capture_fresh(ctx, i, zone))
			continue;
		if (i > start && vdf_capture_vacate(ctx, start, i - start) == VDF_ACT_STOP)
			return VDF_ACT_STOP;
		start = i + 1;
	}
	return VDF_ACT_NEXT;
}

/* Forget the candidates (before collecting anew). */
static void vdf_capture_reset_cands(struct vdf_capture_ctx *ctx)
{
	ctx->nr_cand = 0;
	ctx->nr_zero = 0;
	ctx->cut = false;
	memset(ctx->cand_at, 0, ctx->cap_cand * sizeof(*ctx->cand_at));
}

/* Add block @idx as a candidate unless it is one already or out of span. */
static void vdf_capture_add_cand(struct vdf_capture_ctx *ctx, unsigned long idx,
				 unsigned long cost, bool slab)
{
	struct vdf_cand *c;

	if (idx < ctx->base || idx - ctx->base >= ctx->cap_cand ||
	    ctx->cand_at[idx - ctx->base])
		return;
	if (WARN_ON_ONCE(ctx->nr_cand >= ctx->cap_cand))
		return;
	c = &ctx->cand[ctx->nr_cand++];
	c->idx = idx;
	c->cost = cost;
	c->slab = slab;
	c->evicted = false;
	c->tried = false;
	ctx->cand_at[idx - ctx->base] = ctx->nr_cand;
	if (!slab && !cost)
		ctx->nr_zero++;
}

/*
 * The rank of a SLAB_RECLAIM block: its movable pages, plus its slab pages
 * at VDF_EVICT_PAGE_COST migrations each (a slab page holds up to a few
 * dozen objects whose owners lose their caches, and it may take the page
 * cache an xarray node indexes).
 */
static unsigned long vdf_capture_slab_cost(const struct vdf_block *blk)
{
	return blk->cost + (unsigned long)blk->slab_pages * VDF_EVICT_PAGE_COST;
}

static int vdf_capture_collect(const struct vdf_block *blk, void *arg)
{
	struct vdf_capture_ctx *ctx = arg;

	if (blk->class == VMDEFRAG_CLASS_UNMOVABLE &&
	    blk->cause == VMDEFRAG_CAUSE_SLAB_RECLAIM &&
	    ctx->req->evict != VMDEFRAG_EVICT_NONE) {
		vdf_capture_add_cand(ctx, blk->idx, vdf_capture_slab_cost(blk), true);
		return 0;
	}
	if (blk->class != VMDEFRAG_CLASS_FREE && blk->class != VMDEFRAG_CLASS_MOVABLE)
		return 0;
	if (ctx->req->mode == VMDEFRAG_MODE_COMPACT && blk->whole_buddy)
		return 0;
	vdf_capture_add_cand(ctx, blk->idx, blk->cost, false);
	/* nothing is cheaper than enough blocks that cost nothing: stop */
	if (ctx->may_cut && ctx->nr_zero >= ctx->target - ctx->done->nr) {
		ctx->cut = true;
		return 1;
	}
	return 0;
}

static int vdf_capture_cand_cmp(const void *a, const void *b)
{
	const struct vdf_cand *x = a, *y = b;

	if (x->cost != y->cost)
		return x->cost < y->cost ? -1 : 1;
	if (x->idx != y->idx)
		return x->idx < y->idx ? -1 : 1;
	return 0;
}

#define VDF_EVICT_ROUND		64

/* Whether block @idx lies in one of the request's preferred ranges. */
static bool vdf_capture_preferred_block(const struct vdf_capture_req *req,
					unsigned long idx)
{
	unsigned int i;

	for (i = 0; i < req->nr_pref; i++) {
		unsigned long first = vdf_pfn_block(PHYS_PFN(req->pref[i].addr));

		if (idx >= first &&
		    idx < first + (req->pref[i].len >> VMDEFRAG_BLOCK_SHIFT))
			return true;
	}
	return false;
}

static int vdf_capture_cmp_ulong(const void *a, const void *b)
{
	unsigned long x = *(const unsigned long *)a, y = *(const unsigned long *)b;

	return x < y ? -1 : x > y;
}

/*
 * On a guest kernel with the movable-slab series, have the kernel empty
 * the slab pages of @idx[0..@n) first (objects moved, or let go of by
 * their caches' own rules); returns how many blocks still hold slab,
 * moved to the front of @idx, for eviction.  On other kernels all @n.
 * Sets ctx->stop on -EINTR and -ENOMEM.
 */
static unsigned int vdf_capture_slab_vacate(struct vdf_capture_ctx *ctx,
					    unsigned long *idx, unsigned int n)
{
	unsigned int i, left = 0;
	int err;

	for (i = 0; i < n; i++) {
		err = vdf_compat_slab_vacate(vdf_block_pfn(idx[i]),
					     vdf_block_pfn(idx[i]) + VDF_BLOCK_PAGES);
		if (err == -EINTR || err == -ENOMEM) {
			ctx->stop = err;
			return 0;
		}
		if (err)
			idx[left++] = idx[i];
	}
	return left;
}

/*
 * Evict the objects of up to VDF_EVICT_ROUND not yet evicted SLAB_RECLAIM
 * candidates from @first on, marking them evicted.  Returns 0, or the
 * errno that must stop the request (ctx->stop set).
 */
static int vdf_capture_evict_round(struct vdf_capture_ctx *ctx, unsigned long first)
{
	unsigned long idx[VDF_EVICT_ROUND];
	struct vdf_evict_result res;
	unsigned long i;
	unsigned int n = 0;
	int err;

	ctx->stop = vdf_capture_check_stop(ctx);
	if (ctx->stop)
		return ctx->stop;
	for (i = first; i < ctx->nr_cand && n < VDF_EVICT_ROUND; i++) {
		if (!ctx->cand[i].slab || ctx->cand[i].evicted)
			continue;
		ctx->cand[i].evicted = true;
		idx[n++] = ctx->cand[i].idx;
	}
	sort(idx, n, sizeof(idx[0]), vdf_capture_cmp_ulong, NULL);
	n = vdf_capture_slab_vacate(ctx, idx, n);
	if (ctx->stop)
		return ctx->stop;
	if (!n)
		return 0;
	err = vdf_evict_blocks(idx, n, ctx->req->evict, &res);
	if (err == -ENOMEM) {
		ctx->stop = -ENOMEM;
		return ctx->stop;
	}
	/* nothing eviction knows is present: the blocks just fail to vacate */
	return 0;
}

/*
 * Whether block @idx is now one free buddy: eviction emptied it alone, and
 * free page reporting can hand it to the host as it is.
 */
static bool vdf_capture_whole_free(unsigned long idx)
{
	struct vdf_block blk;

	vdf_scan_block(idx, vdf_scan_block_zone(idx), &blk, NULL);
	return blk.class == VMDEFRAG_CLASS_FREE && blk.whole_buddy;
}

/* Whether candidate @c may join a run of @zone whose blocks cost <= @bar. */
static bool vdf_capture_joins(const struct vdf_cand *c, unsigned long bar,
			      struct zone *zone)
{
	return c && !c->tried && !c->slab && c->cost <= bar &&
	       vdf_scan_block_zone(c->idx) == zone;
}

/*
 * Vacate candidate @c (not slab) and the untried candidates adjacent to
 * it that cost at most @bar, up to @max blocks in all, as one run.
 */
static enum vdf_capture_action vdf_capture_run_from(struct vdf_capture_ctx *ctx,
						    struct vdf_cand *c,
						    unsigned long max,
						    unsigned long bar)
{
	struct zone *zone = vdf_scan_block_zone(c->idx);
	unsigned long lo = c->idx, hi = c->idx;
	struct vdf_cand *p;

	c->tried = true;
	while (hi - lo + 1 < max &&
	       vdf_capture_joins(p = vdf_capture_cand_of(ctx, hi + 1), bar, zone)) {
		p->tried = true;
		hi++;
	}
	while (hi - lo + 1 < max && lo > 0 &&
	       vdf_capture_joins(p = vdf_capture_cand_of(ctx, lo - 1), bar, zone)) {
		p->tried = true;
		lo--;
	}
	return vdf_capture_span(ctx, lo, hi - lo + 1, zone);
}

/*
 * Try the candidates, cheapest first.  The cheapest untried candidate
 * starts a run that takes in its untried neighbours as long as they are
 * among the cheapest blocks the request still needs (cost at most that of
 * the last of them, @bar): the same blocks one by one would be tried
 * anyway, in fewer calls now.  SLAB_RECLAIM candidates go one by one,
 * their objects evicted in rounds as they come up.  Returns VDF_ACT_STOP
 * when the request must end (or the target is reached).
 */
static enum vdf_capture_action vdf_capture_cands(struct vdf_capture_ctx *ctx)
{
	unsigned long i, k, first = 0, need, bar;
	enum vdf_capture_action act;
	struct vdf_cand *c;

	sort(ctx->cand, ctx->nr_cand, sizeof(*ctx->cand), vdf_capture_cand_cmp, NULL);
	memset(ctx->cand_at, 0, ctx->cap_cand * sizeof(*ctx->cand_at));
	for (i = 0; i < ctx->nr_cand; i++)
		ctx->cand_at[ctx->cand[i].idx - ctx->base] = i + 1;

	while (ctx->done->nr < ctx->target) {
		while (first < ctx->nr_cand && ctx->cand[first].tried)
			first++;
		if (first >= ctx->nr_cand)
			return VDF_ACT_NEXT;
		need = ctx->target - ctx->done->nr;
		bar = ULONG_MAX;	/* fewer left than needed: all qualify */
		for (i = first, k = 0; i < ctx->nr_cand; i++) {
			if (!ctx->cand[i].tried && ++k == need) {
				bar = ctx->cand[i].cost;
				break;
			}
		}
		c = &ctx->cand[first];
		if (c->slab) {
			unsigned int before = ctx->done->nr;

			if (!c->evicted && vdf_capture_evict_round(ctx, first))
				return VDF_ACT_STOP;
			c->tried = true;
			act = vdf_capture_span(ctx, c->idx, 1, vdf_scan_block_zone(c->idx));
			/* compact leaves a block that is one free buddy as it is */
			if (ctx->done->nr > before || vdf_capture_whole_free(c->idx))
				vdf_evict_note_block();
		} else {
			act = vdf_capture_run_from(ctx, c, min_t(unsigned long, need,
								 VDF_RUN_MAX_BLOCKS), bar);
		}
		if (act == VDF_ACT_STOP)
			return VDF_ACT_STOP;
		cond_resched();
	}
	return VDF_ACT_STOP;
}

/*
 * The preferred blocks that are FREE or MOVABLE now, ranked and vacated
 * like the rest (the host lists the blocks its backing holds, in address
 * order: an order that says nothing about their cost).
 */
static enum vdf_capture_action vdf_capture_preferred(struct vdf_capture_ctx *ctx)
{
	const struct vdf_capture_req *req = ctx->req;
	struct vdf_block blk;
	unsigned int i;

	if (!req->nr_pref)
		return VDF_ACT_NEXT;
	vdf_capture_reset_cands(ctx);
	for (i = 0; i < req->nr_pref; i++) {
		unsigned long idx = vdf_pfn_block(PHYS_PFN(req->pref[i].addr));
		unsigned long end = idx + (req->pref[i].len >> VMDEFRAG_BLOCK_SHIFT);

		for (; idx < end; idx++) {
			if (vdf_capture_held(idx))
				continue;
			vdf_scan_block(idx, vdf_scan_block_zone(idx), &blk, NULL);
			if (blk.class != VMDEFRAG_CLASS_FREE &&
			    blk.class != VMDEFRAG_CLASS_MOVABLE)
				continue;
			if (req->mode == VMDEFRAG_MODE_COMPACT && blk.whole_buddy)
				continue;
			vdf_capture_add_cand(ctx, idx, blk.cost, false);
			cond_resched();
		}
	}
	return vdf_capture_cands(ctx);
}

static enum vdf_capture_action vdf_capture_ranked(struct vdf_capture_ctx *ctx)
{
	ktime_t t0;

	/* a first pass may stop at enough free blocks; a second takes all */
	for (ctx->may_cut = true; ; ctx->may_cut = false) {
		vdf_capture_reset_cands(ctx);
		t0 = ktime_get();
		vdf_scan_all(NULL, vdf_capture_collect, ctx);
		vdf_work_add(VDF_WORK_RANK_NS, ktime_to_ns(ktime_sub(ktime_get(), t0)));
		if (vdf_capture_cands(ctx) == VDF_ACT_STOP)
			return VDF_ACT_STOP;
		if (!ctx->cut)
			break;
	}
	ctx->stop = -EBUSY;
	return VDF_ACT_NEXT;
}

static int vdf_capture_collect_slab(const struct vdf_block *blk, void *arg)
{
	struct vdf_capture_ctx *ctx = arg;

	if (blk->class != VMDEFRAG_CLASS_UNMOVABLE ||
	    blk->cause != VMDEFRAG_CAUSE_SLAB_RECLAIM ||
	    !vdf_capture_preferred_block(ctx->req, blk->idx))
		return 0;
	vdf_capture_add_cand(ctx, blk->idx, vdf_capture_slab_cost(blk), true);
	return 0;
}

/*
 * STRICT with an eviction policy: the preferred blocks pinned only by
 * reclaimable slab, cheapest first, after the preferred pass.
 */
static enum vdf_capture_action vdf_capture_preferred_slab(struct vdf_capture_ctx *ctx)
{
	vdf_capture_reset_cands(ctx);
	vdf_scan_all(NULL, vdf_capture_collect_slab, ctx);
	if (vdf_capture_cands(ctx) == VDF_ACT_STOP)
		return VDF_ACT_STOP;
	ctx->stop = -EBUSY;
	return VDF_ACT_NEXT;
}

/*
 * Compact mode, end of request: free the blocks it held, each once.  Freed
 * pages go to the per-cpu lists first, where they cannot merge, and the
 * module cannot call drain_all_pages() (not exported).  alloc_contig_range()
 * drains the zone's lists once it has isolated its range, so vacating the
 * last block again - it is free, nothing migrates - flushes every other
 * block into the buddy allocator; only that one goes back to the lists.
 */
static void vdf_capture_compact_free(const struct vdf_blocks *done)
{
	unsigned long last;
	unsigned int i;

	if (!done->nr)
		return;
	for (i = 0; i < done->nr; i++) {
		free_contig_range(vdf_block_pfn(done->idx[i]), VDF_BLOCK_PAGES);
		cond_resched();
	}
	vdf_stat_add(VDF_STAT_BLOCKS_COMPACTED, done->nr);

	last = done->idx[done->nr - 1];
	if (!vdf_capture_contig(last, 1))
		free_contig_range(vdf_block_pfn(last), VDF_BLOCK_PAGES);
}

/*
 * Run one CAPTURE request.  On success returns 0 with the blocks captured
 * (or compacted) in @done, which the caller frees, and the reason it
 * stopped short, or 0, in *@ret_stop.  Returns a negative errno if the
 * request could not run at all (nothing was captured then).
 */
int vdf_capture_run(const struct vdf_capture_req *req, struct vdf_blocks *done,
		    int *ret_stop)
{
	struct vdf_capture_ctx ctx = {
		.req = req,
		.done = done,
		.floor_bytes = max(req->floor_bytes, vdf_pressure_floor_bytes()),
	};
	unsigned long start, end;
	u32 budget = req->budget_ms ? req->budget_ms : VDF_CAPTURE_DEFAULT_BUDGET_MS;
	enum vdf_capture_action act;
	int ret;

	ret = vdf_scan_ram_span(&start, &end);
	if (ret)
		return ret;
	ctx.base = vdf_pfn_block(start);
	ctx.cap_cand = vdf_pfn_block(end - 1) - ctx.base + 1;
	ctx.target = min_t(u64, vdf_capture_bytes_to_blocks(req->bytes),
			   ctx.cap_cand);
	ctx.deadline = ktime_add_ms(ktime_get(), budget);
	if (!ctx.target) {
		*ret_stop = 0;
		return 0;
	}
	ctx.cand = kvmalloc_array(ctx.cap_cand, sizeof(*ctx.cand), GFP_KERNEL);
	if (!ctx.cand)
		return -ENOMEM;
	ctx.cand_at = kvcalloc(ctx.cap_cand, sizeof(*ctx.cand_at), GFP_KERNEL);
	if (!ctx.cand_at) {
		ret = -ENOMEM;
		goto out_free_cand;
	}

	ret = mutex_lock_killable(&vdf_capture_mutex);
	if (ret)
		goto out_free_cand;
	if (vdf_capture_unloading) {
		ret = -ENODEV;
		goto out_unlock;
	}
	act = vdf_capture_preferred(&ctx);
	if (act == VDF_ACT_NEXT && !req->strict)
		vdf_capture_ranked(&ctx);
	else if (act == VDF_ACT_NEXT && req->evict != VMDEFRAG_EVICT_NONE)
		vdf_capture_preferred_slab(&ctx);
	else if (act == VDF_ACT_NEXT)
		ctx.stop = -EBUSY;
	if (done->nr >= ctx.target)
		ctx.stop = 0;
	*ret_stop = ctx.stop;
	if (req->mode == VMDEFRAG_MODE_COMPACT)
		vdf_capture_compact_free(done);

out_unlock:
	mutex_unlock(&vdf_capture_mutex);
out_free_cand:
	kvfree(ctx.cand_at);
	kvfree(ctx.cand);
	return ret;
}

/* ---- release ---- */

/*
 * Release the captured blocks inside the given ranges (validated by the
 * caller); blocks not captured are skipped.  Released blocks are appended
 * to @done.  Returns 0 or a negative errno (then some may be released).
 */
int vdf_capture_release_ranges(const struct vdf_range *r, unsigned int nr,
			       struct vdf_blocks *done)
{
	unsigned int i;
	int ret;

	ret = mutex_lock_killable(&vdf_capture_mutex);
	if (ret)
		return ret;
	for (i = 0; i < nr && !ret; i++) {
		unsigned long idx = vdf_pfn_block(PHYS_PFN(r[i].addr));
		unsigned long last = idx + (r[i].len >> VMDEFRAG_BLOCK_SHIFT) - 1;
		void *entry;

		xa_for_each_range(&vdf_capture_xa, idx, entry, idx, last) {
			ret = vdf_blocks_reserve(done, 1);
			if (ret)
				break;
			if (vdf_capture_put(idx))
				done->idx[done->nr++] = idx;
		}
		cond_resched();
	}
	mutex_unlock(&vdf_capture_mutex);
	vdf_stat_add(VDF_STAT_BLOCKS_RELEASED, done->nr);
	return ret;
}

/* Release captured blocks worth at least @bytes (or all there are). */
int vdf_capture_release_bytes(u64 bytes, struct vdf_blocks *done)
{
	u64 want = vdf_capture_bytes_to_blocks(bytes);
	unsigned long idx;
	void *entry;
	int ret;

	ret = mutex_lock_killable(&vdf_capture_mutex);
	if (ret)
		return ret;
	xa_for_each(&vdf_capture_xa, idx, entry) {
		if (done->nr >= want)
			break;
		ret = vdf_blocks_reserve(done, 1);
		if (ret)
			break;
		if (vdf_capture_put(idx))
			done->idx[done->nr++] = idx;
		cond_resched();
	}
	mutex_unlock(&vdf_capture_mutex);
	vdf_stat_add(VDF_STAT_BLOCKS_RELEASED, done->nr);
	return ret;
}

#define VDF_RELEASE_BATCH	32

/*
 * Release up to @max_blocks (at most VDF_RELEASE_BATCH) captured blocks that
 * are not PENDING, for the shrinker or the OOM notifier, and tell
 * listeners.  Takes no mutex and does not sleep; returns the number of
 * blocks released.
 */
unsigned long vdf_capture_release_some(unsigned long max_blocks,
				       enum vmdefrag_release_reason reason)
{
	unsigned long buf[VDF_RELEASE_BATCH];
	struct vdf_blocks done = { .idx = buf, .cap = ARRAY_SIZE(buf) };
	unsigned long idx = 0;

	max_blocks = min_t(unsigned long, max_blocks, ARRAY_SIZE(buf));
	while (done.nr < max_blocks && vdf_capture_next(&idx)) {
		if (vdf_capture_put_unpinned(idx))
			done.idx[done.nr++] = idx;
		idx++;
	}
	if (done.nr)
		vdf_genl_notify(VMDEFRAG_CMD_EVENT_RELEASED, &done, reason,
				GFP_NOWAIT | __GFP_NOWARN);
	return done.nr;
}

/*
 * Module unload, first step: refuse further requests, release every block
 * and tell listeners (the family is still registered).
 */
void vdf_capture_release_all(void)
{
	struct vdf_blocks done = { 0 };
	unsigned long idx;
	void *entry;

	mutex_lock(&vdf_capture_mutex);
	vdf_capture_unloading = true;
	xa_for_each(&vdf_capture_xa, idx, entry) {
		bool listed = !vdf_blocks_reserve(&done, 1);

		if (vdf_capture_put(idx) && listed)
			done.idx[done.nr++] = idx;
	}
	mutex_unlock(&vdf_capture_mutex);
	if (done.nr)
		vdf_genl_notify(VMDEFRAG_CMD_EVENT_RELEASED, &done,
				VMDEFRAG_RELEASE_UNLOAD, GFP_KERNEL);
	vdf_blocks_free(&done);
}

int vdf_capture_init(void)
{
	BUILD_BUG_ON(pageblock_nr_pages != VDF_BLOCK_PAGES);
	return 0;
}

/* Module unload, last step: nothing may be left; free the bookkeeping. */
void vdf_capture_exit(void)
{
	unsigned long idx;
	void *entry;

	xa_for_each(&vdf_capture_xa, idx, entry)
		WARN_ON_ONCE(!vdf_capture_put(idx));
	xa_destroy(&vdf_capture_failed);
}
