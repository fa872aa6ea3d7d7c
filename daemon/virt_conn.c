// SPDX-License-Identifier: GPL-2.0
/*
 * virt_conn.c - the connection to libvirtd and its event thread.
 *
 * Two threads touch libvirt:
 *
 *   event thread   runs virEventRunDefaultImpl() forever.  libvirt needs
 *                  it for keepalive, for noticing that libvirtd went away
 *                  and for delivering domain events.  Its callbacks here
 *                  (close callback, lifecycle event) only copy what they
 *                  got into a fixed-size message and write it to a pipe;
 *                  they never call back into libvirt beyond the local
 *                  virDomainGetName() and never touch the daemon's state.
 *   loop thread    everything else: opening and closing the connection,
 *                  the hooks, every libvirt call the hooks make.  It reads
 *                  the pipe as one more loop source.
 *
 * A message is at most PIPE_BUF bytes, so a write is atomic.  The pipe's
 * write end is non-blocking: when it is full the message is dropped and
 * `overflow` is set, and the loop thread asks its user to resynchronise
 * (re-list every domain) instead of trusting a partial event stream.
 *
 * Connection states (loop thread only):
 *
 *   closed --virConnectOpen ok--> open --close callback (EOF, keepalive,
 *   error)--> closed, retry timer armed (backoff reconnect_min_ms doubling
 *   to reconnect_max_ms); a failed open re-arms the timer.
 *
 * A close message names the connection it was for; one for a connection
 * already replaced is ignored.
 *
 * libvirt's default error handler prints to stderr; it is replaced by a
 * silent one (errors are fetched with virGetLastError() where they
 * matter, and logged by whoever handles them).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <libvirt/virterror.h>

#include "log.h"
#include "loop.h"
#include "virt_conn.h"

enum virt_conn_msg_kind {
	VIRT_CONN_MSG_CLOSED,
	VIRT_CONN_MSG_DOMAIN,
};

struct virt_conn_msg {
	enum virt_conn_msg_kind kind;
	int event, detail, reason;
	const void *conn;		/* CLOSED: which connection */
	char name[VIRT_CONN_NAME_MAX];	/* DOMAIN: its name */
};

_Static_assert(sizeof(struct virt_conn_msg) <= PIPE_BUF,
	       "a message must be written atomically");

struct virt_conn {
	struct loop *loop;
	char *uri;
	uint32_t retry_min_ms, retry_max_ms, backoff_ms;
	const struct virt_conn_hooks *hooks;
	void *userdata;

	/* loop thread only */
	virConnectPtr conn;		/* NULL while closed */
	int lifecycle_id;		/* event callback id, -1 if none */
	int iteration_id;		/* migration-iteration callback id, or -1 */
	int device_ids[3];		/* device added/removed/resized ids, or -1 */
	bool close_cb;			/* close callback registered */
	bool logged_failure;		/* "cannot connect" said once per streak */
	struct loop_timer retry;
	struct loop_io io;

	/* written by the event thread, read by the loop thread */
	int pipe_rd, pipe_wr;
	atomic_bool overflow;
};

/* The event thread, shared by every virt_conn (libvirt has one impl). */
static pthread_t virt_conn_thread;
static atomic_bool virt_conn_thread_stop;
static bool virt_conn_thread_running;

static void virt_conn_silent(void *userdata, virErrorPtr err)
{
}

static void *virt_conn_thread_main(void *arg)
{
	while (!atomic_load(&virt_conn_thread_stop))
		if (virEventRunDefaultImpl() < 0)
			usleep(100000);	/* cannot happen; do not spin */
	return NULL;
}

static void virt_conn_thread_wake(int timer, void *opaque)
{
	virEventRemoveTimeout(timer);
}

static int virt_conn_thread_start(void)
{
	int r;

	if (virt_conn_thread_running)
		return 0;
	if (virInitialize() < 0 || virEventRegisterDefaultImpl() < 0)
		return -EIO;
	virSetErrorFunc(NULL, virt_conn_silent);
	atomic_store(&virt_conn_thread_stop, false);
	r = pthread_create(&virt_conn_thread, NULL, virt_conn_thread_main, NULL);
	if (r)
		return -r;
	virt_conn_thread_running = true;
	return 0;
}

static void virt_conn_thread_stop_join(void)
{
	if (!virt_conn_thread_running)
		return;
	atomic_store(&virt_conn_thread_stop, true);
	/* a timer firing at once makes virEventRunDefaultImpl() return */
	if (virEventAddTimeout(0, virt_conn_thread_wake, NULL, NULL) < 0)
		log_warning("libvirt: cannot wake the event thread, ignoring");
	pthread_join(virt_conn_thread, NULL);
	virt_conn_thread_running = false;
}

int virt_conn_last_errno(void)
{
	virErrorPtr e = virGetLastError();

	if (!e)
		return -EIO;
	switch (e->code) {
	case VIR_ERR_NO_DOMAIN:
		return -ENOENT;
	case VIR_ERR_OPERATION_INVALID:
		return -ESRCH;		/* e.g. the domain is not running */
	case VIR_ERR_NO_CONNECT:
	case VIR_ERR_INVALID_CONN:
	case VIR_ERR_SYSTEM_ERROR:
	case VIR_ERR_RPC:
		return -ECONNRESET;
	case VIR_ERR_AUTH_FAILED:
	case VIR_ERR_AUTH_CANCELLED:
	case VIR_ERR_ACCESS_DENIED:
		return -EACCES;
	case VIR_ERR_OPERATION_TIMEOUT:
		return -ETIMEDOUT;
	case VIR_ERR_NO_SUPPORT:
		return -EOPNOTSUPP;
	default:
		return -EIO;
	}
}

const char *virt_conn_last_error(void)
{
	virErrorPtr e = virGetLastError();

	return e && e->message ? e->message : "unknown libvirt error";
}

/* ---- event thread side ------------------------------------------------ */

static void virt_conn_post(struct virt_conn *c, const struct virt_conn_msg *m)
{
	ssize_t n;

	do {
		n = write(c->pipe_wr, m, sizeof(*m));
	} while (n < 0 && errno == EINTR);
	if (n != (ssize_t)sizeof(*m))
		atomic_store(&c->overflow, true);
}

static void virt_conn_close_cb(virConnectPtr conn, int reason, void *opaque)
{
	struct virt_conn_msg m = {
		.kind = VIRT_CONN_MSG_CLOSED, .reason = reason, .conn = conn,
	};

	virt_conn_post(opaque, &m);
}

static int virt_conn_lifecycle_cb(virConnectPtr conn, virDomainPtr dom,
				  int event, int detail, void *opaque)
{
	struct virt_conn_msg m = {
		.kind = VIRT_CONN_MSG_DOMAIN, .event = event, .detail = detail,
	};
	const char *name = virDomainGetName(dom);

	if (!name || strlen(name) >= sizeof(m.name)) {
		/* a name we could not carry: have the loop re-list instead */
		atomic_store(&((struct virt_conn *)opaque)->overflow, true);
		return 0;
	}
	strcpy(m.name, name);
	virt_conn_post(opaque, &m);
	return 0;
}

/*
 * A migration pass of an outgoing migration: the only event libvirt sends
 * at the start of a precopy (the source's lifecycle events come at the
 * switch-over), delivered as the pseudo event VIRT_CONN_EVENT_MIGRATING.
 */
static int virt_conn_iteration_cb(virConnectPtr conn, virDomainPtr dom,
				  int iteration, void *opaque)
{
	return virt_conn_lifecycle_cb(conn, dom, VIRT_CONN_EVENT_MIGRATING,
				      iteration, opaque);
}

/* A device of the domain came or went: its RAM may have changed. */
static int virt_conn_device_cb(virConnectPtr conn, virDomainPtr dom,
			       const char *alias, void *opaque)
{
	return virt_conn_lifecycle_cb(conn, dom, VIRT_CONN_EVENT_DEVICE, 0, opaque);
}

/* A virtio-mem device resized. */
static int virt_conn_memsize_cb(virConnectPtr conn, virDomainPtr dom,
				const char *alias, unsigned long long size,
				void *opaque)
{
	return virt_conn_lifecycle_cb(conn, dom, VIRT_CONN_EVENT_DEVICE, 0, opaque);
}

/* ---- loop thread side ------------------------------------------------- */

static void virt_conn_schedule_retry(struct virt_conn *c)
{
	c->backoff_ms = loop_backoff_next(c->backoff_ms, c->retry_min_ms,
					  c->retry_max_ms);
	loop_timer_arm(c->loop, &c->retry, c->backoff_ms);
}

/* Closes the connection after telling the user it is gone. */
static void virt_conn_close(struct virt_conn *c)
{
	virConnectPtr conn = c->conn;

	if (!conn)
		return;
	if (c->hooks->disconnected)
		c->hooks->disconnected(c->userdata);
	if (c->lifecycle_id >= 0)
		(void)virConnectDomainEventDeregisterAny(conn, c->lifecycle_id);
	c->lifecycle_id = -1;
	if (c->iteration_id >= 0)
		(void)virConnectDomainEventDeregisterAny(conn, c->iteration_id);
	c->iteration_id = -1;
	for (size_t i = 0; i < 3; i++) {
		if (c->device_ids[i] >= 0)
			(void)virConnectDomainEventDeregisterAny(conn, c->device_ids[i]);
		c->device_ids[i] = -1;
	}
	if (c->close_cb)
		(void)virConnectUnregisterCloseCallback(conn, virt_conn_close_cb);
	c->close_cb = false;
	c->conn = NULL;
	virConnectClose(conn);
}

static int virt_conn_open(struct virt_conn *c)
{
	virConnectPtr conn;
	int r;

	conn = virConnectOpen(c->uri);
	if (!conn)
		return virt_conn_last_errno();
	/* libvirtd gone without a FIN (stopped, hung): noticed in ~20 s */
	if (virConnectSetKeepAlive(conn, 5, 3) < 0)
		log_debug("libvirt: no keepalive on %s: %s, ignoring", c->uri,
			  virt_conn_last_error());
	c->conn = conn;
	if (virConnectRegisterCloseCallback(conn, virt_conn_close_cb, c, NULL) < 0) {
		r = virt_conn_last_errno();
		goto out_close;
	}
	c->close_cb = true;
	c->lifecycle_id = virConnectDomainEventRegisterAny(conn, NULL,
				VIR_DOMAIN_EVENT_ID_LIFECYCLE,
				VIR_DOMAIN_EVENT_CALLBACK(virt_conn_lifecycle_cb),
				c, NULL);
	if (c->lifecycle_id < 0) {
		r = virt_conn_last_errno();
		goto out_close;
	}
	/* without it an outgoing precopy is only seen at its switch-over */
	c->iteration_id = virConnectDomainEventRegisterAny(conn, NULL,
				VIR_DOMAIN_EVENT_ID_MIGRATION_ITERATION,
				VIR_DOMAIN_EVENT_CALLBACK(virt_conn_iteration_cb),
				c, NULL);
	if (c->iteration_id < 0)
		log_debug("libvirt: no migration-iteration events on %s: %s",
			  c->uri, virt_conn_last_error());
	/* memory hot-plug: the VM rediscovers its RAM layout */
	c->device_ids[0] = virConnectDomainEventRegisterAny(conn, NULL,
				VIR_DOMAIN_EVENT_ID_DEVICE_ADDED,
				VIR_DOMAIN_EVENT_CALLBACK(virt_conn_device_cb), c, NULL);
	c->device_ids[1] = virConnectDomainEventRegisterAny(conn, NULL,
				VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
				VIR_DOMAIN_EVENT_CALLBACK(virt_conn_device_cb), c, NULL);
	c->device_ids[2] = virConnectDomainEventRegisterAny(conn, NULL,
				VIR_DOMAIN_EVENT_ID_MEMORY_DEVICE_SIZE_CHANGE,
				VIR_DOMAIN_EVENT_CALLBACK(virt_conn_memsize_cb), c, NULL);
	for (size_t i = 0; i < 3; i++)
		if (c->device_ids[i] < 0)
			log_debug("libvirt: no device event %zu on %s: %s", i, c->uri,
				  virt_conn_last_error());
	return 0;

out_close:
	if (c->close_cb)
		(void)virConnectUnregisterCloseCallback(conn, virt_conn_close_cb);
	c->close_cb = false;
	c->lifecycle_id = -1;
	c->conn = NULL;
	virConnectClose(conn);
	return r;
}

void virt_conn_start(struct virt_conn *c)
{
	int r;

	if (c->conn)
		return;
	loop_timer_disarm(c->loop, &c->retry);
	r = virt_conn_open(c);
	if (r < 0) {
		virt_conn_schedule_retry(c);
		if (!c->logged_failure)
			log_warning("libvirt: cannot connect to %s: %s; retrying",
				    c->uri, virt_conn_last_error());
		else
			log_debug("libvirt: cannot connect to %s: %s; retry in %u ms",
				  c->uri, virt_conn_last_error(), c->backoff_ms);
		c->logged_failure = true;
		return;
	}
	log_info("libvirt: connected to %s", c->uri);
	c->logged_failure = false;
	c->backoff_ms = 0;
	atomic_store(&c->overflow, false);
	if (c->hooks->connected)
		c->hooks->connected(c->userdata, c->conn);
}

static void virt_conn_retry_timer(struct loop_timer *t)
{
	virt_conn_start(t->userdata);
}

static const char *virt_conn_reason_name(int reason)
{
	switch (reason) {
	case VIR_CONNECT_CLOSE_REASON_ERROR: return "I/O error";
	case VIR_CONNECT_CLOSE_REASON_EOF: return "libvirtd closed it";
	case VIR_CONNECT_CLOSE_REASON_KEEPALIVE: return "keepalive timed out";
	case VIR_CONNECT_CLOSE_REASON_CLIENT: return "closed by us";
	default: return "unknown reason";
	}
}

static void virt_conn_handle(struct virt_conn *c, const struct virt_conn_msg *m)
{
	switch (m->kind) {
	case VIRT_CONN_MSG_CLOSED:
		if (!c->conn || m->conn != (const void *)c->conn)
			return;		/* an older connection */
		log_warning("libvirt: connection to %s lost (%s); reconnecting",
			    c->uri, virt_conn_reason_name(m->reason));
		virt_conn_close(c);
		c->backoff_ms = 0;
		virt_conn_schedule_retry(c);
		return;
	case VIRT_CONN_MSG_DOMAIN:
		if (c->conn && c->hooks->domain_event)
			c->hooks->domain_event(c->userdata, m->name, m->event,
					       m->detail);
		return;
	}
}

static void virt_conn_io(struct loop_io *io, uint32_t events)
{
	struct virt_conn *c = io->userdata;
	struct virt_conn_msg m;

	/* a bounded batch per turn; the rest stays readable */
	for (int i = 0; i < 64; i++) {
		ssize_t n = read(c->pipe_rd, &m, sizeof(m));

		if (n != (ssize_t)sizeof(m))
			break;	/* EAGAIN; writes are atomic, no partial message */
		m.name[sizeof(m.name) - 1] = '\0';
		virt_conn_handle(c, &m);
	}
	if (atomic_exchange(&c->overflow, false) && c->conn) {
		log_warning("libvirt: domain events were lost; re-listing domains");
		if (c->hooks->resync)
			c->hooks->resync(c->userdata);
	}
}

virConnectPtr virt_conn_get(const struct virt_conn *c)
{
	return c->conn;
}

const char *virt_conn_uri(const struct virt_conn *c)
{
	return c->uri;
}

int virt_conn_new(struct loop *loop, const char *uri, uint32_t retry_min_ms,
		  uint32_t retry_max_ms, const struct virt_conn_hooks *hooks,
		  void *userdata, struct virt_conn **ret_conn)
{
	struct virt_conn *c;
	int fds[2], r;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->uri = strdup(uri && *uri ? uri : VIRT_CONN_DEFAULT_URI);
	if (!c->uri) {
		r = -ENOMEM;
		goto out_free;
	}
	if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) {
		r = -errno;
		goto out_free;
	}
	c->pipe_rd = fds[0];
	c->pipe_wr = fds[1];
	c->loop = loop;
	c->retry_min_ms = retry_min_ms ? retry_min_ms : 1;
	c->retry_max_ms = retry_max_ms > c->retry_min_ms ? retry_max_ms : c->retry_min_ms;
	c->hooks = hooks;
	c->userdata = userdata;
	c->lifecycle_id = -1;
	c->iteration_id = -1;
	for (size_t i = 0; i < 3; i++)
		c->device_ids[i] = -1;
	atomic_init(&c->overflow, false);
	loop_timer_init(&c->retry, virt_conn_retry_timer, c);
	loop_io_init(&c->io, virt_conn_io, c);
	r = loop_io_add(loop, &c->io, c->pipe_rd, EPOLLIN);
	if (r < 0)
		goto out_close;
	r = virt_conn_thread_start();
	if (r < 0) {
		loop_io_remove(loop, &c->io);
		goto out_close;
	}
	*ret_conn = c;
	return 0;

out_close:
	close(c->pipe_rd);
	close(c->pipe_wr);
out_free:
	free(c->uri);
	free(c);
	return r;
}

void virt_conn_free(struct virt_conn *c)
{
	if (!c)
		return;
	loop_timer_disarm(c->loop, &c->retry);
	virt_conn_close(c);
	/* no callback can run once the thread is gone */
	virt_conn_thread_stop_join();
	loop_io_remove(c->loop, &c->io);
	close(c->pipe_rd);
	close(c->pipe_wr);
	free(c->uri);
	free(c);
}
