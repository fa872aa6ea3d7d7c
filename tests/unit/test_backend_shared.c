// SPDX-License-Identifier: GPL-2.0
/*
 * test_backend_shared.c - reclaim and re-back on the real RAM backing of a
 * paused QEMU (memfd, share=on), found with vm_layout_discover().
 *
 * Known data is written into the backing through the discovered fd;
 * reclaiming blocks must drop st_blocks by exactly their size, zero them
 * as QEMU sees them (HMP xp), and leave every other block byte-for-byte
 * intact.  Re-backing is run under shmem_enabled=never (must report
 * SMALL_POLICY, not pretend) and =advise (must produce 2 MiB folios,
 * re-checked independently through a fresh mapping's ShmemPmdMapped);
 * the host setting is restored in every exit path (teardown + atexit).
 * The layout-level interface (backend_shared_vm_*, what reclaim.c calls)
 * is checked on the same backing addressed by guest-physical range.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <unistd.h>

#include "backend_shared.h"
#include "hostmem.h"
#include "log.h"
#include "qemu_fixture.h"
#include "vm_layout.h"

#define MiB (1ull << 20)
#define BLK SHARED_BLOCK_SIZE
#define DATA_OFF (64 * MiB)	/* first block the tests write */
#define NBLK 16

struct ctx {
	struct qemu_vm vm;
	struct vm_layout *l;
	int fd;
	uint64_t file_size;
};

static const char *const vm_args[] = {
	"-machine", "q35,accel=tcg,memory-backend=ram0", "-m", "512M",
	"-object", "memory-backend-memfd,id=ram0,size=512M,share=on", NULL,
};

static int setup(void **state)
{
	static struct ctx c;
	int r;

	if (!fixture_have_qemu()) {
		fprintf(stderr, "# " FIXTURE_QEMU " not installed\n");
		return -1;
	}
	r = qemu_vm_start(&c.vm, vm_args);
	if (r < 0) {
		fprintf(stderr, "# cannot start qemu: %s\n", strerror(-r));
		return -1;
	}
	r = vm_layout_discover(c.vm.qmp, 0, &c.l);
	if (r < 0) {
		fprintf(stderr, "# layout: %s\n", strerror(-r));
		qemu_vm_stop(&c.vm);
		return -1;
	}
	c.fd = c.l->backings[0].fd;
	c.file_size = c.l->backings[0].file_size;
	*state = &c;
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;

	fixture_sysfs_restore();
	vm_layout_free(c->l);
	qemu_vm_stop(&c->vm);
	return 0;
}

static uint8_t pattern_byte(uint64_t off)
{
	uint64_t x = off * 0x9e3779b97f4a7c15ull;

	return (uint8_t)(x >> 56) | 1;	/* never zero */
}

static void fill_block(int fd, uint64_t off)
{
	static uint8_t buf[BLK];

	for (uint64_t i = 0; i < BLK; i++)
		buf[i] = pattern_byte(off + i);
	assert_int_equal(pwrite(fd, buf, BLK, (off_t)off), (ssize_t)BLK);
}

/* 1: block holds the pattern, 0: all zeroes, -1: anything else */
static int block_state(int fd, uint64_t off)
{
	static uint8_t buf[BLK];
	bool pat = true, zero = true;

	assert_int_equal(pread(fd, buf, BLK, (off_t)off), (ssize_t)BLK);
	for (uint64_t i = 0; i < BLK; i++) {
		if (buf[i] != pattern_byte(off + i))
			pat = false;
		if (buf[i])
			zero = false;
	}
	return pat ? 1 : zero ? 0 : -1;
}

static uint64_t allocated(int fd)
{
	uint64_t v = 0;

	assert_int_equal(hostmem_backing_allocated(fd, &v), 0);
	return v;
}

/* Empties the test area, then writes the pattern into every block. */
static void prepare(struct ctx *c)
{
	uint64_t freed;

	assert_int_equal(backend_shared_reclaim(c->fd, DATA_OFF, NBLK * BLK, &freed), 0);
	for (int i = 0; i < NBLK; i++)
		fill_block(c->fd, DATA_OFF + i * BLK);
}

struct bad_range {
	uint64_t off, len;
	int expect;
};

static void test_reclaim_rejects(void **state)
{
	struct ctx *c = *state;
	const struct bad_range cases[] = {
		{ DATA_OFF + 4096, BLK, -EINVAL },
		{ DATA_OFF, BLK + 4096, -EINVAL },
		{ DATA_OFF, 0, -EINVAL },
		{ c->file_size, BLK, -ERANGE },
		{ c->file_size - BLK, 2 * BLK, -ERANGE },
		{ UINT64_MAX - BLK + 1, BLK, -ERANGE },
	};
	uint64_t freed = 0xdead, before;
	uint8_t bm[8];

	prepare(c);
	before = allocated(c->fd);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(backend_shared_reclaim(c->fd, cases[i].off, cases[i].len,
							&freed), cases[i].expect);
		assert_true(freed == 0xdead);
		assert_int_equal(backend_shared_backed_blocks(c->fd, cases[i].off, cases[i].len,
							      bm, sizeof(bm), NULL),
				 cases[i].expect);
	}
	assert_true(allocated(c->fd) == before);
	for (int i = 0; i < NBLK; i++)
		assert_int_equal(block_state(c->fd, DATA_OFF + i * BLK), 1);
}

struct reclaim_case {
	const char *name;
	unsigned int first, count;	/* blocks, relative to DATA_OFF */
};

static const struct reclaim_case reclaim_cases[] = {
	{ "one block", 3, 1 },
	{ "four blocks", 6, 4 },
	{ "first and last", 0, 1 },
	{ "last", NBLK - 1, 1 },
};

static void test_reclaim_frees_exactly(void **state)
{
	struct ctx *c = *state;
	bool gone[NBLK] = { false };
	uint64_t gpa_base;

	prepare(c);
	/* DATA_OFF lies in ram0's range at gpa == file offset (below 4G) */
	gpa_base = DATA_OFF;
	assert_true(qemu_read_gpa(c->vm.qmp, gpa_base + 3 * BLK) != 0);
	for (size_t i = 0; i < sizeof(reclaim_cases) / sizeof(reclaim_cases[0]); i++) {
		const struct reclaim_case *rc = &reclaim_cases[i];
		uint64_t before = allocated(c->fd), freed = 0;

		fprintf(stderr, "# case: %s\n", rc->name);
		assert_int_equal(backend_shared_reclaim(c->fd, DATA_OFF + rc->first * BLK,
							rc->count * BLK, &freed), 0);
		assert_true(freed == rc->count * BLK);
		assert_true(before - allocated(c->fd) == rc->count * BLK);
		for (unsigned int b = rc->first; b < rc->first + rc->count; b++)
			gone[b] = true;
		/* never lose data: every other block is intact, byte for byte */
		for (int b = 0; b < NBLK; b++)
			assert_int_equal(block_state(c->fd, DATA_OFF + b * BLK), gone[b] ? 0 : 1);
		/* and QEMU sees the same */
		assert_true(qemu_read_gpa(c->vm.qmp, gpa_base + rc->first * BLK + 8) == 0);
	}
	/* reclaiming a hole frees nothing and succeeds */
	{
		uint64_t freed = 1;

		assert_int_equal(backend_shared_reclaim(c->fd, DATA_OFF + 12 * BLK, BLK, &freed), 0);
		assert_true(freed == BLK);
		assert_int_equal(backend_shared_reclaim(c->fd, DATA_OFF + 12 * BLK, BLK, &freed), 0);
		assert_true(freed == 0);
		/*
		 * But a read of a hole through QEMU's shared mapping (xp above,
		 * or migration, or a dump) allocates a page again: shmem has no
		 * shared zero page.
		 */
		assert_int_equal(backend_shared_reclaim(c->fd, DATA_OFF + 3 * BLK, BLK, &freed), 0);
		assert_true(freed == 4096);
	}
	assert_true(qemu_read_gpa(c->vm.qmp, gpa_base + 4 * BLK) ==
		    ((uint64_t)pattern_byte(DATA_OFF + 4 * BLK) |
		     (uint64_t)pattern_byte(DATA_OFF + 4 * BLK + 1) << 8 |
		     (uint64_t)pattern_byte(DATA_OFF + 4 * BLK + 2) << 16 |
		     (uint64_t)pattern_byte(DATA_OFF + 4 * BLK + 3) << 24 |
		     (uint64_t)pattern_byte(DATA_OFF + 4 * BLK + 4) << 32 |
		     (uint64_t)pattern_byte(DATA_OFF + 4 * BLK + 5) << 40 |
		     (uint64_t)pattern_byte(DATA_OFF + 4 * BLK + 6) << 48 |
		     (uint64_t)pattern_byte(DATA_OFF + 4 * BLK + 7) << 56));
}

static void test_backed_blocks(void **state)
{
	struct ctx *c = *state;
	uint8_t bm[NBLK / 8] = { 0 };
	uint64_t n = 0, freed;
	uint32_t one = 0x12345678;

	assert_int_equal(backend_shared_reclaim(c->fd, DATA_OFF, NBLK * BLK, &freed), 0);
	assert_int_equal(backend_shared_backed_blocks(c->fd, DATA_OFF, NBLK * BLK, bm,
						      sizeof(bm), &n), 0);
	assert_true(n == 0 && bm[0] == 0 && bm[1] == 0);
	fill_block(c->fd, DATA_OFF + 2 * BLK);
	/* a single 4 KiB page at the end of block 9 makes block 9 backed */
	assert_int_equal(pwrite(c->fd, &one, 4, (off_t)(DATA_OFF + 10 * BLK - 4096)), 4);
	fill_block(c->fd, DATA_OFF + 15 * BLK);
	assert_int_equal(backend_shared_backed_blocks(c->fd, DATA_OFF, NBLK * BLK, bm,
						      sizeof(bm), &n), 0);
	assert_true(n == 3);
	assert_int_equal(bm[0], 1 << 2);
	assert_int_equal(bm[1], (1 << 1) | (1 << 7));
	/* too small a bitmap */
	assert_int_equal(backend_shared_backed_blocks(c->fd, DATA_OFF, NBLK * BLK, bm, 1, &n),
			 -ENOBUFS);
	/* the SEEK_DATA walk agrees on bytes */
	assert_int_equal(hostmem_backing_data_bytes(c->fd, DATA_OFF, NBLK * BLK, &n), 0);
	assert_true(n == 2 * BLK + 4096);
}

/* backend_shared_vm_backed_blocks() callback: the test area's blocks. */
struct seen_blocks {
	bool blk[NBLK];
	int stop_after;		/* > 0: stop with 7 at that many blocks */
	int n;
};

static int seen_block(uint64_t gpa, void *arg)
{
	struct seen_blocks *s = arg;

	if (gpa < DATA_OFF || gpa >= DATA_OFF + NBLK * BLK)
		return 0;	/* the rest of the guest's RAM */
	s->blk[(gpa - DATA_OFF) / BLK] = true;
	s->n++;
	return s->stop_after && s->n == s->stop_after ? 7 : 0;
}

/*
 * The layout-level interface reclaim.c uses, on the VM's real layout
 * (ram0 is at gpa == file offset below 4 GiB): the same effects as the
 * file primitives, addressed by guest-physical range.
 */
static void test_vm_interface(void **state)
{
	struct ctx *c = *state;
	struct shared_reback_sum sum = { 0 };
	struct seen_blocks seen = { 0 };
	uint64_t freed = 0, before;
	char note[192];

	assert_int_equal(backend_shared_reclaim(c->fd, DATA_OFF, NBLK * BLK, &freed), 0);
	fill_block(c->fd, DATA_OFF + 2 * BLK);
	fill_block(c->fd, DATA_OFF + 3 * BLK);
	fill_block(c->fd, DATA_OFF + 9 * BLK);
	assert_int_equal(backend_shared_vm_backed_blocks(c->l, seen_block, &seen), 0);
	assert_int_equal(seen.n, 3);
	assert_true(seen.blk[2] && seen.blk[3] && seen.blk[9]);
	/* fn's first non-zero return stops the walk and is returned */
	memset(&seen, 0, sizeof(seen));
	seen.stop_after = 2;
	assert_int_equal(backend_shared_vm_backed_blocks(c->l, seen_block, &seen), 7);
	assert_int_equal(seen.n, 2);
	assert_false(seen.blk[9]);

	/* punch blocks 1-4: only 2 and 3 held data; freed accumulates */
	before = allocated(c->fd);
	assert_true(backend_shared_vm_allocated(c->l) == before);
	freed = 5;
	assert_int_equal(backend_shared_vm_punch(c->l, DATA_OFF + BLK, 4 * BLK, &freed), 0);
	assert_true(freed == 5 + 2 * BLK);
	assert_true(backend_shared_vm_allocated(c->l) == before - 2 * BLK);
	assert_true(backend_shared_vm_block_is_hole(c->l, DATA_OFF + 2 * BLK));
	assert_true(backend_shared_vm_block_is_hole(c->l, DATA_OFF + 3 * BLK));
	assert_false(backend_shared_vm_block_is_hole(c->l, DATA_OFF + 9 * BLK));
	assert_int_equal(block_state(c->fd, DATA_OFF + 9 * BLK), 1);
	/* not guest RAM: refused, nothing freed */
	freed = 0;
	assert_int_equal(backend_shared_vm_punch(c->l, 1ull << 40, BLK, &freed), -ERANGE);
	assert_true(freed == 0);
	assert_false(backend_shared_vm_block_is_hole(c->l, 1ull << 40));
	assert_true(backend_shared_vm_allocated(NULL) == 0);

	/* re-back two holes: backed again (zeroes), the sum says how */
	assert_int_equal(backend_shared_vm_reback(c->l, DATA_OFF + 2 * BLK, 2 * BLK,
						  &sum), 0);
	assert_true(sum.any);
	assert_false(backend_shared_vm_block_is_hole(c->l, DATA_OFF + 2 * BLK));
	assert_false(backend_shared_vm_block_is_hole(c->l, DATA_OFF + 3 * BLK));
	assert_int_equal(block_state(c->fd, DATA_OFF + 2 * BLK), 0);
	assert_true(sum.huge_bytes <= 2 * BLK);
	assert_int_equal(sum.huge_bytes == 2 * BLK, sum.worst == SHARED_REBACK_HUGE);
	backend_shared_reback_note(&sum, note, sizeof(note));
	assert_int_equal(note[0] == '\0', sum.worst == SHARED_REBACK_HUGE);
	assert_int_equal(backend_shared_vm_reback(c->l, 1ull << 40, BLK, &sum), -ERANGE);
}

/*
 * A plan (what a worker punches or re-backs from): ranges cut into runs
 * with the backing's fd duplicated, so it works after the layout that
 * made it is gone; a stop flag leaves the runs not started; each run has
 * its own result.
 */
static void test_plan(void **state)
{
	struct ctx *c = *state;
	struct shared_reback_sum sum = { 0 };
	struct proto_range rr[2] = {
		{ DATA_OFF + BLK, 2 * BLK },		/* blocks 1-2 */
		{ DATA_OFF + 6 * BLK, BLK },		/* block 6 */
	};
	struct proto_range bad = { 1ull << 40, BLK };
	struct shared_plan *p, *q;
	struct vm_layout *l2;
	atomic_bool stop;
	uint64_t before, freed;

	prepare(c);
	/* not guest RAM: no plan */
	assert_int_equal(backend_shared_plan_new(c->l, &bad, 1, &p), -ERANGE);
	assert_int_equal(backend_shared_plan_new(NULL, rr, 2, &p), -ENODATA);

	/* a plan outlives the layout it was made from */
	assert_int_equal(vm_layout_discover(c->vm.qmp, 0, &l2), 0);
	assert_int_equal(backend_shared_plan_new(l2, rr, 2, &p), 0);
	vm_layout_free(l2);
	assert_int_equal(p->nruns, 2);
	assert_true(p->runs[0].gpa == rr[0].gpa && p->runs[0].len == 2 * BLK);
	assert_true(p->runs[1].gpa == rr[1].gpa && p->runs[1].len == BLK);
	assert_int_equal(p->nfds, 1);
	assert_int_equal(p->runs[0].r, -ECANCELED);	/* not run yet */
	before = allocated(c->fd);
	atomic_init(&stop, false);
	freed = backend_shared_plan_punch(p, &stop);
	assert_true(freed == 3 * BLK);
	assert_int_equal(p->runs[0].r, 0);
	assert_int_equal(p->runs[1].r, 0);
	assert_true(p->runs[0].freed == 2 * BLK && p->runs[1].freed == BLK);
	assert_true(allocated(c->fd) == before - 3 * BLK);
	assert_int_equal(block_state(c->fd, DATA_OFF + BLK), 0);
	assert_int_equal(block_state(c->fd, DATA_OFF + 3 * BLK), 1);
	assert_int_equal(block_state(c->fd, DATA_OFF + 6 * BLK), 0);

	/* re-back both runs: backed again, zeroes, the sum adds up */
	assert_int_equal(backend_shared_plan_reback(p, &sum), 0);
	assert_true(sum.any && sum.huge_bytes <= 3 * BLK);
	assert_false(backend_shared_vm_block_is_hole(c->l, DATA_OFF + BLK));
	assert_false(backend_shared_vm_block_is_hole(c->l, DATA_OFF + 6 * BLK));
	backend_shared_plan_free(p);

	/* stopped before it starts: nothing punched, every run says so */
	prepare(c);
	assert_int_equal(backend_shared_plan_new(c->l, rr, 2, &q), 0);
	atomic_init(&stop, true);
	before = allocated(c->fd);
	assert_true(backend_shared_plan_punch(q, &stop) == 0);
	assert_int_equal(q->runs[0].r, -ECANCELED);
	assert_int_equal(q->runs[1].r, -ECANCELED);
	assert_true(allocated(c->fd) == before);
	assert_int_equal(block_state(c->fd, DATA_OFF + BLK), 1);
	backend_shared_plan_free(q);
}

/* Independent check: map the range again, read-fault it, count PMD maps. */
static uint64_t remap_pmd_bytes(int fd, uint64_t off, uint64_t len)
{
	struct hostmem_smaps sm;
	struct hostmem_vrange vr;
	size_t rl = len + BLK;
	uint8_t *resv, *a;
	volatile uint8_t sink = 0;

	resv = mmap(NULL, rl, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(resv != MAP_FAILED);
	a = (uint8_t *)(((uintptr_t)resv + BLK - 1) & ~(uintptr_t)(BLK - 1));
	assert_true(mmap(a, len, PROT_READ, MAP_SHARED | MAP_FIXED, fd, (off_t)off) == a);
	madvise(a, len, MADV_HUGEPAGE);
	for (uint64_t i = 0; i < len; i += 4096)
		sink += a[i];
	(void)sink;
	vr.start = (uintptr_t)a;
	vr.len = len;
	assert_int_equal(hostmem_read_smaps(getpid(), &vr, 1, &sm), 0);
	munmap(resv, rl);
	return sm.shmem_pmd;
}

struct reback_case {
	const char *name;
	const char *policy;		/* shmem_enabled to set */
	unsigned int first, count;	/* blocks to re-back */
	int keep_page_block;		/* block that keeps one 4 KiB page, or -1 */
	enum shared_reback_status expect;
	unsigned int huge_blocks;
};

static const struct reback_case reback_cases[] = {
	{ "never: small pages, said so", "never", 2, 4, -1, SHARED_REBACK_SMALL_POLICY, 0 },
	{ "deny: small pages, said so", "deny", 2, 2, -1, SHARED_REBACK_SMALL_POLICY, 0 },
	{ "advise: 2 MiB folios", "advise", 2, 4, -1, SHARED_REBACK_HUGE, 4 },
	{ "advise: one block already holds data", "advise", 8, 4, 9, SHARED_REBACK_PARTIAL, 3 },
	{ "within_size: 2 MiB folios", "within_size", 12, 2, -1, SHARED_REBACK_HUGE, 2 },
};

static void test_reback_table(void **state)
{
	struct ctx *c = *state;
	enum hostmem_shmem_thp orig;

	if (access(HOSTMEM_SHMEM_ENABLED_PATH, W_OK) != 0 ||
	    hostmem_read_shmem_thp(&orig) < 0) {
		fprintf(stderr, "# skip: %s not writable/readable (no shmem THP support?)\n",
			HOSTMEM_SHMEM_ENABLED_PATH);
		skip();
	}
	for (size_t i = 0; i < sizeof(reback_cases) / sizeof(reback_cases[0]); i++) {
		const struct reback_case *rc = &reback_cases[i];
		struct shared_reback_result res;
		uint64_t off = DATA_OFF + rc->first * BLK, len = rc->count * BLK;
		uint64_t before, freed;
		uint32_t keep = 0xabcdef01, got = 0;
		enum hostmem_shmem_thp now;
		int r;

		fprintf(stderr, "# case: %s\n", rc->name);
		prepare(c);
		assert_int_equal(backend_shared_reclaim(c->fd, off, len, &freed), 0);
		assert_true(freed == len);
		if (rc->keep_page_block >= 0)
			assert_int_equal(pwrite(c->fd, &keep, 4,
						(off_t)(DATA_OFF + rc->keep_page_block * BLK + 8192)), 4);
		r = fixture_sysfs_set(HOSTMEM_SHMEM_ENABLED_PATH, rc->policy);
		if (r < 0)
			fail_msg("cannot set shmem_enabled=%s: %s", rc->policy, strerror(-r));
		assert_int_equal(hostmem_read_shmem_thp(&now), 0);
		assert_string_equal(hostmem_shmem_thp_name(now), rc->policy);
		before = allocated(c->fd);
		r = backend_shared_reback(c->fd, VM_BACKING_MEMFD, off, len, &res);
		assert_int_equal(fixture_sysfs_restore(), 0);
		assert_int_equal(r, 0);
		fprintf(stderr, "#   status %s, huge %" PRIu64 " MiB, allocated %" PRIu64 " MiB\n",
			backend_shared_status_name(res.status), res.huge_bytes >> 20,
			res.allocated >> 20);
		assert_int_equal(res.status, rc->expect);
		assert_true(res.huge_bytes == rc->huge_blocks * BLK);
		assert_true(res.policy_known);
		/* the whole range is allocated now (minus the page that was there) */
		assert_true(allocated(c->fd) - before == res.allocated);
		assert_true(res.allocated == len - (rc->keep_page_block >= 0 ? 4096 : 0));
		/* independent look at the folios: a fresh mapping PMD-maps huge ones */
		assert_true(remap_pmd_bytes(c->fd, off, len) == rc->huge_blocks * BLK);
		/* no data lost or invented: re-backed blocks read zero except the
		 * kept page, other blocks keep the pattern */
		for (int b = 0; b < NBLK; b++) {
			bool in = b >= (int)rc->first && b < (int)(rc->first + rc->count);

			if (b == rc->keep_page_block)
				continue;
			assert_int_equal(block_state(c->fd, DATA_OFF + b * BLK), in ? 0 : 1);
		}
		if (rc->keep_page_block >= 0) {
			assert_int_equal(pread(c->fd, &got, 4,
					       (off_t)(DATA_OFF + rc->keep_page_block * BLK + 8192)), 4);
			assert_int_equal(got, keep);
		}
	}
	{
		enum hostmem_shmem_thp after;

		assert_int_equal(hostmem_read_shmem_thp(&after), 0);
		assert_int_equal(after, orig);	/* host setting restored */
	}
}

static void test_reback_rejects(void **state)
{
	struct ctx *c = *state;
	struct shared_reback_result res = { .huge_bytes = 0xdead };

	assert_int_equal(backend_shared_reback(c->fd, VM_BACKING_ANONYMOUS, DATA_OFF, BLK, &res),
			 -EOPNOTSUPP);
	assert_int_equal(backend_shared_reback(c->fd, VM_BACKING_MEMFD, DATA_OFF + 4096, BLK, &res),
			 -EINVAL);
	assert_int_equal(backend_shared_reback(c->fd, VM_BACKING_MEMFD, c->file_size, BLK, &res),
			 -ERANGE);
	assert_true(res.huge_bytes == 0xdead);
}

/*
 * A file on a tmpfs mount: the mount's huge= decides, not shmem_enabled
 * (which stays as the host has it).  within_size re-backs every block
 * with a 2 MiB folio; a mount without huge= gets 4 KiB pages and says that
 * the mount is why.
 */
static void test_reback_tmpfs_file(void **state)
{
	static const struct {
		const char *opts;
		enum shared_reback_status expect;
		uint64_t huge_blocks;
	} cases[] = {
		{ "size=64m,huge=within_size", SHARED_REBACK_HUGE, 4 },
		{ "size=64m", SHARED_REBACK_SMALL_POLICY, 0 },
	};
	char dir[] = "/tmp/vdf-tmpfs-XXXXXX", path[64];
	enum hostmem_shmem_thp sys;

	if (hostmem_read_shmem_thp(&sys) == 0 &&
	    (sys == HOSTMEM_SHMEM_DENY || sys == HOSTMEM_SHMEM_FORCE)) {
		fprintf(stderr, "# skip: shmem_enabled overrides every mount\n");
		skip();
	}
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/ram", dir);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct shared_reback_result res;
		uint64_t freed, off = 2 * BLK, len = 4 * BLK;
		int fd;

		fprintf(stderr, "# case: tmpfs %s\n", cases[i].opts);
		if (mount("tmpfs", dir, "tmpfs", 0, cases[i].opts) < 0) {
			rmdir(dir);
			fprintf(stderr, "# skip: cannot mount tmpfs: %s\n", strerror(errno));
			skip();
		}
		fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		assert_true(fd >= 0);
		assert_int_equal(ftruncate(fd, 8 * BLK), 0);
		assert_int_equal(fallocate(fd, 0, 0, 8 * BLK), 0);
		assert_int_equal(backend_shared_reclaim(fd, off, len, &freed), 0);
		assert_true(freed == len);
		assert_int_equal(backend_shared_reback(fd, VM_BACKING_FILE, off, len, &res), 0);
		assert_int_equal(res.status, cases[i].expect);
		assert_true(res.huge_bytes == cases[i].huge_blocks * BLK);
		assert_true(res.policy_known && res.tmpfs_mount);
		assert_true(remap_pmd_bytes(fd, off, len) == cases[i].huge_blocks * BLK);
		close(fd);
		assert_int_equal(umount(dir), 0);
	}
	rmdir(dir);
}

/*
 * hugetlbfs: needs free 2 MiB huge pages, which this host may not have
 * reserved; the test says so instead of passing.
 */
static unsigned long meminfo_value(const char *key)
{
	char *text = NULL, *p;
	unsigned long v = 0;

	assert_int_equal(hostmem_read_text("/proc/meminfo", 1 << 20, &text, NULL), 0);
	p = strstr(text, key);
	if (p)
		v = strtoul(p + strlen(key), NULL, 10);
	free(text);
	return v;
}

#define NR_HUGEPAGES "/proc/sys/vm/nr_hugepages"

static unsigned long hugepages_total;	/* vm.nr_hugepages before the test */
static bool hugepages_reserved;		/* the test raised it */

static int nr_hugepages_write(unsigned long n)
{
	char buf[32];
	int fd, len, r = 0;

	fd = open(NR_HUGEPAGES, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	len = snprintf(buf, sizeof(buf), "%lu", n);
	if (write(fd, buf, (size_t)len) != len)
		r = -errno;
	close(fd);
	return r;
}

/*
 * hugetlbfs (a MFD_HUGETLB memfd): reserves the 4 huge pages it needs for
 * the test when the host has none free, and gives them back after.
 */
static void test_hugetlb_memfd(void **state)
{
	unsigned long free_pages = meminfo_value("HugePages_Free:");
	struct shared_reback_result res;
	uint64_t freed;
	int fd, r;

	hugepages_total = meminfo_value("HugePages_Total:");
	if (free_pages < 4) {
		r = nr_hugepages_write(hugepages_total + 4 - free_pages);
		hugepages_reserved = r == 0;
		free_pages = meminfo_value("HugePages_Free:");
		if (r < 0 || free_pages < 4) {
			fprintf(stderr, "# skip: cannot reserve 4 free 2 MiB huge pages "
				"(vm.nr_hugepages): %s, %lu free\n",
				r < 0 ? strerror(-r) : "memory too fragmented", free_pages);
			skip();
		}
	}
	fd = memfd_create("vdf-test-hugetlb", MFD_CLOEXEC | MFD_HUGETLB);
	if (fd < 0) {
		fprintf(stderr, "# skip: memfd_create(MFD_HUGETLB): %s\n", strerror(errno));
		skip();
	}
	assert_int_equal(ftruncate(fd, 4 * BLK), 0);
	assert_int_equal(backend_shared_reback(fd, VM_BACKING_HUGETLBFS, 0, 2 * BLK, &res), 0);
	assert_int_equal(res.status, SHARED_REBACK_HUGE);
	assert_true(res.allocated == 2 * BLK);
	assert_true(res.huge_bytes == 2 * BLK);
	assert_int_equal(backend_shared_reclaim(fd, 0, BLK, &freed), 0);
	assert_true(freed == BLK);
	assert_int_equal(backend_shared_reclaim(fd, BLK, BLK, &freed), 0);
	assert_true(freed == BLK);
	close(fd);
}

/* Gives back what test_hugetlb_memfd reserved, on every path. */
static int hugetlb_teardown(void **state)
{
	if (hugepages_reserved && nr_hugepages_write(hugepages_total) < 0)
		return -1;
	hugepages_reserved = false;
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reclaim_rejects),
		cmocka_unit_test(test_reclaim_frees_exactly),
		cmocka_unit_test(test_backed_blocks),
		cmocka_unit_test(test_vm_interface),
		cmocka_unit_test(test_plan),
		cmocka_unit_test(test_reback_rejects),
		cmocka_unit_test(test_reback_table),
		cmocka_unit_test_teardown(test_hugetlb_memfd, hugetlb_teardown),
		cmocka_unit_test(test_reback_tmpfs_file),
	};

	log_set_max_level(LOG_WARNING);
	return cmocka_run_group_tests_name("backend_shared", tests, setup, teardown);
}
