// SPDX-License-Identifier: GPL-2.0
/*
 * test_log.c - how lib/log.c frames a line on stderr: the program's name
 * and a word on a terminal or in a file, or the sd-daemon priority prefix
 * alone when stderr is the journal's stream (JOURNAL_STREAM names fd 2 by
 * device and inode).  stderr is pointed at a temporary file for each case
 * and read back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"

/* Runs fn with stderr on a temporary file; returns what it wrote. */
static char *capture_stderr(void (*fn)(const char *journal_env), bool journal,
			    bool journal_other_file)
{
	char path[] = "/tmp/vdf-log-XXXXXX", other[] = "/tmp/vdf-log-XXXXXX";
	static char out[4096];
	char env[64];
	int fd = mkstemp(path), ofd = mkstemp(other), saved = dup(2);
	struct stat st;
	ssize_t n;

	assert_true(fd >= 0 && ofd >= 0 && saved >= 0);
	assert_int_equal(fstat(journal_other_file ? ofd : fd, &st), 0);
	snprintf(env, sizeof(env), "%llu:%llu", (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino);
	fflush(stderr);
	assert_true(dup2(fd, 2) == 2);
	fn(journal ? env : NULL);
	fflush(stderr);
	assert_true(dup2(saved, 2) == 2);
	close(saved);
	n = pread(fd, out, sizeof(out) - 1, 0);
	assert_true(n >= 0);
	out[n] = '\0';
	close(fd);
	close(ofd);
	unlink(path);
	unlink(other);
	return out;
}

static void emit_all(const char *journal_env)
{
	if (journal_env)
		setenv("JOURNAL_STREAM", journal_env, 1);
	else
		unsetenv("JOURNAL_STREAM");
	log_setup("vmdefragd");
	log_set_max_level(LOG_DEBUG);
	log_error("cannot bind %s", "/run/x.sock");
	log_warning("VM '%s': slow, ignoring", "a");
	log_notice("reloaded");
	log_info("listening");
	log_debug("detail %d", 3);
	log_set_max_level(LOG_INFO);
	unsetenv("JOURNAL_STREAM");
	log_setup("vmdefragd");
}

static void test_log_terminal_style(void **state)
{
	const char *out = capture_stderr(emit_all, false, false);

	assert_string_equal(out,
		"vmdefragd: cannot bind /run/x.sock\n"
		"vmdefragd: warning: VM 'a': slow, ignoring\n"
		"vmdefragd: reloaded\n"
		"vmdefragd: listening\n"
		"vmdefragd: debug: detail 3\n");
}

static void test_log_journal_priorities(void **state)
{
	const char *out = capture_stderr(emit_all, true, false);

	assert_string_equal(out,
		"<3>cannot bind /run/x.sock\n"
		"<4>VM 'a': slow, ignoring\n"
		"<5>reloaded\n"
		"<6>listening\n"
		"<7>detail 3\n");
}

/* JOURNAL_STREAM inherited, but stderr redirected elsewhere: no prefixes. */
static void test_log_journal_other_stream(void **state)
{
	const char *out = capture_stderr(emit_all, true, true);

	assert_string_equal(out,
		"vmdefragd: cannot bind /run/x.sock\n"
		"vmdefragd: warning: VM 'a': slow, ignoring\n"
		"vmdefragd: reloaded\n"
		"vmdefragd: listening\n"
		"vmdefragd: debug: detail 3\n");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_log_terminal_style),
		cmocka_unit_test(test_log_journal_priorities),
		cmocka_unit_test(test_log_journal_other_stream),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
