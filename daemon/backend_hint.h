/* SPDX-License-Identifier: GPL-2.0 */
/*
 * backend_hint.h - the hint backend's reclaim operation (prefix
 * backend_hint_): when to ask the guest to compact, when to sample QEMU's
 * RssAnon, and when the operation is done or stops short.
 *
 * It decides, it does no I/O: reclaim.c sends the requests, reads RssAnon
 * and arms its timer as each step says, and feeds the results back.  The
 * host-side facts it relies on (the balloon probe, the settling rule) are
 * hint.c's.
 */
#ifndef VDF_BACKEND_HINT_H
#define VDF_BACKEND_HINT_H

#include <stdbool.h>
#include <stdint.h>

#include "hint.h"

/*
 * Timing: reporting passes run 2 s apart, so a quiet period must span two
 * of them; the cap bounds one settle phase.
 */
#define BACKEND_HINT_SAMPLE_MS	250
#define BACKEND_HINT_QUIET_MS	5000
#define BACKEND_HINT_CAP_MS	60000
#define BACKEND_HINT_MAX_PHASES	4
/*
 * The reach is what perfect packing would give; within this much of it
 * (or a sixteenth of it, the more) another phase is not worth its cost:
 * the last pages moved land on memory reporting had returned and refault.
 */
#define BACKEND_HINT_REACH_SLACK	(8ull << 20)

#define BACKEND_HINT_REASON_MAX	400	/* the op's reason keeps the first 255 */

enum backend_hint_action {
	BACKEND_HINT_COMPACT,	/* send REQ_CAPTURE compact of `bytes` now */
	BACKEND_HINT_SAMPLE,	/* read RssAnon in `delay_ms`, feed it */
	BACKEND_HINT_DONE,	/* the target came back */
	BACKEND_HINT_STOPPED,	/* short of it: `error`, `reason` */
};

struct backend_hint_step {
	enum backend_hint_action action;
	uint64_t bytes;			/* COMPACT */
	uint32_t delay_ms;		/* SAMPLE */
	/*
	 * STOPPED: why, in one line.  When guest_stopped, the guest's last
	 * round emptied nothing: error is the module's stop reason as it
	 * came (0 or a negative errno) and reason holds only the figures,
	 * for the caller to add the module's reason in words.
	 */
	bool guest_stopped;
	int error;
	char reason[BACKEND_HINT_REASON_MAX];
};

/*
 * What compaction can give back at most, from the guest's scan at the
 * start: free page reporting has handed every wholly free block to the
 * host already, so only the free memory scattered in partly used blocks
 * (free - whole_free) is still backed.  Unknown (no scan): no bound.
 */
struct backend_hint_reach {
	bool known;
	uint64_t free_bytes;		/* the guest's free memory */
	uint64_t whole_free_bytes;	/* of it, in wholly free 2 MiB blocks */
};

/*
 * One hint reclaim.  The figures are for status; the rest is the state
 * machine's (read-only outside backend_hint.c).
 */
struct backend_hint {
	const char *vm_name;		/* for the log; outlives the operation */
	uint32_t op_id;
	uint64_t target_bytes;
	struct backend_hint_reach reach;
	uint64_t goal_bytes;		/* what the phases aim for: the target,
					 * or less when the reach is below it */
	uint64_t compacted_bytes;	/* the guest's claim, summed */
	uint64_t rss_before;		/* QEMU's RssAnon at the start */
	uint64_t rss_after;		/* the latest settle sample */
	uint64_t returned_bytes;	/* rss_before - rss_after (0 if it grew) */

	uint32_t rounds;		/* compactions answered */
	uint32_t phases;
	bool settling;			/* settle phase, else compact phase */
	bool settle_begun;		/* its first sample was taken */
	struct hint_settle settle;
	uint64_t phase_want;		/* bytes to compact in this phase */
	uint64_t phase_compacted;
	uint64_t phase_returned_start;	/* returned_bytes when the phase began */
	bool guest_stopped;		/* the last round emptied nothing */
	int32_t guest_stop_errno;
};

/*
 * Starts an operation of target_bytes with QEMU's RssAnon at rss and the
 * guest's free memory as reach says (NULL: unknown): the first step is a
 * compaction of at most what is still backed, or STOPPED at once when
 * less than a block of it is.
 */
void backend_hint_begin(struct backend_hint *h, const char *vm_name,
			uint32_t op_id, uint64_t target_bytes,
			const struct backend_hint_reach *reach, uint64_t rss,
			struct backend_hint_step *ret_step);

/* A compaction round ended: the guest emptied `bytes` (0: it stopped for
 * stop_errno, the module's reason). */
void backend_hint_compacted(struct backend_hint *h, uint64_t bytes,
			    int32_t stop_errno, struct backend_hint_step *ret_step);

/* A sample asked for by a SAMPLE step: QEMU's RssAnon at now_ms. */
void backend_hint_sampled(struct backend_hint *h, uint64_t now_ms, uint64_t rss,
			  struct backend_hint_step *ret_step);

#endif /* VDF_BACKEND_HINT_H */
