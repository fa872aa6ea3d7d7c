// SPDX-License-Identifier: GPL-2.0
/*
 * ctl_client.c - the transport of vmdefragctl: one request, one answer.
 *
 * A call connects to the daemon's unix socket, writes the request line
 * (ctl_proto_format_request()), reads until the first newline, and parses
 * that line as the response object.  Each step has its failure and its
 * exit status:
 *   connect  ENOENT/ECONNREFUSED/ENOTDIR: the daemon is not running (3);
 *            EACCES/EPERM: permission (4); EAGAIN: the listener's backlog
 *            stayed full for the timeout (SO_SNDTIMEO bounds connect()),
 *            which is a timeout (7);
 *   send     EPIPE/ECONNRESET are not final: a daemon that refuses us
 *            writes why and closes without reading, so its answer may be
 *            waiting in our receive queue;
 *   read     poll() bounds the wait for the answer (timeout: 7); more
 *            than CTL_RESPONSE_MAX bytes, or a close before a newline,
 *            fails;
 *   parse    a line that is not {"ok": ...} fails; {"ok": false} maps its
 *            error code to the exit status (ctl_proto_exit_code()) and
 *            prints its message.
 * The timeout is one value for connect and answer, counted from the
 * start of the call: --timeout, or the command's default
 * (CTL_CLIENT_TIMEOUT_MS; longer for scan, shorter for notify).
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "cleanup.h"
#include "clock.h"
#include "ctl_client.h"
#include "ctl_exit.h"

static int ctl_client_timeout_ms = CTL_CLIENT_TIMEOUT_MS;

void ctl_client_set_timeout_ms(int timeout_ms)
{
	ctl_client_timeout_ms = timeout_ms;
}

int ctl_client_get_timeout_ms(void)
{
	return ctl_client_timeout_ms;
}

/* "2 s", "1.5 s": a timeout in the words of --timeout. */
const char *ctl_client_seconds(int ms, char *buf, size_t bufsz)
{
	snprintf(buf, bufsz, "%g s", ms / 1000.0);
	return buf;
}

/* Sends line, reads one response line into *ret (malloc'ed). */
static int ctl_client_transact(const char *path, const char *line, char **ret)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { ctl_client_timeout_ms / 1000,
			      (ctl_client_timeout_ms % 1000) * 1000 };
	_cleanup_free_ char *buf = NULL;
	_cleanup_close_ int fd = -1;
	uint64_t deadline = clock_now_ms() + (uint64_t)ctl_client_timeout_ms;
	size_t len = 0, cap = 0;
	int e, send_errno = 0;
	char secs[32];

	if (strlen(path) >= sizeof(sa.sun_path))
		return ctl_exit_fail(CTL_EXIT_USAGE, "socket path '%s' is too long", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return ctl_exit_fail(CTL_EXIT_FAILED, "socket: %s", strerror(errno));
	strcpy(sa.sun_path, path);
	/* a unix connect() blocks while the listener's backlog is full */
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		e = errno;
		if (e == EAGAIN || e == EINPROGRESS)
			return ctl_exit_fail(CTL_EXIT_TIMEOUT, "vmdefragd did not accept "
					     "the connection in %s (--timeout)",
					     ctl_client_seconds(ctl_client_timeout_ms,
								secs, sizeof(secs)));
		if (e == ENOENT || e == ECONNREFUSED || e == ENOTDIR)
			return ctl_exit_fail(CTL_EXIT_NO_DAEMON, "vmdefragd is not "
					     "running (%s: %s)", path, strerror(e));
		if (e == EACCES || e == EPERM)
			return ctl_exit_fail(CTL_EXIT_PERMISSION, "permission denied "
					     "on %s (need root or the daemon's "
					     "socket group)", path);
		return ctl_exit_fail(CTL_EXIT_FAILED, "cannot connect to %s: %s",
				     path, strerror(e));
	}
	/*
	 * A daemon that refuses us (permission) writes why and closes without
	 * reading our request, so the send may fail with EPIPE while that
	 * answer waits in our receive queue: read it before giving up.
	 */
	if (send(fd, line, strlen(line), MSG_NOSIGNAL) != (ssize_t)strlen(line)) {
		send_errno = errno;
		if (send_errno != EPIPE && send_errno != ECONNRESET)
			return ctl_exit_fail(CTL_EXIT_FAILED, "cannot send to "
					     "vmdefragd: %s", strerror(send_errno));
	}
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		uint64_t now = clock_now_ms();
		ssize_t n;

		if (len + 4096 > cap) {
			char *nb;

			cap = cap ? cap * 2 : 65536;
			if (cap > CTL_RESPONSE_MAX + 4096)
				return ctl_exit_fail(CTL_EXIT_FAILED, "response from "
						     "vmdefragd too long");
			nb = realloc(buf, cap);
			if (!nb)
				return ctl_exit_fail(CTL_EXIT_FAILED, "out of memory");
			buf = nb;
		}
		if (now >= deadline ||
		    poll(&p, 1, (int)(deadline - now)) == 0)
			return ctl_exit_fail(CTL_EXIT_TIMEOUT, "vmdefragd did not "
					     "answer in %s (--timeout)",
					     ctl_client_seconds(ctl_client_timeout_ms,
								secs, sizeof(secs)));
		n = recv(fd, buf + len, cap - len - 1, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (send_errno)
				return ctl_exit_fail(CTL_EXIT_FAILED, "cannot send to "
						     "vmdefragd: %s",
						     strerror(send_errno));
			return ctl_exit_fail(CTL_EXIT_FAILED, "vmdefragd closed the "
					     "connection without an answer");
		}
		len += (size_t)n;
		buf[len] = '\0';
		if (memchr(buf, '\n', len))
			break;
	}
	*strchr(buf, '\n') = '\0';
	*ret = TAKE_PTR(buf);
	return 0;
}

int ctl_client_call(const char *path, const struct ctl_request *req,
		    struct json_object **ret_resp, char **ret_text)
{
	_cleanup_(ctl_client_json_putp) struct json_object *resp = NULL;
	_cleanup_free_ char *line = NULL, *answer = NULL;
	struct json_object *v;
	int r;

	if (ctl_proto_format_request(req, &line) < 0)
		return ctl_exit_fail(CTL_EXIT_FAILED, "out of memory");
	r = ctl_client_transact(path, line, &answer);
	if (r)
		return r;
	resp = json_tokener_parse(answer);
	if (!resp || !json_object_is_type(resp, json_type_object) ||
	    !json_object_object_get_ex(resp, "ok", &v))
		return ctl_exit_fail(CTL_EXIT_FAILED, "vmdefragd sent an answer "
				     "that is not a response object");
	if (!json_object_get_boolean(v)) {
		const char *code = ctl_client_str(resp, "error");

		return ctl_exit_fail_as(ctl_proto_exit_code(code), code, NULL, NULL,
					"%s", ctl_client_str(resp, "message") ?:
					"failed");
	}
	*ret_resp = TAKE_PTR(resp);
	if (ret_text)
		*ret_text = TAKE_PTR(answer);
	return 0;
}

struct json_object *ctl_client_get(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? v : NULL;
}

bool ctl_client_has(struct json_object *o, const char *key)
{
	return ctl_client_get(o, key) != NULL;
}

uint64_t ctl_client_u64(struct json_object *o, const char *key)
{
	struct json_object *v = ctl_client_get(o, key);

	return v ? json_object_get_uint64(v) : 0;
}

const char *ctl_client_str(struct json_object *o, const char *key)
{
	struct json_object *v = ctl_client_get(o, key);

	return v ? json_object_get_string(v) : NULL;
}
