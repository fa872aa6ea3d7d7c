// SPDX-License-Identifier: GPL-2.0
/*
 * test_qmp.c - the QMP client against a real QEMU, its parser against odd
 * and hostile input from a socketpair peer, the custom transport (canned
 * replies, and relayed to a real QEMU so that the RAM layout discovery runs
 * over it), and the logging helpers it uses.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "clock.h"
#include "log.h"
#include "qemu_fixture.h"
#include "vm_layout.h"

/* ---------------- real QEMU ---------------- */

static const char *const vm_args[] = {
	"-machine", "q35,accel=tcg,memory-backend=ram0",
	"-object", "memory-backend-memfd,id=ram0,size=128M,share=on",
	"-m", "128M", NULL,
};

static int setup_vm(void **state)
{
	static struct qemu_vm vm;
	int r;

	if (!fixture_have_qemu()) {
		fprintf(stderr, "# " FIXTURE_QEMU " not installed\n");
		return -1;
	}
	r = qemu_vm_start(&vm, vm_args);
	if (r < 0) {
		fprintf(stderr, "# cannot start qemu: %s\n", strerror(-r));
		return -1;
	}
	*state = &vm;
	return 0;
}

static int teardown_vm(void **state)
{
	qemu_vm_stop(*state);
	return 0;
}

static void test_real_greeting_and_peer(void **state)
{
	struct qemu_vm *vm = *state;
	pid_t pid = 0;

	assert_true(qmp_qemu_version(vm->qmp) >= 20000);
	assert_int_equal(qmp_peer_pid(vm->qmp, &pid), 0);
	assert_int_equal(pid, vm->pid);
}

static void test_real_execute(void **state)
{
	struct qemu_vm *vm = *state;
	struct json_object *ret = NULL, *status;

	assert_int_equal(qmp_execute(vm->qmp, "query-status", NULL, 5000, &ret), 0);
	assert_true(json_object_object_get_ex(ret, "status", &status));
	assert_string_equal(json_object_get_string(status), "prelaunch");
	json_object_put(ret);
	assert_string_equal(qmp_last_error(vm->qmp), "");
}

/* The real QEMU (stock or patched, the fixture's) answers query-version. */
static void test_real_query_version(void **state)
{
	struct qemu_vm *vm = *state;
	struct qmp_version v;

	assert_int_equal(qmp_query_version(vm->qmp, 5000, &v), 0);
	assert_int_equal(v.version, qmp_qemu_version(vm->qmp));
	assert_true(v.version >= 20000);
	assert_int_equal(v.patched, strstr(v.package, QMP_PATCHED_MARK) != NULL);
}

static void test_real_error_reply(void **state)
{
	struct qemu_vm *vm = *state;
	struct json_object *ret = (void *)0x1, *args;

	assert_int_equal(qmp_execute(vm->qmp, "no-such-command", NULL, 5000, &ret), -EIO);
	assert_ptr_equal(ret, (void *)0x1);	/* untouched on failure */
	assert_non_null(strstr(qmp_last_error(vm->qmp), "CommandNotFound"));
	/* a bad argument is a GenericError with QEMU's description */
	args = json_object_new_object();
	json_object_object_add(args, "id", json_object_new_string("nonexistent"));
	assert_int_equal(qmp_execute(vm->qmp, "device_del", args, 5000, NULL), -EIO);
	json_object_put(args);
	assert_non_null(strstr(qmp_last_error(vm->qmp), "nonexistent"));
	/* the connection still works afterwards */
	assert_int_equal(qmp_execute(vm->qmp, "query-status", NULL, 5000, NULL), 0);
	assert_string_equal(qmp_last_error(vm->qmp), "");
}

static void test_real_hmp(void **state)
{
	struct qemu_vm *vm = *state;
	char *out = NULL;

	assert_int_equal(qmp_hmp(vm->qmp, "info version", 5000, &out), 0);
	assert_non_null(out);
	assert_true(out[0] >= '1' && out[0] <= '9');
	free(out);
	out = NULL;
	assert_int_equal(qmp_hmp(vm->qmp, "info mtree -f", 5000, &out), 0);
	assert_non_null(strstr(out, "ram0"));
	free(out);
}

/*
 * cont/stop make QEMU emit RESUME and STOP while we wait for the replies:
 * both must be queued, in order, without calling any event function.
 */
static void test_real_events_queued(void **state)
{
	struct qemu_vm *vm = *state;
	struct json_object *ev, *name;
	const char *want[] = { "RESUME", "STOP" };
	size_t i = 0;

	while (qmp_next_event(vm->qmp, &ev) == 0)	/* drop earlier ones */
		json_object_put(ev);
	assert_int_equal(qmp_execute(vm->qmp, "cont", NULL, 5000, NULL), 0);
	assert_int_equal(qmp_execute(vm->qmp, "stop", NULL, 5000, NULL), 0);
	assert_int_equal(qmp_execute(vm->qmp, "query-status", NULL, 5000, NULL), 0);
	assert_true(qmp_events_queued(vm->qmp) >= 2);
	while (i < 2 && qmp_next_event(vm->qmp, &ev) == 0) {
		assert_true(json_object_object_get_ex(ev, "event", &name));
		if (strcmp(json_object_get_string(name), want[i]) == 0)
			i++;
		json_object_put(ev);
	}
	assert_int_equal(i, 2);
	assert_int_equal(qmp_events_dropped(vm->qmp), 0);
}

/* ---------------- custom transport ---------------- */

struct canned {
	const char *reply;	/* text handed back, NULL: fail with err */
	int err;
	char seen[512];		/* the last command text received */
	int closed;
};

static int canned_execute(void *ctx, const char *command, int timeout_ms,
			  char **ret_reply)
{
	struct canned *c = ctx;

	snprintf(c->seen, sizeof(c->seen), "%s", command);
	if (!c->reply)
		return c->err;
	*ret_reply = strdup(c->reply);
	return 0;
}

static void canned_close(void *ctx)
{
	((struct canned *)ctx)->closed++;
}

static const struct qmp_transport canned_transport = {
	.execute = canned_execute,
	.close = canned_close,
};

struct custom_case {
	const char *reply;
	int err;
	int want;
	const char *want_error;	/* substring of qmp_last_error(), or NULL */
};

static const struct custom_case custom_cases[] = {
	{ "{\"return\": {\"status\": \"running\"}, \"id\": \"libvirt-7\"}", 0, 0, NULL },
	{ "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"nope\"}}", 0, -EIO,
	  "CommandNotFound: nope" },
	{ "{\"id\": \"x\"}", 0, -EPROTO, NULL },
	{ "[1, 2]", 0, -EPROTO, NULL },
	{ "not json", 0, -EPROTO, NULL },
	{ "", 0, -EPROTO, NULL },
	{ NULL, -ETIMEDOUT, -ETIMEDOUT, NULL },
	{ NULL, -EINVAL, -EINVAL, NULL },
};

static void test_custom_reply_table(void **state)
{
	for (size_t i = 0; i < sizeof(custom_cases) / sizeof(custom_cases[0]); i++) {
		const struct custom_case *tc = &custom_cases[i];
		struct canned c = { .reply = tc->reply, .err = tc->err };
		struct json_object *ret = (void *)0x1, *args;
		struct qmp *q = NULL;
		pid_t pid = 77;
		int r;

		assert_int_equal(qmp_open_custom(&canned_transport, &c, &q), 0);
		assert_int_equal(qmp_fd(q), -1);
		assert_int_equal(qmp_peer_pid(q, &pid), -EOPNOTSUPP);
		assert_int_equal(pid, 77);
		assert_int_equal(qmp_process_input(q), 0);
		assert_int_equal(qmp_wait_event(q, 0), -EOPNOTSUPP);
		args = json_object_new_object();
		json_object_object_add(args, "k", json_object_new_string("a/b"));
		r = qmp_execute(q, "query-status", args, 100, &ret);
		json_object_put(args);
		if (r != tc->want)
			fail_msg("case %zu: got %d, want %d", i, r, tc->want);
		/* the command as the transport got it: no id, no newline */
		assert_string_equal(c.seen, "{\"execute\":\"query-status\","
				    "\"arguments\":{\"k\":\"a/b\"}}");
		if (r == 0) {
			assert_ptr_not_equal(ret, (void *)0x1);
			json_object_put(ret);
		} else {
			assert_ptr_equal(ret, (void *)0x1);
		}
		if (tc->want_error)
			assert_non_null(strstr(qmp_last_error(q), tc->want_error));
		/* a failure that is not the transport's end leaves it usable */
		c.reply = "{\"return\": {}}";
		assert_int_equal(qmp_execute(q, "x", NULL, 100, NULL), 0);
		qmp_close(q);
		assert_int_equal(c.closed, 1);
	}
}

static void test_custom_connreset_breaks(void **state)
{
	struct canned c = { .reply = NULL, .err = -ECONNRESET };
	struct qmp *q = NULL;

	assert_int_equal(qmp_open_custom(NULL, &c, &q), -EINVAL);
	assert_int_equal(qmp_open_custom(&canned_transport, &c, &q), 0);
	assert_int_equal(qmp_execute(q, "query-status", NULL, 100, NULL), -ECONNRESET);
	/* the monitor is gone: later calls fail without asking the transport */
	c.reply = "{\"return\": {}}";
	c.seen[0] = '\0';
	assert_int_equal(qmp_execute(q, "query-status", NULL, 100, NULL), -ECONNRESET);
	assert_string_equal(c.seen, "");
	assert_int_equal(qmp_process_input(q), -ECONNRESET);
	qmp_close(q);
	assert_int_equal(c.closed, 1);
}

/*
 * Relays the custom transport's commands to the real QEMU's socket, as
 * libvirt relays virDomainQemuMonitorCommand: the RAM layout discovery
 * must work over it unchanged.
 */
static int relay_execute(void *ctx, const char *command, int timeout_ms,
			 char **ret_reply)
{
	struct qmp *real = ctx;
	struct json_object *cmd, *exe = NULL, *args = NULL, *ret = NULL, *reply;
	int r;

	cmd = json_tokener_parse(command);
	if (!cmd || !json_object_object_get_ex(cmd, "execute", &exe)) {
		json_object_put(cmd);
		return -EPROTO;
	}
	assert_false(json_object_object_get_ex(cmd, "id", NULL));
	json_object_object_get_ex(cmd, "arguments", &args);
	r = qmp_execute(real, json_object_get_string(exe), args, timeout_ms, &ret);
	json_object_put(cmd);
	reply = json_object_new_object();
	if (r == -EIO) {
		struct json_object *e = json_object_new_object();

		json_object_object_add(e, "class", json_object_new_string("GenericError"));
		json_object_object_add(e, "desc", json_object_new_string(qmp_last_error(real)));
		json_object_object_add(reply, "error", e);
	} else if (r < 0) {
		json_object_put(reply);
		return r;
	} else {
		json_object_object_add(reply, "return", ret);
	}
	json_object_object_add(reply, "id", json_object_new_string("libvirt-1"));
	*ret_reply = strdup(json_object_to_json_string(reply));
	json_object_put(reply);
	return 0;
}

static const struct qmp_transport relay_transport = { .execute = relay_execute };

static void test_real_custom_layout(void **state)
{
	struct qemu_vm *vm = *state;
	struct vm_layout *l = NULL;
	struct qmp *q = NULL;
	char *out = NULL;

	assert_int_equal(qmp_open_custom(&relay_transport, vm->qmp, &q), 0);
	assert_int_equal(qmp_hmp(q, "info version", 5000, &out), 0);
	assert_true(out[0] >= '1' && out[0] <= '9');
	free(out);
	assert_int_equal(qmp_execute(q, "no-such-command", NULL, 5000, NULL), -EIO);
	assert_non_null(strstr(qmp_last_error(q), "CommandNotFound"));
	assert_int_equal(vm_layout_discover(q, vm->pid, &l), 0);
	assert_int_equal(l->nbackings, 1);
	assert_int_equal(l->backings[0].kind, VM_BACKING_MEMFD);
	assert_true(l->backings[0].fd >= 0);
	assert_int_equal(l->backings[0].size, 128u << 20);
	vm_layout_free(l);
	qmp_close(q);
}

/* ---------------- socketpair peer ---------------- */

#define GREETING "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 3, \"minor\": 2, \"major\": 7}, \"package\": \"\"}, \"capabilities\": []}}\r\n"
#define CAPS_OK  "{\"return\": {}, \"id\": \"vdf-1\"}\r\n"

static void peer_write(int fd, const char *s)
{
	size_t len = strlen(s);

	while (len > 0) {
		ssize_t n = write(fd, s, len);

		assert_true(n > 0);
		s += n;
		len -= n;
	}
}

/* Connects a client to a scripted peer; returns the peer's end. */
static int peer_connect(const char *script, struct qmp **ret_q, int expect)
{
	int sv[2];
	int r;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	peer_write(sv[0], script);
	r = qmp_connect_fd(sv[1], 500, ret_q);
	assert_int_equal(r, expect);
	return sv[0];
}

/*
 * A connected client, and a child process that plays its peer (the child
 * sees 0, the parent the child's pid, as from fork()).
 */
static pid_t peer_fork(struct qmp **ret_q, int *ret_peer)
{
	pid_t child;

	*ret_peer = peer_connect(GREETING CAPS_OK, ret_q, 0);
	child = fork();
	assert_true(child >= 0);
	return child;
}

struct reply_case {
	const char *name;
	const char *lines;	/* what the peer sends after the command */
	int expect;
	size_t events;		/* events queued afterwards */
	const char *error;	/* substring of qmp_last_error() */
};

static const struct reply_case reply_cases[] = {
	{ "plain return", "{\"return\": {\"x\": 1}, \"id\": \"vdf-2\"}\n", 0, 0, NULL },
	{ "crlf and blank lines", "\r\n\n{\"return\": {}, \"id\": \"vdf-2\"}\r\n", 0, 0, NULL },
	{ "not json", "hello world\n", -EPROTO, 0, NULL },
	{ "json array", "[1, 2]\n", -EPROTO, 0, NULL },
	{ "json scalar", "42\n", -EPROTO, 0, NULL },
	{ "unknown object", "{\"foo\": 1}\n", -EPROTO, 0, NULL },
	{ "trailing garbage", "{\"return\": {}, \"id\": \"vdf-2\"} x\n", -EPROTO, 0, NULL },
	{ "two objects on a line", "{\"return\": {}, \"id\": \"vdf-2\"}{\"a\":1}\n", -EPROTO, 0, NULL },
	{ "truncated object", "{\"return\": {\n", -EPROTO, 0, NULL },
	{ "event name not string", "{\"event\": 5}\n", -EPROTO, 0, NULL },
	{ "second greeting", GREETING, -EPROTO, 0, NULL },
	{ "error reply", "{\"error\": {\"class\": \"DeviceNotFound\", \"desc\": \"no \\u001b[31m dev\"}, \"id\": \"vdf-2\"}\n",
	  -EIO, 0, "DeviceNotFound: no " },
	{ "error without class", "{\"error\": {}, \"id\": \"vdf-2\"}\n", -EIO, 0, "GenericError" },
	{ "events before reply", "{\"event\": \"A\"}\n{\"event\": \"B\", \"data\": {}}\n{\"return\": 1, \"id\": \"vdf-2\"}\n",
	  0, 2, NULL },
	{ "late reply of another id discarded", "{\"return\": {}, \"id\": \"vdf-1\"}\n{\"return\": {}}\n{\"return\": {}, \"id\": \"vdf-2\"}\n",
	  0, 0, NULL },
	{ "numeric id does not match", "{\"return\": {}, \"id\": 2}\n", -ETIMEDOUT, 0, NULL },
	{ "no reply", "", -ETIMEDOUT, 0, NULL },
	{ "eof", NULL, -ECONNRESET, 0, NULL },
};

static void test_peer_reply_table(void **state)
{
	for (size_t i = 0; i < sizeof(reply_cases) / sizeof(reply_cases[0]); i++) {
		const struct reply_case *c = &reply_cases[i];
		struct qmp *q = NULL;
		int peer, r;

		fprintf(stderr, "# case: %s\n", c->name);
		peer = peer_connect(GREETING CAPS_OK, &q, 0);
		assert_int_equal(qmp_qemu_version(q), 70203);
		if (c->lines)
			peer_write(peer, c->lines);
		else
			shutdown(peer, SHUT_WR);
		r = qmp_execute(q, "x", NULL, 200, NULL);
		assert_int_equal(r, c->expect);
		assert_int_equal(qmp_events_queued(q), c->events);
		if (c->error)
			assert_non_null(strstr(qmp_last_error(q), c->error));
		/* after a framing error the connection stays unusable */
		if (c->expect == -EPROTO)
			assert_int_equal(qmp_execute(q, "y", NULL, 100, NULL), -EPROTO);
		qmp_close(q);
		close(peer);
	}
}

struct greeting_case {
	const char *name;
	const char *script;
	int expect;
};

static const struct greeting_case greeting_cases[] = {
	{ "good", GREETING CAPS_OK, 0 },
	{ "no version in greeting", "{\"QMP\": {}}\n" CAPS_OK, 0 },
	{ "greeting not object", "{\"QMP\": 1}\n" CAPS_OK, -EPROTO },
	{ "reply instead of greeting", CAPS_OK, -ETIMEDOUT },
	{ "capabilities refused", GREETING "{\"error\": {\"class\": \"X\", \"desc\": \"no\"}, \"id\": \"vdf-1\"}\n", -EIO },
	{ "garbage", "SSH-2.0-OpenSSH\r\n", -EPROTO },
	{ "silence", "", -ETIMEDOUT },
};

static void test_peer_greeting_table(void **state)
{
	for (size_t i = 0; i < sizeof(greeting_cases) / sizeof(greeting_cases[0]); i++) {
		const struct greeting_case *c = &greeting_cases[i];
		struct qmp *q = (void *)0x1;
		int peer;

		fprintf(stderr, "# case: %s\n", c->name);
		peer = peer_connect(c->script, &q, c->expect);
		if (c->expect == 0)
			qmp_close(q);
		else
			assert_ptr_equal(q, (void *)0x1);
		close(peer);
	}
}

/* A timed-out command's late reply must not be taken for the next one's. */
static void test_peer_late_reply(void **state)
{
	struct json_object *ret = NULL;
	struct qmp *q;
	int peer;

	peer = peer_connect(GREETING CAPS_OK, &q, 0);
	assert_int_equal(qmp_execute(q, "slow", NULL, 100, NULL), -ETIMEDOUT);
	peer_write(peer, "{\"return\": \"late\", \"id\": \"vdf-2\"}\n"
			 "{\"return\": \"mine\", \"id\": \"vdf-3\"}\n");
	assert_int_equal(qmp_execute(q, "next", NULL, 500, &ret), 0);
	assert_string_equal(json_object_get_string(ret), "mine");
	json_object_put(ret);
	qmp_close(q);
	close(peer);
}

/*
 * After a timeout QEMU still owes an answer: the next command fails at
 * once and is not sent; once the late answer has come, commands are sent
 * and answered again.
 */
static void test_peer_no_wait_while_late(void **state)
{
	struct json_object *ret = NULL;
	struct qmp *q;
	char buf[256];
	uint64_t t0;
	ssize_t n;
	int peer;

	peer = peer_connect(GREETING CAPS_OK, &q, 0);
	assert_int_equal(qmp_execute(q, "slow", NULL, 100, NULL), -ETIMEDOUT);
	n = read(peer, buf, sizeof(buf) - 1);	/* the "slow" command */
	assert_true(n > 0);
	t0 = clock_now_ms();
	assert_int_equal(qmp_execute(q, "next", NULL, 1000, NULL), -ETIMEDOUT);
	assert_true(clock_now_ms() - t0 < 100);
	assert_non_null(strstr(qmp_last_error(q), "earlier command"));
	n = recv(peer, buf, sizeof(buf) - 1, MSG_DONTWAIT);
	assert_true(n < 0 && errno == EAGAIN);		/* "next" was not sent */
	peer_write(peer, "{\"return\": \"late\", \"id\": \"vdf-2\"}\n"
			 "{\"return\": \"mine\", \"id\": \"vdf-4\"}\n");
	assert_int_equal(qmp_execute(q, "again", NULL, 500, &ret), 0);
	assert_string_equal(json_object_get_string(ret), "mine");
	json_object_put(ret);
	n = read(peer, buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_non_null(strstr(buf, "\"again\""));
	qmp_close(q);
	close(peer);
}

/* More events than the queue holds: the oldest go, and are counted. */
static void test_peer_event_flood(void **state)
{
	struct json_object *ev, *name;
	struct qmp *q;
	char line[64];
	int peer;
	pid_t child;

	child = peer_fork(&q, &peer);
	if (child == 0) {
		for (int i = 0; i < QMP_EVENT_QUEUE_MAX + 10; i++) {
			snprintf(line, sizeof(line), "{\"event\": \"E%d\"}\n", i);
			peer_write(peer, line);
		}
		peer_write(peer, "{\"return\": {}, \"id\": \"vdf-2\"}\n");
		_exit(0);
	}
	assert_int_equal(qmp_execute(q, "x", NULL, 5000, NULL), 0);
	waitpid(child, NULL, 0);
	assert_int_equal(qmp_events_queued(q), QMP_EVENT_QUEUE_MAX);
	assert_int_equal(qmp_events_dropped(q), 10);
	assert_int_equal(qmp_next_event(q, &ev), 0);
	assert_true(json_object_object_get_ex(ev, "event", &name));
	assert_string_equal(json_object_get_string(name), "E10");
	json_object_put(ev);
	qmp_close(q);
	close(peer);
}

/* A line longer than QMP_LINE_MAX breaks the connection instead of OOM. */
static void test_peer_line_too_long(void **state)
{
	struct qmp *q;
	int peer;
	pid_t child;

	child = peer_fork(&q, &peer);
	if (child == 0) {
		static char chunk[1 << 16];

		close(qmp_fd(q));	/* so that writes fail once the client closes */
		memset(chunk, ' ', sizeof(chunk));
		chunk[0] = '{';
		for (size_t sent = 0; sent < QMP_LINE_MAX + (2u << 20);
		     sent += sizeof(chunk)) {
			if (write(peer, chunk, sizeof(chunk)) < 0)
				_exit(0);	/* client closed */
			chunk[0] = ' ';
		}
		_exit(0);
	}
	assert_int_equal(qmp_execute(q, "x", NULL, 10000, NULL), -EMSGSIZE);
	qmp_close(q);
	close(peer);
	waitpid(child, NULL, 0);
}

static void test_peer_process_input(void **state)
{
	struct json_object *ev = NULL;
	struct qmp *q;
	int peer;

	peer = peer_connect(GREETING CAPS_OK, &q, 0);
	assert_int_equal(qmp_next_event(q, &ev), -EAGAIN);
	assert_null(ev);
	assert_int_equal(qmp_process_input(q), 0);	/* nothing there */
	peer_write(peer, "{\"event\": \"SHUTDOWN\"}\n{\"event\": \"part");
	assert_int_equal(qmp_process_input(q), 0);
	assert_int_equal(qmp_events_queued(q), 1);
	peer_write(peer, "ial\"}\n");
	assert_int_equal(qmp_wait_event(q, 0), 0);	/* already queued */
	assert_int_equal(qmp_process_input(q), 0);
	assert_int_equal(qmp_events_queued(q), 2);
	shutdown(peer, SHUT_WR);
	assert_int_equal(qmp_process_input(q), -ECONNRESET);
	qmp_close(q);
	close(peer);
}

/*
 * A command's reply and an event behind it in one read: the command leaves
 * the event unparsed (whoever holds the events knows the ones queued came
 * before the reply, migration.c relies on it), and the next
 * qmp_process_input() queues it without waiting for more from QEMU.
 */
static void test_peer_event_behind_reply(void **state)
{
	struct json_object *ev = NULL, *name;
	struct qmp *q;
	int peer;

	peer = peer_connect(GREETING CAPS_OK, &q, 0);
	peer_write(peer, "{\"event\": \"BEFORE\"}\n"
			 "{\"return\": {}, \"id\": \"vdf-2\"}\n"
			 "{\"event\": \"AFTER\"}\n");
	assert_int_equal(qmp_execute(q, "x", NULL, 500, NULL), 0);
	assert_int_equal(qmp_events_queued(q), 1);
	assert_int_equal(qmp_process_input(q), 0);
	assert_int_equal(qmp_events_queued(q), 2);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(qmp_next_event(q, &ev), 0);
		assert_true(json_object_object_get_ex(ev, "event", &name));
		assert_string_equal(json_object_get_string(name), i ? "AFTER" : "BEFORE");
		json_object_put(ev);
	}
	qmp_close(q);
	close(peer);
}

static void test_parse_line(void **state)
{
	struct json_object *o = NULL;

	assert_int_equal(qmp_parse_line("{\"a\":1}\r\n", 9, &o), 0);
	json_object_put(o);
	o = NULL;
	assert_int_equal(qmp_parse_line("{\"a\":1}\0{", 9, &o), -EPROTO);
	assert_int_equal(qmp_parse_line("", 0, &o), -EPROTO);
	assert_int_equal(qmp_parse_line("\r\n", 2, &o), -EPROTO);
	assert_int_equal(qmp_parse_line("{\"a\":\"\\ud800\"}", 14, &o), 0);
	json_object_put(o);
	o = NULL;
	assert_int_equal(qmp_parse_line("{", QMP_LINE_MAX + 1, &o), -EMSGSIZE);
	assert_null(o);
}

static void test_connect_missing_socket(void **state)
{
	struct qmp *q = (void *)0x1;

	assert_int_equal(qmp_connect("/nonexistent/qmp.sock", 100, &q), -ENOENT);
	assert_ptr_equal(q, (void *)0x1);
}

/* ---------------- log helpers ---------------- */

struct quote_case {
	const char *in;
	size_t len;
	size_t bufsz;
	const char *out;
};

static const struct quote_case quote_cases[] = {
	{ "abc", 3, 64, "\"abc\"" },
	{ "", 0, 64, "\"\"" },
	{ "a\"b\\c", 5, 64, "\"a\\\"b\\\\c\"" },
	{ "\x1b[31mred\n", 9, 64, "\"\\x1b[31mred\\x0a\"" },
	{ "\xff\x00z", 3, 64, "\"\\xff\\x00z\"" },
	{ "abcdefghijkl", 12, 12, "\"abcdef...\"" },
	{ "\x01\x02\x03\x04", 4, 10, "\"\\x01...\"" },
};

static void test_log_quote(void **state)
{
	char buf[64];

	for (size_t i = 0; i < sizeof(quote_cases) / sizeof(quote_cases[0]); i++) {
		const struct quote_case *c = &quote_cases[i];
		const char *s = log_quote(c->in, c->len, buf, c->bufsz);

		assert_string_equal(s, c->out);
		assert_true(strlen(s) < c->bufsz);
	}
	assert_string_equal(log_quote_str(NULL, buf, sizeof(buf)), "(null)");
	assert_string_equal(log_quote("x", 1, buf, 4), "");	/* too small */
}

static char captured[512];
static int captured_level = -1;

static void capture_sink(int level, const char *msg, void *userdata)
{
	captured_level = level;
	snprintf(captured, sizeof(captured), "%s", msg);
}

static int log_helper(int err)
{
	return log_error_errno(err, "opening %s: %m", "x");
}

static void test_log_errno(void **state)
{
	int level;

	log_set_sink(capture_sink, NULL);
	log_set_max_level(LOG_INFO);
	errno = 1234;
	assert_int_equal(log_helper(EINVAL), -EINVAL);
	assert_int_equal(errno, 1234);		/* preserved */
	assert_int_equal(captured_level, LOG_ERR);
	/* the message alone: no C function name in front of it */
	assert_string_equal(captured, "opening x: Invalid argument");
	assert_int_equal(log_helper(-ENOENT), -ENOENT);
	assert_non_null(strstr(captured, "No such file"));
	captured[0] = '\0';
	assert_int_equal(log_debug_errno(EIO, "hidden"), -EIO);
	assert_string_equal(captured, "");	/* below max level */
	log_set_max_level(LOG_DEBUG);
	log_debug("shown %d", 7);
	assert_non_null(strstr(captured, "shown 7"));
	assert_int_equal(log_warning_errno(0, "ok"), 0);
	log_set_sink(NULL, NULL);
	log_set_max_level(LOG_INFO);

	assert_int_equal(log_level_from_string("warning", &level), 0);
	assert_int_equal(level, LOG_WARNING);
	assert_int_equal(log_level_from_string("7", &level), 0);
	assert_int_equal(level, LOG_DEBUG);
	level = 99;
	assert_int_equal(log_level_from_string("loud", &level), -EINVAL);
	assert_int_equal(level, 99);
}

struct version_case {
	const char *name;
	const char *json;		/* query-version's "return" */
	int expect;
	int version;
	const char *package;
	bool patched;
};

static const struct version_case version_cases[] = {
	{ "debian stock", "{\"qemu\": {\"major\": 7, \"minor\": 2, \"micro\": 22}, "
	  "\"package\": \"Debian 1:7.2+dfsg-7+deb12u18\"}", 0, 70222,
	  "Debian 1:7.2+dfsg-7+deb12u18", false },
	{ "patched", "{\"qemu\": {\"major\": 7, \"minor\": 2, \"micro\": 22}, "
	  "\"package\": \"Debian 1:7.2+dfsg-7+deb12u18, vmdefrag-patches 1a2b3c\"}", 0,
	  70222, "Debian 1:7.2+dfsg-7+deb12u18, vmdefrag-patches 1a2b3c", true },
	{ "empty package", "{\"qemu\": {\"major\": 9, \"minor\": 0, \"micro\": 0}, "
	  "\"package\": \"\"}", 0, 90000, "", false },
	{ "package not a string", "{\"qemu\": {\"major\": 7}, \"package\": "
	  "[\"vmdefrag-patches\"]}", 0, 70000, "", false },
	{ "control bytes dropped", "{\"qemu\": {}, \"package\": "
	  "\"a\\u001b[2Jb\\nvmdefrag-\\u0000patches\"}", 0, 0, "a[2Jbvmdefrag-patches",
	  true },
	{ "numbers clamped", "{\"qemu\": {\"major\": -3, \"minor\": 1000, "
	  "\"micro\": \"1\"}}", 0, 9900, "", false },
	{ "not an object", "[1]", -EPROTO, 0, NULL, false },
};

static void test_parse_version(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(version_cases) / sizeof(version_cases[0]); i++) {
		const struct version_case *c = &version_cases[i];
		struct json_object *o = json_tokener_parse(c->json);
		struct qmp_version v = { .version = -1 };
		int r;

		fprintf(stderr, "# case: %s\n", c->name);
		assert_non_null(o);
		r = qmp_parse_version(o, &v);
		assert_int_equal(r, c->expect);
		if (r == 0) {
			assert_int_equal(v.version, c->version);
			assert_string_equal(v.package, c->package);
			assert_int_equal(v.patched, c->patched);
		} else {
			assert_int_equal(v.version, -1);	/* untouched */
		}
		json_object_put(o);
	}
	{
		/* a long package is cut, still terminated */
		char json[1024];
		struct json_object *o;
		struct qmp_version v;

		snprintf(json, sizeof(json), "{\"package\": \"%0600d\"}", 7);
		o = json_tokener_parse(json);
		assert_int_equal(qmp_parse_version(o, &v), 0);
		assert_int_equal(strlen(v.package), QMP_PACKAGE_MAX - 1);
		json_object_put(o);
	}
}

int main(void)
{
	const struct CMUnitTest offline[] = {
		cmocka_unit_test(test_parse_line),
		cmocka_unit_test(test_parse_version),
		cmocka_unit_test(test_connect_missing_socket),
		cmocka_unit_test(test_peer_greeting_table),
		cmocka_unit_test(test_peer_reply_table),
		cmocka_unit_test(test_peer_late_reply),
		cmocka_unit_test(test_peer_no_wait_while_late),
		cmocka_unit_test(test_peer_event_flood),
		cmocka_unit_test(test_peer_line_too_long),
		cmocka_unit_test(test_peer_process_input),
		cmocka_unit_test(test_peer_event_behind_reply),
		cmocka_unit_test(test_custom_reply_table),
		cmocka_unit_test(test_custom_connreset_breaks),
		cmocka_unit_test(test_log_quote),
		cmocka_unit_test(test_log_errno),
	};
	const struct CMUnitTest real[] = {
		cmocka_unit_test(test_real_greeting_and_peer),
		cmocka_unit_test(test_real_execute),
		cmocka_unit_test(test_real_query_version),
		cmocka_unit_test(test_real_error_reply),
		cmocka_unit_test(test_real_hmp),
		cmocka_unit_test(test_real_events_queued),
		cmocka_unit_test(test_real_custom_layout),
	};
	int failed;

	log_set_max_level(LOG_WARNING);
	failed = cmocka_run_group_tests_name("qmp-offline", offline, NULL, NULL);
	failed += cmocka_run_group_tests_name("qmp-real-qemu", real, setup_vm, teardown_vm);
	return failed;
}
