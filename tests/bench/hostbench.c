// SPDX-License-Identifier: GPL-2.0
/*
 * hostbench: host-only microbenchmark of the two host paths vmdefrag's
 * shared backend uses, with no guest involved.
 *
 *   reclaim    fallocate(PUNCH_HOLE) of touched memory in a RAM backing,
 *              once in 2 MiB pieces (what the daemon does per captured
 *              block) and once in a single call over the whole file;
 *   give-back  re-backing the punched file through a MADV_HUGEPAGE
 *              mapping with MADV_POPULATE_WRITE, and how much of it ends
 *              up in 2 MiB folios (ShmemPmdMapped / Shared_Hugetlb of the
 *              mapping in /proc/self/smaps, against its size);
 *   daemon     the same two through the daemon's own primitives
 *              (daemon/backend_shared.c, linked from libvdfd.a), which
 *              also measure what they did (st_blocks before and after a
 *              punch; the PMD-mapped bytes of a re-back in smaps): the
 *              reclaim of one contiguous captured range in one call, in
 *              runs of 128 MiB (the guest module's longest run, one
 *              alloc_contig_range() each) and in 2 MiB blocks; the
 *              re-back of the whole range in one call.
 *
 * Two backings: a shmem memfd (needs the host's shmem_enabled at advise
 * or better for 2 MiB folios) and a hugetlbfs memfd (MFD_HUGETLB, needs
 * reserved 2 MiB huge pages).  Each measurement is repeated --rounds times
 * and the median is reported.
 *
 * Host settings it changes for the run, each restored on every exit path
 * (normal return, error, SIGINT/SIGTERM/SIGHUP):
 *   /sys/kernel/mm/transparent_hugepage/shmem_enabled  -> advise, if it
 *       was never/deny (left alone if already advise or better);
 *   /proc/sys/vm/nr_hugepages  -> raised by --hugetlb-pages, if it can be.
 *
 * Output: one JSON object on stdout (run-bench formats it); progress and
 * reasons on stderr.  Exit 0 unless setup failed outright: slow numbers
 * are reported, never failed on.
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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend_shared.h"
#include "file.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21U << 26)
#endif

#define BLOCK		(2UL << 20)
#define RUN		(128UL << 20)	/* the guest module's longest run */
#define GIB		(1UL << 30)
#define MAX_ROUNDS	9
#define SHMEM_ENABLED	"/sys/kernel/mm/transparent_hugepage/shmem_enabled"
#define NR_HUGEPAGES	"/proc/sys/vm/nr_hugepages"

/*
 * The host settings to put back.  Written once before the handlers are
 * installed and read by the restore path (normal or from a signal
 * handler), hence plain static storage and only async-signal-safe calls.
 */
static char hostbench_old_shmem[32];
static volatile sig_atomic_t hostbench_shmem_changed;
static char hostbench_old_nr[32];
static volatile sig_atomic_t hostbench_nr_changed;

struct hostbench_result {
	const char *backend;
	const char *skipped;	/* reason, or NULL when measured */
	unsigned long size;
	double populate_gibs, huge_after_populate;
	double punch_2m_gibs, punch_one_gibs;
	double reback_gibs, huge_after_reback;
	int punched_empty;	/* st_blocks was 0 after every punch */
	/* through daemon/backend_shared.c */
	double d_punch_one_gibs, d_punch_run_gibs, d_punch_2m_gibs;
	double d_reback_gibs, d_huge_after_reback;
	int d_freed_all;	/* every punch reported the whole size freed */
};

static double hostbench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Writes `val` to `path` with async-signal-safe calls only.  0 or -errno. */
static int hostbench_write_file(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = write(fd, val, strlen(val));
	if (n < 0) {
		n = -errno;
		close(fd);
		return n;
	}
	close(fd);
	return 0;
}

/* Puts back every host setting this run changed.  Async-signal-safe. */
static void hostbench_restore(void)
{
	if (hostbench_shmem_changed) {
		hostbench_write_file(SHMEM_ENABLED, hostbench_old_shmem);
		hostbench_shmem_changed = 0;
	}
	if (hostbench_nr_changed) {
		hostbench_write_file(NR_HUGEPAGES, hostbench_old_nr);
		hostbench_nr_changed = 0;
	}
}

static void hostbench_on_signal(int sig)
{
	hostbench_restore();
	signal(sig, SIG_DFL);
	raise(sig);
}

static void hostbench_install_signals(void)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };
	struct sigaction sa;
	size_t i;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = hostbench_on_signal;
	sigfillset(&sa.sa_mask);
	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], &sa, NULL);
}

/*
 * Makes shmem THP available to MADV_HUGEPAGE mappings for the run.
 * Returns the policy in effect in `ret_policy` (the bracketed word).
 */
static int hostbench_shmem_advise(char *ret_policy, size_t size)
{
	char buf[256], *l, *r;
	int ret;

	ret = file_read_short(SHMEM_ENABLED, buf, sizeof(buf));
	if (ret < 0)
		return ret;
	l = strchr(buf, '[');
	r = l ? strchr(l, ']') : NULL;
	if (!l || !r || (size_t)(r - l) >= sizeof(hostbench_old_shmem))
		return -EPROTO;
	*r = '\0';
	snprintf(hostbench_old_shmem, sizeof(hostbench_old_shmem), "%s", l + 1);
	if (!strcmp(l + 1, "never") || !strcmp(l + 1, "deny")) {
		hostbench_shmem_changed = 1;
		ret = hostbench_write_file(SHMEM_ENABLED, "advise");
		if (ret < 0) {
			hostbench_shmem_changed = 0;
			return ret;
		}
		snprintf(ret_policy, size, "advise (was %s, restored after)",
			 hostbench_old_shmem);
	} else {
		snprintf(ret_policy, size, "%s", l + 1);
	}
	return 0;
}

/*
 * Raises nr_hugepages by `want` 2 MiB pages.  Returns how many more the
 * kernel actually reserved in `ret_got` (it may give fewer).
 */
static int hostbench_hugetlb_reserve(unsigned long want, unsigned long *ret_got)
{
	char buf[32];
	unsigned long old, now;
	int ret;

	ret = file_read_short(NR_HUGEPAGES, hostbench_old_nr, sizeof(hostbench_old_nr));
	if (ret < 0)
		return ret;
	old = strtoul(hostbench_old_nr, NULL, 10);
	snprintf(buf, sizeof(buf), "%lu", old + want);
	hostbench_nr_changed = 1;
	ret = hostbench_write_file(NR_HUGEPAGES, buf);
	if (ret < 0) {
		hostbench_nr_changed = 0;
		return ret;
	}
	ret = file_read_short(NR_HUGEPAGES, buf, sizeof(buf));
	if (ret < 0)
		return ret;
	now = strtoul(buf, NULL, 10);
	*ret_got = now > old ? now - old : 0;
	return 0;
}

/* 2 MiB-mapped bytes of the mapping at `addr`, from /proc/self/smaps. */
static int hostbench_huge_mapped(void *addr, unsigned long *ret_bytes)
{
	char line[512], want[32];
	unsigned long kib, total = 0;
	int in = 0, found = 0;
	FILE *f = fopen("/proc/self/smaps", "re");

	if (!f)
		return -errno;
	snprintf(want, sizeof(want), "%lx-", (unsigned long)addr);
	while (fgets(line, sizeof(line), f)) {
		if (strchr(line, '-') && strchr(line, ' ') &&
		    strchr(line, '-') < strchr(line, ' ')) {
			in = !strncmp(line, want, strlen(want));
			found |= in;
			continue;
		}
		if (!in)
			continue;
		if (sscanf(line, "ShmemPmdMapped: %lu kB", &kib) == 1 ||
		    sscanf(line, "Shared_Hugetlb: %lu kB", &kib) == 1 ||
		    sscanf(line, "Private_Hugetlb: %lu kB", &kib) == 1)
			total += kib << 10;
	}
	fclose(f);
	if (!found)
		return -ENOENT;
	*ret_bytes = total;
	return 0;
}

static int hostbench_allocated(int fd, unsigned long *ret_bytes)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	*ret_bytes = (unsigned long)st.st_blocks * 512;
	return 0;
}

static int hostbench_populate(void *map, unsigned long size, double *ret_secs)
{
	double t0 = hostbench_now();

	if (madvise(map, size, MADV_POPULATE_WRITE) < 0)
		return -errno;
	*ret_secs = hostbench_now() - t0;
	return 0;
}

static int hostbench_punch(int fd, unsigned long size, unsigned long piece,
			   double *ret_secs)
{
	int mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
	double t0 = hostbench_now();
	unsigned long off;

	for (off = 0; off < size; off += piece)
		if (fallocate(fd, mode, off, piece) < 0)
			return -errno;
	*ret_secs = hostbench_now() - t0;
	return 0;
}

/* backend_shared_reclaim() over the file in `piece` steps; checks `freed`. */
static int hostbench_daemon_punch(int fd, unsigned long size, unsigned long piece,
				  double *ret_secs, int *freed_all)
{
	uint64_t freed, total = 0;
	double t0 = hostbench_now();
	unsigned long off;
	int ret;

	for (off = 0; off < size; off += piece) {
		ret = backend_shared_reclaim(fd, off, piece, &freed);
		if (ret < 0)
			return ret;
		total += freed;
	}
	*ret_secs = hostbench_now() - t0;
	if (total != size)
		*freed_all = 0;
	return 0;
}

/* backend_shared_reback() of the whole file in one call. */
static int hostbench_daemon_reback(int fd, unsigned long size, double *ret_secs,
				   double *ret_huge)
{
	struct shared_reback_result res;
	double t0 = hostbench_now();
	int ret;

	ret = backend_shared_reback(fd, VM_BACKING_MEMFD, 0, size, &res);
	if (ret < 0)
		return ret;
	*ret_secs = hostbench_now() - t0;
	*ret_huge = (double)res.huge_bytes / size;
	return 0;
}

static int hostbench_cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double hostbench_median(double *v, int n)
{
	qsort(v, n, sizeof(*v), hostbench_cmp);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The huge-mapped fraction of the mapping, or -1 if smaps has no answer. */
static double hostbench_huge_fraction(void *map, unsigned long size)
{
	unsigned long huge;

	if (hostbench_huge_mapped(map, &huge) < 0)
		return -1;
	return (double)huge / size;
}

/*
 * One backing: populate, then `rounds` times punch in 2 MiB pieces,
 * re-back (timed), punch in one call, re-back.  Fills `res`.
 */
static int hostbench_run_backing(int fd, unsigned long size, int rounds,
				 struct hostbench_result *res)
{
	double p2[MAX_ROUNDS], p1[MAX_ROUNDS], rb[MAX_ROUNDS], secs, huge_rb = 1;
	double dp1[MAX_ROUNDS], dpr[MAX_ROUNDS], dp2[MAX_ROUNDS], drb[MAX_ROUNDS];
	double huge, dhuge = 1;
	unsigned long left = 0;
	void *map;
	int i, ret;

	if (ftruncate(fd, size) < 0)
		return -errno;
	map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		return -errno;
	/* hugetlbfs mappings are huge already; EINVAL there is expected */
	madvise(map, size, MADV_HUGEPAGE);
	ret = hostbench_populate(map, size, &secs);
	if (ret < 0)
		goto out_unmap;
	res->populate_gibs = size / (double)GIB / secs;
	res->huge_after_populate = hostbench_huge_fraction(map, size);
	res->punched_empty = 1;
	for (i = 0; i < rounds; i++) {
		ret = hostbench_punch(fd, size, BLOCK, &secs);
		if (ret < 0)
			goto out_unmap;
		p2[i] = size / (double)GIB / secs;
		if (hostbench_allocated(fd, &left) < 0 || left)
			res->punched_empty = 0;

		ret = hostbench_populate(map, size, &secs);
		if (ret < 0)
			goto out_unmap;
		rb[i] = size / (double)GIB / secs;
		if (hostbench_huge_fraction(map, size) < huge_rb)
			huge_rb = hostbench_huge_fraction(map, size);

		ret = hostbench_punch(fd, size, size, &secs);
		if (ret < 0)
			goto out_unmap;
		p1[i] = size / (double)GIB / secs;
		if (hostbench_allocated(fd, &left) < 0 || left)
			res->punched_empty = 0;
		ret = hostbench_populate(map, size, &secs);
		if (ret < 0)
			goto out_unmap;

		/* the daemon's primitives: one range, 128 MiB runs, 2 MiB blocks */
		res->d_freed_all = i ? res->d_freed_all : 1;
		ret = hostbench_daemon_punch(fd, size, size, &secs, &res->d_freed_all);
		if (ret < 0)
			goto out_unmap;
		dp1[i] = size / (double)GIB / secs;
		ret = hostbench_daemon_reback(fd, size, &secs, &huge);
		if (ret < 0)
			goto out_unmap;
		drb[i] = size / (double)GIB / secs;
		if (huge < dhuge)
			dhuge = huge;
		ret = hostbench_daemon_punch(fd, size, size % RUN ? BLOCK : RUN, &secs,
					     &res->d_freed_all);
		if (ret < 0)
			goto out_unmap;
		dpr[i] = size / (double)GIB / secs;
		ret = hostbench_populate(map, size, &secs);
		if (ret < 0)
			goto out_unmap;
		ret = hostbench_daemon_punch(fd, size, BLOCK, &secs, &res->d_freed_all);
		if (ret < 0)
			goto out_unmap;
		dp2[i] = size / (double)GIB / secs;
		ret = hostbench_populate(map, size, &secs);
		if (ret < 0)
			goto out_unmap;
	}
	res->d_punch_one_gibs = hostbench_median(dp1, rounds);
	res->d_punch_run_gibs = hostbench_median(dpr, rounds);
	res->d_punch_2m_gibs = hostbench_median(dp2, rounds);
	res->d_reback_gibs = hostbench_median(drb, rounds);
	res->d_huge_after_reback = dhuge;
	res->punch_2m_gibs = hostbench_median(p2, rounds);
	res->punch_one_gibs = hostbench_median(p1, rounds);
	res->reback_gibs = hostbench_median(rb, rounds);
	res->huge_after_reback = huge_rb;
	res->size = size;
	ret = 0;
out_unmap:
	munmap(map, size);
	return ret;
}

static unsigned long hostbench_mem_available(void)
{
	char line[256];
	unsigned long kib = 0;
	FILE *f = fopen("/proc/meminfo", "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %lu kB", &kib) == 1)
			break;
	fclose(f);
	return kib << 10;
}

static void hostbench_print(const struct hostbench_result *r, int last)
{
	printf("  \"%s\": {", r->backend);
	if (r->skipped) {
		printf("\"skipped\": \"%s\"}%s\n", r->skipped, last ? "" : ",");
		return;
	}
	printf("\"size\": %lu, \"populate_gibs\": %.2f, "
	       "\"huge_after_populate\": %.4f, \"punch_2m_gibs\": %.2f, "
	       "\"punch_one_gibs\": %.2f, \"reback_gibs\": %.2f, "
	       "\"huge_after_reback\": %.4f, \"punched_empty\": %s, "
	       "\"daemon_punch_one_gibs\": %.2f, \"daemon_punch_run_gibs\": %.2f, "
	       "\"daemon_punch_2m_gibs\": %.2f, \"daemon_reback_gibs\": %.2f, "
	       "\"daemon_huge_after_reback\": %.4f, \"daemon_freed_all\": %s}%s\n",
	       r->size, r->populate_gibs, r->huge_after_populate, r->punch_2m_gibs,
	       r->punch_one_gibs, r->reback_gibs, r->huge_after_reback,
	       r->punched_empty ? "true" : "false", r->d_punch_one_gibs,
	       r->d_punch_run_gibs, r->d_punch_2m_gibs, r->d_reback_gibs,
	       r->d_huge_after_reback, r->d_freed_all ? "true" : "false",
	       last ? "" : ",");
}

static void hostbench_usage(FILE *out)
{
	fputs("usage: hostbench [--size MIB] [--hugetlb-pages N] [--rounds R]\n"
	      "Defaults: 8192 MiB memfd (shrunk to fit MemAvailable), 512 huge\n"
	      "pages (1 GiB) for hugetlbfs, 3 rounds.  Prints JSON on stdout.\n", out);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "size", required_argument, NULL, 's' },
		{ "hugetlb-pages", required_argument, NULL, 'p' },
		{ "rounds", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct hostbench_result shm = { .backend = "memfd" };
	struct hostbench_result htlb = { .backend = "hugetlbfs" };
	static char shm_why[160], htlb_why[160];
	unsigned long size = 8192UL << 20, pages = 512, got = 0, avail;
	char policy[96] = "unknown";
	int c, fd, ret, rounds = 3;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 's': size = strtoul(optarg, NULL, 0) << 20; break;
		case 'p': pages = strtoul(optarg, NULL, 0); break;
		case 'r': rounds = atoi(optarg); break;
		case 'h': hostbench_usage(stdout); return 0;
		default: hostbench_usage(stderr); return 2;
		}
	}
	if (optind != argc || rounds < 1 || rounds > MAX_ROUNDS || size < BLOCK) {
		hostbench_usage(stderr);
		return 2;
	}
	/* leave the host (and the other guests on it) 4 GiB */
	avail = hostbench_mem_available();
	if (avail < size + (4UL << 30))
		size = avail > (5UL << 30) ? avail - (4UL << 30) : GIB;
	size &= ~(BLOCK - 1);

	hostbench_install_signals();
	ret = hostbench_shmem_advise(policy, sizeof(policy));
	if (ret < 0)
		fprintf(stderr, "hostbench: cannot set shmem_enabled: %s, "
			"measuring with the current policy\n", strerror(-ret));

	fprintf(stderr, "hostbench: memfd %lu MiB, %d rounds\n", size >> 20, rounds);
	fd = memfd_create("hostbench", MFD_CLOEXEC);
	if (fd < 0) {
		snprintf(shm_why, sizeof(shm_why), "memfd_create: %s", strerror(errno));
		shm.skipped = shm_why;
	} else {
		ret = hostbench_run_backing(fd, size, rounds, &shm);
		if (ret < 0) {
			snprintf(shm_why, sizeof(shm_why), "%s", strerror(-ret));
			shm.skipped = shm_why;
		}
		close(fd);
	}

	ret = pages ? hostbench_hugetlb_reserve(pages, &got) : -EINVAL;
	if (ret < 0) {
		snprintf(htlb_why, sizeof(htlb_why), "cannot raise %s: %s",
			 NR_HUGEPAGES, strerror(-ret));
		htlb.skipped = htlb_why;
	} else if (got < 16) {
		snprintf(htlb_why, sizeof(htlb_why), "the kernel reserved only %lu of "
			 "%lu 2 MiB huge pages asked for", got, pages);
		htlb.skipped = htlb_why;
	} else {
		fprintf(stderr, "hostbench: hugetlbfs %lu MiB\n", got * 2);
		fd = memfd_create("hostbench-huge", MFD_CLOEXEC | MFD_HUGETLB | MFD_HUGE_2MB);
		if (fd < 0) {
			snprintf(htlb_why, sizeof(htlb_why), "memfd_create(MFD_HUGETLB): %s",
				 strerror(errno));
			htlb.skipped = htlb_why;
		} else {
			ret = hostbench_run_backing(fd, got * BLOCK, rounds, &htlb);
			if (ret < 0) {
				snprintf(htlb_why, sizeof(htlb_why), "%s", strerror(-ret));
				htlb.skipped = htlb_why;
			}
			close(fd);
		}
	}
	hostbench_restore();

	printf("{\n  \"shmem_enabled\": \"%s\",\n  \"rounds\": %d,\n", policy, rounds);
	hostbench_print(&shm, 0);
	hostbench_print(&htlb, 1);
	printf("}\n");
	return 0;
}
