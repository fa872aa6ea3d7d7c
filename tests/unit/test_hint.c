// SPDX-License-Identifier: GPL-2.0
/*
 * test_hint.c - the hint backend's host-side facts (daemon/hint.c): the
 * balloon probe against real paused QEMUs, one per row of a table of
 * device configurations, the RssAnon settle state machine on tables of
 * sample series, the hint reclaim's decisions (daemon/backend_hint.c) on
 * a table of scripted operations, and the hint keys of the control
 * socket's JSON.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "backend_hint.h"
#include "ctl_proto.h"
#include "hint.h"
#include "log.h"
#include "qemu_fixture.h"

#define MiB (1ull << 20)

static void test_type_is_balloon(void **state)
{
	assert_true(hint_qom_type_is_balloon("child<virtio-balloon-pci>"));
	assert_true(hint_qom_type_is_balloon("child<virtio-balloon-pci-non-transitional>"));
	assert_true(hint_qom_type_is_balloon("child<virtio-balloon-ccw>"));
	assert_true(hint_qom_type_is_balloon("child<virtio-balloon-device>"));
	assert_false(hint_qom_type_is_balloon("child<virtio-serial-pci>"));
	assert_false(hint_qom_type_is_balloon("link<virtio-balloon-pci>"));
	assert_false(hint_qom_type_is_balloon("child<virtio-mem-pci>"));
	assert_false(hint_qom_type_is_balloon("string"));
	assert_false(hint_qom_type_is_balloon(""));
	assert_false(hint_qom_type_is_balloon(NULL));
}

struct probe_case {
	const char *name;
	const char *args[12];
	bool found, fpr;
	const char *path;	/* expected QOM path, NULL: none */
};

#define PROBE_BASE "-machine", "q35,accel=tcg", "-m", "64M"

static const struct probe_case probe_cases[] = {
	{ "no devices", { PROBE_BASE, NULL }, false, false, NULL },
	{ "other devices only", { PROBE_BASE, "-device", "virtio-serial-pci,id=vs",
				  "-device", "virtio-rng-pci", NULL },
	  false, false, NULL },
	{ "balloon default (reporting off)", { PROBE_BASE, "-device",
					       "virtio-balloon-pci", NULL },
	  true, false, "/machine/peripheral-anon/device[0]" },
	{ "balloon reporting on, no id", { PROBE_BASE, "-device", "virtio-rng-pci",
					   "-device",
					   "virtio-balloon-pci,free-page-reporting=on",
					   NULL },
	  true, true, "/machine/peripheral-anon/device[1]" },
	{ "balloon reporting on, with id", { PROBE_BASE, "-device",
					     "virtio-balloon-pci,id=b0,free-page-reporting=on",
					     NULL },
	  true, true, "/machine/peripheral/b0" },
	{ "balloon reporting off, with id", { PROBE_BASE, "-device",
					      "virtio-balloon-pci,id=b0,free-page-reporting=off",
					      NULL },
	  true, false, "/machine/peripheral/b0" },
	{ "non-transitional balloon", { PROBE_BASE, "-device",
					"virtio-balloon-pci-non-transitional,"
					"free-page-reporting=on", NULL },
	  true, true, "/machine/peripheral-anon/device[0]" },
};

static void test_probe_live(void **state)
{
	if (!fixture_have_qemu())
		skip();
	for (size_t i = 0; i < sizeof(probe_cases) / sizeof(probe_cases[0]); i++) {
		const struct probe_case *c = &probe_cases[i];
		struct hint_balloon hb = { .found = !c->found, .path = "untouched" };
		struct qemu_vm vm;
		int r;

		fprintf(stderr, "# case: %s\n", c->name);
		r = qemu_vm_start(&vm, c->args);
		if (r < 0) {
			fixture_print_stderr(&vm);
			fail_msg("cannot start qemu for %s: %s", c->name, strerror(-r));
		}
		r = hint_probe_balloon(vm.qmp, 5000, &hb);
		qemu_vm_stop(&vm);
		assert_int_equal(r, 0);
		assert_int_equal(hb.found, c->found);
		assert_int_equal(hb.fpr, c->fpr);
		assert_string_equal(hb.path, c->path ? c->path : "");
	}
}

/* A dead monitor: an error, and the result untouched. */
static void test_probe_dead(void **state)
{
	struct hint_balloon hb = { .found = true, .fpr = true, .path = "x" };
	struct qemu_vm vm;
	const char *args[] = { PROBE_BASE, NULL };
	int r;

	if (!fixture_have_qemu())
		skip();
	assert_int_equal(qemu_vm_start(&vm, args), 0);
	kill(vm.pid, SIGKILL);
	waitpid(vm.pid, NULL, 0);
	vm.pid = 0;
	r = hint_probe_balloon(vm.qmp, 2000, &hb);
	qemu_vm_stop(&vm);
	assert_true(r < 0);
	assert_true(hb.found && hb.fpr);
	assert_string_equal(hb.path, "x");
}

struct settle_case {
	const char *name;
	uint32_t quiet_ms, cap_ms;
	uint64_t start_mib;
	/* samples every 500 ms: RssAnon in MiB, 0 ends the series */
	uint64_t mib[40];
	enum hint_settle_state end;	/* state after the last sample */
	unsigned int end_at;		/* index of the first non-FALLING sample */
	uint64_t low_mib;
};

static const struct settle_case settle_cases[] = {
	{ "flat from the start", 2000, 20000, 500, { 500, 500, 500, 500, 500 },
	  HINT_SETTLE_QUIET, 3, 500 },
	{ "falls in reporting steps, then quiet", 2000, 20000, 500,
	  { 500, 436, 436, 436, 372, 372, 372, 340, 340, 340, 340, 340, 340 },
	  HINT_SETTLE_QUIET, 11, 340 },
	{ "noise below 1 MiB is not a new low", 2000, 20000, 500,
	  { 500, 499, 500, 499, 500 },
	  HINT_SETTLE_QUIET, 3, 500 },
	{ "rise (refaults) is not progress", 2000, 20000, 500,
	  { 520, 540, 560, 560 },
	  HINT_SETTLE_QUIET, 3, 500 },
	{ "slow steady fall hits the cap", 2000, 5000, 500,
	  { 498, 496, 494, 492, 490, 488, 486, 484, 482, 480, 478, 476 },
	  HINT_SETTLE_CAPPED, 9, 480 },
};

static void test_settle(void **state)
{
	for (size_t i = 0; i < sizeof(settle_cases) / sizeof(settle_cases[0]); i++) {
		const struct settle_case *c = &settle_cases[i];
		struct hint_settle s;
		enum hint_settle_state st = HINT_SETTLE_FALLING;
		unsigned int first = ~0u;
		uint64_t now = 1000000;

		fprintf(stderr, "# case: %s\n", c->name);
		hint_settle_begin(&s, now, c->start_mib * MiB, c->quiet_ms, c->cap_ms);
		for (unsigned int k = 0; k < 40 && c->mib[k]; k++) {
			now += 500;
			st = hint_settle_feed(&s, now, c->mib[k] * MiB);
			assert_true(s.last == c->mib[k] * MiB);
			if (st != HINT_SETTLE_FALLING && first == ~0u) {
				first = k;
				break;
			}
		}
		assert_int_equal(st, c->end);
		assert_int_equal(first, c->end_at);
		assert_true(s.low == c->low_mib * MiB);
	}
}

static uint64_t ju64(struct json_object *o, const char *key)
{
	struct json_object *v;

	assert_true(json_object_object_get_ex(o, key, &v));
	assert_non_null(v);
	return json_object_get_uint64(v);
}

/* The keys ctl_proto.h documents for the hint backend, and their absence
 * from other operations. */
static void test_json_keys(void **state)
{
	struct reclaim_op_info op = {
		.id = 7, .kind = RECLAIM_KIND_RECLAIM, .state = RECLAIM_OP_STOPPED,
		.target_bytes = 512 * MiB, .done_bytes = 300 * MiB, .hint = true,
		.compacted_bytes = 510 * MiB, .rss_anon_before = 900 * MiB,
		.rss_anon_after = 600 * MiB,
	};
	struct ctl_vm_status *st = calloc(1, sizeof(*st));
	struct json_object *o, *m, *v;

	assert_non_null(st);
	o = ctl_proto_op_json("g", &op);
	assert_true(json_object_object_get_ex(o, "backend", &v));
	assert_string_equal(json_object_get_string(v), "hint");
	assert_true(ju64(o, "compacted_bytes") == 510 * MiB);
	assert_true(ju64(o, "rss_anon_before_bytes") == 900 * MiB);
	assert_true(ju64(o, "rss_anon_after_bytes") == 600 * MiB);
	assert_true(ju64(o, "done_bytes") == 300 * MiB);
	assert_false(json_object_object_get_ex(o, "punched_bytes", &v));
	json_object_put(o);
	op.hint = false;
	op.punched_bytes = 256 * MiB;
	o = ctl_proto_op_json("g", &op);
	assert_false(json_object_object_get_ex(o, "compacted_bytes", &v));
	assert_false(json_object_object_get_ex(o, "backend", &v));
	assert_true(ju64(o, "punched_bytes") == 256 * MiB);	/* shared reclaim */
	json_object_put(o);
	op.kind = RECLAIM_KIND_RETURN;
	o = ctl_proto_op_json("g", &op);
	assert_false(json_object_object_get_ex(o, "punched_bytes", &v));
	json_object_put(o);
	op.kind = RECLAIM_KIND_RECLAIM;

	snprintf(st->name, sizeof(st->name), "g");
	st->backend = "hint";
	snprintf(st->backend_note, sizeof(st->backend_note), "why");
	st->rss_known = true;
	st->rss_anon_bytes = 600 * MiB;
	st->mem.layout_known = true;
	st->mem.hint_returned_bytes = 300 * MiB;
	o = ctl_proto_status_json(st);
	assert_true(ju64(o, "rss_anon_bytes") == 600 * MiB);
	assert_true(json_object_object_get_ex(o, "memory", &m));
	assert_true(ju64(m, "hint_returned_bytes") == 300 * MiB);
	json_object_put(o);
	st->rss_known = false;
	o = ctl_proto_status_json(st);
	assert_true(json_object_object_get_ex(o, "rss_anon_bytes", &v));
	assert_null(v);
	json_object_put(o);
	free(st);
}

/*
 * The hint reclaim's state machine, scripted: each phase of a case is
 * "the guest compacts these rounds, then RssAnon falls to this and stays
 * there"; the case says what the operation must end as.
 */
struct hint_op_case {
	const char *name;
	uint64_t target_mib, rss_mib;
	/* per phase: MiB compacted in each round (0 ends the phase's rounds
	 * as a guest stop), then the RssAnon it settles at */
	struct {
		uint64_t rounds[3];
		unsigned nrounds;
		uint64_t settle_mib;
	} phase[BACKEND_HINT_MAX_PHASES];
	unsigned nphases;
	enum backend_hint_action end;
	int error;
	bool guest_stopped;
	const char *reason_has;		/* NULL: no reason expected */
};

static const struct hint_op_case hint_op_cases[] = {
	{ "done in one phase", 4, 100, { { { 4 }, 1, 95 } }, 1,
	  BACKEND_HINT_DONE, 0, false, NULL },
	{ "done in two rounds", 8, 100, { { { 4, 4 }, 2, 90 } }, 1,
	  BACKEND_HINT_DONE, 0, false, NULL },
	{ "guest stopped", 64, 100, { { { 0 }, 1, 100 } }, 1,
	  BACKEND_HINT_STOPPED, -ENOSPC, true, "compacted 0 MiB" },
	{ "nothing came back", 8, 100, { { { 8 }, 1, 100 } }, 1,
	  BACKEND_HINT_STOPPED, -EAGAIN, false, "gave nothing more back" },
	{ "second phase finishes", 8, 100,
	  { { { 8 }, 1, 96 }, { { 4 }, 1, 92 } }, 2,
	  BACKEND_HINT_DONE, 0, false, NULL },
	{ "phases run out", 64, 100,
	  { { { 64 }, 1, 96 }, { { 60 }, 1, 92 }, { { 56 }, 1, 88 },
	    { { 52 }, 1, 84 } }, 4,
	  BACKEND_HINT_STOPPED, -EAGAIN, false, "after 4 compaction phases" },
};

static void test_hint_op(void **state)
{
	for (size_t c = 0; c < sizeof(hint_op_cases) / sizeof(hint_op_cases[0]); c++) {
		const struct hint_op_case *k = &hint_op_cases[c];
		struct backend_hint h;
		struct backend_hint_step s;
		uint64_t now = 1000000, want = k->target_mib * MiB;

		backend_hint_begin(&h, "vm", 1, k->target_mib * MiB, NULL,
				   k->rss_mib * MiB, &s);
		for (unsigned p = 0; p < k->nphases; p++) {
			/* each phase asks for what is still missing, in whole blocks */
			assert_int_equal(s.action, BACKEND_HINT_COMPACT);
			assert_true(s.bytes == want);
			for (unsigned r = 0; r < k->phase[p].nrounds; r++) {
				assert_int_equal(s.action, BACKEND_HINT_COMPACT);
				backend_hint_compacted(&h, k->phase[p].rounds[r] * MiB,
						       k->phase[p].rounds[r] ? 0 : -ENOSPC,
						       &s);
			}
			/* settle: the first sample at once, then every SAMPLE_MS */
			assert_int_equal(s.action, BACKEND_HINT_SAMPLE);
			assert_int_equal(s.delay_ms, 0);
			backend_hint_sampled(&h, now, k->phase[p].settle_mib * MiB + 4 * MiB, &s);
			while (s.action == BACKEND_HINT_SAMPLE) {
				assert_int_equal(s.delay_ms, BACKEND_HINT_SAMPLE_MS);
				now += s.delay_ms;
				backend_hint_sampled(&h, now, k->phase[p].settle_mib * MiB, &s);
			}
			assert_true(h.rss_after == k->phase[p].settle_mib * MiB);
			want = k->target_mib * MiB - h.returned_bytes;
		}
		if (s.action != k->end)
			fail_msg("%s: ends as %d, not %d", k->name, s.action, k->end);
		assert_int_equal(s.error, k->error);
		assert_int_equal(s.guest_stopped, k->guest_stopped);
		if (k->reason_has && !strstr(s.reason, k->reason_has))
			fail_msg("%s: reason '%s' lacks '%s'", k->name, s.reason,
				 k->reason_has);
		if (!k->reason_has)
			assert_string_equal(s.reason, "");
		assert_true(h.returned_bytes ==
			    (k->rss_mib - k->phase[k->nphases - 1].settle_mib) * MiB);
	}
}

/* Settles a phase at rss (one sample at once, then quiet). */
static void test_settle_at(struct backend_hint *h, uint64_t *now, uint64_t rss,
			   struct backend_hint_step *s)
{
	assert_int_equal(s->action, BACKEND_HINT_SAMPLE);
	backend_hint_sampled(h, *now, rss, s);
	while (s->action == BACKEND_HINT_SAMPLE) {
		*now += s->delay_ms;
		backend_hint_sampled(h, *now, rss, s);
	}
}

/*
 * The reach: free page reporting returned the wholly free blocks before
 * the operation, so only the free memory scattered in partly used blocks
 * can still come back; the phases aim at that, not at more.
 */
static void test_hint_reach(void **state)
{
	struct backend_hint h;
	struct backend_hint_step s;
	struct backend_hint_reach r = { true, 41 * MiB, 20 * MiB };
	uint64_t now = 1000;

	/* 64 asked, 21 still backed: aim at 20 (whole blocks), stop there */
	backend_hint_begin(&h, "vm", 1, 64 * MiB, &r, 500 * MiB, &s);
	assert_int_equal(s.action, BACKEND_HINT_COMPACT);
	assert_true(s.bytes == 20 * MiB);
	assert_true(h.goal_bytes == 20 * MiB);
	backend_hint_compacted(&h, 20 * MiB, 0, &s);
	test_settle_at(&h, &now, 480 * MiB, &s);
	assert_int_equal(s.action, BACKEND_HINT_STOPPED);
	assert_int_equal(s.error, -ENOSPC);
	assert_false(s.guest_stopped);
	assert_non_null(strstr(s.reason, "(20 of 41 MiB free) already"));
	assert_non_null(strstr(s.reason, "at most 20 MiB"));
	assert_true(h.returned_bytes == 20 * MiB);

	/* short of the reach: a second phase for the rest of it only */
	backend_hint_begin(&h, "vm", 2, 64 * MiB, &r, 500 * MiB, &s);
	backend_hint_compacted(&h, 20 * MiB, 0, &s);
	test_settle_at(&h, &now, 490 * MiB, &s);
	assert_int_equal(s.action, BACKEND_HINT_COMPACT);
	assert_true(s.bytes == 10 * MiB);

	/* within the slack of the reach: no phase for the last few MiB */
	r.free_bytes = 520 * MiB;
	r.whole_free_bytes = 20 * MiB;
	backend_hint_begin(&h, "vm", 7, 640 * MiB, &r, 900 * MiB, &s);
	assert_true(s.bytes == 500 * MiB);
	backend_hint_compacted(&h, 500 * MiB, 0, &s);
	test_settle_at(&h, &now, 900 * MiB - 470 * MiB, &s);	/* 470: 30 short */
	assert_int_equal(s.action, BACKEND_HINT_STOPPED);
	assert_int_equal(s.error, -ENOSPC);
	assert_non_null(strstr(s.reason, "at most 500 MiB"));
	backend_hint_begin(&h, "vm", 8, 640 * MiB, &r, 900 * MiB, &s);
	backend_hint_compacted(&h, 500 * MiB, 0, &s);
	test_settle_at(&h, &now, 900 * MiB - 460 * MiB, &s);	/* 40 short */
	assert_int_equal(s.action, BACKEND_HINT_COMPACT);
	assert_true(s.bytes == 40 * MiB);
	r.free_bytes = 41 * MiB;

	/* a target within the reach is the goal, and done as before */
	backend_hint_begin(&h, "vm", 3, 8 * MiB, &r, 500 * MiB, &s);
	assert_int_equal(s.action, BACKEND_HINT_COMPACT);
	assert_true(s.bytes == 8 * MiB);
	backend_hint_compacted(&h, 8 * MiB, 0, &s);
	test_settle_at(&h, &now, 492 * MiB, &s);
	assert_int_equal(s.action, BACKEND_HINT_DONE);

	/* less than a block still backed: stopped before any compaction */
	r.free_bytes = 21 * MiB;
	backend_hint_begin(&h, "vm", 4, 64 * MiB, &r, 500 * MiB, &s);
	assert_int_equal(s.action, BACKEND_HINT_STOPPED);
	assert_int_equal(s.error, -ENOSPC);
	assert_non_null(strstr(s.reason, "at most 0 MiB"));
	assert_int_equal(h.phases, 0);

	/* more whole free than free (a racy scan): nothing is backed */
	r.free_bytes = 10 * MiB;
	backend_hint_begin(&h, "vm", 5, 64 * MiB, &r, 500 * MiB, &s);
	assert_int_equal(s.action, BACKEND_HINT_STOPPED);

	/* unknown reach: the target */
	r.known = false;
	backend_hint_begin(&h, "vm", 6, 64 * MiB, &r, 500 * MiB, &s);
	assert_int_equal(s.action, BACKEND_HINT_COMPACT);
	assert_true(s.bytes == 64 * MiB);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_type_is_balloon),
		cmocka_unit_test(test_probe_live),
		cmocka_unit_test(test_probe_dead),
		cmocka_unit_test(test_settle),
		cmocka_unit_test(test_hint_op),
		cmocka_unit_test(test_hint_reach),
		cmocka_unit_test(test_json_keys),
	};

	log_set_max_level(LOG_WARNING);
	return cmocka_run_group_tests_name("hint", tests, NULL, NULL);
}
