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
 * A re-collapse walks the same way over the ranges queued by
 * collapse_queue() (a copy taken when it starts; ranges queued meanwhile
 * wait for the next one) instead of the whole RAM, counting into
 * st.rerun.  Only one walk runs at a time: a queue that arrives during
 * the pass runs after it.
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

struct collapse_window {
	uint64_t gpa, len;
};

struct collapse {
	struct loop *loop;
	char name[64];
	uint32_t cpu_percent;
	struct loop_timer slice;

	const struct vm_layout *layout;	/* the walk's; NULL when none runs */
	pid_t pid;
	int pidfd;			/* QEMU, -1 when no walk runs */
	bool rerun;			/* the walk is a re-collapse */
	size_t range;			/* cursor: layout range (pass) or window
					 * (re-collapse) index */
	uint64_t gpa;			/* cursor: next block in it */
	bool retry;			/* the block at the cursor got EAGAIN once */
	uint64_t start_ms;
	struct collapse_status st;

	/* re-collapse: the walk's windows, and those queued for the next */
	struct collapse_window walk[COLLAPSE_QUEUE_MAX];
	size_t nwalk;
	struct collapse_window queue[COLLAPSE_QUEUE_MAX];
	size_t nqueue;
	const struct vm_layout *queue_layout;	/* layout and pid of the queue */
	pid_t queue_pid;
};

/* Per-walk counters: the pass's or the re-collapses'. */
struct collapse_acc {
	uint64_t *candidate, *collapsed, *folio_only, *hole, *failed;
	uint64_t folio_only_sink;
};

static void collapse_acc_of(struct collapse *c, struct collapse_acc *a)
{
	if (c->rerun) {
		a->candidate = &c->st.rerun.candidate_bytes;
		a->collapsed = &c->st.rerun.collapsed_bytes;
		a->folio_only = &a->folio_only_sink;
		a->hole = &c->st.rerun.hole_bytes;
		a->failed = &c->st.rerun.failed_bytes;
	} else {
		a->candidate = &c->st.candidate_bytes;
		a->collapsed = &c->st.collapsed_bytes;
		a->folio_only = &c->st.folio_only_bytes;
		a->hole = &c->st.hole_bytes;
		a->failed = &c->st.failed_bytes;
	}
}

static void collapse_rerun_start(struct collapse *c);

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

	if (c->rerun) {
		/* a re-collapse: its own counters, the pass's state stays */
		loop_timer_disarm(c->loop, &c->slice);
		if (c->pidfd >= 0)
			close(c->pidfd);
		c->pidfd = -1;
		c->layout = NULL;
		c->rerun = false;
		c->st.rerun.running = false;
		if (state == COLLAPSE_DONE)
			log_info("VM '%s': re-collapse of ranges the guest took back: "
				 "%llu MiB collapsed in all, %llu MiB failed, %.1f ms "
				 "CPU in all", c->name, MIB(c->st.rerun.collapsed_bytes),
				 MIB(c->st.rerun.failed_bytes),
				 (double)c->st.rerun.cpu_ns / 1e6);
		else if (error != -ECANCELED)
			log_warning("VM '%s': re-collapse stopped: %s", c->name,
				    strerror(-error));
		if (state == COLLAPSE_DONE && c->nqueue)
			collapse_rerun_start(c);
		return;
	}
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
	if (state == COLLAPSE_DONE && c->nqueue)
		collapse_rerun_start(c);
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
	struct collapse_acc a;
	int r;

	collapse_acc_of(c, &a);
	r = hostmem_backing_data_bytes(b->fd, off, COLLAPSE_BLOCK, &data);
	if (r < 0 || data < COLLAPSE_BLOCK) {
		*a.hole += COLLAPSE_BLOCK;
		return 0;
	}
	*a.candidate += COLLAPSE_BLOCK;
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
		*a.candidate -= COLLAPSE_BLOCK;
		return -EAGAIN;
	}
	if (r == -EPERM || r == -ESRCH)
		return r;
	if (r == 0) {
		*a.collapsed += COLLAPSE_BLOCK;
		if (own)
			*a.folio_only += COLLAPSE_BLOCK;
	} else {
		if (!*a.failed)
			log_debug("VM '%s': MADV_COLLAPSE of gpa 0x%llx: %s", c->name,
				  (unsigned long long)gpa, strerror(-r));
		*a.failed += COLLAPSE_BLOCK;
	}
	return 0;
}

/* Can the block at gpa of range rr be collapsed at all (shared, not hugetlbfs)? */
static bool collapse_range_ok(const struct vm_layout *l, const struct vm_ram_range *rr,
			      uint64_t gpa)
{
	const struct vm_backing *b = &l->backings[rr->backing];

	return b->fd >= 0 && b->kind != VM_BACKING_HUGETLBFS && gpa >= rr->gpa &&
	       gpa + COLLAPSE_BLOCK <= rr->gpa + rr->len;
}

/* Moves the cursor to the next 2 MiB block; false at the end of the RAM. */
static bool collapse_cursor_pass(struct collapse *c, const struct vm_ram_range **ret_rr)
{
	const struct vm_layout *l = c->layout;

	while (c->range < l->nranges) {
		const struct vm_ram_range *rr = &l->ranges[c->range];
		uint64_t start = (rr->gpa + COLLAPSE_BLOCK - 1) & ~(COLLAPSE_BLOCK - 1);

		if (c->gpa < start)
			c->gpa = start;
		if (collapse_range_ok(l, rr, c->gpa)) {
			*ret_rr = rr;
			return true;
		}
		c->range++;
		c->gpa = 0;
	}
	return false;
}

/* The same over the re-collapse's windows: each block in its layout range. */
static bool collapse_cursor_rerun(struct collapse *c, const struct vm_ram_range **ret_rr)
{
	const struct vm_layout *l = c->layout;

	while (c->range < c->nwalk) {
		const struct collapse_window *w = &c->walk[c->range];

		if (c->gpa < w->gpa)
			c->gpa = w->gpa;	/* windows are block-aligned */
		while (c->gpa + COLLAPSE_BLOCK <= w->gpa + w->len) {
			for (size_t i = 0; i < l->nranges; i++) {
				if (collapse_range_ok(l, &l->ranges[i], c->gpa)) {
					*ret_rr = &l->ranges[i];
					return true;
				}
			}
			c->gpa += COLLAPSE_BLOCK;	/* not collapsible RAM */
		}
		c->range++;
		c->gpa = 0;
	}
	return false;
}

static bool collapse_cursor(struct collapse *c, const struct vm_ram_range **ret_rr)
{
	return c->rerun ? collapse_cursor_rerun(c, ret_rr) : collapse_cursor_pass(c, ret_rr);
}

static void collapse_slice(struct loop_timer *t)
{
	struct collapse *c = t->userdata;
	uint64_t t0 = collapse_thread_ns(), used;
	const struct vm_ram_range *rr;
	uint64_t *cpu = c->rerun ? &c->st.rerun.cpu_ns : &c->st.cpu_ns;

	for (;;) {
		int r;

		if (!collapse_cursor(c, &rr)) {
			*cpu += collapse_thread_ns() - t0;
			return collapse_end(c, COLLAPSE_DONE, 0, NULL);
		}
		r = collapse_block(c, rr, c->gpa);
		if (r == -EAGAIN) {
			c->retry = true;
			break;
		}
		if (r < 0) {
			*cpu += collapse_thread_ns() - t0;
			return collapse_end(c, COLLAPSE_FAILED, r, "%s",
					    r == -EPERM ? "process_madvise(MADV_COLLAPSE) "
					    "not permitted (the daemon needs CAP_SYS_NICE)" :
					    "QEMU is gone");
		}
		c->retry = false;
		c->gpa += COLLAPSE_BLOCK;
		if (!c->rerun)
			c->st.scanned_bytes += COLLAPSE_BLOCK;
		if (collapse_thread_ns() - t0 >= COLLAPSE_SLICE_NS)
			break;
	}
	used = collapse_thread_ns() - t0;
	*cpu += used;
	loop_timer_arm(c->loop, &c->slice,
		       used / 1000000 * (100 - c->cpu_percent) / c->cpu_percent + 1);
}

int collapse_start(struct collapse *c, const struct vm_layout *l, pid_t pid)
{
	bool anon = false;
	int fd;

	if (c->st.state == COLLAPSE_RUNNING || c->rerun)
		return -EBUSY;
	/* the pass covers everything queued so far */
	c->nqueue = 0;
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
	c->nqueue = 0;
	c->queue_layout = NULL;
	if (c->rerun)
		log_debug("VM '%s': re-collapse dropped: %s", c->name, why);
	collapse_end(c, COLLAPSE_FAILED, -ECANCELED, "%s", why);
}

bool collapse_running(const struct collapse *c)
{
	return c->st.state == COLLAPSE_RUNNING || c->rerun;
}

/* Starts a re-collapse of the queue (the pass is not running). */
static void collapse_rerun_start(struct collapse *c)
{
	int fd;

	if (!c->nqueue || !c->queue_layout)
		return;
	fd = (int)syscall(SYS_pidfd_open, c->queue_pid, 0);
	if (fd < 0) {
		log_debug("VM '%s': re-collapse: pidfd_open(%d): %s", c->name,
			  (int)c->queue_pid, strerror(errno));
		c->nqueue = 0;
		return;
	}
	memcpy(c->walk, c->queue, c->nqueue * sizeof(c->queue[0]));
	c->nwalk = c->nqueue;
	c->nqueue = 0;
	c->pidfd = fd;
	c->layout = c->queue_layout;
	c->pid = c->queue_pid;
	c->rerun = true;
	c->range = 0;
	c->gpa = 0;
	c->retry = false;
	c->st.rerun.running = true;
	c->st.rerun.passes++;
	loop_timer_arm(c->loop, &c->slice, 0);
}

/* Adds [s, e) (block-aligned) to the queue, merging with a neighbour. */
static bool collapse_queue_add(struct collapse *c, uint64_t s, uint64_t e)
{
	for (size_t i = 0; i < c->nqueue; i++) {
		struct collapse_window *w = &c->queue[i];

		if (s <= w->gpa + w->len && e >= w->gpa) {
			uint64_t ns = s < w->gpa ? s : w->gpa;
			uint64_t ne = e > w->gpa + w->len ? e : w->gpa + w->len;

			w->gpa = ns;
			w->len = ne - ns;
			return true;
		}
	}
	if (c->nqueue >= COLLAPSE_QUEUE_MAX)
		return false;
	c->queue[c->nqueue].gpa = s;
	c->queue[c->nqueue].len = e - s;
	c->nqueue++;
	return true;
}

void collapse_queue(struct collapse *c, const struct vm_layout *l, pid_t pid,
		    uint64_t gpa, uint64_t len)
{
	uint64_t s = gpa & ~(COLLAPSE_BLOCK - 1);
	uint64_t e = (gpa + len + COLLAPSE_BLOCK - 1) & ~(COLLAPSE_BLOCK - 1);
	uint64_t lo = UINT64_MAX, hi = 0;

	if (!c->cpu_percent || !l || !l->nranges || len == 0 ||
	    gpa > UINT64_MAX - COLLAPSE_BLOCK - len)
		return;
	if (c->queue_layout && (c->queue_layout != l || c->queue_pid != pid))
		c->nqueue = 0;	/* another QEMU: the old queue is moot */
	c->queue_layout = l;
	c->queue_pid = pid;
	for (size_t i = 0; i < l->nranges; i++) {
		if (l->ranges[i].gpa < lo)
			lo = l->ranges[i].gpa;
		if (l->ranges[i].gpa + l->ranges[i].len > hi)
			hi = l->ranges[i].gpa + l->ranges[i].len;
	}
	/* clipped to the RAM: the cursor skips what is not collapsible */
	if (s < (lo & ~(COLLAPSE_BLOCK - 1)))
		s = lo & ~(COLLAPSE_BLOCK - 1);
	if (e > hi)
		e = hi;
	if (e <= s)
		return;
	c->st.rerun.queued_bytes += e - s;
	if (!collapse_queue_add(c, s, e)) {
		/* too many: the whole RAM instead */
		c->nqueue = 0;
		(void)collapse_queue_add(c, lo & ~(COLLAPSE_BLOCK - 1), hi);
	}
	if (!collapse_running(c))
		collapse_rerun_start(c);
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
