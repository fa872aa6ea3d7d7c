// SPDX-License-Identifier: GPL-2.0
/*
 * slabtree: a slab-heavy file tree workload, seeded and reproducible.
 *
 * Real long-running guests fill memory with dentries, inodes, the page
 * cache's xarray nodes and buffer heads (find, updatedb, backups, package
 * managers), then free most of them again, scattered over their slab pages.
 * This program makes that happen on a real filesystem (ext4 on a virtio-blk
 * disk, made by the harness):
 *
 *   build DIR   create --files N files in --dirs D directories (two levels:
 *               DIR/aXX/dYYYYY/fZZZZZZZ), each with a content that depends
 *               on the seed and its number only (0 to 6 KiB, a third empty);
 *   walk DIR    walk the tree as find/backup tools do (readdir, stat every
 *               entry, read and check every file: dentries, inodes, page
 *               cache and its xarray nodes, buffer heads), then look up
 *               --neg K missing names (negative dentries);
 *   scatter DIR delete a seeded --percent P of the files, spread over the
 *               whole tree, so that the objects still cached are scattered
 *               over their slab pages and most slab pages are sparse;
 *   verify DIR  check every file still present against its content (a file
 *               scatter deleted must be absent, every other one intact);
 *   write DIR   write --files N files under DIR/w with --seed S and no
 *               sync (dirty page cache, dirty inodes and buffers);
 *   wverify DIR check the files write made;
 *   checkpoint DIR  freeze and thaw the filesystem (FIFREEZE, FITHAW), which
 *               makes ext4 checkpoint its journal: jbd2 lets go of the
 *               buffer heads of journaled metadata, as it does by itself
 *               in a guest that runs long enough.
 *
 * Every command prints one line "slabtree CMD key=value ..." and exits 0,
 * 1 if any content is wrong or a file is missing, 2 on usage or system
 * errors.  The same --files/--dirs/--seed/--percent must be given to every
 * command on one tree.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>

#include <linux/fs.h>
#include <unistd.h>

#include "prng.h"

#define MAX_SIZE	6144
#define TOP_DIRS	16

struct tree {
	const char *root;
	unsigned long files;
	unsigned long dirs;
	unsigned long neg;
	unsigned int percent;
	uint64_t seed;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t file_key(const struct tree *t, unsigned long i)
{
	return prng_mix(t->seed ^ prng_mix(i + 1));
}

static size_t file_size(uint64_t key)
{
	return key % 3 == 0 ? 0 : (key >> 8) % MAX_SIZE;
}

static void file_fill(uint64_t key, unsigned char *buf, size_t n)
{
	struct prng p = { .state = key };
	size_t i;

	for (i = 0; i < n; i++)
		buf[i] = i % 8 == 0 ? (unsigned char)prng_next(&p) :
			(unsigned char)(buf[i - 1] + 1);
}

/* Whether scatter deletes file @i. */
static int file_deleted(const struct tree *t, unsigned long i)
{
	return t->percent && prng_mix(file_key(t, i) ^ 0x5ca7) % 100 < t->percent;
}

static void dir_path(const struct tree *t, unsigned long d, char *buf, size_t n)
{
	snprintf(buf, n, "%s/a%02lx/d%05lu", t->root, d % TOP_DIRS, d);
}

static void file_path(const struct tree *t, unsigned long i, char *buf, size_t n)
{
	char dir[2048];

	dir_path(t, i % t->dirs, dir, sizeof(dir));
	if (snprintf(buf, n, "%s/f%07lu", dir, i) >= (int)n)
		buf[0] = '\0';
}

static int write_file(const char *path, uint64_t key)
{
	unsigned char buf[MAX_SIZE];
	size_t n = file_size(key);
	int fd;

	file_fill(key, buf, n);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return -errno;
	if (n && write(fd, buf, n) != (ssize_t)n) {
		int e = errno ? errno : EIO;

		close(fd);
		return -e;
	}
	if (close(fd))
		return -errno;
	return 0;
}

/* 0 intact, 1 wrong content or missing, -errno on other errors. */
static int check_file(const char *path, uint64_t key)
{
	unsigned char want[MAX_SIZE], got[MAX_SIZE + 1];
	size_t n = file_size(key);
	ssize_t r;
	int fd;

	fd = open(path, O_RDONLY);
	if (fd < 0)
		return errno == ENOENT ? 1 : -errno;
	r = read(fd, got, sizeof(got));
	close(fd);
	if (r < 0)
		return -errno;
	file_fill(key, want, n);
	if ((size_t)r != n || memcmp(want, got, n)) {
		fprintf(stderr, "slabtree: %s: content differs (%zd bytes, want %zu)\n",
			path, r, n);
		return 1;
	}
	return 0;
}

static int cmd_build(const struct tree *t)
{
	char path[4096];
	unsigned long i;
	double t0 = now();
	int r;

	mkdir(t->root, 0755);
	for (i = 0; i < TOP_DIRS; i++) {
		snprintf(path, sizeof(path), "%s/a%02lx", t->root, i);
		if (mkdir(path, 0755) && errno != EEXIST)
			goto fail;
	}
	for (i = 0; i < t->dirs; i++) {
		dir_path(t, i, path, sizeof(path));
		if (mkdir(path, 0755) && errno != EEXIST)
			goto fail;
	}
	for (i = 0; i < t->files; i++) {
		file_path(t, i, path, sizeof(path));
		r = write_file(path, file_key(t, i));
		if (r < 0) {
			errno = -r;
			goto fail;
		}
	}
	printf("slabtree build files=%lu dirs=%lu seconds=%.1f\n", t->files, t->dirs,
	       now() - t0);
	return 0;
fail:
	fprintf(stderr, "slabtree: %s: %s\n", path, strerror(errno));
	return 2;
}

struct walk {
	unsigned long dirs, entries, files, bytes;
	int err;
};

static void walk_dir(const char *path, struct walk *w, int depth)
{
	char sub[4096];
	struct dirent *de;
	struct stat st;
	DIR *d;

	d = opendir(path);
	if (!d) {
		w->err = -errno;
		return;
	}
	w->dirs++;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
		w->entries++;
		if (lstat(sub, &st)) {
			w->err = -errno;
			continue;
		}
		if (S_ISDIR(st.st_mode) && depth < 8) {
			walk_dir(sub, w, depth + 1);
		} else if (S_ISREG(st.st_mode)) {
			char buf[65536];
			ssize_t r;
			int fd = open(sub, O_RDONLY);

			if (fd < 0) {
				w->err = -errno;
				continue;
			}
			while ((r = read(fd, buf, sizeof(buf))) > 0)
				w->bytes += r;
			close(fd);
			w->files++;
		}
	}
	closedir(d);
}

static int cmd_walk(const struct tree *t)
{
	struct walk w = { 0 };
	char path[4096];
	unsigned long i, missing = 0;
	struct stat st;
	double t0 = now(), t1;

	walk_dir(t->root, &w, 0);
	t1 = now();
	for (i = 0; i < t->neg; i++) {
		dir_path(t, i % t->dirs, path, sizeof(path));
		snprintf(path + strlen(path), sizeof(path) - strlen(path),
			 "/missing-%lu", i);
		if (stat(path, &st) && errno == ENOENT)
			missing++;
	}
	printf("slabtree walk dirs=%lu entries=%lu files=%lu bytes=%lu negative=%lu "
	       "walk_seconds=%.2f seconds=%.2f\n", w.dirs, w.entries, w.files, w.bytes,
	       missing, t1 - t0, now() - t0);
	if (w.err) {
		fprintf(stderr, "slabtree: walk: %s\n", strerror(-w.err));
		return 2;
	}
	return missing == t->neg ? 0 : 1;
}

static int cmd_scatter(const struct tree *t)
{
	char path[4096];
	unsigned long i, n = 0;

	for (i = 0; i < t->files; i++) {
		if (!file_deleted(t, i))
			continue;
		file_path(t, i, path, sizeof(path));
		if (unlink(path) && errno != ENOENT) {
			fprintf(stderr, "slabtree: %s: %s\n", path, strerror(errno));
			return 2;
		}
		n++;
	}
	printf("slabtree scatter deleted=%lu kept=%lu\n", n, t->files - n);
	return 0;
}

static int cmd_verify(const struct tree *t)
{
	unsigned long i, ok = 0, bad = 0, gone = 0;
	char path[4096];
	struct stat st;
	int r;

	for (i = 0; i < t->files; i++) {
		file_path(t, i, path, sizeof(path));
		if (file_deleted(t, i)) {
			if (lstat(path, &st) == 0) {
				fprintf(stderr, "slabtree: %s: deleted file is back\n", path);
				bad++;
			} else {
				gone++;
			}
			continue;
		}
		r = check_file(path, file_key(t, i));
		if (r < 0) {
			fprintf(stderr, "slabtree: %s: %s\n", path, strerror(-r));
			return 2;
		}
		if (r)
			bad++;
		else
			ok++;
	}
	printf("slabtree verify ok=%lu bad=%lu deleted=%lu\n", ok, bad, gone);
	return bad ? 1 : 0;
}

static int cmd_write(const struct tree *t, int check)
{
	unsigned long i, ok = 0, bad = 0;
	char path[4096];
	int r;

	snprintf(path, sizeof(path), "%s/w", t->root);
	if (!check && mkdir(path, 0755) && errno != EEXIST) {
		fprintf(stderr, "slabtree: %s: %s\n", path, strerror(errno));
		return 2;
	}
	for (i = 0; i < t->files; i++) {
		/* never empty: a dirty file has dirty pages */
		uint64_t key = file_key(t, i) | 1;

		snprintf(path, sizeof(path), "%s/w/f%06lu", t->root, i);
		r = check ? check_file(path, key) : write_file(path, key);
		if (r < 0) {
			fprintf(stderr, "slabtree: %s: %s\n", path, strerror(-r));
			return 2;
		}
		if (r)
			bad++;
		else
			ok++;
	}
	printf("slabtree %s ok=%lu bad=%lu\n", check ? "wverify" : "write", ok, bad);
	return bad ? 1 : 0;
}

static int cmd_checkpoint(const struct tree *t)
{
	int fd = open(t->root, O_RDONLY | O_DIRECTORY);

	if (fd < 0 || ioctl(fd, FIFREEZE, 0) || ioctl(fd, FITHAW, 0)) {
		fprintf(stderr, "slabtree: checkpoint %s: %s\n", t->root, strerror(errno));
		if (fd >= 0)
			close(fd);
		return 2;
	}
	close(fd);
	printf("slabtree checkpoint done\n");
	return 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: slabtree build|walk|scatter|verify|write|wverify|checkpoint DIR "
		"[--files N] [--dirs D] [--seed S] [--neg K] [--percent P]\n");
	return 2;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "files", required_argument, NULL, 'f' },
		{ "dirs", required_argument, NULL, 'd' },
		{ "seed", required_argument, NULL, 's' },
		{ "neg", required_argument, NULL, 'n' },
		{ "percent", required_argument, NULL, 'p' },
		{ 0 }
	};
	struct tree t = { .files = 10000, .dirs = 100, .seed = 1, .percent = 0 };
	const char *cmd;
	int c;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'f': t.files = strtoul(optarg, NULL, 0); break;
		case 'd': t.dirs = strtoul(optarg, NULL, 0); break;
		case 's': t.seed = strtoull(optarg, NULL, 0); break;
		case 'n': t.neg = strtoul(optarg, NULL, 0); break;
		case 'p': t.percent = strtoul(optarg, NULL, 0); break;
		default: return usage();
		}
	}
	if (argc - optind != 2 || !t.dirs || t.percent > 100)
		return usage();
	cmd = argv[optind];
	t.root = argv[optind + 1];
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(cmd, "build"))
		return cmd_build(&t);
	if (!strcmp(cmd, "walk"))
		return cmd_walk(&t);
	if (!strcmp(cmd, "scatter"))
		return cmd_scatter(&t);
	if (!strcmp(cmd, "verify"))
		return cmd_verify(&t);
	if (!strcmp(cmd, "write"))
		return cmd_write(&t, 0);
	if (!strcmp(cmd, "wverify"))
		return cmd_write(&t, 1);
	if (!strcmp(cmd, "checkpoint"))
		return cmd_checkpoint(&t);
	return usage();
}
