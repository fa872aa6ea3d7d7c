/* SPDX-License-Identifier: GPL-2.0 */
/*
 * hostmem.h - host-side memory measurement (prefix hostmem_).
 *
 * How much host memory a VM's RAM really uses: blocks allocated in its
 * backing file, QEMU's RssAnon/RssShmem, and how much of the guest RAM
 * mapping is mapped with huge pages; plus the host's THP settings.  Every
 * parser takes text so it can be tested on captured samples as well as on
 * the live /proc of a real process.
 */
#ifndef VDF_HOSTMEM_H
#define VDF_HOSTMEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HOSTMEM_TEXT_MAX	(64u << 20)	/* bound on any /proc file read */

/* Reads a whole (proc/sys) file, at most max bytes; NUL-terminated. */
int hostmem_read_text(const char *path, size_t max, char **ret_text,
		      size_t *ret_len);

/* Bytes allocated to the file: st_blocks * 512 (whole file). */
int hostmem_backing_allocated(int fd, uint64_t *ret_bytes);
/*
 * Bytes of [offset, offset+len) that are data, by a SEEK_DATA/SEEK_HOLE
 * walk (page granular on shmem; hugetlbfs reports the whole file as data
 * on kernels without hugetlbfs SEEK_HOLE support).
 */
int hostmem_backing_data_bytes(int fd, uint64_t offset, uint64_t len,
			       uint64_t *ret_bytes);

struct hostmem_status {
	uint64_t vm_rss;	/* bytes; VmRSS */
	uint64_t rss_anon;	/* RssAnon */
	uint64_t rss_file;	/* RssFile */
	uint64_t rss_shmem;	/* RssShmem */
};

/* Parses /proc/PID/status text; every field above must be present. */
int hostmem_parse_status(const char *text, struct hostmem_status *ret_status);
int hostmem_read_status(pid_t pid, struct hostmem_status *ret_status);

struct hostmem_vrange {
	uint64_t start, len;	/* a virtual address range of interest */
};

struct hostmem_smaps {
	uint64_t rss;			/* bytes, summed over matched mappings */
	uint64_t anon_huge;		/* AnonHugePages */
	uint64_t shmem_pmd;		/* ShmemPmdMapped */
	uint64_t file_pmd;		/* FilePmdMapped */
	uint64_t hugetlb;		/* Shared_Hugetlb + Private_Hugetlb */
	unsigned int nmappings;		/* mappings that matched */
};

/*
 * Sums /proc/PID/smaps fields over the mappings that overlap any of the
 * ranges (all mappings if nranges == 0).  huge_bytes() of the result is
 * the bytes of those mappings mapped by huge pages.  -EPROTO on a
 * malformed header or field line.
 */
int hostmem_parse_smaps(const char *text, const struct hostmem_vrange *ranges,
			size_t nranges, struct hostmem_smaps *ret_smaps);
int hostmem_read_smaps(pid_t pid, const struct hostmem_vrange *ranges,
		       size_t nranges, struct hostmem_smaps *ret_smaps);
uint64_t hostmem_smaps_huge_bytes(const struct hostmem_smaps *s);

/* /sys/kernel/mm/transparent_hugepage/shmem_enabled */
enum hostmem_shmem_thp {
	HOSTMEM_SHMEM_ALWAYS,
	HOSTMEM_SHMEM_WITHIN_SIZE,
	HOSTMEM_SHMEM_ADVISE,
	HOSTMEM_SHMEM_NEVER,
	HOSTMEM_SHMEM_DENY,
	HOSTMEM_SHMEM_FORCE,
};
/* /sys/kernel/mm/transparent_hugepage/enabled */
enum hostmem_thp {
	HOSTMEM_THP_ALWAYS,
	HOSTMEM_THP_MADVISE,
	HOSTMEM_THP_NEVER,
};

#define HOSTMEM_SHMEM_ENABLED_PATH "/sys/kernel/mm/transparent_hugepage/shmem_enabled"
#define HOSTMEM_THP_ENABLED_PATH   "/sys/kernel/mm/transparent_hugepage/enabled"

/* Parses "always within_size [advise] never deny force" style text. */
int hostmem_parse_shmem_thp(const char *text, enum hostmem_shmem_thp *ret_mode);
int hostmem_parse_thp(const char *text, enum hostmem_thp *ret_mode);
int hostmem_read_shmem_thp(enum hostmem_shmem_thp *ret_mode);
int hostmem_read_thp(enum hostmem_thp *ret_mode);
const char *hostmem_shmem_thp_name(enum hostmem_shmem_thp mode);
/*
 * Whether a MADV_HUGEPAGE mapping of a memfd can get huge folios under
 * this setting (always, within_size, advise, force: yes; never, deny: no).
 */
bool hostmem_shmem_thp_allows_huge(enum hostmem_shmem_thp mode);

/*
 * The huge= option of the tmpfs mount of device `dev`, from
 * /proc/self/mountinfo text: its super options' huge=always/within_size/
 * advise/never, HOSTMEM_SHMEM_NEVER when the option is absent (tmpfs's
 * default).  -ENOENT if no tmpfs mount of that device is listed (another
 * mount namespace), -EPROTO for a huge= value this code does not know.
 */
int hostmem_parse_tmpfs_huge(const char *mountinfo, dev_t dev,
			     enum hostmem_shmem_thp *ret_mode);

/*
 * Whether files on the tmpfs holding fd get huge folios: shmem_enabled
 * deny or force overrides every mount (the result is then DENY or FORCE),
 * otherwise the mount's own huge= option decides.
 */
int hostmem_tmpfs_huge(int fd, enum hostmem_shmem_thp *ret_mode);

#endif /* VDF_HOSTMEM_H */
