// SPDX-License-Identifier: GPL-2.0
/*
 * loop.c - epoll plus timers, the single thread every VM shares.
 *
 * Model: one iteration = serve the descriptors that are ready now, then
 * fire the expired timers, then one epoll_wait() for at most one ready
 * descriptor, bounded by the nearest timer, then that descriptor's
 * callback.  Taking one event per wait is deliberate: sources are
 * level-triggered, and epoll hands ready descriptors out round-robin, so a
 * guest flooding its channel gets one callback per turn like everyone
 * else; and since no batch of events is held across callbacks, a callback
 * may free any other source without leaving a dangling pointer behind in a
 * batch.  Callbacks that read must read a bounded amount per call for that
 * fairness to hold.
 *
 * Input before timeouts.  A callback may stall the loop (a slow punch, a
 * slow QMP call); during the stall answers arrive and deadlines pass.
 * Firing the expired timers first would declare a request timed out whose
 * answer is already waiting in its socket.  So each iteration first drains
 * what is ready with non-blocking waits -- up to one callback per
 * registered source, which under round-robin reaches every descriptor that
 * was ready when the drain began -- and only then fires timers that
 * expired by the time the drain began; a timer that expired during the
 * drain waits for the next iteration's drain first.  A timer callback that
 * stalls ends the batch of timers so that input is read again before the
 * next one fires.
 *
 * Timers are an unsorted singly linked list of armed timers: the daemon
 * has a handful per VM, and a linear scan per iteration is cheaper than
 * keeping a heap honest.  Firing disarms before calling, so a callback may
 * re-arm its own timer.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "loop.h"

struct loop {
	int epfd;
	bool quit;
	int code;
	struct loop_timer *timers;	/* armed timers, any order */
	unsigned int nio;		/* sources added */
};

/* A timer callback longer than this ends the batch of timers (see above). */
#define LOOP_STALL_MS	10

uint32_t loop_backoff_next(uint32_t cur_ms, uint32_t min_ms, uint32_t max_ms)
{
	if (!cur_ms)
		return min_ms;
	if (cur_ms < max_ms / 2)
		return cur_ms * 2;
	return max_ms;
}

uint64_t loop_now_ms(void)
{
	return clock_now_ms();
}

int loop_new(struct loop **ret_loop)
{
	struct loop *l = calloc(1, sizeof(*l));

	if (!l)
		return -ENOMEM;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0) {
		int r = -errno;

		free(l);
		return r;
	}
	*ret_loop = l;
	return 0;
}

void loop_free(struct loop *l)
{
	if (!l)
		return;
	close(l->epfd);
	free(l);
}

void loop_io_init(struct loop_io *io, loop_io_fn fn, void *userdata)
{
	io->fd = -1;
	io->events = 0;
	io->fn = fn;
	io->userdata = userdata;
}

int loop_io_add(struct loop *l, struct loop_io *io, int fd, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = io };

	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return -errno;
	io->fd = fd;
	io->events = events;
	l->nio++;
	return 0;
}

int loop_io_modify(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = io };

	if (io->fd < 0)
		return -EBADF;
	if (events == io->events)
		return 0;
	if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, io->fd, &ev) < 0)
		return -errno;
	io->events = events;
	return 0;
}

void loop_io_remove(struct loop *l, struct loop_io *io)
{
	if (io->fd < 0)
		return;
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, NULL);
	l->nio--;
	io->fd = -1;
	io->events = 0;
}

void loop_timer_init(struct loop_timer *t, loop_timer_fn fn, void *userdata)
{
	t->deadline_ms = 0;
	t->armed = false;
	t->fn = fn;
	t->userdata = userdata;
	t->next = NULL;
}

void loop_timer_disarm(struct loop *l, struct loop_timer *t)
{
	struct loop_timer **p;

	if (!t->armed)
		return;
	for (p = &l->timers; *p; p = &(*p)->next) {
		if (*p == t) {
			*p = t->next;
			break;
		}
	}
	t->armed = false;
	t->next = NULL;
}

void loop_timer_arm(struct loop *l, struct loop_timer *t, uint64_t delay_ms)
{
	loop_timer_disarm(l, t);
	t->deadline_ms = loop_now_ms() + delay_ms;
	t->armed = true;
	t->next = l->timers;
	l->timers = t;
}

/* Fires one timer that expired by `before`; false if none did. */
static bool loop_fire_one_timer(struct loop *l, uint64_t before)
{
	for (struct loop_timer *t = l->timers; t; t = t->next) {
		if (t->deadline_ms <= before) {
			loop_timer_disarm(l, t);
			t->fn(t);
			return true;
		}
	}
	return false;
}

/*
 * Waits for one event at most timeout_ms and runs its callback: 1 if one
 * ran, 0 if none was ready, negative errno (-EINTR: a signal came first).
 */
static int loop_dispatch_one(struct loop *l, int timeout_ms)
{
	struct epoll_event ev;
	int n = epoll_wait(l->epfd, &ev, 1, timeout_ms);

	if (n < 0)
		return -errno;
	if (n == 1) {
		struct loop_io *io = ev.data.ptr;

		io->fn(io, ev.events);
	}
	return n;
}

/*
 * Serves what is ready right now: one callback per source at most (each
 * descriptor ready at the start gets its turn), fewer if input runs out.
 */
static int loop_drain_ready(struct loop *l)
{
	unsigned int budget = l->nio;

	for (unsigned int i = 0; i < budget && !l->quit; i++) {
		int r = loop_dispatch_one(l, 0);

		if (r == -EINTR)
			continue;	/* a signal is no sign that input ran out */
		if (r <= 0)
			return r;
	}
	return 0;
}

static int loop_next_timeout(const struct loop *l, uint64_t now)
{
	uint64_t best = UINT64_MAX;

	for (const struct loop_timer *t = l->timers; t; t = t->next)
		if (t->deadline_ms < best)
			best = t->deadline_ms;
	if (best == UINT64_MAX)
		return -1;
	if (best <= now)
		return 0;
	return best - now > 60000 ? 60000 : (int)(best - now);
}

int loop_run(struct loop *l)
{
	while (!l->quit) {
		uint64_t drained_at = loop_now_ms();
		int r = loop_drain_ready(l);

		if (r < 0)
			return r;
		/* a bounded number per turn, so timers cannot starve I/O */
		for (int i = 0; i < 64 && !l->quit; i++) {
			uint64_t t0 = loop_now_ms();

			if (!loop_fire_one_timer(l, drained_at))
				break;
			if (loop_now_ms() - t0 > LOOP_STALL_MS)
				break;	/* it stalled: read input first */
		}
		if (l->quit)
			break;
		r = loop_dispatch_one(l, loop_next_timeout(l, loop_now_ms()));
		if (r < 0 && r != -EINTR)
			return r;
	}
	l->quit = false;	/* a later loop_run() runs again */
	return l->code;
}

void loop_quit(struct loop *l, int code)
{
	l->quit = true;
	l->code = code;
}
