// SPDX-License-Identifier: GPL-2.0
/*
 * test_loop.c - the event loop reads input before it fires timers that
 * expired while it was stalled (daemon/loop.c, "Input before timeouts").
 *
 * A request's timeout is a timer and its answer arrives on a descriptor.
 * When one callback stalls the loop (a slow punch, a slow QMP call) past
 * another request's deadline, and that request's answer arrives during
 * the stall, the answer must be read first: its callback disarms the
 * timeout, which then never fires.  Real pipes, the real loop.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "loop.h"

#define STALL_MS	120	/* the stall: well past the deadline below */
#define DEADLINE_MS	30	/* the request's timeout */

struct fixture {
	struct loop *loop;
	int slow[2];			/* pipe whose callback stalls */
	int answer[2];			/* pipe the "answer" arrives on */
	struct loop_io slow_io, answer_io;
	struct loop_timer timeout;	/* the request's deadline */
	struct loop_timer stall_timer;	/* a timer callback that stalls */
	struct loop_timer quit;
	char order[8];			/* 'a' answer read, 't' timeout fired */
	unsigned int norder;
};

static void sleep_ms(unsigned int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void note(struct fixture *fx, char c)
{
	if (fx->norder < sizeof(fx->order) - 1)
		fx->order[fx->norder++] = c;
}

/* Slow work: the answer arrives and the deadline passes meanwhile. */
static void stall(struct fixture *fx)
{
	sleep_ms(STALL_MS);
	assert_int_equal(write(fx->answer[1], "x", 1), 1);
}

static void slow_cb(struct loop_io *io, uint32_t events)
{
	struct fixture *fx = io->userdata;
	char c;

	assert_int_equal(read(fx->slow[0], &c, 1), 1);
	stall(fx);
}

static void stall_timer_cb(struct loop_timer *t)
{
	stall(t->userdata);
}

/* The answer: what a session's response does to its request's timeout. */
static void answer_cb(struct loop_io *io, uint32_t events)
{
	struct fixture *fx = io->userdata;
	char c;

	assert_int_equal(read(fx->answer[0], &c, 1), 1);
	note(fx, 'a');
	loop_timer_disarm(fx->loop, &fx->timeout);
}

static void timeout_cb(struct loop_timer *t)
{
	note(t->userdata, 't');
}

static void quit_cb(struct loop_timer *t)
{
	loop_quit(((struct fixture *)t->userdata)->loop, 0);
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	assert_non_null(fx);
	assert_int_equal(loop_new(&fx->loop), 0);
	assert_int_equal(pipe(fx->slow), 0);
	assert_int_equal(pipe(fx->answer), 0);
	loop_io_init(&fx->slow_io, slow_cb, fx);
	loop_io_init(&fx->answer_io, answer_cb, fx);
	assert_int_equal(loop_io_add(fx->loop, &fx->slow_io, fx->slow[0], EPOLLIN), 0);
	assert_int_equal(loop_io_add(fx->loop, &fx->answer_io, fx->answer[0],
				     EPOLLIN), 0);
	loop_timer_init(&fx->timeout, timeout_cb, fx);
	loop_timer_init(&fx->stall_timer, stall_timer_cb, fx);
	loop_timer_init(&fx->quit, quit_cb, fx);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	loop_io_remove(fx->loop, &fx->slow_io);
	loop_io_remove(fx->loop, &fx->answer_io);
	loop_free(fx->loop);
	close(fx->slow[0]);
	close(fx->slow[1]);
	close(fx->answer[0]);
	close(fx->answer[1]);
	free(fx);
	return 0;
}

static void run(struct fixture *fx)
{
	loop_timer_arm(fx->loop, &fx->quit, STALL_MS + 200);
	assert_int_equal(loop_run(fx->loop), 0);
}

/* An I/O callback stalls: the answer is read, the timeout never fires. */
static void test_io_stall_reads_answer_first(void **state)
{
	struct fixture *fx = *state;

	loop_timer_arm(fx->loop, &fx->timeout, DEADLINE_MS);
	assert_int_equal(write(fx->slow[1], "s", 1), 1);
	run(fx);
	assert_string_equal(fx->order, "a");
}

/* A timer callback stalls: the same holds. */
static void test_timer_stall_reads_answer_first(void **state)
{
	struct fixture *fx = *state;

	loop_timer_arm(fx->loop, &fx->timeout, DEADLINE_MS);
	loop_timer_arm(fx->loop, &fx->stall_timer, 0);
	run(fx);
	assert_string_equal(fx->order, "a");
}

/* Without an answer the timeout still fires (and only once). */
static void test_timeout_fires_without_answer(void **state)
{
	struct fixture *fx = *state;

	loop_timer_arm(fx->loop, &fx->timeout, DEADLINE_MS);
	run(fx);
	assert_string_equal(fx->order, "t");
}

/*
 * A flooding descriptor (always readable) does not starve timers: the
 * timeout fires within a few turns of its deadline.
 */
static void flood_cb(struct loop_io *io, uint32_t events)
{
	(void)io;
	(void)events;		/* never reads: stays ready */
}

static void test_flood_does_not_starve_timers(void **state)
{
	struct fixture *fx = *state;
	struct loop_io flood;
	uint64_t t0 = loop_now_ms();

	loop_io_init(&flood, flood_cb, fx);
	assert_int_equal(loop_io_add(fx->loop, &flood, fx->slow[0], EPOLLIN), -EEXIST);
	loop_io_remove(fx->loop, &fx->slow_io);
	assert_int_equal(loop_io_add(fx->loop, &flood, fx->slow[0], EPOLLIN), 0);
	assert_int_equal(write(fx->slow[1], "f", 1), 1);
	loop_timer_arm(fx->loop, &fx->timeout, DEADLINE_MS);
	loop_timer_arm(fx->loop, &fx->quit, DEADLINE_MS + 50);
	assert_int_equal(loop_run(fx->loop), 0);
	assert_string_equal(fx->order, "t");
	assert_true(loop_now_ms() - t0 < DEADLINE_MS + 1000);
	loop_io_remove(fx->loop, &flood);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_io_stall_reads_answer_first,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_timer_stall_reads_answer_first,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout_fires_without_answer,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_flood_does_not_starve_timers,
						setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
