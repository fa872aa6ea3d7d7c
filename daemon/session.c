// SPDX-License-Identifier: GPL-2.0
/*
 * session.c - a VM's guest session: connection, HELLO, request queue,
 * validation of everything the guest says, drop and reconnect.
 *
 * States (enum session_state):
 *
 *   DOWN   --connect ok-->  HELLO  --guest HELLO, versions agree-->  READY
 *     ^                       |                                        |
 *     +--- backoff timer <----+------- EOF, error or violation --------+
 *
 * The daemon connects to the channel's unix socket (QEMU is the server),
 * sends its HELLO at once and sends nothing else until the guest's HELLO
 * arrives; a guest may restate its HELLO at any time (the agent does when
 * its module appears), and each one is validated again.  A guest with no
 * agent running simply never answers: the session waits in HELLO without
 * a timeout, as there is nothing to recover.
 *
 * Trust.  Every byte from the guest is hostile.  The stream decoder bounds
 * frames to 64 KiB and fails for good on a corrupt header; the codec
 * checks structure; this file checks meaning:
 *  - a response must carry the id and type of the request in flight (one
 *    request is in flight at a time, the rest wait in a queue capped at
 *    SESSION_QUEUE_MAX, plus SESSION_ACK_MAX REQ_ACKs that the protocol
 *    requires and so are never refused for other requests' sake; a run of
 *    PROTO_F_MORE frames is capped at
 *    SESSION_RUN_MAX);
 *  - a range must lie inside this VM's RAM (hooks->check_range, backed by
 *    vm_layout_translate()); alignment and order are the codec's.  While
 *    the layout is unknown, events with ranges are ignored and responses
 *    are delivered with their ranges unchecked (session.h says why);
 *  - whether a response failed is the codec's verdict (proto_msg_failed());
 *  - SCAN/STATS/MEMINFO totals must fit the VM's RAM (session_check_scan());
 *  - EVT_MEMINFO only in a session that negotiated version 3;
 *  - guests may not send requests, and nothing but HELLO before HELLO;
 *  - at most frames_per_sec frames and events_per_sec events per second;
 *  - a request unanswered for request_timeout_ms means the guest lost it
 *    (what is already in the socket is read first: session_req_timeout()).
 * Any violation drops the connection with one warning that says what was
 * wrong (guest-chosen values are printed as numbers, never as text) and
 * schedules a reconnect after a backoff that doubles from reconnect_min_ms
 * to reconnect_max_ms, reset by a session that stayed READY for a minute.
 * Queued requests fail with -ECONNRESET.  The guest can make the daemon
 * hold at most: the decoder (64 KiB), one decoded message (66 KiB), and a
 * read buffer on the stack, all allocated once per VM.
 *
 * Fairness: each read callback takes at most SESSION_READ_MAX bytes and
 * returns to the loop, which serves descriptors round-robin.
 *
 * Everything runs on the loop's thread; no locks.  Callbacks into the VM
 * (hooks) and into requesters may call back into the session; a
 * generation counter, bumped on every drop, tells the reader to stop
 * walking frames of a connection that is gone.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "outbuf.h"
#include "session.h"

#define SESSION_READY_RESET_MS	60000	/* READY this long resets the backoff */
#define SESSION_TIMEOUT_READS	4	/* reads a timeout makes before it drops */

struct session_req {
	uint32_t id;
	uint16_t type;
	uint8_t *frame;			/* encoded, sent when it reaches the head */
	size_t len;
	session_resp_fn fn;		/* NULL once cancelled */
	void *userdata;
	unsigned int frames;		/* response frames received so far */
	struct session_req *next;
};

struct session {
	struct loop *loop;
	char name[64];			/* the VM's name, for logs */
	char path[108];
	struct session_limits lim;
	const struct session_hooks *hooks;
	void *vm;

	enum session_state state;
	int fd;
	struct loop_io io;
	struct loop_timer reconnect;
	struct loop_timer req_timer;	/* deadline of the request in flight */
	struct loop_timer kick;		/* sends a newly queued request from the
					 * loop, so session_request() never calls
					 * back into its caller */
	uint64_t generation;		/* bumped by every drop */
	uint32_t backoff_ms;
	bool logged_absent;		/* "channel not there" said once per streak */
	uint64_t ready_since_ms;

	struct proto_decoder *dec;	/* allocated once */
	struct proto_msg *msg;		/* decode target, allocated once */
	struct outbuf out;		/* unsent bytes, allocated once */

	struct session_req *queue;	/* head is in flight once sent */
	struct session_req *tail;
	size_t nqueued;
	size_t nacks;			/* of those, REQ_ACKs (session.h) */
	bool head_sent;
	uint32_t next_id;

	uint64_t window_ms;		/* start of the rate-limit second */
	uint32_t window_frames;
	uint32_t window_events;

	uint16_t version;
	struct proto_hello guest;
	uint64_t connects, drops, frames;
	char last_drop[SESSION_REASON_MAX];

	/* a range check left to the VM's verdict (-EINPROGRESS) */
	bool pending;
	uint64_t pending_gen;		/* the connection it came on */
	uint16_t pending_type;
	uint32_t pending_index;
	struct proto_range pending_range;
};

const char *session_state_name(enum session_state state)
{
	switch (state) {
	case SESSION_DOWN: return "down";
	case SESSION_HELLO: return "waiting-hello";
	case SESSION_READY: return "ready";
	}
	return "?";
}

static void session_connect(struct session *s);
static void session_send_head(struct session *s);

/* ---- teardown --------------------------------------------------------- */

static void session_fail_all(struct session *s, int error)
{
	while (s->queue) {
		struct session_req *q = s->queue;

		s->queue = q->next;
		if (!s->queue)
			s->tail = NULL;
		s->nqueued--;
		if (q->type == PROTO_REQ_ACK)
			s->nacks--;
		if (q->fn)
			q->fn(q->userdata, error, NULL, true);
		free(q->frame);
		free(q);
	}
	s->head_sent = false;
}

static void session_close(struct session *s)
{
	enum session_state was = s->state;

	s->generation++;
	loop_io_remove(s->loop, &s->io);
	loop_timer_disarm(s->loop, &s->req_timer);
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	outbuf_clear(&s->out);
	s->state = SESSION_DOWN;
	s->version = 0;
	if (was == SESSION_READY && s->hooks->state_changed)
		s->hooks->state_changed(s->vm, SESSION_DOWN);
	session_fail_all(s, -ECONNRESET);
}

/* Arms the reconnect timer: the backoff doubles up to reconnect_max_ms. */
static void session_schedule_reconnect(struct session *s)
{
	uint64_t now = loop_now_ms();

	if (s->ready_since_ms && now - s->ready_since_ms >= SESSION_READY_RESET_MS)
		s->backoff_ms = 0;
	s->ready_since_ms = 0;
	s->backoff_ms = loop_backoff_next(s->backoff_ms, s->lim.reconnect_min_ms,
					  s->lim.reconnect_max_ms);
	loop_timer_arm(s->loop, &s->reconnect, s->backoff_ms);
}

/* Protocol violation: one warning with the reason, drop, reconnect later. */
static void session_violation(struct session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void session_violation(struct session *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->last_drop, sizeof(s->last_drop), fmt, ap);
	va_end(ap);
	s->drops++;
	session_close(s);
	session_schedule_reconnect(s);
	log_warning("VM '%s': dropping guest session: %s; reconnecting in %u ms",
		    s->name, s->last_drop, s->backoff_ms);
}

void session_drop(struct session *s, const char *fmt, ...)
{
	char why[SESSION_REASON_MAX];
	va_list ap;

	if (s->state == SESSION_DOWN)
		return;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	session_violation(s, "%s", why);
}

/* The channel went away without a violation (EOF, I/O error). */
static void session_lost(struct session *s, int error)
{
	session_close(s);
	session_schedule_reconnect(s);
	if (error)
		log_info_errno(error, "VM '%s': guest channel lost: %m; "
			       "reconnecting in %u ms", s->name, s->backoff_ms);
	else
		log_info("VM '%s': guest channel closed by QEMU; reconnecting in %u ms",
			 s->name, s->backoff_ms);
}

/* ---- output ----------------------------------------------------------- */

static void session_update_events(struct session *s)
{
	uint32_t ev = EPOLLIN | (outbuf_pending(&s->out) ? EPOLLOUT : 0);

	if (s->fd >= 0)
		(void)loop_io_modify(s->loop, &s->io, ev);
}

static int session_flush(struct session *s)
{
	int r = outbuf_flush(&s->out, s->fd);

	if (r < 0)
		return r;
	session_update_events(s);
	return 0;
}

/* Queues bytes toward the guest; a guest that does not read gets dropped. */
static int session_write(struct session *s, const void *buf, size_t len)
{
	int r = outbuf_append(&s->out, buf, len);

	return r < 0 ? r : session_flush(s);
}

static void session_write_or_drop(struct session *s, const void *buf, size_t len)
{
	int r = session_write(s, buf, len);

	if (r == -ENOBUFS)
		session_violation(s, "guest does not read its channel (%u bytes unsent)",
				  (unsigned int)outbuf_pending(&s->out));
	else if (r < 0)
		session_lost(s, r);
}

/* ---- connect ---------------------------------------------------------- */

static void session_send_hello(struct session *s)
{
	struct proto_msg *m = s->msg;
	uint8_t frame[PROTO_HDR_SIZE + sizeof(struct proto_hello)];
	size_t len;

	memset(&m->u.hello, 0, sizeof(m->u.hello));
	m->type = PROTO_HELLO;
	m->flags = 0;
	m->id = 0;
	m->u.hello.version_min = PROTO_VERSION_MIN;
	m->u.hello.version_max = PROTO_VERSION_MAX;
	if (proto_encode(m, frame, sizeof(frame), &len) < 0)
		return;	/* cannot happen: a constant message */
	session_write_or_drop(s, frame, len);
}

static void session_io(struct loop_io *io, uint32_t events);

static void session_connect(struct session *s)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, r;

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r = -errno;
		goto out_retry;
	}
	memcpy(sa.sun_path, s->path, strlen(s->path));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		close(fd);
		goto out_retry;
	}
	r = loop_io_add(s->loop, &s->io, fd, EPOLLIN);
	if (r < 0) {
		close(fd);
		goto out_retry;
	}
	s->fd = fd;
	s->state = SESSION_HELLO;
	s->connects++;
	s->logged_absent = false;
	s->window_ms = loop_now_ms();
	s->window_frames = s->window_events = 0;
	proto_decoder_init(s->dec);
	log_info("VM '%s': connected to guest channel %s, HELLO sent", s->name, s->path);
	session_send_hello(s);
	return;

out_retry:
	session_schedule_reconnect(s);
	if (!s->logged_absent)
		log_info_errno(r, "VM '%s': guest channel %s not available: %m; "
			       "retrying", s->name, s->path);
	else
		log_debug_errno(r, "VM '%s': guest channel %s: %m; retry in %u ms",
				s->name, s->path, s->backoff_ms);
	s->logged_absent = true;
}

static void session_reconnect_timer(struct loop_timer *t)
{
	struct session *s = t->userdata;

	if (s->state == SESSION_DOWN)
		session_connect(s);
}

void session_start(struct session *s)
{
	if (s->state == SESSION_DOWN) {
		loop_timer_disarm(s->loop, &s->reconnect);
		session_connect(s);
	}
}

int session_set_path(struct session *s, const char *path)
{
	if (strlen(path) >= sizeof(s->path))
		return -ENAMETOOLONG;
	if (strcmp(path, s->path) != 0) {
		session_close(s);
		strcpy(s->path, path);
		s->backoff_ms = 0;
		s->logged_absent = false;
	}
	session_start(s);
	return 0;
}

void session_stop(struct session *s)
{
	session_close(s);
	loop_timer_disarm(s->loop, &s->reconnect);
	s->backoff_ms = 0;
	s->logged_absent = false;
}

/* ---- requests --------------------------------------------------------- */

static void session_read(struct session *s);

/*
 * The request in flight passed its deadline.  Its answer may be waiting in
 * the socket already (the loop was busy elsewhere when it came): read what
 * is there first -- at most SESSION_TIMEOUT_READS turns of SESSION_READ_MAX,
 * so a guest that keeps writing cannot hold the loop -- and call it lost
 * only if the same request is still unanswered then.
 */
static void session_req_timeout(struct loop_timer *t)
{
	struct session *s = t->userdata;
	uint64_t gen = s->generation;
	struct session_req *q = s->queue;
	uint32_t id = q ? q->id : 0;

	for (int i = 0; i < SESSION_TIMEOUT_READS; i++) {
		int avail = 0;

		if (!s->queue || !s->head_sent || s->queue->id != id ||
		    gen != s->generation)
			return;		/* answered, or the session went */
		if (ioctl(s->fd, FIONREAD, &avail) < 0 || avail <= 0)
			break;
		session_read(s);
	}
	if (gen == s->generation && s->queue && s->head_sent && s->queue->id == id)
		session_violation(s, "no answer to %s id %" PRIu32 " within %u ms",
				  proto_type_name(s->queue->type), s->queue->id,
				  s->lim.request_timeout_ms);
}

static void session_kick_timer(struct loop_timer *t)
{
	session_send_head(t->userdata);
}

static void session_send_head(struct session *s)
{
	struct session_req *q = s->queue;

	if (!q || s->head_sent || s->state != SESSION_READY)
		return;
	s->head_sent = true;
	loop_timer_arm(s->loop, &s->req_timer, s->lim.request_timeout_ms);
	session_write_or_drop(s, q->frame, q->len);
}

/* Pops the head (its answer is complete), then sends the next one. */
static void session_complete_head(struct session *s)
{
	struct session_req *q = s->queue;

	s->queue = q->next;
	if (!s->queue)
		s->tail = NULL;
	s->nqueued--;
	if (q->type == PROTO_REQ_ACK)
		s->nacks--;
	s->head_sent = false;
	loop_timer_disarm(s->loop, &s->req_timer);
	free(q->frame);
	free(q);
	session_send_head(s);
}

int session_request(struct session *s, struct proto_msg *req,
		    session_resp_fn fn, void *userdata, uint32_t *ret_id)
{
	struct session_req *q;
	uint8_t *frame;
	size_t len;
	int r;

	if (s->state != SESSION_READY)
		return -ENOTCONN;
	if (req->type == PROTO_REQ_ACK ? s->nacks >= SESSION_ACK_MAX :
	    s->nqueued - s->nacks >= SESSION_QUEUE_MAX)
		return -EBUSY;
	frame = malloc(PROTO_MAX_FRAME);
	if (!frame)
		return -ENOMEM;
	if (++s->next_id == 0)
		s->next_id = 1;
	req->id = s->next_id;
	req->flags = 0;
	r = proto_encode(req, frame, PROTO_MAX_FRAME, &len);
	if (r < 0) {
		free(frame);
		return r;
	}
	q = calloc(1, sizeof(*q));
	if (!q) {
		free(frame);
		return -ENOMEM;
	}
	q->id = req->id;
	q->type = req->type;
	q->frame = frame;
	q->len = len;
	q->fn = fn;
	q->userdata = userdata;
	if (s->tail)
		s->tail->next = q;
	else
		s->queue = q;
	s->tail = q;
	s->nqueued++;
	if (q->type == PROTO_REQ_ACK)
		s->nacks++;
	if (ret_id)
		*ret_id = q->id;
	loop_timer_arm(s->loop, &s->kick, 0);
	return 0;
}

void session_cancel(struct session *s, uint32_t id)
{
	for (struct session_req *q = s->queue; q; q = q->next)
		if (q->id == id)
			q->fn = NULL;
}

/* ---- validation ------------------------------------------------------- */

/* Sum of the first n entries of a histogram; false on overflow. */
static bool session_hist_sum(const uint64_t *h, unsigned int n, uint64_t *ret_sum)
{
	uint64_t sum = 0;

	for (unsigned int i = 0; i < n && i < PROTO_HIST_MAX; i++)
		if (__builtin_add_overflow(sum, h[i], &sum))
			return false;
	*ret_sum = sum;
	return true;
}

int session_check_scan(const struct proto_scan_resp *scan, uint64_t ram_bytes,
		       const char **ret_why)
{
	uint64_t blocks, cost, unmov, max_blocks;
	const char *why = NULL;

	if (scan->status < 0)
		return 0;
	/* a VM's RAM may start or end mid-block: allow one partial block */
	max_blocks = ram_bytes ? ram_bytes / PROTO_BLOCK_SIZE + 1 : UINT64_MAX;
	if (!session_hist_sum(scan->classes, scan->nclasses, &blocks) ||
	    !session_hist_sum(scan->cost, scan->ncost, &cost) ||
	    !session_hist_sum(scan->unmovable, scan->nunmovable, &unmov))
		why = "a histogram's counts overflow";
	else if (scan->free_bytes > scan->total_bytes)
		why = "free_bytes above total_bytes";
	else if (scan->free_block_bytes > scan->free_bytes)
		why = "free_block_bytes above free_bytes";
	else if (scan->available_bytes > scan->total_bytes)
		why = "available_bytes above total_bytes";
	else if (ram_bytes && scan->total_bytes > ram_bytes)
		why = "total_bytes above the VM's RAM";
	else if (ram_bytes && scan->captured_bytes > ram_bytes)
		why = "captured_bytes above the VM's RAM";
	else if (ram_bytes && scan->capturable_bytes > ram_bytes)
		why = "capturable_bytes above the VM's RAM";
	else if (blocks > max_blocks)
		why = "more blocks in the class histogram than the VM has";
	else if (cost > max_blocks)
		why = "more blocks in the cost histogram than the VM has";
	else if (unmov > max_blocks)
		why = "more unmovable blocks than the VM has";
	if (why) {
		*ret_why = why;
		return -EINVAL;
	}
	return 0;
}

/*
 * Every range of m inside this VM's RAM: 0, -ERANGE (violation logged),
 * -ENODATA.  A range the VM can only judge later (-EINPROGRESS) is left to
 * its verdict if m is an event (can_wait: nothing waits on it); a response
 * cannot wait (its requester acts on it now), so there it is refused as
 * the layout known refuses it.
 */
static int session_check_ranges(struct session *s, const struct proto_msg *m,
				uint32_t n, bool can_wait)
{
	for (uint32_t i = 0; i < n; i++) {
		int r = s->hooks->check_range(s->vm, &m->ranges[i]);

		if (r == -EINPROGRESS && can_wait) {
			/* the VM rediscovers its RAM: its verdict comes later */
			if (!s->pending || s->pending_gen != s->generation) {
				s->pending = true;
				s->pending_gen = s->generation;
				s->pending_type = m->type;
				s->pending_index = i;
				s->pending_range = m->ranges[i];
			}
			return -ENODATA;
		}
		if (r == -ENODATA)
			return r;
		if (r < 0) {
			session_violation(s, "%s range %" PRIu32 " [0x%" PRIx64
					  ", +0x%" PRIx64 ") is not guest RAM",
					  proto_type_name(m->type), i, m->ranges[i].gpa,
					  m->ranges[i].len);
			return -ERANGE;
		}
	}
	return 0;
}

bool session_pending_range(const struct session *s, struct proto_range *ret_range)
{
	if (!s->pending || s->pending_gen != s->generation)
		return false;
	*ret_range = s->pending_range;
	return true;
}

void session_range_verdict(struct session *s, bool is_ram)
{
	bool current = s->pending && s->pending_gen == s->generation;

	s->pending = false;
	if (!current || is_ram)
		return;
	session_violation(s, "%s range %" PRIu32 " [0x%" PRIx64 ", +0x%" PRIx64
			  ") is not guest RAM", proto_type_name(s->pending_type),
			  s->pending_index, s->pending_range.gpa,
			  s->pending_range.len);
}

static uint32_t session_msg_nranges(const struct proto_msg *m, bool failed)
{
	if (failed)
		return 0;
	switch (m->type) {
	case PROTO_RESP_CAPTURE:
	case PROTO_RESP_RELEASE:
		return m->u.ranges_resp.nranges;
	case PROTO_RESP_LIST:
		return m->u.list.nranges;
	case PROTO_EVT_CAPTURED:
	case PROTO_EVT_RELEASED:
		return m->u.evt.nranges;
	default:
		return 0;
	}
}

static void session_handle_hello(struct session *s, const struct proto_msg *m)
{
	const struct proto_hello *h = &m->u.hello;
	struct proto_hello local = {
		.version_min = PROTO_VERSION_MIN, .version_max = PROTO_VERSION_MAX,
	};
	uint64_t ram = s->hooks->ram_bytes(s->vm);
	uint16_t version;

	if (proto_hello_negotiate(&local, h, &version) < 0)
		return session_violation(s, "guest speaks versions %u..%u, "
					 "we speak %u..%u", h->version_min,
					 h->version_max, PROTO_VERSION_MIN,
					 PROTO_VERSION_MAX);
	if (h->block_size != PROTO_BLOCK_SIZE || h->page_size == 0)
		return session_violation(s, "guest HELLO without page size %u / "
					 "block size %u", h->page_size, h->block_size);
	if (ram && h->ram_bytes > ram)
		return session_violation(s, "guest claims %" PRIu64 " bytes of RAM, "
					 "the VM has %" PRIu64, h->ram_bytes, ram);
	s->guest = *h;
	if (s->state == SESSION_READY) {
		log_debug("VM '%s': guest restated HELLO (features 0x%" PRIx64 ")",
			  s->name, h->features);
		if (s->hooks->hello)
			s->hooks->hello(s->vm, h);
		return;
	}
	s->version = version;
	s->state = SESSION_READY;
	s->ready_since_ms = loop_now_ms();
	log_info("VM '%s': guest session ready, protocol version %u, features 0x%"
		 PRIx64, s->name, version, h->features);
	if (s->hooks->state_changed)
		s->hooks->state_changed(s->vm, SESSION_READY);
	if (s->state == SESSION_READY)
		session_send_head(s);
}

static void session_handle_response(struct session *s, const struct proto_msg *m,
				    bool failed)
{
	struct session_req *q = s->queue;
	uint64_t gen = s->generation;
	int status;
	bool last;

	if (!q || !s->head_sent || q->id != m->id)
		return session_violation(s, "%s id %" PRIu32 " matches no outstanding "
					 "request", proto_type_name(m->type), m->id);
	if (m->type != PROTO_RESP(q->type) && m->type != PROTO_RESP_ERROR)
		return session_violation(s, "%s answers %s id %" PRIu32,
					 proto_type_name(m->type),
					 proto_type_name(q->type), q->id);
	if (++q->frames > SESSION_RUN_MAX)
		return session_violation(s, "response run of %s id %" PRIu32
					 " longer than %u frames",
					 proto_type_name(q->type), q->id, SESSION_RUN_MAX);
	if (session_check_ranges(s, m, session_msg_nranges(m, failed), false) == -ERANGE)
		return;
	status = failed ? m->u.status.status : 0;
	if (m->type == PROTO_RESP_SCAN && !failed) {
		const char *why;

		if (session_check_scan(&m->u.scan, s->hooks->ram_bytes(s->vm), &why) < 0)
			return session_violation(s, "RESP_SCAN id %" PRIu32 ": %s",
						 m->id, why);
	}
	if (m->type == PROTO_RESP_STATS && !failed &&
	    s->hooks->ram_bytes(s->vm) &&
	    m->u.stats_resp.stats.captured_bytes > s->hooks->ram_bytes(s->vm))
		return session_violation(s, "RESP_STATS: captured_bytes above the "
					 "VM's RAM");
	last = !(m->flags & PROTO_F_MORE);
	if (q->fn)
		q->fn(q->userdata, status, m, last);
	if (gen == s->generation && last && s->queue == q)
		session_complete_head(s);
}

static bool session_rate_exceeded(struct session *s, bool event)
{
	uint64_t now = loop_now_ms();

	if (now - s->window_ms >= 1000) {
		s->window_ms = now;
		s->window_frames = s->window_events = 0;
	}
	if (++s->window_frames > s->lim.frames_per_sec) {
		session_violation(s, "more than %u frames in one second",
				  s->lim.frames_per_sec);
		return true;
	}
	if (event && ++s->window_events > s->lim.events_per_sec) {
		session_violation(s, "more than %u events in one second",
				  s->lim.events_per_sec);
		return true;
	}
	return false;
}

static void session_handle_frame(struct session *s, const struct proto_frame *f)
{
	struct proto_msg *m = s->msg;
	bool is_event = f->type == PROTO_EVT_CAPTURED ||
			f->type == PROTO_EVT_RELEASED || f->type == PROTO_EVT_STATS ||
			f->type == PROTO_EVT_MEMINFO;
	int r;

	s->frames++;
	if (session_rate_exceeded(s, is_event))
		return;
	r = proto_decode(f, m);
	if (r < 0)
		return session_violation(s, "undecodable %s frame (type 0x%04x, id %"
					 PRIu32 ", %" PRIu32 " bytes): %s",
					 proto_type_name(f->type), f->type, f->id,
					 f->len, strerror(-r));
	if (m->type == PROTO_HELLO)
		return session_handle_hello(s, m);
	if (s->state != SESSION_READY)
		return session_violation(s, "%s before the guest's HELLO",
					 proto_type_name(m->type));
	if (m->type & PROTO_RESP_BIT)
		return session_handle_response(s, m, proto_msg_failed(m));
	if (!is_event)
		return session_violation(s, "guest sent host-only %s",
					 proto_type_name(m->type));
	if (m->type == PROTO_EVT_STATS) {
		uint64_t ram = s->hooks->ram_bytes(s->vm);

		if (ram && (m->u.stats.captured_bytes > ram || m->u.stats.floor_bytes > ram))
			return session_violation(s, "EVT_STATS: captured or floor bytes "
						 "above the VM's RAM");
	} else if (m->type == PROTO_EVT_MEMINFO) {
		uint64_t ram = s->hooks->ram_bytes(s->vm);

		/* only a host that offered version 3 asked for it */
		if (s->version < PROTO_VERSION_MEMINFO)
			return session_violation(s, "EVT_MEMINFO in protocol version %u",
						 s->version);
		if (ram && m->u.meminfo.total_bytes > ram)
			return session_violation(s, "EVT_MEMINFO: total_bytes %" PRIu64
						 " above the VM's RAM %" PRIu64,
						 m->u.meminfo.total_bytes, ram);
	} else {
		r = session_check_ranges(s, m, m->u.evt.nranges, true);
		if (r == -ERANGE)
			return;
		if (r == -ENODATA) {
			log_debug("VM '%s': %s ignored, RAM layout unknown", s->name,
				  proto_type_name(m->type));
			return;
		}
	}
	if (s->hooks->event)
		s->hooks->event(s->vm, m);
}

/* ---- input ------------------------------------------------------------ */

static void session_read(struct session *s)
{
	uint8_t buf[16384];
	uint64_t gen = s->generation;
	size_t total = 0;

	while (total < SESSION_READ_MAX) {
		ssize_t n = recv(s->fd, buf, sizeof(buf), MSG_DONTWAIT);
		size_t off = 0;

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			return session_lost(s, -errno);
		}
		if (n == 0)
			return session_lost(s, 0);
		total += (size_t)n;
		while (off < (size_t)n) {
			struct proto_frame f;
			int r;

			off += proto_decoder_feed(s->dec, buf + off, (size_t)n - off);
			while ((r = proto_decoder_next(s->dec, &f)) == 1) {
				session_handle_frame(s, &f);
				if (gen != s->generation)
					return;
			}
			if (r < 0)
				return session_violation(s, "corrupt frame header: %s",
							 r == -EPROTO ? "bad magic" :
							 r == -EMSGSIZE ? "length above 64 KiB" :
							 r == -EPROTONOSUPPORT ?
							 "unknown frame version" :
							 "unknown flags");
		}
	}
}

static void session_io(struct loop_io *io, uint32_t events)
{
	struct session *s = io->userdata;
	uint64_t gen = s->generation;
	int r;

	if (events & EPOLLOUT) {
		r = session_flush(s);
		if (r < 0)
			return session_lost(s, r);
	}
	if (gen == s->generation && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		session_read(s);
}

/* ---- lifetime --------------------------------------------------------- */

int session_new(struct loop *loop, const char *vm_name, const char *path,
		const struct session_limits *limits,
		const struct session_hooks *hooks, void *vm,
		struct session **ret_session)
{
	struct session *s;

	if (strlen(path) >= sizeof(s->path))
		return -ENAMETOOLONG;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->dec = malloc(sizeof(*s->dec));
	s->msg = malloc(sizeof(*s->msg));
	if (!s->dec || !s->msg ||
	    outbuf_init(&s->out, SESSION_OUT_MAX, SESSION_OUT_MAX) < 0) {
		free(s->dec);
		free(s->msg);
		free(s);
		return -ENOMEM;
	}
	s->loop = loop;
	snprintf(s->name, sizeof(s->name), "%s", vm_name);
	strcpy(s->path, path);
	s->lim = *limits;
	s->hooks = hooks;
	s->vm = vm;
	s->fd = -1;
	s->state = SESSION_DOWN;
	loop_io_init(&s->io, session_io, s);
	loop_timer_init(&s->reconnect, session_reconnect_timer, s);
	loop_timer_init(&s->req_timer, session_req_timeout, s);
	loop_timer_init(&s->kick, session_kick_timer, s);
	proto_decoder_init(s->dec);
	*ret_session = s;
	return 0;
}

void session_free(struct session *s)
{
	if (!s)
		return;
	session_close(s);
	loop_timer_disarm(s->loop, &s->reconnect);
	loop_timer_disarm(s->loop, &s->kick);
	free(s->dec);
	free(s->msg);
	outbuf_free(&s->out);
	free(s);
}

void session_get_info(const struct session *s, struct session_info *ret_info)
{
	memset(ret_info, 0, sizeof(*ret_info));
	ret_info->state = s->state;
	ret_info->version = s->version;
	if (s->state == SESSION_READY)
		ret_info->guest = s->guest;
	ret_info->connects = s->connects;
	ret_info->drops = s->drops;
	ret_info->frames = s->frames;
	ret_info->queued = s->nqueued;
	snprintf(ret_info->last_drop, sizeof(ret_info->last_drop), "%s", s->last_drop);
}

void session_set_limits(struct session *s, const struct session_limits *limits)
{
	s->lim = *limits;
}
