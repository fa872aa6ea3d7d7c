// SPDX-License-Identifier: GPL-2.0
/*
 * ctl_exit.c - vmdefragctl's one-line errors.
 *
 * The CLI's contract with scripts is its exit status (listed in --help)
 * plus one line on stderr that says why; nothing else goes to stderr.
 * The daemon logs through log.c instead: this is the client's only error
 * path, shared by the transport (ctl_client.c), the commands and main().
 */
#include <stdarg.h>
#include <stdio.h>

#include "ctl_exit.h"

int ctl_exit_fail(int code, const char *fmt, ...)
{
	va_list ap;

	fputs("vmdefragctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return code;
}
