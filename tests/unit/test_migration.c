// SPDX-License-Identifier: GPL-2.0
/*
 * migration.c's states as QEMU's or libvirt's statuses move them, without
 * a QEMU: migration_note() is what libvirt mode feeds (libvirt's lifecycle
 * events and domain state, virt_domains.c), and the sequences below are
 * the ones a real migration goes through.  The point of the table is the
 * post-copy failure: once post-copy started, no status may take the VM
 * back to "none" (where the daemon punches again what the scan read back
 * in, and operations start): the guest's RAM is split between two hosts.
 *
 * Each case: a sequence of statuses, the state after each, and whether an
 * operation is refused at the end (its one line checked for the words a
 * user needs).
 *
 * Then with a real QEMU waiting for an incoming migration (-incoming
 * defer): the attach questions (migration_probe()) and the polls of
 * query-migrate as jobs on a real worker pool, through monitor ops like
 * vm.c's: with that QEMU stopped the loop keeps turning while the poll
 * waits on its worker, a poll that comes due meanwhile is not queued
 * again, and each done() hands over the events before the monitor.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "loop.h"
#include "migration.h"
#include "qemu_fixture.h"
#include "reclaim.h"
#include "session.h"
#include "worker.h"

struct fixture {
	struct loop *loop;
	struct session *s;
	struct reclaim *rc;
	struct migration *m;
};

static int fx_check_range(void *vm, const struct proto_range *r)
{
	(void)vm;
	(void)r;
	return -ENODATA;
}

static uint64_t fx_ram_bytes(void *vm)
{
	(void)vm;
	return 0;
}

static void fx_event(void *vm, const struct proto_msg *m)
{
	(void)vm;
	(void)m;
}

static void fx_state(void *vm, enum session_state state)
{
	(void)vm;
	(void)state;
}

static void fx_hello(void *vm, const struct proto_hello *hello)
{
	(void)vm;
	(void)hello;
}

static const struct session_hooks fx_hooks = {
	.check_range = fx_check_range, .ram_bytes = fx_ram_bytes,
	.event = fx_event, .state_changed = fx_state, .hello = fx_hello,
};

static int setup(void **state)
{
	static const struct session_limits lim = {
		.frames_per_sec = 100, .events_per_sec = 100,
		.request_timeout_ms = 5000, .reconnect_min_ms = 60000,
		.reconnect_max_ms = 60000,
	};
	static const struct reclaim_params params = { 0 };
	struct fixture *fx = calloc(1, sizeof(*fx));

	assert_non_null(fx);
	assert_int_equal(loop_new(&fx->loop), 0);
	assert_int_equal(session_new(fx->loop, "t", "/nonexistent/vdf-test.sock", &lim,
				     &fx_hooks, fx, &fx->s), 0);
	assert_int_equal(reclaim_new(fx->loop, "t", fx->s, &params, &fx->rc), 0);
	assert_int_equal(migration_new(fx->loop, "t", fx->s, fx->rc, 50, &fx->m), 0);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	migration_free(fx->m);
	session_free(fx->s);
	reclaim_free(fx->rc);
	loop_free(fx->loop);
	free(fx);
	return 0;
}

#define STEPS_MAX	8

struct mig_case {
	const char *name;
	bool incoming;			/* migration_expect_incoming() first */
	const char *notes[STEPS_MAX];	/* NULL-terminated; "detach" detaches */
	enum migration_state after[STEPS_MAX];
	bool refused;			/* an operation is refused at the end */
	const char *says;		/* in the refusal or last_outcome */
	bool postcopy;			/* status says post-copy at the end */
};

static const struct mig_case cases[] = {
	{ "precopy completes", false, { "setup", "active", "completed" },
	  { MIGRATION_OUTGOING, MIGRATION_OUTGOING, MIGRATION_AWAY }, true,
	  "migrated away", false },
	{ "precopy cancelled: back to normal", false, { "active", "cancelled" },
	  { MIGRATION_OUTGOING, MIGRATION_NONE }, false,
	  "outgoing migration cancelled", false },
	{ "precopy failed: back to normal", false, { "active", "failed" },
	  { MIGRATION_OUTGOING, MIGRATION_NONE }, false,
	  "outgoing migration failed", false },
	{ "post-copy completes", false, { "active", "postcopy-active", "completed" },
	  { MIGRATION_OUTGOING, MIGRATION_OUTGOING, MIGRATION_AWAY }, true,
	  "migrated away (post-copy)", true },
	{ "post-copy paused (libvirt: postcopy-failed)", false,
	  { "active", "postcopy-active", "postcopy-paused" },
	  { MIGRATION_OUTGOING, MIGRATION_OUTGOING, MIGRATION_POSTCOPY_FAILED }, true,
	  "split between both hosts", true },
	{ "post-copy failed for good (QEMU: failed)", false,
	  { "active", "postcopy-active", "failed" },
	  { MIGRATION_OUTGOING, MIGRATION_OUTGOING, MIGRATION_POSTCOPY_FAILED }, true,
	  "split between both hosts", true },
	{ "post-copy failed: libvirt's job gone is no cancel", false,
	  { "postcopy-active", "postcopy-paused", "cancelled", "failed" },
	  { MIGRATION_OUTGOING, MIGRATION_POSTCOPY_FAILED, MIGRATION_POSTCOPY_FAILED,
	    MIGRATION_POSTCOPY_FAILED }, true, "no operation until", true },
	{ "post-copy recovered, then completes", false,
	  { "active", "postcopy-active", "postcopy-paused", "postcopy-recover",
	    "postcopy-active", "completed" },
	  { MIGRATION_OUTGOING, MIGRATION_OUTGOING, MIGRATION_POSTCOPY_FAILED,
	    MIGRATION_OUTGOING, MIGRATION_OUTGOING, MIGRATION_AWAY }, true,
	  "migrated away (post-copy)", true },
	{ "post-copy failed, domain destroyed", false,
	  { "postcopy-active", "postcopy-paused", "detach" },
	  { MIGRATION_OUTGOING, MIGRATION_POSTCOPY_FAILED, MIGRATION_NONE }, false,
	  "post-copy failed, then QEMU went away", true },
	{ "attached late to a paused post-copy", false, { "postcopy-paused" },
	  { MIGRATION_POSTCOPY_FAILED }, true, "split between both hosts", true },
	{ "incoming post-copy completes", true, { "active", "postcopy-active", "completed" },
	  { MIGRATION_INCOMING, MIGRATION_INCOMING, MIGRATION_ARRIVED }, false,
	  "incoming migration completed (post-copy)", true },
	{ "incoming, QEMU goes away", true, { "active", "detach" },
	  { MIGRATION_INCOMING, MIGRATION_NONE }, false,
	  "before the incoming migration completed", false },
};

static void test_states(void **state)
{
	struct fixture *fx = *state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct mig_case *c = &cases[i];
		struct migration_status st;
		char err[256] = "";
		int r;

		/* a fresh migration object per case */
		migration_free(fx->m);
		assert_int_equal(migration_new(fx->loop, "t", fx->s, fx->rc, 50, &fx->m), 0);
		if (c->incoming) {
			migration_expect_incoming(fx->m);
			assert_true(migration_holds_session(fx->m));
		}
		for (size_t j = 0; j < STEPS_MAX && c->notes[j]; j++) {
			if (strcmp(c->notes[j], "detach") == 0)
				migration_detach(fx->m);
			else
				migration_note(fx->m, c->notes[j]);
			migration_get_status(fx->m, &st);
			if (st.state != c->after[j])
				fail_msg("%s: after '%s' state %s, expected %s", c->name,
					 c->notes[j], migration_state_name(st.state),
					 migration_state_name(c->after[j]));
		}
		migration_get_status(fx->m, &st);
		r = migration_check_op(fx->m, err, sizeof(err));
		if ((r == -EBUSY) != c->refused)
			fail_msg("%s: check_op %d (%s)", c->name, r, err);
		if (!strstr(err, c->says) && !strstr(st.last_outcome, c->says))
			fail_msg("%s: neither '%s' nor '%s' says '%s'", c->name, err,
				 st.last_outcome, c->says);
		if (st.postcopy != c->postcopy)
			fail_msg("%s: postcopy %d", c->name, st.postcopy);
		if (st.state == MIGRATION_POSTCOPY_FAILED) {
			/* the guest session stays stopped: no reconcile punches */
			assert_true(migration_holds_session(fx->m));
			assert_non_null(strstr(err, "live migration"));
			assert_string_equal(migration_state_name(st.state), "postcopy-failed");
		}
	}
}

static void test_released_outside_arrival(void **state)
{
	struct fixture *fx = *state;
	struct migration_status st;

	/* nothing queued unless migrated in with a layout: no crash, no pass */
	migration_guest_released(fx->m, 0, 2u << 20);
	migration_note(fx->m, "postcopy-active");
	migration_note(fx->m, "postcopy-paused");
	migration_guest_released(fx->m, 0, 2u << 20);
	migration_get_status(fx->m, &st);
	assert_int_equal(st.collapse.rerun.passes, 0);
	assert_int_equal(st.collapse.rerun.queued_bytes, 0);
}

/* ---- polls on a worker, against a real QEMU ---------------------------- */

#define POLL_STOP_MS	700	/* QEMU stopped this long during the first poll */

struct poll_fx {
	struct fixture *fx;
	struct qemu_vm vm;
	struct worker_pool *pool;
	struct worker_queue *wq;
	struct loop_timer cont, tick, guard;
	int submits, events, give_backs;
	int submits_at_first_back;	/* submits when the first poll ended */
	bool events_before_back;	/* every done(): events, then give_back */
	bool lent;
	bool stopped;
	int ticks_stopped;		/* loop turns while QEMU was stopped */
	uint64_t first_back_ms, stop_ms;
};

static int pf_submit(void *opaque, struct worker_job *job)
{
	struct poll_fx *pf = opaque;
	struct json_object *stop;
	int r;

	assert_false(pf->lent);		/* never queued twice */
	pf->submits++;
	qmp_lend(pf->vm.qmp, true);
	pf->lent = true;
	r = worker_submit(pf->wq, job);
	assert_int_equal(r, 0);
	if (pf->submits == 1) {
		/* the first poll meets a stopped QEMU; a STOP event asks for a
		 * poll at once meanwhile, which must wait for this one */
		assert_int_equal(kill(pf->vm.pid, SIGSTOP), 0);
		pf->stopped = true;
		pf->stop_ms = loop_now_ms();
		loop_timer_arm(pf->fx->loop, &pf->cont, POLL_STOP_MS);
		stop = json_tokener_parse("{\"event\": \"STOP\"}");
		migration_qmp_event(pf->fx->m, stop);
		json_object_put(stop);
	}
	return 0;
}

static void pf_events(void *opaque)
{
	struct poll_fx *pf = opaque;
	struct json_object *ev;

	pf->events++;
	if (pf->events != pf->give_backs + 1)
		pf->events_before_back = false;
	while (qmp_next_event(pf->vm.qmp, &ev) == 0) {
		migration_qmp_event(pf->fx->m, ev);
		json_object_put(ev);
	}
}

static void pf_give_back(void *opaque)
{
	struct poll_fx *pf = opaque;

	pf->give_backs++;
	if (pf->give_backs != pf->events)
		pf->events_before_back = false;
	qmp_lend(pf->vm.qmp, false);
	pf->lent = false;
	if (pf->give_backs == 1) {
		pf->submits_at_first_back = pf->submits;
		pf->first_back_ms = loop_now_ms();
	}
	if (pf->give_backs == 2)
		loop_quit(pf->fx->loop, 0);
}

static const struct migration_monitor_ops pf_ops = {
	.submit = pf_submit, .events = pf_events, .give_back = pf_give_back,
};

static void pf_cont(struct loop_timer *t)
{
	struct poll_fx *pf = t->userdata;

	kill(pf->vm.pid, SIGCONT);
	pf->stopped = false;
}

static void pf_tick(struct loop_timer *t)
{
	struct poll_fx *pf = t->userdata;

	if (pf->stopped)
		pf->ticks_stopped++;
	loop_timer_arm(pf->fx->loop, &pf->tick, 20);
}

static void pf_guard(struct loop_timer *t)
{
	struct poll_fx *pf = t->userdata;

	loop_quit(pf->fx->loop, -ETIMEDOUT);
}

static void test_poll_on_worker(void **state)
{
	static const char *const args[] = {
		"-machine", "q35,accel=tcg", "-m", "64M", "-incoming", "defer", NULL,
	};
	struct fixture *fx = *state;
	struct poll_fx pf = { .fx = fx, .events_before_back = true };
	struct migration_probe p;
	struct migration_status st;
	int r;

	if (!fixture_have_qemu())
		skip();
	r = qemu_vm_start(&pf.vm, args);
	if (r < 0) {
		fixture_print_stderr(&pf.vm);
		fail_msg("cannot start qemu: %s", strerror(-r));
	}
	migration_probe(pf.vm.qmp, &p);
	assert_int_equal(p.version_r, 0);
	assert_true(p.ver.version >= 20000);
	assert_true(p.asked);
	assert_string_equal(p.run, "inmigrate");
	assert_string_equal(p.mig, "none");
	assert_int_equal(p.events_r, 0);

	assert_int_equal(worker_pool_new(fx->loop, 1, &pf.pool), 0);
	assert_int_equal(worker_queue_new(pf.pool, &pf.wq), 0);
	loop_timer_init(&pf.cont, pf_cont, &pf);
	loop_timer_init(&pf.tick, pf_tick, &pf);
	loop_timer_init(&pf.guard, pf_guard, &pf);
	loop_timer_arm(fx->loop, &pf.tick, 20);
	loop_timer_arm(fx->loop, &pf.guard, 20000);
	migration_set_monitor_ops(fx->m, &pf_ops, &pf);
	migration_attach(fx->m, pf.vm.qmp, NULL, pf.vm.pid, &p);
	assert_true(migration_incoming(fx->m));
	assert_true(migration_holds_session(fx->m));

	r = loop_run(fx->loop);
	loop_timer_disarm(fx->loop, &pf.tick);
	loop_timer_disarm(fx->loop, &pf.guard);
	loop_timer_disarm(fx->loop, &pf.cont);
	if (pf.stopped)
		kill(pf.vm.pid, SIGCONT);
	migration_get_status(fx->m, &st);
	migration_detach(fx->m);
	worker_queue_free(pf.wq);
	worker_pool_free(pf.pool);
	qemu_vm_stop(&pf.vm);

	assert_int_equal(r, 0);
	/* the loop turned while the poll waited for the stopped QEMU */
	assert_true(pf.ticks_stopped >= POLL_STOP_MS / 20 / 2);
	assert_true(pf.first_back_ms - pf.stop_ms >= POLL_STOP_MS - 50);
	/* the STOP event's poll waited for the running one */
	assert_int_equal(pf.submits_at_first_back, 1);
	assert_int_equal(pf.submits, 2);
	assert_true(pf.events_before_back);
	/* QEMU's "no migration yet" changes nothing */
	assert_int_equal(st.state, MIGRATION_INCOMING);
	assert_string_equal(st.qemu_status, "none");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_states, setup, teardown),
		cmocka_unit_test_setup_teardown(test_released_outside_arrival, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_poll_on_worker, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
