/* SPDX-License-Identifier: GPL-2.0 */
/*
 * log.h - vmdefrag userspace logging (prefix log_), one API for the host
 * daemon, its CLI, the guest agent and the tests.
 *
 * Levels are syslog's (LOG_ERR .. LOG_DEBUG).  log_*_errno() log and return
 * -abs(error) in one step, so a caller can write
 *
 *	return log_error_errno(r, "cannot open %s: %m", path);
 *
 * where %m expands to strerror(abs(error)).  Messages are plain English
 * for an administrator: what happened to what, never a C function name.
 * Strings that come from a guest (or any peer) must go through
 * log_quote() before they reach a format.
 */
#ifndef VDF_LOG_H
#define VDF_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <syslog.h>

/* A sink receives every message at or below the current level. */
typedef void (*log_sink_fn)(int level, const char *msg, void *userdata);

void log_set_max_level(int level);
int log_get_max_level(void);
/* NULL restores the default sink (stderr, framed as log_setup() decided). */
void log_set_sink(log_sink_fn fn, void *userdata);

/*
 * Every program calls this first, with its name: the default sink then
 * writes "<ident>: <msg>" ("<ident>: warning: <msg>", "<ident>: debug:
 * <msg>") to stderr, or "<N><msg>" (sd-daemon priority prefix) when
 * stderr is the journal's stream (JOURNAL_STREAM names fd 2).  Call it
 * again after redirecting stderr.  ident is kept by reference (a string
 * literal).
 */
void log_setup(const char *ident);
const char *log_get_ident(void);
/* Did log_setup() find stderr connected to the journal? */
bool log_to_journal(void);
const char *log_level_name(int level);
/* Parses "err", "warning", "info", "debug" (or "3".."7"). */
int log_level_from_string(const char *s, int *ret_level);

/*
 * Logs the message (if level is enabled) and returns -abs(error), or 0 when
 * error is 0.  errno is set to abs(error) while formatting so %m works; the
 * caller's errno is preserved.
 */
int log_internal(int level, int error, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int log_internalv(int level, int error, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));

#define log_full_errno(level, error, ...) \
	log_internal((level), (error), __VA_ARGS__)
#define log_error_errno(error, ...)   log_full_errno(LOG_ERR, (error), __VA_ARGS__)
#define log_warning_errno(error, ...) log_full_errno(LOG_WARNING, (error), __VA_ARGS__)
#define log_info_errno(error, ...)    log_full_errno(LOG_INFO, (error), __VA_ARGS__)
#define log_debug_errno(error, ...)   log_full_errno(LOG_DEBUG, (error), __VA_ARGS__)
#define log_error(...)   ((void)log_full_errno(LOG_ERR, 0, __VA_ARGS__))
#define log_warning(...) ((void)log_full_errno(LOG_WARNING, 0, __VA_ARGS__))
#define log_notice(...)  ((void)log_full_errno(LOG_NOTICE, 0, __VA_ARGS__))
#define log_info(...)    ((void)log_full_errno(LOG_INFO, 0, __VA_ARGS__))
#define log_debug(...)   ((void)log_full_errno(LOG_DEBUG, 0, __VA_ARGS__))

/*
 * Quotes an untrusted byte string for logging: surrounds it with double
 * quotes, escapes '"', '\\' and every byte outside printable ASCII as \xNN,
 * and truncates with "..." so the result always fits in buf.  Returns buf.
 * bufsz must be at least LOG_QUOTE_MIN.
 */
#define LOG_QUOTE_MIN 8
const char *log_quote(const void *s, size_t len, char *buf, size_t bufsz);
/* Same for a NUL-terminated string (NULL prints as (null), unquoted). */
const char *log_quote_str(const char *s, char *buf, size_t bufsz);

#endif /* VDF_LOG_H */
