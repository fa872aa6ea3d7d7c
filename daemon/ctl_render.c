// SPDX-License-Identifier: GPL-2.0
/*
 * ctl_render.c - vmdefragctl's human-readable output of the daemon's
 * answers (with --json the CLI prints the answer line as it came instead).
 *
 * Each function reads one object of ctl_proto.h's responses (VMSTATUS,
 * SCAN, OP) and prints it; a key that is absent reads as 0 or "?", so an
 * older daemon's answer still prints.  The format is what scripts and the
 * integration tests read: change it only together with them.  Sizes are
 * size_format()'s; strings a guest controls (slab cache names, a session's
 * drop reason) go through log_quote_str() before they reach the terminal.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ctl_client.h"
#include "ctl_render.h"
#include "log.h"
#include "size.h"

/* The byte count at key, formatted (size_format()) into buf. */
static const char *ctl_render_size(struct json_object *o, const char *key,
				   char *buf, size_t sz)
{
	return size_format(ctl_client_u64(o, key), buf, sz);
}

/* The policy: mode, headroom, misses, the latest decision and the signals. */
static void ctl_render_policy(struct json_object *vm)
{
	struct json_object *p = ctl_client_get(vm, "policy");
	struct json_object *d, *g;
	char b1[32], b2[32], b3[32], b4[32];

	if (!p)
		return;
	printf("  policy:          %s", ctl_client_str(p, "mode") ?: "?");
	if (ctl_client_has(p, "headroom_bytes"))
		printf(", headroom %s", ctl_render_size(p, "headroom_bytes", b1, sizeof(b1)));
	printf(", %" PRIu64 " reclaims, %" PRIu64 " returns, %" PRIu64 " misses, "
	       "host %s\n", ctl_client_u64(p, "reclaims"), ctl_client_u64(p, "returns"),
	       ctl_client_u64(p, "policy_misses"),
	       ctl_client_str(p, "host_pressure") ?: "?");
	d = ctl_client_get(p, "decision");
	if (d)
		printf("  last decision:   %s%s%s: %s\n", ctl_client_str(d, "action") ?: "?",
		       ctl_client_u64(d, "target_bytes") ? " " : "",
		       ctl_client_u64(d, "target_bytes") ?
		       ctl_render_size(d, "target_bytes", b1, sizeof(b1)) : "",
		       ctl_client_str(d, "reason") ?: "");
	d = ctl_client_get(p, "last_action");
	if (d)
		printf("  last action:     %s %s, %.1f s ago: %s\n",
		       ctl_client_str(d, "action") ?: "?",
		       ctl_render_size(d, "target_bytes", b1, sizeof(b1)),
		       (double)ctl_client_u64(d, "age_ms") / 1000.0,
		       ctl_client_str(d, "reason") ?: "");
	g = ctl_client_get(p, "signals");
	if (g) {
		struct json_object *psi = ctl_client_get(g, "psi_some_avg10_percent");

		printf("  guest signals:   free %s, available %s, high watermarks %s, "
		       "allocating %s/s", ctl_render_size(g, "free_bytes", b1, sizeof(b1)),
		       ctl_render_size(g, "available_bytes", b2, sizeof(b2)),
		       ctl_render_size(g, "wmark_high_bytes", b3, sizeof(b3)),
		       ctl_render_size(g, "alloc_bytes_per_second", b4, sizeof(b4)));
		if (psi)
			printf(", PSI some %.2f %%", json_object_get_double(psi));
		printf("\n");
	}
}

static void ctl_render_memory(struct json_object *vm)
{
	struct json_object *m = ctl_client_get(vm, "memory");
	struct json_object *op = ctl_client_get(vm, "operation");
	char b1[32], b2[32], b3[32];

	if (m && strcmp(ctl_client_str(vm, "backend") ?: "", "hint") == 0) {
		printf("  hint returned:   %s (QEMU RssAnon drops of hint reclaims, "
		       "measured)\n",
		       ctl_render_size(m, "hint_returned_bytes", b1, sizeof(b1)));
	} else if (m) {
		printf("  reclaimed:       %s (captured %s, pending ACK %s)%s\n",
		       ctl_render_size(m, "reclaimed_bytes", b1, sizeof(b1)),
		       ctl_render_size(m, "captured_bytes", b2, sizeof(b2)),
		       ctl_render_size(m, "pending_bytes", b3, sizeof(b3)),
		       json_object_get_boolean(ctl_client_get(m, "reconciled")) ? "" :
		       " [not reconciled yet]");
		printf("  returned:        %s (guest took back %s itself)\n",
		       ctl_render_size(m, "returned_bytes", b1, sizeof(b1)),
		       ctl_render_size(m, "guest_released_bytes", b2, sizeof(b2)));
	}
	if (op) {
		printf("  last operation:  %s #%" PRIu64 " %s, %s of %s",
		       ctl_client_str(op, "kind"), ctl_client_u64(op, "id"),
		       ctl_client_str(op, "state"),
		       ctl_render_size(op, "done_bytes", b1, sizeof(b1)),
		       ctl_render_size(op, "target_bytes", b2, sizeof(b2)));
		if (ctl_client_str(op, "reason"))
			printf(": %s", ctl_client_str(op, "reason"));
		printf("\n");
		if (ctl_client_str(op, "reback_note"))
			printf("  re-back:         %s (%s)\n", ctl_client_str(op, "reback"),
			       ctl_client_str(op, "reback_note"));
	}
}

/* One line, only when a migration was seen: which path, what it cost. */
static void ctl_render_migration(struct json_object *vm)
{
	struct json_object *m = ctl_client_get(vm, "migration"), *c, *q, *r;
	const char *state = m ? ctl_client_str(m, "state") : NULL;
	char b1[32], b2[32], b3[32], qb[300];

	if (!state || (strcmp(state, "none") == 0 && !ctl_client_str(m, "last_outcome")))
		return;
	if (strcmp(state, "outgoing") == 0)
		printf("  migration:       outgoing (QEMU: %s), no operation starts "
		       "until it ends\n", ctl_client_str(m, "qemu_status") ?: "?");
	else if (strcmp(state, "migrated-away") == 0)
		printf("  migration:       migrated away (the guest runs on the "
		       "destination)\n");
	else if (strcmp(state, "incoming") == 0)
		printf("  migration:       incoming migration (QEMU: %s), the guest "
		       "session waits for it\n",
		       ctl_client_str(m, "qemu_status") ?: "waiting");
	else if (strcmp(state, "postcopy-failed") == 0)
		printf("  migration:       post-copy failed (QEMU: %s): the guest's "
		       "memory is split between both hosts; nothing is punched, no "
		       "operation until the domain is destroyed or recovered\n",
		       ctl_client_str(m, "qemu_status") ?: "?");
	else if (strcmp(state, "none") == 0)
		printf("  migration:       none running (last: %s)\n",
		       ctl_client_str(m, "last_outcome"));
	if (strcmp(state, "migrated-in") != 0)
		return;
	c = ctl_client_get(m, "collapse");
	q = ctl_client_get(m, "qemu");
	printf("  migration:       migrated in%s (%s QEMU path): ",
	       json_object_get_boolean(ctl_client_get(m, "postcopy")) ? " by post-copy" : "",
	       ctl_client_str(m, "path") ?: "stock");
	if (json_object_get_boolean(ctl_client_get(m, "reconciled")))
		printf("reconciled %s captured, %s punched",
		       ctl_render_size(m, "reconcile_listed_bytes", b1, sizeof(b1)),
		       ctl_render_size(m, "reconcile_punched_bytes", b2, sizeof(b2)));
	else
		printf("not reconciled yet");
	if (c)
		printf("; collapse %s: %s of %s to 2 MiB pages in %.1f ms cpu "
		       "(%" PRIu64 "%% budget)%s%s\n", ctl_client_str(c, "state"),
		       ctl_render_size(c, "collapsed_bytes", b1, sizeof(b1)),
		       ctl_render_size(c, "candidate_bytes", b2, sizeof(b2)),
		       (double)ctl_client_u64(c, "cpu_ns") / 1e6,
		       ctl_client_u64(c, "cpu_percent"),
		       ctl_client_u64(c, "folio_only_bytes") ? ", folios only (QEMU "
		       "maps it 4 KiB-aligned): " : "",
		       ctl_client_u64(c, "folio_only_bytes") ?
		       ctl_render_size(c, "folio_only_bytes", b3, sizeof(b3)) : "");
	else
		printf("\n");
	if (c && ctl_client_str(c, "note"))
		printf("  collapse note:   %s\n", ctl_client_str(c, "note"));
	r = c ? ctl_client_get(c, "rerun") : NULL;
	if (r && ctl_client_u64(r, "passes"))
		printf("  re-collapse:     %" PRIu64 " pass(es) over ranges the guest "
		       "took back: %s of %s to 2 MiB pages in %.1f ms cpu%s\n",
		       ctl_client_u64(r, "passes"),
		       ctl_render_size(r, "collapsed_bytes", b1, sizeof(b1)),
		       ctl_render_size(r, "candidate_bytes", b2, sizeof(b2)),
		       (double)ctl_client_u64(r, "cpu_ns") / 1e6,
		       json_object_get_boolean(ctl_client_get(r, "running")) ?
		       " (running)" : "");
	if (q && ctl_client_str(q, "version"))
		printf("  qemu:            %s, package %s%s\n", ctl_client_str(q, "version"),
		       log_quote_str(ctl_client_str(q, "package") ?: "", qb, sizeof(qb)),
		       json_object_get_boolean(ctl_client_get(q, "patched")) ?
		       " (vmdefrag's patches)" : "");
}

void ctl_render_status_vm(struct json_object *vm)
{
	struct json_object *q = ctl_client_get(vm, "qmp"), *s = ctl_client_get(vm, "session");
	struct json_object *g = ctl_client_get(vm, "guest"), *feat;
	char b1[32], b2[32], qb[200];
	const char *note;

	printf("%s\n", ctl_client_str(vm, "name"));
	if (q && json_object_get_boolean(ctl_client_get(q, "connected")))
		printf("  qemu:            pid %" PRIu64 "\n", ctl_client_u64(q, "pid"));
	else
		printf("  qemu:            not attached (%s)\n",
		       q && ctl_client_str(q, "error") ? ctl_client_str(q, "error") : "?");
	note = ctl_client_str(vm, "backend_note");
	if (strcmp(ctl_client_str(vm, "backend") ?: "", "none") == 0)
		printf("  backend:         none, reclaim impossible (%s)\n", note ?: "");
	else if (note)
		printf("  backend:         %s (%s)\n", ctl_client_str(vm, "backend"), note);
	else
		printf("  backend:         %s\n", ctl_client_str(vm, "backend"));
	printf("  ram:             %s\n", ctl_render_size(vm, "ram_bytes", b1, sizeof(b1)));
	if (ctl_client_has(vm, "rss_anon_bytes"))
		printf("  qemu RssAnon:    %s\n",
		       ctl_render_size(vm, "rss_anon_bytes", b1, sizeof(b1)));
	if (ctl_client_has(vm, "backing_bytes"))
		printf("  host backing:    %s\n",
		       ctl_render_size(vm, "backing_bytes", b1, sizeof(b1)));
	else
		printf("  host backing:    n/a\n");
	if (ctl_client_has(vm, "huge_mapped_bytes"))
		printf("  huge-mapped:     %s\n",
		       ctl_render_size(vm, "huge_mapped_bytes", b1, sizeof(b1)));
	printf("  shmem_enabled:   %s\n", ctl_client_str(vm, "shmem_enabled") ?: "unknown");
	if (json_object_get_boolean(ctl_client_get(vm, "reback_huge")))
		printf("  re-back huge:    yes (2 MiB folios)\n");
	else
		printf("  re-back huge:    no (%s)\n",
		       ctl_client_str(vm, "reback_note") ?: "not attached");
	printf("  guest session:   %s", ctl_client_str(s, "state"));
	if (strcmp(ctl_client_str(s, "state") ?: "", "ready") == 0) {
		printf(", protocol v%" PRIu64 ", features:", ctl_client_u64(s, "version"));
		feat = ctl_client_get(s, "features");
		if (!feat || json_object_array_length(feat) == 0)
			printf(" none");
		for (size_t i = 0; feat && i < json_object_array_length(feat); i++)
			printf(" %s", json_object_get_string(
				       json_object_array_get_idx(feat, i)));
	}
	printf(" (connects %" PRIu64 ", drops %" PRIu64 ")\n", ctl_client_u64(s, "connects"),
	       ctl_client_u64(s, "drops"));
	if (ctl_client_str(s, "last_drop"))
		printf("  last drop:       %s\n",
		       log_quote_str(ctl_client_str(s, "last_drop"), qb, sizeof(qb)));
	if (g) {
		if (ctl_client_has(g, "scan_age_ms")) {
			printf("  guest free:      %s (%s in whole 2 MiB blocks)\n",
			       ctl_render_size(g, "free_bytes", b1, sizeof(b1)),
			       ctl_render_size(g, "free_block_bytes", b2, sizeof(b2)));
			printf("  unmovable:       %" PRIu64 " blocks\n",
			       ctl_client_u64(g, "unmovable_blocks"));
		}
		printf("  captured:        %s\n",
		       ctl_render_size(g, "captured_bytes", b1, sizeof(b1)));
		if (ctl_client_has(g, "scan_age_ms"))
			printf("  last scan:       %.1f s ago\n",
			       (double)ctl_client_u64(g, "scan_age_ms") / 1000.0);
	} else {
		printf("  guest report:    none yet (run: vmdefragctl scan %s)\n",
		       ctl_client_str(vm, "name"));
	}
	ctl_render_memory(vm);
	ctl_render_migration(vm);
	ctl_render_policy(vm);
}

static void ctl_render_hist(struct json_object *scan, const char *key,
			    const char *label, const char *title)
{
	struct json_object *a = ctl_client_get(scan, key);
	uint64_t total = 0;

	printf("%s\n", title);
	for (size_t i = 0; a && i < json_object_array_length(a); i++)
		total += ctl_client_u64(json_object_array_get_idx(a, i), "blocks");
	for (size_t i = 0; a && i < json_object_array_length(a); i++) {
		struct json_object *e = json_object_array_get_idx(a, i);
		uint64_t n = ctl_client_u64(e, "blocks");
		char lab[48];

		if (label)
			snprintf(lab, sizeof(lab), "%s", ctl_client_str(e, label));
		else if (i == 0)
			snprintf(lab, sizeof(lab), "%s%" PRIu64 " pages",
				 ctl_client_u64(e, "max_pages") ? "<= " : "",
				 ctl_client_u64(e, "max_pages"));
		else
			snprintf(lab, sizeof(lab), "%" PRIu64 "-%" PRIu64 " pages",
				 ctl_client_u64(json_object_array_get_idx(a, i - 1),
						"max_pages") + 1,
				 ctl_client_u64(e, "max_pages"));
		printf("  %-16s %8" PRIu64 " blocks %6.1f%%\n", lab, n,
		       total ? 100.0 * (double)n / (double)total : 0.0);
	}
}

/* The slab-eviction census of a scan, if the guest sent one. */
static void ctl_render_census(struct json_object *c)
{
	struct json_object *b = ctl_client_get(c, "blocks");
	struct json_object *cost = ctl_client_get(c, "cost");
	struct json_object *ev = ctl_client_get(c, "evicted");
	char b1[32];

	if (!c || !b || !cost || !ev)
		return;
	printf("census (what freeing each class costs):\n");
	printf("  free               %8" PRIu64 " blocks  nothing\n",
	       ctl_client_u64(b, "free"));
	printf("  movable only       %8" PRIu64 " blocks  %" PRIu64
	       " pages to migrate (--evict=movable)\n",
	       ctl_client_u64(b, "movable"), ctl_client_u64(cost, "movable_pages"));
	printf("  reclaimable slab   %8" PRIu64 " blocks  %" PRIu64 " slab pages, up to %"
	       PRIu64 " cached objects dropped (--evict=evict-slab/evict)\n",
	       ctl_client_u64(b, "slab_reclaimable"),
	       ctl_client_u64(cost, "slab_reclaim_pages"),
	       ctl_client_u64(cost, "slab_reclaim_objects"));
	printf("  other unmovable    %8" PRIu64 " blocks  cannot be freed\n",
	       ctl_client_u64(b, "other_unmovable"));
	printf("  evicted so far: %" PRIu64 " dentries, %" PRIu64 " inodes, %s of page "
	       "cache; %" PRIu64 " blocks emptied after an eviction\n",
	       ctl_client_u64(ev, "dentries"), ctl_client_u64(ev, "inodes"),
	       ctl_render_size(ev, "pagecache_bytes", b1, sizeof(b1)),
	       ctl_client_u64(ev, "blocks"));
}

void ctl_render_scan(struct json_object *scan)
{
	struct json_object *slabs = ctl_client_get(scan, "slabs");
	char b1[32], b2[32];

	printf("%s: %s scanned, %s free (%s in whole 2 MiB blocks)\n",
	       ctl_client_str(scan, "vm"),
	       ctl_render_size(scan, "total_bytes", b1, sizeof(b1)),
	       ctl_render_size(scan, "free_bytes", b2, sizeof(b2)),
	       ctl_render_size(scan, "free_block_bytes", (char[32]){0}, 32));
	printf("  capturable %s, captured %s, available %s, scan took %.1f ms\n",
	       ctl_render_size(scan, "capturable_bytes", b1, sizeof(b1)),
	       ctl_render_size(scan, "captured_bytes", b2, sizeof(b2)),
	       ctl_render_size(scan, "available_bytes", (char[32]){0}, 32),
	       (double)ctl_client_u64(scan, "scan_ns") / 1e6);
	ctl_render_hist(scan, "classes", "class", "block classes:");
	ctl_render_hist(scan, "cost", NULL, "vacate cost of movable blocks (pages to migrate):");
	ctl_render_hist(scan, "unmovable", "cause", "unmovable blocks by cause:");
	printf("top slab caches in unmovable blocks:\n");
	if (!slabs || json_object_array_length(slabs) == 0)
		printf("  (none)\n");
	for (size_t i = 0; slabs && i < json_object_array_length(slabs) && i < 10; i++) {
		struct json_object *e = json_object_array_get_idx(slabs, i);
		char q[80];

		printf("  %-34s %8" PRIu64 " pages %6" PRIu64 " blocks",
		       log_quote_str(ctl_client_str(e, "name"), q, sizeof(q)),
		       ctl_client_u64(e, "pages"), ctl_client_u64(e, "blocks"));
		if (ctl_client_has(e, "reclaim_blocks"))
			printf(" (%" PRIu64 " only with reclaimable slab)",
			       ctl_client_u64(e, "reclaim_blocks"));
		printf("\n");
	}
	ctl_render_census(ctl_client_get(scan, "census"));
}

void ctl_render_op_line(struct json_object *op, char *buf, size_t sz)
{
	char b1[32], b2[32], b3[32];
	int n;

	n = snprintf(buf, sz, "%s #%" PRIu64 " on %s: %s of %s (%s, %.1f s)",
		     ctl_client_str(op, "kind"), ctl_client_u64(op, "id"),
		     ctl_client_str(op, "vm"),
		     ctl_render_size(op, "done_bytes", b1, sizeof(b1)),
		     ctl_render_size(op, "target_bytes", b2, sizeof(b2)),
		     ctl_client_str(op, "state"),
		     (double)ctl_client_u64(op, "elapsed_ms") / 1000.0);
	/* shared: say so when the net drop is not the daemon's punches alone */
	if (ctl_client_get(op, "punched_bytes") && n > 0 && (size_t)n < sz &&
	    ctl_client_u64(op, "punched_bytes") + (2u << 20) < ctl_client_u64(op, "done_bytes"))
		snprintf(buf + n, sz - n, "; vmdefrag punched %s, the rest of the "
			 "backing's drop came from the guest meanwhile (free page "
			 "reporting)",
			 ctl_render_size(op, "punched_bytes", b3, sizeof(b3)));
	/* hint: what came back is measured; what the guest did is beside it */
	if (ctl_client_str(op, "backend") && n > 0 && (size_t)n < sz)
		snprintf(buf + n, sz - n, "; guest compacted %s, returned = QEMU "
			 "RssAnon drop",
			 ctl_render_size(op, "compacted_bytes", b3, sizeof(b3)));
	/* the guest's work, once both readings came */
	n = (int)strlen(buf);
	if (ctl_client_get(op, "pages_migrated") && ctl_client_get(op, "vacate_ns") &&
	    (size_t)n < sz)
		snprintf(buf + n, sz - n, "; the guest migrated %" PRIu64 " pages "
			 "in %.2f s of CPU", ctl_client_u64(op, "pages_migrated"),
			 (double)ctl_client_u64(op, "vacate_ns") / 1e9);
}

void ctl_render_history(struct json_object *history)
{
	size_t n = history ? json_object_array_length(history) : 0;

	if (n == 0) {
		printf("no operations recorded\n");
		return;
	}
	printf("%-19s  %-12s %6s  %-9s %-6s %9s %9s %8s %-7s %9s %9s  %s\n",
	       "started", "vm", "id", "kind", "origin", "asked", "done", "seconds",
	       "result", "migrated", "guest-cpu", "rate");
	for (size_t i = 0; i < n; i++) {
		struct json_object *e = json_object_array_get_idx(history, i);
		uint64_t ms = ctl_client_u64(e, "started_unix_ms");
		uint64_t dur = ctl_client_u64(e, "duration_ms");
		uint64_t done = ctl_client_u64(e, "done_bytes");
		time_t t = (time_t)(ms / 1000);
		char when[32] = "?", b1[32], b2[32], rate[32] = "-";
		char pages[24] = "-", cpu[24] = "-";
		struct tm tm;

		if (ms && localtime_r(&t, &tm))
			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
		if (done && dur)
			snprintf(rate, sizeof(rate), "%.1f MiB/s",
				 (double)done / (1 << 20) / ((double)dur / 1000.0));
		/* the guest's work: null (unknown) prints as "-" */
		if (ctl_client_get(e, "pages_migrated"))
			snprintf(pages, sizeof(pages), "%" PRIu64,
				 ctl_client_u64(e, "pages_migrated"));
		if (ctl_client_get(e, "vacate_ns"))
			snprintf(cpu, sizeof(cpu), "%.2f s",
				 (double)ctl_client_u64(e, "vacate_ns") / 1e9);
		printf("%-19s  %-12s %6" PRIu64 "  %-9s %-6s %9s %9s %8.1f %-7s %9s %9s  %s\n",
		       when, ctl_client_str(e, "vm") ?: "?", ctl_client_u64(e, "id"),
		       ctl_client_str(e, "kind") ?: "?",
		       ctl_client_str(e, "origin") ?: "?",
		       ctl_render_size(e, "target_bytes", b1, sizeof(b1)),
		       ctl_render_size(e, "done_bytes", b2, sizeof(b2)),
		       (double)dur / 1000.0, ctl_client_str(e, "state") ?: "?", pages,
		       cpu, rate);
	}
}
