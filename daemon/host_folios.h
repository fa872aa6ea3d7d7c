/* SPDX-License-Identifier: GPL-2.0 */
/*
 * host_folios.h - which of a process's 2 MiB ranges the host backs with
 * one 2 MiB folio, read from /proc/PID/pagemap and /proc/kpageflags
 * (prefix host_folios_).  Needs root; nothing is faulted in.
 */
#ifndef VDF_HOST_FOLIOS_H
#define VDF_HOST_FOLIOS_H

#include <stdint.h>
#include <sys/types.h>

struct host_folios {
	int pagemap;		/* /proc/PID/pagemap */
	int kpageflags;		/* /proc/kpageflags */
};

/* Opens both files; negative errno (-EACCES without root). */
int host_folios_open(pid_t pid, struct host_folios *ret_h);
void host_folios_close(struct host_folios *h);

/*
 * 1 if [hva, hva + 2 MiB) is mapped by one 2 MiB folio (its first page a
 * present compound head with THP or huge flags, its last page a tail 511
 * frames on), 0 if not (not present, base pages), negative errno:
 * -EPERM when pagemap hides frame numbers (no CAP_SYS_ADMIN).
 */
int host_folios_block_huge(const struct host_folios *h, uint64_t hva);

#endif /* VDF_HOST_FOLIOS_H */
