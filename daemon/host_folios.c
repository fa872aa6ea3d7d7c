// SPDX-License-Identifier: GPL-2.0
/*
 * host_folios.c - is a 2 MiB range of a process backed by one 2 MiB folio?
 *
 * /proc/PID/pagemap gives each virtual page's frame (bit 63 present, bits
 * 0-54 the PFN, root only); /proc/kpageflags gives each frame's flags.  A
 * block is huge when its first page is a compound head (KPF_COMPOUND_HEAD)
 * of a THP or hugetlb folio and its last page a compound tail exactly 511
 * frames on: the same test the integration tests' harness makes from the
 * outside (tests/harness/folios.py).  Reading pagemap never faults a page
 * in, so a map of the VM changes nothing in it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "host_folios.h"

#define HF_PAGE			4096u
#define HF_BLOCK		(2u << 20)
#define HF_PM_PRESENT		(1ull << 63)
#define HF_PFN_MASK		((1ull << 55) - 1)
#define HF_KPF_COMPOUND_HEAD	(1ull << 15)
#define HF_KPF_COMPOUND_TAIL	(1ull << 16)
#define HF_KPF_HUGE		(1ull << 17)
#define HF_KPF_THP		(1ull << 22)

int host_folios_open(pid_t pid, struct host_folios *ret_h)
{
	char path[64];
	int pm, kf;

	snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)pid);
	pm = open(path, O_RDONLY | O_CLOEXEC);
	if (pm < 0)
		return -errno;
	kf = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC);
	if (kf < 0) {
		int r = -errno;

		close(pm);
		return r;
	}
	ret_h->pagemap = pm;
	ret_h->kpageflags = kf;
	return 0;
}

void host_folios_close(struct host_folios *h)
{
	if (h->pagemap >= 0)
		close(h->pagemap);
	if (h->kpageflags >= 0)
		close(h->kpageflags);
	h->pagemap = h->kpageflags = -1;
}

static int host_folios_u64(int fd, uint64_t index, uint64_t *ret_v)
{
	uint64_t v;
	ssize_t n = pread(fd, &v, sizeof(v), (off_t)(index * sizeof(v)));

	if (n < 0)
		return -errno;
	if (n != sizeof(v))
		return -EIO;
	*ret_v = v;
	return 0;
}

int host_folios_block_huge(const struct host_folios *h, uint64_t hva)
{
	uint64_t first = 0, last = 0, ff = 0, lf = 0;
	int r;

	if (hva % HF_BLOCK)
		return 0;	/* a misaligned mapping cannot be PMD-mapped */
	r = host_folios_u64(h->pagemap, hva / HF_PAGE, &first);
	if (r == 0)
		r = host_folios_u64(h->pagemap, (hva + HF_BLOCK - HF_PAGE) / HF_PAGE, &last);
	if (r < 0)
		return r;
	if (!(first & HF_PM_PRESENT) || !(last & HF_PM_PRESENT))
		return 0;
	first &= HF_PFN_MASK;
	last &= HF_PFN_MASK;
	if (!first || !last)
		return -EPERM;	/* present without a frame: no CAP_SYS_ADMIN */
	if (last != first + HF_BLOCK / HF_PAGE - 1)
		return 0;
	r = host_folios_u64(h->kpageflags, first, &ff);
	if (r == 0)
		r = host_folios_u64(h->kpageflags, last, &lf);
	if (r < 0)
		return r;
	return (ff & HF_KPF_COMPOUND_HEAD) && (ff & (HF_KPF_THP | HF_KPF_HUGE)) &&
	       (lf & HF_KPF_COMPOUND_TAIL);
}
