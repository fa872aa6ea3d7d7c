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
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "loop.h"
#include "migration.h"
#include "reclaim.h"
#include "session.h"

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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_states, setup, teardown),
		cmocka_unit_test_setup_teardown(test_released_outside_arrival, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
