/* SPDX-License-Identifier: GPL-2.0 */
/*
 * loop.h - the daemon's one event loop: epoll for file descriptors plus
 * one-shot timers (prefix loop_).
 *
 * Sources and timers are structs the owner embeds in its own state; the
 * loop never allocates them.  Callbacks run on the loop's thread; a
 * callback may add, remove or free any source or timer, its own included.
 */
#ifndef VDF_LOOP_H
#define VDF_LOOP_H

#include <stdbool.h>
#include <stdint.h>

struct loop;
struct loop_io;
struct loop_timer;

typedef void (*loop_io_fn)(struct loop_io *io, uint32_t events);
typedef void (*loop_timer_fn)(struct loop_timer *t);

struct loop_io {
	int fd;			/* -1 while not added */
	uint32_t events;	/* EPOLLIN / EPOLLOUT as registered */
	loop_io_fn fn;
	void *userdata;
};

struct loop_timer {
	uint64_t deadline_ms;	/* loop_now_ms() time it fires at */
	bool armed;
	loop_timer_fn fn;
	void *userdata;
	struct loop_timer *next;	/* armed list, owned by the loop */
};

int loop_new(struct loop **ret_loop);
void loop_free(struct loop *l);

/* CLOCK_MONOTONIC in milliseconds. */
uint64_t loop_now_ms(void);

void loop_io_init(struct loop_io *io, loop_io_fn fn, void *userdata);
int loop_io_add(struct loop *l, struct loop_io *io, int fd, uint32_t events);
int loop_io_modify(struct loop *l, struct loop_io *io, uint32_t events);
/* Removes io from the loop (no-op if not added); does not close the fd. */
void loop_io_remove(struct loop *l, struct loop_io *io);

void loop_timer_init(struct loop_timer *t, loop_timer_fn fn, void *userdata);
/* (Re)arms t to fire once, delay_ms from now. */
void loop_timer_arm(struct loop *l, struct loop_timer *t, uint64_t delay_ms);
void loop_timer_disarm(struct loop *l, struct loop_timer *t);

/*
 * The next delay of a retry backoff: min_ms first (cur_ms 0), then
 * doubling, never above max_ms.  Every reconnecting owner (QMP, guest
 * channel, libvirt) uses it so they back off alike.
 */
uint32_t loop_backoff_next(uint32_t cur_ms, uint32_t min_ms, uint32_t max_ms);

/*
 * Runs until loop_quit(); returns the code given to it.  May be called
 * again afterwards (a test steps the loop that way).
 */
int loop_run(struct loop *l);
void loop_quit(struct loop *l, int code);

#endif /* VDF_LOOP_H */
