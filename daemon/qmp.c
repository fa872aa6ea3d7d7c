// SPDX-License-Identifier: GPL-2.0
/*
 * qmp.c - QEMU Machine Protocol client.
 *
 * QMP is line-oriented JSON over a stream socket: QEMU sends a greeting
 * ({"QMP": {...}}), the client answers {"execute": "qmp_capabilities"}, then
 * every command line gets exactly one reply line ({"return": ...} or
 * {"error": {"class", "desc"}}) echoing the command's "id", and
 * asynchronous {"event": ...} lines can arrive at any time, also between a
 * command and its reply.
 *
 * Connection states:
 *
 *	greeting -> negotiating -> ready -> broken
 *
 * "broken" is entered on any transport or framing error (EOF, line longer
 * than QMP_LINE_MAX, a line that is not a JSON object); every later call
 * then fails with the saved error, because after a framing error the
 * stream cannot be resynchronised safely.
 *
 * Input path: bytes are read into one buffer (bounded by QMP_LINE_MAX plus
 * one read chunk), split at '\n', and each line is dispatched: events go to
 * a bounded ring (oldest dropped and counted when full), the reply whose id
 * matches the command in flight is parked in q->reply, any other reply (a
 * late answer to a command that timed out) is discarded.  Nothing here
 * blocks except inside qmp_execute()/qmp_wait_event(), which poll() with a
 * deadline.
 *
 * Timeouts.  The daemon's loop waits for every command, so a hung QEMU
 * would stall every VM for the whole timeout of each command it is sent.
 * Commands therefore have a small timeout (QMP_DEFAULT_TIMEOUT_MS, qmp.h),
 * and once one has timed out, later commands on the same monitor fail at
 * once with -ETIMEDOUT (without being sent) until QEMU's answer to it has
 * been read: a hung QEMU costs the loop one timeout, not one per command.
 *
 * Custom transport (qmp_open_custom()): no socket, no framing.  The state
 * starts at ready; qmp_execute() formats the command object exactly as for
 * the socket (minus the id, which the transport's owner assigns), hands
 * its text to t->execute() and reads the reply text through the same
 * parser and the same return/error handling.  -ECONNRESET from the
 * transport breaks the qmp like EOF on a socket.  Input polling and events
 * do not exist there: qmp_process_input() is a no-op and waiting for an
 * event is -EOPNOTSUPP.
 *
 * QEMU is trusted more than a guest, but its text (error descriptions,
 * event names) is still quoted before it is logged.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "qmp.h"

#define QMP_READ_CHUNK	65536

enum qmp_state {
	QMP_STATE_GREETING,
	QMP_STATE_NEGOTIATING,
	QMP_STATE_READY,
	QMP_STATE_BROKEN,
};

struct qmp {
	int fd;				/* -1 on a custom transport */
	const struct qmp_transport *t;	/* NULL: the socket */
	void *tctx;
	enum qmp_state state;
	int broken_error;		/* negative errno once BROKEN */
	int version;

	char *buf;			/* unparsed input */
	size_t len, cap;

	struct json_object *events[QMP_EVENT_QUEUE_MAX];
	size_t ev_head, ev_count;
	uint64_t ev_dropped;

	uint64_t next_id;
	char waiting_id[32];		/* id of the command in flight, "" if none */
	char late_id[32];		/* a command that timed out, its reply
					 * not seen yet; "" if none */
	struct json_object *reply;	/* its reply once read, or the greeting */

	char last_error[512];

	/*
	 * Lent to one job on a worker thread (qmp_lend()): set and cleared on
	 * the owner's thread while no job runs, read by the borrower.
	 */
	bool lent;
};

/* The qmp this thread borrowed (qmp_borrow()), or NULL. */
static __thread struct qmp *qmp_borrowed;

/* Someone else holds q: its socket and state are not this thread's. */
static bool qmp_not_mine(const struct qmp *q)
{
	return q->lent && qmp_borrowed != q;
}

void qmp_lend(struct qmp *q, bool lent)
{
	q->lent = lent;
}

void qmp_borrow(struct qmp *q)
{
	qmp_borrowed = q;
}

/* Deadlines are signed, so "already past" is a negative remainder. */
static int64_t qmp_now_ms(void)
{
	return (int64_t)clock_now_ms();
}

static int qmp_remaining_ms(int64_t deadline)
{
	int64_t left = deadline - qmp_now_ms();

	if (left < 0)
		return 0;
	if (left > 1000000)
		return 1000000;
	return (int)left;
}

static int qmp_break(struct qmp *q, int error)
{
	if (q->state != QMP_STATE_BROKEN) {
		q->state = QMP_STATE_BROKEN;
		q->broken_error = error;
	}
	return q->broken_error;
}

int qmp_parse_line(const char *line, size_t len, struct json_object **ret_obj)
{
	struct json_tokener *tok;
	struct json_object *obj;
	size_t used;

	if (len > QMP_LINE_MAX)
		return -EMSGSIZE;
	while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == '\n'))
		len--;
	if (len == 0)
		return -EPROTO;
	/* a NUL inside the line would make json-c stop early */
	if (memchr(line, '\0', len))
		return -EPROTO;

	tok = json_tokener_new();
	if (!tok)
		return -ENOMEM;
	obj = json_tokener_parse_ex(tok, line, (int)len);
	used = tok->char_offset;
	if (!obj || json_tokener_get_error(tok) != json_tokener_success) {
		json_object_put(obj);
		json_tokener_free(tok);
		return -EPROTO;
	}
	json_tokener_free(tok);
	/* trailing garbage after the object (only blanks allowed) */
	for (size_t i = used; i < len; i++) {
		if (line[i] != ' ' && line[i] != '\t') {
			json_object_put(obj);
			return -EPROTO;
		}
	}
	if (!json_object_is_type(obj, json_type_object)) {
		json_object_put(obj);
		return -EPROTO;
	}
	*ret_obj = obj;
	return 0;
}

static void qmp_queue_event(struct qmp *q, struct json_object *ev)
{
	if (q->ev_count == QMP_EVENT_QUEUE_MAX) {
		json_object_put(q->events[q->ev_head]);
		q->ev_head = (q->ev_head + 1) % QMP_EVENT_QUEUE_MAX;
		q->ev_count--;
		q->ev_dropped++;
	}
	q->events[(q->ev_head + q->ev_count) % QMP_EVENT_QUEUE_MAX] = ev;
	q->ev_count++;
}

/* Takes ownership of obj. */
static int qmp_dispatch(struct qmp *q, struct json_object *obj)
{
	struct json_object *v, *id;

	if (json_object_object_get_ex(obj, "event", &v)) {
		if (!json_object_is_type(v, json_type_string)) {
			json_object_put(obj);
			return -EPROTO;
		}
		qmp_queue_event(q, obj);
		return 0;
	}
	if (json_object_object_get_ex(obj, "QMP", &v)) {
		if (q->state != QMP_STATE_GREETING || q->reply) {
			json_object_put(obj);
			return -EPROTO;
		}
		q->reply = obj;
		return 0;
	}
	if (json_object_object_get_ex(obj, "return", &v) ||
	    json_object_object_get_ex(obj, "error", &v)) {
		const char *ids = NULL;

		if (json_object_object_get_ex(obj, "id", &id) &&
		    json_object_is_type(id, json_type_string))
			ids = json_object_get_string(id);
		if (q->waiting_id[0] && ids && strcmp(ids, q->waiting_id) == 0 &&
		    !q->reply) {
			q->reply = obj;
			return 0;
		}
		if (q->late_id[0] && ids && strcmp(ids, q->late_id) == 0)
			q->late_id[0] = '\0';	/* QEMU answers again */
		/* late reply to a command that timed out, or unsolicited */
		log_debug("discarding QMP reply without a matching id");
		json_object_put(obj);
		return 0;
	}
	json_object_put(obj);
	return -EPROTO;
}

/* Parses and dispatches every complete line in the buffer. */
static int qmp_drain_lines(struct qmp *q)
{
	size_t start = 0;
	int r = 0;

	/* stop at a parked reply: later lines may answer the next command */
	while (start < q->len && !q->reply) {
		char *nl = memchr(q->buf + start, '\n', q->len - start);
		struct json_object *obj;
		size_t llen;

		if (!nl)
			break;
		llen = nl - (q->buf + start);
		if (llen > QMP_LINE_MAX) {
			r = -EMSGSIZE;
			break;
		}
		/* blank lines are harmless */
		if (llen > 0 && !(llen == 1 && q->buf[start] == '\r')) {
			r = qmp_parse_line(q->buf + start, llen, &obj);
			if (r < 0)
				break;
			r = qmp_dispatch(q, obj);
			if (r < 0)
				break;
		}
		start += llen + 1;
	}
	if (start > 0) {
		memmove(q->buf, q->buf + start, q->len - start);
		q->len -= start;
	}
	if (r == 0 && q->len > QMP_LINE_MAX)
		r = -EMSGSIZE;
	if (r < 0)
		return qmp_break(q, r);
	return 0;
}

/* One non-blocking read; 0 if data was read or none available. */
static int qmp_read_some(struct qmp *q)
{
	ssize_t n;

	if (q->state == QMP_STATE_BROKEN)
		return q->broken_error;
	if (q->cap - q->len < QMP_READ_CHUNK) {
		size_t ncap = q->cap ? q->cap * 2 : 2 * QMP_READ_CHUNK;
		char *nbuf;

		if (ncap > QMP_LINE_MAX + 2 * QMP_READ_CHUNK)
			ncap = QMP_LINE_MAX + 2 * QMP_READ_CHUNK;
		if (ncap - q->len < QMP_READ_CHUNK)
			return qmp_break(q, -EMSGSIZE);
		nbuf = realloc(q->buf, ncap);
		if (!nbuf)
			return -ENOMEM;
		q->buf = nbuf;
		q->cap = ncap;
	}
	n = recv(q->fd, q->buf + q->len, QMP_READ_CHUNK, MSG_DONTWAIT);
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return 0;
		return qmp_break(q, -errno);
	}
	if (n == 0)
		return qmp_break(q, -ECONNRESET);
	q->len += n;
	return qmp_drain_lines(q);
}

int qmp_process_input(struct qmp *q)
{
	int r;

	if (qmp_not_mine(q))
		return 0;	/* the borrower reads it meanwhile */
	if (q->t)
		return q->state == QMP_STATE_BROKEN ? q->broken_error : 0;
	if (q->state == QMP_STATE_BROKEN)
		return q->broken_error;
	/* lines a command's read left behind its reply come first */
	r = qmp_drain_lines(q);
	if (r < 0)
		return r;
	/* read until the socket is empty, but stop after a bounded amount */
	for (int i = 0; i < 64; i++) {
		struct pollfd p = { .fd = q->fd, .events = POLLIN };

		r = poll(&p, 1, 0);
		if (r < 0)
			return errno == EINTR ? 0 : -errno;
		if (r == 0)
			return 0;
		r = qmp_read_some(q);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Waits until cond(q) or the deadline. */
static int qmp_wait(struct qmp *q, bool (*cond)(const struct qmp *),
		    int64_t deadline)
{
	for (;;) {
		struct pollfd p = { .fd = q->fd, .events = POLLIN };
		int r;

		if (cond(q))
			return 0;
		if (q->state == QMP_STATE_BROKEN)
			return q->broken_error;
		r = poll(&p, 1, qmp_remaining_ms(deadline));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -ETIMEDOUT;
		r = qmp_read_some(q);
		if (r < 0)
			return r;
	}
}

static bool qmp_have_reply(const struct qmp *q)
{
	return q->reply != NULL;
}

static bool qmp_have_event(const struct qmp *q)
{
	return q->ev_count > 0;
}

static int qmp_send_all(struct qmp *q, const char *data, size_t len,
			int64_t deadline)
{
	while (len > 0) {
		struct pollfd p = { .fd = q->fd, .events = POLLOUT };
		ssize_t n = send(q->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		int r;

		if (n > 0) {
			data += n;
			len -= n;
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return qmp_break(q, -errno);
		r = poll(&p, 1, qmp_remaining_ms(deadline));
		if (r == 0)
			return -ETIMEDOUT;
		if (r < 0 && errno != EINTR)
			return -errno;
	}
	return 0;
}

static void qmp_set_error(struct qmp *q, struct json_object *err)
{
	struct json_object *cls = NULL, *desc = NULL;

	json_object_object_get_ex(err, "class", &cls);
	json_object_object_get_ex(err, "desc", &desc);
	snprintf(q->last_error, sizeof(q->last_error), "%s: %s",
		 cls && json_object_is_type(cls, json_type_string) ?
			json_object_get_string(cls) : "GenericError",
		 desc && json_object_is_type(desc, json_type_string) ?
			json_object_get_string(desc) : "(no description)");
}

/* Takes the reply object; its "return" or "error" decides the result. */
static int qmp_take_reply(struct qmp *q, struct json_object *reply,
			  struct json_object **ret_return)
{
	struct json_object *v;
	int r;

	if (json_object_object_get_ex(reply, "error", &v)) {
		qmp_set_error(q, v);
		r = -EIO;
	} else if (json_object_object_get_ex(reply, "return", &v)) {
		if (ret_return)
			*ret_return = json_object_get(v);
		r = 0;
	} else {
		r = -EPROTO;
	}
	json_object_put(reply);
	return r;
}

static int qmp_execute_custom(struct qmp *q, struct json_object *cmd,
			      int timeout_ms, struct json_object **ret_return)
{
	struct json_object *reply;
	char *text = NULL;
	int r;

	r = q->t->execute(q->tctx, json_object_to_json_string_ext(cmd,
			  JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE),
			  timeout_ms, &text);
	if (r == -ECONNRESET)
		return qmp_break(q, r);
	if (r < 0)
		return r;
	r = text ? qmp_parse_line(text, strlen(text), &reply) : -EPROTO;
	free(text);
	if (r < 0)
		return r;
	return qmp_take_reply(q, reply, ret_return);
}

int qmp_execute(struct qmp *q, const char *command, struct json_object *args,
		int timeout_ms, struct json_object **ret_return)
{
	int64_t deadline = qmp_now_ms() + (timeout_ms < 0 ? QMP_DEFAULT_TIMEOUT_MS : timeout_ms);
	struct json_object *cmd, *reply;
	const char *text;
	size_t tlen;
	char *line;
	int r;

	if (!command || !*command)
		return -EINVAL;
	if (qmp_not_mine(q))
		return -EBUSY;		/* lent to a job */
	if (q->state == QMP_STATE_BROKEN)
		return q->broken_error;
	if (q->waiting_id[0])
		return -EBUSY;		/* not reentrant */
	q->last_error[0] = '\0';

	cmd = json_object_new_object();
	if (!cmd)
		return -ENOMEM;
	snprintf(q->waiting_id, sizeof(q->waiting_id), "vdf-%llu",
		 (unsigned long long)++q->next_id);
	json_object_object_add(cmd, "execute", json_object_new_string(command));
	if (args)
		json_object_object_add(cmd, "arguments", json_object_get(args));
	if (q->t) {
		r = qmp_execute_custom(q, cmd, timeout_ms < 0 ?
				       QMP_DEFAULT_TIMEOUT_MS : timeout_ms,
				       ret_return);
		goto out_put_cmd;
	}
	json_object_object_add(cmd, "id", json_object_new_string(q->waiting_id));
	/* QEMU still owes an answer from before: read, then do not wait again */
	if (q->late_id[0]) {
		r = qmp_process_input(q);
		if (r < 0)
			goto out_put_cmd;
		if (q->late_id[0]) {
			snprintf(q->last_error, sizeof(q->last_error), "QEMU has not "
				 "answered an earlier command yet");
			r = -ETIMEDOUT;
			goto out_put_cmd;
		}
	}
	text = json_object_to_json_string_ext(cmd, JSON_C_TO_STRING_PLAIN |
					      JSON_C_TO_STRING_NOSLASHESCAPE);
	tlen = strlen(text);
	line = malloc(tlen + 2);
	if (!line) {
		r = -ENOMEM;
		goto out_put_cmd;
	}
	memcpy(line, text, tlen);
	line[tlen] = '\n';
	r = qmp_send_all(q, line, tlen + 1, deadline);
	free(line);
	if (r < 0)
		goto out_put_cmd;

	/* events that were already buffered are dispatched first */
	r = qmp_drain_lines(q);
	if (r == 0)
		r = qmp_wait(q, qmp_have_reply, deadline);
	if (r == -ETIMEDOUT)
		memcpy(q->late_id, q->waiting_id, sizeof(q->late_id));
	if (r < 0)
		goto out_put_cmd;

	reply = q->reply;
	q->reply = NULL;
	r = qmp_take_reply(q, reply, ret_return);
out_put_cmd:
	q->waiting_id[0] = '\0';
	json_object_put(cmd);
	return r;
}

int qmp_hmp(struct qmp *q, const char *command_line, int timeout_ms,
	    char **ret_output)
{
	struct json_object *args, *ret = NULL;
	char *out;
	int r;

	args = json_object_new_object();
	if (!args)
		return -ENOMEM;
	json_object_object_add(args, "command-line",
			       json_object_new_string(command_line));
	r = qmp_execute(q, "human-monitor-command", args, timeout_ms, &ret);
	json_object_put(args);
	if (r < 0)
		return r;
	if (!json_object_is_type(ret, json_type_string)) {
		json_object_put(ret);
		return -EPROTO;
	}
	out = strdup(json_object_get_string(ret));
	json_object_put(ret);
	if (!out)
		return -ENOMEM;
	if (ret_output)
		*ret_output = out;
	else
		free(out);
	return 0;
}

const char *qmp_last_error(const struct qmp *q)
{
	return q->last_error;
}

/*
 * A VersionInfo object ({"qemu": {"major", "minor", "micro"}, "package"}),
 * from the greeting or query-version.  QEMU is trusted more than a guest,
 * but nothing of it is taken unchecked: missing or mistyped numbers count
 * 0 and are clamped to 0..99, a package that is not a string is "", and
 * only printable ASCII of it is kept.
 */
int qmp_parse_version(struct json_object *ret, struct qmp_version *ret_ver)
{
	static const char *const names[] = { "major", "minor", "micro" };
	struct qmp_version ver = { 0 };
	struct json_object *qemu, *v;
	int parts[3] = { 0, 0, 0 };

	if (!ret || !json_object_is_type(ret, json_type_object))
		return -EPROTO;
	if (json_object_object_get_ex(ret, "qemu", &qemu) &&
	    json_object_is_type(qemu, json_type_object)) {
		for (int i = 0; i < 3; i++) {
			if (json_object_object_get_ex(qemu, names[i], &v) &&
			    json_object_is_type(v, json_type_int)) {
				int64_t x = json_object_get_int64(v);

				parts[i] = x < 0 ? 0 : x > 99 ? 99 : (int)x;
			}
		}
	}
	ver.version = parts[0] * 10000 + parts[1] * 100 + parts[2];
	if (json_object_object_get_ex(ret, "package", &v) &&
	    json_object_is_type(v, json_type_string)) {
		const char *p = json_object_get_string(v);
		size_t n = 0, len = (size_t)json_object_get_string_len(v);

		for (size_t i = 0; i < len && n < sizeof(ver.package) - 1; i++)
			if (p[i] >= 0x20 && p[i] < 0x7f)
				ver.package[n++] = p[i];
		ver.package[n] = '\0';
	}
	ver.patched = strstr(ver.package, QMP_PATCHED_MARK) != NULL;
	*ret_ver = ver;
	return 0;
}

static int qmp_parse_greeting(struct qmp *q, struct json_object *greeting)
{
	struct json_object *qmpo, *ver;
	struct qmp_version v = { 0 };

	if (!json_object_object_get_ex(greeting, "QMP", &qmpo) ||
	    !json_object_is_type(qmpo, json_type_object))
		return -EPROTO;
	if (json_object_object_get_ex(qmpo, "version", &ver))
		(void)qmp_parse_version(ver, &v);
	q->version = v.version;
	return 0;
}

int qmp_query_version(struct qmp *q, int timeout_ms, struct qmp_version *ret_ver)
{
	struct json_object *ret;
	int r;

	r = qmp_execute(q, "query-version", NULL, timeout_ms, &ret);
	if (r < 0)
		return r;
	r = qmp_parse_version(ret, ret_ver);
	json_object_put(ret);
	return r;
}

int qmp_connect_fd(int fd, int timeout_ms, struct qmp **ret_qmp)
{
	int64_t deadline = qmp_now_ms() + (timeout_ms < 0 ? QMP_DEFAULT_TIMEOUT_MS : timeout_ms);
	struct qmp *q;
	int flags, r;

	q = calloc(1, sizeof(*q));
	if (!q) {
		close(fd);
		return -ENOMEM;
	}
	q->fd = fd;
	q->state = QMP_STATE_GREETING;
	flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
		r = -errno;
		goto out_close;
	}

	r = qmp_wait(q, qmp_have_reply, deadline);
	if (r < 0)
		goto out_close;
	r = qmp_parse_greeting(q, q->reply);
	json_object_put(q->reply);
	q->reply = NULL;
	if (r < 0)
		goto out_close;

	q->state = QMP_STATE_NEGOTIATING;
	r = qmp_execute(q, "qmp_capabilities", NULL,
			qmp_remaining_ms(deadline), NULL);
	if (r < 0)
		goto out_close;
	q->state = QMP_STATE_READY;
	*ret_qmp = q;
	return 0;

out_close:
	qmp_close(q);
	return r;
}

int qmp_open_custom(const struct qmp_transport *t, void *ctx,
		    struct qmp **ret_qmp)
{
	struct qmp *q;

	if (!t || !t->execute)
		return -EINVAL;
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->fd = -1;
	q->t = t;
	q->tctx = ctx;
	q->state = QMP_STATE_READY;
	*ret_qmp = q;
	return 0;
}

int qmp_connect(const char *path, int timeout_ms, struct qmp **ret_qmp)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (!path || strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int r = -errno;

		close(fd);
		return r;
	}
	return qmp_connect_fd(fd, timeout_ms, ret_qmp);
}

void qmp_close(struct qmp *q)
{
	if (!q)
		return;
	while (q->ev_count > 0) {
		json_object_put(q->events[q->ev_head]);
		q->ev_head = (q->ev_head + 1) % QMP_EVENT_QUEUE_MAX;
		q->ev_count--;
	}
	json_object_put(q->reply);
	if (q->fd >= 0)
		close(q->fd);
	if (q->t && q->t->close)
		q->t->close(q->tctx);
	free(q->buf);
	free(q);
}

int qmp_fd(const struct qmp *q)
{
	return q->fd;
}

int qmp_qemu_version(const struct qmp *q)
{
	return q->version;
}

int qmp_peer_pid(const struct qmp *q, pid_t *ret_pid)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (q->t)
		return -EOPNOTSUPP;
	if (getsockopt(q->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return -errno;
	if (cred.pid <= 0)
		return -ESRCH;
	*ret_pid = cred.pid;
	return 0;
}

int qmp_wait_event(struct qmp *q, int timeout_ms)
{
	int r;

	if (q->t)
		return -EOPNOTSUPP;
	r = qmp_drain_lines(q);
	if (r < 0)
		return r;
	return qmp_wait(q, qmp_have_event, qmp_now_ms() + timeout_ms);
}

int qmp_next_event(struct qmp *q, struct json_object **ret_event)
{
	if (qmp_not_mine(q))
		return -EAGAIN;
	if (q->ev_count == 0)
		return -EAGAIN;
	*ret_event = q->events[q->ev_head];
	q->ev_head = (q->ev_head + 1) % QMP_EVENT_QUEUE_MAX;
	q->ev_count--;
	return 0;
}

size_t qmp_events_queued(const struct qmp *q)
{
	return q->ev_count;
}

uint64_t qmp_events_dropped(const struct qmp *q)
{
	return q->ev_dropped;
}
