// SPDX-License-Identifier: GPL-2.0
/*
 * collapse.c - MADV_COLLAPSE over a VM's guest RAM, in CPU-bounded slices.
 *
 * A pass is a cursor over the layout's RAM ranges, in 2 MiB guest-physical
 * blocks.  Each block is classified from its backing file (SEEK_DATA /
 * SEEK_HOLE; anonymous RAM is not walked, see below):
 *
 *   hole or partly backed  skipped: MADV_COLLAPSE on shmem fills holes,
 *                          which would re-allocate what vmdefrag reclaimed
 *   backed entirely        collapsed:
 *     QEMU maps it 2 MiB-aligned (a file with align=2M, hugetlbfs is
 *       skipped as already huge): process_madvise(pidfd, {hva, 2 MiB},
 *       MADV_COLLAPSE) on QEMU's own mapping, so the kernel both builds
 *       the 2 MiB folio and maps it with a PMD in QEMU;
 *     QEMU's mapping is not 2 MiB-aligned (QEMU 7.2 maps memfds at 4 KiB
 *       alignment): the daemon maps that 2 MiB of the file itself,
 *       aligned, read-only, and collapses there; the page cache then holds
 *       one 2 MiB folio, which QEMU keeps mapping with 4 KiB entries
 *       (counted as folio_only).
 *
 * The work of MADV_COLLAPSE is done by the calling thread, so the pass's
 * cost is this thread's CPU time (CLOCK_THREAD_CPUTIME_ID).  A slice runs
 * blocks until it used COLLAPSE_SLICE_NS, then the next slice is armed
 * after slice * (100 - cpu_percent) / cpu_percent: on average the pass
 * uses cpu_percent of one CPU, and no slice keeps the loop (other VMs)
 * waiting longer than about one slice.
 *
 * Errors per block: EAGAIN is retried once in the next slice; ENOMEM and
 * EINVAL count the block as failed.  EPERM (process_madvise needs
 * CAP_SYS_NICE and ptrace access to QEMU) and ESRCH (QEMU gone) end the
 * pass as FAILED with a note.
 *
 * Anonymous RAM (the hint backend) is not walked: it has no SEEK_DATA, and
 * collapsing a range of zero-page PTEs (what post-copy leaves for ranges
 * the source sent as zero) would allocate it; khugepaged handles it.
 *
 * Single-threaded, on the loop's thread.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "collapse.h"
#include "hostmem.h"
#include "log.h"
#include "loop.h"
#include "vm_layout.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE	25
#endif

#define COLLAPSE_BLOCK		(2ull << 20)
#define COLLAPSE_SLICE_NS	(10ull * 1000 * 1000)
#define MIB(x)			((unsigned long long)((x) >> 20))

struct collapse {
	struct loop *loop;
	char name[64];
	uint32_t cpu_percent;
	struct loop_timer slice;

	const struct vm_layout *layout;	/* the pass's; NULL when none runs */
	pid_t pid;
	int pidfd;			/* QEMU, -1 when no pass runs */
	size_t range;			/* cursor: layout range index */
	uint64_t gpa;			/* cursor: next block in that range */
	bool retry;			/* the block at the cursor got EAGAIN once */
	uint64_t start_ms;
	struct collapse_status st;
};

const char *collapse_state_name(enum collapse_state state)
{
	switch (state) {
	case COLLAPSE_IDLE: return "idle";
	case COLLAPSE_RUNNING: return "running";
	case COLLAPSE_DONE: return "done";
	case COLLAPSE_FAILED: return "failed";
	case COLLAPSE_DISABLED: return "disabled";
	}
	return "?";
}

static uint64_t collapse_thread_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void collapse_end(struct collapse *c, enum collapse_state state, int error,
			 const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void collapse_end(struct collapse *c, enum collapse_state state, int error,
			 const char *fmt, ...)
{
	va_list ap;

	if (c->st.state != COLLAPSE_RUNNING)
		return;
	loop_timer_disarm(c->loop, &c->slice);
	if (c->pidfd >= 0)
		close(c->pidfd);
	c->pidfd = -1;
	c->layout = NULL;
	c->st.state = state;
	c->st.error = error;
	c->st.elapsed_ms = loop_now_ms() - c->start_ms;
	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(c->st.note, sizeof(c->st.note), fmt, ap);
		va_end(ap);
	}
	if (state == COLLAPSE_DONE)
		log_info("VM '%s': collapse pass done: %llu of %llu MiB collapsed to "
			 "2 MiB pages (%llu MiB folios only), %llu MiB failed, %llu MiB "
			 "holes skipped, %.1f ms CPU in %.1f s", c->name,
			 MIB(c->st.collapsed_bytes), MIB(c->st.candidate_bytes),
			 MIB(c->st.folio_only_bytes), MIB(c->st.failed_bytes),
			 MIB(c->st.hole_bytes), (double)c->st.cpu_ns / 1e6,
			 (double)c->st.elapsed_ms / 1000.0);
	else
		log_warning("VM '%s': collapse pass stopped after %llu MiB: %s",
			    c->name, MIB(c->st.scanned_bytes), c->st.note);
}

/*
 * Collapses 2 MiB of the file at off through the daemon's own aligned,
 * read-only mapping: the page cache gets a 2 MiB folio.
 */
static int collapse_own_mapping(int fd, uint64_t off)
{
	uint8_t *res, *at;
	void *m;
	int r = 0;

	res = mmap(NULL, 2 * COLLAPSE_BLOCK, PROT_NONE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (res == MAP_FAILED)
		return -errno;
	at = (uint8_t *)(((uintptr_t)res + COLLAPSE_BLOCK - 1) & ~(COLLAPSE_BLOCK - 1));
	m = mmap(at, COLLAPSE_BLOCK, PROT_READ, MAP_SHARED | MAP_FIXED, fd, (off_t)off);
	if (m == MAP_FAILED)
		r = -errno;
	else if (madvise(m, COLLAPSE_BLOCK, MADV_HUGEPAGE) < 0 ||
		 madvise(m, COLLAPSE_BLOCK, MADV_COLLAPSE) < 0)
		r = -errno;
	munmap(res, 2 * COLLAPSE_BLOCK);
	return r;
}

/* One block: 0 done (any outcome counted), -EAGAIN retry later, or fatal. */
static int collapse_block(struct collapse *c, const struct vm_ram_range *rr,
			  uint64_t gpa)
{
	const struct vm_backing *b = &c->layout->backings[rr->backing];
	uint64_t hva = rr->hva + (gpa - rr->gpa);
	uint64_t off = rr->file_offset + (gpa - rr->gpa);
	uint64_t data = 0;
	bool own = hva % COLLAPSE_BLOCK != 0;
	int r;

	r = hostmem_backing_data_bytes(b->fd, off, COLLAPSE_BLOCK, &data);
	if (r < 0 || data < COLLAPSE_BLOCK) {
		c->st.hole_bytes += COLLAPSE_BLOCK;
		return 0;
	}
	c->st.candidate_bytes += COLLAPSE_BLOCK;
	if (own && off % COLLAPSE_BLOCK == 0) {
		r = collapse_own_mapping(b->fd, off);
	} else if (own) {
		r = -EINVAL;
	} else {
		struct iovec iov = { .iov_base = (void *)(uintptr_t)hva,
				     .iov_len = COLLAPSE_BLOCK };

		r = syscall(SYS_process_madvise, c->pidfd, &iov, 1, MADV_COLLAPSE, 0) < 0 ?
		    -errno : 0;
	}
	if (r == -EAGAIN && !c->retry) {
		c->st.candidate_bytes -= COLLAPSE_BLOCK;
		return -EAGAIN;
	}
	if (r == -EPERM || r == -ESRCH)
		return r;
	if (r == 0) {
		c->st.collapsed_bytes += COLLAPSE_BLOCK;
		if (own)
			c->st.folio_only_bytes += COLLAPSE_BLOCK;
	} else {
		if (!c->st.failed_bytes)
			log_debug("VM '%s': MADV_COLLAPSE of gpa 0x%llx: %s", c->name,
				  (unsigned long long)gpa, strerror(-r));
		c->st.failed_bytes += COLLAPSE_BLOCK;
	}
	return 0;
}

/* Moves the cursor to the next 2 MiB block; false at the end of the RAM. */
static bool collapse_cursor(struct collapse *c, const struct vm_ram_range **ret_rr)
{
	const struct vm_layout *l = c->layout;

	while (c->range < l->nranges) {
		const struct vm_ram_range *rr = &l->ranges[c->range];
		const struct vm_backing *b = &l->backings[rr->backing];
		uint64_t start = (rr->gpa + COLLAPSE_BLOCK - 1) & ~(COLLAPSE_BLOCK - 1);

		if (c->gpa < start)
			c->gpa = start;
		if (b->fd >= 0 && b->kind != VM_BACKING_HUGETLBFS &&
		    c->gpa + COLLAPSE_BLOCK <= rr->gpa + rr->len) {
			*ret_rr = rr;
			return true;
		}
		c->range++;
		c->gpa = 0;
	}
	return false;
}

static void collapse_slice(struct loop_timer *t)
{
	struct collapse *c = t->userdata;
	uint64_t t0 = collapse_thread_ns(), used;
	const struct vm_ram_range *rr;

	for (;;) {
		int r;

		if (!collapse_cursor(c, &rr)) {
			c->st.cpu_ns += collapse_thread_ns() - t0;
			return collapse_end(c, COLLAPSE_DONE, 0, NULL);
		}
		r = collapse_block(c, rr, c->gpa);
		if (r == -EAGAIN) {
			c->retry = true;
			break;
		}
		if (r < 0) {
			c->st.cpu_ns += collapse_thread_ns() - t0;
			return collapse_end(c, COLLAPSE_FAILED, r, "%s",
					    r == -EPERM ? "process_madvise(MADV_COLLAPSE) "
					    "not permitted (the daemon needs CAP_SYS_NICE)" :
					    "QEMU is gone");
		}
		c->retry = false;
		c->gpa += COLLAPSE_BLOCK;
		c->st.scanned_bytes += COLLAPSE_BLOCK;
		if (collapse_thread_ns() - t0 >= COLLAPSE_SLICE_NS)
			break;
	}
	used = collapse_thread_ns() - t0;
	c->st.cpu_ns += used;
	loop_timer_arm(c->loop, &c->slice,
		       used / 1000000 * (100 - c->cpu_percent) / c->cpu_percent + 1);
}

int collapse_start(struct collapse *c, const struct vm_layout *l, pid_t pid)
{
	bool anon = false;
	int fd;

	if (c->st.state == COLLAPSE_RUNNING)
		return -EBUSY;
	memset(&c->st, 0, sizeof(c->st));
	c->st.cpu_percent = c->cpu_percent;
	for (size_t i = 0; i < l->nranges; i++) {
		const struct vm_ram_range *rr = &l->ranges[i];
		uint64_t s = (rr->gpa + COLLAPSE_BLOCK - 1) & ~(COLLAPSE_BLOCK - 1);
		uint64_t e = (rr->gpa + rr->len) & ~(COLLAPSE_BLOCK - 1);

		if (l->backings[rr->backing].fd < 0)
			anon = true;
		else if (e > s && l->backings[rr->backing].kind != VM_BACKING_HUGETLBFS)
			c->st.ram_bytes += e - s;
	}
	if (anon)
		snprintf(c->st.note, sizeof(c->st.note), "anonymous RAM is left to "
			 "khugepaged");
	if (!c->cpu_percent) {
		c->st.state = COLLAPSE_DISABLED;
		snprintf(c->st.note, sizeof(c->st.note), "collapse_cpu_percent is 0");
		return 0;
	}
	fd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (fd < 0) {
		c->st.state = COLLAPSE_FAILED;
		c->st.error = -errno;
		snprintf(c->st.note, sizeof(c->st.note), "pidfd_open(%d): %s",
			 (int)pid, strerror(errno));
		return c->st.error;
	}
	c->pidfd = fd;
	c->layout = l;
	c->pid = pid;
	c->range = 0;
	c->gpa = 0;
	c->retry = false;
	c->start_ms = loop_now_ms();
	c->st.state = COLLAPSE_RUNNING;
	log_info("VM '%s': collapse pass over %llu MiB of guest RAM started (at most "
		 "%u%% of a CPU)", c->name, MIB(c->st.ram_bytes), c->cpu_percent);
	loop_timer_arm(c->loop, &c->slice, 0);
	return 0;
}

void collapse_abort(struct collapse *c, const char *why)
{
	collapse_end(c, COLLAPSE_FAILED, -ECANCELED, "%s", why);
}

bool collapse_running(const struct collapse *c)
{
	return c->st.state == COLLAPSE_RUNNING;
}

void collapse_get_status(const struct collapse *c, struct collapse_status *st)
{
	*st = c->st;
	if (c->st.state == COLLAPSE_RUNNING)
		st->elapsed_ms = loop_now_ms() - c->start_ms;
}

int collapse_new(struct loop *loop, const char *vm_name, uint32_t cpu_percent,
		 struct collapse **ret_c)
{
	struct collapse *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->loop = loop;
	snprintf(c->name, sizeof(c->name), "%s", vm_name);
	c->cpu_percent = cpu_percent > 100 ? 100 : cpu_percent;
	c->pidfd = -1;
	loop_timer_init(&c->slice, collapse_slice, c);
	*ret_c = c;
	return 0;
}

void collapse_free(struct collapse *c)
{
	if (!c)
		return;
	loop_timer_disarm(c->loop, &c->slice);
	if (c->pidfd >= 0)
		close(c->pidfd);
	free(c);
}

void collapse_set_cpu_percent(struct collapse *c, uint32_t cpu_percent)
{
	c->cpu_percent = cpu_percent > 100 ? 100 : cpu_percent;
	c->st.cpu_percent = c->cpu_percent;
	/* 0 turns the pass off: a running one stops where it is */
	if (!c->cpu_percent)
		collapse_end(c, COLLAPSE_DISABLED, 0, "collapse_cpu_percent set to 0");
}
