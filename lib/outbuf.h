/* SPDX-License-Identifier: GPL-2.0 */
/*
 * outbuf.h - a bounded buffer of bytes not yet written to a non-blocking
 * descriptor (prefix outbuf_).
 *
 * The daemon keeps one per control client and one per guest session and
 * flushes it when epoll says the peer can take more; the guest agent keeps
 * one for its port and drains it with a deadline.  The bound is what a
 * peer that stops reading can make the process hold.
 */
#ifndef VDF_OUTBUF_H
#define VDF_OUTBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct outbuf {
	uint8_t *data;
	size_t len;		/* bytes queued, from data[0] */
	size_t cap;		/* bytes allocated */
	size_t max;		/* never more queued than this */
};

/*
 * An empty buffer that holds at most max bytes, with reserve bytes
 * allocated now (0: grown on demand, up to max).  -ENOMEM.
 */
int outbuf_init(struct outbuf *ob, size_t max, size_t reserve);
void outbuf_free(struct outbuf *ob);

static inline size_t outbuf_pending(const struct outbuf *ob)
{
	return ob->len;
}

/* Bytes that can still be queued. */
static inline size_t outbuf_room(const struct outbuf *ob)
{
	return ob->max - ob->len;
}

/* Forgets the queued bytes (a connection that ended). */
void outbuf_clear(struct outbuf *ob);

/* Queues len bytes: -ENOBUFS if they would exceed max, -ENOMEM. */
int outbuf_append(struct outbuf *ob, const void *buf, size_t len);

/*
 * Writes what fd takes now without blocking (send() with MSG_NOSIGNAL |
 * MSG_DONTWAIT; write() if fd is not a socket).  0 whether or not bytes
 * remain, or the write's negative errno (the peer is gone).
 */
int outbuf_flush(struct outbuf *ob, int fd);

/*
 * Writes everything queued, waiting up to timeout_ms in all for fd to take
 * it.  -EPIPE if fd reports a hang-up, -ETIMEDOUT if the bytes did not go
 * in time (what did not go stays queued), or a write's negative errno.
 */
int outbuf_drain(struct outbuf *ob, int fd, int timeout_ms);

#endif /* VDF_OUTBUF_H */
