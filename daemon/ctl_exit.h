/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ctl_exit.h - how vmdefragctl fails (prefix ctl_exit_): one line on
 * stderr, "vmdefragctl: " first, and a distinct exit status (enum
 * ctl_exit, ctl_proto.h).  With --json the same failure is also one JSON
 * object on stdout:
 *
 *	{"ok": false, "error": CODE, "message": "one line", "exit_code": N}
 *
 * CODE is the daemon's error code when the daemon refused the request
 * (ctl_proto.h's CTL_ERR_*), else the name of the exit status
 * (ctl_exit_name()).  Every ctl_*.c module reports its errors this way and
 * hands the status up to main().
 */
#ifndef VDF_CTL_EXIT_H
#define VDF_CTL_EXIT_H

#include <stdbool.h>

#include <json-c/json.h>

/* --json: failures also go to stdout as a JSON object. */
void ctl_exit_set_json(bool json);

/* "usage", "no-daemon", "timeout", ... for an exit status. */
const char *ctl_exit_name(int code);

/* Prints the line (and the object); returns code, for `return ctl_exit_fail(...)`. */
int ctl_exit_fail(int code, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * Same, with the error code the daemon gave (NULL: ctl_exit_name(code))
 * and, if detail_key, detail added to the JSON object under that key (a
 * reference is taken).
 */
int ctl_exit_fail_as(int code, const char *error, const char *detail_key,
		     struct json_object *detail, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

#endif /* VDF_CTL_EXIT_H */
