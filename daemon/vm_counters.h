/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vm_counters.h - one VM's counters and operation history that outlive the
 * daemon (prefix vm_counters_): what metrics export as _total series and
 * what vmdefragctl history lists, saved under the daemon's state_dir.
 */
#ifndef VDF_VM_COUNTERS_H
#define VDF_VM_COUNTERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "reclaim.h"
#include "vmdefrag/proto.h"

struct loop;
struct vm_counters;

#define VM_COUNTERS_HISTORY	64	/* operations kept per VM */
#define VM_COUNTERS_KINDS	3	/* enum reclaim_kind */
#define VM_COUNTERS_STATES	4	/* enum reclaim_op_state */
/* saves wait this long after a change, so a burst costs one write */
#define VM_COUNTERS_SAVE_DELAY_MS	1000

/* Monotonic totals since the VM's state file was created. */
struct vm_counters_totals {
	uint64_t reclaimed_bytes;	/* backing freed by reclaims (done_bytes) */
	uint64_t returned_bytes;	/* given back by returns (done_bytes) */
	uint64_t guest_released_bytes;	/* taken back by the guest under pressure */
	uint64_t vacate_ns;		/* guest CPU spent emptying blocks */
	uint64_t pages_migrated;	/* pages the guest moved to empty blocks */
	uint64_t policy_misses;		/* guest releases under pressure in auto */
	/* ended operations: [enum reclaim_kind][enum reclaim_op_state]
	 * (RECLAIM_OP_RUNNING stays 0) */
	uint64_t ops[VM_COUNTERS_KINDS][VM_COUNTERS_STATES];
};

/* One ended operation. */
struct vm_history_entry {
	uint32_t id;			/* the daemon's id (restarts reuse ids) */
	enum reclaim_kind kind;
	enum reclaim_origin origin;
	enum reclaim_op_state state;	/* never RUNNING */
	uint64_t started_unix_ms;	/* wall clock */
	uint64_t duration_ms;
	uint64_t asked_bytes;
	uint64_t done_bytes;
	int32_t error;			/* 0, or the negative errno when short */
	bool work_known;		/* the two below were measured */
	uint64_t pages_migrated;	/* the guest module's work (reclaims) */
	uint64_t vacate_ns;
};

/*
 * Loads (or starts) the VM's counters from STATE_DIR/<name>.counters;
 * state_dir "" keeps them in memory only.  A file that is missing starts
 * from zero; one that is corrupt is logged as a warning and ignored (the
 * next save replaces it).  Never fails for the file: only -ENOMEM.
 */
int vm_counters_new(struct loop *loop, const char *state_dir, const char *vm_name,
		    struct vm_counters **ret_c);
/* Saves what changed since the last save, then frees. */
void vm_counters_free(struct vm_counters *c);

/* The guest released memory under pressure while the policy was auto. */
void vm_counters_policy_miss(struct vm_counters *c);
/* An operation ended (reclaim_op_end_fn). */
void vm_counters_op_end(struct vm_counters *c, const struct reclaim_op_info *op);
/*
 * Folds in the growth of sources that count from elsewhere: the reclaim
 * engine's guest_released_bytes (since this daemon started) and the guest
 * module's vacate_ns / pages_migrated (since the module loaded; a source
 * that went down restarted, and its whole value is new).  stats may be
 * NULL.
 */
void vm_counters_observe(struct vm_counters *c, uint64_t guest_released_bytes,
			 const struct proto_stats *stats);

void vm_counters_get(const struct vm_counters *c, struct vm_counters_totals *ret_t);
/* Up to max entries, oldest first; returns how many. */
size_t vm_counters_history(const struct vm_counters *c,
			   struct vm_history_entry *ret_entries, size_t max);

/* Writes the file now (tmp + rename); 0 or negative errno (logged). */
int vm_counters_save(struct vm_counters *c);

/*
 * Parses a state file's text into *ret_t / ret_hist (VM_COUNTERS_HISTORY
 * entries, oldest first, *ret_nhist of them) and the last seen module
 * readings; -EBADMSG if anything in it is wrong.  Exposed for tests.
 */
struct vm_counters_seen {
	bool stats;			/* the module's readings below are known */
	uint64_t vacate_ns;
	uint64_t pages_migrated;
};
int vm_counters_parse(const char *text, size_t len, struct vm_counters_totals *ret_t,
		      struct vm_history_entry *ret_hist, size_t *ret_nhist,
		      struct vm_counters_seen *ret_seen);
/* The file name for a VM: <name>.counters, bytes outside [A-Za-z0-9_-.]
 * and a leading '.' as %XX.  -ENAMETOOLONG if it does not fit. */
int vm_counters_file_name(const char *vm_name, char *buf, size_t size);

#endif /* VDF_VM_COUNTERS_H */
