// SPDX-License-Identifier: GPL-2.0
/*
 * log.c - leveled logging for every vmdefrag program: the host daemon and
 * CLI, the guest agent, the tests.
 *
 * Model: one process-wide maximum level, one sink and one style for the
 * three programs.  Every message is a plain-English sentence (no C
 * function names), formatted into a bounded stack buffer (LOG_LINE_MAX)
 * and handed to the sink.  The default sink writes one line to stderr:
 *
 *   on a terminal, a file or a pipe   "<ident>: <word><msg>", where <word>
 *                                      is "warning: " or "debug: ", and
 *                                      nothing for errors and information
 *                                      (the GNU convention: "vmdefragd:
 *                                      cannot bind ...");
 *   when stderr is the journal        "<N><msg>": the sd-daemon priority
 *                                      prefix ("<3>" error .. "<7>" debug)
 *                                      that journald turns into the entry's
 *                                      PRIORITY (so journalctl -p warning
 *                                      filters), the identifier being
 *                                      journald's own.
 *
 * "stderr is the journal" is decided once, in log_setup(): systemd sets
 * JOURNAL_STREAM to the device and inode of the stream it connected, and
 * fd 2 must still be that stream (a child whose stderr was redirected
 * elsewhere inherits the variable but not the stream).  A detached daemon
 * installs a syslog sink instead, which carries the level itself.
 * No timestamps: the journal, syslog or the test harness add them.  The
 * programs are single-threaded, so the globals need no lock; they are set
 * once at startup (or by a test that captures output); the level may
 * change later (vmdefragd on SIGHUP), from the same thread.
 *
 * The errno helpers implement the "log or return, and do both in one step"
 * rule: log_error_errno(r, ...) returns -abs(r) so the caller can return
 * it directly.  Quoting helpers exist because anything a guest (or QEMU)
 * says is untrusted text: it may contain control bytes, escape sequences or
 * be arbitrarily long.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

#define LOG_LINE_MAX 2048

static int log_max_level = LOG_INFO;
static log_sink_fn log_sink;
static void *log_sink_userdata;
static const char *log_ident = "vmdefrag";
static bool log_journal;

void log_set_max_level(int level)
{
	if (level < LOG_EMERG)
		level = LOG_EMERG;
	if (level > LOG_DEBUG)
		level = LOG_DEBUG;
	log_max_level = level;
}

int log_get_max_level(void)
{
	return log_max_level;
}

void log_set_sink(log_sink_fn fn, void *userdata)
{
	log_sink = fn;
	log_sink_userdata = userdata;
}

/* Is fd 2 the stream JOURNAL_STREAM ("DEV:INO") names? */
static bool log_stderr_is_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	int n = 0;

	if (!e || sscanf(e, "%llu:%llu%n", &dev, &ino, &n) != 2 || e[n])
		return false;
	if (fstat(STDERR_FILENO, &st) < 0)
		return false;
	return (unsigned long long)st.st_dev == dev &&
	       (unsigned long long)st.st_ino == ino;
}

void log_setup(const char *ident)
{
	log_ident = ident ? ident : "vmdefrag";
	log_journal = log_stderr_is_journal();
}

const char *log_get_ident(void)
{
	return log_ident;
}

bool log_to_journal(void)
{
	return log_journal;
}

static const char *const log_level_names[] = {
	[LOG_EMERG] = "emerg", [LOG_ALERT] = "alert", [LOG_CRIT] = "crit",
	[LOG_ERR] = "err", [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
	[LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

const char *log_level_name(int level)
{
	if (level < LOG_EMERG || level > LOG_DEBUG)
		return "?";
	return log_level_names[level];
}

int log_level_from_string(const char *s, int *ret_level)
{
	if (!s)
		return -EINVAL;
	for (int i = LOG_EMERG; i <= LOG_DEBUG; i++) {
		if (strcmp(s, log_level_names[i]) == 0) {
			*ret_level = i;
			return 0;
		}
	}
	if (s[0] >= '0' && s[0] <= '7' && s[1] == '\0') {
		*ret_level = s[0] - '0';
		return 0;
	}
	return -EINVAL;
}

/* The word before the message on a terminal or in a file. */
static const char *log_word(int level)
{
	if (level == LOG_WARNING)
		return "warning: ";
	if (level == LOG_DEBUG)
		return "debug: ";
	return "";
}

static void log_default_sink(int level, const char *msg, void *userdata)
{
	if (log_journal)
		fprintf(stderr, "<%d>%s\n", level, msg);
	else
		fprintf(stderr, "%s: %s%s\n", log_ident, log_word(level), msg);
}

int log_internal(int level, int error, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = log_internalv(level, error, fmt, ap);
	va_end(ap);
	return r;
}

int log_internalv(int level, int error, const char *fmt, va_list ap)
{
	char line[LOG_LINE_MAX];
	int saved_errno = errno;

	if (error < 0)
		error = -error;
	if (level > log_max_level)
		return -error;

	errno = error;
	vsnprintf(line, sizeof(line), fmt, ap);
	errno = saved_errno;

	if (log_sink)
		log_sink(level, line, log_sink_userdata);
	else
		log_default_sink(level, line, NULL);
	errno = saved_errno;
	return -error;
}

const char *log_quote(const void *s, size_t len, char *buf, size_t bufsz)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = s;
	/* room kept for the worst-case escape, "...", closing quote and NUL */
	size_t limit, o = 0;

	if (!buf || bufsz < LOG_QUOTE_MIN)
		return "";
	limit = bufsz - 5;
	buf[o++] = '"';
	for (size_t i = 0; i < len; i++) {
		unsigned char c = p[i];
		size_t need = (c == '"' || c == '\\') ? 2 :
			      (c < 0x20 || c >= 0x7f) ? 4 : 1;

		if (o + need > limit) {
			/* "..." replaces whatever did not fit */
			memcpy(buf + o, "...", 3);
			o += 3;
			break;
		}
		if (need == 2) {
			buf[o++] = '\\';
			buf[o++] = c;
		} else if (need == 4) {
			buf[o++] = '\\';
			buf[o++] = 'x';
			buf[o++] = hex[c >> 4];
			buf[o++] = hex[c & 15];
		} else {
			buf[o++] = c;
		}
	}
	buf[o++] = '"';
	buf[o] = '\0';
	return buf;
}

const char *log_quote_str(const char *s, char *buf, size_t bufsz)
{
	if (!s) {
		if (buf && bufsz >= LOG_QUOTE_MIN) {
			strcpy(buf, "(null)");
			return buf;
		}
		return "";
	}
	return log_quote(s, strlen(s), buf, bufsz);
}
