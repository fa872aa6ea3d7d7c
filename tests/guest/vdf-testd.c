// SPDX-License-Identifier: GPL-2.0
/*
 * vdf-testd: the test guest's init and its control channel to the harness.
 *
 * The harness boots a Debian kernel with a busybox initramfs whose /init
 * sets up the mounts and modules, then execs this program as PID 1.  It
 * opens the virtio-serial port named "org.vmdefrag.test.0" (found through
 * /sys/class/virtio-ports, since the test guest runs no udev) and serves one
 * command at a time:
 *
 *   host -> guest   "RUN <id> <timeout-s> <len>\n" followed by <len> bytes
 *                   of shell command, run as /bin/sh -c in a new process
 *                   group with stdout and stderr on one pipe
 *   guest -> host   "OUT <id> <len>\n" followed by <len> bytes of output
 *                   (truncated to OUTPUT_MAX), then "END <id> <status>\n";
 *                   status is the exit code, 128+signal, or 124 if the
 *                   command outlived its timeout and was killed
 *
 * On start it sends "READY vdf-testd 1\n".  A command is finished when its
 * main process exits; output its background children write later is not
 * waited for (they should redirect it), so "daemon &" returns at once.
 *
 * As PID 1 it reaps every orphan; the status of the running command's
 * process is recorded when reaped, whichever waitpid() call reaps it.
 */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PORT_NAME	"org.vmdefrag.test.0"
#define CMD_MAX		(64 * 1024)
#define OUTPUT_MAX	(8 * 1024 * 1024)

static pid_t cmd_pid;		/* running command, 0 when idle */
static int cmd_status = -1;	/* its wait status once reaped */

static void testd_reap(void)
{
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
		if (pid == cmd_pid)
			cmd_status = status;
}

static int testd_open_port(void)
{
	glob_t g;
	size_t i;
	int fd = -ENOENT;

	if (glob("/sys/class/virtio-ports/*/name", 0, NULL, &g) != 0)
		return -ENOENT;
	for (i = 0; i < g.gl_pathc && fd < 0; i++) {
		char name[128] = "", dev[256];
		FILE *f = fopen(g.gl_pathv[i], "r");

		if (!f)
			continue;
		if (fgets(name, sizeof(name), f))
			name[strcspn(name, "\n")] = '\0';
		fclose(f);
		if (strcmp(name, PORT_NAME) != 0)
			continue;
		/* .../virtio-ports/vportNpM/name -> /dev/vportNpM */
		snprintf(dev, sizeof(dev), "/dev/%.*s",
			 (int)(strrchr(g.gl_pathv[i], '/') -
			       strlen("/sys/class/virtio-ports/") - g.gl_pathv[i]),
			 g.gl_pathv[i] + strlen("/sys/class/virtio-ports/"));
		fd = open(dev, O_RDWR | O_CLOEXEC);
		if (fd < 0)
			fd = -errno;
	}
	globfree(&g);
	return fd;
}

/*
 * Moves exactly len bytes between buf and fd (read when rd, else write),
 * retrying on EINTR and EAGAIN; a read that meets end of file is -EPIPE.
 */
static int testd_xfer_all(int fd, char *p, size_t len, bool rd)
{
	while (len) {
		ssize_t n = rd ? read(fd, p, len) : write(fd, p, len);

		if (n == 0 && rd)
			return -EPIPE;
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -errno;
		}
		p += n;
		len -= n;
	}
	return 0;
}

static int testd_write_all(int fd, const void *buf, size_t len)
{
	return testd_xfer_all(fd, (char *)buf, len, false);
}

static int testd_read_all(int fd, void *buf, size_t len)
{
	return testd_xfer_all(fd, buf, len, true);
}

/* Reads one '\n'-terminated header line, byte by byte (commands are rare). */
static int testd_read_line(int fd, char *buf, size_t size)
{
	size_t n = 0;

	for (;;) {
		char c;
		int r = testd_read_all(fd, &c, 1);

		if (r < 0)
			return r;
		if (c == '\n')
			break;
		if (n + 1 >= size)
			return -EMSGSIZE;
		buf[n++] = c;
	}
	buf[n] = '\0';
	return 0;
}

static double testd_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * Runs @cmd, collecting its output into a malloc'ed buffer.  Returns the
 * shell-style status; *ret_out / *ret_len get the output.
 */
static int testd_run(const char *cmd, unsigned int timeout_s,
		     char **ret_out, size_t *ret_len)
{
	size_t len = 0, cap = 65536;
	char *out = malloc(cap);
	double deadline = testd_now() + timeout_s;
	int pipefd[2], timed_out = 0;

	if (!out || pipe2(pipefd, O_CLOEXEC) < 0) {
		free(out);
		return 127;
	}
	cmd_status = -1;
	cmd_pid = fork();
	if (cmd_pid == 0) {
		setpgid(0, 0);
		dup2(pipefd[1], 1);
		dup2(pipefd[1], 2);
		signal(SIGPIPE, SIG_DFL);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	close(pipefd[1]);
	fcntl(pipefd[0], F_SETFL, O_NONBLOCK);

	while (cmd_pid > 0) {
		struct pollfd p = { .fd = pipefd[0], .events = POLLIN };
		ssize_t n;

		testd_reap();
		if (cmd_status != -1)
			break;
		if (!timed_out && testd_now() > deadline) {
			kill(-cmd_pid, SIGKILL);
			timed_out = 1;
		}
		if (poll(&p, 1, 100) <= 0)
			continue;
		if (len + 4096 > cap && cap < OUTPUT_MAX + 4096) {
			char *bigger = realloc(out, cap * 2);

			if (bigger) {
				out = bigger;
				cap *= 2;
			}
		}
		n = read(pipefd[0], out + len,
			 len + 4096 <= cap ? 4096 : cap - len);
		if (n > 0 && len + n <= OUTPUT_MAX)
			len += n;
	}
	/* Drain what the exited command left in the pipe, without waiting. */
	for (;;) {
		ssize_t n;

		if (len + 4096 > cap)
			break;
		n = read(pipefd[0], out + len, 4096);
		if (n <= 0)
			break;
		len += n;
	}
	close(pipefd[0]);
	cmd_pid = 0;
	*ret_out = out;
	*ret_len = len;
	if (timed_out)
		return 124;
	if (WIFSIGNALED(cmd_status))
		return 128 + WTERMSIG(cmd_status);
	return WEXITSTATUS(cmd_status);
}

static int testd_serve(int fd)
{
	static const char ready[] = "READY vdf-testd 1\n";
	int r = testd_write_all(fd, ready, sizeof(ready) - 1);

	while (r == 0) {
		char line[128], hdr[64], *cmd, *out = NULL;
		unsigned long id, len;
		unsigned int timeout_s;
		size_t out_len = 0;
		int status;

		r = testd_read_line(fd, line, sizeof(line));
		if (r < 0)
			break;
		if (sscanf(line, "RUN %lu %u %lu", &id, &timeout_s, &len) != 3 ||
		    len > CMD_MAX) {
			fprintf(stderr, "vdf-testd: bad request \"%s\", ignoring\n",
				line);
			continue;
		}
		cmd = calloc(1, len + 1);
		if (!cmd)
			return -ENOMEM;
		r = testd_read_all(fd, cmd, len);
		if (r < 0) {
			free(cmd);
			break;
		}
		status = testd_run(cmd, timeout_s, &out, &out_len);
		free(cmd);
		snprintf(hdr, sizeof(hdr), "OUT %lu %zu\n", id, out_len);
		r = testd_write_all(fd, hdr, strlen(hdr));
		if (!r)
			r = testd_write_all(fd, out, out_len);
		free(out);
		snprintf(hdr, sizeof(hdr), "END %lu %d\n", id, status);
		if (!r)
			r = testd_write_all(fd, hdr, strlen(hdr));
	}
	return r;
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	for (;;) {
		int fd = testd_open_port();

		if (fd < 0) {
			testd_reap();
			sleep(1);
			continue;
		}
		/*
		 * A read error or EOF means the host side went away: reopen
		 * and announce again, so a reconnecting harness sees READY.
		 */
		testd_serve(fd);
		close(fd);
		testd_reap();
		usleep(200 * 1000);
	}
}
