/* SPDX-License-Identifier: GPL-2.0 */
/*
 * qemu_fixture.h - start a real, paused QEMU for unit tests (header-only:
 * tests/unit/Makefile builds each test_*.c alone, so the helpers are
 * static and included by each test that needs them).
 *
 * A fixture VM is `qemu-system-x86_64 -S -nodefaults -display none` plus the
 * test's memory arguments and a QMP socket in a private temp dir.  It never
 * runs guest code, so a memfd backing costs only what the test writes.
 *
 * Cleanup in every path: the child sets PR_SET_PDEATHSIG(SIGKILL) (dies
 * with the test process, even on a crash), qemu_vm_stop() kills and reaps
 * it, and an atexit handler stops whatever is still running.  The same
 * atexit handler restores a sysfs setting changed with
 * fixture_sysfs_set().
 */
#ifndef VDF_QEMU_FIXTURE_H
#define VDF_QEMU_FIXTURE_H

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "qmp.h"

#define FIXTURE_QEMU "qemu-system-x86_64"

struct qemu_vm {
	pid_t pid;
	char dir[64];
	char qmp_path[128];
	struct qmp *qmp;
};

static struct qemu_vm *fixture_live_vm;
static char fixture_sysfs_path[256];
static char fixture_sysfs_old[64];
static __attribute__((unused)) bool fixture_atexit_done;

static __attribute__((unused)) void qemu_vm_stop(struct qemu_vm *vm)
{
	char path[256];

	if (!vm)
		return;
	if (vm->qmp) {
		qmp_close(vm->qmp);
		vm->qmp = NULL;
	}
	if (vm->pid > 0) {
		kill(vm->pid, SIGKILL);
		while (waitpid(vm->pid, NULL, 0) < 0 && errno == EINTR)
			;
		vm->pid = 0;
	}
	if (vm->dir[0]) {
		unlink(vm->qmp_path);
		snprintf(path, sizeof(path), "%s/stderr", vm->dir);
		unlink(path);
		rmdir(vm->dir);
		vm->dir[0] = '\0';
	}
	if (fixture_live_vm == vm)
		fixture_live_vm = NULL;
}

/* Restores the sysfs value saved by fixture_sysfs_set(), if any. */
static __attribute__((unused)) int fixture_sysfs_restore(void)
{
	int fd, r = 0;

	if (!fixture_sysfs_path[0])
		return 0;
	fd = open(fixture_sysfs_path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (write(fd, fixture_sysfs_old, strlen(fixture_sysfs_old)) < 0)
		r = -errno;
	close(fd);
	if (r == 0)
		fixture_sysfs_path[0] = '\0';
	return r;
}

static __attribute__((unused)) void fixture_atexit(void)
{
	if (fixture_live_vm)
		qemu_vm_stop(fixture_live_vm);
	fixture_sysfs_restore();
}

static __attribute__((unused)) void fixture_register_atexit(void)
{
	if (!fixture_atexit_done) {
		atexit(fixture_atexit);
		fixture_atexit_done = true;
	}
}

/*
 * Writes `word` to a "[a] b c" style sysfs file, remembering the old
 * selection (restored by fixture_sysfs_restore() or at exit).  Only one
 * setting can be held at a time.
 */
static __attribute__((unused)) int fixture_sysfs_set(const char *path, const char *word)
{
	char buf[256], *open_b, *close_b;
	ssize_t n;
	int fd, r = 0;

	if (fixture_sysfs_path[0])
		return -EBUSY;
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	if (n <= 0) {
		close(fd);
		return n < 0 ? -errno : -EIO;
	}
	buf[n] = '\0';
	open_b = strchr(buf, '[');
	close_b = open_b ? strchr(open_b, ']') : NULL;
	if (!close_b || (size_t)(close_b - open_b) >= sizeof(fixture_sysfs_old)) {
		close(fd);
		return -EPROTO;
	}
	memcpy(fixture_sysfs_old, open_b + 1, close_b - open_b - 1);
	fixture_sysfs_old[close_b - open_b - 1] = '\0';
	snprintf(fixture_sysfs_path, sizeof(fixture_sysfs_path), "%s", path);
	fixture_register_atexit();
	if (pwrite(fd, word, strlen(word), 0) < 0)
		r = -errno;
	close(fd);
	if (r < 0)
		fixture_sysfs_path[0] = '\0';
	return r;
}

static __attribute__((unused)) bool fixture_have_qemu(void)
{
	return system("command -v " FIXTURE_QEMU " >/dev/null 2>&1") == 0;
}

static __attribute__((unused)) void fixture_print_stderr(const struct qemu_vm *vm)
{
	char path[256], buf[2048];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/stderr", vm->dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n > 0) {
		buf[n] = '\0';
		fprintf(stderr, "# qemu stderr: %s\n", buf);
	}
}

/*
 * Starts QEMU with the fixed arguments plus extra (NULL-terminated, e.g.
 * the -machine/-object/-m options) and connects QMP.  Returns 0 or a
 * negative errno; on failure nothing is left running.
 */
static __attribute__((unused)) int qemu_vm_start(struct qemu_vm *vm, const char *const *extra)
{
	const char *argv[64];
	char qmparg[200], errpath[256];
	size_t n = 0;
	struct timespec ts = { 0, 20 * 1000 * 1000 };
	pid_t parent = getpid();
	int r = -ETIMEDOUT;

	memset(vm, 0, sizeof(*vm));
	if (fixture_live_vm)
		return -EBUSY;	/* one QEMU at a time */
	snprintf(vm->dir, sizeof(vm->dir), "/tmp/vdf-unit-XXXXXX");
	if (!mkdtemp(vm->dir)) {
		vm->dir[0] = '\0';
		return -errno;
	}
	snprintf(vm->qmp_path, sizeof(vm->qmp_path), "%s/qmp.sock", vm->dir);
	snprintf(qmparg, sizeof(qmparg), "unix:%s,server=on,wait=off", vm->qmp_path);
	snprintf(errpath, sizeof(errpath), "%s/stderr", vm->dir);

	argv[n++] = FIXTURE_QEMU;
	argv[n++] = "-S";
	argv[n++] = "-nodefaults";
	argv[n++] = "-display";
	argv[n++] = "none";
	argv[n++] = "-qmp";
	argv[n++] = qmparg;
	for (size_t i = 0; extra && extra[i] && n < 62; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;

	fixture_register_atexit();
	vm->pid = fork();
	if (vm->pid < 0) {
		r = -errno;
		vm->pid = 0;
		qemu_vm_stop(vm);
		return r;
	}
	if (vm->pid == 0) {
		int efd;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		efd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (efd >= 0) {
			dup2(efd, 1);
			dup2(efd, 2);
		}
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	fixture_live_vm = vm;

	/* the socket appears once QEMU parsed its options: poll for it */
	for (int i = 0; i < 500; i++) {
		int status;

		if (waitpid(vm->pid, &status, WNOHANG) == vm->pid) {
			vm->pid = 0;
			r = -ECHILD;
			break;
		}
		r = qmp_connect(vm->qmp_path, 5000, &vm->qmp);
		if (r == 0)
			return 0;
		if (r != -ENOENT && r != -ECONNREFUSED)
			break;
		nanosleep(&ts, NULL);
	}
	fixture_print_stderr(vm);
	qemu_vm_stop(vm);
	return r;
}

/*
 * Reads one 64-bit word of guest-physical memory through QEMU ("xp"),
 * failing the running cmocka test if QEMU does not answer.
 */
static inline uint64_t qemu_read_gpa(struct qmp *q, uint64_t gpa)
{
	char cmd[64], *out = NULL, *p;
	uint64_t v;

	snprintf(cmd, sizeof(cmd), "xp /1xg 0x%" PRIx64, gpa);
	assert_int_equal(qmp_hmp(q, cmd, 5000, &out), 0);
	p = strstr(out, ": 0x");
	assert_non_null(p);
	v = strtoull(p + 4, NULL, 16);
	free(out);
	return v;
}

#endif /* VDF_QEMU_FIXTURE_H */
