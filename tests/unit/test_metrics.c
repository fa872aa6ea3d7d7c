// SPDX-License-Identifier: GPL-2.0
/*
 * test_metrics.c - the persisted counters (daemon/vm_counters.c), the
 * Prometheus renderer (daemon/metrics.c) and metrics_listen parsing.
 *
 * Counters: operations and readings are counted, saved, loaded by a new
 * instance (a daemon restart) and still there; the history ring keeps the
 * newest VM_COUNTERS_HISTORY; every kind of damage to the file (a flipped
 * byte, a truncation, an unknown line, a bad number) is refused by the
 * parser and makes the VM start from zero.  Renderer: label values are
 * escaped, unknown values have no sample, counters are the totals.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "loop.h"
#include "metrics.h"
#include "vm_counters.h"

static char test_dir[64];

static struct reclaim_op_info test_op(uint32_t id, enum reclaim_kind kind,
				      enum reclaim_op_state state, uint64_t done)
{
	return (struct reclaim_op_info) {
		.id = id, .kind = kind, .state = state,
		.origin = RECLAIM_ORIGIN_USER, .started_unix_ms = 1700000000000ull + id,
		.target_bytes = 64u << 20, .done_bytes = done, .elapsed_ms = 1500,
		.error = state == RECLAIM_OP_DONE ? 0 : -ENOSPC,
	};
}

static char *test_read(const char *path, size_t *ret_len)
{
	FILE *f = fopen(path, "r");
	char *buf = calloc(1, 1 << 17);
	size_t n;

	assert_non_null(f);
	n = fread(buf, 1, (1 << 17) - 1, f);
	fclose(f);
	*ret_len = n;
	return buf;
}

static void test_counters_persist(void **state)
{
	struct loop *loop;
	struct vm_counters *c;
	struct vm_counters_totals t;
	struct vm_history_entry h[VM_COUNTERS_HISTORY];
	struct proto_stats st = { .vacate_ns = 5000, .pages_migrated = 10 };
	struct reclaim_op_info op;

	assert_int_equal(loop_new(&loop), 0);
	assert_int_equal(vm_counters_new(loop, test_dir, "vm-1", &c), 0);
	op = test_op(1, RECLAIM_KIND_RECLAIM, RECLAIM_OP_DONE, 64u << 20);
	op.work_known = true;
	op.pages_migrated = 4321;
	op.vacate_ns = 9000000000ull;
	vm_counters_op_end(c, &op);
	op = test_op(2, RECLAIM_KIND_RETURN, RECLAIM_OP_STOPPED, 2u << 20);
	op.origin = RECLAIM_ORIGIN_POLICY;
	vm_counters_op_end(c, &op);
	vm_counters_observe(c, 4u << 20, &st);
	st.vacate_ns = 7000;			/* grew by 2000 */
	vm_counters_observe(c, 4u << 20, &st);
	assert_int_equal(vm_counters_save(c), 0);
	vm_counters_free(c);

	/* a restart: everything is back, and the module reading is not
	 * counted twice */
	assert_int_equal(vm_counters_new(loop, test_dir, "vm-1", &c), 0);
	vm_counters_observe(c, 0, &st);		/* fresh daemon: released from 0 */
	vm_counters_get(c, &t);
	assert_int_equal(t.reclaimed_bytes, 64u << 20);
	assert_int_equal(t.returned_bytes, 2u << 20);
	assert_int_equal(t.guest_released_bytes, 4u << 20);
	assert_int_equal(t.vacate_ns, 7000);
	assert_int_equal(t.pages_migrated, 10);
	assert_int_equal(t.ops[RECLAIM_KIND_RECLAIM][RECLAIM_OP_DONE], 1);
	assert_int_equal(t.ops[RECLAIM_KIND_RETURN][RECLAIM_OP_STOPPED], 1);
	assert_int_equal(vm_counters_history(c, h, VM_COUNTERS_HISTORY), 2);
	assert_int_equal(h[0].id, 1);
	/* the work of each operation, and "not known" for the other */
	assert_true(h[0].work_known);
	assert_int_equal(h[0].pages_migrated, 4321);
	assert_int_equal(h[0].vacate_ns, 9000000000ull);
	assert_false(h[1].work_known);
	assert_int_equal(h[1].pages_migrated, 0);
	assert_int_equal(h[1].origin, RECLAIM_ORIGIN_POLICY);
	assert_int_equal(h[1].error, -ENOSPC);
	assert_int_equal(h[1].started_unix_ms, 1700000000002ull);
	/* the module restarted (reading fell): all of it is new */
	st.vacate_ns = 100;
	vm_counters_observe(c, 0, &st);
	vm_counters_get(c, &t);
	assert_int_equal(t.vacate_ns, 7100);
	/* the ring keeps the newest, oldest first */
	for (uint32_t i = 3; i < 3 + VM_COUNTERS_HISTORY + 5; i++) {
		op = test_op(i, RECLAIM_KIND_RECLAIM, RECLAIM_OP_DONE, 2u << 20);
		vm_counters_op_end(c, &op);
	}
	assert_int_equal(vm_counters_history(c, h, VM_COUNTERS_HISTORY),
			 VM_COUNTERS_HISTORY);
	assert_int_equal(h[0].id, 3 + 5);
	assert_int_equal(h[VM_COUNTERS_HISTORY - 1].id, 3 + VM_COUNTERS_HISTORY + 4);
	assert_int_equal(vm_counters_history(c, h, 2), 2);
	assert_int_equal(h[1].id, 3 + VM_COUNTERS_HISTORY + 4);
	vm_counters_free(c);			/* saves what is dirty */
	assert_int_equal(vm_counters_new(loop, test_dir, "vm-1", &c), 0);
	assert_int_equal(vm_counters_history(c, h, VM_COUNTERS_HISTORY),
			 VM_COUNTERS_HISTORY);
	assert_int_equal(h[0].id, 3 + 5);
	vm_counters_free(c);
	loop_free(loop);
}

static void test_counters_corrupt(void **state)
{
	char path[128];
	struct vm_counters_totals t;
	struct vm_history_entry h[VM_COUNTERS_HISTORY];
	struct vm_counters_seen seen;
	struct loop *loop;
	struct vm_counters *c;
	size_t len, nh;
	char *good, *bad;
	FILE *f;

	snprintf(path, sizeof(path), "%s/vm-1.counters", test_dir);
	good = test_read(path, &len);
	assert_int_equal(vm_counters_parse(good, len, &t, h, &nh, &seen), 0);
	bad = malloc(len + 64);
	/* every single flipped byte is caught */
	for (size_t i = 0; i < len; i++) {
		memcpy(bad, good, len);
		bad[i] ^= 0x01;
		assert_int_equal(vm_counters_parse(bad, len, &t, h, &nh, &seen),
				 -EBADMSG);
	}
	/* truncated anywhere */
	for (size_t i = 0; i < len; i++)
		assert_int_equal(vm_counters_parse(good, i, &t, h, &nh, &seen),
				 -EBADMSG);
	free(bad);

	/* a corrupt file: the VM starts from zero */
	f = fopen(path, "w");
	assert_non_null(f);
	fwrite(good, 1, len / 2, f);
	fclose(f);
	assert_int_equal(loop_new(&loop), 0);
	assert_int_equal(vm_counters_new(loop, test_dir, "vm-1", &c), 0);
	vm_counters_get(c, &t);
	assert_int_equal(t.reclaimed_bytes, 0);
	assert_int_equal(vm_counters_history(c, h, VM_COUNTERS_HISTORY), 0);
	vm_counters_free(c);
	loop_free(loop);
	free(good);
}

/* FNV-1a 64, as the file's end line has it */
static uint64_t test_fnv(const char *s, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

/* body + its end line, parsed: the parser's verdict */
static int test_parse_body(const char *body, struct vm_history_entry *h, size_t *nh)
{
	struct vm_counters_totals t;
	struct vm_counters_seen seen;
	char text[2048];
	int n = snprintf(text, sizeof(text), "%send %016llx\n", body,
			 (unsigned long long)test_fnv(body, strlen(body)));

	return vm_counters_parse(text, (size_t)n, &t, h, nh, &seen);
}

#define TEST_TOTALS \
	"total reclaimed_bytes 1\ntotal returned_bytes 2\n" \
	"total guest_released_bytes 0\ntotal vacate_ns 0\n" \
	"total pages_migrated 0\ntotal policy_misses 0\n"
#define TEST_OP	"op 7 reclaim user done 1700000000000 1500 2097152 2097152 0"

/*
 * Version 1 files (op lines without the work) still load, the work
 * unknown; version 2 op lines carry both numbers or both "-"; anything
 * between is corrupt.
 */
static void test_counters_versions(void **state)
{
	struct vm_history_entry h[VM_COUNTERS_HISTORY];
	size_t nh = 0;

	assert_int_equal(test_parse_body("vmdefrag-counters 1\n" TEST_TOTALS
					 TEST_OP "\n", h, &nh), 0);
	assert_int_equal(nh, 1);
	assert_int_equal(h[0].id, 7);
	assert_false(h[0].work_known);
	assert_int_equal(test_parse_body("vmdefrag-counters 2\n" TEST_TOTALS
					 TEST_OP " 77 123456789\n", h, &nh), 0);
	assert_true(h[0].work_known);
	assert_int_equal(h[0].pages_migrated, 77);
	assert_int_equal(h[0].vacate_ns, 123456789);
	assert_int_equal(h[0].done_bytes, 2097152);
	assert_int_equal(test_parse_body("vmdefrag-counters 2\n" TEST_TOTALS
					 TEST_OP " - -\n", h, &nh), 0);
	assert_false(h[0].work_known);
	static const char *const bad[] = {
		"vmdefrag-counters 1\n" TEST_TOTALS TEST_OP " 77 5\n",
		"vmdefrag-counters 2\n" TEST_TOTALS TEST_OP "\n",
		"vmdefrag-counters 2\n" TEST_TOTALS TEST_OP " - 5\n",
		"vmdefrag-counters 2\n" TEST_TOTALS TEST_OP " 5 -\n",
		"vmdefrag-counters 2\n" TEST_TOTALS TEST_OP " x 5\n",
		"vmdefrag-counters 2\n" TEST_TOTALS TEST_OP " 5 5 5\n",
		"vmdefrag-counters 3\n" TEST_TOTALS TEST_OP " 5 5\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(test_parse_body(bad[i], h, &nh), -EBADMSG);
}

static void test_counters_file_name(void **state)
{
	char b[64];

	assert_int_equal(vm_counters_file_name("web-1.x", b, sizeof(b)), 0);
	assert_string_equal(b, "web-1.x.counters");
	assert_int_equal(vm_counters_file_name("..", b, sizeof(b)), 0);
	assert_string_equal(b, "%2E..counters");
	assert_int_equal(vm_counters_file_name("a/b c", b, sizeof(b)), 0);
	assert_string_equal(b, "a%2Fb%20c.counters");
	assert_int_equal(vm_counters_file_name("", b, sizeof(b)), -ENAMETOOLONG);
}

static void test_render(void **state)
{
	struct ctl_vm_status *st = calloc(2, sizeof(*st));
	char *text = NULL;
	size_t len = 0;

	snprintf(st[0].name, sizeof(st[0].name), "a\"b\\c\nd");
	st[0].backing_known = true;
	st[0].backing_bytes = 123456;
	st[0].counters.vacate_ns = 1500000001;
	st[0].counters.ops[RECLAIM_KIND_RETURN][RECLAIM_OP_FAILED] = 3;
	st[0].session.state = SESSION_READY;
	snprintf(st[1].name, sizeof(st[1].name), "vm2");
	st[1].counters.reclaimed_bytes = 42;
	assert_int_equal(metrics_render(st, 2, &text, &len), 0);
	assert_int_equal(strlen(text), len);
	assert_non_null(strstr(text, "vmdefrag_backing_bytes{vm=\"a\\\"b\\\\c\\nd\"} 123456\n"));
	assert_null(strstr(text, "vmdefrag_backing_bytes{vm=\"vm2\"}"));
	assert_non_null(strstr(text, "# TYPE vmdefrag_backing_bytes gauge\n"));
	assert_non_null(strstr(text, "vmdefrag_vacate_seconds_total{vm=\"a\\\"b\\\\c\\nd\"} "
			       "1.500000001\n"));
	assert_non_null(strstr(text, "vmdefrag_reclaimed_bytes_total{vm=\"vm2\"} 42\n"));
	assert_non_null(strstr(text, ",kind=\"return\",result=\"failed\"} 3\n"));
	assert_non_null(strstr(text, "vmdefrag_sessions_up 1\n"));
	assert_non_null(strstr(text, "vmdefrag_vms 2\n"));
	assert_null(strstr(text, "result=\"running\""));
	free(text);
	free(st);
}

static void test_listen(void **state)
{
	static const struct {
		const char *spec;
		int r;
		enum config_listen_kind kind;
		int family;
		uint16_t port;
	} cases[] = {
		{ "unix:/run/vmdefrag-metrics.sock", 0, CONFIG_LISTEN_UNIX, 0, 0 },
		{ "tcp:127.0.0.1:9101", 0, CONFIG_LISTEN_TCP, AF_INET, 9101 },
		{ "tcp:127.1.2.3:1", 0, CONFIG_LISTEN_TCP, AF_INET, 1 },
		{ "tcp:[::1]:65535", 0, CONFIG_LISTEN_TCP, AF_INET6, 65535 },
		{ "tcp:0.0.0.0:9101", -EINVAL, CONFIG_LISTEN_NONE, 0, 0 },
		{ "tcp:10.0.0.1:9101", -EINVAL, CONFIG_LISTEN_NONE, 0, 0 },
		{ "tcp:[::]:9101", -EINVAL, CONFIG_LISTEN_NONE, 0, 0 },
		{ "tcp:localhost:9101", -EINVAL, CONFIG_LISTEN_NONE, 0, 0 },
		{ "tcp:127.0.0.1:0", -EINVAL, CONFIG_LISTEN_NONE, 0, 0 },
		{ "tcp:127.0.0.1:65536", -EINVAL, CONFIG_LISTEN_NONE, 0, 0 },
		{ "tcp:127.0.0.1", -EINVAL, CONFIG_LISTEN_NONE, 0, 0 },
		{ "tcp:::1:9101", -EINVAL, CONFIG_LISTEN_NONE, 0, 0 },
		{ "unix:relative", -EINVAL, CONFIG_LISTEN_NONE, 0, 0 },
		{ "http://127.0.0.1:9101", -EINVAL, CONFIG_LISTEN_NONE, 0, 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct config_listen l = { 0 };
		char msg[256] = "";
		int r = config_parse_listen(cases[i].spec, &l, msg, sizeof(msg));

		assert_int_equal(r, cases[i].r);
		if (r < 0) {
			assert_non_null(strstr(msg, "metrics_listen"));
			assert_null(strchr(msg, '\n'));
			continue;
		}
		assert_int_equal(l.kind, cases[i].kind);
		if (l.kind == CONFIG_LISTEN_TCP) {
			assert_int_equal(l.family, cases[i].family);
			assert_int_equal(l.port, cases[i].port);
		}
	}
}

static int test_setup(void **state)
{
	snprintf(test_dir, sizeof(test_dir), "/tmp/test_metrics.XXXXXX");
	return mkdtemp(test_dir) ? 0 : -1;
}

static int test_teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", test_dir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_counters_persist),
		cmocka_unit_test(test_counters_corrupt),
		cmocka_unit_test(test_counters_versions),
		cmocka_unit_test(test_counters_file_name),
		cmocka_unit_test(test_render),
		cmocka_unit_test(test_listen),
	};

	return cmocka_run_group_tests(tests, test_setup, test_teardown);
}
