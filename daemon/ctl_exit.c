// SPDX-License-Identifier: GPL-2.0
/*
 * ctl_exit.c - vmdefragctl's one-line errors.
 *
 * The CLI's contract with scripts is its exit status (listed in --help)
 * plus one line on stderr that says why; nothing else goes to stderr.
 * The line goes through log.c like every other program's messages
 * ("vmdefragctl: MESSAGE", or with its priority prefix when stderr is the
 * journal).  With --json, a script reads stdout only, so the failure is
 * also written there as one JSON object (ctl_exit.h), the daemon's error
 * code passed through when it was the daemon that refused.  This is the
 * client's only error path, shared by the transport (ctl_client.c), the
 * commands and main().
 */
#include <stdarg.h>
#include <stdio.h>

#include "ctl_exit.h"
#include "ctl_proto.h"
#include "log.h"

static bool ctl_exit_json;

void ctl_exit_set_json(bool json)
{
	ctl_exit_json = json;
}

const char *ctl_exit_name(int code)
{
	switch (code) {
	case CTL_EXIT_OK:		return "ok";
	case CTL_EXIT_USAGE:		return "usage";
	case CTL_EXIT_NO_DAEMON:	return "no-daemon";
	case CTL_EXIT_PERMISSION:	return "permission";
	case CTL_EXIT_UNKNOWN_VM:	return "unknown-vm";
	case CTL_EXIT_NOT_READY:	return "not-ready";
	case CTL_EXIT_TIMEOUT:		return "timeout";
	default:			return "failed";
	}
}

static int ctl_exit_failv(int code, const char *error, const char *detail_key,
			  struct json_object *detail, const char *fmt, va_list ap)
{
	char msg[1024];
	struct json_object *o;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	log_error("%s", msg);
	if (!ctl_exit_json)
		return code;
	o = json_object_new_object();
	if (!o)
		return code;
	json_object_object_add(o, "schema", json_object_new_int(CTL_JSON_SCHEMA));
	json_object_object_add(o, "ok", json_object_new_boolean(0));
	if (!error)
		error = ctl_exit_name(code);
	json_object_object_add(o, "error", json_object_new_string(error));
	json_object_object_add(o, "message", json_object_new_string(msg));
	json_object_object_add(o, "exit_code", json_object_new_int(code));
	if (detail_key && detail)
		json_object_object_add(o, detail_key, json_object_get(detail));
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
						     JSON_C_TO_STRING_NOSLASHESCAPE));
	fflush(stdout);
	json_object_put(o);
	return code;
}

int ctl_exit_fail(int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	code = ctl_exit_failv(code, NULL, NULL, NULL, fmt, ap);
	va_end(ap);
	return code;
}

int ctl_exit_fail_as(int code, const char *error, const char *detail_key,
		     struct json_object *detail, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	code = ctl_exit_failv(code, error, detail_key, detail, fmt, ap);
	va_end(ap);
	return code;
}
