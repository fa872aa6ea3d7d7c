// SPDX-License-Identifier: GPL-2.0
/*
 * policy.c - the automatic densification engine's decision.
 *
 * One VM's decision is a pure function of its policy settings, the guest's
 * last memory signals (EVT_MEMINFO), what the mechanism reports (held
 * bytes, a running operation), the host's pressure and the time, plus a
 * small state that carries the hysteresis.  It moves nothing: policy_vm.c
 * carries its decisions out through the mechanism's entry points.
 *
 * The model, in bytes of the guest's free memory above its zones' high
 * watermarks ("above"):
 *
 *        above
 *          ^
 *          |   reclaim zone: reclaim steps while the guest is calm
 *   headroom + hyst  ------------------------------------------------
 *          |   dead band: nothing (no flapping)
 *   headroom = floor + margin  - - - - - - - (reclaims stop here)
 *          |   dead band
 *   floor + margin / 2  ---------------------------------------------
 *          |   return zone: return at once what brings it back to the
 *          |   headroom (and the next seconds of allocation)
 *   floor  -- the module never captures below it
 *
 *   floor    the VM's configured floor or the module's own, the larger
 *   margin   policy_headroom if set, else POLICY_MARGIN_SECONDS of the
 *            guest's smoothed allocation rate, at least POLICY_MARGIN_MIN
 *            and at most a quarter of its RAM; doubled for a minute after
 *            a miss; shrunk by host pressure (3/4 moderate, 1/2 high) and
 *            grown back when the host relaxes
 *
 * Reclaim: in steps of at most POLICY_STEP_MAX and one second's worth of
 * the rate (policy_reclaim_rate MiB/s, raised under host pressure in
 * proportion to the VM's weight: x(1 + level * weight / 100)), the next
 * step no sooner than its bytes at that rate allow, only after the guest
 * was calm (allocation rate below POLICY_CALM_RATE, PSI below 0.1 %) for
 * policy_calm seconds (divided by 1 + level under host pressure), and
 * only on signals newer than the end of the last operation, and within
 * the guest CPU budget: the module's vacate time since the last reclaim
 * started (EVT_MEMINFO's vacate_ns, whoever asked for the vacating),
 * spread over the time since then, stays within policy_cpu_percent of one
 * vCPU, so the next step waits spent * 100 / policy_cpu_percent.
 * Return: when "above" falls into the return zone, PSI some avg10 reaches
 * 1 %, or the guest released blocks under pressure (a miss); a running
 * reclaim is stopped first.  A return restarts the calm time, so the
 * next reclaim comes at least max(policy_calm, POLICY_FLIP_MIN_MS) later:
 * the minimum interval between opposite actions.
 *
 * Every decision, taken or not, has a one-line reason; policy_vm.c logs it
 * at debug and status shows the last one.
 */
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "policy.h"

#define MIB			(1ULL << 20)
#define POLICY_BLOCK		((uint64_t)PROTO_BLOCK_SIZE)
#define POLICY_STEP_MAX		(64 * MIB)	/* one reclaim step */
#define POLICY_RETURN_MAX	(512 * MIB)	/* one return */
#define POLICY_MARGIN_MIN	(64 * MIB)
#define POLICY_MARGIN_SECONDS	5		/* of allocation, kept free */
#define POLICY_RETURN_SECONDS	2		/* of allocation, returned extra */
#define POLICY_FLOOR_DEFAULT	(128 * MIB)	/* the module's least default */
#define POLICY_CALM_RATE	(16 * MIB)	/* bytes/s: below is calm */
#define POLICY_PSI_CALM		10		/* 0.10 % */
#define POLICY_PSI_RETURN	100		/* 1.00 % */
#define POLICY_MISS_BOOST_MS	60000
#define POLICY_STALE_MIN_MS	10000
#define POLICY_FLIP_MIN_MS	5000
#define POLICY_RETRY_MS		1000	/* after an action failed to start */

const char *policy_mode_name(enum policy_mode mode)
{
	return mode == POLICY_AUTO ? "auto" : "manual";
}

int policy_mode_from_name(const char *name, enum policy_mode *ret_mode)
{
	if (strcmp(name, "auto") == 0)
		*ret_mode = POLICY_AUTO;
	else if (strcmp(name, "manual") == 0)
		*ret_mode = POLICY_MANUAL;
	else
		return -EINVAL;
	return 0;
}

const char *policy_action_name(enum policy_action action)
{
	switch (action) {
	case POLICY_ACT_RECLAIM: return "reclaim";
	case POLICY_ACT_RETURN: return "return";
	case POLICY_ACT_STOP: return "stop";
	default: return "none";
	}
}

void policy_params_init(struct policy_params *p)
{
	memset(p, 0, sizeof(*p));
	p->mode = POLICY_MANUAL;
	p->weight = POLICY_WEIGHT_DEFAULT;
	p->reclaim_rate_mib = POLICY_RATE_DEFAULT;
	p->calm_s = POLICY_CALM_DEFAULT;
	p->cpu_percent = POLICY_CPU_DEFAULT;
}

void policy_host_classify(struct policy_host *h)
{
	uint64_t avail_pct = h->total_bytes ?
			     h->available_bytes * 100 / h->total_bytes : 100;

	if ((h->psi_known && h->psi_some_avg10 >= 1000) || avail_pct < 5)
		h->level = POLICY_HOST_HIGH;
	else if ((h->psi_known && h->psi_some_avg10 >= 100) || avail_pct < 15)
		h->level = POLICY_HOST_MODERATE;
	else
		h->level = POLICY_HOST_RELAXED;
}

static uint64_t policy_max(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

static uint64_t policy_min(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static uint64_t policy_block_down(uint64_t b)
{
	return b / POLICY_BLOCK * POLICY_BLOCK;
}

static uint64_t policy_block_up(uint64_t b)
{
	return policy_block_down(b + POLICY_BLOCK - 1);
}

static void policy_none(struct policy_decision *d, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));



static void policy_reason(struct policy_decision *d, const char *fmt, va_list ap)
{
	vsnprintf(d->reason, sizeof(d->reason), fmt, ap);
}

static void policy_none(struct policy_decision *d, const char *fmt, ...)
{
	va_list ap;

	d->action = POLICY_ACT_NONE;
	d->bytes = 0;
	va_start(ap, fmt);
	policy_reason(d, fmt, ap);
	va_end(ap);
}

static void policy_act(struct policy_decision *d, enum policy_action a,
		       uint64_t bytes, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void policy_act(struct policy_decision *d, enum policy_action a,
		       uint64_t bytes, const char *fmt, ...)
{
	va_list ap;

	d->action = a;
	d->bytes = bytes;
	va_start(ap, fmt);
	policy_reason(d, fmt, ap);
	va_end(ap);
}

/* Folds new signals and misses into the state (whatever the mode). */
static void policy_fold(struct policy_state *st, const struct policy_signals *sig,
			const struct policy_view *v, uint64_t now_ms)
{
	if (v->misses != st->misses_seen) {
		if (v->misses > st->misses_seen) {
			st->last_miss_ms = now_ms ? now_ms : 1;
			st->miss_pending = true;
			st->calm_since_ms = 0;
		}
		st->misses_seen = v->misses;
	}
	if (sig->have && sig->at_ms != st->folded_at_ms) {
		const struct proto_meminfo *mi = &sig->mi;
		bool calm = mi->alloc_bytes_per_sec < POLICY_CALM_RATE &&
			    (!(mi->flags & PROTO_MEMINFO_F_PSI) ||
			     mi->psi_some_avg10 < POLICY_PSI_CALM);

		st->alloc_ewma = st->folded_at_ms ?
				 (3 * st->alloc_ewma + mi->alloc_bytes_per_sec) / 4 :
				 mi->alloc_bytes_per_sec;
		st->folded_at_ms = sig->at_ms;
		if (!calm)
			st->calm_since_ms = 0;
		else if (!st->calm_since_ms)
			st->calm_since_ms = sig->at_ms ? sig->at_ms : 1;
	}
}

void policy_decide(const struct policy_params *p, struct policy_state *st,
		   const struct policy_signals *sig, const struct policy_view *v,
		   const struct policy_host *h, uint64_t now_ms,
		   struct policy_decision *ret)
{
	const struct proto_meminfo *mi = &sig->mi;
	unsigned int level = h ? h->level : POLICY_HOST_RELAXED;
	uint64_t floor, margin, headroom, return_line, hyst, above, rate, calm_ms;
	uint64_t stale_ms, flip_ms, bytes;
	bool psi_high, need_return;

	memset(ret, 0, sizeof(*ret));
	policy_fold(st, sig, v, now_ms);
	if (!sig->have)
		return policy_none(ret, "no memory signals from the guest yet "
				   "(its agent speaks protocol version 3?)");

	floor = policy_max(p->floor_bytes, (mi->flags & PROTO_MEMINFO_F_MODULE) ?
			   mi->floor_bytes : POLICY_FLOOR_DEFAULT);
	if (p->headroom_bytes) {
		margin = p->headroom_bytes;
	} else {
		margin = policy_max(st->alloc_ewma, mi->alloc_bytes_per_sec) *
			 POLICY_MARGIN_SECONDS;
		margin = policy_min(margin, mi->total_bytes / 4);
		margin = policy_max(margin, POLICY_MARGIN_MIN);
	}
	if (st->last_miss_ms && now_ms - st->last_miss_ms < POLICY_MISS_BOOST_MS)
		margin *= 2;
	margin = margin * (4 - level) / 4;
	headroom = floor + margin;
	ret->headroom_bytes = headroom;
	return_line = floor + margin / 2;
	hyst = policy_max(margin / 4, 2 * POLICY_BLOCK);
	above = mi->free_bytes > mi->wmark_high_bytes ?
		mi->free_bytes - mi->wmark_high_bytes : 0;

	if (p->mode != POLICY_AUTO)
		return policy_none(ret, "policy is manual");
	if (!v->ready)
		return policy_none(ret, "guest session or QEMU not ready");
	if (!v->backend_ok)
		return policy_none(ret, "auto moves memory on the shared backend only");
	stale_ms = policy_max(3ULL * mi->interval_ms, POLICY_STALE_MIN_MS);
	if (now_ms - sig->at_ms > stale_ms)
		return policy_none(ret, "memory signals %" PRIu64 " ms old",
				   now_ms - sig->at_ms);

	psi_high = (mi->flags & PROTO_MEMINFO_F_PSI) &&
		   mi->psi_some_avg10 >= POLICY_PSI_RETURN;
	need_return = v->held_bytes && v->can_return &&
		      (above < return_line || psi_high || st->miss_pending);

	if (v->op_running) {
		if (need_return && v->op_is_reclaim)
			return policy_act(ret, POLICY_ACT_STOP, 0, "a return is due "
					  "(%" PRIu64 " MiB free above the watermarks)",
					  above >> 20);
		return policy_none(ret, "an operation runs");
	}
	if (st->awaiting_op) {
		st->awaiting_op = false;
		st->settled_ms = now_ms;
	}
	if (now_ms < st->retry_ms)
		return policy_none(ret, "the last action could not start: "
				   "retrying in %" PRIu64 " ms", st->retry_ms - now_ms);
	if (sig->at_ms <= st->settled_ms && !st->miss_pending)
		return policy_none(ret, "waiting for the guest's signals after "
				   "the last operation");

	if (need_return) {
		uint64_t want = headroom > above ? headroom - above : 0;

		want += policy_max(st->alloc_ewma, mi->alloc_bytes_per_sec) *
			POLICY_RETURN_SECONDS;
		if (want < POLICY_STEP_MAX && (psi_high || st->miss_pending))
			want = POLICY_STEP_MAX;
		bytes = policy_min(policy_min(policy_block_up(want), POLICY_RETURN_MAX),
				   policy_block_down(v->held_bytes));
		if (bytes) {
			policy_act(ret, POLICY_ACT_RETURN, bytes, "%s: %" PRIu64
				   " MiB free above the watermarks, return line %"
				   PRIu64 " MiB, PSI some %u.%02u %%",
				   st->miss_pending ? "the guest released memory "
				   "under pressure" : psi_high ? "memory pressure" :
				   "free memory nears the watermarks", above >> 20,
				   return_line >> 20, mi->psi_some_avg10 / 100,
				   mi->psi_some_avg10 % 100);
			st->last_return_ms = now_ms;
			st->calm_since_ms = 0;
			st->miss_pending = false;
			st->awaiting_op = true;
			return;
		}
	}
	st->miss_pending = false;

	if (above < headroom)
		return policy_none(ret, "%" PRIu64 " MiB free above the watermarks, "
				   "under the headroom %" PRIu64 " MiB%s", above >> 20,
				   headroom >> 20, v->held_bytes ? "" :
				   ", nothing held to return");
	if (above < headroom + hyst)
		return policy_none(ret, "%" PRIu64 " MiB free above the watermarks, "
				   "within the headroom %" PRIu64 " MiB (+%" PRIu64
				   " MiB band)", above >> 20, headroom >> 20, hyst >> 20);
	calm_ms = (uint64_t)p->calm_s * 1000 / (1 + level);
	if (!st->calm_since_ms || now_ms - st->calm_since_ms < calm_ms)
		return policy_none(ret, "guest not calm for %" PRIu64 " s yet "
				   "(allocating %" PRIu64 " KiB/s now)", calm_ms / 1000,
				   mi->alloc_bytes_per_sec >> 10);
	flip_ms = policy_max(calm_ms, POLICY_FLIP_MIN_MS);
	if (st->last_return_ms && now_ms - st->last_return_ms < flip_ms)
		return policy_none(ret, "a return %" PRIu64 " ms ago",
				   now_ms - st->last_return_ms);
	if (now_ms < st->next_reclaim_ms)
		return policy_none(ret, "reclaim rate: next step in %" PRIu64 " ms",
				   st->next_reclaim_ms - now_ms);
	if (st->cpu_mark_set && (mi->flags & PROTO_MEMINFO_F_MODULE) && p->cpu_percent) {
		/* a module that reloaded counts from zero again */
		uint64_t spent = mi->vacate_ns >= st->cpu_mark_ns ?
				 mi->vacate_ns - st->cpu_mark_ns : mi->vacate_ns;
		uint64_t due = st->last_reclaim_ms +
			       spent / 1000000 * 100 / p->cpu_percent;

		if (now_ms < due)
			return policy_none(ret, "guest CPU budget (%u %% of a vCPU): "
					   "%" PRIu64 " ms spent vacating, next step "
					   "in %" PRIu64 " ms", p->cpu_percent,
					   spent / 1000000, due - now_ms);
	}
	rate = (uint64_t)p->reclaim_rate_mib * MIB * (100 + level * p->weight) / 100;
	bytes = policy_block_down(policy_min(policy_min(above - headroom,
							POLICY_STEP_MAX), rate));
	if (!bytes)
		return policy_none(ret, "less than a block to reclaim");
	policy_act(ret, POLICY_ACT_RECLAIM, bytes, "%" PRIu64 " MiB free above the "
		   "watermarks, headroom %" PRIu64 " MiB (floor %" PRIu64
		   " MiB), calm, host %s", above >> 20, headroom >> 20, floor >> 20,
		   level == POLICY_HOST_HIGH ? "under high pressure" :
		   level == POLICY_HOST_MODERATE ? "under pressure" : "relaxed");
	st->last_reclaim_ms = now_ms;
	st->next_reclaim_ms = now_ms + bytes * 1000 / rate;
	st->cpu_mark_set = (mi->flags & PROTO_MEMINFO_F_MODULE) != 0;
	st->cpu_mark_ns = mi->vacate_ns;
	st->awaiting_op = true;
}

void policy_failed(struct policy_state *st, const struct policy_decision *d,
		   uint64_t now_ms)
{
	if (d->action == POLICY_ACT_RECLAIM) {
		st->awaiting_op = false;
		st->next_reclaim_ms = st->last_reclaim_ms;
		st->retry_ms = now_ms + POLICY_RETRY_MS;
	} else if (d->action == POLICY_ACT_RETURN) {
		st->awaiting_op = false;
		st->retry_ms = now_ms + POLICY_RETRY_MS;
	}
}
