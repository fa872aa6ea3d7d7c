/* SPDX-License-Identifier: GPL-2.0 */
/*
 * meminfo.c - the guest's own memory signals, for EVT_MEMINFO.
 *
 * Four files, each read whole with one read(2) so its lines agree:
 *   /proc/meminfo          MemTotal, MemFree, MemAvailable
 *   /proc/zoneinfo         each zone's low and high watermarks (pages),
 *                          summed; they move only with min_free_kbytes or
 *                          hotplug, so they are re-read every
 *                          AGENT_MEMINFO_WMARK_MS
 *   /proc/pressure/memory  PSI "some"/"full" avg10 and total; a kernel
 *                          without PSI (or booted psi=0) has no file or an
 *                          unreadable one: F_PSI clear, said once
 *   /proc/vmstat           pgalloc_* (pages allocated, every zone), whose
 *                          delta over the time between two samples is the
 *                          allocation rate
 *
 * Thresholds (agent_meminfo_urgent()) make the relay send at once rather
 * than on its period: free memory fell by AGENT_MEMINFO_DROP_STEP (or a
 * sixteenth of RAM) since the last report, free memory above the high
 * watermarks fell below twice the module's floor (the zone where the host
 * must return memory), PSI some avg10 rose past 1 %, or the allocation
 * rate jumped fourfold past 16 MiB/s (a burst begins: the host must stop
 * reclaiming).  Each is measured against the last report sent, so one
 * crossing makes one report.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "meminfo.h"

#define AGENT_MEMINFO_WMARK_MS	60000
#define AGENT_MEMINFO_DROP_STEP	(32ULL << 20)
#define AGENT_MEMINFO_NEAR_MIN	(128ULL << 20)	/* without a module floor */
#define AGENT_MEMINFO_PSI_URGENT 100		/* 1.00 % */
#define AGENT_MEMINFO_BURST	(16ULL << 20)	/* bytes/s */
#define AGENT_MEMINFO_FILE_MAX	65536

/* Reads a whole /proc file into buf (NUL-terminated); bytes or -errno. */
static ssize_t agent_meminfo_slurp(const char *path, char *buf, size_t size)
{
	size_t have = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	while (have + 1 < size) {
		ssize_t n = read(fd, buf + have, size - 1 - have);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			n = -errno;
			close(fd);
			return n;
		}
		if (n == 0)
			break;
		have += (size_t)n;
	}
	close(fd);
	buf[have] = '\0';
	return (ssize_t)have;
}

/* "Key:   N kB" of /proc/meminfo in bytes; -ENOENT if absent. */
static int agent_meminfo_kb(const char *text, const char *key, uint64_t *ret)
{
	size_t klen = strlen(key);

	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		unsigned long long kb;

		if (strncmp(p, key, klen) == 0 && p[klen] == ':' &&
		    sscanf(p + klen + 1, " %llu", &kb) == 1) {
			*ret = (uint64_t)kb << 10;
			return 0;
		}
	}
	return -ENOENT;
}

static void agent_meminfo_wmarks(struct agent_meminfo *mi, const char *buf,
				 uint64_t page)
{
	uint64_t low = 0, high = 0;

	for (const char *p = buf; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		unsigned long long v;
		char key[16];

		if (sscanf(p, " %15s %llu", key, &v) != 2)
			continue;
		if (strcmp(key, "low") == 0)
			low += v;
		else if (strcmp(key, "high") == 0)
			high += v;
	}
	mi->wmark_low = low * page;
	mi->wmark_high = high * page;
}

/* PSI "some"/"full" lines; false when the file is not there or garbled. */
static bool agent_meminfo_psi(const char *buf, struct proto_meminfo *m)
{
	double some10, full10;
	unsigned long long some_total, full_total;
	const char *full = strstr(buf, "full ");

	if (sscanf(buf, "some avg10=%lf avg60=%*f avg300=%*f total=%llu",
		   &some10, &some_total) != 2)
		return false;
	if (!full || sscanf(full, "full avg10=%lf avg60=%*f avg300=%*f total=%llu",
			    &full10, &full_total) != 2) {
		full10 = 0;
		full_total = 0;
	}
	if (!(some10 >= 0))
		some10 = 0;
	if (!(full10 >= 0))
		full10 = 0;
	m->psi_some_avg10 = some10 * 100 + 0.5 > PROTO_MEMINFO_PSI_MAX ?
			    PROTO_MEMINFO_PSI_MAX : (uint32_t)(some10 * 100 + 0.5);
	m->psi_full_avg10 = full10 * 100 + 0.5 > PROTO_MEMINFO_PSI_MAX ?
			    PROTO_MEMINFO_PSI_MAX : (uint32_t)(full10 * 100 + 0.5);
	/* full time is part of some time; clamp what rounding may break */
	if (m->psi_full_avg10 > m->psi_some_avg10)
		m->psi_full_avg10 = m->psi_some_avg10;
	m->psi_some_total_us = some_total;
	m->psi_full_total_us = full_total < some_total ? full_total : some_total;
	m->flags |= PROTO_MEMINFO_F_PSI;
	return true;
}

static uint64_t agent_meminfo_pgalloc(const char *buf)
{
	uint64_t sum = 0;

	for (const char *p = buf; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		unsigned long long v;

		if (strncmp(p, "pgalloc_", 8) == 0 && sscanf(p, "%*s %llu", &v) == 1)
			sum += v;
	}
	return sum;
}

static uint64_t agent_meminfo_min(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

int agent_meminfo_sample(struct agent_meminfo *mi, uint64_t now_ms,
			 uint32_t interval_ms, struct proto_meminfo *ret)
{
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	struct proto_meminfo m = { 0 };
	char *buf;
	ssize_t n;
	int r;

	buf = malloc(AGENT_MEMINFO_FILE_MAX);
	if (!buf)
		return -ENOMEM;
	n = agent_meminfo_slurp("/proc/meminfo", buf, AGENT_MEMINFO_FILE_MAX);
	if (n < 0) {
		free(buf);
		return (int)n;
	}
	r = agent_meminfo_kb(buf, "MemTotal", &m.total_bytes);
	if (r == 0)
		r = agent_meminfo_kb(buf, "MemFree", &m.free_bytes);
	if (r == 0 && agent_meminfo_kb(buf, "MemAvailable", &m.available_bytes) < 0)
		m.available_bytes = m.free_bytes;
	if (r < 0 || m.total_bytes == 0) {
		free(buf);
		return -EIO;
	}
	if (m.total_bytes > PROTO_MEMINFO_RAM_MAX)
		m.total_bytes = PROTO_MEMINFO_RAM_MAX;
	m.free_bytes = agent_meminfo_min(m.free_bytes, m.total_bytes);
	m.available_bytes = agent_meminfo_min(m.available_bytes, m.total_bytes);

	if (!mi->wmark_ms || now_ms - mi->wmark_ms >= AGENT_MEMINFO_WMARK_MS) {
		n = agent_meminfo_slurp("/proc/zoneinfo", buf, AGENT_MEMINFO_FILE_MAX);
		if (n >= 0)
			agent_meminfo_wmarks(mi, buf, page);
		mi->wmark_ms = now_ms;
	}
	m.wmark_high_bytes = agent_meminfo_min(mi->wmark_high, m.total_bytes);
	m.wmark_low_bytes = agent_meminfo_min(mi->wmark_low, m.wmark_high_bytes);

	n = agent_meminfo_slurp("/proc/pressure/memory", buf, AGENT_MEMINFO_FILE_MAX);
	if ((n < 0 || !agent_meminfo_psi(buf, &m)) && !mi->psi_absent_logged) {
		log_info("no PSI memory pressure in this kernel: reporting without it");
		mi->psi_absent_logged = true;
	}

	n = agent_meminfo_slurp("/proc/vmstat", buf, AGENT_MEMINFO_FILE_MAX);
	if (n >= 0) {
		uint64_t pg = agent_meminfo_pgalloc(buf);

		if (mi->prev_ms && now_ms > mi->prev_ms && pg >= mi->prev_pgalloc)
			m.alloc_bytes_per_sec = agent_meminfo_min(
				(pg - mi->prev_pgalloc) * page * 1000 /
				(now_ms - mi->prev_ms), PROTO_MEMINFO_RATE_MAX);
		else if (mi->have_sent)
			m.alloc_bytes_per_sec = mi->sent.alloc_bytes_per_sec;
		mi->prev_pgalloc = pg;
		mi->prev_ms = now_ms;
	}
	free(buf);
	m.interval_ms = interval_ms < 1 ? 1 : interval_ms > PROTO_MEMINFO_INTERVAL_MAX ?
			PROTO_MEMINFO_INTERVAL_MAX : interval_ms;
	*ret = m;
	return 0;
}

bool agent_meminfo_urgent(const struct agent_meminfo *mi,
			  const struct proto_meminfo *now, const char **why)
{
	const struct proto_meminfo *s = &mi->sent;
	uint64_t step = now->total_bytes / 16 > AGENT_MEMINFO_DROP_STEP ?
			now->total_bytes / 16 : AGENT_MEMINFO_DROP_STEP;
	uint64_t floor = s->floor_bytes ? s->floor_bytes : AGENT_MEMINFO_NEAR_MIN;
	uint64_t above = now->free_bytes > now->wmark_high_bytes ?
			 now->free_bytes - now->wmark_high_bytes : 0;
	uint64_t above_sent = s->free_bytes > s->wmark_high_bytes ?
			      s->free_bytes - s->wmark_high_bytes : 0;

	if (!mi->have_sent) {
		*why = "first report";
		return true;
	}
	if (now->free_bytes + step <= s->free_bytes) {
		*why = "free memory fell";
		return true;
	}
	if (above < 2 * floor && above_sent >= 2 * floor) {
		*why = "free memory nears the watermarks";
		return true;
	}
	if (now->psi_some_avg10 >= AGENT_MEMINFO_PSI_URGENT &&
	    s->psi_some_avg10 < AGENT_MEMINFO_PSI_URGENT) {
		*why = "memory pressure rose";
		return true;
	}
	if (now->alloc_bytes_per_sec >= AGENT_MEMINFO_BURST &&
	    now->alloc_bytes_per_sec / 4 > s->alloc_bytes_per_sec) {
		*why = "allocation burst";
		return true;
	}
	return false;
}

void agent_meminfo_sent(struct agent_meminfo *mi, const struct proto_meminfo *sent)
{
	mi->sent = *sent;
	mi->have_sent = true;
}
