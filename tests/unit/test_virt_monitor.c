// SPDX-License-Identifier: GPL-2.0
/*
 * test_virt_monitor.c - libvirt's monitor command bounded by the qmp's
 * timeout (daemon/virt_monitor.c).
 *
 * libvirt's own test driver (test:///default, in process, no libvirtd)
 * provides a real domain object; the command itself is the real
 * virDomainQemuMonitorCommand() (which that driver does not support: the
 * error path, with libvirt's per-thread error carried back) or a stand-in
 * that answers at once or only after a delay the test controls:
 *   - an answer within the timeout is returned as the command's result;
 *   - a command that does not answer returns -ETIMEDOUT at the deadline,
 *     not when it finally answers;
 *   - while it still runs, the next command fails at once without being
 *     sent; after it has returned, commands work again;
 *   - closing the qmp while a command still runs is safe.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "clock.h"
#include "log.h"
#include "qmp.h"
#include "virt_monitor.h"

static atomic_int calls;		/* commands that reached the stand-in */
static atomic_int finished;		/* ... and returned */
static atomic_int release;		/* the slow stand-in may answer */
static atomic_int bad_cmd;		/* a command the stand-in did not expect
					 * (checked on the test's thread: no
					 * cmocka assertion on the command's) */

static void sleep_ms(unsigned int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int fast_call(virDomainPtr dom, const char *cmd, char **ret_reply,
		     unsigned int flags)
{
	calls++;
	if (!strstr(cmd, "\"execute\":\"query-status\""))
		bad_cmd = 1;
	*ret_reply = strdup("{\"return\": {\"status\": \"running\"}}");
	finished++;
	return 0;
}

static int slow_call(virDomainPtr dom, const char *cmd, char **ret_reply,
		     unsigned int flags)
{
	calls++;
	while (!release)
		sleep_ms(5);
	*ret_reply = strdup("{\"return\": {}}");
	finished++;
	return 0;
}

struct fixture {
	virConnectPtr conn;
	struct qmp *q;
};

static void silent(void *ud, virErrorPtr e)
{
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	virDomainPtr dom;

	assert_non_null(fx);
	virSetErrorFunc(NULL, silent);
	fx->conn = virConnectOpen("test:///default");
	assert_non_null(fx->conn);
	dom = virDomainLookupByName(fx->conn, "test");
	assert_non_null(dom);
	assert_int_equal(virt_monitor_open(dom, &fx->q), 0);
	calls = finished = release = bad_cmd = 0;
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	qmp_close(fx->q);
	release = 1;
	for (int i = 0; i < 200 && finished < calls; i++)
		sleep_ms(5);
	virt_monitor_set_call(NULL);
	virConnectClose(fx->conn);
	assert_int_equal(bad_cmd, 0);
	free(fx);
	return 0;
}

static void test_answer_within_timeout(void **state)
{
	struct fixture *fx = *state;
	struct json_object *ret = NULL, *v;

	virt_monitor_set_call(fast_call);
	assert_int_equal(qmp_execute(fx->q, "query-status", NULL, 1000, &ret), 0);
	assert_true(json_object_object_get_ex(ret, "status", &v));
	assert_string_equal(json_object_get_string(v), "running");
	json_object_put(ret);
	assert_int_equal(calls, 1);
}

static void test_hung_command_bounded(void **state)
{
	struct fixture *fx = *state;
	uint64_t t0 = clock_now_ms(), dt;

	virt_monitor_set_call(slow_call);
	assert_int_equal(qmp_execute(fx->q, "query-status", NULL, 100, NULL),
			 -ETIMEDOUT);
	dt = clock_now_ms() - t0;
	assert_true(dt >= 90);
	assert_true(dt < 1000);
	/* still running: the next one is not sent, and fails at once */
	virt_monitor_set_call(fast_call);
	t0 = clock_now_ms();
	assert_int_equal(qmp_execute(fx->q, "query-status", NULL, 1000, NULL),
			 -ETIMEDOUT);
	assert_true(clock_now_ms() - t0 < 50);
	assert_int_equal(calls, 1);
	/* it answers late (dropped); then commands work again */
	release = 1;
	for (int i = 0; i < 200 && finished < 1; i++)
		sleep_ms(5);
	assert_int_equal(finished, 1);
	assert_int_equal(qmp_execute(fx->q, "query-status", NULL, 1000, NULL), 0);
	assert_int_equal(calls, 2);
}

/* The real call: the test driver has no monitor; libvirt's error comes back. */
static void test_libvirt_error_returned(void **state)
{
	struct fixture *fx = *state;
	int r;

	virt_monitor_set_call(NULL);
	r = qmp_execute(fx->q, "query-status", NULL, 2000, NULL);
	assert_true(r < 0);
	assert_int_not_equal(r, -ETIMEDOUT);
	/* nothing is left running */
	virt_monitor_set_call(fast_call);
	assert_int_equal(qmp_execute(fx->q, "query-status", NULL, 1000, NULL), 0);
}

/* qmp_close() while a command runs: the thread finishes on its own. */
static void test_close_while_running(void **state)
{
	struct fixture *fx = *state;

	virt_monitor_set_call(slow_call);
	assert_int_equal(qmp_execute(fx->q, "query-status", NULL, 50, NULL),
			 -ETIMEDOUT);
	qmp_close(fx->q);
	fx->q = NULL;
	release = 1;
	for (int i = 0; i < 200 && finished < 1; i++)
		sleep_ms(5);
	assert_int_equal(finished, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_answer_within_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hung_command_bounded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_libvirt_error_returned, setup, teardown),
		cmocka_unit_test_setup_teardown(test_close_while_running, setup, teardown),
	};

	log_set_max_level(LOG_ERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
