/* SPDX-License-Identifier: GPL-2.0 */
/*
 * cleanup.h - scope-bound cleanup for userspace C (prefix cleanup_), the
 * way systemd and crun do it: a variable declared
 *
 *	_cleanup_free_ char *buf = NULL;
 *	_cleanup_close_ int fd = -1;
 *
 * is freed or closed when it goes out of scope, on every return, so a
 * function with several exits needs no unwind labels.  To keep what it
 * holds (return it to the caller), take it out first: TAKE_PTR(buf) and
 * TAKE_FD(fd) return the value and leave NULL / -1 behind.
 *
 * Rules: initialise every such variable where it is declared (NULL, -1);
 * the helpers accept NULL and negative fds and preserve errno, so a
 * function can still read errno after an early return's cleanup ran.
 * Header-only, libc only; each user includes it itself.
 */
#ifndef VDF_CLEANUP_H
#define VDF_CLEANUP_H

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f)		__attribute__((cleanup(f)))
#define _cleanup_free_		_cleanup_(cleanup_freep)
#define _cleanup_close_		_cleanup_(cleanup_closep)
#define _cleanup_fclose_	_cleanup_(cleanup_fclosep)
#define _cleanup_closedir_	_cleanup_(cleanup_closedirp)

static inline void cleanup_freep(void *p)
{
	free(*(void **)p);
}

static inline void cleanup_closep(int *fd)
{
	int saved = errno;

	if (*fd >= 0)
		close(*fd);
	errno = saved;
}

static inline void cleanup_fclosep(FILE **f)
{
	int saved = errno;

	if (*f)
		fclose(*f);
	errno = saved;
}

static inline void cleanup_closedirp(DIR **d)
{
	int saved = errno;

	if (*d)
		closedir(*d);
	errno = saved;
}

/*
 * For a type with its own destructor: CLEANUP_DEFINE(foo_freep, struct foo *,
 * foo_free) defines foo_freep() for _cleanup_(foo_freep) struct foo *f = NULL;
 * it calls the destructor only on a non-NULL value.
 */
#define CLEANUP_DEFINE(name, type, func)			\
	static inline void name(type *p)			\
	{							\
		if (*p)						\
			func(*p);				\
	}

/* The pointer in variable p; p becomes NULL (its cleanup then does nothing). */
#define TAKE_PTR(p) ({						\
		__typeof__(p) *cleanup_pp_ = &(p);		\
		__typeof__(p) cleanup_p_ = *cleanup_pp_;	\
		*cleanup_pp_ = NULL;				\
		cleanup_p_;					\
	})

/* The fd in variable fd; fd becomes -1. */
#define TAKE_FD(fd) ({						\
		int *cleanup_fdp_ = &(fd);			\
		int cleanup_fd_ = *cleanup_fdp_;		\
		*cleanup_fdp_ = -1;				\
		cleanup_fd_;					\
	})

#endif /* VDF_CLEANUP_H */
