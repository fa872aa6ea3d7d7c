// SPDX-License-Identifier: GPL-2.0
/*
 * fschurn: renames, truncates and lookups racing a capture.
 *
 * The movable-slab series moves the page cache's xarray nodes and lets go
 * of dentries while the filesystem runs; the races that matter are those
 * that change the same objects at the same time: a truncate that deletes
 * the nodes a move is copying, a rename that moves a dentry being kicked
 * out, lookups (hits and misses) that take references to them.  This
 * program makes them, on its own files under DIR (so the workloads' trees
 * stay verifiable), in rounds until the file --until names exists:
 *
 *   for each of --files N slots: write a seeded file of up to --kib K KiB
 *   (page cache with several xarray nodes), rename it away and back across
 *   two directories, look up its old name (a negative dentry), truncate it
 *   to a seeded shorter length, check what is left, extend it again by
 *   writing its whole content, check it, and delete every third one.
 *
 * Prints "fschurn rounds=R slots=S bad=B" (S: slots churned) and exits 0, 1 if a content was
 * wrong (data lost or mixed up), 2 on usage or system errors.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "prng.h"

struct churn {
	const char *dir;
	const char *until;
	unsigned long files;
	unsigned long kib;
	uint64_t seed;
	unsigned long slots;	/* slots churned through, all rounds */
};

static int churn_fail(const char *what, const char *path)
{
	fprintf(stderr, "fschurn: %s %s: %s\n", what, path, strerror(errno));
	return 2;
}

static void churn_fill(uint64_t key, unsigned char *buf, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		buf[i] = (unsigned char)prng_mix(key ^ (i / 64)) + (unsigned char)i;
}

/* Whether @path holds the first @len bytes of @key's content: 0, 1, 2. */
static int churn_check(const char *path, uint64_t key, size_t len,
		       unsigned char *want, unsigned char *got, size_t cap)
{
	ssize_t r;
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		return churn_fail("open", path);
	r = pread(fd, got, cap, 0);
	close(fd);
	if (r < 0)
		return churn_fail("read", path);
	churn_fill(key, want, len);
	if ((size_t)r != len || memcmp(want, got, len)) {
		fprintf(stderr, "fschurn: %s: content differs (%zd bytes, want %zu)\n",
			path, r, len);
		return 1;
	}
	return 0;
}

static int churn_write(const char *path, const unsigned char *buf, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	if (fd < 0)
		return churn_fail("create", path);
	if (write(fd, buf, n) != (ssize_t)n) {
		close(fd);
		return churn_fail("write", path);
	}
	close(fd);
	return 0;
}

/* One slot of one round; 0, 1 (bad content) or 2. */
static int churn_slot(struct churn *c, struct prng *p, unsigned long i,
		      unsigned char *want, unsigned char *got)
{
	size_t cap = c->kib * 1024, len = 1 + prng_below(p, cap), cut;
	uint64_t key = prng_next(p);
	char a[4096], b[4096];
	struct stat st;
	int r;

	snprintf(a, sizeof(a), "%s/a/f%04lu", c->dir, i);
	snprintf(b, sizeof(b), "%s/b/g%04lu", c->dir, i);
	churn_fill(key, want, len);
	if (churn_write(a, want, len))
		return 2;
	if (rename(a, b))
		return churn_fail("rename", a);
	if (stat(a, &st) == 0 || errno != ENOENT)
		return churn_fail("lookup of the renamed", a);
	cut = prng_below(p, len);
	if (truncate(b, (off_t)cut))
		return churn_fail("truncate", b);
	r = churn_check(b, key, cut, want, got, cap);
	if (r)
		return r;
	if (rename(b, a))
		return churn_fail("rename", b);
	churn_fill(key, want, len);
	if (churn_write(a, want, len))
		return 2;
	r = churn_check(a, key, len, want, got, cap);
	if (r)
		return r;
	if (prng_below(p, 3) == 0 && unlink(a))
		return churn_fail("unlink", a);
	c->slots++;
	return 0;
}

static int churn_run(struct churn *c)
{
	unsigned char *want = malloc(c->kib * 1024), *got = malloc(c->kib * 1024 + 1);
	struct prng p = { .state = c->seed };
	unsigned long rounds = 0, bad = 0, i;
	char path[4096];
	int r = 0;

	if (!want || !got) {
		fprintf(stderr, "fschurn: out of memory\n");
		return 2;
	}
	snprintf(path, sizeof(path), "%s/a", c->dir);
	if (mkdir(path, 0755) && errno != EEXIST)
		return churn_fail("mkdir", path);
	snprintf(path, sizeof(path), "%s/b", c->dir);
	if (mkdir(path, 0755) && errno != EEXIST)
		return churn_fail("mkdir", path);
	while (access(c->until, F_OK)) {
		for (i = 0; i < c->files; i++) {
			r = churn_slot(c, &p, i, want, got);
			if (r == 2)
				goto out;
			bad += r;
		}
		rounds++;
	}
	r = 0;
out:
	printf("fschurn rounds=%lu slots=%lu bad=%lu\n", rounds, c->slots, bad);
	free(want);
	free(got);
	return r ? r : bad ? 1 : 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: fschurn DIR --until FILE [--files N] [--kib K] "
		"[--seed S]\n");
	return 2;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "until", required_argument, NULL, 'u' },
		{ "files", required_argument, NULL, 'f' },
		{ "kib", required_argument, NULL, 'k' },
		{ "seed", required_argument, NULL, 's' },
		{ 0 }
	};
	struct churn c = { .files = 32, .kib = 256, .seed = 1 };
	int o;

	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'u': c.until = optarg; break;
		case 'f': c.files = strtoul(optarg, NULL, 0); break;
		case 'k': c.kib = strtoul(optarg, NULL, 0); break;
		case 's': c.seed = strtoull(optarg, NULL, 0); break;
		default: return usage();
		}
	}
	if (argc - optind != 1 || !c.until || !c.files || c.files > 10000 ||
	    !c.kib || c.kib > 65536)
		return usage();
	c.dir = argv[optind];
	setvbuf(stdout, NULL, _IOLBF, 0);
	return churn_run(&c);
}
