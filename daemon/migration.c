// SPDX-License-Identifier: GPL-2.0
/*
 * migration.c - a VM's live migration, followed from its QEMU monitor.
 *
 * States (enum migration_state), and what moves them:
 *
 *   NONE --QEMU status setup/active/...--> OUTGOING
 *        the running reclaim or return is stopped: its request in flight
 *        still completes (blocks the guest captured are punched and ACKed,
 *        released ones settle), so no range is left half-punched or
 *        half-re-backed; no new operation starts (migration_check_op());
 *        a reconcile may still run (it only punches blocks the guest holds
 *        captured, which it never touches).
 *   OUTGOING --completed--> AWAY: the guest runs elsewhere; the guest
 *        session is stopped and stays so until QEMU is replaced.
 *   OUTGOING --postcopy-paused, or failed/cancelled once post-copy
 *        started--> POSTCOPY_FAILED: the guest's RAM is split between
 *        both hosts (what the destination received lives only there, the
 *        rest only here); the guest session is held (no reconcile, no
 *        release handling) and nothing is punched or re-backed; only a
 *        resumed post-copy (postcopy-recover/-active: OUTGOING again, then
 *        completed: AWAY) or QEMU going away (destroyed: NONE) ends it.
 *        libvirt's "paused, post-copy failed" is noted "postcopy-paused".
 *   OUTGOING --failed/cancelled (precopy)--> NONE: the blocks the guest holds
 *        reclaimed are punched again (QEMU's scan read them back in:
 *        reading a hole of shmem allocates it), operations are allowed
 *        again; last_outcome says what happened.
 *   (attach) QEMU's run state "inmigrate" --> INCOMING: the guest session
 *        is not started (the guest is not here yet) and nothing is punched
 *        (the layout is known, but the reclaim backend needs the
 *        session's reconcile to act).
 *   INCOMING --completed--> ARRIVED: the session starts; its reconcile
 *        (reclaim.c) punches every block the guest holds captured, which
 *        stock QEMU wrote (zeros or stale data) on this host; then a
 *        collapse pass (collapse.c) turns the 4 KiB-mapped RAM that
 *        post-copy leaves into 2 MiB pages.  Without a reconcile within
 *        MIGRATION_RECONCILE_WAIT_MS (no agent, no module) the pass runs
 *        anyway: it skips holes, and a later reconcile still punches.
 *   (libvirt) the domain started as a migration's destination -->
 *        INCOMING (migration_expect_incoming()), before any monitor is
 *        attached: libvirt holds the domain's job until the migration
 *        ends, so virt_domains.c attaches only then and notes
 *        "completed"; attaching with INCOMING set keeps it.
 *   (attach) a QEMU not migrating --> NONE, whatever the state was.
 *   ARRIVED, guest releases: the blocks the guest takes back after the
 *        collapse pass (re-backed by reclaim.c) are collapsed again
 *        (migration_guest_released() -> collapse_queue()): post-copy left
 *        QEMU's page tables of those ranges with 4 KiB entries, which
 *        survive the reconcile's punch, so a fault on a fresh 2 MiB folio
 *        there still maps it with 4 KiB entries.  A return (host-asked)
 *        re-backs blocks this file is not told about: when one ends, the
 *        whole RAM is queued (migration_op_started(); blocks already
 *        2 MiB-mapped cost a SEEK_DATA and a short MADV_COLLAPSE each).
 *
 * Which QEMU: on every attach the daemon asks query-version; a "package"
 * carrying QMP_PATCHED_MARK is a QEMU built by qemu-patches/build.sh.  A
 * migration in to a patched QEMU took the "patched path": patch 0004 left
 * unasked zero pages unplaced, 0005 collapsed every completed 2 MiB range
 * during post-copy.  The reconcile and the collapse pass still run there:
 * the reconcile punches ranges the source punched after it had sent them
 * (not a write, so not sent again), and the pass collapses what 0005 could
 * not (a range still partly holes when post-copy ended is skipped by both;
 * a range whose collapse the kernel refused in QEMU).  After a patched
 * post-copy it finds little, and costs little (status shows both).
 *
 * QEMU's status comes from its MIGRATION events (the daemon turns the
 * "events" capability on when it attaches) and, as long as a migration
 * runs, from polling query-migrate every MIGRATION_POLL_MS (events can be
 * off, e.g. when the capability could not be set during a migration).  A
 * monitor carried by libvirt has no events and is never polled (a monitor
 * command waits for libvirt's migration job): virt_domains.c tells the
 * state from libvirt's lifecycle events through migration_note().
 *
 * Off the loop.  No QMP command of this file runs on the loop's thread
 * for a socket monitor: the attach questions (migration_probe(): version,
 * run state, query-migrate, the events capability) run in the VM's attach
 * job on a monitor worker (vm.c), and each poll is a job on the VM's
 * monitor queue (struct migration_poll, through the VM's
 * migration_monitor_ops), so a stopped QEMU holds a worker thread for the
 * QMP timeout, never the loop that serves the other VMs.  One poll at a
 * time (polling): the timer coming due while one is queued or running
 * does nothing, and its done() arms the next.  (The VM handles no event
 * of a lent monitor meanwhile; the STOP/RESUME read before a reply are
 * handed over in its done(), and that reply is newer than them.)
 * Order: QEMU's events and replies come on one stream, so a poll's done()
 * first hands the VM the events read before its reply (they are older),
 * then applies the reply, then gives the monitor back (what comes after
 * is newer): the state machine sees QEMU's statuses in QEMU's order.  A
 * monitor dropped while a poll waits cancels it (vm.c drains the queue,
 * then migration_detach()), and the status it would have brought is not
 * applied.  A libvirt monitor's attach questions (query-version only) are
 * asked on the loop, each bounded by virt_monitor.c's wait.
 *
 * The state machine is single-threaded, on the loop's thread; only
 * migration_probe() and migration_poll_run() run on a worker, on the
 * monitor lent to their job, touching nothing else.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collapse.h"
#include "log.h"
#include "loop.h"
#include "migration.h"
#include "qmp.h"
#include "reclaim.h"
#include "session.h"
#include "vm_layout.h"
#include "worker.h"

#define MIGRATION_POLL_MS		500
#define MIGRATION_ARRIVED_POLL_MS	250
#define MIGRATION_RECONCILE_WAIT_MS	20000
#define MIGRATION_QMP_TIMEOUT_MS	QMP_DEFAULT_TIMEOUT_MS
#define MIB(x)				((unsigned long long)((x) >> 20))

/* A query-migrate on a worker: the monitor is lent to it meanwhile. */
struct migration_poll {
	struct worker_job w;
	struct migration *m;		/* done() only */
	struct qmp *q;
	/* written by run() */
	int r;
	char status[MIGRATION_QEMU_STATUS_MAX];
};

struct migration {
	struct loop *loop;
	char name[64];
	struct session *session;	/* the VM's; stopped while held */
	struct reclaim *reclaim;	/* the VM's */
	struct collapse *collapse;
	struct loop_timer poll;

	struct qmp *qmp;		/* NULL while detached */
	bool can_poll;			/* a socket monitor (not libvirt's) */
	const struct vm_layout *layout;
	pid_t pid;
	const struct migration_monitor_ops *ops;	/* NULL: polls run inline */
	void *ops_opaque;
	struct migration_poll pjob;	/* queued or running while polling */
	bool polling;

	enum migration_state state;
	char qemu_status[MIGRATION_QEMU_STATUS_MAX];
	uint64_t since_ms;
	uint32_t outgoing;
	char last_outcome[MIGRATION_NOTE_MAX];
	bool held;			/* we stopped the session */
	bool postcopy;			/* this migration switched to post-copy */
	bool qemu_known;		/* ver is the attached QEMU's */
	struct qmp_version ver;

	uint64_t arrived_ms;
	bool reconciled;
	uint64_t listed, punched;
	bool collapse_started;
	bool return_watch;		/* ARRIVED: a return runs, re-collapse after */
};

const char *migration_state_name(enum migration_state state)
{
	switch (state) {
	case MIGRATION_NONE: return "none";
	case MIGRATION_OUTGOING: return "outgoing";
	case MIGRATION_AWAY: return "migrated-away";
	case MIGRATION_INCOMING: return "incoming";
	case MIGRATION_ARRIVED: return "migrated-in";
	case MIGRATION_POSTCOPY_FAILED: return "postcopy-failed";
	}
	return "?";
}

/* QEMU's MigrationStatus values of a migration that has not ended. */
static bool migration_status_running(const char *s)
{
	static const char *const running[] = {
		"setup", "active", "postcopy-active", "postcopy-paused",
		"postcopy-recover", "pre-switchover", "device", "wait-unplug",
		"cancelling", "colo",
	};

	for (size_t i = 0; i < sizeof(running) / sizeof(running[0]); i++)
		if (strcmp(s, running[i]) == 0)
			return true;
	return false;
}

static bool migration_status_postcopy(const char *s)
{
	return strncmp(s, "postcopy-", 9) == 0;
}

static void migration_set_state(struct migration *m, enum migration_state state)
{
	if (m->state == state)
		return;
	m->state = state;
	m->since_ms = loop_now_ms();
}

static void migration_hold_session(struct migration *m)
{
	session_stop(m->session);
	m->held = true;
}

static void migration_release_session(struct migration *m)
{
	if (!m->held)
		return;
	m->held = false;
	session_start(m->session);
}

static void migration_arm(struct migration *m)
{
	if (m->state == MIGRATION_ARRIVED && (!m->collapse_started || m->return_watch))
		loop_timer_arm(m->loop, &m->poll, MIGRATION_ARRIVED_POLL_MS);
	else if (m->can_poll && m->qmp && (m->state == MIGRATION_OUTGOING ||
					   m->state == MIGRATION_INCOMING))
		loop_timer_arm(m->loop, &m->poll, MIGRATION_POLL_MS);
	else
		loop_timer_disarm(m->loop, &m->poll);
}

/* OUTGOING or POSTCOPY_FAILED: the migration completed. */
static void migration_sent(struct migration *m)
{
	migration_set_state(m, MIGRATION_AWAY);
	snprintf(m->last_outcome, sizeof(m->last_outcome), "migrated away%s",
		 m->postcopy ? " (post-copy)" : "");
	log_info("VM '%s': migrated away: the guest runs on the destination "
		 "now; its session here is closed", m->name);
	migration_hold_session(m);
}

static void migration_postcopy_failed(struct migration *m, const char *s)
{
	migration_set_state(m, MIGRATION_POSTCOPY_FAILED);
	snprintf(m->last_outcome, sizeof(m->last_outcome), "outgoing post-copy "
		 "%s", strcmp(s, "postcopy-paused") == 0 ? "failed (paused)" : s);
	log_warning("VM '%s': the outgoing post-copy migration failed (QEMU: %s): "
		    "the guest's memory is split between both hosts; nothing is "
		    "punched or re-backed and no operation runs until the "
		    "migration is recovered or the VM destroyed", m->name, s);
	migration_hold_session(m);
}

/* OUTGOING: QEMU's status s of the migration it sends. */
static void migration_apply_outgoing(struct migration *m, const char *s)
{
	if (migration_status_postcopy(s))
		m->postcopy = true;
	if (strcmp(s, "completed") == 0) {
		migration_sent(m);
	} else if (strcmp(s, "postcopy-paused") == 0 ||
		   (m->postcopy && !migration_status_running(s))) {
		migration_postcopy_failed(m, s);
	} else if (!migration_status_running(s)) {
		/* its scan read the reclaimed ranges back in */
		uint64_t freed = reclaim_repunch(m->reclaim);

		migration_set_state(m, MIGRATION_NONE);
		snprintf(m->last_outcome, sizeof(m->last_outcome),
			 "outgoing migration %s", s);
		log_info("VM '%s': outgoing migration %s; reclaimed ranges it "
			 "read back in punched again (%llu MiB); back to normal "
			 "operation", m->name, s, MIB(freed));
	}
}

/* One QEMU MigrationStatus, from an event, a poll or libvirt. */
static void migration_apply(struct migration *m, const char *s)
{
	if (!*s || strcmp(s, m->qemu_status) == 0)
		return;
	snprintf(m->qemu_status, sizeof(m->qemu_status), "%s", s);
	switch (m->state) {
	case MIGRATION_INCOMING:
		if (migration_status_postcopy(s))
			m->postcopy = true;
		if (strcmp(s, "completed") == 0) {
			migration_set_state(m, MIGRATION_ARRIVED);
			m->arrived_ms = loop_now_ms();
			m->reconciled = false;
			m->collapse_started = false;
			m->return_watch = false;
			snprintf(m->last_outcome, sizeof(m->last_outcome),
				 "incoming migration completed%s",
				 m->postcopy ? " (post-copy)" : "");
			log_info("VM '%s': incoming migration completed; starting the "
				 "guest session to reconcile its captured blocks", m->name);
			migration_release_session(m);
		} else if (strcmp(s, "failed") == 0 || strcmp(s, "cancelled") == 0) {
			snprintf(m->last_outcome, sizeof(m->last_outcome),
				 "incoming migration %s", s);
			log_warning("VM '%s': incoming migration %s", m->name, s);
		}
		break;
	case MIGRATION_OUTGOING:
		migration_apply_outgoing(m, s);
		break;
	case MIGRATION_POSTCOPY_FAILED:
		if (strcmp(s, "completed") == 0) {
			migration_sent(m);
		} else if (strcmp(s, "postcopy-recover") == 0 ||
			   strcmp(s, "postcopy-active") == 0) {
			migration_set_state(m, MIGRATION_OUTGOING);
			log_info("VM '%s': the post-copy migration resumed (QEMU: %s)",
				 m->name, s);
		}
		break;
	case MIGRATION_NONE:
	case MIGRATION_ARRIVED:
		if (!migration_status_running(s))
			break;
		if (m->state == MIGRATION_ARRIVED)
			collapse_abort(m->collapse, "an outgoing migration started");
		m->return_watch = false;
		migration_set_state(m, MIGRATION_OUTGOING);
		m->outgoing++;
		m->postcopy = false;
		log_info("VM '%s': outgoing migration (%s): stopping the running "
			 "operation, none starts until it ends", m->name, s);
		reclaim_stop(m->reclaim, "stopped: a live migration started");
		if (migration_status_postcopy(s))	/* met late: attached now */
			migration_apply_outgoing(m, s);
		break;
	case MIGRATION_AWAY:
		break;
	}
	migration_arm(m);
}

/*
 * QEMU's status of its migration from query-migrate ("none" if none).  On
 * any thread that may use q.
 */
static int migration_query(struct qmp *q, char *buf, size_t sz)
{
	struct json_object *ret, *st;
	int r;

	r = qmp_execute(q, "query-migrate", NULL, MIGRATION_QMP_TIMEOUT_MS, &ret);
	if (r < 0)
		return r;
	if (json_object_object_get_ex(ret, "status", &st) &&
	    json_object_is_type(st, json_type_string))
		snprintf(buf, sz, "%s", json_object_get_string(st));
	else
		snprintf(buf, sz, "none");
	json_object_put(ret);
	return 0;
}

/* Arrived: wait for the reconcile, then run the collapse pass. */
static void migration_arrived_step(struct migration *m)
{
	struct reclaim_status rs;
	bool waited = loop_now_ms() - m->arrived_ms >= MIGRATION_RECONCILE_WAIT_MS;
	int r;

	reclaim_get_status(m->reclaim, &rs);
	if (!m->reconciled && rs.reconciled) {
		m->reconciled = true;
		if (rs.have_op && rs.op.kind == RECLAIM_KIND_RECONCILE) {
			m->listed = rs.op.target_bytes;
			m->punched = rs.op.done_bytes;
		}
		log_info("VM '%s': migrated in (%s QEMU path): reconciled, %llu MiB "
			 "captured by the guest, %llu MiB of backing punched", m->name,
			 m->qemu_known && m->ver.patched ? "patched" : "stock",
			 MIB(m->listed), MIB(m->punched));
	}
	if (!m->reconciled && !waited)
		return migration_arm(m);
	if (!m->reconciled)
		log_warning("VM '%s': migrated in, but the guest session did not "
			    "reconcile within %u s; collapsing anyway (holes are "
			    "skipped)", m->name, MIGRATION_RECONCILE_WAIT_MS / 1000);
	m->collapse_started = true;
	if (!m->layout)
		return;
	r = collapse_start(m->collapse, m->layout, m->pid);
	if (r < 0)
		log_warning_errno(r, "VM '%s': cannot start the collapse pass: %m",
				  m->name);
}

/* Arrived, a return ran: once it ended, re-collapse the whole RAM. */
static void migration_return_step(struct migration *m)
{
	struct reclaim_status rs;

	reclaim_get_status(m->reclaim, &rs);
	if (rs.have_op && rs.op.state == RECLAIM_OP_RUNNING)
		return migration_arm(m);
	m->return_watch = false;
	if (!m->layout)
		return;
	for (size_t i = 0; i < m->layout->nranges; i++)
		collapse_queue(m->collapse, m->layout, m->pid, m->layout->ranges[i].gpa,
			       m->layout->ranges[i].len);
}

static void migration_poll_run(struct worker_job *w)
{
	struct migration_poll *j = (struct migration_poll *)w;

	qmp_borrow(j->q);
	j->r = migration_query(j->q, j->status, sizeof(j->status));
	qmp_borrow(NULL);
}

/* The poll's answer, on the loop: see "Order" above. */
static void migration_poll_done(struct worker_job *w, enum worker_end end)
{
	struct migration_poll *j = (struct migration_poll *)w;
	struct migration *m = j->m;

	if (end == WORKER_CANCELLED)
		return;		/* the monitor goes: migration_detach() follows */
	m->polling = false;
	if (m->ops)
		m->ops->events(m->ops_opaque);
	if (j->r == 0 && strcmp(j->status, "none") != 0 && m->qmp == j->q)
		migration_apply(m, j->status);
	migration_arm(m);
	if (m->ops)
		m->ops->give_back(m->ops_opaque);
}

static void migration_poll(struct loop_timer *t)
{
	struct migration *m = t->userdata;
	int r;

	if (m->state == MIGRATION_ARRIVED) {
		if (!m->collapse_started)
			migration_arrived_step(m);
		else if (m->return_watch)
			migration_return_step(m);
		return;
	}
	if (!m->qmp || !m->can_poll || m->polling)
		return;		/* a poll's done() arms the next */
	m->pjob = (struct migration_poll) {
		.w = { .run = migration_poll_run, .done = migration_poll_done },
		.m = m,
		.q = m->qmp,
	};
	m->polling = true;
	if (!m->ops) {
		migration_poll_run(&m->pjob.w);
		return migration_poll_done(&m->pjob.w, WORKER_RAN);
	}
	/* an inline queue runs it and its done() before this returns */
	r = m->ops->submit(m->ops_opaque, &m->pjob.w);
	if (r < 0) {
		m->polling = false;
		log_debug("VM '%s': cannot queue a query-migrate (%s); trying "
			  "again later", m->name, strerror(-r));
		migration_arm(m);
	}
}

void migration_set_monitor_ops(struct migration *m,
			       const struct migration_monitor_ops *ops, void *opaque)
{
	m->ops = ops;
	m->ops_opaque = opaque;
}

/* ---- QEMU attach / detach ---------------------------------------------- */

static int migration_run_state(struct qmp *q, char *buf, size_t sz)
{
	struct json_object *ret, *st;
	int r;

	r = qmp_execute(q, "query-status", NULL, MIGRATION_QMP_TIMEOUT_MS, &ret);
	if (r < 0)
		return r;
	if (!json_object_object_get_ex(ret, "status", &st) ||
	    !json_object_is_type(st, json_type_string)) {
		json_object_put(ret);
		return -EPROTO;
	}
	snprintf(buf, sz, "%s", json_object_get_string(st));
	json_object_put(ret);
	return 0;
}

static int migration_enable_events(struct qmp *q)
{
	struct json_object *args = json_object_new_object();
	struct json_object *caps = json_object_new_array();
	struct json_object *cap = json_object_new_object();
	int r;

	json_object_object_add(cap, "capability", json_object_new_string("events"));
	json_object_object_add(cap, "state", json_object_new_boolean(1));
	json_object_array_add(caps, cap);
	json_object_object_add(args, "capabilities", caps);
	r = qmp_execute(q, "migrate-set-capabilities", args,
			MIGRATION_QMP_TIMEOUT_MS, NULL);
	json_object_put(args);
	return r;
}

void migration_probe(struct qmp *q, struct migration_probe *p)
{
	memset(p, 0, sizeof(*p));
	snprintf(p->mig, sizeof(p->mig), "none");
	/* which QEMU: its query-version, and whether qemu-patches built it */
	p->version_r = qmp_query_version(q, MIGRATION_QMP_TIMEOUT_MS, &p->ver);
	p->asked = qmp_fd(q) >= 0;
	if (!p->asked)
		return;
	if (migration_run_state(q, p->run, sizeof(p->run)) < 0)
		p->run[0] = '\0';
	if (migration_query(q, p->mig, sizeof(p->mig)) < 0)
		snprintf(p->mig, sizeof(p->mig), "none");
	p->events_r = migration_enable_events(q);
	if (p->events_r < 0)
		snprintf(p->events_error, sizeof(p->events_error), "%s",
			 qmp_last_error(q)[0] ? qmp_last_error(q) : strerror(-p->events_r));
}

/* The probe's version, logged. */
static void migration_take_version(struct migration *m, const struct migration_probe *p)
{
	const struct qmp_version *v = &p->ver;
	char qb[2 * QMP_PACKAGE_MAX + 8];

	m->qemu_known = p->version_r == 0;
	if (p->version_r < 0) {
		log_debug("VM '%s': query-version failed (%s): the QEMU is taken "
			  "for a stock one", m->name, strerror(-p->version_r));
		return;
	}
	m->ver = *v;
	log_debug("VM '%s': QEMU %d.%d.%d, package %s%s", m->name, v->version / 10000,
		  v->version / 100 % 100, v->version % 100,
		  log_quote_str(v->package, qb, sizeof(qb)),
		  v->patched ? ": built with vmdefrag's patches" : "");
}

void migration_attach(struct migration *m, struct qmp *q, const struct vm_layout *l,
		      pid_t pid, const struct migration_probe *p)
{
	char run[32] = "", mig[MIGRATION_QEMU_STATUS_MAX] = "none";

	m->qmp = q;
	m->layout = l;
	m->pid = pid;
	m->can_poll = qmp_fd(q) >= 0;
	m->polling = false;
	m->qemu_status[0] = '\0';
	migration_take_version(m, p);
	if (m->can_poll && p->asked) {
		snprintf(run, sizeof(run), "%s", p->run);
		snprintf(mig, sizeof(mig), "%s", p->mig);
		if (p->events_r < 0) {
			char eb[2 * sizeof(p->events_error) + 8];

			log_debug("VM '%s': cannot turn QEMU's migration events on "
				  "(%s); polling during migrations only", m->name,
				  log_quote_str(p->events_error, eb, sizeof(eb)));
		}
	}
	if (!m->can_poll && m->state == MIGRATION_INCOMING) {
		/* libvirt said so (migration_expect_incoming()); it also says
		 * when the migration completed, through migration_note() */
		log_info("VM '%s': attached while libvirt's incoming migration "
			 "has not completed; the guest session waits for it", m->name);
	} else if (strcmp(run, "inmigrate") == 0) {
		migration_set_state(m, MIGRATION_INCOMING);
		m->postcopy = migration_status_postcopy(mig);
		snprintf(m->qemu_status, sizeof(m->qemu_status), "%s", mig);
		log_info("VM '%s': QEMU waits for an incoming migration; the guest "
			 "session starts when it completes", m->name);
		migration_hold_session(m);
	} else if (migration_status_running(mig)) {
		migration_set_state(m, MIGRATION_NONE);
		migration_release_session(m);
		migration_apply(m, mig);
	} else if (strcmp(mig, "completed") == 0 && strcmp(run, "postmigrate") == 0) {
		migration_set_state(m, MIGRATION_AWAY);
		snprintf(m->qemu_status, sizeof(m->qemu_status), "%s", mig);
		snprintf(m->last_outcome, sizeof(m->last_outcome), "migrated away");
		migration_hold_session(m);
	} else {
		migration_set_state(m, MIGRATION_NONE);
		migration_release_session(m);
	}
	migration_arm(m);
}

void migration_detach(struct migration *m)
{
	collapse_abort(m->collapse, "QEMU detached");
	m->return_watch = false;
	m->polling = false;	/* its job was cancelled with the monitor */
	m->qmp = NULL;
	m->layout = NULL;
	m->pid = 0;
	if (m->state == MIGRATION_INCOMING) {
		snprintf(m->last_outcome, sizeof(m->last_outcome), "QEMU went away "
			 "before the incoming migration completed");
		migration_set_state(m, MIGRATION_NONE);
	} else if (m->state == MIGRATION_OUTGOING) {
		snprintf(m->last_outcome, sizeof(m->last_outcome), "QEMU went away "
			 "during the outgoing migration");
		migration_set_state(m, MIGRATION_NONE);
	} else if (m->state == MIGRATION_POSTCOPY_FAILED) {
		snprintf(m->last_outcome, sizeof(m->last_outcome), "outgoing post-copy "
			 "failed, then QEMU went away (its part of the guest is gone)");
		log_info("VM '%s': QEMU went away after its post-copy failed", m->name);
		migration_set_state(m, MIGRATION_NONE);
	}
	m->qemu_known = false;
	migration_arm(m);
}

void migration_qmp_event(struct migration *m, struct json_object *ev)
{
	struct json_object *name, *data, *st;
	const char *n;

	if (!json_object_object_get_ex(ev, "event", &name))
		return;
	n = json_object_get_string(name);
	if (strcmp(n, "MIGRATION") == 0 &&
	    json_object_object_get_ex(ev, "data", &data) &&
	    json_object_object_get_ex(data, "status", &st) &&
	    json_object_is_type(st, json_type_string)) {
		migration_apply(m, json_object_get_string(st));
	} else if ((strcmp(n, "STOP") == 0 || strcmp(n, "RESUME") == 0) &&
		   m->qmp && m->can_poll &&
		   (m->state == MIGRATION_OUTGOING || m->state == MIGRATION_INCOMING)) {
		/* the switch-over: look now rather than at the next poll */
		loop_timer_arm(m->loop, &m->poll, 0);
	}
}

void migration_expect_incoming(struct migration *m)
{
	if (m->state == MIGRATION_INCOMING)
		return;
	collapse_abort(m->collapse, "an incoming migration started");
	migration_set_state(m, MIGRATION_INCOMING);
	m->qemu_status[0] = '\0';
	m->postcopy = false;
	log_info("VM '%s': the domain arrives by live migration; the guest "
		 "session starts when it completes", m->name);
	migration_hold_session(m);
	migration_arm(m);
}

void migration_note(struct migration *m, const char *qemu_status)
{
	migration_apply(m, qemu_status);
}

bool migration_incoming(const struct migration *m)
{
	return m->state == MIGRATION_INCOMING;
}

bool migration_outgoing(const struct migration *m)
{
	return m->state == MIGRATION_OUTGOING;
}

enum migration_state migration_state(const struct migration *m)
{
	return m->state;
}

void migration_guest_released(struct migration *m, uint64_t gpa, uint64_t len)
{
	/* before the pass starts, the pass covers them */
	if (m->state != MIGRATION_ARRIVED || !m->layout || !m->collapse_started)
		return;
	collapse_queue(m->collapse, m->layout, m->pid, gpa, len);
}

void migration_op_started(struct migration *m, enum reclaim_kind kind)
{
	if (kind != RECLAIM_KIND_RETURN || m->state != MIGRATION_ARRIVED ||
	    !m->layout || !m->collapse_started)
		return;
	m->return_watch = true;
	migration_arm(m);
}

bool migration_holds_session(const struct migration *m)
{
	return m->held;
}

int migration_check_op(const struct migration *m, char *err, size_t errsz)
{
	switch (m->state) {
	case MIGRATION_OUTGOING:
		snprintf(err, errsz, "live migration in progress (QEMU: %s): no "
			 "reclaim or return until it ends", m->qemu_status);
		return -EBUSY;
	case MIGRATION_AWAY:
		snprintf(err, errsz, "the VM migrated away: its guest runs on "
			 "another host now");
		return -EBUSY;
	case MIGRATION_INCOMING:
		snprintf(err, errsz, "waiting for the incoming migration (QEMU: %s)",
			 m->qemu_status[0] ? m->qemu_status : "inmigrate");
		return -EBUSY;
	case MIGRATION_POSTCOPY_FAILED:
		snprintf(err, errsz, "the outgoing post-copy live migration failed: "
			 "the guest's memory is split between both hosts; no "
			 "operation until the VM is destroyed or its migration "
			 "recovered");
		return -EBUSY;
	default:
		return 0;
	}
}

void migration_get_status(const struct migration *m, struct migration_status *st)
{
	memset(st, 0, sizeof(*st));
	st->state = m->state;
	snprintf(st->qemu_status, sizeof(st->qemu_status), "%s", m->qemu_status);
	st->since_ms = loop_now_ms() - m->since_ms;
	st->outgoing = m->outgoing;
	snprintf(st->last_outcome, sizeof(st->last_outcome), "%s", m->last_outcome);
	st->postcopy = m->postcopy;
	st->qemu_known = m->qemu_known;
	if (m->qemu_known) {
		st->qemu_patched = m->ver.patched;
		st->qemu_version = m->ver.version;
		snprintf(st->qemu_package, sizeof(st->qemu_package), "%s", m->ver.package);
	}
	st->reconciled = m->reconciled;
	st->reconcile_listed_bytes = m->listed;
	st->reconcile_punched_bytes = m->punched;
	collapse_get_status(m->collapse, &st->collapse);
}

int migration_new(struct loop *loop, const char *vm_name, struct session *session,
		  struct reclaim *reclaim, uint32_t collapse_cpu_percent,
		  struct migration **ret_m)
{
	struct migration *m = calloc(1, sizeof(*m));
	int r;

	if (!m)
		return -ENOMEM;
	r = collapse_new(loop, vm_name, collapse_cpu_percent, &m->collapse);
	if (r < 0) {
		free(m);
		return r;
	}
	m->loop = loop;
	snprintf(m->name, sizeof(m->name), "%s", vm_name);
	m->session = session;
	m->reclaim = reclaim;
	m->since_ms = loop_now_ms();
	loop_timer_init(&m->poll, migration_poll, m);
	*ret_m = m;
	return 0;
}

void migration_free(struct migration *m)
{
	if (!m)
		return;
	loop_timer_disarm(m->loop, &m->poll);
	collapse_free(m->collapse);
	free(m);
}

void migration_set_collapse_cpu_percent(struct migration *m, uint32_t cpu_percent)
{
	collapse_set_cpu_percent(m->collapse, cpu_percent);
}
