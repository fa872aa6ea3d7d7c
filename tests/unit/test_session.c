// SPDX-License-Identifier: GPL-2.0
/*
 * test_session.c - the guest session's contract for ranges while the VM's
 * RAM layout is unknown (daemon/session.h, "Ranges while the layout is
 * unknown"), against the real session.c, loop.c and codec.
 *
 * The test plays the guest: it listens on a unix socket, the session
 * connects to it as it connects to QEMU's chardev, and both sides speak
 * the real wire protocol.  The VM's hooks are a fixture whose
 * check_range() answer the test sets: -ENODATA (layout unknown), 0, or
 * -ERANGE.  With the layout unknown:
 *   - a RESP_LIST with ranges reaches its requester, ranges intact and
 *     unchecked, and the session stays READY;
 *   - an EVT_CAPTURED is not handed to the VM, and the session stays READY;
 *   - an empty successful RESP_LIST (8 bytes, like a bare status) is a
 *     success, status 0, by the codec's verdict;
 * and a range the layout knows to be outside RAM still drops the session.
 * EVT_MEMINFO (version 3): handed to the VM in a version-3 session, a
 * session dropped for one whose total is above the VM's RAM, and for any
 * in a session that negotiated version 2.
 * A request past its deadline whose answer waits in the socket behind
 * more than one read's worth of events (the loop was stalled) is answered,
 * not timed out; one the guest never answers still times out.
 * A REQ_ACK is accepted while SESSION_QUEUE_MAX other requests wait (the
 * protocol requires it), within its own bound of SESSION_ACK_MAX.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "guest_end.h"
#include "log.h"
#include "loop.h"
#include "session.h"

#define MIB (1ULL << 20)
#define RAM (256 * MIB)

struct fixture {
	struct loop *loop;
	struct session *s;
	char path[108];
	int lfd;			/* the guest's listening socket */
	int gfd;			/* the guest's end of the session */
	struct proto_decoder dec;	/* what the host sent */
	int check_range;		/* what check_range() answers */
	uint64_t ram;			/* what ram_bytes() answers (0: unknown) */
	unsigned int checks;		/* check_range() calls */
	unsigned int events;		/* events handed to the VM */
	/* the last response handed to the requester */
	unsigned int responses;
	int status;
	struct proto_msg resp;
};

static int fx_check_range(void *vm, const struct proto_range *r)
{
	struct fixture *fx = vm;

	fx->checks++;
	return fx->check_range;
}

static uint64_t fx_ram_bytes(void *vm)
{
	struct fixture *fx = vm;

	return fx->ram;	/* 0 (unknown, like the layout) unless a test sets it */
}

static void fx_event(void *vm, const struct proto_msg *m)
{
	((struct fixture *)vm)->events++;
}

static const struct session_hooks fx_hooks = {
	.check_range = fx_check_range,
	.ram_bytes = fx_ram_bytes,
	.event = fx_event,
};

static void fx_resp(void *userdata, int status, const struct proto_msg *resp,
		    bool last)
{
	struct fixture *fx = userdata;

	fx->responses++;
	fx->status = status;
	if (resp)
		fx->resp = *resp;
}

/* Runs the loop for ms milliseconds. */
static void pump(struct fixture *fx, unsigned int ms)
{
	guest_end_pump(fx->loop, ms);
}

static void guest_send(struct fixture *fx, const struct proto_msg *m)
{
	guest_end_send(fx->gfd, m);
}

/* The next frame the host sent, decoded into *m (waits for it). */
static void guest_recv(struct fixture *fx, struct proto_msg *m)
{
	if (!guest_end_try_recv(fx->loop, fx->gfd, &fx->dec, m, 2000))
		fail_msg("the host sent nothing");
}

static struct proto_msg *msg(uint16_t type, uint32_t id)
{
	static struct proto_msg m;

	memset(&m, 0, sizeof(m));
	m.type = type;
	m.id = id;
	return &m;
}

/* The highest version the test's guest offers in its HELLO. */
static uint16_t guest_vmax = PROTO_VERSION_MAX;

static int setup(void **state)
{
	static const struct session_limits lim = {
		.frames_per_sec = 1000, .events_per_sec = 1000,
		.request_timeout_ms = 5000, .reconnect_min_ms = 60000,
		.reconnect_max_ms = 60000,
	};
	struct fixture *fx = calloc(1, sizeof(*fx));
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct proto_msg *m;
	struct session_info info;

	assert_non_null(fx);
	fx->check_range = -ENODATA;
	snprintf(fx->path, sizeof(fx->path), "/tmp/vdf-test-session-%d.sock", getpid());
	unlink(fx->path);
	strcpy(sa.sun_path, fx->path);
	fx->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fx->lfd >= 0);
	assert_int_equal(bind(fx->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fx->lfd, 1), 0);
	proto_decoder_init(&fx->dec);

	assert_int_equal(loop_new(&fx->loop), 0);
	assert_int_equal(session_new(fx->loop, "t", fx->path, &lim, &fx_hooks, fx,
				     &fx->s), 0);
	session_start(fx->s);
	fx->gfd = accept(fx->lfd, NULL, NULL);
	assert_true(fx->gfd >= 0);

	m = calloc(1, sizeof(*m));
	assert_non_null(m);
	guest_recv(fx, m);
	assert_int_equal(m->type, PROTO_HELLO);
	free(m);
	m = msg(PROTO_HELLO, 0);
	m->u.hello = (struct proto_hello){
		.version_min = PROTO_VERSION_MIN, .version_max = guest_vmax,
		.features = PROTO_FEAT_EVENTS | PROTO_FEAT_MODULE,
		.page_size = 4096, .block_size = PROTO_BLOCK_SIZE, .ram_bytes = RAM,
	};
	guest_send(fx, m);
	pump(fx, 20);
	session_get_info(fx->s, &info);
	assert_int_equal(info.state, SESSION_READY);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	session_free(fx->s);
	loop_free(fx->loop);
	close(fx->gfd);
	close(fx->lfd);
	unlink(fx->path);
	free(fx);
	return 0;
}

/* Host sends a LIST; returns its id as the guest saw it. */
static uint32_t host_list(struct fixture *fx)
{
	struct proto_msg *m = calloc(1, sizeof(*m));
	uint32_t id, seen;

	assert_non_null(m);
	m->type = PROTO_REQ_LIST;
	assert_int_equal(session_request(fx->s, m, fx_resp, fx, &id), 0);
	guest_recv(fx, m);
	assert_int_equal(m->type, PROTO_REQ_LIST);
	seen = m->id;
	assert_int_equal(seen, id);
	free(m);
	return seen;
}

static void assert_ready(struct fixture *fx)
{
	struct session_info info;

	session_get_info(fx->s, &info);
	assert_int_equal(info.state, SESSION_READY);
	assert_int_equal(info.drops, 0);
}

static void test_response_unchecked_without_layout(void **state)
{
	struct fixture *fx = *state;
	uint32_t id = host_list(fx);
	struct proto_msg *m = msg(PROTO_RESP_LIST, id);

	m->u.list.nranges = 2;
	m->ranges[0] = (struct proto_range){ .gpa = 4 * MIB, .len = 2 * MIB };
	/* far outside any RAM: nobody could have checked it */
	m->ranges[1] = (struct proto_range){ .gpa = 1ULL << 40, .len = 4 * MIB };
	guest_send(fx, m);
	pump(fx, 20);

	assert_true(fx->checks > 0);		/* it asked the layout */
	assert_int_equal(fx->responses, 1);	/* and delivered anyway */
	assert_int_equal(fx->status, 0);
	assert_int_equal(fx->resp.type, PROTO_RESP_LIST);
	assert_int_equal(fx->resp.u.list.nranges, 2);
	assert_int_equal(fx->resp.ranges[1].gpa, 1ULL << 40);
	assert_int_equal(fx->resp.ranges[1].len, 4 * MIB);
	assert_ready(fx);
}

static void test_event_ignored_without_layout(void **state)
{
	struct fixture *fx = *state;
	struct proto_msg *m = msg(PROTO_EVT_CAPTURED, 0);

	m->u.evt.nranges = 1;
	m->ranges[0] = (struct proto_range){ .gpa = 4 * MIB, .len = 2 * MIB };
	guest_send(fx, m);
	pump(fx, 20);
	assert_true(fx->checks > 0);
	assert_int_equal(fx->events, 0);
	assert_ready(fx);

	/* with a layout that knows the range, the same event goes through */
	fx->check_range = 0;
	guest_send(fx, m);
	pump(fx, 20);
	assert_int_equal(fx->events, 1);
	assert_ready(fx);
}

static void test_empty_list_is_success(void **state)
{
	struct fixture *fx = *state;
	uint32_t id = host_list(fx);
	struct proto_msg *m = msg(PROTO_RESP_LIST, id);

	guest_send(fx, m);		/* status 0, no ranges: 8 bytes */
	pump(fx, 20);
	assert_int_equal(fx->responses, 1);
	assert_int_equal(fx->status, 0);
	assert_false(proto_msg_failed(&fx->resp));
	assert_int_equal(fx->resp.u.list.nranges, 0);

	id = host_list(fx);
	m = msg(PROTO_RESP_LIST, id);
	m->u.status.status = -ENOMEM;	/* a failed LIST: its bare status */
	guest_send(fx, m);
	pump(fx, 20);
	assert_int_equal(fx->responses, 2);
	assert_int_equal(fx->status, -ENOMEM);
	assert_ready(fx);
}

static void test_range_outside_known_layout_drops(void **state)
{
	struct fixture *fx = *state;
	struct session_info info;
	uint32_t id = host_list(fx);
	struct proto_msg *m = msg(PROTO_RESP_LIST, id);

	fx->check_range = -ERANGE;
	m->u.list.nranges = 1;
	m->ranges[0] = (struct proto_range){ .gpa = 1ULL << 40, .len = 2 * MIB };
	guest_send(fx, m);
	pump(fx, 20);
	session_get_info(fx->s, &info);
	assert_int_equal(info.state, SESSION_DOWN);
	assert_int_equal(info.drops, 1);
	/* the request failed with the session, it was not answered */
	assert_int_equal(fx->responses, 1);
	assert_int_equal(fx->status, -ECONNRESET);
}

static struct proto_msg *meminfo(uint64_t total)
{
	struct proto_msg *m = msg(PROTO_EVT_MEMINFO, 0);

	m->u.meminfo = (struct proto_meminfo){
		.total_bytes = total, .free_bytes = 100 * MIB,
		.available_bytes = 120 * MIB, .wmark_low_bytes = MIB,
		.wmark_high_bytes = 2 * MIB, .interval_ms = 2000,
	};
	return m;
}

static void test_meminfo_v3(void **state)
{
	struct fixture *fx = *state;
	struct session_info info;

	fx->ram = RAM;
	guest_send(fx, meminfo(RAM - 8 * MIB));
	pump(fx, 20);
	assert_int_equal(fx->events, 1);
	assert_ready(fx);
	/* a guest claiming more memory than the VM has */
	guest_send(fx, meminfo(RAM + 2 * MIB));
	pump(fx, 20);
	session_get_info(fx->s, &info);
	assert_int_equal(info.state, SESSION_DOWN);
	assert_int_equal(info.drops, 1);
	assert_non_null(strstr(info.last_drop, "EVT_MEMINFO"));
	assert_int_equal(fx->events, 1);
}

static int setup_v2(void **state)
{
	int r;

	guest_vmax = 2;
	r = setup(state);
	guest_vmax = PROTO_VERSION_MAX;
	return r;
}

static void test_meminfo_in_v2_session_drops(void **state)
{
	struct fixture *fx = *state;
	struct session_info info;

	session_get_info(fx->s, &info);
	assert_int_equal(info.version, 2);
	guest_send(fx, meminfo(RAM - 8 * MIB));
	pump(fx, 20);
	session_get_info(fx->s, &info);
	assert_int_equal(info.state, SESSION_DOWN);
	assert_non_null(strstr(info.last_drop, "EVT_MEMINFO in protocol version 2"));
	assert_int_equal(fx->events, 0);
}

static void sleep_ms(unsigned int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void set_timeout(struct fixture *fx, uint32_t ms)
{
	const struct session_limits lim = {
		.frames_per_sec = 1000, .events_per_sec = 1000,
		.request_timeout_ms = ms, .reconnect_min_ms = 60000,
		.reconnect_max_ms = 60000,
	};

	session_set_limits(fx->s, &lim);
}

/*
 * The loop stalls past a LIST's deadline while the guest sends 4 events
 * of 2048 ranges (~128 KiB, two reads' worth) and then the answer: the
 * answer is read before the session decides it timed out.
 */
static void test_answer_waiting_behind_events_not_timed_out(void **state)
{
	struct fixture *fx = *state;
	struct proto_msg *m;
	uint32_t id;

	set_timeout(fx, 50);
	id = host_list(fx);
	m = msg(PROTO_EVT_CAPTURED, 0);
	m->u.evt.nranges = PROTO_MAX_RANGES;
	for (uint32_t i = 0; i < PROTO_MAX_RANGES; i++)
		m->ranges[i] = (struct proto_range){ .gpa = 4 * i * MIB, .len = 2 * MIB };
	for (int i = 0; i < 4; i++)
		guest_send(fx, m);
	guest_send(fx, msg(PROTO_RESP_LIST, id));
	sleep_ms(150);			/* the stall: the deadline passes */
	pump(fx, 20);
	assert_int_equal(fx->responses, 1);
	assert_int_equal(fx->status, 0);
	assert_int_equal(fx->resp.type, PROTO_RESP_LIST);
	assert_ready(fx);
}

/* The same stall with nothing answered: the request times out. */
static void test_unanswered_request_times_out(void **state)
{
	struct fixture *fx = *state;
	struct session_info info;

	set_timeout(fx, 50);
	host_list(fx);
	sleep_ms(150);
	pump(fx, 20);
	session_get_info(fx->s, &info);
	assert_int_equal(info.state, SESSION_DOWN);
	assert_non_null(strstr(info.last_drop, "no answer to REQ_LIST"));
	assert_int_equal(fx->responses, 1);
	assert_int_equal(fx->status, -ECONNRESET);	/* failed with the session */
}

static struct proto_msg *ack_req(uint64_t gpa)
{
	struct proto_msg *m = msg(PROTO_REQ_ACK, 0);

	m->u.ack.nranges = 1;
	m->ranges[0] = (struct proto_range){ .gpa = gpa, .len = 2 * MIB };
	return m;
}

static void test_ack_never_refused_for_a_full_queue(void **state)
{
	struct fixture *fx = *state;
	struct session_info info;
	unsigned int i;

	for (i = 0; i < SESSION_QUEUE_MAX; i++)
		assert_int_equal(session_request(fx->s, msg(PROTO_REQ_SCAN, 0),
						 fx_resp, fx, NULL), 0);
	assert_int_equal(session_request(fx->s, msg(PROTO_REQ_SCAN, 0), fx_resp,
					 fx, NULL), -EBUSY);
	/* the queue is full of others: the ACKs still go in ... */
	for (i = 0; i < SESSION_ACK_MAX; i++)
		assert_int_equal(session_request(fx->s, ack_req(2 * i * MIB), fx_resp,
						 fx, NULL), 0);
	/* ... within their own bound */
	assert_int_equal(session_request(fx->s, ack_req(64 * MIB), fx_resp, fx,
					 NULL), -EBUSY);
	session_get_info(fx->s, &info);
	assert_int_equal(info.queued, SESSION_QUEUE_MAX + SESSION_ACK_MAX);
	assert_ready(fx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_response_unchecked_without_layout,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_event_ignored_without_layout,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_list_is_success,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_range_outside_known_layout_drops,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_meminfo_v3, setup, teardown),
		cmocka_unit_test_setup_teardown(test_meminfo_in_v2_session_drops,
						setup_v2, teardown),
		cmocka_unit_test_setup_teardown(test_answer_waiting_behind_events_not_timed_out,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_unanswered_request_times_out,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_ack_never_refused_for_a_full_queue,
						setup, teardown),
	};

	log_set_max_level(LOG_WARNING);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
