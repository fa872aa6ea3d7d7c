/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vm_layout.h - a VM's guest RAM layout, discovered from QEMU (prefix
 * vm_layout_).
 *
 * A layout is a sorted table of guest-physical RAM ranges, each pointing at
 * the backing that holds it and the offset inside that backing.  One
 * backing (one memdev) can hold several ranges: on q35 with more than
 * 2.75 GiB of RAM the single RAM backend is split around the PCI hole into
 * a range below 4 GiB and one above it, at different offsets.
 *
 * The guest is never asked: everything comes from QMP (query-memdev,
 * "info mtree -f", "gpa2hva") and /proc/<qemu pid>/{maps,fd}.
 */
#ifndef VDF_VM_LAYOUT_H
#define VDF_VM_LAYOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct qmp;

enum vm_backing_kind {
	/* private/anonymous RAM: no file to punch; "hint" backend only */
	VM_BACKING_ANONYMOUS,
	VM_BACKING_MEMFD,	/* shmem memfd, mapped shared */
	VM_BACKING_HUGETLBFS,	/* hugetlbfs file or memfd with hugetlb=on */
	VM_BACKING_FILE,	/* any other shared file (tmpfs, disk fs) */
};

#define VM_LAYOUT_NAME_MAX	128
#define VM_LAYOUT_MAX_RANGES	64

struct vm_backing {
	char name[VM_LAYOUT_NAME_MAX];	/* memdev id == memory region name */
	enum vm_backing_kind kind;
	int fd;			/* O_RDWR, opened via /proc/PID/fd/N; -1 if anonymous */
	uint64_t page_size;	/* hugetlbfs: huge page size; else base page size */
	uint64_t size;		/* memdev size (bytes of guest RAM it provides) */
	uint64_t file_size;	/* st_size of the backing file; 0 if anonymous */
	uint64_t hva;		/* QEMU's virtual address of region offset 0 */
	uint64_t file_base;	/* backing file offset of region offset 0 */
	bool shared;		/* QEMU maps it MAP_SHARED */
	dev_t dev;
	ino_t ino;
};

struct vm_ram_range {
	uint64_t gpa;
	uint64_t len;
	uint64_t region_offset;	/* offset inside the memory region (memdev) */
	uint64_t file_offset;	/* offset inside the backing file */
	uint64_t hva;		/* QEMU's virtual address of gpa */
	unsigned int backing;	/* index into vm_layout.backings */
};

struct vm_layout {
	pid_t pid;
	size_t nranges;		/* sorted by gpa, non-overlapping */
	struct vm_ram_range *ranges;
	size_t nbackings;
	struct vm_backing *backings;
};

/*
 * Discovers the layout of the VM behind q.  pid is QEMU's pid (0: ask the
 * socket with qmp_peer_pid()).  Fails with -EPROTO if QEMU's answers are
 * inconsistent (an alias whose offsets disagree with QEMU's mapping, a
 * range not inside one mapping), -ENOENT if a shared backing's fd cannot be
 * found.
 */
int vm_layout_discover(struct qmp *q, pid_t pid, struct vm_layout **ret_layout);
void vm_layout_free(struct vm_layout *l);

/*
 * Translates [gpa, gpa+len) to its backing: the range must lie entirely
 * inside one RAM range (-ERANGE otherwise, also for len 0 or overflow).
 */
int vm_layout_translate(const struct vm_layout *l, uint64_t gpa, uint64_t len,
			const struct vm_ram_range **ret_range,
			uint64_t *ret_file_offset);
uint64_t vm_layout_ram_bytes(const struct vm_layout *l);
/*
 * Do a and b describe the same RAM: the same ranges (gpa, length, offsets,
 * address in QEMU) in backings of the same names, kinds and sizes?  The
 * fds they hold may differ.  A layout rediscovered after a QMP event says
 * whether memory was hot-plugged that way.
 */
bool vm_layout_equal(const struct vm_layout *a, const struct vm_layout *b);
const char *vm_backing_kind_name(enum vm_backing_kind kind);

/* ---- parsers, exposed for tests ---- */

struct vm_mtree_entry {
	uint64_t gpa;
	uint64_t len;
	uint64_t region_offset;
	char name[VM_LAYOUT_NAME_MAX];
};

/*
 * Extracts the "ram" entries of the flat view of address space "memory"
 * from `info mtree -f` output.  *ret_entries is malloc'ed (may be NULL with
 * *ret_n == 0).  -EPROTO if the text has no such flat view or a malformed
 * ram line.
 */
int vm_layout_parse_mtree(const char *text, struct vm_mtree_entry **ret_entries,
			  size_t *ret_n);
/* Parses `gpa2hva` output; the region name in parentheses must match. */
int vm_layout_parse_gpa2hva(const char *text, const char *expect_name,
			    uint64_t *ret_hva);

struct vm_maps_entry {
	uint64_t start, end;
	uint64_t offset;
	unsigned int dev_major, dev_minor;
	uint64_t inode;
	bool shared;
	char path[256];		/* "" for anonymous; truncated if longer */
};

int vm_layout_parse_maps_line(const char *line, size_t len,
			      struct vm_maps_entry *ret_entry);
/* Finds the mapping holding all of [hva, hva+len); -ENOENT if none. */
int vm_layout_find_mapping(const char *maps_text, uint64_t hva, uint64_t len,
			   struct vm_maps_entry *ret_entry);

#endif /* VDF_VM_LAYOUT_H */
