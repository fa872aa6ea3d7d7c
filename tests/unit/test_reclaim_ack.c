// SPDX-License-Identifier: GPL-2.0
/*
 * test_reclaim_ack.c - the host's ACKs of the capture handshake are never
 * lost to a full queue (daemon/reclaim.c, "ACK"; session.h, session_request).
 *
 * The test plays the guest over a unix socket, as test_session.c does, in
 * front of the real session.c, reclaim.c, blockmap.c and the shared
 * backend punching a real memfd (144 GiB, sparse).  On connect the
 * daemon reconciles: REQ_LIST.  The guest lists 18 frames of 2048
 * separate blocks (every other one), far more than SESSION_QUEUE_MAX
 * requests of 2048 ranges could carry; the old code queued one REQ_ACK
 * per 2048 ranges and had the rest refused, leaving those blocks PENDING
 * in the guest until the session ended.  Now:
 *   - every listed block is acknowledged, exactly once, and no other;
 *   - at most one REQ_ACK is out at a time (the next comes only after
 *     the guest answered), each with at most PROTO_MAX_RANGES ranges;
 *   - no ACK comes before the host punched what it acknowledges: the
 *     guest checks the backing of an ACKed block is a hole when the ACK
 *     arrives, and an unlisted block keeps its data;
 *   - the host ends with nothing pending.
 * Twice: with the punches inline, and on a real worker pool (worker.c),
 * where every punch runs on another thread and its ACK is sent from the
 * job's done() on the loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "guest_end.h"
#include "log.h"
#include "loop.h"
#include "reclaim.h"
#include "session.h"
#include "vm_layout.h"
#include "worker.h"

#define MIB		(1ULL << 20)
#define BLOCK		(2 * MIB)
#define FRAMES		18u
#define NLISTED		(FRAMES * PROTO_MAX_RANGES)
#define RAM		(2ULL * NLISTED * BLOCK)	/* every other block listed */
#define NBLOCKS		(RAM / BLOCK)

struct fixture {
	struct loop *loop;
	struct worker_pool *pool;	/* NULL: jobs inline */
	struct session *s;
	struct reclaim *rc;
	struct vm_layout l;
	struct vm_backing b;
	struct vm_ram_range r;
	char path[108];
	int lfd, gfd, memfd;
	struct proto_decoder dec;
	uint8_t *acked;			/* per block: times acknowledged */
};

static struct fixture *the_fx;	/* the hooks' vm */

static int fx_check_range(void *vm, const struct proto_range *r)
{
	struct fixture *fx = vm;

	return vm_layout_translate(&fx->l, r->gpa, r->len, NULL, NULL) < 0 ?
	       -ERANGE : 0;
}

static uint64_t fx_ram_bytes(void *vm)
{
	return RAM;
}

static void fx_event(void *vm, const struct proto_msg *m)
{
	reclaim_event(((struct fixture *)vm)->rc, m);
}

static void fx_state(void *vm, enum session_state state)
{
	struct fixture *fx = vm;
	struct session_info info;

	if (state == SESSION_READY) {
		session_get_info(fx->s, &info);
		reclaim_session_ready(fx->rc, &info.guest);
	} else {
		reclaim_session_down(fx->rc);
	}
}

static const struct session_hooks fx_hooks = {
	.check_range = fx_check_range,
	.ram_bytes = fx_ram_bytes,
	.event = fx_event,
	.state_changed = fx_state,
};

static void pump(struct fixture *fx, unsigned int ms)
{
	guest_end_pump(fx->loop, ms);
}

static void guest_send(struct fixture *fx, const struct proto_msg *m)
{
	guest_end_send(fx->gfd, m);
}

/* The next frame the host sent into *m within ms: true, or false if none. */
static bool guest_try_recv(struct fixture *fx, struct proto_msg *m, unsigned int ms)
{
	return guest_end_try_recv(fx->loop, fx->gfd, &fx->dec, m, ms);
}

static void guest_recv(struct fixture *fx, struct proto_msg *m)
{
	if (!guest_try_recv(fx, m, 2000))
		fail_msg("the host sent nothing");
}

/* Is the backing of block blk a hole (SEEK_DATA finds nothing in it)? */
static bool block_is_hole(struct fixture *fx, uint64_t blk)
{
	off_t d = lseek(fx->memfd, (off_t)(blk * BLOCK), SEEK_DATA);

	return d < 0 || (uint64_t)d >= (blk + 1) * BLOCK;
}

static int setup_common(void **state, bool workers)
{
	static const struct session_limits lim = {
		.frames_per_sec = 1000, .events_per_sec = 1000,
		.request_timeout_ms = 5000, .reconnect_min_ms = 60000,
		.reconnect_max_ms = 60000,
	};
	static const struct reclaim_params par = { .budget_ms = 1000 };
	struct fixture *fx = calloc(1, sizeof(*fx));
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct proto_msg *m;

	assert_non_null(fx);
	the_fx = fx;
	fx->acked = calloc(NBLOCKS, 1);
	assert_non_null(fx->acked);
	fx->memfd = memfd_create("vdf-test-reclaim-ack", MFD_CLOEXEC);
	assert_true(fx->memfd >= 0);
	assert_int_equal(ftruncate(fx->memfd, (off_t)RAM), 0);
	fx->b = (struct vm_backing){
		.name = "ram", .kind = VM_BACKING_MEMFD, .fd = fx->memfd,
		.page_size = 4096, .size = RAM, .file_size = RAM, .shared = true,
	};
	fx->r = (struct vm_ram_range){ .gpa = 0, .len = RAM };
	fx->l = (struct vm_layout){
		.pid = getpid(), .nranges = 1, .ranges = &fx->r,
		.nbackings = 1, .backings = &fx->b,
	};

	snprintf(fx->path, sizeof(fx->path), "/tmp/vdf-test-reclaim-ack-%d.sock",
		 getpid());
	unlink(fx->path);
	strcpy(sa.sun_path, fx->path);
	fx->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fx->lfd >= 0);
	assert_int_equal(bind(fx->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fx->lfd, 1), 0);
	proto_decoder_init(&fx->dec);

	assert_int_equal(loop_new(&fx->loop), 0);
	if (workers) {
		assert_int_equal(worker_pool_new(fx->loop, 2, &fx->pool), 0);
		worker_pool_set_default(WORKER_BACKING, fx->pool);
	}
	assert_int_equal(session_new(fx->loop, "t", fx->path, &lim, &fx_hooks, fx,
				     &fx->s), 0);
	assert_int_equal(reclaim_new(fx->loop, "t", fx->s, &par, &fx->rc), 0);
	assert_int_equal(reclaim_set_layout(fx->rc, &fx->l, RECLAIM_BACKEND_SHARED,
					    NULL), 0);
	session_start(fx->s);
	fx->gfd = accept(fx->lfd, NULL, NULL);
	assert_true(fx->gfd >= 0);

	m = calloc(1, sizeof(*m));
	assert_non_null(m);
	guest_recv(fx, m);
	assert_int_equal(m->type, PROTO_HELLO);
	memset(m, 0, sizeof(*m));
	m->type = PROTO_HELLO;
	m->u.hello = (struct proto_hello){
		.version_min = PROTO_VERSION_MIN, .version_max = PROTO_VERSION_MAX,
		.features = PROTO_FEAT_EVENTS | PROTO_FEAT_MODULE,
		.page_size = 4096, .block_size = PROTO_BLOCK_SIZE, .ram_bytes = RAM,
	};
	guest_send(fx, m);
	free(m);
	*state = fx;
	return 0;
}

static int setup(void **state)
{
	return setup_common(state, false);
}

static int setup_workers(void **state)
{
	return setup_common(state, true);
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	session_free(fx->s);
	reclaim_free(fx->rc);
	worker_pool_free(fx->pool);	/* after every queue */
	loop_free(fx->loop);
	close(fx->gfd);
	close(fx->lfd);
	close(fx->memfd);
	unlink(fx->path);
	free(fx->acked);
	free(fx);
	return 0;
}

static void test_every_listed_block_acked_one_at_a_time(void **state)
{
	struct fixture *fx = *state;
	struct proto_msg *m = calloc(1, sizeof(*m));
	struct reclaim_status st;
	uint64_t nacked = 0;
	unsigned int nacks = 0;
	uint32_t list_id;
	char page[4096];

	assert_non_null(m);
	/* data in some listed blocks (to be punched) and in unlisted ones */
	memset(page, 0x5a, sizeof(page));
	for (uint64_t blk = 0; blk < 64; blk++)
		assert_int_equal(pwrite(fx->memfd, page, sizeof(page),
					(off_t)(blk * BLOCK)), (ssize_t)sizeof(page));

	guest_recv(fx, m);
	assert_int_equal(m->type, PROTO_REQ_LIST);
	list_id = m->id;
	for (uint32_t f = 0; f < FRAMES; f++) {
		memset(m, 0, sizeof(*m));
		m->type = PROTO_RESP_LIST;
		m->id = list_id;
		m->flags = f + 1 < FRAMES ? PROTO_F_MORE : 0;
		m->u.list.nranges = PROTO_MAX_RANGES;
		for (uint32_t i = 0; i < PROTO_MAX_RANGES; i++) {
			uint64_t blk = 2 * ((uint64_t)f * PROTO_MAX_RANGES + i);

			m->ranges[i] = (struct proto_range){ .gpa = blk * BLOCK,
							     .len = BLOCK };
		}
		guest_send(fx, m);
		pump(fx, 1);
	}

	for (;;) {
		uint32_t id;

		if (!guest_try_recv(fx, m, nacks ? 300 : 2000))
			break;
		assert_int_equal(m->type, PROTO_REQ_ACK);
		assert_int_equal(m->u.ack.flags, 0);	/* never ACK_ALL */
		assert_true(m->u.ack.nranges >= 1);
		assert_true(m->u.ack.nranges <= PROTO_MAX_RANGES);
		id = m->id;
		for (uint32_t i = 0; i < m->u.ack.nranges; i++) {
			const struct proto_range *r = &m->ranges[i];

			for (uint64_t b = r->gpa / BLOCK; b < (r->gpa + r->len) / BLOCK; b++) {
				assert_true(b < NBLOCKS);
				assert_int_equal(b % 2, 0);	/* listed */
				assert_int_equal(fx->acked[b], 0);	/* once */
				assert_true(block_is_hole(fx, b));	/* punched first */
				fx->acked[b]++;
				nacked++;
			}
		}
		nacks++;
		/* one ACK out at a time: nothing more until this is answered */
		assert_false(guest_try_recv(fx, m, 30));
		memset(m, 0, sizeof(*m));
		m->type = PROTO_RESP_ACK;
		m->id = id;
		m->u.ack_resp.bytes = 0;
		guest_send(fx, m);
	}
	assert_int_equal(nacked, NLISTED);
	assert_true(nacks >= FRAMES);
	/* the unlisted blocks kept their data */
	for (uint64_t blk = 1; blk < 64; blk += 2)
		assert_false(block_is_hole(fx, blk));
	pump(fx, 20);
	reclaim_get_status(fx->rc, &st);
	assert_true(st.reconciled);
	assert_int_equal(st.captured_bytes, NLISTED * BLOCK);
	assert_int_equal(st.pending_bytes, 0);
	free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_every_listed_block_acked_one_at_a_time,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_every_listed_block_acked_one_at_a_time,
						setup_workers, teardown),
	};

	log_set_max_level(LOG_WARNING);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
