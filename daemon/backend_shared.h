/* SPDX-License-Identifier: GPL-2.0 */
/*
 * backend_shared.h - reclaim and re-back on a shared RAM backing file
 * (prefix backend_shared_, types shared_).
 *
 * The "shared" backend: QEMU maps guest RAM MAP_SHARED from a memfd,
 * hugetlbfs or tmpfs file, so the daemon can open that file and punch
 * holes in it (reclaim) or allocate huge folios in it (re-back).  All
 * offsets are file offsets (see vm_layout_translate()) and must be
 * multiples of SHARED_BLOCK_SIZE (and of the huge page size on hugetlbfs).
 */
#ifndef VDF_BACKEND_SHARED_H
#define VDF_BACKEND_SHARED_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hostmem.h"
#include "vm_layout.h"
#include "vmdefrag/proto.h"

#define SHARED_BLOCK_SIZE	(2ull << 20)

/*
 * Reclaims [offset, offset+len): fallocate(PUNCH_HOLE|KEEP_SIZE).  The
 * guest's data in that range is gone afterwards (reads return zeroes):
 * call it only on ranges the guest has captured.  *ret_freed is the drop of
 * the file's st_blocks across the call (0 if other ranges of the file grew
 * meanwhile by more than was freed).
 * -EINVAL misaligned, -ERANGE beyond the end of the file.
 */
int backend_shared_reclaim(int fd, uint64_t offset, uint64_t len,
			   uint64_t *ret_freed);

/*
 * Which SHARED_BLOCK_SIZE blocks of [offset, offset+len) hold any data,
 * by SEEK_DATA (bit i of bitmap = block at offset + i * 2 MiB).  bitmap
 * must hold len / 2 MiB bits; it is fully written on success.
 * On hugetlbfs the kernel may not implement SEEK_HOLE, in which case every
 * block reads as backed (conservative: never claims a block is empty).
 */
int backend_shared_backed_blocks(int fd, uint64_t offset, uint64_t len,
				 uint8_t *bitmap, size_t bitmap_bytes,
				 uint64_t *ret_nbacked);

enum shared_reback_status {
	/* every block of the range is now mapped by a huge page */
	SHARED_REBACK_HUGE,
	/* some blocks are huge, others got base pages (a block already held
	 * 4 KiB pages, or no free huge page was available) */
	SHARED_REBACK_PARTIAL,
	/* backed, but with base pages only although the policy allowed huge */
	SHARED_REBACK_SMALL,
	/* backed with base pages only because host policy forbids huge shmem
	 * folios (shmem_enabled never/deny); fix the host setting */
	SHARED_REBACK_SMALL_POLICY,
};

struct shared_reback_result {
	enum shared_reback_status status;
	uint64_t allocated;	/* growth of the file's st_blocks, bytes */
	uint64_t huge_bytes;	/* bytes of the range behind huge pages */
	bool policy_known;	/* the policy below could be read */
	enum hostmem_shmem_thp policy;	/* shmem_enabled, or for a file on a
					 * tmpfs mount that mount's huge= */
	bool tmpfs_mount;	/* policy is a tmpfs mount's huge= option */
};

/*
 * Re-backs [offset, offset+len) with 2 MiB folios where possible:
 *  - hugetlbfs: fallocate(0);
 *  - memfd / tmpfs file: a temporary 2 MiB-aligned MAP_SHARED mapping of the
 *    range, madvise(MADV_HUGEPAGE), then madvise(MADV_POPULATE_WRITE); the
 *    result is measured from this process's smaps (ShmemPmdMapped /
 *    FilePmdMapped of the temporary mapping: a block counts as huge only
 *    if the kernel mapped it with a PMD, i.e. it really is a 2 MiB folio);
 *  - other files: fallocate(0), base pages.
 *
 * !!! PRECONDITION: the range must be one the guest has CAPTURED (the
 * !!! guest module owns it and does not read or write it).  Populating
 * !!! does not change existing data, but every hole becomes a page of
 * !!! ZEROES: if the guest believed data lived there, that data was
 * !!! already lost by the reclaim, and re-backing makes the loss silent.
 * !!! Never call this on RAM the guest is using.
 *
 * Returns 0 and the status in *ret_result; never pretends: with
 * shmem_enabled never/deny (memfd), or a tmpfs mount without huge= (file),
 * the status is SHARED_REBACK_SMALL_POLICY.
 */
int backend_shared_reback(int fd, enum vm_backing_kind kind, uint64_t offset,
			  uint64_t len, struct shared_reback_result *ret_result);

/*
 * The setting that decides whether a shmem backing gets 2 MiB folios: the
 * host's shmem_enabled for a memfd (VM_BACKING_MEMFD), the tmpfs mount's
 * huge= for a file on a tmpfs mount (VM_BACKING_FILE; shmem_enabled deny
 * or force override it, hostmem_tmpfs_huge()).  *ret_tmpfs_mount says
 * which one it is.  -EMEDIUMTYPE for a file not on tmpfs, -EINVAL for other
 * kinds, or the errno of reading the setting.
 */
int backend_shared_shmem_policy(int fd, enum vm_backing_kind kind,
				enum hostmem_shmem_thp *ret_policy,
				bool *ret_tmpfs_mount);

const char *backend_shared_status_name(enum shared_reback_status status);

/*
 * ---- a VM's guest-physical RAM (sub-prefix backend_shared_vm_) ----
 *
 * The same operations on guest-physical ranges of a VM's layout: each
 * range is cut into the runs one backing file holds contiguously
 * (vm_layout_translate()) and the primitives above run on each.  Ranges
 * are SHARED_BLOCK_SIZE multiples; -ERANGE if a block is not guest RAM of
 * the layout.  The layout's backings must be shared files (the caller
 * checks its backend).
 */

/* Punches [gpa, gpa+len) and adds the drop of st_blocks of each run
 * punched to *freed (also those before a run that fails). */
int backend_shared_vm_punch(const struct vm_layout *l, uint64_t gpa,
			    uint64_t len, uint64_t *freed);

/* What re-backing one or more ranges came to, summed over their runs. */
struct shared_reback_sum {
	bool any;			/* a run was re-backed */
	enum shared_reback_status worst;
	uint64_t huge_bytes;
	bool policy_known;		/* the last policy read */
	enum hostmem_shmem_thp policy;
	bool tmpfs_mount;		/* policy is a tmpfs mount's huge= */
};

/*
 * Re-backs [gpa, gpa+len) (backend_shared_reback() on each run: the same
 * PRECONDITION) and adds the result to *sum (zero it before the first
 * range).
 */
int backend_shared_vm_reback(const struct vm_layout *l, uint64_t gpa,
			     uint64_t len, struct shared_reback_sum *sum);

/*
 * ---- the same work, carried out away from the layout (backend_shared_plan_) ----
 *
 * A plan is guest-physical ranges resolved, on the loop's thread, into the
 * runs of the backing files that hold them, with each file's fd
 * duplicated: a worker thread can then punch or re-back them while the
 * loop changes or frees the layout (QEMU detached, memory hot-plug).
 * Each run keeps its own result.  Not shared between threads: built on
 * the loop, handed to one worker, read back on the loop after it.
 */
struct shared_run {
	uint64_t gpa, len;		/* guest-physical */
	uint64_t offset;		/* in the backing file */
	int fd;				/* the plan's duplicate */
	enum vm_backing_kind kind;
	int r;				/* 0, negative errno, -ECANCELED: not run */
	uint64_t freed;			/* punch: drop of st_blocks */
};

struct shared_plan {
	size_t nruns;
	struct shared_run *runs;
	size_t nfds;
	int *fds;			/* one per backing the runs use */
};

/* -ERANGE if a block is not RAM of the layout, -ENOMEM, or dup()'s errno. */
int backend_shared_plan_new(const struct vm_layout *l,
			    const struct proto_range *ranges, size_t nranges,
			    struct shared_plan **ret_plan);
void backend_shared_plan_free(struct shared_plan *p);

/*
 * Punches each run (backend_shared_reclaim()), checking *stop before each:
 * once it reads true the runs left get -ECANCELED.  Thread-safe against
 * everything but the plan.  The bytes freed.
 */
uint64_t backend_shared_plan_punch(struct shared_plan *p, const _Atomic bool *stop);

/*
 * Re-backs each run (backend_shared_reback(): the same PRECONDITION) and
 * adds the results to *sum; stops at the first run that fails and
 * returns its errno (the runs left get -ECANCELED).
 */
int backend_shared_plan_reback(struct shared_plan *p, struct shared_reback_sum *sum);

/* Why a re-back was not all huge, in one line for the user ("" if it was). */
void backend_shared_reback_note(const struct shared_reback_sum *sum,
				char *buf, size_t sz);

/* Bytes allocated in all the layout's backing files now (st_blocks);
 * 0 for no layout. */
uint64_t backend_shared_vm_allocated(const struct vm_layout *l);

/* Is the block at gpa a hole in its backing right now?  (false if it is
 * not the layout's RAM) */
bool backend_shared_vm_block_is_hole(const struct vm_layout *l, uint64_t gpa);

/*
 * Calls fn for every SHARED_BLOCK_SIZE block of guest RAM whose backing
 * holds data (backend_shared_backed_blocks()), ascending in each RAM
 * range; stops at fn's first non-zero return and returns it.  A RAM range
 * not block-aligned in its file, or whose holes cannot be read, is
 * skipped.  -ENOMEM.
 */
typedef int (*shared_block_fn)(uint64_t gpa, void *arg);
int backend_shared_vm_backed_blocks(const struct vm_layout *l,
				    shared_block_fn fn, void *arg);

#endif /* VDF_BACKEND_SHARED_H */
