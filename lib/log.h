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
 * where %m expands to strerror(abs(error)).  Strings that come from a guest
 * (or any peer) must go through log_quote() before they reach a format.
 */
#ifndef VDF_LOG_H
#define VDF_LOG_H

#include <stddef.h>
#include <syslog.h>

/* A sink receives every message at or below the current level. */
typedef void (*log_sink_fn)(int level, const char *msg, void *userdata);

void log_set_max_level(int level);
int log_get_max_level(void);
/* NULL restores the default sink (stderr, in the style of log_set_style()). */
void log_set_sink(log_sink_fn fn, void *userdata);

/*
 * How messages are worded and how the default sink frames them:
 *   LOG_STYLE_FUNC    (the default) "<level>: <function>: <msg>": the
 *                     daemon, whose lines are read by whoever runs it
 *                     next to the code (foreground, tests; the syslog
 *                     sink gets "<function>: <msg>");
 *   LOG_STYLE_PROGRAM "<ident>: <word><msg>" where <word> is "error: ",
 *                     "warning: ", "debug: " or nothing for info; under
 *                     systemd (JOURNAL_STREAM set when this is called) the
 *                     word becomes a sd-daemon priority prefix, "<3>" error
 *                     .. "<7>" debug, which journald turns into the entry's
 *                     priority: the guest agent.
 * ident is kept by reference (a string literal or argv[0]).
 */
enum log_style {
	LOG_STYLE_FUNC,
	LOG_STYLE_PROGRAM,
};
void log_set_style(enum log_style style, const char *ident);
const char *log_level_name(int level);
/* Parses "err", "warning", "info", "debug" (or "3".."7"). */
int log_level_from_string(const char *s, int *ret_level);

/*
 * Logs the message (if level is enabled) and returns -abs(error), or 0 when
 * error is 0.  errno is set to abs(error) while formatting so %m works; the
 * caller's errno is preserved.
 */
int log_internal(int level, int error, const char *func, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#define log_full_errno(level, error, ...) \
	log_internal((level), (error), __func__, __VA_ARGS__)
#define log_error_errno(error, ...)   log_full_errno(LOG_ERR, (error), __VA_ARGS__)
#define log_warning_errno(error, ...) log_full_errno(LOG_WARNING, (error), __VA_ARGS__)
#define log_info_errno(error, ...)    log_full_errno(LOG_INFO, (error), __VA_ARGS__)
#define log_debug_errno(error, ...)   log_full_errno(LOG_DEBUG, (error), __VA_ARGS__)
#define log_error(...)   ((void)log_full_errno(LOG_ERR, 0, __VA_ARGS__))
#define log_warning(...) ((void)log_full_errno(LOG_WARNING, 0, __VA_ARGS__))
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
