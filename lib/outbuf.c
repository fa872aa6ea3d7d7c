// SPDX-License-Identifier: GPL-2.0
/*
 * outbuf.c - bytes waiting for a slow reader.
 *
 * One bounded FIFO of bytes per connection: appends go to the end, writes
 * take from the front (the rest is moved down, which costs little at these
 * sizes and keeps the buffer one contiguous run for send()).  A peer that
 * does not read lets the buffer fill up to its max and no further; the
 * owner decides what that means (the daemon drops the peer).
 *
 * Two ways out: outbuf_flush() for an event loop (write what fits, come
 * back on EPOLLOUT) and outbuf_drain() for a program that sends one frame
 * at a time and may wait for room (the guest agent on its virtio port,
 * which reports POLLHUP while no host has the port open).
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "outbuf.h"

int outbuf_init(struct outbuf *ob, size_t max, size_t reserve)
{
	memset(ob, 0, sizeof(*ob));
	ob->max = max;
	if (reserve > max)
		reserve = max;
	if (reserve) {
		ob->data = malloc(reserve);
		if (!ob->data)
			return -ENOMEM;
		ob->cap = reserve;
	}
	return 0;
}

void outbuf_free(struct outbuf *ob)
{
	free(ob->data);
	ob->data = NULL;
	ob->len = ob->cap = 0;
}

void outbuf_clear(struct outbuf *ob)
{
	ob->len = 0;
}

int outbuf_append(struct outbuf *ob, const void *buf, size_t len)
{
	if (len > ob->max - ob->len)
		return -ENOBUFS;
	if (ob->len + len > ob->cap) {
		uint8_t *d = realloc(ob->data, ob->len + len);

		if (!d)
			return -ENOMEM;
		ob->data = d;
		ob->cap = ob->len + len;
	}
	memcpy(ob->data + ob->len, buf, len);
	ob->len += len;
	return 0;
}

/* One write of the front bytes: >0 taken, 0 none now, <0 errno. */
static ssize_t outbuf_write_some(struct outbuf *ob, int fd)
{
	ssize_t n = send(fd, ob->data, ob->len, MSG_NOSIGNAL | MSG_DONTWAIT);

	if (n < 0 && errno == ENOTSOCK)
		n = write(fd, ob->data, ob->len);
	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -errno;
	memmove(ob->data, ob->data + n, ob->len - (size_t)n);
	ob->len -= (size_t)n;
	return n;
}

int outbuf_flush(struct outbuf *ob, int fd)
{
	while (ob->len) {
		ssize_t n = outbuf_write_some(ob, fd);

		if (n < 0)
			return (int)n;
		if (n == 0)
			break;
	}
	return 0;
}

int outbuf_drain(struct outbuf *ob, int fd, int timeout_ms)
{
	uint64_t deadline = clock_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);

	while (ob->len) {
		struct pollfd pfd = { .fd = fd, .events = POLLOUT };
		ssize_t n = outbuf_write_some(ob, fd);
		uint64_t now;

		if (n < 0)
			return (int)n;
		if (n > 0)
			continue;
		now = clock_now_ms();
		if (now >= deadline)
			return -ETIMEDOUT;
		if (poll(&pfd, 1, (int)(deadline - now)) < 0 && errno != EINTR)
			return -errno;
		if (pfd.revents & (POLLHUP | POLLERR | POLLNVAL))
			return -EPIPE;
	}
	return 0;
}
