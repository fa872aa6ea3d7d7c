// SPDX-License-Identifier: GPL-2.0
/*
 * fragment: leaves a guest's free memory scattered the way a long-running
 * guest's is, and keeps the survivors alive.
 *
 * Three allocation patterns run interleaved, in rounds, so that pages of
 * different lifetimes end up side by side in the same 2 MiB blocks:
 *
 *   files  small files (4-32 KiB) written to a tmpfs directory: page cache
 *          (shmem) pages, movable;
 *   anon   anonymous memory touched page by page, in 4 KiB pages
 *          (MADV_NOHUGEPAGE: a partly freed THP would only be split under
 *          pressure and its free pages would stay invisible);
 *   slab   empty files in per-round directories: their dentries and inodes
 *          are slab objects, unmovable.
 *
 * Then it frees all but --keep percent of each at random: deletes files,
 * MADV_DONTNEEDs scattered anonymous pages, deletes most of the empty
 * files.  What survives is held: the work runs in a holder process that
 * stays alive (pid in /run/fragment.pid) keeping the anonymous survivors
 * mapped; files stay in --dir.  `fragment --release` ends the holder and
 * removes the directory, giving everything back.
 *
 * Seeded: the same --seed gives the same pattern.  Sizes default to a
 * fraction of MemTotal so one invocation suits any guest size.
 */
#include <dirent.h>
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
#include <unistd.h>

#include "holder.h"
#include "prng.h"

#define PAGE		4096UL
#define PIDFILE		"/run/fragment.pid"
#define FILE_PAGES_MAX	8	/* files are 1..FILE_PAGES_MAX pages */

struct fragment {
	uint64_t seed;
	unsigned long files_mib, anon_mib, slab_files;
	unsigned int keep_pct, rounds;
	const char *dir;
	struct prng rng;
};

struct fragment_result {
	unsigned long files, files_kept, file_pages_kept;
	unsigned long anon_pages, anon_pages_kept;
	unsigned long slab_files, slab_kept;
};

static unsigned long fragment_memtotal_mib(void)
{
	char line[256];
	unsigned long kib = 0;
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		return 1024;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemTotal: %lu kB", &kib) == 1)
			break;
	fclose(f);
	return kib ? kib / 1024 : 1024;
}

static int fragment_keep(struct fragment *fr)
{
	return prng_below(&fr->rng, 100) < fr->keep_pct;
}

static int fragment_write_file(const char *path, size_t pages, uint64_t tag)
{
	static char buf[FILE_PAGES_MAX * PAGE];
	size_t i;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	if (fd < 0)
		return -errno;
	for (i = 0; i < pages * PAGE; i += 8)
		*(uint64_t *)(buf + i) = tag + i;
	if (write(fd, buf, pages * PAGE) != (ssize_t)(pages * PAGE)) {
		close(fd);
		return -EIO;
	}
	close(fd);
	return 0;
}

static int fragment_run(struct fragment *fr, struct fragment_result *res)
{
	unsigned long files_per_round, slab_per_round, anon_pages_per_round;
	size_t anon_len;
	unsigned char *anon;
	unsigned int r;
	char path[512];
	unsigned long i;
	size_t *file_pages;

	/* the mean file is (1 + FILE_PAGES_MAX) / 2 pages */
	files_per_round = 2 * (fr->files_mib << 20) / ((1 + FILE_PAGES_MAX) * PAGE) /
			  fr->rounds + 1;
	slab_per_round = fr->slab_files / fr->rounds;
	anon_pages_per_round = (fr->anon_mib << 20) / PAGE / fr->rounds;
	anon_len = anon_pages_per_round * fr->rounds * PAGE;

	anon = mmap(NULL, anon_len ? anon_len : PAGE, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (anon == MAP_FAILED)
		return -errno;
	madvise(anon, anon_len, MADV_NOHUGEPAGE);
	file_pages = calloc(files_per_round * fr->rounds, sizeof(*file_pages));
	if (!file_pages)
		return -ENOMEM;
	if (mkdir(fr->dir, 0700) < 0 && errno != EEXIST)
		return -errno;

	for (r = 0; r < fr->rounds; r++) {
		for (i = 0; i < files_per_round; i++) {
			size_t n = r * files_per_round + i;

			file_pages[n] = 1 + prng_below(&fr->rng, FILE_PAGES_MAX);
			snprintf(path, sizeof(path), "%s/f%zu", fr->dir, n);
			if (fragment_write_file(path, file_pages[n],
						fr->seed + n) < 0)
				return -ENOSPC;
			res->files++;
		}
		for (i = 0; i < anon_pages_per_round; i++) {
			size_t pg = r * anon_pages_per_round + i;

			anon[pg * PAGE] = (unsigned char)(pg + 1);
			res->anon_pages++;
		}
		snprintf(path, sizeof(path), "%s/s%u", fr->dir, r);
		mkdir(path, 0700);
		for (i = 0; i < slab_per_round; i++) {
			int fd;

			snprintf(path, sizeof(path), "%s/s%u/e%lu", fr->dir, r, i);
			fd = open(path, O_WRONLY | O_CREAT, 0600);
			if (fd < 0)
				return -errno;
			close(fd);
			res->slab_files++;
		}
	}

	/* Free all but keep_pct of each pattern, scattered at random. */
	for (i = 0; i < res->files; i++) {
		if (fragment_keep(fr)) {
			res->files_kept++;
			res->file_pages_kept += file_pages[i];
			continue;
		}
		snprintf(path, sizeof(path), "%s/f%lu", fr->dir, i);
		unlink(path);
	}
	for (i = 0; i < res->anon_pages; i++) {
		if (fragment_keep(fr)) {
			res->anon_pages_kept++;
			continue;
		}
		madvise(anon + i * PAGE, PAGE, MADV_DONTNEED);
	}
	for (r = 0; r < fr->rounds; r++) {
		for (i = 0; i < slab_per_round; i++) {
			if (fragment_keep(fr)) {
				res->slab_kept++;
				continue;
			}
			snprintf(path, sizeof(path), "%s/s%u/e%lu", fr->dir, r, i);
			unlink(path);
		}
	}
	free(file_pages);
	return 0;
}

static int fragment_remove_tree(const char *dir)
{
	char cmd[600];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -EIO;
}

/* The holder: runs the workload, reports its result, keeps the survivors. */
static void fragment_hold(void *arg, int done_fd)
{
	struct fragment_result res = {};

	if (fragment_run(arg, &res) < 0)
		res.files = (unsigned long)-1;
	if (write(done_fd, &res, sizeof(res)) != sizeof(res))
		_exit(2);
	close(done_fd);
	for (;;)
		pause();
}

static int fragment_release(const char *dir)
{
	long pid = holder_read_pid(PIDFILE);

	if (pid)
		kill(pid, SIGKILL);
	unlink(PIDFILE);
	if (fragment_remove_tree(dir) < 0) {
		fprintf(stderr, "fragment: cannot remove \"%s\"\n", dir);
		return 1;
	}
	printf("fragment: released holder=%ld dir=%s\n", pid, dir);
	return 0;
}

static void fragment_usage(FILE *out)
{
	fputs("usage: fragment [--seed S] [--files MIB] [--anon MIB] [--slab N]\n"
	      "                [--keep PCT] [--rounds R] [--dir DIR]\n"
	      "       fragment --release [--dir DIR]\n"
	      "Defaults: files and anon a third of MemTotal each, slab 40000 entries,\n"
	      "keep 10%, 16 rounds, dir /tmp/fragment (must be on tmpfs).\n", out);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "seed", required_argument, NULL, 's' },
		{ "files", required_argument, NULL, 'f' },
		{ "anon", required_argument, NULL, 'a' },
		{ "slab", required_argument, NULL, 'l' },
		{ "keep", required_argument, NULL, 'k' },
		{ "rounds", required_argument, NULL, 'r' },
		{ "dir", required_argument, NULL, 'd' },
		{ "release", no_argument, NULL, 'R' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	unsigned long mem = fragment_memtotal_mib();
	struct fragment fr = {
		.seed = 1, .files_mib = mem / 3, .anon_mib = mem / 3,
		.slab_files = 40000, .keep_pct = 10, .rounds = 16,
		.dir = "/tmp/fragment",
	};
	struct fragment_result res = {};
	int c, release = 0, r;
	pid_t pid = 0;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 's': fr.seed = strtoull(optarg, NULL, 0); break;
		case 'f': fr.files_mib = strtoul(optarg, NULL, 0); break;
		case 'a': fr.anon_mib = strtoul(optarg, NULL, 0); break;
		case 'l': fr.slab_files = strtoul(optarg, NULL, 0); break;
		case 'k': fr.keep_pct = strtoul(optarg, NULL, 0); break;
		case 'r': fr.rounds = strtoul(optarg, NULL, 0); break;
		case 'd': fr.dir = optarg; break;
		case 'R': release = 1; break;
		case 'h': fragment_usage(stdout); return 0;
		default: fragment_usage(stderr); return 2;
		}
	}
	if (optind != argc || fr.keep_pct > 100 || !fr.rounds ||
	    strchr(fr.dir, '\'')) {
		fragment_usage(stderr);
		return 2;
	}
	if (release)
		return fragment_release(fr.dir);
	if (access(PIDFILE, F_OK) == 0) {
		fprintf(stderr, "fragment: a holder is running (%s); --release it first\n",
			PIDFILE);
		return 2;
	}
	fr.rng.state = fr.seed;

	r = holder_spawn(fragment_hold, &fr, &res, sizeof(res), &pid);
	if (r == -EPIPE || (!r && res.files == (unsigned long)-1)) {
		fprintf(stderr, "fragment: workload failed (out of memory or tmpfs full?)\n");
		if (pid > 0)
			kill(pid, SIGKILL);
		return 1;
	}
	if (r < 0)
		return 2;
	holder_write_pid(PIDFILE, pid);
	printf("fragment: seed=%llu holder=%ld files=%lu files_kept=%lu "
	       "file_kib_kept=%lu anon_pages=%lu anon_pages_kept=%lu "
	       "slab_files=%lu slab_kept=%lu\n",
	       (unsigned long long)fr.seed, (long)pid, res.files, res.files_kept,
	       res.file_pages_kept * 4, res.anon_pages, res.anon_pages_kept,
	       res.slab_files, res.slab_kept);
	return 0;
}
