// SPDX-License-Identifier: GPL-2.0
/*
 * metrics.c - Prometheus text exposition (format 0.0.4) of every VM's
 * state, rendered from struct ctl_vm_status: the same figures vmdefragctl
 * status shows, in Prometheus's naming (vmdefrag_ prefix, base units:
 * _bytes, _seconds; counters end in _total).
 *
 * The per-VM series are one table, metrics_vm_series[]: each row names a
 * family (name, type, help), the uint64_t field of ctl_vm_status it reads,
 * the bool field that says whether that value is known (a VM whose guest
 * never answered has no guest_free_bytes sample, rather than a false 0),
 * and an optional scale (ns -> s).  A new series is one row.  Rows with
 * labels beyond {vm} (operations by kind and result) and the daemon-wide
 * series are written by code below the table.
 *
 * Counters come from the persisted totals (vm_counters.c) so they do not
 * fall when the daemon restarts; gauges are measured now.  VM names are
 * config or libvirt names: every label value is escaped as the format says
 * (backslash, double quote, newline).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "metrics.h"
#include "version.h"
#include "vm.h"

enum metrics_type {
	METRICS_GAUGE,
	METRICS_COUNTER,
};

enum metrics_scale {
	METRICS_RAW,
	METRICS_NS_TO_S,
};

struct metrics_series {
	const char *name;
	enum metrics_type type;
	const char *help;
	size_t off;		/* uint64_t in struct ctl_vm_status */
	size_t known;		/* 1 + offset of a bool in it; 0: always known */
	enum metrics_scale scale;
};

#define M_AT(field)	.off = offsetof(struct ctl_vm_status, field)
#define M_IF(flag)	.known = 1 + offsetof(struct ctl_vm_status, flag)

static const struct metrics_series metrics_vm_series[] = {
	/* counters: persisted across daemon restarts */
	{ "vmdefrag_reclaimed_bytes_total", METRICS_COUNTER,
	  "Host backing freed by reclaim operations.",
	  M_AT(counters.reclaimed_bytes) },
	{ "vmdefrag_returned_bytes_total", METRICS_COUNTER,
	  "Memory given back to the guest by return operations.",
	  M_AT(counters.returned_bytes) },
	{ "vmdefrag_guest_released_bytes_total", METRICS_COUNTER,
	  "Reclaimed memory the guest took back by itself under memory pressure.",
	  M_AT(counters.guest_released_bytes) },
	{ "vmdefrag_vacate_seconds_total", METRICS_COUNTER,
	  "Guest CPU time spent emptying blocks for the host.",
	  M_AT(counters.vacate_ns), .scale = METRICS_NS_TO_S },
	{ "vmdefrag_pages_migrated_total", METRICS_COUNTER,
	  "Guest pages migrated to empty blocks.",
	  M_AT(counters.pages_migrated) },
	{ "vmdefrag_policy_misses_total", METRICS_COUNTER,
	  "Times the guest released memory under pressure while the policy was auto.",
	  M_AT(counters.policy_misses) },
	/* gauges: the host's view */
	{ "vmdefrag_ram_bytes", METRICS_GAUGE,
	  "Guest RAM as configured in QEMU.",
	  M_AT(ram_bytes), M_IF(qmp_connected) },
	{ "vmdefrag_backing_bytes", METRICS_GAUGE,
	  "Host memory allocated in the guest RAM's backing.",
	  M_AT(backing_bytes), M_IF(backing_known) },
	{ "vmdefrag_huge_mapped_bytes", METRICS_GAUGE,
	  "Guest RAM the host maps with huge pages.",
	  M_AT(huge_mapped_bytes), M_IF(huge_known) },
	{ "vmdefrag_qemu_rss_anon_bytes", METRICS_GAUGE,
	  "Anonymous resident memory of the QEMU process.",
	  M_AT(rss_anon_bytes), M_IF(rss_known) },
	{ "vmdefrag_captured_bytes", METRICS_GAUGE,
	  "Guest blocks held by the guest module for the host.",
	  M_AT(mem.captured_bytes), M_IF(mem.reconciled) },
	{ "vmdefrag_captured_reclaimed_bytes", METRICS_GAUGE,
	  "Captured blocks whose host backing is freed now.",
	  M_AT(mem.reclaimed_bytes), M_IF(mem.reconciled) },
	/* gauges: the guest's last report */
	{ "vmdefrag_guest_free_bytes", METRICS_GAUGE,
	  "Free memory in the guest at its last scan.",
	  M_AT(scan.free_bytes), M_IF(have_scan) },
	{ "vmdefrag_guest_free_block_bytes", METRICS_GAUGE,
	  "Free guest memory in wholly free 2 MiB blocks at its last scan.",
	  M_AT(scan.free_block_bytes), M_IF(have_scan) },
	{ "vmdefrag_guest_available_bytes", METRICS_GAUGE,
	  "The guest's MemAvailable at its last scan.",
	  M_AT(scan.available_bytes), M_IF(have_scan) },
	{ "vmdefrag_policy_headroom_bytes", METRICS_GAUGE,
	  "Free memory the policy leaves the guest above its high watermarks.",
	  M_AT(policy.headroom_bytes), M_IF(policy.have_signals) },
	{ "vmdefrag_floor_bytes", METRICS_GAUGE,
	  "Guest memory never taken by the host (the module's floor).",
	  M_AT(stats.floor_bytes), M_IF(have_stats) },
};

#define METRICS_NVM	(sizeof(metrics_vm_series) / sizeof(metrics_vm_series[0]))

/* A label value as the format wants it: \\, \" and \n escaped. */
static void metrics_label(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\')
			fputs("\\\\", f);
		else if (*s == '"')
			fputs("\\\"", f);
		else if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
}

static void metrics_head(FILE *f, const char *name, const char *type,
			 const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void metrics_vm_sample(FILE *f, const char *name, const char *vm)
{
	fprintf(f, "%s{vm=\"", name);
	metrics_label(f, vm);
	fputs("\"", f);
}

static void metrics_value(FILE *f, uint64_t v, enum metrics_scale scale)
{
	if (scale == METRICS_NS_TO_S)
		fprintf(f, " %" PRIu64 ".%09" PRIu64 "\n", v / 1000000000u,
			v % 1000000000u);
	else
		fprintf(f, " %" PRIu64 "\n", v);
}

static void metrics_render_table(FILE *f, const struct ctl_vm_status *st, size_t n)
{
	for (size_t i = 0; i < METRICS_NVM; i++) {
		const struct metrics_series *m = &metrics_vm_series[i];

		metrics_head(f, m->name, m->type == METRICS_COUNTER ? "counter" :
			     "gauge", m->help);
		for (size_t v = 0; v < n; v++) {
			const char *base = (const char *)&st[v];
			uint64_t val;

			if (m->known && !*(const bool *)(base + m->known - 1))
				continue;
			memcpy(&val, base + m->off, sizeof(val));
			metrics_vm_sample(f, m->name, st[v].name);
			fputs("}", f);
			metrics_value(f, val, m->scale);
		}
	}
}

static void metrics_render_ops(FILE *f, const struct ctl_vm_status *st, size_t n)
{
	static const char name[] = "vmdefrag_operations_total";

	metrics_head(f, name, "counter", "Ended operations by kind "
		     "(reclaim, return, reconcile) and result (done, stopped, "
		     "failed).");
	for (size_t v = 0; v < n; v++)
		for (int k = 0; k < VM_COUNTERS_KINDS; k++)
			for (int s = RECLAIM_OP_DONE; s < VM_COUNTERS_STATES; s++) {
				metrics_vm_sample(f, name, st[v].name);
				fprintf(f, ",kind=\"%s\",result=\"%s\"}",
					reclaim_kind_name((enum reclaim_kind)k),
					reclaim_op_state_name((enum reclaim_op_state)s));
				metrics_value(f, st[v].counters.ops[k][s], METRICS_RAW);
			}
}

static void metrics_render_state(FILE *f, const struct ctl_vm_status *st, size_t n)
{
	static const char up[] = "vmdefrag_session_up";
	static const char qemu[] = "vmdefrag_qemu_attached";
	static const char running[] = "vmdefrag_operation_running";
	static const char automatic[] = "vmdefrag_policy_auto";

	metrics_head(f, up, "gauge", "1 when the guest agent's session is ready.");
	for (size_t v = 0; v < n; v++) {
		metrics_vm_sample(f, up, st[v].name);
		fprintf(f, "} %d\n", st[v].session.state == SESSION_READY);
	}
	metrics_head(f, qemu, "gauge", "1 when the daemon is attached to the "
		     "VM's QEMU.");
	for (size_t v = 0; v < n; v++) {
		metrics_vm_sample(f, qemu, st[v].name);
		fprintf(f, "} %d\n", st[v].qmp_connected);
	}
	metrics_head(f, running, "gauge", "1 while a reclaim, return or reconcile "
		     "runs.");
	for (size_t v = 0; v < n; v++) {
		metrics_vm_sample(f, running, st[v].name);
		fprintf(f, "} %d\n", st[v].mem.have_op &&
			st[v].mem.op.state == RECLAIM_OP_RUNNING);
	}
	metrics_head(f, automatic, "gauge", "1 when the daemon's policy keeps the "
		     "VM dense by itself (policy auto), 0 when manual.");
	for (size_t v = 0; v < n; v++) {
		metrics_vm_sample(f, automatic, st[v].name);
		fprintf(f, "} %d\n", st[v].policy.mode == POLICY_AUTO);
	}
}

int metrics_render(const struct ctl_vm_status *st, size_t n, char **ret_text,
		   size_t *ret_len)
{
	char *buf = NULL;
	size_t size = 0, up = 0;
	FILE *f = open_memstream(&buf, &size);

	if (!f)
		return -ENOMEM;
	for (size_t v = 0; v < n; v++)
		up += st[v].session.state == SESSION_READY;
	metrics_head(f, "vmdefrag_build_info", "gauge",
		     "Always 1; the version of vmdefragd.");
	fputs("vmdefrag_build_info{version=\"", f);
	metrics_label(f, version_string());
	fputs("\"} 1\n", f);
	metrics_head(f, "vmdefrag_vms", "gauge", "VMs the daemon manages.");
	fprintf(f, "vmdefrag_vms %zu\n", n);
	metrics_head(f, "vmdefrag_sessions_up", "gauge",
		     "VMs whose guest agent session is ready.");
	fprintf(f, "vmdefrag_sessions_up %zu\n", up);
	metrics_render_state(f, st, n);
	metrics_render_table(f, st, n);
	metrics_render_ops(f, st, n);
	if (fclose(f) != 0) {
		free(buf);
		return -ENOMEM;
	}
	*ret_text = buf;
	*ret_len = size;
	return 0;
}

int metrics_render_vms(const struct vm_list *vms, char **ret_text, size_t *ret_len)
{
	_cleanup_free_ struct ctl_vm_status *st = NULL;

	st = calloc(vms->n ? vms->n : 1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	for (size_t i = 0; i < vms->n; i++)
		vm_get_status(vms->v[i], &st[i]);
	return metrics_render(st, vms->n, ret_text, ret_len);
}

