// SPDX-License-Identifier: GPL-2.0
/*
 * loop.c - epoll plus timers, the single thread every VM shares.
 *
 * Model: one iteration = fire every expired timer, then one epoll_wait()
 * for at most one ready file descriptor, bounded by the nearest timer, then
 * that descriptor's callback.  Taking one event per wait is deliberate:
 * sources are level-triggered, and epoll hands ready descriptors out
 * round-robin, so a guest flooding its channel gets one callback per turn
 * like everyone else; and since no batch of events is held across
 * callbacks, a callback may free any other source without leaving a
 * dangling pointer behind in a batch.  Callbacks that read must read a
 * bounded amount per call for that fairness to hold.
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
};

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

/* Fires one expired timer; false if none is. */
static bool loop_fire_one_timer(struct loop *l, uint64_t now)
{
	for (struct loop_timer *t = l->timers; t; t = t->next) {
		if (t->deadline_ms <= now) {
			loop_timer_disarm(l, t);
			t->fn(t);
			return true;
		}
	}
	return false;
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
		struct epoll_event ev;
		uint64_t now = loop_now_ms();
		int n;

		/* a bounded number per turn, so timers cannot starve I/O */
		for (int i = 0; i < 64 && !l->quit && loop_fire_one_timer(l, now); i++)
			;
		if (l->quit)
			break;
		n = epoll_wait(l->epfd, &ev, 1, loop_next_timeout(l, loop_now_ms()));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 1) {
			struct loop_io *io = ev.data.ptr;

			io->fn(io, ev.events);
		}
	}
	l->quit = false;	/* a later loop_run() runs again */
	return l->code;
}

void loop_quit(struct loop *l, int code)
{
	l->quit = true;
	l->code = code;
}
