/* SPDX-License-Identifier: GPL-2.0 */
#ifndef AGENT_LOG_H
#define AGENT_LOG_H

#include <errno.h>

enum agent_log_level {
	AGENT_LOG_ERR,
	AGENT_LOG_WARN,
	AGENT_LOG_INFO,
	AGENT_LOG_DEBUG,
};

/* Messages above this level are dropped (INFO by default, DEBUG with -v). */
extern enum agent_log_level agent_log_max;

void agent_log(enum agent_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Log with strerror(-err) appended and return err (negative errno). */
int agent_log_errno(enum agent_log_level level, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define log_err(...)	agent_log(AGENT_LOG_ERR, __VA_ARGS__)
#define log_warn(...)	agent_log(AGENT_LOG_WARN, __VA_ARGS__)
#define log_info(...)	agent_log(AGENT_LOG_INFO, __VA_ARGS__)
#define log_debug(...)	agent_log(AGENT_LOG_DEBUG, __VA_ARGS__)

#endif /* AGENT_LOG_H */
