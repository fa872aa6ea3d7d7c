// SPDX-License-Identifier: GPL-2.0
/*
 * backend_shared.c - the "shared" backend's host primitives.
 *
 * A block of guest RAM in a shared backing file moves through:
 *
 *	backed (guest data) --reclaim--> hole --re-back--> backed (zeroes,
 *	                                                   huge if possible)
 *
 * The guest module captures a block before the daemon reclaims it and
 * releases it only after the daemon re-backed it (or lets the host fault it
 * in under sudden pressure), so neither transition races with guest use of
 * that block.  This file does not know about guests: it works on file
 * offsets that vm_layout_translate() validated, and checks only alignment
 * and file bounds.
 *
 * Reclaim is fallocate(PUNCH_HOLE | KEEP_SIZE) on whole 2 MiB blocks: a
 * 2 MiB shmem folio or hugetlb page is freed as a unit, never split.  What
 * was freed is measured as the drop of st_blocks, the kernel's own count.
 * A hole stays a hole only while nobody touches it: shmem has no shared
 * zero page, so even a *read* through QEMU's MAP_SHARED mapping (HMP xp,
 * a dump, migration reading guest RAM) allocates a 4 KiB page there again
 * (measured in test_backend_shared).
 *
 * Re-back depends on the filesystem.  hugetlbfs allocates huge pages with
 * fallocate(0).  shmem's fallocate(0) allocates base pages only (unless
 * shmem_enabled=within_size/always), so for memfd/tmpfs the range is
 * populated through a temporary MADV_HUGEPAGE mapping, which makes the
 * fault path allocate PMD-sized folios when the host policy allows it.
 * Whether it did is measured, not assumed: the temporary mapping's
 * ShmemPmdMapped/FilePmdMapped in /proc/self/smaps counts exactly the bytes
 * mapped by PMDs, and a shmem folio is PMD-mapped only if it is huge.
 *
 * Two levels: the primitives above work on one file's offsets; the
 * backend_shared_vm_*() functions take guest-physical ranges of a VM's
 * layout, cut them into the runs one backing holds contiguously and apply
 * the primitives to each, summing what they freed or how they re-backed.
 * A plan (backend_shared_plan_*(), what reclaim.c's worker jobs use) is
 * the same cut made in advance, on the loop's thread, with the backings'
 * fds duplicated: a worker thread punches or re-backs from it while the
 * layout itself may be replaced or freed, and each run keeps its result.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "backend_shared.h"
#include "cleanup.h"
#include "hostmem.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* Alignment the file's pages need and its size, after basic checks. */
static int shared_check_range(int fd, uint64_t offset, uint64_t len,
			      bool *ret_hugetlb)
{
	uint64_t align = SHARED_BLOCK_SIZE;
	struct statfs sfs;
	struct stat st;

	if (fstat(fd, &st) < 0 || fstatfs(fd, &sfs) < 0)
		return -errno;
	if (sfs.f_type == HUGETLBFS_MAGIC && (uint64_t)sfs.f_bsize > align)
		align = (uint64_t)sfs.f_bsize;
	if (len == 0 || offset % align || len % align)
		return -EINVAL;
	if (offset + len < offset || offset + len > (uint64_t)st.st_size)
		return -ERANGE;
	if (ret_hugetlb)
		*ret_hugetlb = sfs.f_type == HUGETLBFS_MAGIC;
	return 0;
}

int backend_shared_reclaim(int fd, uint64_t offset, uint64_t len,
			   uint64_t *ret_freed)
{
	uint64_t before, after;
	int r;

	r = shared_check_range(fd, offset, len, NULL);
	if (r < 0)
		return r;
	r = hostmem_backing_allocated(fd, &before);
	if (r < 0)
		return r;
	if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)offset, (off_t)len) < 0)
		return -errno;
	r = hostmem_backing_allocated(fd, &after);
	if (r < 0)
		return r;
	if (ret_freed)
		*ret_freed = before > after ? before - after : 0;
	return 0;
}

int backend_shared_backed_blocks(int fd, uint64_t offset, uint64_t len,
				 uint8_t *bitmap, size_t bitmap_bytes,
				 uint64_t *ret_nbacked)
{
	uint64_t nblocks, end, pos, nbacked = 0;
	int r;

	r = shared_check_range(fd, offset, len, NULL);
	if (r < 0)
		return r;
	nblocks = len / SHARED_BLOCK_SIZE;
	if (!bitmap || bitmap_bytes < (nblocks + 7) / 8)
		return -ENOBUFS;
	memset(bitmap, 0, (nblocks + 7) / 8);
	end = offset + len;
	pos = offset;
	while (pos < end) {
		off_t data = lseek(fd, (off_t)pos, SEEK_DATA);
		uint64_t blk;

		if (data < 0) {
			if (errno == ENXIO)
				break;
			return -errno;
		}
		if ((uint64_t)data >= end)
			break;
		if ((uint64_t)data < pos)	/* buggy llseek */
			return -EIO;
		blk = ((uint64_t)data - offset) / SHARED_BLOCK_SIZE;
		bitmap[blk / 8] |= 1u << (blk % 8);
		nbacked++;
		pos = offset + (blk + 1) * SHARED_BLOCK_SIZE;
	}
	if (ret_nbacked)
		*ret_nbacked = nbacked;
	return 0;
}

const char *backend_shared_status_name(enum shared_reback_status status)
{
	switch (status) {
	case SHARED_REBACK_HUGE: return "huge";
	case SHARED_REBACK_PARTIAL: return "partial";
	case SHARED_REBACK_SMALL: return "small";
	case SHARED_REBACK_SMALL_POLICY: return "small-policy";
	}
	return "?";
}

/*
 * Populates [offset, offset+len) of a shmem file through a temporary
 * PMD-aligned mapping and returns the bytes that ended up PMD-mapped.
 */
static int shared_populate_shmem(int fd, uint64_t offset, uint64_t len,
				 uint64_t *ret_huge)
{
	struct hostmem_smaps sm;
	struct hostmem_vrange vr;
	uint8_t *resv, *addr;
	size_t resv_len = len + SHARED_BLOCK_SIZE;
	int r;

	/* reserve, then place the file mapping at a 2 MiB boundary in it */
	resv = mmap(NULL, resv_len, PROT_NONE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (resv == MAP_FAILED)
		return -errno;
	addr = (uint8_t *)(((uintptr_t)resv + SHARED_BLOCK_SIZE - 1) &
			   ~(uintptr_t)(SHARED_BLOCK_SIZE - 1));
	if (mmap(addr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
		 fd, (off_t)offset) == MAP_FAILED) {
		r = -errno;
		goto out_unmap;
	}
	/* without THP support this fails with EINVAL: then small pages */
	(void)madvise(addr, len, MADV_HUGEPAGE);
	if (madvise(addr, len, MADV_POPULATE_WRITE) < 0) {
		r = errno == EINVAL ? -EOPNOTSUPP : -errno;
		goto out_unmap;
	}
	vr.start = (uint64_t)(uintptr_t)addr;
	vr.len = len;
	r = hostmem_read_smaps(getpid(), &vr, 1, &sm);
	if (r < 0)
		goto out_unmap;
	*ret_huge = sm.shmem_pmd + sm.file_pmd;
	if (*ret_huge > len)
		*ret_huge = len;
	r = 0;
out_unmap:
	munmap(resv, resv_len);
	return r;
}

int backend_shared_shmem_policy(int fd, enum vm_backing_kind kind,
				enum hostmem_shmem_thp *ret_policy,
				bool *ret_tmpfs_mount)
{
	enum hostmem_shmem_thp policy;
	struct statfs sfs;
	int r;

	switch (kind) {
	case VM_BACKING_MEMFD:
		/* memfds live on the internal shm mount: shmem_enabled rules */
		r = hostmem_read_shmem_thp(&policy);
		break;
	case VM_BACKING_FILE:
		if (fstatfs(fd, &sfs) < 0)
			return -errno;
		if (sfs.f_type != TMPFS_MAGIC)
			return -EMEDIUMTYPE;
		r = hostmem_tmpfs_huge(fd, &policy);
		break;
	default:
		return -EINVAL;
	}
	if (r < 0)
		return r;
	*ret_policy = policy;
	*ret_tmpfs_mount = kind == VM_BACKING_FILE;
	return 0;
}

int backend_shared_reback(int fd, enum vm_backing_kind kind, uint64_t offset,
			  uint64_t len, struct shared_reback_result *ret_result)
{
	struct shared_reback_result res = { 0 };
	uint64_t before, after, huge = 0;
	bool hugetlb, allows;
	struct statfs sfs;
	int r;

	if (kind == VM_BACKING_ANONYMOUS)
		return -EOPNOTSUPP;
	r = shared_check_range(fd, offset, len, &hugetlb);
	if (r < 0)
		return r;
	if (fstatfs(fd, &sfs) < 0)
		return -errno;
	r = hostmem_backing_allocated(fd, &before);
	if (r < 0)
		return r;

	if (hugetlb) {
		/* every hugetlbfs page is huge: allocation is the measure */
		if (fallocate(fd, 0, (off_t)offset, (off_t)len) < 0)
			return -errno;
		huge = len;
		allows = true;
	} else if (sfs.f_type == TMPFS_MAGIC) {
		res.policy_known = backend_shared_shmem_policy(fd, kind, &res.policy,
								&res.tmpfs_mount) == 0;
		allows = !res.policy_known ||
			 hostmem_shmem_thp_allows_huge(res.policy);
		r = shared_populate_shmem(fd, offset, len, &huge);
		if (r < 0)
			return r;
	} else {
		if (fallocate(fd, 0, (off_t)offset, (off_t)len) < 0)
			return -errno;
		allows = false;
	}

	r = hostmem_backing_allocated(fd, &after);
	if (r < 0)
		return r;
	res.allocated = after > before ? after - before : 0;
	res.huge_bytes = huge;
	if (huge == len)
		res.status = SHARED_REBACK_HUGE;
	else if (!allows)
		res.status = SHARED_REBACK_SMALL_POLICY;
	else if (huge == 0)
		res.status = SHARED_REBACK_SMALL;
	else
		res.status = SHARED_REBACK_PARTIAL;
	*ret_result = res;
	return 0;
}

/* ---- a VM's guest-physical RAM ------------------------------------------ */

/*
 * Calls fn for each maximal run of [gpa, gpa+len) that one backing holds
 * contiguously.  -ERANGE if a block is not guest RAM of the layout.
 */
typedef int (*shared_run_fn)(const struct vm_backing *b, uint64_t gpa,
			     uint64_t file_offset, uint64_t len, void *arg);

static int shared_for_runs(const struct vm_layout *l, uint64_t gpa, uint64_t len,
			   shared_run_fn fn, void *arg)
{
	const struct vm_ram_range *run_rr = NULL;
	uint64_t run_gpa = 0, run_off = 0, run_len = 0;
	int r;

	for (uint64_t a = gpa; a < gpa + len; a += SHARED_BLOCK_SIZE) {
		const struct vm_ram_range *rr;
		uint64_t off;

		r = vm_layout_translate(l, a, SHARED_BLOCK_SIZE, &rr, &off);
		if (r < 0)
			return r;
		if (run_len && rr->backing == run_rr->backing &&
		    run_off + run_len == off) {
			run_len += SHARED_BLOCK_SIZE;
			continue;
		}
		if (run_len) {
			r = fn(&l->backings[run_rr->backing], run_gpa, run_off,
			       run_len, arg);
			if (r < 0)
				return r;
		}
		run_rr = rr;
		run_gpa = a;
		run_off = off;
		run_len = SHARED_BLOCK_SIZE;
	}
	return run_len ? fn(&l->backings[run_rr->backing], run_gpa, run_off, run_len,
			    arg) : 0;
}

static int shared_punch_run(const struct vm_backing *b, uint64_t gpa,
			    uint64_t off, uint64_t len, void *arg)
{
	uint64_t *freed = arg, f = 0;
	int r;

	r = backend_shared_reclaim(b->fd, off, len, &f);
	if (r < 0)
		return r;
	*freed += f;
	return 0;
}

int backend_shared_vm_punch(const struct vm_layout *l, uint64_t gpa,
			    uint64_t len, uint64_t *freed)
{
	return shared_for_runs(l, gpa, len, shared_punch_run, freed);
}

static void shared_reback_add(struct shared_reback_sum *sum,
			      const struct shared_reback_result *res)
{
	if (!sum->any || res->status > sum->worst)
		sum->worst = res->status;
	sum->any = true;
	sum->huge_bytes += res->huge_bytes;
	if (res->policy_known) {
		sum->policy_known = true;
		sum->policy = res->policy;
		sum->tmpfs_mount = res->tmpfs_mount;
	}
}

static int shared_reback_run(const struct vm_backing *b, uint64_t gpa,
			     uint64_t off, uint64_t len, void *arg)
{
	struct shared_reback_sum *sum = arg;
	struct shared_reback_result res;
	int r;

	r = backend_shared_reback(b->fd, b->kind, off, len, &res);
	if (r < 0)
		return r;
	shared_reback_add(sum, &res);
	return 0;
}

int backend_shared_vm_reback(const struct vm_layout *l, uint64_t gpa,
			     uint64_t len, struct shared_reback_sum *sum)
{
	return shared_for_runs(l, gpa, len, shared_reback_run, sum);
}

/* ---- plans: the same work on a worker thread ------------------------------ */

struct shared_plan_build {
	const struct vm_layout *l;
	struct shared_plan *p;
	size_t cap;
	int *backing_fd;		/* per backing: the plan's dup, or -1 */
};

static int shared_plan_run(const struct vm_backing *b, uint64_t gpa,
			   uint64_t off, uint64_t len, void *arg)
{
	struct shared_plan_build *pb = arg;
	struct shared_plan *p = pb->p;
	size_t bi = (size_t)(b - pb->l->backings);
	struct shared_run *run;

	if (b->fd < 0)
		return -EBADF;
	if (pb->backing_fd[bi] < 0) {
		int fd = fcntl(b->fd, F_DUPFD_CLOEXEC, 3);

		if (fd < 0)
			return -errno;
		pb->backing_fd[bi] = fd;
		p->fds[p->nfds++] = fd;
	}
	if (p->nruns == pb->cap) {
		size_t cap = pb->cap ? pb->cap * 2 : 16;
		struct shared_run *n = realloc(p->runs, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		p->runs = n;
		pb->cap = cap;
	}
	run = &p->runs[p->nruns++];
	*run = (struct shared_run) {
		.gpa = gpa, .len = len, .offset = off, .fd = pb->backing_fd[bi],
		.kind = b->kind, .r = -ECANCELED,
	};
	return 0;
}

int backend_shared_plan_new(const struct vm_layout *l,
			    const struct proto_range *ranges, size_t nranges,
			    struct shared_plan **ret_plan)
{
	struct shared_plan_build pb = { .l = l };
	struct shared_plan *p;
	int r = 0;

	if (!l)
		return -ENODATA;
	p = calloc(1, sizeof(*p));
	pb.backing_fd = malloc((l->nbackings ? l->nbackings : 1) * sizeof(int));
	if (p)
		p->fds = malloc((l->nbackings ? l->nbackings : 1) * sizeof(int));
	if (!p || !pb.backing_fd || !p->fds) {
		free(pb.backing_fd);
		backend_shared_plan_free(p);
		return -ENOMEM;
	}
	for (size_t i = 0; i < l->nbackings; i++)
		pb.backing_fd[i] = -1;
	pb.p = p;
	for (size_t i = 0; i < nranges && r == 0; i++)
		r = shared_for_runs(l, ranges[i].gpa, ranges[i].len, shared_plan_run, &pb);
	free(pb.backing_fd);
	if (r < 0) {
		backend_shared_plan_free(p);
		return r;
	}
	*ret_plan = p;
	return 0;
}

void backend_shared_plan_free(struct shared_plan *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->nfds; i++)
		close(p->fds[i]);
	free(p->fds);
	free(p->runs);
	free(p);
}

uint64_t backend_shared_plan_punch(struct shared_plan *p, const _Atomic bool *stop)
{
	uint64_t freed = 0;

	for (size_t i = 0; i < p->nruns; i++) {
		struct shared_run *run = &p->runs[i];

		if (stop && atomic_load(stop))
			break;
		run->freed = 0;
		run->r = backend_shared_reclaim(run->fd, run->offset, run->len,
						&run->freed);
		freed += run->freed;
	}
	return freed;
}

int backend_shared_plan_reback(struct shared_plan *p, struct shared_reback_sum *sum)
{
	for (size_t i = 0; i < p->nruns; i++) {
		struct shared_run *run = &p->runs[i];
		struct shared_reback_result res;

		run->r = backend_shared_reback(run->fd, run->kind, run->offset,
					       run->len, &res);
		if (run->r < 0)
			return run->r;
		shared_reback_add(sum, &res);
	}
	return 0;
}

void backend_shared_reback_note(const struct shared_reback_sum *sum,
				char *buf, size_t sz)
{
	switch (sum->worst) {
	case SHARED_REBACK_HUGE:
		buf[0] = '\0';
		break;
	case SHARED_REBACK_SMALL_POLICY:
		if (sum->tmpfs_mount && sum->policy != HOSTMEM_SHMEM_DENY)
			snprintf(buf, sz, "the backing's tmpfs mount has huge=%s: "
				 "re-backed with 4 KiB pages; mount it with "
				 "huge=within_size for 2 MiB folios",
				 hostmem_shmem_thp_name(sum->policy));
		else
			snprintf(buf, sz, "host shmem_enabled is '%s': re-backed with "
				 "4 KiB pages; set /sys/kernel/mm/transparent_hugepage/"
				 "shmem_enabled to advise for 2 MiB folios",
				 sum->policy_known ?
				 hostmem_shmem_thp_name(sum->policy) : "?");
		break;
	case SHARED_REBACK_PARTIAL:
		snprintf(buf, sz, "only part re-backed with 2 MiB folios (blocks held "
			 "4 KiB pages already, or no huge page was free)");
		break;
	case SHARED_REBACK_SMALL:
		snprintf(buf, sz, "re-backed with 4 KiB pages although the policy "
			 "allows 2 MiB folios (no huge page was free?)");
		break;
	}
}

uint64_t backend_shared_vm_allocated(const struct vm_layout *l)
{
	uint64_t sum = 0, b;

	for (size_t i = 0; l && i < l->nbackings; i++)
		if (l->backings[i].fd >= 0 &&
		    hostmem_backing_allocated(l->backings[i].fd, &b) == 0)
			sum += b;
	return sum;
}

bool backend_shared_vm_block_is_hole(const struct vm_layout *l, uint64_t gpa)
{
	const struct vm_ram_range *rr;
	uint64_t off;
	off_t data;

	if (vm_layout_translate(l, gpa, SHARED_BLOCK_SIZE, &rr, &off) < 0)
		return false;
	data = lseek(l->backings[rr->backing].fd, (off_t)off, SEEK_DATA);
	if (data < 0)
		return errno == ENXIO;
	return (uint64_t)data >= off + SHARED_BLOCK_SIZE;
}

int backend_shared_vm_backed_blocks(const struct vm_layout *l,
				    shared_block_fn fn, void *arg)
{
	const uint64_t blk = SHARED_BLOCK_SIZE;

	for (size_t i = 0; i < l->nranges; i++) {
		const struct vm_ram_range *rr = &l->ranges[i];
		uint64_t start = (rr->gpa + blk - 1) & ~(blk - 1);
		uint64_t end = (rr->gpa + rr->len) & ~(blk - 1);
		_cleanup_free_ uint8_t *bits = NULL;
		uint64_t off, nblk;
		int r;

		if (end <= start)
			continue;
		off = rr->file_offset + (start - rr->gpa);
		if (off % blk)
			continue;
		nblk = (end - start) / blk;
		bits = calloc((nblk + 7) / 8, 1);
		if (!bits)
			return -ENOMEM;
		if (backend_shared_backed_blocks(l->backings[rr->backing].fd, off,
						 end - start, bits, (nblk + 7) / 8,
						 NULL) < 0)
			continue;
		for (uint64_t k = 0; k < nblk; k++) {
			if (!(bits[k / 8] & (1u << (k % 8))))
				continue;
			r = fn(start + k * blk, arg);
			if (r)
				return r;
		}
	}
	return 0;
}
