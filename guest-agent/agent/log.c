/* SPDX-License-Identifier: GPL-2.0 */
/*
 * log.c - the agent's logging: one line per event on stderr.
 *
 * Under systemd stderr goes to the journal, so each line starts with a
 * sd-daemon priority prefix ("<3>" error .. "<7>" debug) that journald turns
 * into the entry's priority; on a terminal or a plain file the prefix is
 * replaced by a readable level word.  No timestamps: the journal (or the
 * test harness) adds them.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

enum agent_log_level agent_log_max = AGENT_LOG_INFO;

static const struct {
	const char *prefix;
	const char *word;
} agent_log_names[] = {
	[AGENT_LOG_ERR]   = { "<3>", "error: " },
	[AGENT_LOG_WARN]  = { "<4>", "warning: " },
	[AGENT_LOG_INFO]  = { "<6>", "" },
	[AGENT_LOG_DEBUG] = { "<7>", "debug: " },
};

static void agent_log_v(enum agent_log_level level, int err, const char *fmt,
			va_list ap)
{
	static int journal = -1;
	char line[1024];
	int n;

	if (level > agent_log_max)
		return;
	if (journal < 0)
		journal = getenv("JOURNAL_STREAM") != NULL;

	n = vsnprintf(line, sizeof(line), fmt, ap);
	if (n < 0)
		return;
	if (err && (size_t)n < sizeof(line))
		snprintf(line + n, sizeof(line) - n, ": %s", strerror(-err));
	fprintf(stderr, "%svmdefrag-agent: %s%s\n",
		journal ? agent_log_names[level].prefix : "",
		journal ? "" : agent_log_names[level].word, line);
}

void agent_log(enum agent_log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	agent_log_v(level, 0, fmt, ap);
	va_end(ap);
}

int agent_log_errno(enum agent_log_level level, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	agent_log_v(level, err, fmt, ap);
	va_end(ap);
	return err;
}
