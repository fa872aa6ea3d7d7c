/* SPDX-License-Identifier: GPL-2.0 */
/*
 * policy.h - the automatic densification engine's decision (prefix
 * policy_): a pure function of the guest's signals, the VM's policy
 * settings, what the mechanism reports, the host's pressure and the time.
 * It moves no memory; policy_vm.c carries its decisions out.
 */
#ifndef VDF_POLICY_H
#define VDF_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmdefrag/proto.h"

enum policy_mode {
	POLICY_MANUAL,		/* only a person reclaims and returns */
	POLICY_AUTO,		/* the engine keeps the VM dense */
};

#define POLICY_WEIGHT_DEFAULT	100
#define POLICY_WEIGHT_MAX	1000
#define POLICY_RATE_DEFAULT	32	/* MiB/s of reclaim per VM */
#define POLICY_RATE_MAX		4096
#define POLICY_CALM_DEFAULT	10	/* seconds */
#define POLICY_CALM_MAX		3600
#define POLICY_CPU_DEFAULT	5	/* % of one guest vCPU spent vacating */
#define POLICY_REASON_MAX	160

/* A VM's policy settings (config keys policy, policy_*). */
struct policy_params {
	enum policy_mode mode;
	uint32_t weight;		/* 1..POLICY_WEIGHT_MAX, order under host
					 * pressure and share of its boost */
	uint64_t headroom_bytes;	/* fixed margin above the floor; 0: sized
					 * from the allocation rate */
	uint32_t reclaim_rate_mib;	/* MiB/s, 1..POLICY_RATE_MAX */
	uint32_t calm_s;		/* guest calm this long before a reclaim */
	uint32_t cpu_percent;		/* guest CPU budget of its reclaims,
					 * 1..100 % of one vCPU, averaged */
	uint64_t floor_bytes;		/* the VM's floor (0: the module's) */
};

/* The guest's last EVT_MEMINFO, as the session validated it. */
struct policy_signals {
	bool have;
	uint64_t at_ms;			/* loop time it arrived */
	struct proto_meminfo mi;
};

/* What the mechanism (vm.c, reclaim.c) says about the VM right now. */
struct policy_view {
	bool ready;		/* session ready, reconciled, QEMU attached */
	bool backend_ok;	/* the shared backend: what the policy moves
				 * shows in the guest's free memory */
	bool can_return;	/* the backend gives memory back (shared) */
	bool op_running;	/* a reclaim, return or reconcile runs */
	bool op_is_reclaim;	/* ... and it is a reclaim */
	uint64_t held_bytes;	/* captured for the host, returnable */
	uint64_t misses;	/* guest pressure releases counted so far */
};

/* The host's own pressure, sampled once per engine tick. */
enum policy_host_level {
	POLICY_HOST_RELAXED,
	POLICY_HOST_MODERATE,	/* PSI some avg10 >= 1 % or MemAvailable < 15 % */
	POLICY_HOST_HIGH,	/* PSI some avg10 >= 10 % or MemAvailable < 5 % */
};

struct policy_host {
	bool psi_known;
	uint32_t psi_some_avg10;	/* hundredths of a percent */
	uint64_t total_bytes;		/* MemTotal, 0 if unknown */
	uint64_t available_bytes;	/* MemAvailable */
	enum policy_host_level level;
};

/* What the engine remembers between decisions (hysteresis, rates). */
struct policy_state {
	uint64_t calm_since_ms;		/* 0: the guest is not calm */
	uint64_t last_reclaim_ms;	/* 0: never */
	uint64_t last_return_ms;
	uint64_t next_reclaim_ms;	/* the rate's next slot */
	uint64_t alloc_ewma;		/* bytes/s, smoothed */
	uint64_t folded_at_ms;		/* the signals folded into alloc_ewma */
	bool awaiting_op;		/* an operation it started has not been
					 * seen to end */
	uint64_t settled_ms;		/* signals must be newer than this */
	uint64_t misses_seen;		/* view.misses at the last decision */
	uint64_t last_miss_ms;		/* when misses last grew, 0: never */
	bool miss_pending;		/* a miss not yet answered by a return */
	uint64_t retry_ms;		/* an action failed to start: not before */
	bool cpu_mark_set;		/* cpu_mark_ns is the guest's vacate_ns */
	uint64_t cpu_mark_ns;		/* ... when the last reclaim started */
};

enum policy_action {
	POLICY_ACT_NONE,
	POLICY_ACT_RECLAIM,
	POLICY_ACT_RETURN,
	POLICY_ACT_STOP,	/* stop the running reclaim: a return is due */
};

struct policy_decision {
	enum policy_action action;
	uint64_t bytes;			/* RECLAIM / RETURN: a 2 MiB multiple */
	uint64_t headroom_bytes;	/* floor + margin, 0 without signals */
	char reason[POLICY_REASON_MAX];
};

const char *policy_mode_name(enum policy_mode mode);
/* The mode named `name` ("manual", "auto"); -EINVAL if none. */
int policy_mode_from_name(const char *name, enum policy_mode *ret_mode);
const char *policy_action_name(enum policy_action action);

/* Settings of a VM without policy keys: manual, weight 100, ... */
void policy_params_init(struct policy_params *p);

/* The host's level from its PSI and MemAvailable (fills h->level). */
void policy_host_classify(struct policy_host *h);

/*
 * The decision at now_ms.  st carries the hysteresis from one call to the
 * next (zero it for a new VM); the caller carries the action out and, if
 * that fails, calls policy_failed().  Never reclaims below the floor, never
 * reclaims while the guest is not calm, never follows a return with a
 * reclaim sooner than the calm time, never returns more than is held.
 */
void policy_decide(const struct policy_params *p, struct policy_state *st,
		   const struct policy_signals *sig, const struct policy_view *v,
		   const struct policy_host *h, uint64_t now_ms,
		   struct policy_decision *ret);

/*
 * The action of the last decision could not start (at now_ms): forget it
 * was taken, and try again no sooner than POLICY_RETRY_MS later.
 */
void policy_failed(struct policy_state *st, const struct policy_decision *d,
		   uint64_t now_ms);

#endif /* VDF_POLICY_H */
