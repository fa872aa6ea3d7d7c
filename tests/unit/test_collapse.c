// SPDX-License-Identifier: GPL-2.0
/*
 * collapse_queue(): re-collapses of queued ranges, on this process's own
 * memfd mapping (the "QEMU" is the test itself: process_madvise on
 * getpid()), with real effects read back from the kernel.
 *
 * The layout: one memfd of 2 GiB (sparse) mapped 2 MiB-aligned, as guest RAM at
 * gpa 0.  Blocks 0 and 1 are written whole with 4 KiB pages (the mapping
 * is MADV_NOHUGEPAGE while they are written), block 2 has one page
 * written, block 3 and the rest are holes.  Checked:
 *  - queued ranges round out to whole blocks and merge; blocks 0-1 end
 *    PMD-mapped (smaps ShmemPmdMapped of the mapping), counted collapsed;
 *  - the partly written block and the holes are skipped, and stay so
 *    (SEEK_DATA / st_blocks: a re-collapse never allocates);
 *  - a range beyond the RAM or that would wrap is dropped;
 *  - more than COLLAPSE_QUEUE_MAX separate ranges fall back to the whole
 *    RAM, still skipping holes;
 *  - collapse_abort() drops the queue.
 * Skipped (with the reason) where the host forbids shmem huge pages
 * (shmem_enabled "deny") or process_madvise is not permitted.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "collapse.h"
#include "log.h"
#include "loop.h"
#include "vm_layout.h"

#define MiB		(1ull << 20)
#define BLOCK		(2 * MiB)
#define RAM		(2048 * MiB)

struct fixture {
	struct loop *loop;
	struct collapse *c;
	struct loop_timer poll;
	struct vm_layout l;
	struct vm_backing b;
	struct vm_ram_range r;
	int fd;
	uint8_t *res, *ram;
};

static void fx_poll(struct loop_timer *t)
{
	struct fixture *fx = t->userdata;

	if (!collapse_running(fx->c))
		loop_quit(fx->loop, 0);
	else
		loop_timer_arm(fx->loop, &fx->poll, 1);
}

/* Runs the loop until no walk runs (at most a few seconds). */
static void fx_settle(struct fixture *fx)
{
	loop_timer_arm(fx->loop, &fx->poll, 0);
	assert_int_equal(loop_run(fx->loop), 0);
	assert_false(collapse_running(fx->c));
}

static bool shmem_denied(void)
{
	char buf[256] = "";
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/shmem_enabled", "r");

	if (!f)
		return true;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = '\0';
	fclose(f);
	return strstr(buf, "[deny]") != NULL || !buf[0];
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	assert_non_null(fx);
	assert_int_equal(loop_new(&fx->loop), 0);
	assert_int_equal(collapse_new(fx->loop, "t", 100, &fx->c), 0);
	loop_timer_init(&fx->poll, fx_poll, fx);
	fx->fd = memfd_create("vdf-test-collapse", MFD_CLOEXEC);
	assert_true(fx->fd >= 0);
	assert_int_equal(ftruncate(fx->fd, RAM), 0);
	fx->res = mmap(NULL, RAM + BLOCK, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS |
		       MAP_NORESERVE, -1, 0);
	assert_true(fx->res != MAP_FAILED);
	fx->ram = (uint8_t *)(((uintptr_t)fx->res + BLOCK - 1) & ~(BLOCK - 1));
	assert_true(mmap(fx->ram, RAM, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
			 fx->fd, 0) == fx->ram);
	assert_int_equal(madvise(fx->ram, RAM, MADV_NOHUGEPAGE), 0);
	memset(fx->ram, 0x5a, 2 * BLOCK);		/* blocks 0, 1: whole */
	fx->ram[2 * BLOCK + 4096] = 1;			/* block 2: one page */
	assert_int_equal(madvise(fx->ram, RAM, MADV_HUGEPAGE), 0);

	fx->b.kind = VM_BACKING_MEMFD;
	fx->b.fd = fx->fd;
	fx->b.size = fx->b.file_size = RAM;
	fx->b.hva = (uintptr_t)fx->ram;
	fx->b.shared = true;
	fx->r.gpa = 0;
	fx->r.len = RAM;
	fx->r.hva = (uintptr_t)fx->ram;
	fx->l.pid = getpid();
	fx->l.nranges = 1;
	fx->l.ranges = &fx->r;
	fx->l.nbackings = 1;
	fx->l.backings = &fx->b;
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	collapse_free(fx->c);
	loop_free(fx->loop);
	munmap(fx->res, RAM + BLOCK);
	close(fx->fd);
	free(fx);
	return 0;
}

/* ShmemPmdMapped of our mapping of the memfd, in bytes. */
static uint64_t pmd_mapped(const struct fixture *fx)
{
	char line[256], want[64];
	bool in = false;
	uint64_t kb = 0;
	FILE *f = fopen("/proc/self/smaps", "r");

	assert_non_null(f);
	snprintf(want, sizeof(want), "%lx-", (unsigned long)(uintptr_t)fx->ram);
	while (fgets(line, sizeof(line), f)) {
		if (strchr(line, '-') && strncmp(line, want, strlen(want)) == 0)
			in = true;
		else if (in && sscanf(line, "ShmemPmdMapped: %lu kB", &kb) == 1)
			break;
	}
	fclose(f);
	return kb * 1024;
}

static bool is_hole(const struct fixture *fx, uint64_t off)
{
	off_t d = lseek(fx->fd, (off_t)off, SEEK_DATA);

	return d < 0 || (uint64_t)d >= off + BLOCK;
}

static void test_queue(void **state)
{
	struct fixture *fx = *state;
	struct collapse_status st;
	struct stat s0, s1;

	if (shmem_denied())
		skip();
	assert_int_equal(fstat(fx->fd, &s0), 0);
	assert_true(pmd_mapped(fx) == 0);
	/* a few bytes of block 0 and of block 1 (merged), blocks 2-3 */
	collapse_queue(fx->c, &fx->l, getpid(), 4096, 100);
	collapse_queue(fx->c, &fx->l, getpid(), BLOCK + 8192, 4096);
	collapse_queue(fx->c, &fx->l, getpid(), 2 * BLOCK, 2 * BLOCK);
	/* dropped: beyond the RAM, wrapping */
	collapse_queue(fx->c, &fx->l, getpid(), RAM + BLOCK, BLOCK);
	collapse_queue(fx->c, &fx->l, getpid(), UINT64_MAX - 4096, 8192);
	fx_settle(fx);
	collapse_get_status(fx->c, &st);
	if (st.rerun.failed_bytes && pmd_mapped(fx) == 0)
		skip();		/* e.g. no CAP_SYS_NICE for process_madvise */
	assert_int_equal(st.state, COLLAPSE_IDLE);	/* the pass never ran */
	assert_true(st.rerun.passes >= 1 && !st.rerun.running);
	assert_int_equal(st.rerun.queued_bytes, 4 * BLOCK);
	assert_int_equal(st.rerun.candidate_bytes, 2 * BLOCK);
	assert_int_equal(st.rerun.collapsed_bytes, 2 * BLOCK);
	assert_int_equal(st.rerun.hole_bytes, 2 * BLOCK);
	assert_int_equal(st.rerun.failed_bytes, 0);
	assert_true(pmd_mapped(fx) >= 2 * BLOCK);
	/* nothing allocated: block 3 a hole, block 2 as it was */
	assert_true(is_hole(fx, 3 * BLOCK));
	assert_int_equal(fstat(fx->fd, &s1), 0);
	/* a collapse of block 2 would have allocated its 511 missing pages */
	assert_true(s1.st_blocks <= s0.st_blocks + 8);
	assert_int_equal(fx->ram[2 * BLOCK + 4096], 1);
	assert_int_equal(fx->ram[BLOCK + 7], 0x5a);
}

static void test_queue_overflow(void **state)
{
	struct fixture *fx = *state;
	struct collapse_status st;

	if (shmem_denied())
		skip();
	/* every other block: more separate ranges than the queue holds;
	 * the first one starts a walk at once, the rest overflow */
	for (uint64_t i = 0; i < 2 * COLLAPSE_QUEUE_MAX + 8; i++)
		collapse_queue(fx->c, &fx->l, getpid(), (8 + 2 * i) * BLOCK, 4096);
	fx_settle(fx);
	collapse_get_status(fx->c, &st);
	if (st.rerun.failed_bytes && pmd_mapped(fx) == 0)
		skip();
	/* the whole RAM was walked: blocks 0-1 collapsed, the rest holes */
	assert_int_equal(st.rerun.collapsed_bytes, 2 * BLOCK);
	assert_int_equal(st.rerun.candidate_bytes, 2 * BLOCK);
	assert_true(st.rerun.hole_bytes >= RAM - 2 * BLOCK);
	assert_true(is_hole(fx, 8 * BLOCK));
}

static void test_abort_drops_queue(void **state)
{
	struct fixture *fx = *state;
	struct collapse_status st;

	collapse_queue(fx->c, &fx->l, getpid(), 0, BLOCK);	/* starts */
	collapse_queue(fx->c, &fx->l, getpid(), 4 * BLOCK, BLOCK);	/* waits */
	collapse_abort(fx->c, "test");
	assert_false(collapse_running(fx->c));
	fx_settle(fx);
	collapse_get_status(fx->c, &st);
	assert_int_equal(st.rerun.passes, 1);
	/* with a budget of 0 nothing is queued at all */
	{
		struct collapse *off;

		assert_int_equal(collapse_new(fx->loop, "off", 0, &off), 0);
		collapse_queue(off, &fx->l, getpid(), 0, BLOCK);
		assert_false(collapse_running(off));
		collapse_get_status(off, &st);
		assert_int_equal(st.rerun.queued_bytes, 0);
		collapse_free(off);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_queue, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_overflow, setup, teardown),
		cmocka_unit_test_setup_teardown(test_abort_drops_queue, setup, teardown),
	};

	log_set_max_level(LOG_WARNING);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
