// SPDX-License-Identifier: GPL-2.0
/*
 * memcheck: proves that guest data survives whatever vmdefrag does to the
 * memory under it.
 *
 * It fills N MiB with a seeded pattern in which every 8-byte word depends
 * on the seed, the page index and the word index, so a changed byte, a
 * zeroed page and a page swapped with another are all detected.  The
 * memory is anonymous (default) or a MAP_SHARED tmpfs file (--file, page
 * cache), and it is never locked: it must stay migratable.
 *
 * One-shot:   memcheck run --mib N [--seed S]            fill, then verify
 * Held:       memcheck start --mib N [--seed S] [--id ID] [--file]
 *             memcheck verify [--id ID]
 *             memcheck corrupt --page K [--id ID]        (checker self-test)
 *             memcheck stop [--id ID]
 *
 * "start" forks a holder that fills the memory, tells the parent it is done
 * and waits for signals: SIGUSR1 verifies every page and publishes the
 * result in /run/memcheck-ID.result (written aside, then renamed),
 * SIGUSR2 flips one byte of the page named in /run/memcheck-ID.corrupt,
 * SIGTERM ends it.  "verify" prints the holder's result and exits 0 only if
 * every page is intact, 1 if any page changed, 2 on usage or system errors.
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

#include "holder.h"
#include "prng.h"

#define PAGE		4096UL
#define WORDS		(PAGE / sizeof(uint64_t))
#define MAX_REPORTED	16

struct memcheck {
	const char *id;
	uint64_t seed;
	unsigned long mib;
	int file;
	uint64_t *mem;
	size_t pages;
};

static volatile sig_atomic_t want_verify, want_corrupt, want_exit;

static uint64_t memcheck_word(uint64_t seed, size_t page, size_t word)
{
	return prng_mix(seed ^ ((uint64_t)page << 20) ^ word);
}

static void memcheck_path(char *buf, size_t size, const char *id,
			  const char *what)
{
	snprintf(buf, size, "/run/memcheck-%s.%s", id, what);
}

static int memcheck_map(struct memcheck *m)
{
	size_t len = m->mib << 20;
	void *p;

	m->pages = len / PAGE;
	if (m->file) {
		char path[256];
		int fd;

		snprintf(path, sizeof(path), "/tmp/memcheck-%s.dat", m->id);
		fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || ftruncate(fd, len) < 0) {
			fprintf(stderr, "memcheck: %s: %m\n", path);
			return -1;
		}
		p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		close(fd);
	} else {
		p = mmap(NULL, len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	}
	if (p == MAP_FAILED) {
		fprintf(stderr, "memcheck: mmap %lu MiB: %m\n", m->mib);
		return -1;
	}
	m->mem = p;
	return 0;
}

static void memcheck_fill(struct memcheck *m)
{
	size_t pg, w;

	for (pg = 0; pg < m->pages; pg++)
		for (w = 0; w < WORDS; w++)
			m->mem[pg * WORDS + w] = memcheck_word(m->seed, pg, w);
}

/* Verifies every page; writes the report to @out; returns bad pages. */
static size_t memcheck_verify_pages(struct memcheck *m, FILE *out)
{
	size_t pg, w, bad = 0;

	for (pg = 0; pg < m->pages; pg++) {
		for (w = 0; w < WORDS; w++) {
			uint64_t want = memcheck_word(m->seed, pg, w);
			uint64_t got = m->mem[pg * WORDS + w];

			if (got == want)
				continue;
			if (bad < MAX_REPORTED)
				fprintf(out, "bad page %zu word %zu: got %016llx want %016llx\n",
					pg, w, (unsigned long long)got,
					(unsigned long long)want);
			bad++;
			break;
		}
	}
	fprintf(out, "memcheck: id=%s mib=%lu pages=%zu bad_pages=%zu %s\n",
		m->id, m->mib, m->pages, bad, bad ? "CORRUPT" : "intact");
	return bad;
}

static void memcheck_on_signal(int sig)
{
	if (sig == SIGUSR1)
		want_verify = 1;
	else if (sig == SIGUSR2)
		want_corrupt = 1;
	else
		want_exit = 1;
}

static void memcheck_publish_result(struct memcheck *m)
{
	char tmp[300], path[256];
	FILE *f;

	memcheck_path(path, sizeof(path), m->id, "result");
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (!f)
		return;
	memcheck_verify_pages(m, f);
	fclose(f);
	rename(tmp, path);
}

static void memcheck_corrupt_one(struct memcheck *m)
{
	char path[256];
	unsigned long page = 0;
	FILE *f;

	memcheck_path(path, sizeof(path), m->id, "corrupt");
	f = fopen(path, "r");
	if (!f)
		return;
	if (fscanf(f, "%lu", &page) == 1 && page < m->pages)
		((volatile unsigned char *)m->mem)[page * PAGE + 123] ^= 0x5a;
	fclose(f);
	unlink(path);
}

static void memcheck_hold(void *arg, int done_fd)
{
	struct memcheck *m = arg;
	struct sigaction sa = { .sa_handler = memcheck_on_signal };
	sigset_t block, old;

	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	sigaddset(&block, SIGUSR2);
	sigaddset(&block, SIGTERM);
	sigprocmask(SIG_BLOCK, &block, &old);

	memcheck_fill(m);
	if (write(done_fd, "ok", 2) != 2)
		_exit(2);
	close(done_fd);

	while (!want_exit) {
		sigsuspend(&old);
		if (want_corrupt) {
			want_corrupt = 0;
			memcheck_corrupt_one(m);
		}
		if (want_verify) {
			want_verify = 0;
			memcheck_publish_result(m);
		}
	}
	_exit(0);
}

static pid_t memcheck_holder_pid(const char *id)
{
	char path[256];
	pid_t pid;

	memcheck_path(path, sizeof(path), id, "pid");
	pid = holder_read_pid(path);
	if (!pid || kill(pid, 0) < 0) {
		fprintf(stderr, "memcheck: no holder with id \"%s\"\n", id);
		return -1;
	}
	return pid;
}

static int memcheck_start(struct memcheck *m)
{
	char path[256], buf[2];
	pid_t pid = 0;
	int r;

	if (memcheck_map(m) < 0)
		return 2;
	r = holder_spawn(memcheck_hold, m, buf, sizeof(buf), &pid);
	if (r == -EPIPE)
		fprintf(stderr, "memcheck: holder died while filling\n");
	if (r < 0)
		return 2;
	memcheck_path(path, sizeof(path), m->id, "pid");
	if (holder_write_pid(path, pid) < 0)
		return 2;
	printf("memcheck: id=%s mib=%lu seed=%llu pid=%ld filled\n", m->id,
	       m->mib, (unsigned long long)m->seed, (long)pid);
	return 0;
}

static int memcheck_verify_held(const char *id)
{
	char path[256], line[256];
	int bad = -1;
	pid_t pid = memcheck_holder_pid(id);
	time_t deadline = time(NULL) + 3600;
	FILE *f;

	if (pid < 0)
		return 2;
	memcheck_path(path, sizeof(path), id, "result");
	unlink(path);
	kill(pid, SIGUSR1);
	while (access(path, R_OK) < 0) {
		if (kill(pid, 0) < 0 || time(NULL) > deadline) {
			fprintf(stderr, "memcheck: holder %ld gave no result\n",
				(long)pid);
			return 2;
		}
		usleep(20000);
	}
	f = fopen(path, "r");
	if (!f)
		return 2;
	while (fgets(line, sizeof(line), f)) {
		fputs(line, stdout);
		if (strstr(line, "bad_pages=0 "))
			bad = 0;
		else if (strstr(line, "bad_pages="))
			bad = 1;
	}
	fclose(f);
	return bad < 0 ? 2 : bad;
}

static int memcheck_signal_holder(const char *id, int sig)
{
	pid_t pid = memcheck_holder_pid(id);

	if (pid < 0)
		return 2;
	return kill(pid, sig) < 0 ? 2 : 0;
}

static int memcheck_corrupt(const char *id, long page)
{
	char path[256];
	FILE *f;

	if (page < 0) {
		fprintf(stderr, "memcheck: corrupt needs --page K\n");
		return 2;
	}
	memcheck_path(path, sizeof(path), id, "corrupt");
	f = fopen(path, "w");
	if (!f)
		return 2;
	fprintf(f, "%ld\n", page);
	fclose(f);
	return memcheck_signal_holder(id, SIGUSR2);
}

static void memcheck_usage(FILE *out)
{
	fputs("usage: memcheck run --mib N [--seed S] [--file]\n"
	      "       memcheck start --mib N [--seed S] [--id ID] [--file]\n"
	      "       memcheck verify|stop [--id ID]\n"
	      "       memcheck corrupt --page K [--id ID]\n", out);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "mib", required_argument, NULL, 'm' },
		{ "seed", required_argument, NULL, 's' },
		{ "id", required_argument, NULL, 'i' },
		{ "page", required_argument, NULL, 'p' },
		{ "file", no_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	struct memcheck m = { .id = "default", .seed = 1 };
	const char *verb;
	long page = -1;
	int c;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'm':
			m.mib = strtoul(optarg, NULL, 0);
			break;
		case 's':
			m.seed = strtoull(optarg, NULL, 0);
			break;
		case 'i':
			m.id = optarg;
			break;
		case 'p':
			page = strtol(optarg, NULL, 0);
			break;
		case 'f':
			m.file = 1;
			break;
		case 'h':
			memcheck_usage(stdout);
			return 0;
		default:
			memcheck_usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1 || strchr(m.id, '/')) {
		memcheck_usage(stderr);
		return 2;
	}
	verb = argv[optind];
	if (!strcmp(verb, "run") || !strcmp(verb, "start")) {
		if (!m.mib) {
			fprintf(stderr, "memcheck: %s needs --mib N (N > 0)\n", verb);
			return 2;
		}
		if (!strcmp(verb, "start"))
			return memcheck_start(&m);
		if (memcheck_map(&m) < 0)
			return 2;
		memcheck_fill(&m);
		return memcheck_verify_pages(&m, stdout) ? 1 : 0;
	}
	if (!strcmp(verb, "verify"))
		return memcheck_verify_held(m.id);
	if (!strcmp(verb, "stop"))
		return memcheck_signal_holder(m.id, SIGTERM);
	if (!strcmp(verb, "corrupt"))
		return memcheck_corrupt(m.id, page);
	fprintf(stderr, "memcheck: unknown command \"%s\"\n", verb);
	return 2;
}
