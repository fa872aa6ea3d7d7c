/* SPDX-License-Identifier: GPL-2.0 */
/*
 * test_policy.c - unit tests of the densification engine's decision
 * (daemon/policy.c) and of the policy state file's format (policy_vm.c).
 *
 * policy_decide() is a pure function of settings, signals, the mechanism's
 * view, the host and the time, plus the state it carries: each test builds
 * those, steps the clock, and checks the action, its size, and what it
 * must never do (reclaim below the floor, return more than is held,
 * reclaim before the guest was calm, flap).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "policy.h"
#include "policy_vm.h"

#define MIB (1ULL << 20)
#define GIB (1ULL << 30)
#define T0 1000000ULL		/* a loop time far from 0 */

struct fx {
	struct policy_params p;
	struct policy_state st;
	struct policy_signals sig;
	struct policy_view v;
	struct policy_host h;
	struct policy_decision d;
	uint64_t now;
};

/* A 1 GiB guest, floor 128 MiB, calm, with `free` free; auto, 32 MiB/s. */
static void fx_init(struct fx *f, uint64_t free)
{
	memset(f, 0, sizeof(*f));
	policy_params_init(&f->p);
	f->p.mode = POLICY_AUTO;
	f->p.calm_s = 4;
	f->sig.have = true;
	f->sig.mi.total_bytes = GIB;
	f->sig.mi.free_bytes = free;
	f->sig.mi.available_bytes = free;
	f->sig.mi.wmark_low_bytes = 4 * MIB;
	f->sig.mi.wmark_high_bytes = 6 * MIB;
	f->sig.mi.alloc_bytes_per_sec = 100 << 10;
	f->sig.mi.floor_bytes = 128 * MIB;
	f->sig.mi.flags = PROTO_MEMINFO_F_PSI | PROTO_MEMINFO_F_MODULE;
	f->sig.mi.interval_ms = 2000;
	f->v.ready = true;
	f->v.backend_ok = true;
	f->v.can_return = true;
	f->now = T0;
	policy_host_classify(&f->h);
}

/* A new report from the guest at now (free as given), then a decision. */
static enum policy_action fx_report(struct fx *f, uint64_t free)
{
	f->sig.mi.free_bytes = free;
	f->sig.at_ms = f->now;
	policy_decide(&f->p, &f->st, &f->sig, &f->v, &f->h, f->now, &f->d);
	return f->d.action;
}

/* A decision at now on the signals as they are. */
static enum policy_action fx_decide(struct fx *f)
{
	policy_decide(&f->p, &f->st, &f->sig, &f->v, &f->h, f->now, &f->d);
	return f->d.action;
}

/* Reports every 2 s for `s` seconds, decisions in between; the last action. */
static enum policy_action fx_calm_for(struct fx *f, uint64_t free, unsigned int s)
{
	enum policy_action a = POLICY_ACT_NONE;

	for (unsigned int i = 0; i <= s; i += 2) {
		a = fx_report(f, free);
		if (a != POLICY_ACT_NONE)
			return a;
		f->now += 2000;
	}
	return a;
}

static void test_manual_does_nothing(void **state)
{
	struct fx f;

	(void)state;
	fx_init(&f, 900 * MIB);
	f.p.mode = POLICY_MANUAL;
	assert_int_equal(fx_calm_for(&f, 900 * MIB, 30), POLICY_ACT_NONE);
	assert_non_null(strstr(f.d.reason, "manual"));
	/* the headroom is still computed, for status */
	assert_true(f.d.headroom_bytes >= 128 * MIB);
}

static void test_no_signals_no_action(void **state)
{
	struct fx f;

	(void)state;
	fx_init(&f, 900 * MIB);
	f.sig.have = false;
	assert_int_equal(fx_decide(&f), POLICY_ACT_NONE);
	assert_non_null(strstr(f.d.reason, "no memory signals"));
	assert_int_equal(f.d.headroom_bytes, 0);
}

static void test_reclaims_after_calm_in_bounded_steps(void **state)
{
	struct fx f;

	(void)state;
	fx_init(&f, 900 * MIB);
	/* calm starts at the first report: not before calm_s */
	assert_int_equal(fx_report(&f, 900 * MIB), POLICY_ACT_NONE);
	assert_non_null(strstr(f.d.reason, "not calm"));
	f.now += 2000;
	assert_int_equal(fx_report(&f, 900 * MIB), POLICY_ACT_NONE);
	f.now += 2000;
	assert_int_equal(fx_report(&f, 900 * MIB), POLICY_ACT_RECLAIM);
	/* a step: a 2 MiB multiple, at most one second at 32 MiB/s */
	assert_int_equal(f.d.bytes % (2 * MIB), 0);
	assert_true(f.d.bytes > 0 && f.d.bytes <= 32 * MIB);
	assert_non_null(strstr(f.d.reason, "headroom"));
}

/* The guest's vacate time spaces the reclaim steps (policy_cpu_percent). */
static void test_cpu_budget(void **state)
{
	struct fx f;
	uint64_t start;

	(void)state;
	fx_init(&f, 900 * MIB);
	f.sig.mi.vacate_ns = 5ULL * 1000000000;	/* before: not counted */
	assert_int_equal(fx_calm_for(&f, 900 * MIB, 10), POLICY_ACT_RECLAIM);
	start = f.now;
	/* the step ran: 1 s of guest CPU spent vacating; 5 % spreads it over 20 s */
	f.now += 500;
	assert_int_equal(fx_decide(&f), POLICY_ACT_NONE);
	f.sig.mi.vacate_ns += 1000000000;
	f.now = start + 2000;
	assert_int_equal(fx_report(&f, 880 * MIB), POLICY_ACT_NONE);
	assert_non_null(strstr(f.d.reason, "CPU budget"));
	f.now = start + 19000;
	assert_int_equal(fx_report(&f, 880 * MIB), POLICY_ACT_NONE);
	assert_non_null(strstr(f.d.reason, "CPU budget"));
	f.now = start + 20000;
	assert_int_equal(fx_report(&f, 880 * MIB), POLICY_ACT_RECLAIM);

	/* at 100 % only the rate spaces them; a module reload counts from 0 */
	fx_init(&f, 900 * MIB);
	f.p.cpu_percent = 100;
	f.sig.mi.vacate_ns = 9ULL * 1000000000;
	assert_int_equal(fx_calm_for(&f, 900 * MIB, 10), POLICY_ACT_RECLAIM);
	start = f.now;
	f.now += 500;
	assert_int_equal(fx_decide(&f), POLICY_ACT_NONE);
	f.sig.mi.vacate_ns = 3ULL * 1000000000;	/* reloaded, 3 s since */
	f.now = start + 2000;
	assert_int_equal(fx_report(&f, 880 * MIB), POLICY_ACT_NONE);
	assert_non_null(strstr(f.d.reason, "CPU budget"));
	f.now = start + 3000;
	assert_int_equal(fx_report(&f, 880 * MIB), POLICY_ACT_RECLAIM);
}

static void test_burst_is_not_calm(void **state)
{
	struct fx f;

	(void)state;
	fx_init(&f, 900 * MIB);
	f.sig.mi.alloc_bytes_per_sec = 200 * MIB;
	assert_int_equal(fx_calm_for(&f, 900 * MIB, 30), POLICY_ACT_NONE);
	assert_non_null(strstr(f.d.reason, "not calm"));
	/* the burst ends: calm restarts from there */
	f.sig.mi.alloc_bytes_per_sec = 0;
	assert_int_equal(fx_report(&f, 900 * MIB), POLICY_ACT_NONE);
	/* PSI also breaks calm */
	f.sig.mi.psi_some_avg10 = 50;
	f.now += 6000;
	assert_int_equal(fx_report(&f, 900 * MIB), POLICY_ACT_NONE);
	assert_non_null(strstr(f.d.reason, "not calm"));
}

/* Whatever is free, a reclaim leaves floor + margin free at least. */
static void test_never_below_floor(void **state)
{
	(void)state;
	for (uint64_t free = 0; free <= GIB; free += 6 * MIB) {
		struct fx f;
		uint64_t floor = 300 * MIB;

		fx_init(&f, free);
		f.p.floor_bytes = floor;	/* above the module's 128 MiB */
		f.p.reclaim_rate_mib = 4096;
		if (fx_calm_for(&f, free, 10) == POLICY_ACT_RECLAIM) {
			uint64_t above = free - f.sig.mi.wmark_high_bytes;

			assert_true(above - f.d.bytes >= floor + 64 * MIB);
			assert_true(f.d.bytes <= 64 * MIB);
		}
	}
}

static void test_dead_band(void **state)
{
	struct fx f;

	(void)state;
	fx_init(&f, 0);
	/* headroom 128 + 64 MiB; the band above it is 16 MiB */
	assert_int_equal(fx_calm_for(&f, 6 * MIB + 200 * MIB, 10), POLICY_ACT_NONE);
	assert_non_null(strstr(f.d.reason, "within the headroom"));
	assert_int_equal(f.d.headroom_bytes, 192 * MIB);
	/* nothing held: below the return line there is nothing to return */
	assert_int_equal(fx_report(&f, 6 * MIB + 150 * MIB), POLICY_ACT_NONE);
	assert_non_null(strstr(f.d.reason, "nothing held to return"));
}

static void test_returns_near_watermarks(void **state)
{
	struct fx f;

	(void)state;
	fx_init(&f, 0);
	f.v.held_bytes = 300 * MIB;
	/* 150 MiB above the watermarks: below floor + margin/2 = 160 MiB */
	assert_int_equal(fx_report(&f, 6 * MIB + 150 * MIB), POLICY_ACT_RETURN);
	assert_int_equal(f.d.bytes % (2 * MIB), 0);
	/* back to the headroom (192 MiB) at least */
	assert_true(f.d.bytes >= 42 * MIB && f.d.bytes <= 300 * MIB);
	assert_non_null(strstr(f.d.reason, "nears the watermarks"));

	/* never more than is held */
	fx_init(&f, 0);
	f.v.held_bytes = 8 * MIB;
	assert_int_equal(fx_report(&f, 6 * MIB), POLICY_ACT_RETURN);
	assert_int_equal(f.d.bytes, 8 * MIB);

	/* nothing to return where the backend cannot */
	fx_init(&f, 0);
	f.v.held_bytes = 100 * MIB;
	f.v.can_return = false;
	assert_int_equal(fx_report(&f, 6 * MIB), POLICY_ACT_NONE);
}

static void test_returns_on_psi_and_miss(void **state)
{
	struct fx f;

	(void)state;
	fx_init(&f, 800 * MIB);
	f.v.held_bytes = 100 * MIB;
	f.sig.mi.psi_some_avg10 = 250;
	f.sig.mi.psi_full_avg10 = 10;
	assert_int_equal(fx_report(&f, 800 * MIB), POLICY_ACT_RETURN);
	assert_non_null(strstr(f.d.reason, "pressure"));

	fx_init(&f, 800 * MIB);
	f.v.held_bytes = 100 * MIB;
	assert_int_equal(fx_report(&f, 800 * MIB), POLICY_ACT_NONE);
	f.now += 500;
	f.v.misses = 1;		/* the guest released under pressure */
	assert_int_equal(fx_decide(&f), POLICY_ACT_RETURN);
	assert_non_null(strstr(f.d.reason, "under pressure"));
	/* the miss doubles the margin for a while */
	assert_int_equal(f.d.headroom_bytes, 128 * MIB + 128 * MIB);
	/* answered once */
	f.now += 500;
	assert_int_equal(fx_decide(&f), POLICY_ACT_NONE);
}

static void test_stop_own_reclaim_when_return_due(void **state)
{
	struct fx f;

	(void)state;
	fx_init(&f, 0);
	f.v.held_bytes = 64 * MIB;
	f.v.op_running = true;
	f.v.op_is_reclaim = true;
	assert_int_equal(fx_report(&f, 6 * MIB + 20 * MIB), POLICY_ACT_STOP);
	/* a return (or someone else's operation) is left to run */
	f.v.op_is_reclaim = false;
	assert_int_equal(fx_report(&f, 6 * MIB + 20 * MIB), POLICY_ACT_NONE);
	assert_non_null(strstr(f.d.reason, "operation runs"));
}

/* After a return, no reclaim sooner than the calm time, even with room. */
static void test_hysteresis_no_flapping(void **state)
{
	struct fx f;
	uint64_t returned_at;

	(void)state;
	fx_init(&f, 0);
	f.p.calm_s = 10;
	f.v.held_bytes = 200 * MIB;
	assert_int_equal(fx_report(&f, 6 * MIB + 100 * MIB), POLICY_ACT_RETURN);
	returned_at = f.now;
	/* the return runs, then ends */
	f.v.op_running = true;
	f.now += 500;
	assert_int_equal(fx_decide(&f), POLICY_ACT_NONE);
	f.v.op_running = false;
	f.v.held_bytes = 50 * MIB;
	f.now += 500;
	assert_int_equal(fx_decide(&f), POLICY_ACT_NONE);
	assert_non_null(strstr(f.d.reason, "waiting for the guest's signals"));
	/* the guest now shows lots free: still no reclaim for calm_s */
	for (f.now += 1000; f.now < returned_at + 10000; f.now += 1000)
		assert_int_equal(fx_report(&f, 700 * MIB), POLICY_ACT_NONE);
	f.now = returned_at + 13000;
	assert_int_equal(fx_report(&f, 700 * MIB), POLICY_ACT_RECLAIM);
}

/* One step, then wait for it to end and for signals after it. */
static void test_reclaim_settles_and_rate(void **state)
{
	struct fx f;
	uint64_t step;

	(void)state;
	fx_init(&f, 900 * MIB);
	f.p.reclaim_rate_mib = 8;
	assert_int_equal(fx_calm_for(&f, 900 * MIB, 10), POLICY_ACT_RECLAIM);
	step = f.d.bytes;
	assert_int_equal(step, 8 * MIB);
	/* the same (old) signals never make a second step */
	f.now += 100;
	assert_int_equal(fx_decide(&f), POLICY_ACT_NONE);
	f.v.op_running = true;
	f.now += 100;
	assert_int_equal(fx_decide(&f), POLICY_ACT_NONE);
	f.v.op_running = false;
	f.now += 100;
	assert_int_equal(fx_decide(&f), POLICY_ACT_NONE);
	/* fresh signals, and the rate's slot has come: next step */
	f.now += 1000;
	assert_int_equal(fx_report(&f, 900 * MIB - step), POLICY_ACT_RECLAIM);
}

static void test_host_pressure(void **state)
{
	struct fx f;
	uint64_t relaxed_headroom, relaxed_bytes;

	(void)state;
	fx_init(&f, 900 * MIB);
	f.p.reclaim_rate_mib = 8;
	assert_int_equal(fx_calm_for(&f, 900 * MIB, 10), POLICY_ACT_RECLAIM);
	relaxed_headroom = f.d.headroom_bytes;
	relaxed_bytes = f.d.bytes;

	fx_init(&f, 900 * MIB);
	f.p.reclaim_rate_mib = 8;
	f.p.weight = 200;
	f.h.psi_known = true;
	f.h.psi_some_avg10 = 1500;	/* 15 % */
	policy_host_classify(&f.h);
	assert_int_equal(f.h.level, POLICY_HOST_HIGH);
	/* calm 4 s halved twice over: 4 s / 3 */
	f.now += 0;
	assert_int_equal(fx_report(&f, 900 * MIB), POLICY_ACT_NONE);
	f.now += 2000;
	assert_int_equal(fx_report(&f, 900 * MIB), POLICY_ACT_RECLAIM);
	assert_true(f.d.headroom_bytes < relaxed_headroom);
	/* 8 MiB/s x (1 + 2 x 200 / 100) */
	assert_int_equal(f.d.bytes, 40 * MIB);
	assert_true(f.d.bytes > relaxed_bytes);

	/* MemAvailable alone */
	memset(&f.h, 0, sizeof(f.h));
	f.h.total_bytes = 100 * GIB;
	f.h.available_bytes = 10 * GIB;
	policy_host_classify(&f.h);
	assert_int_equal(f.h.level, POLICY_HOST_MODERATE);
	f.h.available_bytes = 50 * GIB;
	policy_host_classify(&f.h);
	assert_int_equal(f.h.level, POLICY_HOST_RELAXED);
}

static void test_stale_signals(void **state)
{
	struct fx f;

	(void)state;
	fx_init(&f, 900 * MIB);
	f.v.held_bytes = 100 * MIB;
	fx_report(&f, 6 * MIB);
	f.now += 60000;
	assert_int_equal(fx_decide(&f), POLICY_ACT_NONE);
	assert_non_null(strstr(f.d.reason, "ms old"));
	f.v.ready = false;
	assert_int_equal(fx_report(&f, 6 * MIB), POLICY_ACT_NONE);
	assert_non_null(strstr(f.d.reason, "not ready"));
	f.v.ready = true;
	f.v.backend_ok = false;	/* hint or none: nothing to move */
	assert_int_equal(fx_report(&f, 6 * MIB), POLICY_ACT_NONE);
	assert_non_null(strstr(f.d.reason, "shared backend only"));
}

static void test_fixed_headroom_and_failure(void **state)
{
	struct fx f;
	struct policy_decision d;

	(void)state;
	fx_init(&f, 900 * MIB);
	f.p.headroom_bytes = 512 * MIB;
	assert_int_equal(fx_calm_for(&f, 900 * MIB, 10), POLICY_ACT_RECLAIM);
	assert_int_equal(f.d.headroom_bytes, 640 * MIB);
	/* the mechanism refused: tried again, but not at once */
	d = f.d;
	policy_failed(&f.st, &d, f.now);
	f.now += 500;
	assert_int_equal(fx_decide(&f), POLICY_ACT_NONE);
	assert_non_null(strstr(f.d.reason, "could not start"));
	f.now += 600;
	assert_int_equal(fx_decide(&f), POLICY_ACT_RECLAIM);
}

static void test_mode_names(void **state)
{
	enum policy_mode m;

	(void)state;
	assert_int_equal(policy_mode_from_name("auto", &m), 0);
	assert_int_equal(m, POLICY_AUTO);
	assert_int_equal(policy_mode_from_name("manual", &m), 0);
	assert_int_equal(m, POLICY_MANUAL);
	assert_int_equal(policy_mode_from_name("Auto", &m), -EINVAL);
	assert_int_equal(policy_mode_from_name("", &m), -EINVAL);
	assert_string_equal(policy_mode_name(POLICY_AUTO), "auto");
}

static void test_state_file_format(void **state)
{
	static const char *const bad[] = {
		"", "mode=auto\n", "vmdefrag-policy 1\n", "vmdefrag-policy 1\nmode=auto",
		"vmdefrag-policy 1\nmode=fast\n", "vmdefrag-policy 1\nmode=auto\nx\n",
		"vmdefrag-policy 2\nmode=auto\n", "vmdefrag-policy 1\nmode=auto\n\n",
		"vmdefrag-policy 1\nmode=\n",
	};
	enum policy_mode m = POLICY_MANUAL;
	char path[64];

	(void)state;
	assert_int_equal(policy_vm_state_parse("vmdefrag-policy 1\nmode=auto\n", &m), 0);
	assert_int_equal(m, POLICY_AUTO);
	assert_int_equal(policy_vm_state_parse("vmdefrag-policy 1\nmode=manual\n", &m), 0);
	assert_int_equal(m, POLICY_MANUAL);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(policy_vm_state_parse(bad[i], &m), -EINVAL);
	assert_int_equal(policy_vm_state_path("/var/lib/vmdefrag", "vm1", path,
					      sizeof(path)), 0);
	assert_string_equal(path, "/var/lib/vmdefrag/vm1.policy");
	assert_int_equal(policy_vm_state_path("/var/lib/vmdefrag", "vm1", path, 10),
			 -ENAMETOOLONG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_manual_does_nothing),
		cmocka_unit_test(test_no_signals_no_action),
		cmocka_unit_test(test_reclaims_after_calm_in_bounded_steps),
		cmocka_unit_test(test_burst_is_not_calm),
		cmocka_unit_test(test_never_below_floor),
		cmocka_unit_test(test_dead_band),
		cmocka_unit_test(test_returns_near_watermarks),
		cmocka_unit_test(test_returns_on_psi_and_miss),
		cmocka_unit_test(test_stop_own_reclaim_when_return_due),
		cmocka_unit_test(test_hysteresis_no_flapping),
		cmocka_unit_test(test_reclaim_settles_and_rate),
		cmocka_unit_test(test_host_pressure),
		cmocka_unit_test(test_stale_signals),
		cmocka_unit_test(test_fixed_headroom_and_failure),
		cmocka_unit_test(test_cpu_budget),
		cmocka_unit_test(test_mode_names),
		cmocka_unit_test(test_state_file_format),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
