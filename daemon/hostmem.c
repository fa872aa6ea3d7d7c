// SPDX-License-Identifier: GPL-2.0
/*
 * hostmem.c - measuring what a VM's RAM costs the host.
 *
 * Four independent views, each cheap enough to sample often:
 *
 *  - the backing file: st_blocks (allocated blocks of the whole file, what
 *    a PUNCH_HOLE gives back) and a SEEK_DATA/SEEK_HOLE walk of a range
 *    (which pages of that range exist);
 *  - QEMU's /proc/PID/status: RssAnon (anonymous RAM, e.g. a VM without a
 *    shared backing), RssShmem (memfd/tmpfs pages QEMU has mapped);
 *  - QEMU's /proc/PID/smaps restricted to the guest RAM mappings: bytes
 *    mapped by PMDs (AnonHugePages, ShmemPmdMapped, FilePmdMapped) or by
 *    hugetlb pages, i.e. how much guest RAM is really behind huge pages;
 *  - the host THP policy (transparent_hugepage/enabled and shmem_enabled),
 *    which decides whether huge re-backing is possible at all.
 *
 * Parsers take text, never a path, so the same code is tested on captured
 * samples and on live files.  All reads are bounded (HOSTMEM_TEXT_MAX).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "cleanup.h"
#include "hostmem.h"

int hostmem_read_text(const char *path, size_t max, char **ret_text,
		      size_t *ret_len)
{
	size_t cap = 16384, len = 0;
	_cleanup_free_ char *buf = NULL;
	_cleanup_close_ int fd = -1;
	char *nbuf;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t n;

		if (cap - len < 2) {
			if (cap >= max + 1)
				return -EFBIG;
			cap = cap * 2 > max + 1 ? max + 1 : cap * 2;
			nbuf = realloc(buf, cap);
			if (!nbuf)
				return -ENOMEM;
			buf = nbuf;
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		len += n;
	}
	buf[len] = '\0';
	*ret_text = TAKE_PTR(buf);
	if (ret_len)
		*ret_len = len;
	return 0;
}

int hostmem_backing_allocated(int fd, uint64_t *ret_bytes)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	*ret_bytes = (uint64_t)st.st_blocks * 512;
	return 0;
}

int hostmem_backing_data_bytes(int fd, uint64_t offset, uint64_t len,
			       uint64_t *ret_bytes)
{
	uint64_t end = offset + len, pos = offset, total = 0;

	if (end < offset || end > INT64_MAX)
		return -ERANGE;
	while (pos < end) {
		off_t data, hole;

		data = lseek(fd, (off_t)pos, SEEK_DATA);
		if (data < 0) {
			if (errno == ENXIO)	/* no data up to EOF */
				break;
			return -errno;
		}
		if ((uint64_t)data >= end)
			break;
		hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0)
			return -errno;
		if ((uint64_t)hole > end)
			hole = (off_t)end;
		if (hole <= data)		/* cannot make progress */
			return -EIO;
		total += (uint64_t)(hole - data);
		pos = (uint64_t)hole;
	}
	*ret_bytes = total;
	return 0;
}

/* "Key:   <n> kB" -> bytes; 1 if the line has that key, 0 if not. */
static int hostmem_kb_field(const char *line, const char *key, uint64_t *ret)
{
	size_t klen = strlen(key);
	const char *p;
	char *end;
	unsigned long long v;

	if (strncmp(line, key, klen) != 0 || line[klen] != ':')
		return 0;
	p = line + klen + 1;
	while (*p == ' ' || *p == '\t')
		p++;
	if (!isdigit((unsigned char)*p))
		return -EPROTO;
	errno = 0;
	v = strtoull(p, &end, 10);
	if (errno || v > UINT64_MAX / 1024)
		return -EPROTO;
	if (strncmp(end, " kB", 3) != 0 ||
	    (end[3] != '\0' && end[3] != '\n'))
		return -EPROTO;
	*ret = (uint64_t)v * 1024;
	return 1;
}

int hostmem_parse_status(const char *text, struct hostmem_status *ret_status)
{
	static const char *const keys[] = { "VmRSS", "RssAnon", "RssFile", "RssShmem" };
	uint64_t vals[4];
	unsigned int found = 0;
	const char *line = text;

	while (line && *line) {
		for (unsigned int i = 0; i < 4; i++) {
			int r = hostmem_kb_field(line, keys[i], &vals[i]);

			if (r < 0)
				return r;
			if (r > 0) {
				if (found & (1u << i))
					return -EPROTO;	/* duplicate */
				found |= 1u << i;
			}
		}
		line = strchr(line, '\n');
		if (line)
			line++;
	}
	if (found != 0xf)
		return -ENODATA;	/* kernel thread, or not a status file */
	ret_status->vm_rss = vals[0];
	ret_status->rss_anon = vals[1];
	ret_status->rss_file = vals[2];
	ret_status->rss_shmem = vals[3];
	return 0;
}

int hostmem_read_status(pid_t pid, struct hostmem_status *ret_status)
{
	char path[64], *text;
	int r;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	r = hostmem_read_text(path, 1u << 20, &text, NULL);
	if (r < 0)
		return r;
	r = hostmem_parse_status(text, ret_status);
	free(text);
	return r;
}

/* "start-end perms ..." -> 1 and the range; 0 if not a header line. */
static int hostmem_smaps_header(const char *line, uint64_t *ret_start,
				uint64_t *ret_end)
{
	unsigned long long s, e;
	char *end;

	if (!isxdigit((unsigned char)line[0]))
		return 0;
	/* "Key:" lines start with a letter; a-f could be hex, so look for '-' */
	s = strtoull(line, &end, 16);
	if (*end != '-')
		return 0;
	e = strtoull(end + 1, &end, 16);
	if (*end != ' ' || e < s)
		return -EPROTO;
	*ret_start = s;
	*ret_end = e;
	return 1;
}

static bool hostmem_overlaps(uint64_t start, uint64_t end,
			     const struct hostmem_vrange *ranges, size_t n)
{
	if (n == 0)
		return true;
	for (size_t i = 0; i < n; i++) {
		uint64_t rs = ranges[i].start, re = ranges[i].start + ranges[i].len;

		if (start < re && rs < end)
			return true;
	}
	return false;
}

int hostmem_parse_smaps(const char *text, const struct hostmem_vrange *ranges,
			size_t nranges, struct hostmem_smaps *ret_smaps)
{
	struct hostmem_smaps s = { 0 };
	bool in = false, seen_header = false;
	const char *line = text;

	while (line && *line) {
		const char *nl = strchr(line, '\n');
		uint64_t a, b, v;
		int r;

		if (*line == '\n') {
			line = nl + 1;
			continue;
		}
		r = hostmem_smaps_header(line, &a, &b);
		if (r < 0)
			return r;
		if (r > 0) {
			seen_header = true;
			in = hostmem_overlaps(a, b, ranges, nranges);
			if (in)
				s.nmappings++;
		} else {
			const char *colon = strchr(line, ':');

			if (!seen_header || !colon || (nl && colon > nl))
				return -EPROTO;
			if (in) {
				static const struct {
					const char *key;
					size_t off;
				} f[] = {
					{ "Rss", offsetof(struct hostmem_smaps, rss) },
					{ "AnonHugePages", offsetof(struct hostmem_smaps, anon_huge) },
					{ "ShmemPmdMapped", offsetof(struct hostmem_smaps, shmem_pmd) },
					{ "FilePmdMapped", offsetof(struct hostmem_smaps, file_pmd) },
					{ "Shared_Hugetlb", offsetof(struct hostmem_smaps, hugetlb) },
					{ "Private_Hugetlb", offsetof(struct hostmem_smaps, hugetlb) },
				};

				for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
					uint64_t *dst = (uint64_t *)((char *)&s + f[i].off);

					r = hostmem_kb_field(line, f[i].key, &v);
					if (r < 0)
						return r;
					if (r > 0) {
						if (*dst > UINT64_MAX - v)
							return -EOVERFLOW;
						*dst += v;
					}
				}
			}
		}
		line = nl ? nl + 1 : NULL;
	}
	if (!seen_header && text && *text)
		return -EPROTO;
	*ret_smaps = s;
	return 0;
}

int hostmem_read_smaps(pid_t pid, const struct hostmem_vrange *ranges,
		       size_t nranges, struct hostmem_smaps *ret_smaps)
{
	char path[64], *text;
	int r;

	snprintf(path, sizeof(path), "/proc/%d/smaps", (int)pid);
	r = hostmem_read_text(path, HOSTMEM_TEXT_MAX, &text, NULL);
	if (r < 0)
		return r;
	r = hostmem_parse_smaps(text, ranges, nranges, ret_smaps);
	free(text);
	return r;
}

uint64_t hostmem_smaps_huge_bytes(const struct hostmem_smaps *s)
{
	return s->anon_huge + s->shmem_pmd + s->file_pmd + s->hugetlb;
}

/* Index of the [bracketed] word of text in names[], or -EPROTO. */
static int hostmem_parse_bracketed(const char *text, const char *const *names,
				   size_t n)
{
	const char *open, *close;
	size_t len;

	if (!text)
		return -EINVAL;
	open = strchr(text, '[');
	if (!open)
		return -EPROTO;
	close = strchr(open, ']');
	if (!close || strchr(close + 1, '['))
		return -EPROTO;
	len = close - open - 1;
	for (size_t i = 0; i < n; i++) {
		if (strlen(names[i]) == len && strncmp(open + 1, names[i], len) == 0)
			return (int)i;
	}
	return -EPROTO;
}

static const char *const hostmem_shmem_names[] = {
	[HOSTMEM_SHMEM_ALWAYS] = "always",
	[HOSTMEM_SHMEM_WITHIN_SIZE] = "within_size",
	[HOSTMEM_SHMEM_ADVISE] = "advise",
	[HOSTMEM_SHMEM_NEVER] = "never",
	[HOSTMEM_SHMEM_DENY] = "deny",
	[HOSTMEM_SHMEM_FORCE] = "force",
};

static const char *const hostmem_thp_names[] = {
	[HOSTMEM_THP_ALWAYS] = "always",
	[HOSTMEM_THP_MADVISE] = "madvise",
	[HOSTMEM_THP_NEVER] = "never",
};

int hostmem_parse_shmem_thp(const char *text, enum hostmem_shmem_thp *ret_mode)
{
	int r = hostmem_parse_bracketed(text, hostmem_shmem_names,
					sizeof(hostmem_shmem_names) / sizeof(hostmem_shmem_names[0]));

	if (r < 0)
		return r;
	*ret_mode = (enum hostmem_shmem_thp)r;
	return 0;
}

int hostmem_parse_thp(const char *text, enum hostmem_thp *ret_mode)
{
	int r = hostmem_parse_bracketed(text, hostmem_thp_names,
					sizeof(hostmem_thp_names) / sizeof(hostmem_thp_names[0]));

	if (r < 0)
		return r;
	*ret_mode = (enum hostmem_thp)r;
	return 0;
}

int hostmem_read_shmem_thp(enum hostmem_shmem_thp *ret_mode)
{
	_cleanup_free_ char *text = NULL;
	int r = hostmem_read_text(HOSTMEM_SHMEM_ENABLED_PATH, 4096, &text, NULL);

	return r < 0 ? r : hostmem_parse_shmem_thp(text, ret_mode);
}

int hostmem_read_thp(enum hostmem_thp *ret_mode)
{
	_cleanup_free_ char *text = NULL;
	int r = hostmem_read_text(HOSTMEM_THP_ENABLED_PATH, 4096, &text, NULL);

	return r < 0 ? r : hostmem_parse_thp(text, ret_mode);
}

const char *hostmem_shmem_thp_name(enum hostmem_shmem_thp mode)
{
	if ((unsigned int)mode >= sizeof(hostmem_shmem_names) / sizeof(hostmem_shmem_names[0]))
		return "?";
	return hostmem_shmem_names[mode];
}

bool hostmem_shmem_thp_allows_huge(enum hostmem_shmem_thp mode)
{
	return mode == HOSTMEM_SHMEM_ALWAYS || mode == HOSTMEM_SHMEM_WITHIN_SIZE ||
	       mode == HOSTMEM_SHMEM_ADVISE || mode == HOSTMEM_SHMEM_FORCE;
}

/*
 * Whether one mountinfo line ("ID PARENT MAJ:MIN ROOT POINT OPTS [TAGS...]
 * - FSTYPE SOURCE SUPEROPTS") is a tmpfs mount of dev; if so, where its
 * super options are.
 */
static bool hostmem_mountinfo_tmpfs(const char *line, size_t len, dev_t dev,
				    const char **ret_opts, size_t *ret_optlen)
{
	const char *end = line + len, *p;
	unsigned int major, minor;

	if (sscanf(line, "%*s %*s %u:%u", &major, &minor) != 2 ||
	    makedev(major, minor) != dev)
		return false;
	p = memmem(line, len, " - ", 3);
	if (!p)
		return false;
	p += 3;
	if ((size_t)(end - p) < 6 || memcmp(p, "tmpfs ", 6) != 0)
		return false;
	p = memchr(p + 6, ' ', (size_t)(end - p - 6));	/* past the source */
	if (!p)
		return false;
	*ret_opts = p + 1;
	*ret_optlen = (size_t)(end - p - 1);
	return true;
}

int hostmem_parse_tmpfs_huge(const char *mountinfo, dev_t dev,
			     enum hostmem_shmem_thp *ret_mode)
{
	static const struct {
		const char *name;
		enum hostmem_shmem_thp mode;
	} values[] = {
		{ "never", HOSTMEM_SHMEM_NEVER },
		{ "always", HOSTMEM_SHMEM_ALWAYS },
		{ "within_size", HOSTMEM_SHMEM_WITHIN_SIZE },
		{ "advise", HOSTMEM_SHMEM_ADVISE },
	};
	const char *line = mountinfo;

	while (*line) {
		const char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) : strlen(line);
		const char *opts, *o, *oend;
		size_t optlen;

		if (!hostmem_mountinfo_tmpfs(line, len, dev, &opts, &optlen)) {
			line += len + (nl ? 1 : 0);
			continue;
		}
		/* super options: comma separated, no blanks */
		for (o = opts, oend = opts + optlen; o < oend;) {
			const char *comma = memchr(o, ',', (size_t)(oend - o));
			size_t olen = comma ? (size_t)(comma - o) : (size_t)(oend - o);

			if (olen > 5 && memcmp(o, "huge=", 5) == 0) {
				for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
					if (olen - 5 == strlen(values[i].name) &&
					    memcmp(o + 5, values[i].name, olen - 5) == 0) {
						*ret_mode = values[i].mode;
						return 0;
					}
				}
				return -EPROTO;
			}
			o += olen + 1;
		}
		*ret_mode = HOSTMEM_SHMEM_NEVER;
		return 0;
	}
	return -ENOENT;
}

int hostmem_tmpfs_huge(int fd, enum hostmem_shmem_thp *ret_mode)
{
	enum hostmem_shmem_thp sys, mode;
	struct stat st;
	char *text;
	int r;

	if (hostmem_read_shmem_thp(&sys) == 0 &&
	    (sys == HOSTMEM_SHMEM_DENY || sys == HOSTMEM_SHMEM_FORCE)) {
		*ret_mode = sys;
		return 0;
	}
	if (fstat(fd, &st) < 0)
		return -errno;
	r = hostmem_read_text("/proc/self/mountinfo", HOSTMEM_TEXT_MAX, &text, NULL);
	if (r < 0)
		return r;
	r = hostmem_parse_tmpfs_huge(text, st.st_dev, &mode);
	free(text);
	if (r < 0)
		return r;
	*ret_mode = mode;
	return 0;
}
