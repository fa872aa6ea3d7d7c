/* SPDX-License-Identifier: GPL-2.0 */
/*
 * A holder: the process a guest workload leaves running to keep what it
 * made alive (fragment's survivors, memcheck's pattern), found again
 * through a pid file.  The parent forks it into a session of its own,
 * waits for its one report on a pipe (the holder writes it once its work
 * is done, then closes the pipe), records its pid and exits; a later
 * invocation reads the pid file to signal or end it.  Static inline: the
 * guest workloads are single-file static programs.
 */
#ifndef VDF_TEST_HOLDER_H
#define VDF_TEST_HOLDER_H

#include <errno.h>
#include <stdio.h>
#include <sys/types.h>
#include <unistd.h>

/*
 * Forks the holder, which runs hold(arg, done_fd) and must not return;
 * waits for its report of exactly len bytes into msg.  0 with the pid in
 * *ret_pid; -EPIPE if the holder ended or reported short (*ret_pid set:
 * it may still run); another negative errno if pipe or fork failed.
 */
static inline int holder_spawn(void (*hold)(void *arg, int done_fd), void *arg,
			       void *msg, size_t len, pid_t *ret_pid)
{
	int done[2], ok;
	pid_t pid;

	if (pipe(done) < 0)
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		close(done[0]);
		setsid();
		hold(arg, done[1]);
		_exit(2);
	}
	close(done[1]);
	ok = read(done[0], msg, len) == (ssize_t)len;
	close(done[0]);
	*ret_pid = pid;
	return ok ? 0 : -EPIPE;
}

/* Writes pid to path.  0, or negative errno. */
static inline int holder_write_pid(const char *path, pid_t pid)
{
	FILE *f = fopen(path, "w");

	if (!f)
		return -errno;
	fprintf(f, "%ld\n", (long)pid);
	fclose(f);
	return 0;
}

/* The pid in path, or 0 if there is none (no file, not a pid above 1). */
static inline pid_t holder_read_pid(const char *path)
{
	FILE *f = fopen(path, "r");
	long pid = 0;

	if (!f)
		return 0;
	if (fscanf(f, "%ld", &pid) != 1 || pid <= 1)
		pid = 0;
	fclose(f);
	return (pid_t)pid;
}

#endif /* VDF_TEST_HOLDER_H */
