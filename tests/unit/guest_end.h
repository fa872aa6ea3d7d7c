/* SPDX-License-Identifier: GPL-2.0 */
/*
 * guest_end.h - the guest's end of a session socket for unit tests that
 * run the daemon's loop against a scripted guest (header-only, like
 * qemu_fixture.h: each test_*.c is built alone).
 *
 * The test holds the guest's fd and a decoder for what the host sent; the
 * host side runs only while the test pumps the loop, so every wait here
 * pumps it in small steps.
 */
#ifndef VDF_GUEST_END_H
#define VDF_GUEST_END_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

#include "loop.h"
#include "vmdefrag/proto.h"

static void guest_end_quit_timer(struct loop_timer *t)
{
	loop_quit(t->userdata, 0);
}

/* Runs the loop for ms milliseconds. */
static inline void guest_end_pump(struct loop *loop, unsigned int ms)
{
	struct loop_timer t;

	loop_timer_init(&t, guest_end_quit_timer, loop);
	loop_timer_arm(loop, &t, ms);
	loop_run(loop);
}

/* Writes m, encoded, to the host (one write: a frame fits the socket). */
static inline void guest_end_send(int gfd, const struct proto_msg *m)
{
	static uint8_t buf[PROTO_MAX_FRAME];
	size_t len;

	assert_int_equal(proto_encode(m, buf, sizeof(buf), &len), 0);
	assert_int_equal(write(gfd, buf, len), (ssize_t)len);
}

/*
 * The next frame the host sent, decoded into *m, waiting up to ms while
 * pumping the loop: true, or false if none came.
 */
static inline bool guest_end_try_recv(struct loop *loop, int gfd,
				      struct proto_decoder *dec,
				      struct proto_msg *m, unsigned int ms)
{
	static uint8_t buf[PROTO_MAX_FRAME];

	for (unsigned int waited = 0;; waited += 5) {
		struct pollfd p = { .fd = gfd, .events = POLLIN };
		struct proto_frame f;
		ssize_t n;

		if (proto_decoder_next(dec, &f) == 1) {
			assert_int_equal(proto_decode(&f, m), 0);
			return true;
		}
		if (poll(&p, 1, 0) == 1) {
			n = read(gfd, buf, sizeof(buf));
			assert_true(n > 0);
			assert_int_equal(proto_decoder_feed(dec, buf, (size_t)n), n);
			continue;
		}
		if (waited >= ms)
			return false;
		guest_end_pump(loop, 5);
	}
}

#endif /* VDF_GUEST_END_H */
