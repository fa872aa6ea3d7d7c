// SPDX-License-Identifier: GPL-2.0
/*
 * reclaim.c - reclaim, return and reconcile: the daemon's side of the
 * capture handshake (include/uapi/vmdefrag_genl.h, "Host handshake").
 *
 * Every block's state lives in a blockmap (blockmap.c).  One operation runs
 * per VM, driven by the event loop: each step sends one request to the
 * guest and continues in its response callback (or, to loop, from a 0 ms
 * timer), so nothing ever waits on the guest.  Nor on the host: punching
 * and re-backing run on the VM's worker queue (below).
 *
 * reclaim(SIZE), until SIZE bytes of backing were freed:
 *   candidates = blocks the backing holds (SEEK_DATA) that are GUEST
 *   none left -> STOPPED -ENOSPC
 *   REQ_CAPTURE { SIZE - freed, STRICT, preferred = candidates }
 *   the answer (a run of frames) is validated whole before anything is
 *   punched: every block inside the map, asked for, GUEST, reported once,
 *   and the ranges add up to the run's byte count.  A violation drops the
 *   session and punches nothing (the agent then ACKs all: the blocks are
 *   the guest's to release).  Valid blocks are punched, become RECLAIMED +
 *   UNACKED, and are ACKed.  freed is the net drop of the backing's
 *   st_blocks since the operation started (the guest's migrations may
 *   fault in pages that were holes: those count against it).  An answer
 *   that captured nothing ends the operation with the guest's reason.
 *
 * return(SIZE): RECLAIMED blocks (lowest first) are re-backed with 2 MiB
 *   folios (backend_shared_reback: populate never overwrites data), become
 *   RETURNING, and are RELEASEd; released blocks are GUEST and count as
 *   returned.  A host whose shmem_enabled forbids huge folios still gets
 *   the memory back; the operation says so (reback, reback_note) and the
 *   log warns once per operation.
 *
 * reconcile, on every READY session whose guest has the module: REQ_LIST
 *   (the agent adds VMDEFRAG_A_HOST, so every listed block is PENDING in
 *   the guest), every listed block is punched (punching a hole is a no-op:
 *   this catches a daemon killed between capture and punch), marked
 *   RECLAIMED + UNACKED, and ACKed; every block not listed is GUEST.  So
 *   the counters that matter (captured, reclaimed) are derived from the
 *   guest's list and the backing's holes, never carried across restarts.
 *
 * EVT_RELEASED (guest pressure): the blocks are GUEST again; the ones the
 *   host had reclaimed owe a re-back with huge folios, done on the worker
 *   at once (the guest may already be writing there: populating never
 *   touches existing data).
 *
 * EVT_STATS: when nothing is in flight (no operation, request, ACK or
 *   host job on the worker) the guest's captured_bytes must equal the
 *   blocks the host holds; if not, events were lost and a reconcile runs.  The case: the agent is killed
 *   and the module gives blocks back under pressure before a new agent
 *   starts; the new agent's HELLO is a restatement of a READY session (it
 *   looks like the old agent's), and the EVT_RELEASED went to nobody.
 *   At most one such reconcile per 10 s (a guest's figures are its own).
 *
 * hint reclaim(SIZE) (anonymous RAM, virtio-balloon free page reporting):
 *   the host can neither choose nor punch blocks, so it measures.  The
 *   decisions (compact how much, sample RssAnon when, done or stopped)
 *   are backend_hint.c's state machine; this file carries its steps out:
 *   sends REQ_CAPTURE { COMPACT } (the answer's ranges are only checked to
 *   be RAM: nothing is held, so no block changes state and there is
 *   nothing to ACK, reconcile or return), reads QEMU's RssAnon on the step
 *   timer, and ends the operation with the backend's figures and reason.
 *
 * work of a reclaim (either backend): the guest module's counters
 *   (REQ_STATS) are read before the operation's first request and again
 *   once its result is decided (the target came back, or the guest
 *   stopped); the operation ends when that answer comes, with the growth
 *   as its pages_migrated and vacate_ns.  Whatever ends it meanwhile (the
 *   session lost, a cancel) keeps the decided result, the work unknown.
 *
 * The layers: this file is the operation model (one operation per VM, its
 * id, result, the per-block state and the guest handshake) and calls each
 * backend through its interface: backend_shared_vm_*() (backend_shared.c)
 * is what the host does to a shared backing file (find the backed blocks,
 * punch, re-back, measure), addressed by guest-physical range;
 * backend_hint_*() (backend_hint.c) decides the hint backend's steps;
 * blockmap.c holds the per-block state.  Every request to the guest goes
 * out through reclaim_send(), which makes it the operation's one request
 * in flight and counts the round.
 *
 * Host work off the loop.  A punch (of a capture's answer or a reconcile's
 * list), a return round's re-back and the re-back of blocks the guest took
 * back are jobs on this VM's worker queue (worker.c): run() works on a plan
 * (backend_shared_plan_*: the ranges resolved to file runs, fds
 * duplicated, so the layout may change or go meanwhile), done() applies
 * the result on the loop's thread.  The queue runs one job at a time, in
 * order; at most one operation job (rc->job) and one pressure re-back job
 * (rc->reback_out) are queued, and an operation steps on only from its
 * job's done().  Blocks a job works on carry BLOCKMAP_F_BUSY, and a job's
 * result applies only to blocks that still carry it.  The rules that keep
 * guest data safe:
 *  - a punched block is ACKed only in done(), after its punch: the guest
 *    cannot release (and reuse) a PENDING block, so no punch hits a block
 *    in use by a guest that keeps the handshake;
 *  - when the session ends, the guest acknowledges every PENDING block
 *    itself and may release it: the job's runs not started are not
 *    punched (its stop flag), their blocks stay CAPTURED, and the next
 *    reconcile punches what the guest still lists;
 *  - a guest that releases a block being punched (it ignores the
 *    handshake) stops the job's runs not started the same way; the block
 *    is the guest's at once, and its re-back, queued behind the punch,
 *    populates whatever the punch left (populating never overwrites);
 *  - a return RELEASEs only blocks whose re-back is done (done() sends
 *    the RELEASE), and only those still RECLAIMED: the guest may have
 *    taken some back meanwhile;
 *  - a block captured again while it owes a pressure re-back loses that
 *    debt (re-backing would undo its punch).
 * Without a worker pool (unit tests) the jobs run inline, in the same
 * order.
 *
 * Single-threaded, on the loop's thread (jobs' run() excepted: they touch
 * only their plan).  Response callbacks and job completions may come after
 * the operation ended (session lost: -ECONNRESET; QEMU detached: no layout,
 * so captured blocks are ACKed without a punch).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend_hint.h"
#include "blockmap.h"
#include "hostmem.h"
#include "log.h"
#include "loop.h"
#include "reclaim.h"
#include "session.h"
#include "vm_layout.h"
#include "worker.h"

#define RECLAIM_BLOCK	BLOCKMAP_BLOCK
#define MIB(x)		((unsigned long long)((x) >> 20))
#define RECLAIM_STATS_RECONCILE_MS	10000

/* The request of the operation in flight (at most one). */
struct reclaim_inflight {
	bool active;
	uint32_t id;
	uint16_t type;
	bool have_bytes;
	uint64_t run_bytes;		/* CAPTURE/RELEASE: bytes field of the run */
	uint64_t sum;			/* bytes of the ranges received so far */
	int32_t stop_errno;
	uint64_t next_gpa;		/* LIST: ranges ascend across frames */
};

struct reclaim;

enum reclaim_job_kind {
	RECLAIM_JOB_PUNCH,	/* captured or listed blocks: punch, then ACK */
	RECLAIM_JOB_RETURN,	/* a return round: re-back, then RELEASE */
	RECLAIM_JOB_REBACK,	/* blocks the guest took back: re-back */
};

/* One job on the VM's worker queue; run() touches only what is here. */
struct reclaim_job {
	struct worker_job w;
	struct reclaim *rc;		/* done() only */
	enum reclaim_job_kind kind;
	uint32_t op_id;			/* PUNCH, RETURN: the operation served */
	uint64_t bytes;			/* PUNCH: captured or listed; REBACK: owed */
	bool listed;			/* PUNCH of a reconcile's list */
	int32_t stop_errno;		/* PUNCH of a capture: the guest's reason */
	atomic_bool stop;		/* PUNCH: leave the runs not started */
	struct shared_plan *plan;	/* NULL: nothing to do on the host */
	int plan_err;			/* why plan is NULL */
	size_t nranges;			/* the blocks the job covers */
	struct proto_range *ranges;
	/* written by run(), read by done() */
	uint64_t freed;
	int r;
	struct shared_reback_sum sum;
};

struct reclaim {
	struct loop *loop;
	char name[64];
	struct session *session;
	struct reclaim_params par;

	const struct vm_layout *layout;	/* NULL while QEMU is detached */
	enum reclaim_backend backend;	/* NONE while QEMU is detached */
	char why_not[512];
	struct blockmap map;
	bool have_map;

	bool ready;			/* session READY */
	uint16_t guest_version_max;	/* protocol versions the guest speaks */
	uint32_t evict;			/* eviction policy of the running op */
	bool module;			/* guest HELLO says the module is there */
	bool reconciled;
	bool reconcile_pending;
	uint64_t stats_reconcile_ms;	/* last reconcile a STATS mismatch began */

	bool running;
	struct reclaim_op_info op;	/* running, or the last */
	bool have_op;
	/*
	 * The last reclaim or return that ended: a reconcile that follows a
	 * reconnect replaces `op`, and a client still waiting on the ended
	 * operation must get its result, not "unknown operation".
	 */
	struct reclaim_op_info last_user_op;
	bool have_last_user_op;
	uint64_t op_start_ms;
	uint64_t op_backing_start;	/* reclaim: allocated bytes at its start */
	struct reclaim_inflight in;
	struct loop_timer step;

	uint64_t returned_bytes;
	uint64_t guest_released_bytes;

	/* hint reclaim in progress (op.hint): the backend's state, and what
	 * the step timer does next (COMPACT or SAMPLE) */
	struct backend_hint hint;
	struct backend_hint_step hint_next;
	uint64_t hint_returned_bytes;
	uint64_t hint_rss0;		/* RssAnon when it was asked for */
	struct backend_hint_reach hint_reach;	/* from the scan at its start */

	/*
	 * The guest module's work during a reclaim: its counters read at the
	 * start (work_start, once answered) and at the end.  While finishing,
	 * the result is decided (fin_*) and only the end reading (REQ_STATS
	 * fin_req) is awaited; whatever ends the operation meanwhile keeps
	 * that result.
	 */
	uint32_t work_op;		/* the operation work_start belongs to */
	bool work_have_start;
	struct proto_stats work_start;
	bool finishing;
	uint32_t fin_req;
	enum reclaim_op_state fin_state;
	int fin_error;
	char fin_reason[RECLAIM_REASON_MAX];

	reclaim_op_end_fn op_end_fn;	/* told of every ended operation */
	void *op_end_userdata;

	struct proto_msg *msg;		/* request being built */
	struct proto_range *scratch;	/* PROTO_MAX_RANGES ranges */
	bool ack_out;			/* a REQ_ACK is in the session */

	/* host work on the worker ("Host work off the loop" above) */
	struct worker_queue *wq;
	struct reclaim_job *job;	/* the operation's punch or re-back */
	bool reback_out;		/* a pressure re-back job is queued */
	/*
	 * The operation ended while its punch ran (session lost, cancel,
	 * QEMU gone): it ends for good in the punch's done(), with what the
	 * punch freed counted, so its figures match the backing.
	 */
	bool end_deferred;
	enum reclaim_op_state def_state;
	int def_error;
	char def_reason[RECLAIM_REASON_MAX];
};

static uint32_t reclaim_next_id;

const char *reclaim_kind_name(enum reclaim_kind kind)
{
	switch (kind) {
	case RECLAIM_KIND_RECLAIM: return "reclaim";
	case RECLAIM_KIND_RETURN: return "return";
	case RECLAIM_KIND_RECONCILE: return "reconcile";
	}
	return "?";
}

const char *reclaim_origin_name(enum reclaim_origin origin)
{
	switch (origin) {
	case RECLAIM_ORIGIN_USER: return "user";
	case RECLAIM_ORIGIN_POLICY: return "policy";
	case RECLAIM_ORIGIN_DAEMON: return "daemon";
	}
	return "?";
}

void reclaim_set_op_end_fn(struct reclaim *rc, reclaim_op_end_fn fn, void *userdata)
{
	rc->op_end_fn = fn;
	rc->op_end_userdata = userdata;
}

const char *reclaim_op_state_name(enum reclaim_op_state state)
{
	switch (state) {
	case RECLAIM_OP_RUNNING: return "running";
	case RECLAIM_OP_DONE: return "done";
	case RECLAIM_OP_STOPPED: return "stopped";
	case RECLAIM_OP_FAILED: return "failed";
	}
	return "?";
}

/* Why a CAPTURE stopped short, in words (the module's stop reasons). */
static const char *reclaim_stop_text(int err)
{
	switch (err) {
	case -ENOSPC: return "the guest reached its floor (no more free memory to give)";
	case -EBUSY: return "no block the host backs can be emptied (the rest is "
			    "unmovable or failed to migrate)";
	case -ETIMEDOUT: return "the guest's time budget ran out";
	case -ENOMEM: return "migration in the guest kept failing for memory";
	case -EINTR: return "the guest request was interrupted";
	case 0: return "the guest captured nothing";
	default: return NULL;
	}
}

/* ---- operation lifetime ------------------------------------------------ */

static void reclaim_op_end(struct reclaim *rc, enum reclaim_op_state state,
			   int error, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void reclaim_op_end(struct reclaim *rc, enum reclaim_op_state state,
			   int error, const char *fmt, ...)
{
	struct reclaim_op_info *op = &rc->op;
	va_list ap;

	if (!rc->running)
		return;
	if (rc->job && rc->job->kind == RECLAIM_JOB_PUNCH && rc->job->op_id == op->id) {
		/* its punch is on the worker: end when it is done */
		if (!rc->end_deferred) {
			rc->end_deferred = true;
			rc->def_state = state;
			rc->def_error = error;
			rc->def_reason[0] = '\0';
			if (fmt) {
				va_start(ap, fmt);
				vsnprintf(rc->def_reason, sizeof(rc->def_reason), fmt, ap);
				va_end(ap);
			}
		}
		loop_timer_disarm(rc->loop, &rc->step);
		return;
	}
	rc->end_deferred = false;
	rc->running = false;
	loop_timer_disarm(rc->loop, &rc->step);
	op->reason[0] = '\0';
	if (rc->finishing) {
		/* decided already: only the end reading is missing */
		rc->finishing = false;
		session_cancel(rc->session, rc->fin_req);
		state = rc->fin_state;
		error = rc->fin_error;
		snprintf(op->reason, sizeof(op->reason), "%s", rc->fin_reason);
	} else if (fmt) {
		va_start(ap, fmt);
		vsnprintf(op->reason, sizeof(op->reason), fmt, ap);
		va_end(ap);
	}
	op->state = state;
	op->error = state == RECLAIM_OP_DONE ? 0 : (error ? error : -EIO);
	op->elapsed_ms = loop_now_ms() - rc->op_start_ms;
	if (op->kind == RECLAIM_KIND_RECONCILE && state == RECLAIM_OP_DONE)
		rc->reconciled = true;
	if (op->kind != RECLAIM_KIND_RECONCILE) {
		rc->last_user_op = *op;
		rc->have_last_user_op = true;
	}
	if (op->hint)
		rc->hint_returned_bytes += op->done_bytes;
	if (state == RECLAIM_OP_DONE)
		log_info("VM '%s': %s #%" PRIu32 " done: %llu of %llu MiB in %u "
			 "rounds, %.1f s", rc->name, reclaim_kind_name(op->kind),
			 op->id, MIB(op->done_bytes), MIB(op->target_bytes),
			 op->rounds, (double)op->elapsed_ms / 1000.0);
	else
		log_warning("VM '%s': %s #%" PRIu32 " %s at %llu of %llu MiB: %s",
			    rc->name, reclaim_kind_name(op->kind), op->id,
			    reclaim_op_state_name(state), MIB(op->done_bytes),
			    MIB(op->target_bytes), op->reason);
	if (rc->op_end_fn)
		rc->op_end_fn(rc->op_end_userdata, op);
	if (rc->reconcile_pending && rc->ready && rc->module && rc->have_map)
		loop_timer_arm(rc->loop, &rc->step, 0);
}

static void reclaim_op_begin(struct reclaim *rc, enum reclaim_kind kind,
			     enum reclaim_origin origin, uint64_t target)
{
	struct timespec ts;

	memset(&rc->op, 0, sizeof(rc->op));
	clock_gettime(CLOCK_REALTIME, &ts);
	rc->op.started_unix_ms = (uint64_t)ts.tv_sec * 1000 +
				 (uint64_t)ts.tv_nsec / 1000000;
	rc->op.origin = origin;
	if (++reclaim_next_id == 0)
		reclaim_next_id = 1;
	rc->op.id = reclaim_next_id;
	rc->op.kind = kind;
	rc->op.state = RECLAIM_OP_RUNNING;
	rc->op.target_bytes = target;
	rc->have_op = true;
	rc->running = true;
	rc->op_start_ms = loop_now_ms();
}

/* ---- requests ---------------------------------------------------------- */

/* The backing can be punched: QEMU attached, shared backend. */
static bool reclaim_shared(const struct reclaim *rc)
{
	return rc->backend == RECLAIM_BACKEND_SHARED;	/* NONE without a layout */
}

/*
 * Sends rc->msg as the operation's request in flight (rc->in), answered
 * to cb: one round of the operation.  The negative errno of sending, for
 * the caller to undo its step and end the operation.
 */
static int reclaim_send(struct reclaim *rc, session_resp_fn cb)
{
	int r;

	memset(&rc->in, 0, sizeof(rc->in));
	r = session_request(rc->session, rc->msg, cb, rc, &rc->in.id);
	if (r < 0)
		return r;
	rc->in.active = true;
	rc->in.type = rc->msg->type;
	rc->op.rounds++;
	return 0;
}

/* ---- work: the module's counters around a reclaim ---------------------- */

/* Queues REQ_STATS answered to cb (not a round: the operation's request in
 * flight stays what it is). */
static int reclaim_work_request(struct reclaim *rc, session_resp_fn cb,
				uint32_t *ret_id)
{
	memset(&rc->msg->u, 0, sizeof(rc->msg->u));
	rc->msg->type = PROTO_REQ_STATS;
	return session_request(rc->session, rc->msg, cb, rc, ret_id);
}

static void reclaim_work_begin_resp(void *userdata, int status,
				    const struct proto_msg *m, bool last)
{
	struct reclaim *rc = userdata;

	(void)last;
	if (status < 0 || !m || !rc->running || rc->op.id != rc->work_op)
		return;
	rc->work_start = m->u.stats_resp.stats;
	rc->work_have_start = true;
}

/*
 * A reclaim begins: read the module's counters first (the session answers
 * in order, so before any request of the operation).  Without an answer
 * the operation's work stays unknown; nothing else depends on it.
 */
static void reclaim_work_begin(struct reclaim *rc)
{
	uint32_t id;

	rc->work_op = rc->op.id;
	rc->work_have_start = false;
	if (reclaim_work_request(rc, reclaim_work_begin_resp, &id) < 0)
		log_debug("VM '%s': reclaim #%" PRIu32 ": cannot ask for the "
			  "module's counters; its work stays unknown", rc->name,
			  rc->op.id);
}

/* A reading that fell is a module that reloaded: all of it is new. */
static uint64_t reclaim_work_delta(uint64_t start, uint64_t end)
{
	return end >= start ? end - start : end;
}

static void reclaim_work_end_resp(void *userdata, int status,
				  const struct proto_msg *m, bool last)
{
	struct reclaim *rc = userdata;
	struct reclaim_op_info *op = &rc->op;
	const struct proto_stats *end;

	(void)last;
	if (!rc->running || !rc->finishing || rc->op.id != rc->work_op)
		return;
	rc->finishing = false;		/* answered: nothing to cancel */
	if (status == 0 && m) {
		end = &m->u.stats_resp.stats;
		op->work_known = true;
		op->pages_migrated = reclaim_work_delta(rc->work_start.pages_migrated,
							end->pages_migrated);
		op->vacate_ns = reclaim_work_delta(rc->work_start.vacate_ns,
						   end->vacate_ns);
	}
	reclaim_op_end(rc, rc->fin_state, rc->fin_error, "%s", rc->fin_reason);
}

/*
 * The operation's result is decided (the target came back, or the guest
 * stopped): a reclaim reads the module's counters once more and ends when
 * they come; anything else ends now.
 */
static void reclaim_op_finish(struct reclaim *rc, enum reclaim_op_state state,
			      int error, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void reclaim_op_finish(struct reclaim *rc, enum reclaim_op_state state,
			      int error, const char *fmt, ...)
{
	va_list ap;

	if (!rc->running || rc->finishing)
		return;
	rc->fin_reason[0] = '\0';
	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(rc->fin_reason, sizeof(rc->fin_reason), fmt, ap);
		va_end(ap);
	}
	if (rc->op.kind != RECLAIM_KIND_RECLAIM || !rc->work_have_start ||
	    rc->op.id != rc->work_op || !rc->ready ||
	    reclaim_work_request(rc, reclaim_work_end_resp, &rc->fin_req) < 0)
		return reclaim_op_end(rc, state, error, "%s", rc->fin_reason);
	loop_timer_disarm(rc->loop, &rc->step);
	rc->fin_state = state;
	rc->fin_error = error;
	rc->finishing = true;
}

/* ---- ACK ---------------------------------------------------------------- */

/*
 * ACKs are owed per block (BLOCKMAP_F_ACKQ) and sent coalesced, one REQ_ACK
 * in the session at a time: reclaim_ack_pump() collects the owed blocks
 * into at most PROTO_MAX_RANGES ranges, and the answer pumps the next.  A
 * punch pass of any size (a reconcile of a fragmented guest lists tens of
 * thousands of ranges) thus costs one queue slot, blocks owed while an ACK
 * is out ride in the next one, and the session's queue (which keeps a
 * slot for an ACK beside its SESSION_QUEUE_MAX: session.h) never has to
 * refuse one.  Only blocks the host is done with are ever owed, and an ACK
 * goes out after the host's work on them, so the guest can never release
 * a block still being punched; PROTO_ACK_ALL is never used (a capture's
 * answer in flight would be acknowledged with it).
 */
struct reclaim_ack {
	struct reclaim *rc;
	uint32_t n;
	struct proto_range r[];
};

static void reclaim_ack_pump(struct reclaim *rc);

static void reclaim_ack_done(void *userdata, int status, const struct proto_msg *m,
			     bool last)
{
	struct reclaim_ack *a = userdata;
	struct reclaim *rc = a->rc;

	if (status == 0 && m && rc->have_map) {
		for (uint32_t i = 0; i < a->n; i++)
			if (blockmap_check(&rc->map, a->r[i].gpa, a->r[i].len) == 0)
				blockmap_flag_range(&rc->map, a->r[i].gpa, a->r[i].len,
						    BLOCKMAP_F_UNACKED, false);
	} else if (status != -ECONNRESET) {
		log_warning("VM '%s': guest refused an ACK: %s; its blocks stay "
			    "pending until the session ends", rc->name,
			    strerror(status < 0 ? -status : EPROTO));
	}
	if (!last)
		return;
	free(a);
	rc->ack_out = false;
	reclaim_ack_pump(rc);
}

/* Sends the next REQ_ACK if blocks are owed one and none is out. */
static void reclaim_ack_pump(struct reclaim *rc)
{
	struct proto_msg *m = rc->msg;
	struct reclaim_ack *a;
	uint64_t pos = 0, bytes;
	size_t n;
	int ret;

	if (rc->ack_out || !rc->have_map || !rc->ready)
		return;
	a = malloc(sizeof(*a) + PROTO_MAX_RANGES * sizeof(a->r[0]));
	if (!a) {
		log_error("VM '%s': out of memory for an ACK; retried with the next "
			  "one", rc->name);
		return;
	}
	n = blockmap_collect(&rc->map, BLOCKMAP_NSTATES,
			     BLOCKMAP_F_ACKQ | BLOCKMAP_F_UNACKED, &pos, UINT64_MAX,
			     a->r, PROTO_MAX_RANGES, &bytes);
	if (!n) {
		free(a);
		return;
	}
	a->rc = rc;
	a->n = (uint32_t)n;
	memset(&m->u, 0, sizeof(m->u));
	m->type = PROTO_REQ_ACK;
	m->u.ack.nranges = (uint32_t)n;
	memcpy(m->ranges, a->r, n * sizeof(a->r[0]));
	ret = session_request(rc->session, m, reclaim_ack_done, a, NULL);
	if (ret < 0) {
		free(a);
		/* not connected: the guest ACKs every PENDING block itself */
		if (ret != -ENOTCONN)
			log_warning_errno(ret, "VM '%s': cannot send ACK: %m; "
					  "retried with the next one", rc->name);
		return;
	}
	for (size_t i = 0; i < n; i++)
		blockmap_flag_range(&rc->map, a->r[i].gpa, a->r[i].len,
				    BLOCKMAP_F_ACKQ, false);
	rc->ack_out = true;
}

/* ---- host work on the worker ------------------------------------------ */

static void reclaim_job_free(struct reclaim_job *j)
{
	backend_shared_plan_free(j->plan);
	free(j->ranges);
	free(j);
}

/*
 * Every block matching (state, flags) as coalesced ranges in a malloc'ed
 * array (blockmap_collect() without a cap).  -ENOMEM.
 */
static int reclaim_collect_all(struct reclaim *rc, enum blockmap_state state,
			       uint8_t flags, uint64_t max_bytes,
			       struct proto_range **ret_ranges, size_t *ret_n)
{
	struct proto_range *v = NULL, *nv;
	uint64_t pos = 0, bytes;
	size_t n = 0, k;

	while (max_bytes &&
	       (k = blockmap_collect(&rc->map, state, flags, &pos, max_bytes,
				     rc->scratch, PROTO_MAX_RANGES, &bytes))) {
		nv = realloc(v, (n + k) * sizeof(*v));
		if (!nv) {
			free(v);
			return -ENOMEM;
		}
		v = nv;
		memcpy(v + n, rc->scratch, k * sizeof(*v));
		n += k;
		max_bytes -= bytes;
	}
	*ret_ranges = v;
	*ret_n = n;
	return 0;
}

static void reclaim_flag_ranges(struct reclaim *rc, const struct proto_range *r,
				size_t n, uint8_t flag, bool on)
{
	for (size_t i = 0; i < n; i++)
		blockmap_flag_range(&rc->map, r[i].gpa, r[i].len, flag, on);
}

/* Clears BLOCKMAP_F_BUSY on the job's blocks that still carry it. */
static void reclaim_job_unbusy(struct reclaim *rc, const struct reclaim_job *j)
{
	if (!rc->have_map)
		return;
	for (size_t i = 0; i < j->nranges; i++)
		if (blockmap_check(&rc->map, j->ranges[i].gpa, j->ranges[i].len) == 0)
			blockmap_flag_range(&rc->map, j->ranges[i].gpa, j->ranges[i].len,
					    BLOCKMAP_F_BUSY, false);
}

static void reclaim_job_run(struct worker_job *w)
{
	struct reclaim_job *j = (struct reclaim_job *)w;

	if (!j->plan)
		return;
	if (j->kind == RECLAIM_JOB_PUNCH)
		j->freed = backend_shared_plan_punch(j->plan, &j->stop);
	else
		j->r = backend_shared_plan_reback(j->plan, &j->sum);
}

static void reclaim_job_done(struct worker_job *w, enum worker_end end);

/*
 * A job over ranges (taken: freed with the job, also on failure), with a
 * plan on the VM's backing if it can be punched or re-backed now.  NULL
 * when out of memory.
 */
static struct reclaim_job *reclaim_job_new(struct reclaim *rc,
					   enum reclaim_job_kind kind,
					   struct proto_range *ranges, size_t n)
{
	struct reclaim_job *j = calloc(1, sizeof(*j));

	if (!j) {
		free(ranges);
		return NULL;
	}
	j->w.run = reclaim_job_run;
	j->w.done = reclaim_job_done;
	j->rc = rc;
	j->kind = kind;
	j->ranges = ranges;
	j->nranges = n;
	j->op_id = rc->op.id;
	atomic_init(&j->stop, false);
	j->plan_err = -ENODATA;
	if (reclaim_shared(rc) && n)
		j->plan_err = backend_shared_plan_new(rc->layout, ranges, n, &j->plan);
	return j;
}

/*
 * Queues j on the VM's worker queue.  It never refuses: a full queue
 * (which the one-operation-job, one-re-back-job discipline never fills)
 * would run the job here, late but in the state it expects.
 */
static void reclaim_job_submit(struct reclaim *rc, struct reclaim_job *j)
{
	if (j->kind != RECLAIM_JOB_REBACK)
		rc->job = j;
	else
		rc->reback_out = true;
	if (worker_submit(rc->wq, &j->w) == 0)
		return;
	log_warning("VM '%s': worker queue full; punching or re-backing on the "
		    "loop", rc->name);
	j->w.queue = rc->wq;
	reclaim_job_run(&j->w);
	reclaim_job_done(&j->w, WORKER_RAN);
}

static void reclaim_capture_punched(struct reclaim *rc, const struct reclaim_job *j,
				    uint64_t freed);
static void reclaim_list_punched(struct reclaim *rc, const struct reclaim_job *j,
				 uint64_t freed);
static void reclaim_return_reback_done(struct reclaim *rc, const struct reclaim_job *j);
static void reclaim_reback_pump(struct reclaim *rc);

/*
 * Every SEEN block (captured or listed by the guest) is CAPTURED, PENDING
 * in the guest (UNACKED) and BUSY until its punch job is done; nothing
 * acknowledges it meanwhile (its owed ACK, if any, is withdrawn: the guest
 * must not release a block being punched).  The operation continues in
 * the job's done().
 */
static void reclaim_punch_seen(struct reclaim *rc, uint64_t bytes, bool listed,
			       int32_t stop_errno)
{
	struct reclaim_job *j;
	struct proto_range *v;
	size_t n;

	if (reclaim_collect_all(rc, BLOCKMAP_NSTATES, BLOCKMAP_F_SEEN, UINT64_MAX,
				&v, &n) < 0) {
		/* punch nothing, ACK nothing: the blocks stay captured, and the
		 * guest acknowledges them itself when the session ends */
		log_error("VM '%s': out of memory for a punch; the guest's blocks "
			  "stay captured, not punched", rc->name);
		v = NULL;
		n = 0;
	}
	for (size_t i = 0; i < n; i++) {
		blockmap_set_range(&rc->map, v[i].gpa, v[i].len, BLOCKMAP_CAPTURED);
		blockmap_flag_range(&rc->map, v[i].gpa, v[i].len, BLOCKMAP_F_UNACKED |
				    BLOCKMAP_F_BUSY, true);
	}
	reclaim_flag_ranges(rc, v, n, BLOCKMAP_F_ACKQ | BLOCKMAP_F_REBACK, false);
	blockmap_clear_flag(&rc->map, BLOCKMAP_F_SEEN);
	j = reclaim_job_new(rc, RECLAIM_JOB_PUNCH, v, n);
	if (!j) {
		log_error("VM '%s': out of memory for a punch; the guest's blocks "
			  "stay captured, not punched", rc->name);
		blockmap_clear_flag(&rc->map, BLOCKMAP_F_BUSY);
		return;
	}
	j->bytes = bytes;
	j->listed = listed;
	j->stop_errno = stop_errno;
	reclaim_job_submit(rc, j);
}

/* A punch job's results on the blocks that are still its own. */
static uint64_t reclaim_punch_apply(struct reclaim *rc, const struct reclaim_job *j)
{
	uint64_t freed = 0;

	if (!rc->have_map)
		return 0;
	if (!j->plan && reclaim_shared(rc) && j->nranges)
		log_error_errno(j->plan_err, "VM '%s': cannot punch the blocks the "
				"guest captured: %m; leaving them captured", rc->name);
	for (size_t i = 0; j->plan && i < j->plan->nruns; i++) {
		const struct shared_run *run = &j->plan->runs[i];

		if (run->r == -ECANCELED)
			continue;
		if (run->r < 0) {
			log_error_errno(run->r, "VM '%s': cannot punch [0x%" PRIx64
					", +%llu MiB) of the backing: %m; leaving it "
					"captured", rc->name, run->gpa, MIB(run->len));
			continue;
		}
		freed += run->freed;
		if (blockmap_check(&rc->map, run->gpa, run->len) < 0)
			continue;
		for (uint64_t b = run->gpa / RECLAIM_BLOCK;
		     b < (run->gpa + run->len) / RECLAIM_BLOCK; b++)
			if (blockmap_test(&rc->map, b, BLOCKMAP_F_BUSY))
				blockmap_set(&rc->map, b, BLOCKMAP_RECLAIMED);
	}
	/* done with every block still the job's: punched or not, ACK it */
	for (size_t i = 0; i < j->nranges; i++) {
		const struct proto_range *r = &j->ranges[i];

		if (blockmap_check(&rc->map, r->gpa, r->len) < 0)
			continue;
		for (uint64_t b = r->gpa / RECLAIM_BLOCK;
		     b < (r->gpa + r->len) / RECLAIM_BLOCK; b++) {
			if (!blockmap_test(&rc->map, b, BLOCKMAP_F_BUSY))
				continue;	/* the guest took it back meanwhile */
			blockmap_flag(&rc->map, b, BLOCKMAP_F_BUSY, false);
			if (rc->ready)
				blockmap_flag(&rc->map, b, BLOCKMAP_F_ACKQ, true);
		}
	}
	return freed;
}

/* What an operation's punch freed, counted in it (reclaim or reconcile). */
static void reclaim_punch_count(struct reclaim *rc, const struct reclaim_job *j,
				uint64_t freed)
{
	struct reclaim_op_info *op = &rc->op;

	if (op->kind == RECLAIM_KIND_RECONCILE) {
		op->done_bytes = freed;
		return;
	}
	op->punched_bytes += freed;
	/*
	 * What counts is the backing's net drop since the start: the guest's
	 * migrations may have faulted in pages elsewhere meanwhile.
	 */
	if (rc->layout) {
		uint64_t now = backend_shared_vm_allocated(rc->layout);

		op->done_bytes = rc->op_backing_start > now ? rc->op_backing_start - now : 0;
	}
	(void)j;
}

static void reclaim_job_done(struct worker_job *w, enum worker_end end)
{
	struct reclaim_job *j = (struct reclaim_job *)w;
	struct reclaim *rc = j->rc;
	uint64_t freed;

	if (end == WORKER_CANCELLED) {
		/* the reclaim is being freed: touch nothing of it */
		reclaim_job_free(j);
		return;
	}
	if (rc->job == j)
		rc->job = NULL;
	switch (j->kind) {
	case RECLAIM_JOB_PUNCH:
		freed = reclaim_punch_apply(rc, j);
		reclaim_ack_pump(rc);
		if (rc->end_deferred && rc->running && rc->op.id == j->op_id) {
			reclaim_punch_count(rc, j, freed);
			reclaim_op_end(rc, rc->def_state, rc->def_error, "%s",
				       rc->def_reason);
		} else if (j->listed)
			reclaim_list_punched(rc, j, freed);
		else
			reclaim_capture_punched(rc, j, freed);
		break;
	case RECLAIM_JOB_RETURN:
		reclaim_return_reback_done(rc, j);
		break;
	case RECLAIM_JOB_REBACK:
		rc->reback_out = false;
		if (j->plan && j->r < 0)
			log_warning_errno(j->r, "VM '%s': cannot re-back what the guest "
					  "took back: %m; the guest faults it in",
					  rc->name);
		else if (j->plan)
			log_info("VM '%s': re-backed %llu MiB the guest took back, %llu "
				 "MiB with 2 MiB folios", rc->name,
				 MIB(j->bytes), MIB(j->sum.huge_bytes));
		reclaim_reback_pump(rc);
		break;
	}
	reclaim_job_free(j);
	if (!rc->running && rc->reconcile_pending && !rc->job)
		loop_timer_arm(rc->loop, &rc->step, 0);
}

/*
 * Re-backs, on the worker, every block owed one (BLOCKMAP_F_REBACK: the
 * guest took it back under pressure), one job at a time: blocks owed while
 * one runs go in the next.  The VM's queue orders it after any punch of
 * the same blocks queued before.
 */
static void reclaim_reback_pump(struct reclaim *rc)
{
	struct reclaim_job *j;
	struct proto_range *v;
	uint64_t bytes = 0;
	size_t n;

	if (rc->reback_out || !rc->have_map || !rc->map.nblocks)
		return;
	if (reclaim_collect_all(rc, BLOCKMAP_NSTATES, BLOCKMAP_F_REBACK, UINT64_MAX,
				&v, &n) < 0 || !n) {
		free(n ? v : NULL);
		return;
	}
	reclaim_flag_ranges(rc, v, n, BLOCKMAP_F_REBACK, false);
	if (!reclaim_shared(rc)) {
		free(v);	/* nothing to re-back (QEMU gone, or hint) */
		return;
	}
	for (size_t i = 0; i < n; i++)
		bytes += v[i].len;
	j = reclaim_job_new(rc, RECLAIM_JOB_REBACK, v, n);
	if (!j)
		return;		/* the guest faults it in */
	j->bytes = bytes;
	reclaim_job_submit(rc, j);
}

/* ---- violations ---------------------------------------------------------- */

static void reclaim_violation(struct reclaim *rc, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void reclaim_violation(struct reclaim *rc, const char *fmt, ...)
{
	char why[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (rc->have_map)
		blockmap_clear_flag(&rc->map, BLOCKMAP_F_ASKED | BLOCKMAP_F_SEEN);
	reclaim_op_end(rc, RECLAIM_OP_FAILED, -EPROTO, "guest broke the protocol, "
		       "session dropped, nothing punched: %s", why);
	rc->in.active = false;
	session_cancel(rc->session, rc->in.id);
	session_drop(rc->session, "%s", why);
}

/*
 * Every frame of one RESP_CAPTURE run repeats the run's byte count (and
 * stop reason): the first frame sets them, a later one that differs is a
 * violation (handled here).  False when the caller must stop.
 */
static bool reclaim_capture_run_bytes(struct reclaim *rc,
				      const struct proto_ranges_resp *rr)
{
	if (!rc->in.have_bytes) {
		rc->in.have_bytes = true;
		rc->in.run_bytes = rr->bytes;
		rc->in.stop_errno = rr->stop_errno;
		return true;
	}
	if (rr->bytes == rc->in.run_bytes)
		return true;
	reclaim_violation(rc, "RESP_CAPTURE run changes its byte count from %"
			  PRIu64 " to %" PRIu64, rc->in.run_bytes, rr->bytes);
	return false;
}

/* At a run's last frame its ranges must add up to its byte count. */
static bool reclaim_capture_run_adds_up(struct reclaim *rc)
{
	if (rc->in.sum == rc->in.run_bytes)
		return true;
	reclaim_violation(rc, "RESP_CAPTURE ranges add up to %" PRIu64 " bytes, "
			  "the answer says %" PRIu64, rc->in.sum, rc->in.run_bytes);
	return false;
}

/*
 * Checks the ranges of one response frame and marks their blocks SEEN.
 * need_asked: every block must carry ASKED (STRICT subset); want: the state
 * each block must be in (BLOCKMAP_NSTATES: any).  false after a violation
 * (the session is gone).
 */
static bool reclaim_take_ranges(struct reclaim *rc, const struct proto_msg *m,
				uint32_t n, bool need_asked, enum blockmap_state want)
{
	struct blockmap *bm = &rc->map;

	for (uint32_t i = 0; i < n; i++) {
		const struct proto_range *r = &m->ranges[i];

		if (blockmap_check(bm, r->gpa, r->len) < 0) {
			reclaim_violation(rc, "%s range [0x%" PRIx64 ", +0x%" PRIx64
					  ") is outside the VM's RAM",
					  proto_type_name(m->type), r->gpa, r->len);
			return false;
		}
		for (uint64_t b = r->gpa / RECLAIM_BLOCK;
		     b < (r->gpa + r->len) / RECLAIM_BLOCK; b++) {
			const char *why = NULL;

			if (blockmap_test(bm, b, BLOCKMAP_F_SEEN))
				why = "reported twice";
			else if (need_asked && !blockmap_test(bm, b, BLOCKMAP_F_ASKED))
				why = "not asked for (strict capture)";
			else if (want != BLOCKMAP_NSTATES && blockmap_get(bm, b) != want)
				why = want == BLOCKMAP_GUEST ? "already captured" :
				      "not one the host asked to release";
			if (why) {
				reclaim_violation(rc, "%s block 0x%" PRIx64 " %s",
						  proto_type_name(m->type),
						  (uint64_t)(b * RECLAIM_BLOCK), why);
				return false;
			}
			blockmap_flag(bm, b, BLOCKMAP_F_SEEN, true);
		}
		rc->in.sum += r->len;
	}
	return true;
}

/* ---- reclaim ----------------------------------------------------------- */

static void reclaim_capture_resp(void *userdata, int status,
				 const struct proto_msg *m, bool last);

struct reclaim_candidates {
	struct reclaim *rc;
	uint32_t n;
	uint64_t total;
};

/* A block the backing holds: a candidate if the guest has it (GUEST). */
static int reclaim_candidate(uint64_t gpa, void *arg)
{
	struct reclaim_candidates *c = arg;
	struct reclaim *rc = c->rc;
	struct proto_range *v = rc->msg->ranges;
	uint64_t b = gpa / RECLAIM_BLOCK;

	if (b >= rc->map.nblocks || blockmap_get(&rc->map, b) != BLOCKMAP_GUEST)
		return 0;
	if (c->n && v[c->n - 1].gpa + v[c->n - 1].len == gpa) {
		v[c->n - 1].len += RECLAIM_BLOCK;
	} else {
		if (c->n == PROTO_MAX_RANGES)
			return 1;	/* the request is full */
		v[c->n].gpa = gpa;
		v[c->n].len = RECLAIM_BLOCK;
		c->n++;
	}
	blockmap_flag(&rc->map, b, BLOCKMAP_F_ASKED, true);
	c->total += RECLAIM_BLOCK;
	return 0;
}

/*
 * Marks ASKED the GUEST blocks the backing holds and collects them as
 * coalesced ranges into rc->msg (at most PROTO_MAX_RANGES); their bytes.
 */
static uint64_t reclaim_candidates(struct reclaim *rc, uint32_t *ret_n)
{
	struct reclaim_candidates c = { .rc = rc };

	(void)backend_shared_vm_backed_blocks(rc->layout, reclaim_candidate, &c);
	*ret_n = c.n;
	return c.total;
}

static void reclaim_step_reclaim(struct reclaim *rc)
{
	struct reclaim_op_info *op = &rc->op;
	struct proto_msg *m = rc->msg;
	uint64_t want, backed;
	uint32_t n;
	int r;

	memset(&m->u, 0, sizeof(m->u));
	backed = reclaim_candidates(rc, &n);
	if (!backed)
		return reclaim_op_finish(rc, RECLAIM_OP_STOPPED, -ENOSPC,
					 "no backed block left to empty");
	want = op->target_bytes - op->done_bytes;
	want = (want + RECLAIM_BLOCK - 1) & ~(RECLAIM_BLOCK - 1);
	m->type = PROTO_REQ_CAPTURE;
	m->u.capture.bytes = want;
	m->u.capture.mode = VMDEFRAG_MODE_CAPTURE;
	m->u.capture.budget_ms = rc->par.budget_ms;
	m->u.capture.floor_bytes = rc->par.floor_bytes;
	m->u.capture.flags = PROTO_CAPTURE_STRICT |
			     rc->evict << PROTO_CAPTURE_EVICT_SHIFT;
	m->u.capture.nranges = n;
	r = reclaim_send(rc, reclaim_capture_resp);
	if (r < 0) {
		blockmap_clear_flag(&rc->map, BLOCKMAP_F_ASKED);
		return reclaim_op_end(rc, RECLAIM_OP_FAILED, r, "cannot send CAPTURE "
				      "to the guest: %s", strerror(-r));
	}
	log_debug("VM '%s': reclaim #%" PRIu32 " round %u: CAPTURE %llu MiB strict "
		  "from %u ranges (%llu MiB backed)", rc->name, op->id, op->rounds,
		  MIB(want), n, MIB(backed));
}

static void reclaim_capture_resp(void *userdata, int status,
				 const struct proto_msg *m, bool last)
{
	struct reclaim *rc = userdata;
	const struct proto_ranges_resp *rr;

	if (status < 0 || !m) {
		if (rc->have_map)
			blockmap_clear_flag(&rc->map, BLOCKMAP_F_ASKED | BLOCKMAP_F_SEEN);
		rc->in.active = false;
		if (status == -ECONNRESET)
			return reclaim_op_end(rc, RECLAIM_OP_FAILED, status,
					      "guest session lost");
		return reclaim_op_end(rc, RECLAIM_OP_FAILED, status, "guest refused "
				      "CAPTURE: %s%s", strerror(-status),
				      status == -EINVAL ? " (does its module "
				      "support the capture handshake?)" : "");
	}
	rr = &m->u.ranges_resp;
	if (!reclaim_capture_run_bytes(rc, rr))
		return;
	if (!reclaim_take_ranges(rc, m, rr->nranges, true, BLOCKMAP_GUEST))
		return;
	if (!last)
		return;
	if (!reclaim_capture_run_adds_up(rc))
		return;
	rc->in.active = false;
	blockmap_clear_flag(&rc->map, BLOCKMAP_F_ASKED);
	/* valid as a whole: only now punch, on the worker; the round goes on
	 * in reclaim_capture_punched() */
	reclaim_punch_seen(rc, rc->in.sum, false, rc->in.stop_errno);
}

/* The punch of a capture's answer is done (its blocks are ACKed). */
static void reclaim_capture_punched(struct reclaim *rc, const struct reclaim_job *j,
				    uint64_t freed)
{
	struct reclaim_op_info *op = &rc->op;
	bool ours = rc->running && op->kind == RECLAIM_KIND_RECLAIM &&
		    op->id == j->op_id;
	uint64_t captured = j->bytes;
	int32_t stop_errno = j->stop_errno;

	if (!ours) {
		/* the operation was stopped (cancel, migration) meanwhile */
		if (captured)
			log_info("VM '%s': the last request of stopped reclaim #%" PRIu32
				 " completed: guest captured %llu MiB, punched %llu MiB",
				 rc->name, j->op_id, MIB(captured), MIB(freed));
		return;
	}
	reclaim_punch_count(rc, j, freed);
	log_info("VM '%s': reclaim #%" PRIu32 " round %u: guest captured %llu MiB, "
		 "punched %llu MiB (backing down %llu of %llu MiB)", rc->name, op->id,
		 op->rounds, MIB(captured), MIB(freed), MIB(op->done_bytes),
		 MIB(op->target_bytes));
	if (op->done_bytes >= op->target_bytes)
		return reclaim_op_finish(rc, RECLAIM_OP_DONE, 0, NULL);
	if (!rc->layout)
		return reclaim_op_end(rc, RECLAIM_OP_FAILED, -ENODATA,
				      "QEMU monitor lost: captured blocks left unpunched");
	if (captured == 0) {
		const char *text = reclaim_stop_text(stop_errno);

		if (text)
			return reclaim_op_finish(rc, RECLAIM_OP_STOPPED,
						 stop_errno ? stop_errno : -ENOSPC,
						 "%s", text);
		return reclaim_op_finish(rc, RECLAIM_OP_STOPPED, stop_errno,
					 "the guest stopped: %s", strerror(-stop_errno));
	}
	loop_timer_arm(rc->loop, &rc->step, 0);
}

/* ---- return ------------------------------------------------------------ */

static void reclaim_release_resp(void *userdata, int status,
				 const struct proto_msg *m, bool last);

static void reclaim_step_return(struct reclaim *rc)
{
	struct reclaim_op_info *op = &rc->op;
	struct reclaim_job *j;
	struct proto_range *v;
	size_t n;

	if (reclaim_collect_all(rc, BLOCKMAP_RECLAIMED, 0,
				op->target_bytes - op->done_bytes, &v, &n) < 0)
		return reclaim_op_end(rc, RECLAIM_OP_FAILED, -ENOMEM, "out of memory");
	if (n > PROTO_MAX_RANGES)
		n = PROTO_MAX_RANGES;	/* one RELEASE's worth; the rest next round */
	if (!n) {
		free(v);
		return reclaim_op_end(rc, RECLAIM_OP_STOPPED, -ENOSPC,
				      "no reclaimed block left to return (the guest "
				      "took %llu MiB back itself)",
				      MIB(rc->guest_released_bytes));
	}
	/* re-back first, on the worker: the guest gets 2 MiB folios, not
	 * faults, and gets nothing before its re-back is done */
	reclaim_flag_ranges(rc, v, n, BLOCKMAP_F_BUSY, true);
	j = reclaim_job_new(rc, RECLAIM_JOB_RETURN, v, n);
	if (!j) {
		blockmap_clear_flag(&rc->map, BLOCKMAP_F_BUSY);
		return reclaim_op_end(rc, RECLAIM_OP_FAILED, -ENOMEM, "out of memory");
	}
	reclaim_job_submit(rc, j);
}

/*
 * A return round's re-back is done: the blocks re-backed that are still
 * the host's (the guest may have taken some back meanwhile) become
 * RETURNING and are RELEASEd.
 */
static void reclaim_return_reback_done(struct reclaim *rc, const struct reclaim_job *j)
{
	struct reclaim_op_info *op = &rc->op;
	struct proto_msg *m = rc->msg;
	bool ours = rc->running && op->kind == RECLAIM_KIND_RETURN && op->id == j->op_id;
	uint64_t pos = 0, bytes;
	size_t n;
	int r;

	if (!ours || !rc->have_map || !j->plan || j->r < 0) {
		/* re-backed or not, they stay RECLAIMED (status derives the
		 * holes from the backing) and a later return re-backs again */
		reclaim_job_unbusy(rc, j);
		if (!ours)
			return;
		if (!j->plan)
			return reclaim_op_end(rc, RECLAIM_OP_FAILED, j->plan_err,
					      "cannot re-back: %s", j->plan_err == -ENODATA ?
					      "QEMU monitor lost" : strerror(-j->plan_err));
		for (size_t i = 0; i < j->plan->nruns; i++)
			if (j->plan->runs[i].r < 0 && j->plan->runs[i].r != -ECANCELED)
				return reclaim_op_end(rc, RECLAIM_OP_FAILED, j->r,
						      "cannot re-back [0x%" PRIx64 ", +%llu "
						      "MiB): %s", j->plan->runs[i].gpa,
						      MIB(j->plan->runs[i].len),
						      strerror(-j->r));
		return reclaim_op_end(rc, RECLAIM_OP_FAILED, j->r, "cannot re-back: %s",
				      strerror(-j->r));
	}
	if (!op->reback_known || j->sum.worst > op->reback) {
		char note[sizeof(op->reback_note)];

		backend_shared_reback_note(&j->sum, note, sizeof(note));
		if (j->sum.worst == SHARED_REBACK_SMALL_POLICY && !op->reback_known)
			log_warning("VM '%s': return #%" PRIu32 ": %s", rc->name,
				    op->id, note);
		op->reback = j->sum.worst;
		snprintf(op->reback_note, sizeof(op->reback_note), "%s", note);
		op->reback_known = true;
	}
	op->reback_huge_bytes += j->sum.huge_bytes;
	memset(&m->u, 0, sizeof(m->u));
	n = blockmap_collect(&rc->map, BLOCKMAP_RECLAIMED, BLOCKMAP_F_BUSY, &pos,
			     UINT64_MAX, m->ranges, PROTO_MAX_RANGES, &bytes);
	for (size_t i = 0; i < n; i++)
		blockmap_set_range(&rc->map, m->ranges[i].gpa, m->ranges[i].len,
				   BLOCKMAP_RETURNING);
	reclaim_job_unbusy(rc, j);
	if (!n) {
		/* the guest took them all back meanwhile: next round */
		loop_timer_arm(rc->loop, &rc->step, 0);
		return;
	}
	m->type = PROTO_REQ_RELEASE;
	m->u.release.nranges = (uint32_t)n;
	r = reclaim_send(rc, reclaim_release_resp);
	if (r < 0) {
		/* re-backed but still captured by the guest */
		for (size_t i = 0; i < n; i++)
			blockmap_set_range(&rc->map, m->ranges[i].gpa, m->ranges[i].len,
					   BLOCKMAP_CAPTURED);
		return reclaim_op_end(rc, RECLAIM_OP_FAILED, r, "cannot send RELEASE "
				      "to the guest: %s", strerror(-r));
	}
	log_debug("VM '%s': return #%" PRIu32 " round %u: re-backed %llu MiB "
		  "(%llu MiB huge), RELEASE sent", rc->name, op->id, op->rounds,
		  MIB(bytes), MIB(j->sum.huge_bytes));
}

/* Every RETURNING block becomes `to`; SEEN ones count as returned. */
static uint64_t reclaim_settle_returning(struct reclaim *rc, enum blockmap_state to)
{
	uint64_t released = 0;

	for (uint64_t b = 0; b < rc->map.nblocks; b++) {
		if (blockmap_get(&rc->map, b) != BLOCKMAP_RETURNING)
			continue;
		if (blockmap_test(&rc->map, b, BLOCKMAP_F_SEEN)) {
			blockmap_set(&rc->map, b, BLOCKMAP_GUEST);
			released += RECLAIM_BLOCK;
		} else if (to == BLOCKMAP_GUEST) {
			/* not captured any more: the guest took it back itself */
			blockmap_set(&rc->map, b, BLOCKMAP_GUEST);
			rc->guest_released_bytes += RECLAIM_BLOCK;
		} else {
			blockmap_set(&rc->map, b, to);
		}
		blockmap_flag(&rc->map, b, BLOCKMAP_F_SEEN | BLOCKMAP_F_UNACKED, false);
	}
	return released;
}

static void reclaim_release_resp(void *userdata, int status,
				 const struct proto_msg *m, bool last)
{
	struct reclaim *rc = userdata;
	struct reclaim_op_info *op = &rc->op;
	bool ours = rc->running && op->kind == RECLAIM_KIND_RETURN;
	uint64_t released;

	if (status < 0 || !m) {
		rc->in.active = false;
		if (rc->have_map) {
			blockmap_clear_flag(&rc->map, BLOCKMAP_F_SEEN);
			/* re-backed, still captured (or the session is gone and
			 * reconcile will tell) */
			reclaim_settle_returning(rc, BLOCKMAP_CAPTURED);
		}
		if (status == -ECONNRESET)
			return reclaim_op_end(rc, RECLAIM_OP_FAILED, status,
					      "guest session lost");
		return reclaim_op_end(rc, RECLAIM_OP_FAILED, status,
				      "guest refused RELEASE: %s", strerror(-status));
	}
	if (!reclaim_take_ranges(rc, m, m->u.ranges_resp.nranges, false,
				 BLOCKMAP_RETURNING))
		return;
	if (!last)
		return;
	rc->in.active = false;
	released = reclaim_settle_returning(rc, BLOCKMAP_GUEST);
	rc->returned_bytes += released;
	if (!ours)
		return;
	op->done_bytes += released;
	log_info("VM '%s': return #%" PRIu32 " round %u: guest got %llu MiB back "
		 "(total %llu of %llu MiB)", rc->name, op->id, op->rounds,
		 MIB(released), MIB(op->done_bytes), MIB(op->target_bytes));
	if (op->done_bytes >= op->target_bytes)
		return reclaim_op_end(rc, RECLAIM_OP_DONE, 0, NULL);
	loop_timer_arm(rc->loop, &rc->step, 0);
}

/* ---- reconcile ---------------------------------------------------------- */

static void reclaim_list_resp(void *userdata, int status,
			      const struct proto_msg *m, bool last)
{
	struct reclaim *rc = userdata;
	struct reclaim_op_info *op = &rc->op;
	struct blockmap *bm = &rc->map;

	if (status < 0 || !m) {
		rc->in.active = false;
		if (rc->have_map)
			blockmap_clear_flag(bm, BLOCKMAP_F_SEEN);
		return reclaim_op_end(rc, RECLAIM_OP_FAILED, status, "%s",
				      status == -ECONNRESET ? "guest session lost" :
				      status == -ENODEV ? "guest module not loaded" :
				      strerror(-status));
	}
	if (m->u.list.nranges && m->ranges[0].gpa < rc->in.next_gpa)
		return reclaim_violation(rc, "RESP_LIST run out of order");
	if (!reclaim_take_ranges(rc, m, m->u.list.nranges, false, BLOCKMAP_NSTATES))
		return;
	if (m->u.list.nranges) {
		const struct proto_range *lr = &m->ranges[m->u.list.nranges - 1];

		rc->in.next_gpa = lr->gpa + lr->len;
	}
	if (!last)
		return;
	rc->in.active = false;
	/* the guest's list is the truth: everything else is the guest's */
	for (uint64_t b = 0; b < bm->nblocks; b++) {
		if (blockmap_test(bm, b, BLOCKMAP_F_SEEN))
			continue;
		if (blockmap_get(bm, b) != BLOCKMAP_GUEST)
			blockmap_set(bm, b, BLOCKMAP_GUEST);
		blockmap_flag(bm, b, BLOCKMAP_F_UNACKED | BLOCKMAP_F_ASKED, false);
	}
	op->target_bytes = rc->in.sum;
	/* punch what is still backed (a daemon killed between capture and
	 * punch), ACK everything listed: reclaim_list_punched() */
	reclaim_punch_seen(rc, rc->in.sum, true, 0);
}

static void reclaim_list_punched(struct reclaim *rc, const struct reclaim_job *j,
				 uint64_t freed)
{
	struct reclaim_op_info *op = &rc->op;

	if (!rc->running || op->kind != RECLAIM_KIND_RECONCILE || op->id != j->op_id)
		return;		/* ended meanwhile (session lost): not reconciled */
	reclaim_punch_count(rc, j, freed);
	log_info("VM '%s': reconciled: the guest holds %llu MiB captured, %llu MiB "
		 "of it was still backed and is reclaimed now", rc->name,
		 MIB(j->bytes), MIB(freed));
	reclaim_op_end(rc, RECLAIM_OP_DONE, 0, NULL);
}

static void reclaim_start_reconcile(struct reclaim *rc)
{
	struct proto_msg *m = rc->msg;
	int r;

	rc->reconcile_pending = false;
	rc->reconciled = false;
	reclaim_op_begin(rc, RECLAIM_KIND_RECONCILE, RECLAIM_ORIGIN_DAEMON, 0);
	blockmap_clear_flag(&rc->map, BLOCKMAP_F_SEEN | BLOCKMAP_F_ASKED);
	memset(&m->u, 0, sizeof(m->u));
	m->type = PROTO_REQ_LIST;
	r = reclaim_send(rc, reclaim_list_resp);
	if (r < 0)
		return reclaim_op_end(rc, RECLAIM_OP_FAILED, r, "cannot send LIST: %s",
				      strerror(-r));
}

/* Reconcile now if it is due and possible, else remember it. */
static void reclaim_maybe_reconcile(struct reclaim *rc)
{
	if (!rc->ready || !rc->module)
		return;
	if (rc->running || rc->in.active || rc->job || !rc->have_map) {
		rc->reconcile_pending = true;
		return;
	}
	reclaim_start_reconcile(rc);
}

/* ---- hint reclaim: backend_hint.c decides, this carries it out ---------- */

static void reclaim_hint_capture_resp(void *userdata, int status,
				      const struct proto_msg *m, bool last);

/* QEMU's RssAnon now. */
static int reclaim_hint_rss(struct reclaim *rc, uint64_t *ret_rss)
{
	struct hostmem_status hs;
	int r;

	if (!rc->layout)
		return -ENODATA;
	r = hostmem_read_status(rc->layout->pid, &hs);
	if (r < 0)
		return r;
	*ret_rss = hs.rss_anon;
	return 0;
}

/* Does what the backend's step says; its figures become the op's. */
static void reclaim_hint_do(struct reclaim *rc, const struct backend_hint_step *s)
{
	struct reclaim_op_info *op = &rc->op;
	const char *text;

	op->done_bytes = rc->hint.returned_bytes;
	op->compacted_bytes = rc->hint.compacted_bytes;
	op->rss_anon_before = rc->hint.rss_before;
	op->rss_anon_after = rc->hint.rss_after;
	switch (s->action) {
	case BACKEND_HINT_COMPACT:
		rc->hint_next = *s;
		loop_timer_arm(rc->loop, &rc->step, 0);
		return;
	case BACKEND_HINT_SAMPLE:
		rc->hint_next = *s;
		loop_timer_arm(rc->loop, &rc->step, s->delay_ms);
		return;
	case BACKEND_HINT_DONE:
		return reclaim_op_finish(rc, RECLAIM_OP_DONE, 0, NULL);
	case BACKEND_HINT_STOPPED:
		if (!s->guest_stopped)
			return reclaim_op_finish(rc, RECLAIM_OP_STOPPED, s->error,
						 "%s", s->reason);
		text = reclaim_stop_text(s->error);
		return reclaim_op_finish(rc, RECLAIM_OP_STOPPED,
					 s->error ? s->error : -ENOSPC, "%s; %s",
					 s->reason, text ? text : strerror(-s->error));
	}
}

/* The backend's first step, with what the scan said (or not). */
static void reclaim_hint_begin(struct reclaim *rc)
{
	static const struct backend_hint_reach unknown;
	struct backend_hint_step s;

	/*
	 * Eviction frees memory the guest uses, too: the reach (free memory
	 * reporting has not returned) is no bound on what it can give back.
	 */
	backend_hint_begin(&rc->hint, rc->name, rc->op.id, rc->op.target_bytes,
			   rc->evict == VMDEFRAG_EVICT_NONE ? &rc->hint_reach : &unknown,
			   rc->hint_rss0, &s);
	reclaim_hint_do(rc, &s);
}

/*
 * The scan at the start: how much of the guest's free memory reporting
 * has not returned yet (session_check_scan() bounded the totals).  A
 * guest that cannot scan leaves the reach unknown; a lost session ends
 * the operation.
 */
static void reclaim_hint_scan_resp(void *userdata, int status,
				   const struct proto_msg *m, bool last)
{
	struct reclaim *rc = userdata;
	struct reclaim_op_info *op = &rc->op;
	bool ours = rc->running && op->kind == RECLAIM_KIND_RECLAIM && op->hint;

	if (status == -ECONNRESET) {
		rc->in.active = false;
		return reclaim_op_end(rc, RECLAIM_OP_FAILED, status,
				      "guest session lost");
	}
	if (status == 0 && m && !rc->hint_reach.known) {
		rc->hint_reach.known = true;
		rc->hint_reach.free_bytes = m->u.scan.free_bytes;
		rc->hint_reach.whole_free_bytes = m->u.scan.free_block_bytes;
	}
	if (status == 0 && m && !last)
		return;
	rc->in.active = false;
	if (!ours)
		return;
	if (status < 0 || !m) {
		rc->hint_reach.known = false;
		log_info("VM '%s': reclaim #%" PRIu32 ": the guest could not scan "
			 "(%s); compacting without knowing how much is still backed",
			 rc->name, op->id, strerror(status < 0 ? -status : EPROTO));
	}
	reclaim_hint_begin(rc);
}

static int reclaim_hint_start(struct reclaim *rc, uint64_t bytes,
			      enum reclaim_origin origin, char *err, size_t errsz,
			      uint32_t *ret_id)
{
	uint64_t rss;
	int r;

	r = reclaim_hint_rss(rc, &rss);
	if (r < 0) {
		snprintf(err, errsz, "cannot read QEMU's RssAnon (pid %d): %s",
			 (int)rc->layout->pid, strerror(-r));
		return r;
	}
	reclaim_op_begin(rc, RECLAIM_KIND_RECLAIM, origin, bytes);
	rc->op.hint = true;
	reclaim_work_begin(rc);
	log_info("VM '%s': reclaim #%" PRIu32 " of %llu MiB started (hint backend: "
		 "guest compaction, QEMU RssAnon %llu MiB)", rc->name, rc->op.id,
		 MIB(bytes), MIB(rss));
	rc->hint_rss0 = rss;
	memset(&rc->hint_reach, 0, sizeof(rc->hint_reach));
	memset(&rc->hint, 0, sizeof(rc->hint));
	rc->op.rss_anon_before = rc->op.rss_anon_after = rss;
	/* first the guest's scan: how much of its free memory is still backed */
	memset(&rc->msg->u, 0, sizeof(rc->msg->u));
	rc->msg->type = PROTO_REQ_SCAN;
	if (reclaim_send(rc, reclaim_hint_scan_resp) < 0)
		reclaim_hint_begin(rc);
	*ret_id = rc->op.id;
	return 0;
}

static void reclaim_hint_send(struct reclaim *rc, uint64_t bytes)
{
	struct reclaim_op_info *op = &rc->op;
	struct proto_msg *m = rc->msg;
	int r;

	memset(&m->u, 0, sizeof(m->u));
	m->type = PROTO_REQ_CAPTURE;
	m->u.capture.bytes = bytes;
	m->u.capture.mode = VMDEFRAG_MODE_COMPACT;
	m->u.capture.budget_ms = rc->par.budget_ms;
	m->u.capture.floor_bytes = rc->par.floor_bytes;
	m->u.capture.flags = rc->evict << PROTO_CAPTURE_EVICT_SHIFT;
	r = reclaim_send(rc, reclaim_hint_capture_resp);
	if (r < 0)
		return reclaim_op_end(rc, RECLAIM_OP_FAILED, r, "cannot send CAPTURE "
				      "to the guest: %s", strerror(-r));
	log_debug("VM '%s': reclaim #%" PRIu32 " round %u: CAPTURE %llu MiB compact",
		  rc->name, op->id, op->rounds, MIB(m->u.capture.bytes));
}

/* The step timer of a hint reclaim: a compaction round or a sample. */
static void reclaim_hint_step(struct reclaim *rc)
{
	struct backend_hint_step s;
	uint64_t rss;
	int r;

	if (rc->hint_next.action == BACKEND_HINT_COMPACT)
		return reclaim_hint_send(rc, rc->hint_next.bytes);
	r = reclaim_hint_rss(rc, &rss);
	if (r < 0)
		return reclaim_op_end(rc, RECLAIM_OP_FAILED, r, "cannot read QEMU's "
				      "RssAnon: %s", strerror(-r));
	backend_hint_sampled(&rc->hint, loop_now_ms(), rss, &s);
	reclaim_hint_do(rc, &s);
}

static void reclaim_hint_capture_resp(void *userdata, int status,
				      const struct proto_msg *m, bool last)
{
	struct reclaim *rc = userdata;
	struct reclaim_op_info *op = &rc->op;
	const struct proto_ranges_resp *rr;
	bool ours = rc->running && op->kind == RECLAIM_KIND_RECLAIM && op->hint;
	struct backend_hint_step s;

	if (status < 0 || !m) {
		rc->in.active = false;
		if (status == -ECONNRESET)
			return reclaim_op_end(rc, RECLAIM_OP_FAILED, status,
					      "guest session lost");
		return reclaim_op_end(rc, RECLAIM_OP_FAILED, status, "guest refused "
				      "CAPTURE (compact): %s", strerror(-status));
	}
	rr = &m->u.ranges_resp;
	if (!reclaim_capture_run_bytes(rc, rr))
		return;
	/* nothing is held: the ranges only need to be the VM's RAM */
	for (uint32_t i = 0; i < rr->nranges; i++) {
		if (!rc->have_map ||
		    blockmap_check(&rc->map, m->ranges[i].gpa, m->ranges[i].len) < 0)
			return reclaim_violation(rc, "RESP_CAPTURE range [0x%" PRIx64
						 ", +0x%" PRIx64 ") is outside the "
						 "VM's RAM", m->ranges[i].gpa,
						 m->ranges[i].len);
		rc->in.sum += m->ranges[i].len;
	}
	if (!last)
		return;
	if (!reclaim_capture_run_adds_up(rc))
		return;
	rc->in.active = false;
	if (!ours)
		return;
	backend_hint_compacted(&rc->hint, rc->in.sum, rc->in.stop_errno, &s);
	reclaim_hint_do(rc, &s);
}

/* ---- loop step ---------------------------------------------------------- */

static void reclaim_step_timer(struct loop_timer *t)
{
	struct reclaim *rc = t->userdata;

	if (!rc->running) {
		if (rc->reconcile_pending)
			reclaim_maybe_reconcile(rc);
		return;
	}
	if (rc->in.active || rc->finishing || rc->job)
		return;		/* its answer or its job's done() steps on */
	if (!rc->ready)
		return reclaim_op_end(rc, RECLAIM_OP_FAILED, -ECONNRESET,
				      "guest session lost");
	if (!rc->layout)
		return reclaim_op_end(rc, RECLAIM_OP_FAILED, -ENODATA,
				      "QEMU monitor lost");
	if (rc->op.kind == RECLAIM_KIND_RECLAIM && rc->op.hint)
		reclaim_hint_step(rc);
	else if (rc->op.kind == RECLAIM_KIND_RECLAIM)
		reclaim_step_reclaim(rc);
	else if (rc->op.kind == RECLAIM_KIND_RETURN)
		reclaim_step_return(rc);
}

int reclaim_start(struct reclaim *rc, enum reclaim_kind kind, uint64_t bytes,
		  int evict, enum reclaim_origin origin, char *err, size_t errsz,
		  uint32_t *ret_id)
{
	uint64_t ram, captured;
	uint32_t policy = evict < 0 ? rc->par.evict : (uint32_t)evict;

	if (kind == RECLAIM_KIND_RECONCILE) {
		snprintf(err, errsz, "reconcile runs by itself on every connect");
		return -EINVAL;
	}
	if (!rc->layout || !rc->have_map) {
		snprintf(err, errsz, "not attached to QEMU (RAM layout unknown)");
		return -ENODATA;
	}
	if (rc->backend == RECLAIM_BACKEND_NONE) {
		snprintf(err, errsz, "no reclaim backend: %s", rc->why_not);
		return -EOPNOTSUPP;
	}
	if (rc->backend == RECLAIM_BACKEND_HINT && kind == RECLAIM_KIND_RETURN) {
		snprintf(err, errsz, "hint backend: the guest keeps every block; the "
			 "host re-backs its RAM on fault (THP), nothing to return");
		return -EOPNOTSUPP;
	}
	if (!rc->ready || !rc->module) {
		snprintf(err, errsz, "guest session is not ready%s",
			 rc->ready ? " (the vmdefrag module is not loaded in the "
			 "guest)" : " (is vmdefrag-agent running in the guest?)");
		return -ENOTCONN;
	}
	if (rc->running) {
		snprintf(err, errsz, "%s #%" PRIu32 " is still running (one operation "
			 "per VM at a time)", reclaim_kind_name(rc->op.kind), rc->op.id);
		return -EBUSY;
	}
	if (rc->job) {
		snprintf(err, errsz, "the host is still %s for %s #%" PRIu32 ", which "
			 "was stopped; try again in a moment",
			 rc->job->kind == RECLAIM_JOB_PUNCH ? "punching" : "re-backing",
			 reclaim_kind_name(rc->op.kind), rc->op.id);
		return -EBUSY;
	}
	if (rc->in.active) {
		snprintf(err, errsz, "the guest is still answering the last request "
			 "of %s #%" PRIu32 ", which was stopped; try again in a moment",
			 reclaim_kind_name(rc->op.kind), rc->op.id);
		return -EBUSY;
	}
	if (!rc->reconciled) {
		snprintf(err, errsz, "the guest's captures are not reconciled yet "
			 "(last attempt: %s)", rc->have_op &&
			 rc->op.kind == RECLAIM_KIND_RECONCILE && rc->op.reason[0] ?
			 rc->op.reason : "pending");
		return -ENOTCONN;
	}
	if (bytes == 0 || bytes % RECLAIM_BLOCK) {
		snprintf(err, errsz, "size must be a positive multiple of 2 MiB");
		return -EINVAL;
	}
	ram = vm_layout_ram_bytes(rc->layout);
	captured = (rc->map.count[BLOCKMAP_CAPTURED] + rc->map.count[BLOCKMAP_RECLAIMED] +
		    rc->map.count[BLOCKMAP_RETURNING]) * RECLAIM_BLOCK;
	if (kind == RECLAIM_KIND_RECLAIM) {
		if (bytes > ram - (captured < ram ? captured : ram)) {
			snprintf(err, errsz, "cannot reclaim %llu MiB: the VM has %llu "
				 "MiB of RAM and %llu MiB are reclaimed already",
				 MIB(bytes), MIB(ram), MIB(captured));
			return -EINVAL;
		}
		if (rc->par.max_reclaim_bytes && rc->backend == RECLAIM_BACKEND_HINT &&
		    bytes > rc->par.max_reclaim_bytes) {
			snprintf(err, errsz, "cannot reclaim %llu MiB: max_reclaim is "
				 "%llu MiB (per operation on the hint backend)",
				 MIB(bytes), MIB(rc->par.max_reclaim_bytes));
			return -EINVAL;
		}
		if (rc->par.max_reclaim_bytes &&
		    bytes + captured > rc->par.max_reclaim_bytes) {
			snprintf(err, errsz, "cannot reclaim %llu MiB: max_reclaim is "
				 "%llu MiB and %llu MiB are reclaimed already",
				 MIB(bytes), MIB(rc->par.max_reclaim_bytes),
				 MIB(captured));
			return -EINVAL;
		}
	} else if (bytes > blockmap_bytes(&rc->map, BLOCKMAP_RECLAIMED)) {
		snprintf(err, errsz, "cannot return %llu MiB: only %llu MiB are "
			 "reclaimed", MIB(bytes),
			 MIB(blockmap_bytes(&rc->map, BLOCKMAP_RECLAIMED)));
		return -EINVAL;
	}
	if (!proto_evict_name(policy)) {
		snprintf(err, errsz, "unknown eviction policy %u", policy);
		return -EINVAL;
	}
	if (kind == RECLAIM_KIND_RECLAIM && policy != VMDEFRAG_EVICT_NONE &&
	    rc->guest_version_max < PROTO_VERSION_CENSUS) {
		snprintf(err, errsz, "eviction policy '%s': the guest agent speaks "
			 "protocol version %u, eviction needs %u (update the guest)",
			 proto_evict_name(policy), rc->guest_version_max,
			 PROTO_VERSION_CENSUS);
		return -EOPNOTSUPP;
	}
	rc->evict = kind == RECLAIM_KIND_RECLAIM ? policy : VMDEFRAG_EVICT_NONE;
	if (rc->backend == RECLAIM_BACKEND_HINT)
		return reclaim_hint_start(rc, bytes, origin, err, errsz, ret_id);
	reclaim_op_begin(rc, kind, origin, bytes);
	rc->op_backing_start = backend_shared_vm_allocated(rc->layout);
	if (kind == RECLAIM_KIND_RECLAIM)
		reclaim_work_begin(rc);
	log_info("VM '%s': %s #%" PRIu32 " of %llu MiB started", rc->name,
		 reclaim_kind_name(kind), rc->op.id, MIB(bytes));
	loop_timer_arm(rc->loop, &rc->step, 0);
	*ret_id = rc->op.id;
	return 0;
}

/* ---- session and QEMU ---------------------------------------------------- */

void reclaim_session_ready(struct reclaim *rc, const struct proto_hello *hello)
{
	rc->ready = true;
	rc->reconciled = false;
	rc->module = hello->features & PROTO_FEAT_MODULE;
	rc->guest_version_max = hello->version_max;
	reclaim_maybe_reconcile(rc);
}

void reclaim_session_hello(struct reclaim *rc, const struct proto_hello *hello)
{
	bool module = hello->features & PROTO_FEAT_MODULE;

	rc->guest_version_max = hello->version_max;
	/* the module (re)appeared: its captures are news to us */
	if (module && !rc->module) {
		rc->module = true;
		rc->reconciled = false;
		reclaim_maybe_reconcile(rc);
	}
	rc->module = module;
}

void reclaim_session_down(struct reclaim *rc)
{
	rc->ready = false;
	/*
	 * The guest acknowledges every PENDING block itself when the session
	 * ends, and may then release them: punch none of a job's runs not
	 * started; the blocks stay captured, the next reconcile punches what
	 * the guest still lists
	 */
	if (rc->job && rc->job->kind == RECLAIM_JOB_PUNCH)
		atomic_store(&rc->job->stop, true);
	/* the guest ACKs every PENDING block itself when the host goes */
	if (rc->have_map)
		blockmap_clear_flag(&rc->map, BLOCKMAP_F_ACKQ);
	rc->reconciled = false;
	rc->reconcile_pending = false;
	reclaim_op_end(rc, RECLAIM_OP_FAILED, -ECONNRESET, "guest session lost");
}

int reclaim_set_layout(struct reclaim *rc, const struct vm_layout *l,
		       enum reclaim_backend backend, const char *why_not)
{
	uint64_t end = 0;
	int r;

	rc->layout = l;
	rc->backend = l ? backend : RECLAIM_BACKEND_NONE;
	snprintf(rc->why_not, sizeof(rc->why_not), "%s", why_not ? why_not : "");
	if (!l) {
		reclaim_op_end(rc, RECLAIM_OP_FAILED, -ENODATA, "QEMU monitor lost");
		return 0;
	}
	for (size_t i = 0; i < l->nranges; i++)
		if (l->ranges[i].gpa + l->ranges[i].len > end)
			end = l->ranges[i].gpa + l->ranges[i].len;
	if (rc->have_map && rc->map.nblocks == (end + RECLAIM_BLOCK - 1) / RECLAIM_BLOCK)
		return 0;
	if (rc->have_map)
		blockmap_free(&rc->map);
	rc->have_map = false;
	rc->reconciled = false;
	r = blockmap_init(&rc->map, end);
	if (r < 0)
		return r;
	rc->have_map = true;
	reclaim_maybe_reconcile(rc);
	return 0;
}

int reclaim_update_layout(struct reclaim *rc, const struct vm_layout *l,
			  enum reclaim_backend backend, const char *why_not)
{
	uint64_t end = 0;

	if (!rc->have_map || !l)
		return reclaim_set_layout(rc, l, backend, why_not);
	for (size_t i = 0; i < l->nranges; i++)
		if (l->ranges[i].gpa + l->ranges[i].len > end)
			end = l->ranges[i].gpa + l->ranges[i].len;
	if (blockmap_resize(&rc->map, end) < 0)	/* held blocks would go */
		return reclaim_set_layout(rc, l, backend, why_not);
	rc->layout = l;
	rc->backend = backend;
	snprintf(rc->why_not, sizeof(rc->why_not), "%s", why_not ? why_not : "");
	return 0;
}

/* ---- events ------------------------------------------------------------- */

void reclaim_guest_stats(struct reclaim *rc, uint64_t guest_captured)
{
	uint64_t held;

	if (!rc->have_map || !rc->ready || !rc->module || !rc->reconciled ||
	    rc->running || rc->in.active || rc->ack_out || rc->map.unacked ||
	    rc->job || rc->reback_out)
		return;
	held = (rc->map.count[BLOCKMAP_CAPTURED] + rc->map.count[BLOCKMAP_RECLAIMED] +
		rc->map.count[BLOCKMAP_RETURNING]) * RECLAIM_BLOCK;
	if (held == guest_captured)
		return;
	/* at most one per RECLAIM_STATS_RECONCILE_MS: a guest that keeps
	 * reporting a wrong figure gets a LIST now and then, not per frame */
	if (rc->stats_reconcile_ms &&
	    loop_now_ms() - rc->stats_reconcile_ms < RECLAIM_STATS_RECONCILE_MS)
		return;
	rc->stats_reconcile_ms = loop_now_ms();
	log_warning("VM '%s': the guest holds %llu MiB captured, the host %llu MiB: "
		    "guest events were lost (agent restarted?); reconciling", rc->name,
		    MIB(guest_captured), MIB(held));
	rc->reconciled = false;
	reclaim_maybe_reconcile(rc);
}

void reclaim_event(struct reclaim *rc, const struct proto_msg *m)
{
	uint64_t taken = 0, reback = 0;
	bool unacked = false, busy = false;

	if (m->type != PROTO_EVT_RELEASED || !rc->have_map)
		return;
	for (uint32_t i = 0; i < m->u.evt.nranges; i++) {
		const struct proto_range *r = &m->ranges[i];

		if (blockmap_check(&rc->map, r->gpa, r->len) < 0)
			continue;	/* session.c checked it is RAM */
		for (uint64_t b = r->gpa / RECLAIM_BLOCK;
		     b < (r->gpa + r->len) / RECLAIM_BLOCK; b++) {
			enum blockmap_state st = blockmap_get(&rc->map, b);
			bool was_busy = blockmap_test(&rc->map, b, BLOCKMAP_F_BUSY);

			if (st == BLOCKMAP_GUEST)
				continue;
			if (blockmap_test(&rc->map, b, BLOCKMAP_F_UNACKED))
				unacked = true;
			blockmap_set(&rc->map, b, BLOCKMAP_GUEST);
			blockmap_flag(&rc->map, b, BLOCKMAP_F_UNACKED | BLOCKMAP_F_BUSY,
				      false);
			taken += RECLAIM_BLOCK;
			busy |= was_busy;
			/*
			 * Punched, being punched or re-backed: the guest may be
			 * using it already, so populate only (never overwrites),
			 * after whatever the queue holds for it
			 */
			if (st != BLOCKMAP_CAPTURED || was_busy) {
				blockmap_flag(&rc->map, b, BLOCKMAP_F_REBACK, true);
				reback += RECLAIM_BLOCK;
			}
		}
	}
	if (!taken)
		return;
	/*
	 * A punch job of these blocks not done yet: only a guest that ignores
	 * the handshake releases a PENDING block; punch none of the runs not
	 * started (the job's done() leaves every block it no longer owns)
	 */
	if (busy && rc->job && rc->job->kind == RECLAIM_JOB_PUNCH)
		atomic_store(&rc->job->stop, true);
	rc->guest_released_bytes += taken;
	if (unacked)
		log_warning("VM '%s': guest released blocks it had not been "
			    "acknowledged for (reason %u): its module ignores the "
			    "capture handshake", rc->name, m->u.evt.reason);
	log_info("VM '%s': guest took back %llu MiB (reason %u); re-backing %llu MiB",
		 rc->name, MIB(taken), m->u.evt.reason,
		 MIB(reclaim_shared(rc) ? reback : 0));
	reclaim_reback_pump(rc);
}

void reclaim_stop(struct reclaim *rc, const char *why)
{
	if (rc->running && rc->op.kind != RECLAIM_KIND_RECONCILE)
		reclaim_op_end(rc, RECLAIM_OP_STOPPED, -ECANCELED, "%s", why);
}

int reclaim_cancel(struct reclaim *rc, uint32_t id, uint32_t *ret_id)
{
	if (!rc->running || (id && rc->op.id != id))
		return -ESRCH;
	if (rc->op.kind == RECLAIM_KIND_RECONCILE)
		return -EBUSY;
	*ret_id = rc->op.id;
	reclaim_stop(rc, "cancelled (vmdefragctl cancel)");
	return 0;
}

uint64_t reclaim_repunch(struct reclaim *rc)
{
	uint64_t freed = 0, run = 0;

	if (!rc->have_map || !reclaim_shared(rc))
		return 0;
	/*
	 * Each maximal run of RECLAIMED blocks in one call (one fallocate per
	 * contiguous piece of a backing); a failed punch adds nothing.
	 */
	for (uint64_t b = 0; b <= rc->map.nblocks; b++) {
		if (b < rc->map.nblocks && blockmap_get(&rc->map, b) == BLOCKMAP_RECLAIMED &&
		    !blockmap_test(&rc->map, b, BLOCKMAP_F_BUSY)) {
			run++;
			continue;
		}
		if (run)
			(void)backend_shared_vm_punch(rc->layout, (b - run) * RECLAIM_BLOCK,
						      run * RECLAIM_BLOCK, &freed);
		run = 0;
	}
	return freed;
}

/* ---- status and lifetime -------------------------------------------------- */

void reclaim_get_status(struct reclaim *rc, struct reclaim_status *st)
{
	memset(st, 0, sizeof(*st));
	st->layout_known = rc->layout != NULL;
	st->reconciled = rc->reconciled;
	st->returned_bytes = rc->returned_bytes;
	st->guest_released_bytes = rc->guest_released_bytes;
	st->hint_returned_bytes = rc->hint_returned_bytes;
	st->have_op = rc->have_op;
	st->op = rc->op;
	if (rc->running)
		st->op.elapsed_ms = loop_now_ms() - rc->op_start_ms;
	if (!rc->have_map)
		return;
	st->captured_bytes = (rc->map.count[BLOCKMAP_CAPTURED] +
			      rc->map.count[BLOCKMAP_RECLAIMED] +
			      rc->map.count[BLOCKMAP_RETURNING]) * RECLAIM_BLOCK;
	st->pending_bytes = rc->map.unacked * RECLAIM_BLOCK;
	/* derived: the blocks held for the host whose backing is a hole now */
	if (reclaim_shared(rc))
		for (uint64_t b = 0; b < rc->map.nblocks; b++)
			if (blockmap_get(&rc->map, b) == BLOCKMAP_RECLAIMED &&
			    backend_shared_vm_block_is_hole(rc->layout,
							    b * RECLAIM_BLOCK))
				st->reclaimed_bytes += RECLAIM_BLOCK;
}

void reclaim_get_blocks(struct reclaim *rc, uint64_t first, uint64_t n,
			uint8_t *ret_states)
{
	for (uint64_t i = 0; i < n; i++)
		ret_states[i] = rc->have_map && first + i < rc->map.nblocks ?
				blockmap_get(&rc->map, first + i) : BLOCKMAP_GUEST;
}

int reclaim_get_op(struct reclaim *rc, uint32_t id, struct reclaim_op_info *ret_op)
{
	if (!rc->have_op || rc->op.id != id) {
		if (!rc->have_last_user_op || rc->last_user_op.id != id)
			return -ENOENT;
		*ret_op = rc->last_user_op;
		return 0;
	}
	*ret_op = rc->op;
	if (rc->running)
		ret_op->elapsed_ms = loop_now_ms() - rc->op_start_ms;
	return 0;
}

int reclaim_new(struct loop *loop, const char *vm_name, struct session *session,
		const struct reclaim_params *params, struct reclaim **ret_rc)
{
	struct reclaim *rc = calloc(1, sizeof(*rc));

	if (!rc)
		return -ENOMEM;
	rc->msg = calloc(1, sizeof(*rc->msg));
	rc->scratch = calloc(PROTO_MAX_RANGES, sizeof(*rc->scratch));
	if (!rc->msg || !rc->scratch) {
		free(rc->msg);
		free(rc->scratch);
		free(rc);
		return -ENOMEM;
	}
	if (worker_queue_new(worker_pool_default(WORKER_BACKING), &rc->wq) < 0) {
		free(rc->msg);
		free(rc->scratch);
		free(rc);
		return -ENOMEM;
	}
	rc->loop = loop;
	snprintf(rc->name, sizeof(rc->name), "%s", vm_name);
	rc->session = session;
	rc->par = *params;
	loop_timer_init(&rc->step, reclaim_step_timer, rc);
	*ret_rc = rc;
	return 0;
}

void reclaim_free(struct reclaim *rc)
{
	if (!rc)
		return;
	/* no job of this VM may run or complete once it is gone */
	worker_queue_free(rc->wq);
	loop_timer_disarm(rc->loop, &rc->step);
	if (rc->have_map)
		blockmap_free(&rc->map);
	free(rc->msg);
	free(rc->scratch);
	free(rc);
}

void reclaim_set_params(struct reclaim *rc, const struct reclaim_params *params)
{
	rc->par = *params;
}
