/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ctl_exit.h - how vmdefragctl fails (prefix ctl_exit_): one line on
 * stderr, "vmdefragctl: " first, and a distinct exit status (enum
 * ctl_exit, ctl_proto.h).  Every ctl_*.c module reports its errors this
 * way and hands the status up to main().
 */
#ifndef VDF_CTL_EXIT_H
#define VDF_CTL_EXIT_H

/* Prints the line; returns code, for `return ctl_exit_fail(...)`. */
int ctl_exit_fail(int code, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif /* VDF_CTL_EXIT_H */
