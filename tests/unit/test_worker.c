// SPDX-License-Identifier: GPL-2.0
/*
 * test_worker.c - the worker pool (daemon/worker.c): jobs run off the loop
 * thread and their done() comes back on it; one queue's jobs run one at a
 * time and in order; a slow job of one queue does not hold up another
 * queue's; a queue is bounded; freeing a queue cancels what has not run
 * and waits for what runs, so nothing touches a freed owner.  Real threads,
 * the real loop.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "loop.h"
#include "worker.h"

struct tjob {
	struct worker_job w;
	int id;
	unsigned int sleep_ms;
	pthread_t run_thread;
	atomic_bool *gate;		/* run() waits until it is true */
	atomic_int *running;		/* jobs of the queue running now */
	int max_running;
	uint64_t ran_at, done_at;
	enum worker_end end;
	bool done;
	struct fixture *fx;
};

struct fixture {
	struct loop *loop;
	struct worker_pool *pool;
	pthread_t loop_thread;
	int order[64];			/* ids in done() order */
	int norder;
	int stop_after;			/* quit the loop after this many done() */
	struct loop_timer guard;
};

static void sleep_ms(unsigned int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void tjob_run(struct worker_job *w)
{
	struct tjob *j = (struct tjob *)w;
	int now;

	j->run_thread = pthread_self();
	now = atomic_fetch_add(j->running, 1) + 1;
	j->max_running = now;
	while (j->gate && !atomic_load(j->gate))
		sleep_ms(1);
	if (j->sleep_ms)
		sleep_ms(j->sleep_ms);
	j->ran_at = loop_now_ms();
	atomic_fetch_sub(j->running, 1);
}

static void tjob_done(struct worker_job *w, enum worker_end end)
{
	struct tjob *j = (struct tjob *)w;
	struct fixture *fx = j->fx;

	/* done() is on the loop's thread, never on the job's */
	assert_true(pthread_equal(pthread_self(), fx->loop_thread));
	j->done = true;
	j->end = end;
	j->done_at = loop_now_ms();
	if (fx->norder < 64)
		fx->order[fx->norder++] = j->id;
	if (end == WORKER_RAN && fx->stop_after && fx->norder >= fx->stop_after)
		loop_quit(fx->loop, 0);
}

static void guard_fire(struct loop_timer *t)
{
	struct fixture *fx = t->userdata;

	loop_quit(fx->loop, -ETIMEDOUT);
}

static void tjob_init(struct tjob *j, struct fixture *fx, int id, atomic_int *running)
{
	*j = (struct tjob) { .id = id, .fx = fx, .running = running };
	j->w.run = tjob_run;
	j->w.done = tjob_done;
}

/* Runs the loop until stop_after jobs are done (or 10 s pass: a failure). */
static void run_until(struct fixture *fx, int n)
{
	fx->stop_after = n;
	loop_timer_arm(fx->loop, &fx->guard, 10000);
	assert_int_equal(loop_run(fx->loop), 0);
	loop_timer_disarm(fx->loop, &fx->guard);
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	assert_non_null(fx);
	assert_int_equal(loop_new(&fx->loop), 0);
	assert_int_equal(worker_pool_new(fx->loop, 2, &fx->pool), 0);
	fx->loop_thread = pthread_self();
	loop_timer_init(&fx->guard, guard_fire, fx);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	worker_pool_free(fx->pool);
	loop_free(fx->loop);
	free(fx);
	return 0;
}

/* One queue: in order, one at a time, on another thread. */
static void test_queue_order(void **state)
{
	struct fixture *fx = *state;
	struct worker_queue *q;
	struct tjob j[6];
	atomic_int running = 0;

	assert_int_equal(worker_queue_new(fx->pool, &q), 0);
	for (int i = 0; i < 6; i++) {
		tjob_init(&j[i], fx, i, &running);
		j[i].sleep_ms = 5;
		assert_int_equal(worker_submit(q, &j[i].w), 0);
	}
	/* nothing completes before the loop runs: done() is the loop's */
	assert_int_equal(worker_queue_pending(q), 6);
	run_until(fx, 6);
	assert_int_equal(fx->norder, 6);
	for (int i = 0; i < 6; i++) {
		assert_int_equal(fx->order[i], i);
		assert_int_equal(j[i].end, WORKER_RAN);
		assert_int_equal(j[i].max_running, 1);
		assert_false(pthread_equal(j[i].run_thread, fx->loop_thread));
		/* the next one ran only after the previous one's done() */
		if (i)
			assert_true(j[i].ran_at >= j[i - 1].done_at);
	}
	assert_int_equal(worker_queue_pending(q), 0);
	worker_queue_free(q);
}

/* A queue stuck in a slow job does not delay another queue's jobs. */
static void test_queues_independent(void **state)
{
	struct fixture *fx = *state;
	struct worker_queue *slow, *fast;
	struct tjob hung, quick[3];
	atomic_bool gate = false;
	atomic_int r1 = 0, r2 = 0;

	assert_int_equal(worker_queue_new(fx->pool, &slow), 0);
	assert_int_equal(worker_queue_new(fx->pool, &fast), 0);
	tjob_init(&hung, fx, 100, &r1);
	hung.gate = &gate;
	assert_int_equal(worker_submit(slow, &hung.w), 0);
	for (int i = 0; i < 3; i++) {
		tjob_init(&quick[i], fx, i, &r2);
		assert_int_equal(worker_submit(fast, &quick[i].w), 0);
	}
	run_until(fx, 3);
	for (int i = 0; i < 3; i++)
		assert_true(quick[i].done);
	assert_false(hung.done);
	atomic_store(&gate, true);
	run_until(fx, 4);
	assert_true(hung.done && hung.end == WORKER_RAN);
	worker_queue_free(slow);
	worker_queue_free(fast);
}

/* At most WORKER_QUEUE_MAX jobs per queue; the one refused is not kept. */
static void test_queue_bounded(void **state)
{
	struct fixture *fx = *state;
	struct worker_queue *q;
	struct tjob j[WORKER_QUEUE_MAX + 1];
	atomic_bool gate = false;
	atomic_int running = 0;

	assert_int_equal(worker_queue_new(fx->pool, &q), 0);
	for (int i = 0; i <= WORKER_QUEUE_MAX; i++) {
		tjob_init(&j[i], fx, i, &running);
		j[i].gate = &gate;
	}
	for (int i = 0; i < WORKER_QUEUE_MAX; i++)
		assert_int_equal(worker_submit(q, &j[i].w), 0);
	assert_int_equal(worker_submit(q, &j[WORKER_QUEUE_MAX].w), -EAGAIN);
	atomic_store(&gate, true);
	run_until(fx, WORKER_QUEUE_MAX);
	assert_false(j[WORKER_QUEUE_MAX].done);
	/* room again */
	assert_int_equal(worker_submit(q, &j[WORKER_QUEUE_MAX].w), 0);
	run_until(fx, WORKER_QUEUE_MAX + 1);
	assert_true(j[WORKER_QUEUE_MAX].done);
	worker_queue_free(q);
}

struct release_arg {
	atomic_bool *gate;
	unsigned int after_ms;
};

static void *release_later(void *arg)
{
	struct release_arg *a = arg;

	sleep_ms(a->after_ms);
	atomic_store(a->gate, true);
	return NULL;
}

/*
 * Freeing a queue while its head runs: free waits for run() to return,
 * then every job (the running one, the waiting ones) gets done(CANCELLED)
 * before free returns; none is left to complete later.
 */
static void test_queue_free_waits(void **state)
{
	struct fixture *fx = *state;
	struct worker_queue *q;
	struct tjob j[3];
	atomic_bool gate = false;
	atomic_int running = 0;
	struct release_arg ra = { &gate, 50 };
	pthread_t t;
	uint64_t t0;

	assert_int_equal(worker_queue_new(fx->pool, &q), 0);
	for (int i = 0; i < 3; i++) {
		tjob_init(&j[i], fx, i, &running);
		j[i].gate = &gate;
		assert_int_equal(worker_submit(q, &j[i].w), 0);
	}
	/* let the first one start */
	while (!atomic_load(&running))
		sleep_ms(1);
	assert_int_equal(pthread_create(&t, NULL, release_later, &ra), 0);
	t0 = loop_now_ms();
	worker_queue_free(q);
	assert_true(loop_now_ms() - t0 >= 40);	/* it waited for run() */
	pthread_join(t, NULL);
	assert_int_equal(atomic_load(&running), 0);
	for (int i = 0; i < 3; i++) {
		assert_true(j[i].done);
		assert_int_equal(j[i].end, WORKER_CANCELLED);
		assert_int_equal(fx->order[i], i);
	}
	assert_true(j[0].ran_at != 0);		/* it did run */
	assert_true(j[1].ran_at == 0 && j[2].ran_at == 0);
	/* a completion already posted for it is not delivered afterwards */
	fx->norder = 0;
	loop_timer_arm(fx->loop, &fx->guard, 50);
	assert_int_equal(loop_run(fx->loop), -ETIMEDOUT);
	assert_int_equal(fx->norder, 0);
}

/* A job that finished but was not reaped yet is cancelled, not delivered. */
static void test_queue_drain_finished(void **state)
{
	struct fixture *fx = *state;
	struct worker_queue *q;
	struct tjob j;
	atomic_int running = 0;

	assert_int_equal(worker_queue_new(fx->pool, &q), 0);
	tjob_init(&j, fx, 7, &running);
	assert_int_equal(worker_submit(q, &j.w), 0);
	while (!j.ran_at)
		sleep_ms(1);
	sleep_ms(5);		/* on the finished list now */
	worker_queue_drain(q);
	assert_true(j.done && j.end == WORKER_CANCELLED);
	assert_int_equal(worker_queue_pending(q), 0);
	fx->norder = 0;
	loop_timer_arm(fx->loop, &fx->guard, 50);
	assert_int_equal(loop_run(fx->loop), -ETIMEDOUT);
	assert_int_equal(fx->norder, 0);
	/* the queue takes jobs again after a drain */
	tjob_init(&j, fx, 8, &running);
	assert_int_equal(worker_submit(q, &j.w), 0);
	run_until(fx, 1);
	assert_true(j.done && j.end == WORKER_RAN);
	worker_queue_free(q);
}

/* Without a pool, a job runs inline: run() and done() within submit. */
static void test_inline(void **state)
{
	struct fixture *fx = *state;
	struct worker_queue *q;
	struct tjob j;
	atomic_int running = 0;

	assert_int_equal(worker_queue_new(NULL, &q), 0);
	assert_true(worker_queue_inline(q));
	tjob_init(&j, fx, 1, &running);
	assert_int_equal(worker_submit(q, &j.w), 0);
	assert_true(j.done && j.end == WORKER_RAN);
	assert_true(pthread_equal(j.run_thread, fx->loop_thread));
	worker_queue_free(q);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_queue_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queues_independent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_bounded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_free_waits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_drain_finished, setup, teardown),
		cmocka_unit_test_setup_teardown(test_inline, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
