// SPDX-License-Identifier: GPL-2.0
/*
 * metrics_server.c - the metrics listener and the metrics textfile.
 *
 * The listener is the least HTTP a Prometheus scraper (or curl) needs,
 * served on the daemon's event loop: HTTP/1.0, one request per
 * connection, "GET /metrics" (a query string is ignored).  Each client is
 * a small state machine:
 *
 *   READING   collecting the request line and headers, up to the empty
 *             line; at most METRICS_SERVER_REQUEST_MAX bytes (more: 400)
 *   WRITING   the whole response is queued (outbuf); flushed on EPOLLOUT
 *   DRAINING  all sent and our side shut down; what the client still sends
 *             is read and dropped until it closes, then the connection is
 *             closed (closing with unread input would reset it and could
 *             lose the answer)
 *
 * A client that sends nothing for METRICS_SERVER_IDLE_MS, in either state,
 * is closed; more than METRICS_SERVER_MAX_CLIENTS at once are refused at
 * accept.  Answers: 200 with the metrics; 404 for another path; 405 for
 * another method; 400 for anything that is not an HTTP/1.x request line.
 * Only loopback TCP addresses or a unix socket are accepted by the config
 * (config_parse_listen()): the metrics name the VMs on this host.
 *
 * The textfile is node_exporter's textfile collector's input: every
 * metrics_textfile_interval_ms it is rendered and written to PATH.tmp,
 * then renamed over PATH, so the collector never reads half a file.  A
 * failing write is logged once per distinct errno.
 *
 * Single-threaded, on the loop's thread.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cleanup.h"
#include "file.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "metrics_server.h"
#include "outbuf.h"

struct metrics_client {
	struct metrics_server *srv;
	int fd;
	struct loop_io io;
	struct loop_timer idle;
	char in[METRICS_SERVER_REQUEST_MAX];
	size_t in_len;
	bool writing;			/* response queued, close when flushed */
	bool draining;			/* response sent: discard input to EOF */
	struct outbuf out;
	struct metrics_client *next;
};

struct metrics_server {
	struct loop *loop;
	metrics_server_render_fn render;
	void *userdata;

	int fd;				/* listener, -1 without */
	struct loop_io io;
	char unix_path[CONFIG_PATH_MAX];	/* "" unless a unix socket */
	struct metrics_client *clients;
	size_t nclients;

	char textfile[256];		/* "" without */
	uint32_t interval_ms;
	struct loop_timer tick;
	int last_text_error;
};

/* ---- HTTP clients ----------------------------------------------------- */

static void metrics_client_free(struct metrics_client *cl)
{
	struct metrics_server *s = cl->srv;

	for (struct metrics_client **p = &s->clients; *p; p = &(*p)->next)
		if (*p == cl) {
			*p = cl->next;
			break;
		}
	s->nclients--;
	loop_io_remove(s->loop, &cl->io);
	loop_timer_disarm(s->loop, &cl->idle);
	close(cl->fd);
	outbuf_free(&cl->out);
	free(cl);
}

static void metrics_client_idle(struct loop_timer *t)
{
	metrics_client_free(t->userdata);
}

/* Queues a whole response and switches to WRITING. */
static void metrics_client_respond(struct metrics_client *cl, const char *status,
				   const char *extra, const char *body, size_t len)
{
	char head[256];
	int n;

	n = snprintf(head, sizeof(head), "HTTP/1.0 %s\r\nContent-Type: %s\r\n"
		     "Content-Length: %zu\r\n%sConnection: close\r\n\r\n", status,
		     body && strncmp(status, "200", 3) == 0 ? METRICS_CONTENT_TYPE :
		     "text/plain; charset=utf-8", len, extra ? extra : "");
	cl->writing = true;
	if (outbuf_append(&cl->out, head, (size_t)n) < 0 ||
	    outbuf_append(&cl->out, body, len) < 0)
		outbuf_clear(&cl->out);		/* close without an answer */
	(void)loop_io_modify(cl->srv->loop, &cl->io, EPOLLOUT);
}

static void metrics_client_error(struct metrics_client *cl, const char *status,
				 const char *extra)
{
	char body[64];
	int n = snprintf(body, sizeof(body), "%s\n", status);

	metrics_client_respond(cl, status, extra, body, (size_t)n);
}

/* The request line and headers are in: answer. */
static void metrics_client_request(struct metrics_client *cl)
{
	char *line = cl->in, *eol = strpbrk(cl->in, "\r\n");
	char *method, *target, *version, *save = NULL;
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	int r;

	*eol = '\0';
	method = strtok_r(line, " ", &save);
	target = strtok_r(NULL, " ", &save);
	version = strtok_r(NULL, " ", &save);
	if (!method || !target || !version || strtok_r(NULL, " ", &save) ||
	    strncmp(version, "HTTP/1.", 7) != 0 || !version[7] || version[8])
		return metrics_client_error(cl, "400 Bad Request", NULL);
	if (strcmp(method, "GET") != 0)
		return metrics_client_error(cl, "405 Method Not Allowed",
					    "Allow: GET\r\n");
	if (strcmp(target, "/metrics") != 0 && strncmp(target, "/metrics?", 9) != 0)
		return metrics_client_error(cl, "404 Not Found", NULL);
	r = cl->srv->render(cl->srv->userdata, &text, &len);
	if (r < 0) {
		log_warning_errno(r, "metrics: cannot render: %m");
		return metrics_client_error(cl, "500 Internal Server Error", NULL);
	}
	metrics_client_respond(cl, "200 OK", NULL, text, len);
}

/* Has the header block ended (an empty line)? */
static bool metrics_client_complete(const struct metrics_client *cl)
{
	const char *p = cl->in, *end = cl->in + cl->in_len;

	for (; p < end; p++)
		if (*p == '\n' && ((p + 1 < end && p[1] == '\n') ||
				   (p + 2 < end && p[1] == '\r' && p[2] == '\n')))
			return true;
	return false;
}

static void metrics_client_io(struct loop_io *io, uint32_t events)
{
	struct metrics_client *cl = io->userdata;
	struct metrics_server *s = cl->srv;

	if (cl->draining) {
		char junk[4096];
		ssize_t n;

		while ((n = read(cl->fd, junk, sizeof(junk))) > 0)
			;
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			metrics_client_free(cl);
		return;
	}
	if (cl->writing) {
		if (outbuf_flush(&cl->out, cl->fd) < 0 || (events & (EPOLLERR | EPOLLHUP)))
			return metrics_client_free(cl);
		if (outbuf_pending(&cl->out))
			return;
		/*
		 * All sent: end our side and read what the client still
		 * sends until it closes (or the idle timer fires), so unread
		 * input does not turn the close into a reset that loses the
		 * answer on its way.
		 */
		shutdown(cl->fd, SHUT_WR);
		cl->draining = true;
		(void)loop_io_modify(s->loop, &cl->io, EPOLLIN);
		return;
	}
	for (;;) {
		ssize_t n = read(cl->fd, cl->in + cl->in_len,
				 sizeof(cl->in) - 1 - cl->in_len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0)
			return metrics_client_free(cl);
		if (memchr(cl->in + cl->in_len, '\0', (size_t)n)) {
			cl->in_len = 0;
			return metrics_client_error(cl, "400 Bad Request", NULL);
		}
		cl->in_len += (size_t)n;
		cl->in[cl->in_len] = '\0';
		loop_timer_arm(s->loop, &cl->idle, METRICS_SERVER_IDLE_MS);
		if (metrics_client_complete(cl))
			return metrics_client_request(cl);
		if (cl->in_len == sizeof(cl->in) - 1)
			return metrics_client_error(cl, "400 Bad Request", NULL);
	}
}

static void metrics_server_accept(struct loop_io *io, uint32_t events)
{
	struct metrics_server *s = io->userdata;
	struct metrics_client *cl;
	int fd;

	fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	if (s->nclients >= METRICS_SERVER_MAX_CLIENTS) {
		log_debug("metrics: more than %d clients, refusing one",
			  METRICS_SERVER_MAX_CLIENTS);
		close(fd);
		return;
	}
	cl = calloc(1, sizeof(*cl));
	if (!cl) {
		close(fd);
		return;
	}
	cl->srv = s;
	cl->fd = fd;
	(void)outbuf_init(&cl->out, METRICS_SERVER_OUT_MAX, 0);
	loop_io_init(&cl->io, metrics_client_io, cl);
	loop_timer_init(&cl->idle, metrics_client_idle, cl);
	if (loop_io_add(s->loop, &cl->io, fd, EPOLLIN) < 0) {
		close(fd);
		free(cl);
		return;
	}
	loop_timer_arm(s->loop, &cl->idle, METRICS_SERVER_IDLE_MS);
	cl->next = s->clients;
	s->clients = cl;
	s->nclients++;
}

/* ---- listener --------------------------------------------------------- */

/* Removes a stale unix socket at path; -EADDRINUSE if someone listens there. */
static int metrics_server_clear_stale(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	_cleanup_close_ int fd = -1;
	struct stat st;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	strcpy(sa.sun_path, path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
		return -EADDRINUSE;
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

static int metrics_server_listen(struct metrics_server *s, const struct config *cfg)
{
	const struct config_listen *l = &cfg->metrics_listen;
	struct sockaddr_storage ss = { 0 };
	socklen_t salen;
	int one = 1, r;

	if (l->kind == CONFIG_LISTEN_UNIX) {
		struct sockaddr_un *sa = (struct sockaddr_un *)&ss;
		mode_t old_umask;

		r = metrics_server_clear_stale(l->path);
		if (r < 0)
			return r;
		sa->sun_family = AF_UNIX;
		snprintf(sa->sun_path, sizeof(sa->sun_path), "%s", l->path);
		salen = sizeof(*sa);
		s->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (s->fd < 0)
			return -errno;
		old_umask = umask(0177);
		r = bind(s->fd, (struct sockaddr *)sa, salen) < 0 ? -errno : 0;
		umask(old_umask);
		if (r < 0)
			return r;
		snprintf(s->unix_path, sizeof(s->unix_path), "%s", l->path);
		if ((cfg->socket_group_set &&
		     chown(l->path, (uid_t)-1, cfg->socket_group) < 0) ||
		    chmod(l->path, cfg->socket_mode) < 0)
			return -errno;
	} else {
		if (l->family == AF_INET) {
			struct sockaddr_in *sa = (struct sockaddr_in *)&ss;

			sa->sin_family = AF_INET;
			sa->sin_port = htons(l->port);
			memcpy(&sa->sin_addr, l->addr, 4);
			salen = sizeof(*sa);
		} else {
			struct sockaddr_in6 *sa = (struct sockaddr_in6 *)&ss;

			sa->sin6_family = AF_INET6;
			sa->sin6_port = htons(l->port);
			memcpy(&sa->sin6_addr, l->addr, 16);
			salen = sizeof(*sa);
		}
		s->fd = socket(l->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (s->fd < 0)
			return -errno;
		(void)setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(s->fd, (struct sockaddr *)&ss, salen) < 0)
			return -errno;
	}
	if (listen(s->fd, 16) < 0)
		return -errno;
	return loop_io_add(s->loop, &s->io, s->fd, EPOLLIN);
}

/* ---- textfile --------------------------------------------------------- */

static void metrics_server_tick(struct loop_timer *t)
{
	struct metrics_server *s = t->userdata;
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	int r;

	r = s->render(s->userdata, &text, &len);
	if (r == 0)
		r = file_replace(s->textfile, text, len, 0644);
	if (r < 0 && r != s->last_text_error)
		log_warning_errno(r, "metrics: cannot write '%s': %m, retrying "
				  "every %u ms", s->textfile, s->interval_ms);
	else if (r == 0 && s->last_text_error)
		log_info("metrics: '%s' written again", s->textfile);
	s->last_text_error = r;
	loop_timer_arm(s->loop, &s->tick, s->interval_ms);
}

/* ---- lifetime --------------------------------------------------------- */

int metrics_server_new(struct loop *loop, const struct config *cfg,
		       metrics_server_render_fn render, void *userdata,
		       struct metrics_server **ret_s)
{
	struct metrics_server *s;
	int r;

	if (cfg->metrics_listen.kind == CONFIG_LISTEN_NONE && !cfg->metrics_textfile[0]) {
		*ret_s = NULL;
		return 0;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->loop = loop;
	s->render = render;
	s->userdata = userdata;
	s->fd = -1;
	s->interval_ms = cfg->metrics_textfile_interval_ms;
	loop_timer_init(&s->tick, metrics_server_tick, s);
	loop_io_init(&s->io, metrics_server_accept, s);
	if (cfg->metrics_listen.kind != CONFIG_LISTEN_NONE) {
		r = metrics_server_listen(s, cfg);
		if (r < 0) {
			metrics_server_free(s);
			return r;
		}
	}
	if (cfg->metrics_textfile[0]) {
		snprintf(s->textfile, sizeof(s->textfile), "%s", cfg->metrics_textfile);
		loop_timer_arm(loop, &s->tick, 0);
	}
	*ret_s = s;
	return 0;
}

void metrics_server_set_interval(struct metrics_server *s, uint32_t interval_ms)
{
	if (s)
		s->interval_ms = interval_ms;
}

void metrics_server_free(struct metrics_server *s)
{
	if (!s)
		return;
	while (s->clients)
		metrics_client_free(s->clients);
	loop_timer_disarm(s->loop, &s->tick);
	if (s->fd >= 0) {
		loop_io_remove(s->loop, &s->io);
		close(s->fd);
	}
	if (s->unix_path[0])
		unlink(s->unix_path);
	free(s);
}
