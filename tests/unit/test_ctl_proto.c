// SPDX-License-Identifier: GPL-2.0
/*
 * test_ctl_proto.c - the control socket's JSON (daemon/ctl_proto.c) and
 * the semantic checks of a guest's SCAN answer (session_check_scan()),
 * table-driven: every request the CLI can send parses back to itself,
 * every malformed request is refused with a reason, error codes map to
 * the documented exit statuses, and impossible SCAN totals are caught.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_proto.h"
#include "session.h"

#define MiB (1ull << 20)

static void test_request_roundtrip(void **state)
{
	static const struct ctl_request reqs[] = {
		{ CTL_CMD_STATUS, "", 0, 0, 0, -1, POLICY_MANUAL },
		{ CTL_CMD_STATUS, "web-1", 0, 0, 0, -1, POLICY_MANUAL },
		{ CTL_CMD_SCAN, "db.2", 0, 0, 0, -1, POLICY_MANUAL },
		{ CTL_CMD_RECLAIM, "vm1", 512 * MiB, 0, 0, -1, POLICY_MANUAL },
		{ CTL_CMD_RETURN, "vm1", 1ull << 40, 0, 0, -1, POLICY_MANUAL },
		{ CTL_CMD_OP, "vm1", 0, 4000000000u, 0, -1, POLICY_MANUAL },
		{ CTL_CMD_CANCEL, "vm1", 0, 0, 0, -1, POLICY_MANUAL },
		{ CTL_CMD_CANCEL, "vm1", 0, 7, 0, -1, POLICY_MANUAL },
		{ CTL_CMD_NOTIFY, "dom-a", 0, 0, CTL_NOTIFY_PREPARE, -1, POLICY_MANUAL },
		{ CTL_CMD_NOTIFY, "dom-a", 0, 0, CTL_NOTIFY_STARTED, -1, POLICY_MANUAL },
		{ CTL_CMD_NOTIFY, "dom-a", 0, 0, CTL_NOTIFY_STOPPED, -1, POLICY_MANUAL },
		{ CTL_CMD_NOTIFY, "dom-a", 0, 0, CTL_NOTIFY_RELEASE, -1, POLICY_MANUAL },
		{ CTL_CMD_NOTIFY, "dom-a", 0, 0, CTL_NOTIFY_MIGRATE, -1, POLICY_MANUAL },
		{ CTL_CMD_RECLAIM, "vm1", 64 * MiB, 0, 0, VMDEFRAG_EVICT_NONE, POLICY_MANUAL },
		{ CTL_CMD_RECLAIM, "vm1", 64 * MiB, 0, 0, VMDEFRAG_EVICT_SLAB, POLICY_MANUAL },
		{ CTL_CMD_RECLAIM, "vm1", 64 * MiB, 0, 0, VMDEFRAG_EVICT_ALL, POLICY_MANUAL },
		{ CTL_CMD_POLICY, "vm1", 0, 0, 0, -1, POLICY_AUTO },
		{ CTL_CMD_POLICY, "vm1", 0, 0, 0, -1, POLICY_MANUAL },
		{ CTL_CMD_METRICS, "", 0, 0, 0, -1, POLICY_MANUAL },
		{ CTL_CMD_HISTORY, "", 0, 0, 0, -1, POLICY_MANUAL },
		{ CTL_CMD_HISTORY, "vm1", 0, 0, 0, -1, POLICY_MANUAL },
		{ CTL_CMD_MAP, "vm1", 0, 0, 0, -1, POLICY_MANUAL },
	};

	for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
		struct ctl_request back;
		char *line, err[128];

		assert_int_equal(ctl_proto_format_request(&reqs[i], &line), 0);
		assert_non_null(strchr(line, '\n'));
		assert_int_equal(ctl_proto_parse_request(line, &back, err, sizeof(err)), 0);
		assert_int_equal(back.cmd, reqs[i].cmd);
		assert_string_equal(back.vm, reqs[i].vm);
		assert_int_equal(back.bytes, reqs[i].bytes);
		assert_int_equal(back.id, reqs[i].id);
		if (reqs[i].cmd == CTL_CMD_NOTIFY)
			assert_int_equal(back.event, reqs[i].event);
		assert_int_equal(back.evict, reqs[i].evict);
		if (reqs[i].cmd == CTL_CMD_POLICY)
			assert_int_equal(back.mode, reqs[i].mode);
		free(line);
	}
}

static const struct {
	const char *line;
	const char *why;
} bad_requests[] = {
	{ "", "request is not a JSON object" },
	{ "[1,2]", "request is not a JSON object" },
	{ "{\"cmd\": 3}", "request has no \"cmd\" string" },
	{ "{\"vm\": \"a\"}", "request has no \"cmd\" string" },
	{ "{\"cmd\": \"shrink\", \"vm\": \"a\"}",
	  "unknown command (known: status, scan, reclaim, return, op, notify, cancel, policy, "
	  "metrics, history, map)" },
	{ "{\"cmd\": \"policy\", \"vm\": \"a\"}", "policy needs \"mode\": auto or manual" },
	{ "{\"cmd\": \"policy\", \"vm\": \"a\", \"mode\": \"fast\"}",
	  "policy needs \"mode\": auto or manual" },
	{ "{\"cmd\": \"policy\", \"vm\": \"a\", \"mode\": 1}",
	  "policy needs \"mode\": auto or manual" },
	{ "{\"cmd\": \"policy\", \"mode\": \"auto\"}", "policy needs \"vm\"" },
	{ "{\"cmd\": \"scan\", \"vm\": \"a\", \"mode\": \"auto\"}", "unknown key in request" },
	{ "{\"cmd\": \"cancel\"}", "cancel needs \"vm\"" },
	{ "{\"cmd\": \"cancel\", \"vm\": \"a\", \"id\": 0}",
	  "cancel needs \"id\", an operation id" },
	{ "{\"cmd\": \"cancel\", \"vm\": \"a\", \"bytes\": 2097152}",
	  "unknown key in request" },
	{ "{\"cmd\": \"notify\", \"vm\": \"a\"}",
	  "notify needs \"event\": prepare, started, stopped, release or migrate" },
	{ "{\"cmd\": \"notify\", \"vm\": \"a\", \"event\": \"restore\"}",
	  "notify needs \"event\": prepare, started, stopped, release or migrate" },
	{ "{\"cmd\": \"notify\", \"vm\": \"a\", \"event\": 1}",
	  "notify needs \"event\": prepare, started, stopped, release or migrate" },
	{ "{\"cmd\": \"notify\", \"event\": \"started\"}", "notify needs \"vm\"" },
	{ "{\"cmd\": \"scan\", \"vm\": \"a\", \"event\": \"started\"}",
	  "unknown key in request" },
	{ "{\"cmd\": \"reclaim\", \"vm\": \"a\"}",
	  "reclaim needs \"bytes\", a positive multiple of 2 MiB" },
	{ "{\"cmd\": \"reclaim\", \"vm\": \"a\", \"bytes\": 2097152, \"evict\": \"all\"}",
	  "\"evict\" is one of movable, evict-slab, evict" },
	{ "{\"cmd\": \"reclaim\", \"vm\": \"a\", \"bytes\": 2097152, \"evict\": 2}",
	  "\"evict\" is one of movable, evict-slab, evict" },
	{ "{\"cmd\": \"return\", \"vm\": \"a\", \"bytes\": 2097152, \"evict\": \"evict\"}",
	  "unknown key in request" },
	{ "{\"cmd\": \"reclaim\", \"vm\": \"a\", \"bytes\": 4096}",
	  "reclaim needs \"bytes\", a positive multiple of 2 MiB" },
	{ "{\"cmd\": \"return\", \"vm\": \"a\", \"bytes\": -2097152}",
	  "return needs \"bytes\", a positive multiple of 2 MiB" },
	{ "{\"cmd\": \"return\", \"vm\": \"a\", \"bytes\": \"2M\"}",
	  "return needs \"bytes\", a positive multiple of 2 MiB" },
	{ "{\"cmd\": \"return\", \"bytes\": 2097152}", "return needs \"vm\"" },
	{ "{\"cmd\": \"scan\", \"vm\": \"a\", \"bytes\": 2097152}", "unknown key in request" },
	{ "{\"cmd\": \"op\", \"vm\": \"a\"}", "op needs \"id\", an operation id" },
	{ "{\"cmd\": \"op\", \"vm\": \"a\", \"id\": 4294967296}",
	  "op needs \"id\", an operation id" },
	{ "{\"cmd\": \"scan\"}", "scan needs \"vm\"" },
	{ "{\"cmd\": \"scan\", \"vm\": 7}", "\"vm\" is not a string" },
	{ "{\"cmd\": \"scan\", \"vm\": \"\"}", "\"vm\" is empty or too long" },
	{ "{\"cmd\": \"status\", \"vm\": \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
	  "\"vm\" is empty or too long" },
	{ "{\"cmd\": \"status\", \"force\": true}", "unknown key in request" },
};

static void test_request_bad(void **state)
{
	for (size_t i = 0; i < sizeof(bad_requests) / sizeof(bad_requests[0]); i++) {
		struct ctl_request req = { .cmd = CTL_CMD_SCAN, .vm = "untouched" };
		char err[128] = "";

		assert_int_equal(ctl_proto_parse_request(bad_requests[i].line, &req, err,
							 sizeof(err)), -EINVAL);
		assert_string_equal(err, bad_requests[i].why);
		assert_string_equal(req.vm, "untouched");
	}
}

static void test_exit_codes(void **state)
{
	assert_int_equal(ctl_proto_exit_code(CTL_ERR_UNKNOWN_VM), CTL_EXIT_UNKNOWN_VM);
	assert_int_equal(ctl_proto_exit_code(CTL_ERR_NOT_READY), CTL_EXIT_NOT_READY);
	assert_int_equal(ctl_proto_exit_code(CTL_ERR_PERMISSION), CTL_EXIT_PERMISSION);
	assert_int_equal(ctl_proto_exit_code(CTL_ERR_BAD_REQUEST), CTL_EXIT_USAGE);
	assert_int_equal(ctl_proto_exit_code(CTL_ERR_TOO_LARGE), CTL_EXIT_USAGE);
	assert_int_equal(ctl_proto_exit_code(CTL_ERR_BUSY), CTL_EXIT_FAILED);
	assert_int_equal(ctl_proto_exit_code(CTL_ERR_UNSUPPORTED), CTL_EXIT_FAILED);
	assert_int_equal(ctl_proto_exit_code(CTL_ERR_GUEST), CTL_EXIT_FAILED);
	assert_int_equal(ctl_proto_exit_code("something-new"), CTL_EXIT_FAILED);
	assert_int_equal(ctl_proto_exit_code(NULL), CTL_EXIT_FAILED);
}

static struct proto_scan_resp good_scan(void)
{
	struct proto_scan_resp s = {
		.total_bytes = 200 * MiB, .free_bytes = 150 * MiB,
		.free_block_bytes = 120 * MiB, .capturable_bytes = 170 * MiB,
		.available_bytes = 140 * MiB, .nclasses = 5, .ncost = 6,
		.nunmovable = 5, .classes = { 0, 60, 30, 10, 0 },
		.cost = { 5, 10, 5, 5, 3, 2 }, .cost_bounds = { 0, 16, 64, 128, 256, 512 },
		.unmovable = { 6, 2, 1, 1, 0 },
	};
	return s;
}

static void test_scan_json(void **state)
{
	struct proto_scan_resp s = good_scan();
	struct proto_slab slab = { .name = "dentry\"x", .pages = 3, .blocks = 1 };
	struct json_object *o, *a, *e, *v;

	s.nslabs = 1;
	o = ctl_proto_scan_json("vm1", &s, &slab, NULL);
	assert_true(json_object_object_get_ex(o, "census", &v));
	assert_null(v);
	assert_true(json_object_object_get_ex(o, "classes", &a));
	assert_int_equal(json_object_array_length(a), 5);
	e = json_object_array_get_idx(a, 3);
	assert_true(json_object_object_get_ex(e, "class", &v));
	assert_string_equal(json_object_get_string(v), "unmovable");
	assert_true(json_object_object_get_ex(o, "slabs", &a));
	e = json_object_array_get_idx(a, 0);
	assert_true(json_object_object_get_ex(e, "name", &v));
	assert_string_equal(json_object_get_string(v), "dentry\"x");
	assert_true(json_object_object_get_ex(o, "free_block_bytes", &v));
	assert_int_equal(json_object_get_uint64(v), 120 * MiB);
	json_object_put(o);
}

/* Version 2: the census splits the unmovable blocks and names the costs. */
static void test_scan_json_census(void **state)
{
	struct proto_scan_resp s = good_scan();
	struct proto_slab slab = { .name = "dentry", .pages = 3, .blocks = 4 };
	struct proto_scan_census c = {
		.movable_pages = 700, .slab_reclaim_pages = 9,
		.slab_reclaim_objects = 180, .evicted_dentries = 5,
		.slab_reclaim_blocks = { 3 },
	};
	struct json_object *o, *a, *e, *v, *b;

	s.nslabs = 1;
	s.nunmovable = 6;
	s.unmovable[5] = 3;		/* of the 10 unmovable blocks */
	o = ctl_proto_scan_json("vm1", &s, &slab, &c);
	assert_true(json_object_object_get_ex(o, "census", &v));
	assert_true(json_object_object_get_ex(v, "blocks", &b));
	assert_true(json_object_object_get_ex(b, "slab_reclaimable", &e));
	assert_int_equal(json_object_get_uint64(e), 3);
	assert_true(json_object_object_get_ex(b, "other_unmovable", &e));
	assert_int_equal(json_object_get_uint64(e), 7);
	assert_true(json_object_object_get_ex(b, "free", &e));
	assert_int_equal(json_object_get_uint64(e), 60);
	assert_true(json_object_object_get_ex(v, "cost", &b));
	assert_true(json_object_object_get_ex(b, "slab_reclaim_pages", &e));
	assert_int_equal(json_object_get_uint64(e), 9);
	assert_true(json_object_object_get_ex(o, "unmovable", &a));
	e = json_object_array_get_idx(a, 5);
	assert_true(json_object_object_get_ex(e, "cause", &v));
	assert_string_equal(json_object_get_string(v), "slab-reclaimable");
	assert_true(json_object_object_get_ex(o, "slabs", &a));
	e = json_object_array_get_idx(a, 0);
	assert_true(json_object_object_get_ex(e, "reclaim_blocks", &v));
	assert_int_equal(json_object_get_uint64(v), 3);
	json_object_put(o);
}

/* An operation's work: null until both readings came, then the growth. */
static void test_op_work_json(void **state)
{
	struct reclaim_op_info op = {
		.id = 3, .kind = RECLAIM_KIND_RECLAIM, .state = RECLAIM_OP_DONE,
		.target_bytes = 64 * MiB, .done_bytes = 64 * MiB,
	};
	struct vm_history_entry h = {
		.id = 3, .kind = RECLAIM_KIND_RECLAIM, .state = RECLAIM_OP_DONE,
	};
	struct json_object *o, *v;

	for (int known = 0; known < 2; known++) {
		op.work_known = h.work_known = known;
		op.pages_migrated = h.pages_migrated = 12345;
		op.vacate_ns = h.vacate_ns = 6000000000ull;
		for (int hist = 0; hist < 2; hist++) {
			o = hist ? ctl_proto_history_json("vm1", &h) :
				   ctl_proto_op_json("vm1", &op);
			assert_true(json_object_object_get_ex(o, "pages_migrated", &v));
			if (!known) {
				assert_null(v);
			} else {
				assert_true(json_object_is_type(v, json_type_int));
				assert_int_equal(json_object_get_uint64(v), 12345);
			}
			assert_true(json_object_object_get_ex(o, "vacate_ns", &v));
			if (!known)
				assert_null(v);
			else
				assert_int_equal(json_object_get_uint64(v), 6000000000ull);
			json_object_put(o);
		}
	}
}

enum scan_field { F_NONE, F_FREE, F_FREE_BLOCK, F_AVAIL, F_TOTAL, F_CAPTURED,
		  F_CAPTURABLE, F_CLASSES, F_COST, F_UNMOV, F_OVERFLOW };

static const struct {
	enum scan_field field;
	uint64_t ram;
	const char *why;		/* NULL: accepted */
} scan_cases[] = {
	{ F_NONE, 256 * MiB, NULL },
	{ F_NONE, 0, NULL },			/* RAM unknown: only self-consistency */
	{ F_FREE, 256 * MiB, "free_bytes above total_bytes" },
	{ F_FREE_BLOCK, 256 * MiB, "free_block_bytes above free_bytes" },
	{ F_AVAIL, 256 * MiB, "available_bytes above total_bytes" },
	{ F_TOTAL, 256 * MiB, "total_bytes above the VM's RAM" },
	{ F_TOTAL, 0, NULL },
	{ F_CAPTURED, 256 * MiB, "captured_bytes above the VM's RAM" },
	{ F_CAPTURABLE, 256 * MiB, "capturable_bytes above the VM's RAM" },
	{ F_CLASSES, 256 * MiB, "more blocks in the class histogram than the VM has" },
	{ F_COST, 256 * MiB, "more blocks in the cost histogram than the VM has" },
	{ F_UNMOV, 256 * MiB, "more unmovable blocks than the VM has" },
	{ F_OVERFLOW, 0, "a histogram's counts overflow" },
};

static void test_check_scan(void **state)
{
	for (size_t i = 0; i < sizeof(scan_cases) / sizeof(scan_cases[0]); i++) {
		struct proto_scan_resp s = good_scan();
		const char *why = NULL;
		int r;

		switch (scan_cases[i].field) {
		case F_NONE: break;
		case F_FREE: s.free_bytes = s.total_bytes + 4096; break;
		case F_FREE_BLOCK: s.free_block_bytes = s.free_bytes + 2 * MiB; break;
		case F_AVAIL: s.available_bytes = s.total_bytes + 1; break;
		case F_TOTAL: s.total_bytes = 1ull << 40; break;
		case F_CAPTURED: s.captured_bytes = 258 * MiB; break;
		case F_CAPTURABLE: s.capturable_bytes = 300 * MiB; break;
		case F_CLASSES: s.classes[1] = 100; break;
		case F_COST: s.cost[0] = 200; break;
		case F_UNMOV: s.unmovable[4] = 1000; break;
		case F_OVERFLOW: s.classes[0] = UINT64_MAX; break;
		}
		r = session_check_scan(&s, scan_cases[i].ram, &why);
		if (scan_cases[i].why) {
			if (r != -EINVAL || !why || strcmp(why, scan_cases[i].why) != 0)
				fail_msg("case %zu: got %d %s", i, r, why ? why : "(none)");
		} else if (r != 0) {
			fail_msg("case %zu: refused: %s", i, why);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_request_roundtrip),
		cmocka_unit_test(test_request_bad),
		cmocka_unit_test(test_exit_codes),
		cmocka_unit_test(test_scan_json),
		cmocka_unit_test(test_op_work_json),
		cmocka_unit_test(test_scan_json_census),
		cmocka_unit_test(test_check_scan),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
