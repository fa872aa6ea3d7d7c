// SPDX-License-Identifier: GPL-2.0
/*
 * backend_hint.c - the hint backend's reclaim operation.
 *
 * On anonymous RAM with virtio-balloon free page reporting the host can
 * neither choose nor punch blocks, so it measures.  QEMU's RssAnon is read
 * at the start, and the guest's scan says how much of its free memory is
 * still backed: reporting has handed every wholly free 2 MiB block to the
 * host before the operation began, so compaction can give back at most
 * the free memory scattered in partly used blocks (the reach: free -
 * whole free).  The phases aim at the target or the reach, the lower
 * (goal); asking for more only has the guest empty ever costlier blocks
 * whose pages land on memory reporting had returned, and refault it.
 * Then phases of
 *   compact  REQ_CAPTURE { goal - returned, COMPACT } rounds until the
 *            guest emptied that much or stops (an answer with nothing);
 *            the guest frees the blocks as order-9 buddies at the end of
 *            each request; nothing is held, so no block changes state and
 *            there is nothing to ACK, reconcile or return;
 *   settle   RssAnon sampled every BACKEND_HINT_SAMPLE_MS until it makes
 *            no new low for BACKEND_HINT_QUIET_MS or BACKEND_HINT_CAP_MS
 *            pass (hint_settle_*, hint.c);
 * returned = RssAnon at the start - the latest sample (never the guest's
 * claim; the guest's migrations may fault in pages QEMU had discarded,
 * which counts against it).  DONE when returned reaches the target; else
 * another phase, unless returned came within BACKEND_HINT_REACH_SLACK (or
 * a sixteenth) of a goal below the target (the reach), the guest stopped, the phase gave back less than a block, or
 * BACKEND_HINT_MAX_PHASES ran: STOPPED with the figures in words.  A
 * reach below one block stops before any compaction.
 *
 *   begin -> COMPACT --(phase compacted, or guest stopped)--> SAMPLE ...
 *   SAMPLE --(settled)--> DONE | STOPPED | COMPACT (next phase)
 *
 * Pure: every input (the guest's answer, a sample, the clock) comes from
 * the caller (reclaim.c), which owns the session, the timer and the
 * operation's status.  hint.c keeps what the backend learns from QEMU
 * outside an operation (the balloon probe) and the settling rule.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "backend_hint.h"
#include "log.h"
#include "vmdefrag/proto.h"

#define MIB(x)		((unsigned long long)((x) >> 20))

static void backend_hint_phase_begin(struct backend_hint *h,
				     struct backend_hint_step *ret_step)
{
	h->phases++;
	h->settling = false;
	h->settle_begun = false;
	h->phase_want = h->goal_bytes - h->returned_bytes;
	h->phase_want = (h->phase_want + PROTO_BLOCK_SIZE - 1) & ~(PROTO_BLOCK_SIZE - 1);
	h->phase_compacted = 0;
	h->phase_returned_start = h->returned_bytes;
	memset(ret_step, 0, sizeof(*ret_step));
	ret_step->action = BACKEND_HINT_COMPACT;
	ret_step->bytes = h->phase_want;
}

/* The reach in words, for a reason. */
static void backend_hint_reach_text(const struct backend_hint *h, char *buf,
				    size_t size)
{
	snprintf(buf, size, "reporting had returned the wholly free blocks "
		 "(%llu of %llu MiB free) already: at most %llu MiB could come back",
		 MIB(h->reach.whole_free_bytes), MIB(h->reach.free_bytes),
		 MIB(h->goal_bytes));
}

void backend_hint_begin(struct backend_hint *h, const char *vm_name,
			uint32_t op_id, uint64_t target_bytes,
			const struct backend_hint_reach *reach, uint64_t rss,
			struct backend_hint_step *ret_step)
{
	uint64_t backed;

	memset(h, 0, sizeof(*h));
	h->vm_name = vm_name;
	h->op_id = op_id;
	h->target_bytes = target_bytes;
	h->goal_bytes = target_bytes;
	h->rss_before = rss;
	h->rss_after = rss;
	if (reach && reach->known) {
		h->reach = *reach;
		backed = reach->free_bytes > reach->whole_free_bytes ?
			 reach->free_bytes - reach->whole_free_bytes : 0;
		backed &= ~(uint64_t)(PROTO_BLOCK_SIZE - 1);
		if (backed < h->goal_bytes)
			h->goal_bytes = backed;
	}
	if (h->goal_bytes < PROTO_BLOCK_SIZE) {
		memset(ret_step, 0, sizeof(*ret_step));
		ret_step->action = BACKEND_HINT_STOPPED;
		ret_step->error = -ENOSPC;
		backend_hint_reach_text(h, ret_step->reason, sizeof(ret_step->reason));
		return;
	}
	if (h->goal_bytes < target_bytes)
		log_info("VM '%s': reclaim #%" PRIu32 " aims at %llu of the %llu MiB "
			 "asked: the guest has %llu MiB free, %llu MiB of it in "
			 "wholly free blocks free page reporting has returned already",
			 vm_name, op_id, MIB(h->goal_bytes), MIB(target_bytes),
			 MIB(reach->free_bytes), MIB(reach->whole_free_bytes));
	backend_hint_phase_begin(h, ret_step);
}

static void backend_hint_sample_in(struct backend_hint_step *ret_step,
				   uint32_t delay_ms)
{
	memset(ret_step, 0, sizeof(*ret_step));
	ret_step->action = BACKEND_HINT_SAMPLE;
	ret_step->delay_ms = delay_ms;
}

void backend_hint_compacted(struct backend_hint *h, uint64_t bytes,
			    int32_t stop_errno, struct backend_hint_step *ret_step)
{
	h->rounds++;
	h->compacted_bytes += bytes;
	h->phase_compacted += bytes;
	log_info("VM '%s': reclaim #%" PRIu32 " round %u: guest compacted %llu MiB "
		 "(phase %u: %llu of %llu MiB)", h->vm_name, h->op_id, h->rounds,
		 MIB(bytes), h->phases, MIB(h->phase_compacted),
		 MIB(h->phase_want));
	if (bytes == 0) {
		h->guest_stopped = true;
		h->guest_stop_errno = stop_errno;
	}
	if (bytes == 0 || h->phase_compacted >= h->phase_want) {
		/* settle: the first sample at once */
		h->settling = true;
		return backend_hint_sample_in(ret_step, 0);
	}
	memset(ret_step, 0, sizeof(*ret_step));
	ret_step->action = BACKEND_HINT_COMPACT;
	ret_step->bytes = h->phase_want - h->phase_compacted;
}

/* How close to a reach below the target counts as reaching it. */
static uint64_t backend_hint_slack(const struct backend_hint *h)
{
	uint64_t frac = h->goal_bytes / 16;

	return frac > BACKEND_HINT_REACH_SLACK ? frac : BACKEND_HINT_REACH_SLACK;
}

/* A settle phase ended: done, stopped, or one more phase. */
static void backend_hint_settled(struct backend_hint *h, bool capped,
				 struct backend_hint_step *ret_step)
{
	char sum[200], why[160];

	snprintf(sum, sizeof(sum), "the guest compacted %llu MiB; free page "
		 "reporting gave back %llu MiB (QEMU RssAnon %llu -> %llu MiB)",
		 MIB(h->compacted_bytes), MIB(h->returned_bytes),
		 MIB(h->rss_before), MIB(h->rss_after));
	log_info("VM '%s': reclaim #%" PRIu32 " phase %u %s: %s", h->vm_name,
		 h->op_id, h->phases, capped ? "still falling at the cap" :
		 "settled", sum);
	memset(ret_step, 0, sizeof(*ret_step));
	if (h->returned_bytes >= h->target_bytes) {
		ret_step->action = BACKEND_HINT_DONE;
		return;
	}
	ret_step->action = BACKEND_HINT_STOPPED;
	ret_step->error = -EAGAIN;
	if (h->goal_bytes < h->target_bytes &&
	    h->returned_bytes + backend_hint_slack(h) >= h->goal_bytes) {
		/* (nearly) all the reach: nothing more worth compacting */
		ret_step->error = -ENOSPC;
		backend_hint_reach_text(h, why, sizeof(why));
		snprintf(ret_step->reason, sizeof(ret_step->reason), "%s; %s", sum, why);
	} else if (h->guest_stopped) {
		ret_step->guest_stopped = true;
		ret_step->error = h->guest_stop_errno;
		snprintf(ret_step->reason, sizeof(ret_step->reason), "%s", sum);
	} else if (h->returned_bytes < h->phase_returned_start + PROTO_BLOCK_SIZE) {
		snprintf(ret_step->reason, sizeof(ret_step->reason), "%s; the last "
			 "compaction gave nothing more back (the guest's free "
			 "memory is with the host already, or the pages it "
			 "migrated refaulted as much)", sum);
	} else if (h->phases >= BACKEND_HINT_MAX_PHASES) {
		snprintf(ret_step->reason, sizeof(ret_step->reason), "%s; stopped "
			 "after %u compaction phases", sum, h->phases);
	} else {
		backend_hint_phase_begin(h, ret_step);
	}
}

void backend_hint_sampled(struct backend_hint *h, uint64_t now_ms, uint64_t rss,
			  struct backend_hint_step *ret_step)
{
	enum hint_settle_state s;

	if (!h->settle_begun) {
		h->settle_begun = true;
		hint_settle_begin(&h->settle, now_ms, rss, BACKEND_HINT_QUIET_MS,
				  BACKEND_HINT_CAP_MS);
		return backend_hint_sample_in(ret_step, BACKEND_HINT_SAMPLE_MS);
	}
	s = hint_settle_feed(&h->settle, now_ms, rss);
	h->rss_after = rss;
	h->returned_bytes = h->rss_before > rss ? h->rss_before - rss : 0;
	if (s == HINT_SETTLE_FALLING)
		return backend_hint_sample_in(ret_step, BACKEND_HINT_SAMPLE_MS);
	backend_hint_settled(h, s == HINT_SETTLE_CAPPED, ret_step);
}
