/* SPDX-License-Identifier: GPL-2.0 */
/*
 * collapse.h - one pass of MADV_COLLAPSE over a VM's guest RAM in QEMU
 * (prefix collapse_), under a CPU budget.
 *
 * After a live migration with stock QEMU the destination's guest RAM is
 * often mapped with 4 KiB pages (post-copy places 4 KiB pages; khugepaged
 * takes minutes).  A pass walks every 2 MiB range of the VM's RAM that its
 * backing holds entirely (holes, i.e. reclaimed ranges, and partly backed
 * ranges are skipped: collapsing them would allocate memory) and asks the
 * kernel to collapse it.  It runs on the loop in slices of bounded CPU
 * time, sleeping between slices so that the pass uses at most
 * cpu_percent of one CPU.
 *
 * A re-collapse (collapse_queue()) runs the same walk over a few ranges
 * only: the blocks a guest took back after the pass (reclaim.c re-backed
 * them), whose QEMU mapping post-copy left with a page table of 4 KiB
 * entries, so that even a 2 MiB folio is mapped with 4 KiB entries when
 * the guest touches it again.  Same budget, its own counters.
 */
#ifndef VDF_COLLAPSE_H
#define VDF_COLLAPSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct loop;
struct vm_layout;
struct collapse;

enum collapse_state {
	COLLAPSE_IDLE,		/* no pass run yet */
	COLLAPSE_RUNNING,
	COLLAPSE_DONE,		/* every range looked at */
	COLLAPSE_FAILED,	/* stopped early: note says why */
	COLLAPSE_DISABLED,	/* cpu_percent is 0 */
};

#define COLLAPSE_NOTE_MAX	192

struct collapse_status {
	enum collapse_state state;
	uint32_t cpu_percent;		/* the budget */
	uint64_t ram_bytes;		/* 2 MiB ranges of guest RAM the pass covers */
	uint64_t scanned_bytes;		/* of those, looked at so far */
	uint64_t candidate_bytes;	/* backed entirely: worth collapsing */
	uint64_t collapsed_bytes;	/* of those, now one 2 MiB folio (or were) */
	uint64_t folio_only_bytes;	/* of collapsed: QEMU's mapping of them is
					 * not 2 MiB aligned (memfd), so they are
					 * 2 MiB folios mapped with 4 KiB entries */
	uint64_t hole_bytes;		/* skipped: holes or partly backed */
	uint64_t failed_bytes;		/* the kernel could not collapse them */
	uint64_t cpu_ns;		/* CPU time the pass used (this thread) */
	uint64_t elapsed_ms;		/* wall clock, start to end (or now) */
	int error;			/* first error that is not per range */
	char note[COLLAPSE_NOTE_MAX];	/* "" or why failed / what was skipped */
	/* re-collapses of ranges queued after the pass (collapse_queue()),
	 * summed over all of them */
	struct {
		bool running;
		uint32_t passes;		/* started */
		uint64_t queued_bytes;		/* asked for */
		uint64_t candidate_bytes;	/* backed entirely when looked at */
		uint64_t collapsed_bytes;
		uint64_t hole_bytes;		/* skipped: holes or partly backed */
		uint64_t failed_bytes;
		uint64_t cpu_ns;
	} rerun;
};

/* cpu_percent 0..100; 0 disables every pass. */
int collapse_new(struct loop *loop, const char *vm_name, uint32_t cpu_percent,
		 struct collapse **ret_c);
void collapse_free(struct collapse *c);
/* A config reload: the next slice of a pass (and the next pass) uses it;
 * 0 stops a running pass (what it collapsed stays collapsed). */
void collapse_set_cpu_percent(struct collapse *c, uint32_t cpu_percent);

/*
 * Starts a pass over l's RAM in QEMU process pid (l must stay valid until
 * the pass ends or collapse_abort()).  -EBUSY if one runs; with
 * cpu_percent 0 the state becomes DISABLED and 0 is returned.
 */
int collapse_start(struct collapse *c, const struct vm_layout *l, pid_t pid);
/*
 * Queues [gpa, gpa+len) of l's RAM (QEMU pid) for a re-collapse: it runs
 * at once if no pass runs, else after the running one.  Ranges are clipped
 * to the layout's RAM; adjacent ones merge; past COLLAPSE_QUEUE_MAX
 * ranges the whole RAM is queued instead.  A no-op with cpu_percent 0.
 */
#define COLLAPSE_QUEUE_MAX	256
void collapse_queue(struct collapse *c, const struct vm_layout *l, pid_t pid,
		    uint64_t gpa, uint64_t len);
/*
 * Ends a running pass as FAILED with `why`, and drops a running or queued
 * re-collapse (the layout is going away).
 */
void collapse_abort(struct collapse *c, const char *why);
bool collapse_running(const struct collapse *c);
void collapse_get_status(const struct collapse *c, struct collapse_status *ret_st);
const char *collapse_state_name(enum collapse_state state);

#endif /* VDF_COLLAPSE_H */
