/* SPDX-License-Identifier: GPL-2.0 */
/*
 * session.h - one VM's guest session over its vmdefrag channel (prefix
 * session_).
 *
 * The daemon is the client of the channel's unix socket (QEMU's chardev
 * server).  A session connects, says HELLO, negotiates, then carries
 * requests to the guest one at a time from a bounded queue, and validates
 * everything the guest says before anyone else sees it.  Any violation
 * drops the connection (one log line saying what was wrong) and a
 * reconnect follows after a backoff; nothing a guest sends outlives the
 * session or reaches another VM.
 */
#ifndef VDF_SESSION_H
#define VDF_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmdefrag/proto.h"

struct loop;
struct session;

#define SESSION_QUEUE_MAX	16	/* requests queued per VM (host state) */
#define SESSION_ACK_MAX		2	/* REQ_ACKs queued beside those */
#define SESSION_RUN_MAX		1024	/* frames in one response run */
#define SESSION_OUT_MAX		(1u << 20)	/* unsent bytes toward the guest */
#define SESSION_READ_MAX	(64u << 10)	/* bytes read per loop turn */
#define SESSION_REASON_MAX	256

enum session_state {
	SESSION_DOWN,		/* not connected; a reconnect timer is armed */
	SESSION_HELLO,		/* connected, our HELLO sent, waiting for the guest's */
	SESSION_READY,		/* version negotiated, requests flow */
};

struct session_limits {
	uint32_t frames_per_sec;
	uint32_t events_per_sec;
	uint32_t request_timeout_ms;
	uint32_t reconnect_min_ms;
	uint32_t reconnect_max_ms;
};

/* What the session asks of its VM.  All may be called from any session call. */
struct session_hooks {
	/*
	 * 0 if [gpa, gpa+len) is guest RAM of this VM; -ERANGE if it is
	 * not (a violation: the session drops); -ENODATA if the layout is
	 * unknown right now; -EINPROGRESS if it is not RAM of the layout
	 * known but the layout is being rediscovered (memory hot-plug): an
	 * event is then treated as with -ENODATA and the VM gives its
	 * verdict later (session_range_verdict()); a response, whose
	 * requester acts on it now, is refused as with -ERANGE.  See "Ranges
	 * while the layout is unknown" below for what the session does with
	 * a frame then.
	 */
	int (*check_range)(void *vm, const struct proto_range *r);
	/* Guest RAM in bytes from the host's layout; 0 if unknown. */
	uint64_t (*ram_bytes)(void *vm);
	/* A validated event (EVT_*), one frame at a time. */
	void (*event)(void *vm, const struct proto_msg *m);
	/* The session reached READY or left it. */
	void (*state_changed)(void *vm, enum session_state state);
	/* A guest HELLO restated while READY (features may have changed). */
	void (*hello)(void *vm, const struct proto_hello *hello);
};

/*
 * Ranges while the layout is unknown (check_range() says -ENODATA: QMP is
 * detached, or the layout is being rediscovered):
 *  - an event with ranges (EVT_CAPTURED/RELEASED) is ignored, logged at
 *    debug: it asks nothing of the host, and the next reconcile (a LIST)
 *    learns the same blocks once the layout is back;
 *  - a response is delivered to its requester anyway, its ranges not
 *    checked against RAM (every other check -- id, type, run length, the
 *    codec's structure -- still applies).  The request went out earlier,
 *    and holding its answer back would leave the queue's head waiting for
 *    a frame the guest will not send again, then time out and drop a
 *    session that broke no rule.  So a requester must treat the ranges of
 *    a response as unchecked and translate each through the layout it
 *    holds before acting on it; without a layout it must not act (the
 *    reclaim code ends its operation when the layout goes away).
 * A range the layout does know to be outside RAM is a violation either way.
 */

/*
 * Completion of a request: called once per response frame (`last` false
 * while PROTO_F_MORE frames of a run arrive), or once with status < 0 and
 * resp NULL if the request failed on the host side (-ECONNRESET session
 * dropped, -ETIMEDOUT).  status is the guest's status for a response.
 * resp is valid only during the call.
 */
typedef void (*session_resp_fn)(void *userdata, int status,
				const struct proto_msg *resp, bool last);

struct session_info {
	enum session_state state;
	uint16_t version;		/* negotiated; 0 before READY */
	struct proto_hello guest;	/* the guest's last HELLO (READY) */
	uint64_t connects;		/* successful connects */
	uint64_t drops;			/* protocol violations */
	uint64_t frames;		/* frames received, all sessions */
	size_t queued;			/* requests waiting or in flight */
	char last_drop[SESSION_REASON_MAX];	/* "" if none */
};

int session_new(struct loop *loop, const char *vm_name, const char *path,
		const struct session_limits *limits,
		const struct session_hooks *hooks, void *vm,
		struct session **ret_session);
/* Fails every queued request with -ECONNRESET, closes, frees. */
void session_free(struct session *s);
/* New limits (a config reload): the next frame, request and retry use them. */
void session_set_limits(struct session *s, const struct session_limits *limits);

/* Connects now (or arms the reconnect timer if the channel is not there). */
void session_start(struct session *s);
/*
 * The channel moved (a libvirt domain restarted under a new path): closes
 * a connection to the old path, then session_start() on the new one.
 */
int session_set_path(struct session *s, const char *path);
/* Closes and stops reconnecting until the next session_start(). */
void session_stop(struct session *s);

/*
 * Queues req (type and body; the id is assigned here) for the guest.
 * -ENOTCONN unless READY, -EBUSY if SESSION_QUEUE_MAX requests wait,
 * -EINVAL if the codec refuses it.  *ret_id identifies it for
 * session_cancel().
 * A REQ_ACK is what the protocol requires of the host (the guest holds
 * the blocks PENDING until it comes), so it does not count against
 * SESSION_QUEUE_MAX: ACKs have their own SESSION_ACK_MAX slots, and a
 * user that keeps at most that many out (reclaim.c keeps one, coalesced)
 * never sees -EBUSY for one, however full the queue is of other requests.
 */
int session_request(struct session *s, struct proto_msg *req,
		    session_resp_fn fn, void *userdata, uint32_t *ret_id);
/* The request's callback will not be called (its answer is still awaited). */
void session_cancel(struct session *s, uint32_t id);

/*
 * The first range check_range() left pending (-EINPROGRESS) on the current
 * connection, if any: the VM checks it once the layout is rediscovered
 * and tells whether it is RAM.  Not RAM: the session drops with the
 * violation the check would have found then; RAM: nothing happens.  A
 * connection that ended meanwhile forgets its pending range.
 */
bool session_pending_range(const struct session *s, struct proto_range *ret_range);
void session_range_verdict(struct session *s, bool is_ram);

/*
 * A violation found by a user of the session (a response that breaks the
 * meaning of its request): one warning with the reason, the connection
 * dropped (hooks->state_changed(DOWN) runs, queued requests fail with
 * -ECONNRESET), reconnect after the backoff.  Safe inside a response
 * callback; cancel that request first if its callback must not run again.
 */
void session_drop(struct session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

void session_get_info(const struct session *s, struct session_info *ret_info);
const char *session_state_name(enum session_state state);

/*
 * Semantic checks of a decoded RESP_SCAN against the VM's RAM (bytes; 0
 * if unknown): totals that cannot be, histograms with more blocks than
 * the RAM has.  0 or -EINVAL; *ret_why names the field.  Exposed for tests.
 */
int session_check_scan(const struct proto_scan_resp *scan, uint64_t ram_bytes,
		       const char **ret_why);

#endif /* VDF_SESSION_H */
