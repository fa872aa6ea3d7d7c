// SPDX-License-Identifier: GPL-2.0
/*
 * test_blockmap.c - the per-block state map of daemon/blockmap.c: bounds
 * (a guest cannot name blocks outside the map), exact per-state and
 * UNACKED counts through every transition, and range collection
 * (coalescing, state/flag filters, range and byte limits, resuming).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>

#include "blockmap.h"

#define B BLOCKMAP_BLOCK

static void test_bounds(void **state)
{
	struct blockmap bm;

	assert_int_equal(blockmap_init(&bm, (BLOCKMAP_MAX_BLOCKS + 1) * B), -E2BIG);
	/* a RAM end inside a block rounds up */
	assert_int_equal(blockmap_init(&bm, 1024 * B + 4096), 0);
	assert_int_equal(bm.nblocks, 1025);
	assert_int_equal(bm.count[BLOCKMAP_GUEST], 1025);
	assert_int_equal(blockmap_check(&bm, 0, B), 0);
	assert_int_equal(blockmap_check(&bm, 1024 * B, B), 0);
	assert_int_equal(blockmap_check(&bm, 1025 * B, B), -ERANGE);
	assert_int_equal(blockmap_check(&bm, 1024 * B, 2 * B), -ERANGE);
	assert_int_equal(blockmap_check(&bm, 4096, B), -ERANGE);
	assert_int_equal(blockmap_check(&bm, 0, 0), -ERANGE);
	assert_int_equal(blockmap_check(&bm, UINT64_MAX - B + 1, B), -ERANGE);
	assert_int_equal(blockmap_check(&bm, 2 * B, UINT64_MAX - B + 1), -ERANGE);
	blockmap_free(&bm);
}

static void test_counts(void **state)
{
	struct blockmap bm;

	assert_int_equal(blockmap_init(&bm, 64 * B), 0);
	blockmap_set_range(&bm, 4 * B, 8 * B, BLOCKMAP_RECLAIMED);
	blockmap_flag_range(&bm, 4 * B, 8 * B, BLOCKMAP_F_UNACKED, true);
	blockmap_flag_range(&bm, 4 * B, 2 * B, BLOCKMAP_F_UNACKED, true);	/* again */
	assert_int_equal(bm.count[BLOCKMAP_RECLAIMED], 8);
	assert_int_equal(bm.count[BLOCKMAP_GUEST], 56);
	assert_int_equal(bm.unacked, 8);
	assert_int_equal(blockmap_bytes(&bm, BLOCKMAP_RECLAIMED), 8 * B);
	blockmap_set(&bm, 5, BLOCKMAP_RETURNING);
	blockmap_flag(&bm, 5, BLOCKMAP_F_UNACKED | BLOCKMAP_F_SEEN, false);
	assert_int_equal(bm.unacked, 7);
	assert_int_equal(blockmap_get(&bm, 5), BLOCKMAP_RETURNING);
	blockmap_flag(&bm, 6, BLOCKMAP_F_SEEN, true);
	assert_true(blockmap_test(&bm, 6, BLOCKMAP_F_SEEN));
	assert_int_equal(blockmap_get(&bm, 6), BLOCKMAP_RECLAIMED);	/* flags keep state */
	blockmap_clear_flag(&bm, BLOCKMAP_F_SEEN | BLOCKMAP_F_UNACKED);
	assert_int_equal(bm.unacked, 0);
	assert_false(blockmap_test(&bm, 6, BLOCKMAP_F_SEEN));
	assert_int_equal(bm.count[BLOCKMAP_RECLAIMED] + bm.count[BLOCKMAP_RETURNING] +
			 bm.count[BLOCKMAP_GUEST] + bm.count[BLOCKMAP_CAPTURED], 64);
	blockmap_reset(&bm);
	assert_int_equal(bm.count[BLOCKMAP_GUEST], 64);
	assert_int_equal(bm.count[BLOCKMAP_RECLAIMED], 0);
	blockmap_free(&bm);
}

/* Memory hot-plug: the map grows keeping every state; it shrinks only
 * over blocks that are the guest's and unflagged. */
static void test_resize(void **state)
{
	struct blockmap bm;

	assert_int_equal(blockmap_init(&bm, 64 * B), 0);
	blockmap_set_range(&bm, 4 * B, 8 * B, BLOCKMAP_RECLAIMED);
	blockmap_flag(&bm, 5, BLOCKMAP_F_UNACKED, true);
	assert_int_equal(blockmap_resize(&bm, 2048 * B + 4096), 0);
	assert_int_equal(bm.nblocks, 2049);
	assert_int_equal(bm.count[BLOCKMAP_GUEST], 2049 - 8);
	assert_int_equal(bm.count[BLOCKMAP_RECLAIMED], 8);
	assert_int_equal(bm.unacked, 1);
	assert_int_equal(blockmap_get(&bm, 4), BLOCKMAP_RECLAIMED);
	assert_true(blockmap_test(&bm, 5, BLOCKMAP_F_UNACKED));
	assert_int_equal(blockmap_get(&bm, 2048), BLOCKMAP_GUEST);
	assert_int_equal(blockmap_check(&bm, 2048 * B, B), 0);
	/* a block in the new part is used, then the part would go */
	blockmap_set(&bm, 2000, BLOCKMAP_CAPTURED);
	assert_int_equal(blockmap_resize(&bm, 64 * B), -EBUSY);
	assert_int_equal(bm.nblocks, 2049);
	blockmap_flag(&bm, 2001, BLOCKMAP_F_SEEN, true);
	blockmap_set(&bm, 2000, BLOCKMAP_GUEST);
	assert_int_equal(blockmap_resize(&bm, 64 * B), -EBUSY);	/* a flag */
	blockmap_flag(&bm, 2001, BLOCKMAP_F_SEEN, false);
	assert_int_equal(blockmap_resize(&bm, 64 * B), 0);
	assert_int_equal(bm.nblocks, 64);
	assert_int_equal(bm.count[BLOCKMAP_GUEST], 56);
	assert_int_equal(bm.count[BLOCKMAP_RECLAIMED], 8);
	assert_int_equal(blockmap_check(&bm, 64 * B, B), -ERANGE);
	assert_int_equal(blockmap_resize(&bm, (BLOCKMAP_MAX_BLOCKS + 1) * B), -E2BIG);
	assert_int_equal(bm.nblocks, 64);
	blockmap_free(&bm);
}

static void test_collect(void **state)
{
	struct proto_range r[4];
	struct blockmap bm;
	uint64_t pos = 0, bytes;
	size_t n;

	assert_int_equal(blockmap_init(&bm, 64 * B), 0);
	/* reclaimed: 2-4, 6, 10-11, 20, 30 */
	blockmap_set_range(&bm, 2 * B, 3 * B, BLOCKMAP_RECLAIMED);
	blockmap_set(&bm, 6, BLOCKMAP_RECLAIMED);
	blockmap_set_range(&bm, 10 * B, 2 * B, BLOCKMAP_RECLAIMED);
	blockmap_set(&bm, 20, BLOCKMAP_RECLAIMED);
	blockmap_set(&bm, 30, BLOCKMAP_RECLAIMED);
	blockmap_flag(&bm, 3, BLOCKMAP_F_SEEN, true);
	blockmap_flag(&bm, 6, BLOCKMAP_F_SEEN, true);

	n = blockmap_collect(&bm, BLOCKMAP_RECLAIMED, 0, &pos, UINT64_MAX, r, 4, &bytes);
	assert_int_equal(n, 4);
	assert_int_equal(r[0].gpa, 2 * B);
	assert_int_equal(r[0].len, 3 * B);
	assert_int_equal(r[1].gpa, 6 * B);
	assert_int_equal(r[2].len, 2 * B);
	assert_int_equal(r[3].gpa, 20 * B);
	assert_int_equal(bytes, 7 * B);
	/* resumes where the range limit stopped it */
	n = blockmap_collect(&bm, BLOCKMAP_RECLAIMED, 0, &pos, UINT64_MAX, r, 4, &bytes);
	assert_int_equal(n, 1);
	assert_int_equal(r[0].gpa, 30 * B);
	n = blockmap_collect(&bm, BLOCKMAP_RECLAIMED, 0, &pos, UINT64_MAX, r, 4, &bytes);
	assert_int_equal(n, 0);
	assert_int_equal(bytes, 0);

	/* byte limit: stops after 4 blocks, mid-range */
	pos = 0;
	n = blockmap_collect(&bm, BLOCKMAP_RECLAIMED, 0, &pos, 4 * B, r, 4, &bytes);
	assert_int_equal(n, 2);
	assert_int_equal(bytes, 4 * B);
	assert_int_equal(r[1].len, B);

	/* flag filter, any state */
	pos = 0;
	n = blockmap_collect(&bm, BLOCKMAP_NSTATES, BLOCKMAP_F_SEEN, &pos, UINT64_MAX,
			     r, 4, &bytes);
	assert_int_equal(n, 2);
	assert_int_equal(r[0].gpa, 3 * B);
	assert_int_equal(r[0].len, B);
	assert_int_equal(r[1].gpa, 6 * B);
	blockmap_free(&bm);
}

/* An owed ACK rides only beside CAPTURED/RECLAIMED (blockmap.h). */
static void test_ackq_only_while_held(void **state)
{
	struct blockmap bm;

	assert_int_equal(blockmap_init(&bm, 8 * B), 0);
	blockmap_set_range(&bm, 0, 4 * B, BLOCKMAP_CAPTURED);
	blockmap_flag_range(&bm, 0, 4 * B, BLOCKMAP_F_ACKQ | BLOCKMAP_F_UNACKED, true);
	blockmap_set(&bm, 1, BLOCKMAP_RECLAIMED);	/* punched later: still owed */
	assert_true(blockmap_test(&bm, 1, BLOCKMAP_F_ACKQ));
	blockmap_set(&bm, 2, BLOCKMAP_GUEST);		/* the guest took it back */
	assert_false(blockmap_test(&bm, 2, BLOCKMAP_F_ACKQ));
	blockmap_set(&bm, 3, BLOCKMAP_RETURNING);	/* the host gives it back */
	assert_false(blockmap_test(&bm, 3, BLOCKMAP_F_ACKQ));
	/* a block recaptured after it went GUEST is not owed an old ACK */
	blockmap_set(&bm, 2, BLOCKMAP_CAPTURED);
	assert_false(blockmap_test(&bm, 2, BLOCKMAP_F_ACKQ));
	assert_true(blockmap_test(&bm, 0, BLOCKMAP_F_ACKQ));
	blockmap_free(&bm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bounds),
		cmocka_unit_test(test_counts),
		cmocka_unit_test(test_resize),
		cmocka_unit_test(test_collect),
		cmocka_unit_test(test_ackq_only_while_held),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
