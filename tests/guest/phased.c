// SPDX-License-Identifier: GPL-2.0
/*
 * phased: a guest workload in phases, for the policy bench (make bench):
 * memory that comes and goes over minutes, the way a VM's does, so that
 * what the host keeps backed can be watched against what the guest uses.
 *
 *   grow       touches --anon-mib of anonymous memory and writes --file-mib
 *              of small (16 KiB) tmpfs files (page cache), interleaved, in
 *              steps of 2 MiB;
 *   fragment   frees all but --keep percent of both at random, page by page
 *              (anonymous memory is MADV_NOHUGEPAGE, so what is freed is
 *              4 KiB pages scattered over the blocks: free memory that free
 *              page reporting cannot report);
 *   idle       sleeps --idle seconds;
 *   grow2      touches --grow2-mib of new anonymous memory in 2 MiB steps;
 *   fragment2  frees all but --keep percent of it, scattered the same way;
 *   idle2      sleeps --idle seconds again;
 *
 * then verifies every page it kept and exits (everything is freed).
 *
 * Every step of the grow phases is timed (CLOCK_MONOTONIC around touching
 * or writing its 2 MiB): a step slower than STALL_MS is an allocation
 * stall, reported as it happens and counted per phase.  Every page written
 * holds a pattern derived from the seed and the page's identity: anything the host or the module does to a kept page that
 * changes it is found by the verification, which runs after grow2 (all of
 * grow's survivors and all of grow2) and at the end (every survivor).
 *
 * Output: one line per event on stdout, line buffered, "phased: " then
 * key=value words, t_ms counting from the start:
 *
 *   phased: event=start seed=S anon_mib=A file_mib=F grow2_mib=G keep_pct=K idle_s=I
 *   phased: event=phase phase=NAME t_ms=T                  (a phase begins)
 *   phased: event=stall phase=NAME step=N ms=M t_ms=T
 *   phased: event=end phase=NAME t_ms=T steps=N stalls=N max_ms=M mean_ms=M
 *   phased: event=verify when=NAME pages=N bad_pages=N t_ms=T
 *   phased: event=done verify=ok|CORRUPT stalls=N t_ms=T
 *
 * Exit 0 when every kept page verified, 1 if one did not, 2 on usage or
 * system errors (out of memory included: an OOM kill shows as no done line).
 * Seeded: the same --seed frees the same pages in every run.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "prng.h"

#define PAGE		4096UL
#define WORDS		(PAGE / sizeof(uint64_t))
#define STEP		(2UL << 20)
#define STEP_PAGES	(STEP / PAGE)
#define FILE_PAGES	4		/* 16 KiB files */
#define STALL_MS	100.0
#define TAG_ANON	1ULL
#define TAG_FILE	2ULL
#define TAG_GROW2	3ULL

struct phased {
	uint64_t seed;
	unsigned long anon_mib, file_mib, grow2_mib;
	unsigned int keep_pct, idle_s;
	const char *dir;
	struct prng rng;
	struct timespec t0;

	/* grow's anonymous memory and which of its pages are kept */
	unsigned char *anon, *anon_kept;
	size_t anon_pages;
	/* grow's files (FILE_PAGES pages each) and which are kept */
	unsigned char *file_kept;
	size_t files;
	/* grow2's anonymous memory */
	unsigned char *grow2, *grow2_kept;
	size_t grow2_pages;

	/* the current phase's step timings */
	const char *phase;
	unsigned long steps, stalls, total_stalls;
	double max_ms, sum_ms;
};

static double phased_ms_since(const struct timespec *a)
{
	struct timespec b;

	clock_gettime(CLOCK_MONOTONIC, &b);
	return (b.tv_sec - a->tv_sec) * 1e3 + (b.tv_nsec - a->tv_nsec) / 1e6;
}

static long phased_t_ms(const struct phased *p)
{
	return (long)phased_ms_since(&p->t0);
}

/*
 * A page's pattern: one mixed value per page (seed, kind, index), then a
 * word-index ramp, cheap enough that a timed step measures the allocation
 * and not the pattern (under TCG a mix per word would cost more than the
 * page fault); a zeroed, changed or swapped page still fails the check.
 */
static uint64_t phased_base(uint64_t seed, uint64_t tag, size_t page)
{
	return prng_mix((seed + tag * 0x100000001b3ULL) ^ ((uint64_t)page << 20));
}

static void phased_fill(uint64_t *w, uint64_t seed, uint64_t tag, size_t page)
{
	uint64_t base = phased_base(seed, tag, page);
	size_t i;

	for (i = 0; i < WORDS; i++)
		w[i] = base + i;
}

static int phased_check(const uint64_t *w, uint64_t seed, uint64_t tag, size_t page)
{
	uint64_t base = phased_base(seed, tag, page);
	size_t i;

	for (i = 0; i < WORDS; i++)
		if (w[i] != base + i)
			return -EIO;
	return 0;
}

static void phased_begin(struct phased *p, const char *phase)
{
	p->phase = phase;
	p->steps = p->stalls = 0;
	p->max_ms = p->sum_ms = 0;
	printf("phased: event=phase phase=%s t_ms=%ld\n", phase, phased_t_ms(p));
}

static void phased_end(struct phased *p)
{
	printf("phased: event=end phase=%s t_ms=%ld steps=%lu stalls=%lu "
	       "max_ms=%.1f mean_ms=%.1f\n", p->phase, phased_t_ms(p), p->steps,
	       p->stalls, p->max_ms, p->steps ? p->sum_ms / p->steps : 0.0);
}

/* Records one timed step of the current phase. */
static void phased_step_done(struct phased *p, const struct timespec *start)
{
	double ms = phased_ms_since(start);

	p->sum_ms += ms;
	if (ms > p->max_ms)
		p->max_ms = ms;
	if (ms > STALL_MS) {
		p->stalls++;
		p->total_stalls++;
		printf("phased: event=stall phase=%s step=%lu ms=%.0f t_ms=%ld\n",
		       p->phase, p->steps, ms, phased_t_ms(p));
	}
	p->steps++;
}

static void *phased_map(size_t len)
{
	void *m = mmap(NULL, len ? len : PAGE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (m == MAP_FAILED)
		return NULL;
	/* 4 KiB pages: a scattered free must free memory, not dent a THP */
	madvise(m, len, MADV_NOHUGEPAGE);
	return m;
}

static void phased_file_path(const struct phased *p, size_t n, char *buf, size_t sz)
{
	snprintf(buf, sz, "%s/f%zu", p->dir, n);
}

static int phased_write_file(const struct phased *p, size_t n)
{
	static uint64_t buf[FILE_PAGES * WORDS];
	char path[512];
	size_t i;
	int fd;

	for (i = 0; i < FILE_PAGES; i++)
		phased_fill(buf + i * WORDS, p->seed, TAG_FILE, n * FILE_PAGES + i);
	phased_file_path(p, n, path, sizeof(path));
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		return -errno;
	if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf)) {
		close(fd);
		return -ENOSPC;
	}
	close(fd);
	return 0;
}

static int phased_check_file(const struct phased *p, size_t n)
{
	static uint64_t buf[FILE_PAGES * WORDS];
	char path[512];
	size_t i;
	int fd, ret = 0;

	phased_file_path(p, n, path, sizeof(path));
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return -errno;
	if (read(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
		ret = -EIO;
	close(fd);
	for (i = 0; !ret && i < FILE_PAGES; i++)
		ret = phased_check(buf + i * WORDS, p->seed, TAG_FILE, n * FILE_PAGES + i);
	return ret;
}

/*
 * grow: anonymous pages and files interleaved, so both kinds share blocks,
 * 2 MiB per timed step.
 */
static int phased_grow(struct phased *p)
{
	size_t total = (p->anon_mib + p->file_mib) << 20;
	size_t steps = total / STEP, s, a = 0, f = 0;

	p->anon_pages = (p->anon_mib << 20) / PAGE;
	p->files = (p->file_mib << 20) / (FILE_PAGES * PAGE);
	p->anon = phased_map(p->anon_pages * PAGE);
	p->anon_kept = calloc(p->anon_pages + 1, 1);
	p->file_kept = calloc(p->files + 1, 1);
	if (!p->anon || !p->anon_kept || !p->file_kept)
		return -ENOMEM;
	if (mkdir(p->dir, 0700) < 0 && errno != EEXIST)
		return -errno;

	phased_begin(p, "grow");
	for (s = 0; s < steps; s++) {
		/* where this step should have brought each kind */
		size_t a_to = p->anon_pages * (s + 1) / steps;
		size_t f_to = p->files * (s + 1) / steps;
		struct timespec t;

		clock_gettime(CLOCK_MONOTONIC, &t);
		for (; a < a_to; a++)
			phased_fill((uint64_t *)(p->anon + a * PAGE), p->seed, TAG_ANON, a);
		for (; f < f_to; f++)
			if (phased_write_file(p, f) < 0)
				return -ENOSPC;
		phased_step_done(p, &t);
	}
	phased_end(p);
	return 0;
}

/* Frees all but keep_pct of pages[0..n) at random; kept[i] says which stay. */
static void phased_free_scattered(struct phased *p, unsigned char *mem, size_t n,
				  unsigned char *kept)
{
	size_t i, run = 0;

	for (i = 0; i <= n; i++) {
		kept[i] = i < n && prng_below(&p->rng, 100) < p->keep_pct;
		if (i < n && !kept[i]) {
			run++;
			continue;
		}
		/* a run of freed pages ends before page i */
		if (run)
			madvise(mem + (i - run) * PAGE, run * PAGE, MADV_DONTNEED);
		run = 0;
	}
}

static void phased_fragment(struct phased *p)
{
	char path[512];
	size_t i;

	phased_begin(p, "fragment");
	phased_free_scattered(p, p->anon, p->anon_pages, p->anon_kept);
	for (i = 0; i < p->files; i++) {
		p->file_kept[i] = prng_below(&p->rng, 100) < p->keep_pct;
		if (!p->file_kept[i]) {
			phased_file_path(p, i, path, sizeof(path));
			unlink(path);
		}
	}
	phased_end(p);
}

static void phased_idle(struct phased *p, const char *phase)
{
	struct timespec ts = { .tv_sec = p->idle_s };

	phased_begin(p, phase);
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	phased_end(p);
}

static int phased_grow2(struct phased *p)
{
	size_t s, pg = 0;

	p->grow2_pages = (p->grow2_mib << 20) / PAGE;
	p->grow2 = phased_map(p->grow2_pages * PAGE);
	p->grow2_kept = calloc(p->grow2_pages + 1, 1);
	if (!p->grow2 || !p->grow2_kept)
		return -ENOMEM;
	phased_begin(p, "grow2");
	for (s = 0; s < p->grow2_pages / STEP_PAGES; s++) {
		struct timespec t;

		clock_gettime(CLOCK_MONOTONIC, &t);
		for (; pg < (s + 1) * STEP_PAGES; pg++)
			phased_fill((uint64_t *)(p->grow2 + pg * PAGE), p->seed,
				    TAG_GROW2, pg);
		phased_step_done(p, &t);
	}
	phased_end(p);
	return 0;
}

static void phased_fragment2(struct phased *p)
{
	phased_begin(p, "fragment2");
	phased_free_scattered(p, p->grow2, p->grow2_pages, p->grow2_kept);
	phased_end(p);
}

/*
 * Checks every page that should hold data: grow's kept anonymous pages and
 * files, and grow2's pages (all of them, or only the kept ones after
 * fragment2).  Prints the count; returns the number of bad pages.
 */
static unsigned long phased_verify(struct phased *p, const char *when, int grow2_all)
{
	unsigned long pages = 0, bad = 0;
	size_t i;

	for (i = 0; i < p->anon_pages; i++) {
		if (!p->anon_kept[i])
			continue;
		pages++;
		bad += phased_check((uint64_t *)(p->anon + i * PAGE), p->seed,
				    TAG_ANON, i) < 0;
	}
	for (i = 0; i < p->files; i++) {
		if (!p->file_kept[i])
			continue;
		pages += FILE_PAGES;
		bad += phased_check_file(p, i) < 0 ? FILE_PAGES : 0;
	}
	for (i = 0; p->grow2 && i < p->grow2_pages; i++) {
		if (!grow2_all && !p->grow2_kept[i])
			continue;
		pages++;
		bad += phased_check((uint64_t *)(p->grow2 + i * PAGE), p->seed,
				    TAG_GROW2, i) < 0;
	}
	printf("phased: event=verify when=%s pages=%lu bad_pages=%lu t_ms=%ld\n",
	       when, pages, bad, phased_t_ms(p));
	return bad;
}

static void phased_remove_files(struct phased *p)
{
	char path[512];
	size_t i;

	for (i = 0; i < p->files; i++) {
		phased_file_path(p, i, path, sizeof(path));
		unlink(path);
	}
	rmdir(p->dir);
}

static void phased_usage(FILE *out)
{
	fputs("usage: phased --anon-mib A --file-mib F --grow2-mib G [--keep PCT]\n"
	      "              [--idle S] [--seed S] [--dir DIR]\n"
	      "Defaults: keep 15%, idle 60 s, seed 1, dir /tmp/phased (tmpfs).\n", out);
}

static int phased_parse_ul(const char *s, unsigned long max, unsigned long *ret_v)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 0);
	if (errno || end == s || *end || v > max)
		return -EINVAL;
	*ret_v = v;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "seed", required_argument, NULL, 's' },
		{ "anon-mib", required_argument, NULL, 'a' },
		{ "file-mib", required_argument, NULL, 'f' },
		{ "grow2-mib", required_argument, NULL, 'g' },
		{ "keep", required_argument, NULL, 'k' },
		{ "idle", required_argument, NULL, 'i' },
		{ "dir", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	struct phased p = { .seed = 1, .keep_pct = 15, .idle_s = 60,
			    .dir = "/tmp/phased" };
	unsigned long v, bad;
	int c, bad_arg = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 's': bad_arg |= phased_parse_ul(optarg, ~0UL, &v); p.seed = v; break;
		case 'a': bad_arg |= phased_parse_ul(optarg, 1 << 20, &p.anon_mib); break;
		case 'f': bad_arg |= phased_parse_ul(optarg, 1 << 20, &p.file_mib); break;
		case 'g': bad_arg |= phased_parse_ul(optarg, 1 << 20, &p.grow2_mib); break;
		case 'k': bad_arg |= phased_parse_ul(optarg, 100, &v); p.keep_pct = v; break;
		case 'i': bad_arg |= phased_parse_ul(optarg, 86400, &v); p.idle_s = v; break;
		case 'd': p.dir = optarg; break;
		case 'h': phased_usage(stdout); return 0;
		default: phased_usage(stderr); return 2;
		}
	}
	if (bad_arg || optind != argc || !p.anon_mib + !p.file_mib == 2 ||
	    (p.anon_mib + p.file_mib) << 20 < STEP) {
		phased_usage(stderr);
		return 2;
	}
	p.rng.state = p.seed;
	clock_gettime(CLOCK_MONOTONIC, &p.t0);
	printf("phased: event=start seed=%llu anon_mib=%lu file_mib=%lu grow2_mib=%lu "
	       "keep_pct=%u idle_s=%u\n", (unsigned long long)p.seed, p.anon_mib,
	       p.file_mib, p.grow2_mib, p.keep_pct, p.idle_s);

	if (phased_grow(&p) < 0) {
		fprintf(stderr, "phased: grow failed (out of memory or tmpfs full?)\n");
		return 2;
	}
	phased_fragment(&p);
	phased_idle(&p, "idle");
	if (phased_grow2(&p) < 0) {
		fprintf(stderr, "phased: grow2 failed (out of memory)\n");
		return 2;
	}
	bad = phased_verify(&p, "grow2", 1);
	phased_fragment2(&p);
	phased_idle(&p, "idle2");
	bad += phased_verify(&p, "end", 0);
	printf("phased: event=done verify=%s stalls=%lu t_ms=%ld\n",
	       bad ? "CORRUPT" : "ok", p.total_stalls, phased_t_ms(&p));
	phased_remove_files(&p);
	return bad ? 1 : 0;
}
