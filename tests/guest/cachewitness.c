// SPDX-License-Identifier: GPL-2.0
/*
 * cachewitness: files whose page cache must survive a capture.
 *
 * A capture that moves the page cache's xarray nodes (the movable-slab
 * guest kernel) should cost the files they index none of their cached
 * pages; one that evicts them (stock kernels, policy `evict`) drops the
 * index range under each node.  This program makes files whose pages tell
 * which happened, read from the page cache itself (mincore(2)), and whose
 * inodes are held open, so that no eviction can take them whole: any page
 * they lose went for an xarray node, a buffer head or the guest's own
 * reclaim, never with its inode.
 *
 *   create DIR  --files N files DIR/wNNNN of --kib K KiB (seeded content),
 *               each fsynced: their inodes are made now; once the caller
 *               drops the page cache (drop_caches: the test kernel has no
 *               fadvise), their pages and the xarray nodes indexing them
 *               are made when they are read, without buffer heads;
 *   hold DIR    open every file and keep it open until SIGTERM or SIGINT;
 *               prints "cachewitness hold files=N" once all are open;
 *   read DIR    read every file twice (the second read marks the pages
 *               referenced) and check its content;
 *   incore DIR  per file "cachewitness file wNNNN PAGES MAP" (its cached
 *               pages, and a 1 or 0 per page), then "cachewitness incore
 *               files=N pages=P of=T full=F partial=Q empty=E";
 *   pfns DIR    per file "cachewitness pfns wNNNN PFN..." (hex, one per
 *               page, "-" for a page not cached): the guest-physical page
 *               that holds it, read from /proc/self/pagemap (root) with
 *               the cached pages mapped for the time of the read only, so
 *               that a page lost later can be told to have been in a block
 *               the capture vacated or not;
 *   verify DIR  check every file's content (reads what is not cached).
 *
 * Exits 0, 1 when a content is wrong, 2 on usage or system errors.  The
 * same --files/--kib/--seed must be given to every command on one DIR.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "prng.h"

struct witness {
	const char *dir;
	unsigned long files;
	unsigned long kib;
	uint64_t seed;
};

static void witness_path(const struct witness *w, unsigned long i, char *buf,
			 size_t n)
{
	snprintf(buf, n, "%s/w%04lu", w->dir, i);
}

/* The 8-byte word @k of file @i. */
static uint64_t witness_word(const struct witness *w, unsigned long i, uint64_t k)
{
	return prng_mix(w->seed ^ prng_mix((i << 32) ^ k));
}

static size_t witness_bytes(const struct witness *w)
{
	return w->kib * 1024;
}

static void witness_fill(const struct witness *w, unsigned long i, uint64_t *buf)
{
	size_t k, n = witness_bytes(w) / 8;

	for (k = 0; k < n; k++)
		buf[k] = witness_word(w, i, k);
}

static int fail(const char *what, const char *path)
{
	fprintf(stderr, "cachewitness: %s %s: %s\n", what, path, strerror(errno));
	return 2;
}

static int cmd_create(const struct witness *w, uint64_t *buf)
{
	char path[4096];
	unsigned long i;

	for (i = 0; i < w->files; i++) {
		int fd;

		witness_path(w, i, path, sizeof(path));
		witness_fill(w, i, buf);
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd < 0)
			return fail("create", path);
		if (write(fd, buf, witness_bytes(w)) != (ssize_t)witness_bytes(w) ||
		    fsync(fd)) {
			close(fd);
			return fail("write", path);
		}
		close(fd);
	}
	printf("cachewitness create files=%lu kib=%lu\n", w->files, w->kib);
	return 0;
}

static volatile sig_atomic_t witness_stop;

static void witness_on_signal(int sig)
{
	(void)sig;
	witness_stop = 1;
}

static int cmd_hold(const struct witness *w)
{
	struct sigaction sa = { .sa_handler = witness_on_signal };
	char path[4096];
	unsigned long i;
	sigset_t mask, old;

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, &old);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	for (i = 0; i < w->files; i++) {
		witness_path(w, i, path, sizeof(path));
		if (open(path, O_RDONLY) < 0)
			return fail("open", path);
	}
	printf("cachewitness hold files=%lu\n", w->files);
	while (!witness_stop)
		sigsuspend(&old);
	return 0;
}

/* Read file @i into @got and compare it; 0, 1 if it differs, 2 on errors. */
static int witness_check(const struct witness *w, unsigned long i,
			 uint64_t *want, uint64_t *got)
{
	char path[4096];
	ssize_t r;
	int fd;

	witness_path(w, i, path, sizeof(path));
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return fail("open", path);
	r = pread(fd, got, witness_bytes(w), 0);
	close(fd);
	if (r < 0)
		return fail("read", path);
	witness_fill(w, i, want);
	if ((size_t)r != witness_bytes(w) || memcmp(want, got, witness_bytes(w))) {
		fprintf(stderr, "cachewitness: %s: content differs (%zd bytes)\n", path, r);
		return 1;
	}
	return 0;
}

static int cmd_read(const struct witness *w, uint64_t *want, uint64_t *got,
		    int times)
{
	unsigned long i, bad = 0;
	int t, r;

	for (t = 0; t < times; t++)
		for (i = 0; i < w->files; i++) {
			r = witness_check(w, i, want, got);
			if (r == 2)
				return 2;
			bad += r;
		}
	printf("cachewitness %s files=%lu bad=%lu\n", times > 1 ? "read" : "verify",
	       w->files, bad);
	return bad ? 1 : 0;
}

/*
 * Map file @i and fill @vec with mincore()'s answer per page; returns the
 * mapping (to munmap(), witness_bytes() long) or NULL after an error line.
 */
static void *witness_map(const struct witness *w, unsigned long i,
			 unsigned char *vec)
{
	char path[4096];
	void *map;
	int fd;

	witness_path(w, i, path, sizeof(path));
	fd = open(path, O_RDONLY);
	if (fd < 0) {
		fail("open", path);
		return NULL;
	}
	/* mapping a file faults nothing in: mincore() only looks */
	map = mmap(NULL, witness_bytes(w), PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (map == MAP_FAILED) {
		fail("mmap", path);
		return NULL;
	}
	if (mincore(map, witness_bytes(w), vec)) {
		fail("mincore", path);
		munmap(map, witness_bytes(w));
		return NULL;
	}
	return map;
}

static int cmd_pfns(const struct witness *w, unsigned char *vec)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE), pages = witness_bytes(w) / page, k;
	unsigned long i;
	int pm = open("/proc/self/pagemap", O_RDONLY);

	if (pm < 0)
		return fail("open", "/proc/self/pagemap");
	for (i = 0; i < w->files; i++) {
		volatile const unsigned char *map = witness_map(w, i, vec);

		if (!map) {
			close(pm);
			return 2;
		}
		printf("cachewitness pfns w%04lu", i);
		for (k = 0; k < pages; k++) {
			uint64_t ent = 0;

			if (!(vec[k] & 1)) {
				printf(" -");
				continue;
			}
			(void)map[k * page];	/* cached: maps it, reads nothing in */
			if (pread(pm, &ent, sizeof(ent), (off_t)(((uintptr_t)map / page + k) *
							 sizeof(ent))) != sizeof(ent)) {
				close(pm);
				return fail("read", "/proc/self/pagemap");
			}
			/* bit 63: present; bits 0-54: the pfn (0 without CAP_SYS_ADMIN) */
			if (ent >> 63)
				printf(" %llx", (unsigned long long)(ent & ((1ULL << 55) - 1)));
			else
				printf(" -");
		}
		printf("\n");
		munmap((void *)map, witness_bytes(w));
	}
	close(pm);
	return 0;
}

static int cmd_incore(const struct witness *w, unsigned char *vec)
{
	unsigned long i, full = 0, partial = 0, empty = 0, total = 0;
	size_t pages = witness_bytes(w) / (size_t)sysconf(_SC_PAGESIZE), k;

	for (i = 0; i < w->files; i++) {
		unsigned long cached = 0;
		void *map = witness_map(w, i, vec);

		if (!map)
			return 2;
		munmap(map, witness_bytes(w));
		for (k = 0; k < pages; k++) {
			cached += vec[k] & 1;
			vec[k] = vec[k] & 1 ? '1' : '0';
		}
		printf("cachewitness file w%04lu %lu %.*s\n", i, cached, (int)pages, vec);
		total += cached;
		if (cached == pages)
			full++;
		else if (cached)
			partial++;
		else
			empty++;
	}
	printf("cachewitness incore files=%lu pages=%lu of=%lu full=%lu partial=%lu "
	       "empty=%lu\n", w->files, total, w->files * pages, full, partial, empty);
	return 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: cachewitness create|hold|read|incore|pfns|verify DIR "
		"[--files N] [--kib K] [--seed S]\n");
	return 2;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "files", required_argument, NULL, 'f' },
		{ "kib", required_argument, NULL, 'k' },
		{ "seed", required_argument, NULL, 's' },
		{ 0 }
	};
	struct witness w = { .files = 64, .kib = 512, .seed = 1 };
	uint64_t *want, *got;
	const char *cmd;
	int c, r;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'f': w.files = strtoul(optarg, NULL, 0); break;
		case 'k': w.kib = strtoul(optarg, NULL, 0); break;
		case 's': w.seed = strtoull(optarg, NULL, 0); break;
		default: return usage();
		}
	}
	/* whole pages, at most 64 MiB a file, 10000 files */
	if (argc - optind != 2 || !w.files || w.files > 10000 || !w.kib ||
	    w.kib % 4 || w.kib > 65536)
		return usage();
	cmd = argv[optind];
	w.dir = argv[optind + 1];
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(cmd, "hold"))
		return cmd_hold(&w);
	want = malloc(witness_bytes(&w));
	got = malloc(witness_bytes(&w));
	if (!want || !got) {
		fprintf(stderr, "cachewitness: out of memory\n");
		return 2;
	}
	if (!strcmp(cmd, "create"))
		r = cmd_create(&w, want);
	else if (!strcmp(cmd, "read"))
		r = cmd_read(&w, want, got, 2);
	else if (!strcmp(cmd, "verify"))
		r = cmd_read(&w, want, got, 1);
	else if (!strcmp(cmd, "incore"))
		r = cmd_incore(&w, (unsigned char *)got);
	else if (!strcmp(cmd, "pfns"))
		r = cmd_pfns(&w, (unsigned char *)got);
	else
		r = usage();
	free(want);
	free(got);
	return r;
}
