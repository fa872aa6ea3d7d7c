/* SPDX-License-Identifier: GPL-2.0 */
/*
 * reclaim.h - the memory-moving operations of one VM (prefix reclaim_):
 * reclaim (guest empties blocks, host punches their backing), return (host
 * re-backs with 2 MiB folios, guest gets the blocks back), and the
 * reconciliation that follows every (re)connect of the guest session.
 * On the hint backend (anonymous RAM, free page reporting) reclaim has the
 * guest compact blocks instead (backend_hint.h decides the steps), and its
 * result is the measured fall of QEMU's RssAnon; there is nothing to
 * return there.
 * One operation runs per VM at a time; each has an id and a result that
 * status reports until the next one starts.
 */
#ifndef VDF_RECLAIM_H
#define VDF_RECLAIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend_shared.h"
#include "vmdefrag/proto.h"

struct loop;
struct session;
struct vm_layout;
struct reclaim;

enum reclaim_kind {
	RECLAIM_KIND_RECLAIM,
	RECLAIM_KIND_RETURN,
	RECLAIM_KIND_RECONCILE,
};

/* How the host takes memory back from this VM (vm.c decides). */
/* Who asked for an operation (history and metrics show it). */
enum reclaim_origin {
	RECLAIM_ORIGIN_USER,	/* a control request: a person or a script */
	RECLAIM_ORIGIN_POLICY,	/* the daemon's policy engine */
	RECLAIM_ORIGIN_DAEMON,	/* the daemon's own bookkeeping (reconcile) */
};

enum reclaim_backend {
	RECLAIM_BACKEND_NONE,	/* it cannot: why_not says why */
	RECLAIM_BACKEND_SHARED,	/* punch the shared backing file */
	RECLAIM_BACKEND_HINT,	/* guest compacts, free page reporting returns */
};

enum reclaim_op_state {
	RECLAIM_OP_RUNNING,
	RECLAIM_OP_DONE,	/* the whole target */
	RECLAIM_OP_STOPPED,	/* short of the target; reason says why */
	RECLAIM_OP_FAILED,	/* the request failed (session lost, refused) */
};

#define RECLAIM_REASON_MAX	256

struct reclaim_op_info {
	uint32_t id;			/* unique in this daemon's life */
	enum reclaim_kind kind;
	enum reclaim_op_state state;
	enum reclaim_origin origin;
	uint64_t started_unix_ms;	/* wall clock at the start */
	uint64_t target_bytes;		/* asked (reconcile: bytes the guest listed) */
	uint64_t done_bytes;		/* reclaim/reconcile: backing freed (the drop
					 * of st_blocks; hint: the drop of QEMU's
					 * RssAnon); return: bytes the guest got
					 * back */
	int error;			/* negative errno when short, else 0 */
	char reason[RECLAIM_REASON_MAX];	/* one line when short, else "" */
	uint64_t elapsed_ms;
	uint32_t rounds;		/* requests sent to the guest */
	/* return only: how the returned ranges were re-backed */
	bool reback_known;
	enum shared_reback_status reback;	/* the worst seen */
	uint64_t reback_huge_bytes;	/* bytes re-backed by 2 MiB folios */
	char reback_note[192];		/* why not huge, "" if huge */
	/*
	 * shared reclaim only: backing freed by this operation's own punches
	 * (done_bytes is the net drop of the backing, which also moves with
	 * whatever else frees or faults RAM meanwhile: free page reporting
	 * on the same memfd, the guest's migrations)
	 */
	uint64_t punched_bytes;
	/*
	 * reclaim only: the guest module's work, the growth of its counters
	 * (RESP_STATS at the start and at the end of the operation) --
	 * known only when both readings came (not after a lost session or a
	 * cancel); it counts whatever else vacated meanwhile, which is
	 * nothing the daemon asked for (one operation per VM at a time)
	 */
	bool work_known;
	uint64_t pages_migrated;	/* pages moved out of emptied blocks */
	uint64_t vacate_ns;		/* guest CPU the module spent vacating */
	/* hint reclaim only: the guest's claim beside the measurement */
	bool hint;
	uint64_t compacted_bytes;	/* blocks the guest emptied and freed */
	uint64_t rss_anon_before;	/* QEMU's RssAnon at the start */
	uint64_t rss_anon_after;	/* latest sample (the final one when done) */
};

struct reclaim_status {
	bool layout_known;
	bool reconciled;		/* the guest's captures are known */
	uint64_t captured_bytes;	/* held by the guest for the host */
	uint64_t reclaimed_bytes;	/* of those, backing is a hole right now */
	uint64_t pending_bytes;		/* PENDING in the guest (ACK unanswered) */
	uint64_t returned_bytes;	/* given back by return, since daemon start */
	uint64_t guest_released_bytes;	/* taken back by the guest under pressure,
					 * since daemon start */
	uint64_t hint_returned_bytes;	/* hint reclaims: RssAnon drops measured,
					 * summed since daemon start */
	bool have_op;
	struct reclaim_op_info op;	/* running, or the last one */
};

struct reclaim_params {
	uint64_t floor_bytes;		/* REQ_CAPTURE floor (0: module's) */
	uint64_t max_reclaim_bytes;	/* most held at once (0: no limit) */
	uint32_t budget_ms;		/* time budget of one REQ_CAPTURE */
	uint32_t evict;			/* enum vmdefrag_evict, the default */
};

int reclaim_new(struct loop *loop, const char *vm_name, struct session *session,
		const struct reclaim_params *params, struct reclaim **ret_rc);
/* Call after the session is freed (its callbacks may still reach rc). */
void reclaim_free(struct reclaim *rc);
/* New limits (a config reload): the next operation and request use them. */
void reclaim_set_params(struct reclaim *rc, const struct reclaim_params *params);

/*
 * The VM's RAM layout from QEMU, or NULL when QEMU is detached (a running
 * operation fails), and its backend; for RECLAIM_BACKEND_NONE `why_not`
 * says why nothing can be reclaimed.  l must stay valid until the next
 * call.
 */
int reclaim_set_layout(struct reclaim *rc, const struct vm_layout *l,
		       enum reclaim_backend backend, const char *why_not);
/*
 * The same QEMU's layout after memory hot-plug (or unplug): like
 * reclaim_set_layout(), but the state of every block that remains is kept
 * and new blocks are the guest's, so nothing needs reconciling.  Should a
 * block the host holds be gone, it falls back to reclaim_set_layout()
 * (forget, reconcile with the guest).
 */
int reclaim_update_layout(struct reclaim *rc, const struct vm_layout *l,
			  enum reclaim_backend backend, const char *why_not);

/* Session hooks, forwarded by vm.c. */
void reclaim_session_ready(struct reclaim *rc, const struct proto_hello *hello);
void reclaim_session_hello(struct reclaim *rc, const struct proto_hello *hello);
void reclaim_session_down(struct reclaim *rc);
void reclaim_event(struct reclaim *rc, const struct proto_msg *m);

/*
 * The guest's STATS said it holds `guest_captured` bytes captured.  While
 * nothing is in flight that must equal what the host holds for it; when it
 * does not, events were lost and the guest is reconciled again.
 */
void reclaim_guest_stats(struct reclaim *rc, uint64_t guest_captured);

/*
 * Starts a reclaim or return of `bytes` (a 2 MiB multiple).  Errors with
 * one line in err: -EINVAL size not possible, -EBUSY an operation runs,
 * -ENOTCONN guest not ready or not reconciled yet, -EOPNOTSUPP no backend
 * or a return on the hint backend, or an eviction policy the guest
 * predates, -ENODATA QEMU not attached, or the errno of reading QEMU's
 * RssAnon (hint).  evict: the reclaim's eviction policy (enum
 * vmdefrag_evict), or -1 for the VM's default (reclaim_params).
 */
int reclaim_start(struct reclaim *rc, enum reclaim_kind kind, uint64_t bytes,
		  int evict, enum reclaim_origin origin, char *err, size_t errsz,
		  uint32_t *ret_id);

/*
 * Called once when any operation ends (reconciles included), with its
 * final info, after the status shows it; on the loop's thread.  One per
 * reclaim (vm.c counts and records operations through it).
 */
typedef void (*reclaim_op_end_fn)(void *userdata, const struct reclaim_op_info *op);
void reclaim_set_op_end_fn(struct reclaim *rc, reclaim_op_end_fn fn, void *userdata);

/*
 * Ends a running reclaim or return as STOPPED with `why` (a live migration
 * started, or vmdefragctl cancel: reclaim_cancel()).  Its request in flight still completes: blocks the guest
 * captured are punched and ACKed, released ones settle, so nothing is left
 * half done.  A reconcile is left to run.
 */
void reclaim_stop(struct reclaim *rc, const char *why);

/*
 * vmdefragctl cancel: reclaim_stop() of the running reclaim or return if
 * it is operation id (0: whichever runs); *ret_id is the one stopped.
 * -ESRCH if none runs (or another one), -EBUSY for a reconcile (the
 * daemon's own bookkeeping).
 */
int reclaim_cancel(struct reclaim *rc, uint32_t id, uint32_t *ret_id);

/*
 * Punches again every block the guest holds reclaimed (acknowledged or
 * not; the guest never touches them): after a live migration that failed
 * or was cancelled, whose scan read them back in.  The bytes freed.
 */
uint64_t reclaim_repunch(struct reclaim *rc);

void reclaim_get_status(struct reclaim *rc, struct reclaim_status *ret_status);
/*
 * The host's state (enum blockmap_state) of blocks [first, first + n), for
 * the block map; BLOCKMAP_GUEST past the map or without one.
 */
void reclaim_get_blocks(struct reclaim *rc, uint64_t first, uint64_t n,
			uint8_t *ret_states);
/*
 * The operation with this id, if it is the current or last one, or the
 * last reclaim/return (a reconcile after a reconnect does not hide it).
 */
int reclaim_get_op(struct reclaim *rc, uint32_t id, struct reclaim_op_info *ret_op);

const char *reclaim_kind_name(enum reclaim_kind kind);
const char *reclaim_op_state_name(enum reclaim_op_state state);
const char *reclaim_origin_name(enum reclaim_origin origin);

#endif /* VDF_RECLAIM_H */
