// SPDX-License-Identifier: GPL-2.0
/*
 * vm.c - per-VM state: QEMU monitor, RAM layout, backend, guest session,
 * and the guest's last report.
 *
 * A VM moves through two independent connections:
 *
 *   QMP      detached --qmp_connect + layout discovered--> attached
 *            attached --QEMU closes the monitor or errors--> detached
 *            (retries with a backoff from reconnect_min_ms to _max_ms)
 *   session  see session.c; it runs whether or not QMP is attached, but
 *            ranges from the guest are only ever trusted against a known
 *            layout (vm_check_range() says -ENODATA without one).
 *
 * Everything the host knows about the VM's RAM comes from QEMU (layout,
 * backing fd, pid); the guest's HELLO, SCAN and STATS are kept only to be
 * reported, after session.c validated them.
 *
 * The backend follows from the layout and QEMU's devices: "shared" when
 * every RAM backing is a file QEMU maps shared (memfd, hugetlbfs, tmpfs)
 * and the daemon holds its fd; else, with anonymous RAM, "hint" when QEMU
 * has a virtio-balloon with free-page-reporting=on (hint.c asks QOM), and
 * "none" without one: nothing could hand that RAM back.  Both are
 * supported configurations, reported with the reason, not errors.
 *
 * The memory-moving operations (reclaim, return, reconcile) live in
 * reclaim.c, one `struct reclaim` per VM: this file forwards it the layout
 * on every attach/detach and the session's hooks, so a session drop or a
 * QMP detach aborts the operation in one place.
 *
 * The policy (policy_vm.c) gets the guest's EVT_MEMINFO and pressure
 * releases from here and acts only through vm_start_op() and
 * vm_cancel_op(), the entry points vmdefragctl uses; this file tells it
 * what the mechanism is doing (vm_policy_view()).
 *
 * Memory hot-plug: the layout is discovered at attach and again when QEMU's
 * RAM may have changed: a QMP event DEVICE_ADDED, DEVICE_DELETED,
 * MEMORY_DEVICE_SIZE_CHANGE (virtio-mem) or ACPI_DEVICE_OST (the guest
 * acknowledging a DIMM; QEMU 7.2 has no DEVICE_ADDED), vm_layout_changed()
 * (libvirt's device events), and when the guest names a range outside
 * the known RAM (a DIMM is mapped in QEMU before the guest can use it, so
 * a range in it is checked against the layout as it is now, not dropped
 * as hostile).  Rediscovery runs at most once per VM_LAYOUT_REFRESH_MS
 * (the guest can trigger the last two); a changed layout replaces the
 * old one in the same struct, so everything holding it sees the new
 * ranges, and reclaim.c keeps its block states (reclaim_update_layout()).
 * It runs on a worker thread (struct vm_refresh: the monitor is lent to
 * it meanwhile), so a stopped QEMU never holds up the loop, and a range
 * the guest named meanwhile gets its verdict when it is done
 * (session_range_verdict()).  Attaching to a --vm's QMP socket (connect,
 * the first discovery, the balloon, migration.c's attach questions) runs
 * on the worker too (struct vm_attach), and so do migration.c's polls of
 * query-migrate (migration_monitor_ops below).  Only a monitor libvirt
 * hands over is adopted on the loop, each command bounded by
 * virt_monitor.c's wait: virt_domains.c acts on the attach's outcome
 * right after vm_attach_monitor() returns (notes an arrived migration
 * "completed", splits the domain's record), which an attach that ends
 * later would have to call back into; and such a monitor is never
 * polled, so its commands are the attach's few.
 *
 * Lending the monitor: a job on the VM's monitor queue that uses the
 * monitor holds a lease on it (vm_monitor_lend(), counted: a rediscovery
 * and a poll may both be queued, and run one after the other); while any
 * is held the loop neither watches the monitor's socket nor sends it a
 * command, and the last job's done() gives it back (vm_monitor_give_back():
 * the socket watched again, the events read meanwhile handled).  A drop
 * of the monitor cancels the jobs (worker_queue_drain()) and forgets the
 * leases with it.
 *
 * Where the monitor comes from: a --vm names a QMP socket, and the VM
 * connects and retries on its own (qmp_retry timer).  A libvirt domain's
 * VM (vm_new_libvirt()) never connects by itself: virt_domains.c hands it
 * a monitor carried by libvirt (vm_attach_monitor(), a qmp without fd or
 * events) and the channel path from the live XML when the domain runs, and
 * takes both away (vm_detach_monitor()) when it stops.  No retry timer
 * runs for it; the domain's lifecycle events decide.
 *
 * Single-threaded, on the loop's thread, but for the run() of the monitor
 * jobs on the VM's worker queue (attach, rediscovery, migration.c's
 * poll), which touch only what their job holds: they run one at a time,
 * and the monitor is theirs meanwhile.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "backend_shared.h"
#include "blockmap.h"
#include "hint.h"
#include "host_folios.h"
#include "hostmem.h"
#include "log.h"
#include "loop.h"
#include "migration.h"
#include "policy_vm.h"
#include "qmp.h"
#include "reclaim.h"
#include "session.h"
#include "vm.h"
#include "vm_counters.h"
#include "vm_layout.h"
#include "worker.h"

#define VM_LAYOUT_REFRESH_MS	1000	/* rediscoveries at most this often */

enum vm_backend {
	VM_BACKEND_UNKNOWN,	/* not attached to QEMU */
	VM_BACKEND_SHARED,
	VM_BACKEND_HINT,
	VM_BACKEND_NONE,	/* anonymous RAM, no free page reporting */
};

struct vm {
	struct loop *loop;
	struct config_vm conf;
	uint32_t retry_min_ms, retry_max_ms;
	bool libvirt;			/* monitor and channel given by libvirt */

	/* QEMU side */
	struct qmp *qmp;		/* NULL while detached */
	struct loop_io qmp_io;
	struct loop_timer qmp_retry;
	uint32_t qmp_backoff_ms;
	char qmp_error[256];		/* why detached, "" when attached */
	pid_t pid;
	struct vm_layout *layout;	/* NULL while detached */
	struct loop_timer layout_timer;	/* a rediscovery waits for its turn */
	uint64_t layout_refresh_ms;	/* loop_now_ms() of the last one */
	struct worker_queue *mq;	/* monitor jobs: attach, rediscovery,
					 * migration.c's polls */
	unsigned int lent;		/* jobs queued holding the monitor */
	struct vm_refresh *refresh;	/* the rediscovery running, or NULL */
	bool attaching;			/* a vm_attach job is queued */
	enum vm_backend backend;
	char backend_note[512];

	/* guest side */
	struct session *session;
	bool have_scan;
	uint64_t scan_ms;
	struct proto_scan_resp scan;
	struct proto_slab slabs[PROTO_MAX_SLABS];
	struct proto_scan_census census;	/* with scan.flags F_CENSUS */
	bool have_stats;
	uint64_t stats_ms;
	struct proto_stats stats;
	uint64_t evt_captured_bytes;	/* as reported by events, for logs */
	uint64_t evt_released_bytes;

	struct vm_scan_req *scans;	/* scans in flight */

	struct reclaim *reclaim;	/* reclaim/return/reconcile and block states */
	struct migration *mig;		/* live migration, either direction */
	struct policy_vm *policy;	/* automatic densification (policy_vm.c) */
	struct vm_counters *counters;	/* totals and history, persisted */
};

const char *vm_name(const struct vm *vm)
{
	return vm->conf.name;
}

/*
 * The VM's RAM as configured: the sizes of its RAM backends.  The mapped
 * ranges add up to a little less (QEMU overlays ROM on part of the first
 * MiB), but the guest counts its RAM against the configured size.
 */
static uint64_t vm_configured_ram(const struct vm *vm)
{
	uint64_t sum = 0;

	for (size_t i = 0; vm->layout && i < vm->layout->nbackings; i++)
		sum += vm->layout->backings[i].size;
	return sum;
}

/* ---- QMP attach / detach --------------------------------------------- */

/* Arms the QMP retry timer: the backoff doubles up to retry_max_ms. */
static void vm_qmp_schedule_retry(struct vm *vm)
{
	if (vm->libvirt)
		return;		/* the domain's events decide */
	vm->qmp_backoff_ms = loop_backoff_next(vm->qmp_backoff_ms, vm->retry_min_ms,
					       vm->retry_max_ms);
	loop_timer_arm(vm->loop, &vm->qmp_retry, vm->qmp_backoff_ms);
}

/* Forgets QEMU: monitor, layout, pid, backend. */
static void vm_qmp_drop(struct vm *vm)
{
	/* a rediscovery holds the monitor: wait for it (its commands are
	 * bounded), then nothing else uses it */
	worker_queue_drain(vm->mq);
	vm->refresh = NULL;
	vm->attaching = false;
	vm->lent = 0;		/* the cancelled jobs' leases */
	loop_timer_disarm(vm->loop, &vm->layout_timer);
	loop_io_remove(vm->loop, &vm->qmp_io);
	migration_detach(vm->mig);
	qmp_close(vm->qmp);
	vm->qmp = NULL;
	(void)reclaim_set_layout(vm->reclaim, NULL, RECLAIM_BACKEND_NONE, NULL);
	vm_layout_free(vm->layout);
	vm->layout = NULL;
	vm->pid = 0;
	vm->backend = VM_BACKEND_UNKNOWN;
	vm->backend_note[0] = '\0';
}

static void vm_qmp_detach(struct vm *vm, int error, const char *what)
{
	vm_qmp_drop(vm);
	snprintf(vm->qmp_error, sizeof(vm->qmp_error), "%s: %s", what,
		 strerror(error < 0 ? -error : error));
	vm_qmp_schedule_retry(vm);
}

/* A QMP event after which QEMU's RAM may be laid out differently. */
static bool vm_event_moves_ram(const char *name)
{
	static const char *const names[] = {
		"DEVICE_ADDED", "DEVICE_DELETED", "MEMORY_DEVICE_SIZE_CHANGE",
		"ACPI_DEVICE_OST",
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(name, names[i]) == 0)
			return true;
	return false;
}

/*
 * Handles the events the monitor has queued (without reading more): true
 * if one may have moved RAM.
 */
static bool vm_qmp_events(struct vm *vm)
{
	struct json_object *ev;
	bool moved = false;

	while (vm->qmp && qmp_next_event(vm->qmp, &ev) == 0) {
		struct json_object *name;

		if (json_object_object_get_ex(ev, "event", &name) &&
		    json_object_is_type(name, json_type_string)) {
			char quoted[80];

			log_debug("VM '%s': QMP event %s", vm->conf.name,
				  log_quote_str(json_object_get_string(name), quoted,
						sizeof(quoted)));
			moved |= vm_event_moves_ram(json_object_get_string(name));
		}
		migration_qmp_event(vm->mig, ev);
		json_object_put(ev);
	}
	return moved;
}

static void vm_qmp_io(struct loop_io *io, uint32_t events)
{
	struct vm *vm = io->userdata;
	bool moved;
	int r;

	r = qmp_process_input(vm->qmp);
	moved = vm_qmp_events(vm);
	if (moved && vm->qmp && r >= 0)
		vm_layout_changed(vm);
	if (r < 0) {
		log_warning_errno(r, "VM '%s': QMP connection lost: %m; retrying",
				  vm->conf.name);
		vm_qmp_detach(vm, r, "QMP connection lost");
	}
}

/* The layout's first backing the daemon cannot punch, or NULL. */
static const struct vm_backing *vm_anon_backing(const struct vm_layout *l)
{
	for (size_t i = 0; i < l->nbackings; i++)
		if (l->backings[i].kind == VM_BACKING_ANONYMOUS || l->backings[i].fd < 0)
			return &l->backings[i];
	return NULL;
}

/*
 * What QEMU says of its balloon, asked only for a layout with anonymous
 * RAM (the hint backend needs it): 0 and *ret_hb, 1 if not asked, or the
 * query's errno.  On any thread that may use q.
 */
static int vm_probe_balloon(const struct vm_layout *l, struct qmp *q,
			    struct hint_balloon *ret_hb)
{
	if (!vm_anon_backing(l))
		return 1;
	return hint_probe_balloon(q, QMP_DEFAULT_TIMEOUT_MS, ret_hb);
}

/*
 * Decides the backend from the layout and, for anonymous RAM, the balloon
 * (vm_probe_balloon()'s answer r, hb).
 */
static void vm_set_backend(struct vm *vm, int r, const struct hint_balloon *probed)
{
	const struct vm_backing *anon = vm_anon_backing(vm->layout);
	struct hint_balloon hb = { 0 };

	vm->backend = VM_BACKEND_SHARED;
	vm->backend_note[0] = '\0';
	if (!anon)
		return;
	vm->backend = VM_BACKEND_NONE;
	if (r == 0)
		hb = *probed;
	if (r < 0) {
		snprintf(vm->backend_note, sizeof(vm->backend_note),
			 "RAM backend '%s' is anonymous memory and QEMU did not say "
			 "whether it has a virtio-balloon with free-page-reporting "
			 "(%s): nothing known to hand memory back", anon->name,
			 strerror(-r));
	} else if (hb.found && hb.fpr) {
		vm->backend = VM_BACKEND_HINT;
		snprintf(vm->backend_note, sizeof(vm->backend_note),
			 "RAM backend '%s' is anonymous memory and virtio-balloon "
			 "%s has free-page-reporting=on: the guest compacts 2 MiB "
			 "blocks, free page reporting hands them to QEMU", anon->name,
			 hb.path);
	} else if (hb.found) {
		snprintf(vm->backend_note, sizeof(vm->backend_note),
			 "RAM backend '%s' is anonymous memory and virtio-balloon %s "
			 "has free-page-reporting=off: nothing can hand memory back; "
			 "turn free-page-reporting on or use a shared memfd backing",
			 anon->name, hb.path);
	} else {
		snprintf(vm->backend_note, sizeof(vm->backend_note),
			 "RAM backend '%s' is anonymous memory and there is no "
			 "virtio-balloon with free-page-reporting=on: nothing can hand "
			 "memory back; add one or use a shared memfd backing",
			 anon->name);
	}
}

static enum reclaim_backend vm_reclaim_backend(const struct vm *vm)
{
	switch (vm->backend) {
	case VM_BACKEND_SHARED: return RECLAIM_BACKEND_SHARED;
	case VM_BACKEND_HINT: return RECLAIM_BACKEND_HINT;
	default: return RECLAIM_BACKEND_NONE;
	}
}

/* A job about to be queued takes a lease on the monitor (vm->qmp). */
static void vm_monitor_lend(struct vm *vm)
{
	if (vm->lent++)
		return;
	loop_io_remove(vm->loop, &vm->qmp_io);
	qmp_lend(vm->qmp, true);
}

/*
 * A lease ends (the job's done(), or a submit that failed): the last one
 * gives the monitor back; with read_events, the events read meanwhile are
 * handled and the socket read (this may detach the VM).
 */
static void vm_monitor_unlend(struct vm *vm, bool read_events)
{
	int r;

	if (!vm->qmp || !vm->lent || --vm->lent)
		return;
	qmp_lend(vm->qmp, false);
	if (qmp_fd(vm->qmp) < 0)
		return;		/* libvirt's: no socket, no events */
	r = loop_io_add(vm->loop, &vm->qmp_io, qmp_fd(vm->qmp), EPOLLIN);
	if (r < 0) {
		log_warning_errno(r, "VM '%s': epoll: %m", vm->conf.name);
		return vm_qmp_detach(vm, r, "epoll");
	}
	if (read_events)
		vm_qmp_io(&vm->qmp_io, EPOLLIN);
}

static void vm_monitor_give_back(struct vm *vm)
{
	vm_monitor_unlend(vm, true);
}

/* Queues job holding a lease on the monitor; undone if it cannot be. */
static int vm_monitor_submit(struct vm *vm, struct worker_job *job)
{
	int r;

	if (!vm->qmp)
		return -ENOTCONN;
	vm_monitor_lend(vm);
	r = worker_submit(vm->mq, job);
	if (r < 0)
		vm_monitor_unlend(vm, false);
	return r;
}

/* migration.c's polls of query-migrate, as jobs on the monitor queue. */
static int vm_mig_submit(void *opaque, struct worker_job *job)
{
	return vm_monitor_submit(opaque, job);
}

static void vm_mig_events(void *opaque)
{
	struct vm *vm = opaque;

	if (vm_qmp_events(vm) && vm->qmp)
		vm_layout_changed(vm);
}

static void vm_mig_give_back(void *opaque)
{
	vm_monitor_give_back(opaque);
}

static const struct migration_monitor_ops vm_mig_ops = {
	.submit = vm_mig_submit,
	.events = vm_mig_events,
	.give_back = vm_mig_give_back,
};

/*
 * The layout rediscovered on a worker (memory hot-plug): the job holds a
 * lease on the monitor from its queuing to its done(); the loop neither
 * reads the monitor's socket nor sends it a command meanwhile.  So a
 * stopped QEMU or libvirtd delays only this VM's rediscovery, by at most
 * its commands' timeouts, never the loop.
 */
struct vm_refresh {
	struct worker_job w;
	struct vm *vm;			/* done() only */
	struct qmp *q;
	pid_t pid;
	/* written by run() */
	int r;
	struct vm_layout *fresh;
	int probe_r;
	struct hint_balloon hb;
};

static void vm_refresh_run(struct worker_job *w)
{
	struct vm_refresh *j = (struct vm_refresh *)w;

	qmp_borrow(j->q);
	j->r = vm_layout_discover(j->q, j->pid, &j->fresh);
	if (j->r == 0)
		j->probe_r = vm_probe_balloon(j->fresh, j->q, &j->hb);
	qmp_borrow(NULL);
}

/*
 * A rediscovered layout takes the old one's place if it differs (the same
 * struct: reclaim.c, migration.c and collapse.c hold it), the backend is
 * decided again and reclaim.c keeps its block states.  1 if the layout
 * changed (logged), 0 if not.  Takes fresh.
 */
static int vm_layout_replace(struct vm *vm, struct vm_layout *fresh, int probe_r,
			     const struct hint_balloon *hb)
{
	struct vm_layout tmp;
	uint64_t before = vm_configured_ram(vm);
	size_t nbefore = vm->layout->nranges;
	int r;

	if (vm_layout_equal(vm->layout, fresh)) {
		vm_layout_free(fresh);
		return 0;
	}
	tmp = *vm->layout;
	*vm->layout = *fresh;
	*fresh = tmp;
	vm_layout_free(fresh);		/* the old ranges, backings and fds */
	vm_set_backend(vm, probe_r, hb);
	r = reclaim_update_layout(vm->reclaim, vm->layout, vm_reclaim_backend(vm),
				  vm->backend_note);
	if (r < 0)
		log_warning_errno(r, "VM '%s': cannot track its blocks: %m; reclaim "
				  "is unavailable", vm->conf.name);
	log_info("VM '%s': RAM layout changed (memory hot-plug): %llu MiB of RAM in "
		 "%zu ranges, was %llu MiB in %zu", vm->conf.name,
		 (unsigned long long)(vm_configured_ram(vm) >> 20), vm->layout->nranges,
		 (unsigned long long)(before >> 20), nbefore);
	return 1;
}

static void vm_refresh_done(struct worker_job *w, enum worker_end end)
{
	struct vm_refresh *j = (struct vm_refresh *)w;
	struct vm *vm = j->vm;
	struct proto_range pr;

	if (end == WORKER_CANCELLED) {
		/* the monitor is being dropped (its owner returns the lease) */
		vm_layout_free(j->fresh);
		free(j);
		return;
	}
	vm->refresh = NULL;
	if (j->r < 0)
		log_warning_errno(j->r, "VM '%s': cannot discover the RAM layout again "
				  "(%m%s%s); keeping the one known", vm->conf.name,
				  qmp_last_error(j->q)[0] ? " - QMP said: " : "",
				  qmp_last_error(j->q));
	else
		(void)vm_layout_replace(vm, j->fresh, j->probe_r, &j->hb);
	free(j);
	/* the guest named a range past the RAM known: RAM now? */
	if (session_pending_range(vm->session, &pr))
		session_range_verdict(vm->session,
				      vm_layout_translate(vm->layout, pr.gpa, pr.len,
							  NULL, NULL) == 0);
	/* the monitor back (if no poll holds it too), and the events read
	 * meanwhile, or waiting in the socket */
	vm_monitor_give_back(vm);
}

/* Starts a rediscovery of the layout on the worker, unless one runs. */
static void vm_layout_refresh(struct vm *vm)
{
	struct vm_refresh *j;
	int r;

	if (vm->refresh || !vm->qmp || !vm->layout)
		return;
	j = calloc(1, sizeof(*j));
	if (!j) {
		log_warning("VM '%s': out of memory for a layout rediscovery",
			    vm->conf.name);
		return;
	}
	j->w.run = vm_refresh_run;
	j->w.done = vm_refresh_done;
	j->vm = vm;
	j->q = vm->qmp;
	j->pid = vm->pid;
	vm->layout_refresh_ms = loop_now_ms();
	vm->refresh = j;
	r = vm_monitor_submit(vm, &j->w);
	if (r < 0) {
		/* a few jobs at a time: never full; undone if it were */
		vm->refresh = NULL;
		free(j);
		log_warning_errno(r, "VM '%s': cannot rediscover the layout: %m",
				  vm->conf.name);
	}
}

static void vm_layout_timer(struct loop_timer *t)
{
	vm_layout_refresh(t->userdata);
}

void vm_layout_changed(struct vm *vm)
{
	uint64_t now = loop_now_ms(), next;

	if (!vm->qmp || !vm->layout || vm->layout_timer.armed || vm->refresh)
		return;
	next = vm->layout_refresh_ms + VM_LAYOUT_REFRESH_MS;
	loop_timer_arm(vm->loop, &vm->layout_timer, next > now ? next - now : 0);
}

/*
 * Takes q and layout (closed and freed on failure): watches the monitor's
 * fd if it has one and installs QEMU pid `pid`'s layout and backend
 * (probe_r, hb: vm_probe_balloon()'s answer) and its migration (mp:
 * migration_probe()'s answers).
 */
static int vm_qmp_install(struct vm *vm, struct qmp *q, pid_t pid,
			  struct vm_layout *layout, int probe_r,
			  const struct hint_balloon *hb,
			  const struct migration_probe *mp)
{
	int r;

	if (qmp_fd(q) >= 0) {
		r = loop_io_add(vm->loop, &vm->qmp_io, qmp_fd(q), EPOLLIN);
		if (r < 0) {
			snprintf(vm->qmp_error, sizeof(vm->qmp_error), "epoll: %s",
				 strerror(-r));
			vm_layout_free(layout);
			qmp_close(q);
			return r;
		}
	}
	vm->qmp = q;
	vm->pid = pid;
	vm->layout = layout;
	vm->layout_refresh_ms = loop_now_ms();
	vm->qmp_error[0] = '\0';
	vm->qmp_backoff_ms = 0;
	vm_set_backend(vm, probe_r, hb);
	r = reclaim_set_layout(vm->reclaim, layout, vm_reclaim_backend(vm),
			       vm->backend_note);
	if (r < 0)
		log_warning_errno(r, "VM '%s': cannot track its blocks: %m; reclaim "
				  "is unavailable", vm->conf.name);
	migration_attach(vm->mig, q, layout, pid, mp);
	return 0;
}

/*
 * Takes q (closed on failure): discovers the layout of QEMU pid `pid` on
 * the loop's thread (a monitor libvirt hands over), then installs it.
 */
static int vm_qmp_adopt(struct vm *vm, struct qmp *q, pid_t pid)
{
	struct migration_probe mp;
	struct hint_balloon hb;
	struct vm_layout *layout;
	int r;

	r = vm_layout_discover(q, pid, &layout);
	if (r < 0) {
		snprintf(vm->qmp_error, sizeof(vm->qmp_error),
			 "cannot discover the RAM layout: %s%s%s", strerror(-r),
			 qmp_last_error(q)[0] ? " - QMP said: " : "",
			 qmp_last_error(q));
		qmp_close(q);
		return r;
	}
	r = vm_probe_balloon(layout, q, &hb);
	migration_probe(q, &mp);
	return vm_qmp_install(vm, q, pid, layout, r, &hb, &mp);
}

/*
 * Connecting to a --vm's QMP socket, on a worker: connect (QEMU greets
 * and negotiates), its pid, the layout, the balloon, and what
 * migration.c asks at attach (migration_probe()).  A stopped QEMU
 * accepts the connection but never greets; the loop does not wait for
 * it.  The qmp is the job's alone until done() installs it.
 */
struct vm_attach {
	struct worker_job w;
	struct vm *vm;			/* done() only */
	char path[sizeof(((struct config_vm *)0)->qmp)];
	/* written by run() */
	int r;
	char error[256];
	struct qmp *q;
	pid_t pid;
	struct vm_layout *layout;
	int probe_r;
	struct hint_balloon hb;
	struct migration_probe mp;
};

static void vm_attach_run(struct worker_job *w)
{
	struct vm_attach *j = (struct vm_attach *)w;
	int r;

	r = qmp_connect(j->path, QMP_DEFAULT_TIMEOUT_MS, &j->q);
	if (r < 0) {
		snprintf(j->error, sizeof(j->error), "cannot connect to %s: %s",
			 j->path, strerror(-r));
		j->q = NULL;
		goto out_fail;
	}
	r = qmp_peer_pid(j->q, &j->pid);
	if (r < 0) {
		snprintf(j->error, sizeof(j->error), "cannot get QEMU's pid: %s",
			 strerror(-r));
		goto out_close;
	}
	r = vm_layout_discover(j->q, j->pid, &j->layout);
	if (r < 0) {
		snprintf(j->error, sizeof(j->error),
			 "cannot discover the RAM layout: %s%s%s", strerror(-r),
			 qmp_last_error(j->q)[0] ? " - QMP said: " : "",
			 qmp_last_error(j->q));
		j->layout = NULL;
		goto out_close;
	}
	j->probe_r = vm_probe_balloon(j->layout, j->q, &j->hb);
	migration_probe(j->q, &j->mp);
	j->r = 0;
	return;

out_close:
	qmp_close(j->q);
	j->q = NULL;
out_fail:
	j->r = r;
}

static void vm_log_attached(struct vm *vm);

static void vm_attach_done(struct worker_job *w, enum worker_end end)
{
	struct vm_attach *j = (struct vm_attach *)w;
	struct vm *vm = j->vm;
	bool first;
	int r = j->r;

	if (end == WORKER_CANCELLED || (r == 0 && (vm->qmp || vm->libvirt))) {
		/* going away, or attached otherwise meanwhile */
		vm_layout_free(j->layout);
		qmp_close(j->q);
		if (end != WORKER_CANCELLED)
			vm->attaching = false;
		free(j);
		return;
	}
	vm->attaching = false;
	if (r == 0)
		r = vm_qmp_install(vm, j->q, j->pid, j->layout, j->probe_r, &j->hb,
				   &j->mp);
	else
		snprintf(vm->qmp_error, sizeof(vm->qmp_error), "%s", j->error);
	free(j);
	if (r == 0) {
		vm_log_attached(vm);
		/* events the attach's commands read (they waited meanwhile) */
		return vm_qmp_io(&vm->qmp_io, EPOLLIN);
	}
	first = vm->qmp_backoff_ms == 0;
	vm_qmp_schedule_retry(vm);
	if (first)
		log_warning("VM '%s': not attached to QEMU: %s; retrying",
			    vm->conf.name, vm->qmp_error);
}

static void vm_log_attached(struct vm *vm)
{
	if (vm->backend == VM_BACKEND_SHARED)
		log_info("VM '%s': attached to QEMU pid %d, %llu MiB of RAM, shared "
			 "backend", vm->conf.name, (int)vm->pid,
			 (unsigned long long)(vm_configured_ram(vm) >> 20));
	else
		log_info("VM '%s': attached to QEMU pid %d, %llu MiB of RAM, %s "
			 "backend: %s", vm->conf.name, (int)vm->pid,
			 (unsigned long long)(vm_configured_ram(vm) >> 20),
			 vm->backend == VM_BACKEND_HINT ? "hint" : "no",
			 vm->backend_note);
}

/* Starts connecting to the --vm's QMP socket (vm_attach), unless it is. */
static void vm_qmp_try(struct vm *vm)
{
	struct vm_attach *j;
	int r;

	if (vm->attaching || vm->qmp)
		return;
	j = calloc(1, sizeof(*j));
	if (!j) {
		snprintf(vm->qmp_error, sizeof(vm->qmp_error), "out of memory");
		return vm_qmp_schedule_retry(vm);
	}
	j->w.run = vm_attach_run;
	j->w.done = vm_attach_done;
	j->vm = vm;
	snprintf(j->path, sizeof(j->path), "%s", vm->conf.qmp);
	vm->attaching = true;
	r = worker_submit(vm->mq, &j->w);
	if (r < 0) {
		vm->attaching = false;
		free(j);
		snprintf(vm->qmp_error, sizeof(vm->qmp_error), "worker queue: %s",
			 strerror(-r));
		vm_qmp_schedule_retry(vm);
	}
}

static void vm_qmp_retry_timer(struct loop_timer *t)
{
	struct vm *vm = t->userdata;

	if (!vm->qmp && !vm->libvirt)
		vm_qmp_try(vm);
}

/* ---- libvirt-given monitor -------------------------------------------- */

bool vm_is_libvirt(const struct vm *vm)
{
	return vm->libvirt;
}

bool vm_monitor_attached(const struct vm *vm)
{
	return vm->qmp != NULL;
}

int vm_attach_monitor(struct vm *vm, struct qmp *q, pid_t pid, const char *channel)
{
	int r;

	if (vm->qmp)
		vm_qmp_drop(vm);
	if (strlen(channel) >= sizeof(vm->conf.channel)) {
		qmp_close(q);
		snprintf(vm->qmp_error, sizeof(vm->qmp_error),
			 "channel path too long for a unix socket");
		return -ENAMETOOLONG;
	}
	r = vm_qmp_adopt(vm, q, pid);
	if (r < 0)
		return r;
	vm_log_attached(vm);
	strcpy(vm->conf.channel, channel);
	r = session_set_path(vm->session, channel);
	if (r < 0)
		log_warning_errno(r, "VM '%s': guest channel: %m", vm->conf.name);
	if (migration_holds_session(vm->mig))
		session_stop(vm->session);
	return 0;
}

void vm_detach_monitor(struct vm *vm, const char *why)
{
	bool was = vm->qmp != NULL;

	vm_qmp_drop(vm);
	session_stop(vm->session);
	snprintf(vm->qmp_error, sizeof(vm->qmp_error), "%s", why);
	if (was)
		log_info("VM '%s': detached: %s", vm->conf.name, why);
}

/* ---- session hooks ---------------------------------------------------- */

static int vm_check_range(void *opaque, const struct proto_range *r)
{
	struct vm *vm = opaque;
	int ret;

	if (!vm->layout)
		return -ENODATA;
	ret = vm_layout_translate(vm->layout, r->gpa, r->len, NULL, NULL);
	/*
	 * outside the RAM known: hot-plugged since?  Ask QEMU, if it is this
	 * VM's turn (the guest may name such ranges on purpose), on the
	 * worker: the session takes the frame as if the layout were unknown
	 * and gets the verdict when the answer is in (vm_refresh_done()); if
	 * QEMU cannot say, the range is refused as it would have been
	 */
	if (ret != -ERANGE || !vm->qmp)
		return ret;
	if (!vm->refresh &&
	    loop_now_ms() >= vm->layout_refresh_ms + VM_LAYOUT_REFRESH_MS) {
		vm_layout_refresh(vm);
		if (!vm->refresh)	/* done already (inline) or not started */
			return vm_layout_translate(vm->layout, r->gpa, r->len,
						   NULL, NULL);
	}
	return vm->refresh ? -EINPROGRESS : ret;
}

static uint64_t vm_ram_bytes(void *opaque)
{
	return vm_configured_ram(opaque);
}

static uint64_t vm_ranges_bytes(const struct proto_msg *m)
{
	uint64_t sum = 0;

	for (uint32_t i = 0; i < m->u.evt.nranges; i++)
		sum += m->ranges[i].len;
	return sum;
}

/* What the guest took back under pressure since this daemon started. */
static uint64_t vm_released_bytes(struct vm *vm)
{
	struct reclaim_status rs;

	reclaim_get_status(vm->reclaim, &rs);
	return rs.guest_released_bytes;
}

static void vm_event(void *opaque, const struct proto_msg *m)
{
	struct vm *vm = opaque;

	switch (m->type) {
	case PROTO_EVT_STATS:
		vm->stats = m->u.stats;
		vm->stats_ms = loop_now_ms();
		vm->have_stats = true;
		vm_counters_observe(vm->counters, vm_released_bytes(vm), &vm->stats);
		reclaim_guest_stats(vm->reclaim, m->u.stats.captured_bytes);
		break;
	case PROTO_EVT_MEMINFO:
		policy_vm_signals(vm->policy, &m->u.meminfo);
		break;
	case PROTO_EVT_CAPTURED:
		vm->evt_captured_bytes += vm_ranges_bytes(m);
		log_debug("VM '%s': guest captured %llu bytes", vm->conf.name,
			  (unsigned long long)vm_ranges_bytes(m));
		break;
	case PROTO_EVT_RELEASED:
		vm->evt_released_bytes += vm_ranges_bytes(m);
		log_debug("VM '%s': guest released %llu bytes (reason %u)",
			  vm->conf.name, (unsigned long long)vm_ranges_bytes(m),
			  m->u.evt.reason);
		reclaim_event(vm->reclaim, m);
		if (policy_vm_released(vm->policy, m->u.evt.reason,
				       !(m->flags & PROTO_F_MORE)))
			vm_counters_policy_miss(vm->counters);
		/* re-backed now: after a migration in, collapse them again */
		for (uint32_t i = 0; i < m->u.evt.nranges; i++)
			migration_guest_released(vm->mig, m->ranges[i].gpa,
						 m->ranges[i].len);
		break;
	}
}

static void vm_session_state(void *opaque, enum session_state state)
{
	struct vm *vm = opaque;
	struct session_info si;

	if (state == SESSION_READY) {
		session_get_info(vm->session, &si);
		reclaim_session_ready(vm->reclaim, &si.guest);
	} else {
		reclaim_session_down(vm->reclaim);
	}
}

static void vm_session_hello(void *opaque, const struct proto_hello *hello)
{
	struct vm *vm = opaque;

	reclaim_session_hello(vm->reclaim, hello);
}

static const struct session_hooks vm_session_hooks = {
	.check_range = vm_check_range,
	.ram_bytes = vm_ram_bytes,
	.event = vm_event,
	.state_changed = vm_session_state,
	.hello = vm_session_hello,
};

/* ---- scan ------------------------------------------------------------- */

/* A scan in flight; fn is NULL once its requester went away. */
struct vm_scan_req {
	struct vm *vm;
	uint32_t id;
	vm_scan_fn fn;
	void *userdata;
	struct vm_scan_req *next;	/* vm->scans */
};

static void vm_scan_unlink(struct vm *vm, struct vm_scan_req *sr)
{
	for (struct vm_scan_req **p = &vm->scans; *p; p = &(*p)->next) {
		if (*p == sr) {
			*p = sr->next;
			return;
		}
	}
}

static void vm_scan_done(void *opaque, int status, const struct proto_msg *resp,
			 bool last)
{
	struct vm_scan_req *sr = opaque;
	struct vm *vm = sr->vm;

	if (status == 0 && resp && resp->type == PROTO_RESP_SCAN) {
		vm->scan = resp->u.scan;
		memcpy(vm->slabs, resp->slabs,
		       sizeof(vm->slabs[0]) * resp->u.scan.nslabs);
		vm->census = resp->census;
		vm->scan_ms = loop_now_ms();
		vm->have_scan = true;
		if (sr->fn)
			sr->fn(sr->userdata, 0, &vm->scan, vm->slabs,
			       vm->scan.flags & PROTO_SCAN_F_CENSUS ? &vm->census : NULL);
	} else if (sr->fn) {
		sr->fn(sr->userdata, status < 0 ? status : -EPROTO, NULL, NULL, NULL);
	}
	if (last) {
		vm_scan_unlink(vm, sr);
		free(sr);
	}
}

int vm_scan(struct vm *vm, vm_scan_fn fn, void *userdata, uint32_t *ret_id)
{
	struct proto_msg *req;
	struct vm_scan_req *sr;
	int r;

	sr = malloc(sizeof(*sr));
	req = calloc(1, sizeof(*req));
	if (!sr || !req) {
		free(sr);
		free(req);
		return -ENOMEM;
	}
	sr->vm = vm;
	sr->fn = fn;
	sr->userdata = userdata;
	req->type = PROTO_REQ_SCAN;
	r = session_request(vm->session, req, vm_scan_done, sr, &sr->id);
	free(req);
	if (r < 0) {
		free(sr);
		return r;
	}
	sr->next = vm->scans;
	vm->scans = sr;
	if (ret_id)
		*ret_id = sr->id;
	return 0;
}

void vm_scan_cancel(struct vm *vm, uint32_t id)
{
	/*
	 * The request stays queued (its answer is still due and still
	 * refreshes the cached picture); only the requester is forgotten.
	 */
	for (struct vm_scan_req *sr = vm->scans; sr; sr = sr->next)
		if (sr->id == id)
			sr->fn = NULL;
}

/* ---- block map -------------------------------------------------------- */

struct vm_map_req {
	vm_map_fn fn;
	void *userdata;
	uint64_t first;
};

static void vm_map_done(void *opaque, int status, const struct proto_msg *resp,
			bool last)
{
	struct vm_map_req *mr = opaque;

	if (status == 0 && resp && resp->type == PROTO_RESP_MAP &&
	    resp->u.map.first_block == mr->first)
		mr->fn(mr->userdata, 0, resp);
	else
		mr->fn(mr->userdata, status < 0 ? status : -EPROTO, NULL);
	if (last)
		free(mr);
}

int vm_map_request(struct vm *vm, uint64_t first, uint32_t max, vm_map_fn fn,
		   void *userdata, uint32_t *ret_id)
{
	struct session_info si;
	struct proto_msg *req;
	struct vm_map_req *mr;
	int r;

	session_get_info(vm->session, &si);
	if (si.state != SESSION_READY)
		return -ENOTCONN;
	if (!(si.guest.features & PROTO_FEAT_MAP))
		return -EOPNOTSUPP;
	mr = malloc(sizeof(*mr));
	req = calloc(1, sizeof(*req));
	if (!mr || !req) {
		free(mr);
		free(req);
		return -ENOMEM;
	}
	*mr = (struct vm_map_req) { .fn = fn, .userdata = userdata, .first = first };
	req->type = PROTO_REQ_MAP;
	req->u.map_req.first_block = first;
	req->u.map_req.max_blocks = max;
	r = session_request(vm->session, req, vm_map_done, mr, ret_id);
	free(req);
	if (r < 0)
		free(mr);
	return r;
}

int vm_host_blocks(struct vm *vm, uint64_t first, uint64_t n, uint8_t *ret_flags,
		   bool *ret_huge_known)
{
	struct host_folios hf = { -1, -1 };
	bool huge_known;

	if (!vm->layout)
		return -ENODATA;
	reclaim_get_blocks(vm->reclaim, first, n, ret_flags);
	for (uint64_t i = 0; i < n; i++) {
		uint8_t st = ret_flags[i] & BLOCKMAP_STATE_MASK;

		ret_flags[i] = (st == BLOCKMAP_CAPTURED || st == BLOCKMAP_RETURNING ?
				VM_HOST_CAPTURED : 0) |
			       (st == BLOCKMAP_RECLAIMED ?
				VM_HOST_CAPTURED | VM_HOST_RECLAIMED : 0);
	}
	huge_known = host_folios_open(vm->layout->pid, &hf) == 0;
	for (size_t r = 0; r < vm->layout->nranges; r++) {
		const struct vm_ram_range *rg = &vm->layout->ranges[r];
		uint64_t b0 = (rg->gpa + BLOCKMAP_BLOCK - 1) / BLOCKMAP_BLOCK;
		uint64_t b1 = (rg->gpa + rg->len) / BLOCKMAP_BLOCK;

		for (uint64_t b = b0 > first ? b0 : first; b < b1 && b < first + n; b++) {
			int h = huge_known ? host_folios_block_huge(&hf, rg->hva +
					b * BLOCKMAP_BLOCK - rg->gpa) : 0;

			ret_flags[b - first] |= VM_HOST_RAM | (h > 0 ? VM_HOST_HUGE : 0);
			if (h < 0)
				huge_known = false;	/* unmeasurable: say so */
		}
	}
	host_folios_close(&hf);
	*ret_huge_known = huge_known;
	return 0;
}

/* ---- status ----------------------------------------------------------- */

/*
 * Can re-backing this memfd or file get 2 MiB folios?  The setting that
 * decides is backend_shared_shmem_policy()'s: shmem_enabled for a memfd,
 * the tmpfs mount's huge= for a file; a disk filesystem's page cache is
 * base pages here.
 */
static void vm_status_shmem_reback(const struct vm_backing *b,
				   struct ctl_vm_status *st)
{
	enum hostmem_shmem_thp policy;
	bool mount;
	int r;

	r = backend_shared_shmem_policy(b->fd, b->kind, &policy, &mount);
	if (r == 0 && hostmem_shmem_thp_allows_huge(policy))
		return;
	st->reback_huge = false;
	if (b->kind == VM_BACKING_MEMFD)
		snprintf(st->reback_note, sizeof(st->reback_note),
			 "host shmem_enabled is '%s': memfd folios are 4 KiB; set "
			 "it to advise", r == 0 ? hostmem_shmem_thp_name(policy) : "?");
	else if (r == -EMEDIUMTYPE || b->fd < 0)
		snprintf(st->reback_note, sizeof(st->reback_note),
			 "backing '%.48s' is a file on a disk filesystem: base "
			 "pages only", b->name);
	else if (r < 0)
		snprintf(st->reback_note, sizeof(st->reback_note),
			 "backing '%.48s' is on a tmpfs whose huge= option cannot "
			 "be read", b->name);
	else
		snprintf(st->reback_note, sizeof(st->reback_note),
			 "backing '%.48s' is on a tmpfs with huge=%s: 4 KiB folios; "
			 "mount it with huge=within_size", b->name,
			 hostmem_shmem_thp_name(policy));
}

static void vm_status_host(struct vm *vm, struct ctl_vm_status *st)
{
	const struct vm_layout *l = vm->layout;
	struct hostmem_vrange vr[VM_LAYOUT_MAX_RANGES];
	struct hostmem_smaps sm;
	struct hostmem_status hs;
	enum hostmem_shmem_thp thp;
	bool thp_known = hostmem_read_shmem_thp(&thp) == 0;
	size_t nvr = 0;

	st->shmem_enabled = thp_known ? hostmem_shmem_thp_name(thp) : NULL;
	if (!l)
		return;
	st->ram_bytes = vm_configured_ram(vm);
	if (vm->pid && hostmem_read_status(vm->pid, &hs) == 0) {
		st->rss_known = true;
		st->rss_anon_bytes = hs.rss_anon;
	}
	st->backing_known = vm->backend == VM_BACKEND_SHARED;
	for (size_t i = 0; i < l->nbackings; i++) {
		uint64_t bytes;

		if (l->backings[i].fd < 0 ||
		    hostmem_backing_allocated(l->backings[i].fd, &bytes) < 0) {
			st->backing_known = false;
			continue;
		}
		st->backing_bytes += bytes;
	}
	for (size_t i = 0; i < l->nranges && nvr < VM_LAYOUT_MAX_RANGES; i++) {
		vr[nvr].start = l->ranges[i].hva;
		vr[nvr].len = l->ranges[i].len;
		nvr++;
	}
	if (nvr && hostmem_read_smaps(vm->pid, vr, nvr, &sm) == 0) {
		st->huge_known = true;
		st->huge_mapped_bytes = hostmem_smaps_huge_bytes(&sm);
	}

	/* can re-backing a reclaimed range use 2 MiB folios? */
	st->reback_huge = true;
	for (size_t i = 0; i < l->nbackings; i++) {
		const struct vm_backing *b = &l->backings[i];

		switch (b->kind) {
		case VM_BACKING_HUGETLBFS:
			break;
		case VM_BACKING_MEMFD:
		case VM_BACKING_FILE:
			vm_status_shmem_reback(b, st);
			break;
		case VM_BACKING_ANONYMOUS:
			st->reback_huge = false;
			snprintf(st->reback_note, sizeof(st->reback_note),
				 "anonymous RAM: the host re-backs on fault (THP)");
			break;
		}
	}
}

void vm_get_status(struct vm *vm, struct ctl_vm_status *st)
{
	uint64_t now = loop_now_ms();

	memset(st, 0, sizeof(*st));
	snprintf(st->name, sizeof(st->name), "%s", vm->conf.name);
	st->qmp_connected = vm->qmp != NULL;
	snprintf(st->qmp_error, sizeof(st->qmp_error), "%s", vm->qmp_error);
	st->pid = (int)vm->pid;
	switch (vm->backend) {
	case VM_BACKEND_SHARED:
		st->backend = "shared";
		break;
	case VM_BACKEND_HINT:
		st->backend = "hint";
		snprintf(st->backend_note, sizeof(st->backend_note), "%s",
			 vm->backend_note);
		break;
	case VM_BACKEND_NONE:
		st->backend = "none";
		snprintf(st->backend_note, sizeof(st->backend_note), "%s",
			 vm->backend_note);
		break;
	default:
		st->backend = "unknown";
		snprintf(st->backend_note, sizeof(st->backend_note),
			 "not attached to QEMU");
		break;
	}
	vm_status_host(vm, st);
	session_get_info(vm->session, &st->session);
	st->have_scan = vm->have_scan;
	st->scan_age_ms = now - vm->scan_ms;
	st->scan = vm->scan;
	st->have_stats = vm->have_stats;
	st->stats_age_ms = now - vm->stats_ms;
	st->stats = vm->stats;
	reclaim_get_status(vm->reclaim, &st->mem);
	migration_get_status(vm->mig, &st->migration);
	policy_vm_get_status(vm->policy, &st->policy);
	vm_counters_observe(vm->counters, st->mem.guest_released_bytes,
			    vm->have_stats ? &vm->stats : NULL);
	vm_counters_get(vm->counters, &st->counters);
}

size_t vm_get_history(struct vm *vm, struct vm_history_entry *ret_entries,
		      size_t max)
{
	return vm_counters_history(vm->counters, ret_entries, max);
}

static void vm_op_ended(void *userdata, const struct reclaim_op_info *op)
{
	struct vm *vm = userdata;

	vm_counters_op_end(vm->counters, op);
}

int vm_start_op(struct vm *vm, enum reclaim_kind kind, uint64_t bytes, int evict,
		enum reclaim_origin origin, char *err, size_t errsz,
		uint32_t *ret_id)
{
	int r = migration_check_op(vm->mig, err, errsz);

	if (r < 0)
		return r;
	r = reclaim_start(vm->reclaim, kind, bytes, evict, origin, err, errsz, ret_id);
	if (r == 0)
		migration_op_started(vm->mig, kind);
	return r;
}

int vm_set_policy(struct vm *vm, enum policy_mode mode, char *err, size_t errsz)
{
	return policy_vm_set_mode(vm->policy, mode, err, errsz);
}

/* ---- policy hooks ----------------------------------------------------- */

static void vm_policy_view(void *opaque, struct policy_view *v, uint32_t *ret_op_id)
{
	struct vm *vm = opaque;
	struct reclaim_status rs;
	struct session_info si;

	session_get_info(vm->session, &si);
	reclaim_get_status(vm->reclaim, &rs);
	v->ready = si.state == SESSION_READY && vm->qmp && rs.layout_known &&
		   rs.reconciled;
	/* only the shared backend moves what the guest's free memory shows */
	v->backend_ok = vm->backend == VM_BACKEND_SHARED;
	v->can_return = vm->backend == VM_BACKEND_SHARED;
	v->op_running = rs.have_op && rs.op.state == RECLAIM_OP_RUNNING;
	v->op_is_reclaim = v->op_running && rs.op.kind == RECLAIM_KIND_RECLAIM;
	v->held_bytes = rs.captured_bytes;
	*ret_op_id = v->op_running ? rs.op.id : 0;
}

static int vm_policy_start(void *opaque, bool is_return, uint64_t bytes,
			   char *err, size_t errsz, uint32_t *ret_id)
{
	struct vm *vm = opaque;

	return vm_start_op(vm, is_return ? RECLAIM_KIND_RETURN : RECLAIM_KIND_RECLAIM,
			   bytes, -1, RECLAIM_ORIGIN_POLICY, err, errsz, ret_id);
}

static void vm_policy_stop(void *opaque, uint32_t id)
{
	struct vm *vm = opaque;
	uint32_t stopped;

	(void)vm_cancel_op(vm, id, &stopped);
}

static const struct policy_vm_hooks vm_policy_hooks = {
	.view = vm_policy_view,
	.start = vm_policy_start,
	.stop = vm_policy_stop,
};

int vm_get_op(struct vm *vm, uint32_t id, struct reclaim_op_info *ret_op)
{
	return reclaim_get_op(vm->reclaim, id, ret_op);
}

int vm_cancel_op(struct vm *vm, uint32_t id, uint32_t *ret_id)
{
	return reclaim_cancel(vm->reclaim, id, ret_id);
}

/* ---- lifetime --------------------------------------------------------- */

/* What the session and the reclaim engine take from the configuration. */
static void vm_limits(const struct config *cfg, const struct config_vm *conf,
		      struct session_limits *ret_lim, struct reclaim_params *ret_par)
{
	*ret_lim = (struct session_limits) {
		.frames_per_sec = conf->frames_per_sec,
		.events_per_sec = conf->events_per_sec,
		.request_timeout_ms = conf->request_timeout_ms,
		.reconnect_min_ms = cfg->reconnect_min_ms,
		.reconnect_max_ms = cfg->reconnect_max_ms,
	};
	*ret_par = (struct reclaim_params) {
		.floor_bytes = conf->floor_bytes,
		.max_reclaim_bytes = conf->max_reclaim_bytes,
		.budget_ms = conf->request_timeout_ms / 2 < 30000 ?
			     conf->request_timeout_ms / 2 : 30000,
		.evict = conf->evict,
	};
	if (ret_par->budget_ms == 0)
		ret_par->budget_ms = 1;
}

void vm_apply_config(struct vm *vm, const struct config *cfg,
		     const struct config_vm *conf)
{
	struct session_limits lim;
	struct reclaim_params par;
	struct policy_params pol;

	vm_limits(cfg, conf, &lim, &par);
	pol = conf->policy;
	pol.floor_bytes = conf->floor_bytes;
	policy_vm_set_params(vm->policy, &pol,
			     vm->conf.policy.mode != conf->policy.mode);
	vm->conf.policy = conf->policy;
	vm->conf.floor_bytes = conf->floor_bytes;
	vm->conf.max_reclaim_bytes = conf->max_reclaim_bytes;
	vm->conf.frames_per_sec = conf->frames_per_sec;
	vm->conf.events_per_sec = conf->events_per_sec;
	vm->conf.request_timeout_ms = conf->request_timeout_ms;
	vm->conf.evict = conf->evict;
	vm->retry_min_ms = cfg->reconnect_min_ms;
	vm->retry_max_ms = cfg->reconnect_max_ms;
	session_set_limits(vm->session, &lim);
	reclaim_set_params(vm->reclaim, &par);
	migration_set_collapse_cpu_percent(vm->mig, cfg->collapse_cpu_percent);
}

int vm_new(struct loop *loop, const struct config *cfg,
	   const struct config_vm *conf, struct vm **ret_vm)
{
	struct session_limits lim;
	struct reclaim_params par;
	struct policy_params pol;
	struct vm *vm;
	int r;

	vm_limits(cfg, conf, &lim, &par);

	vm = calloc(1, sizeof(*vm));
	if (!vm)
		return -ENOMEM;
	r = vm_counters_new(loop, cfg->state_dir, conf->name, &vm->counters);
	if (r < 0) {
		free(vm);
		return r;
	}
	vm->loop = loop;
	vm->conf = *conf;
	vm->retry_min_ms = cfg->reconnect_min_ms;
	vm->retry_max_ms = cfg->reconnect_max_ms;
	snprintf(vm->qmp_error, sizeof(vm->qmp_error), "not connected yet");
	loop_io_init(&vm->qmp_io, vm_qmp_io, vm);
	loop_timer_init(&vm->qmp_retry, vm_qmp_retry_timer, vm);
	loop_timer_init(&vm->layout_timer, vm_layout_timer, vm);
	r = worker_queue_new(worker_pool_default(WORKER_MONITOR), &vm->mq);
	if (r < 0) {
		vm_counters_free(vm->counters);
		free(vm);
		return r;
	}
	r = session_new(loop, conf->name, conf->channel, &lim, &vm_session_hooks,
			vm, &vm->session);
	if (r < 0) {
		worker_queue_free(vm->mq);
		vm_counters_free(vm->counters);
		free(vm);
		return r;
	}
	r = reclaim_new(loop, conf->name, vm->session, &par, &vm->reclaim);
	if (r < 0) {
		worker_queue_free(vm->mq);
		session_free(vm->session);
		vm_counters_free(vm->counters);
		free(vm);
		return r;
	}
	reclaim_set_op_end_fn(vm->reclaim, vm_op_ended, vm);
	r = migration_new(loop, conf->name, vm->session, vm->reclaim,
			  cfg->collapse_cpu_percent, &vm->mig);
	if (r < 0) {
		worker_queue_free(vm->mq);
		session_free(vm->session);
		reclaim_free(vm->reclaim);
		vm_counters_free(vm->counters);
		free(vm);
		return r;
	}
	migration_set_monitor_ops(vm->mig, &vm_mig_ops, vm);
	pol = conf->policy;
	pol.floor_bytes = conf->floor_bytes;
	r = policy_vm_new(loop, conf->name, cfg->state_dir, &pol, &vm_policy_hooks,
			  vm, &vm->policy);
	if (r < 0) {
		worker_queue_free(vm->mq);
		migration_free(vm->mig);
		session_free(vm->session);
		reclaim_free(vm->reclaim);
		vm_counters_free(vm->counters);
		free(vm);
		return r;
	}
	*ret_vm = vm;
	return 0;
}

int vm_new_libvirt(struct loop *loop, const struct config *cfg,
		   const struct config_vm *conf, struct vm **ret_vm)
{
	struct vm *vm;
	int r;

	r = vm_new(loop, cfg, conf, &vm);
	if (r < 0)
		return r;
	vm->libvirt = true;
	snprintf(vm->qmp_error, sizeof(vm->qmp_error), "domain is not running");
	*ret_vm = vm;
	return 0;
}

void vm_start(struct vm *vm)
{
	if (vm->libvirt)
		return;
	vm_qmp_try(vm);
	if (!migration_holds_session(vm->mig))
		session_start(vm->session);
}

void vm_migration_expect_incoming(struct vm *vm)
{
	migration_expect_incoming(vm->mig);
}

bool vm_migration_incoming(const struct vm *vm)
{
	return migration_incoming(vm->mig);
}

bool vm_migration_outgoing(const struct vm *vm)
{
	return migration_outgoing(vm->mig);
}

bool vm_migration_postcopy_failed(const struct vm *vm)
{
	return migration_state(vm->mig) == MIGRATION_POSTCOPY_FAILED;
}

void vm_migration_note(struct vm *vm, const char *qemu_status)
{
	migration_note(vm->mig, qemu_status);
}

/* ---- the VM list ------------------------------------------------------ */

int vm_list_add(struct vm_list *l, struct vm *vm)
{
	if (l->n == l->cap) {
		size_t ncap = l->cap ? l->cap * 2 : 8;
		struct vm **nv = realloc(l->v, ncap * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		l->v = nv;
		l->cap = ncap;
	}
	l->v[l->n++] = vm;
	return 0;
}

struct vm *vm_list_find(const struct vm_list *l, const char *name)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->v[i]->conf.name, name) == 0)
			return l->v[i];
	return NULL;
}

void vm_list_free(struct vm_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		vm_free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = l->cap = 0;
}

void vm_free(struct vm *vm)
{
	if (!vm)
		return;
	worker_queue_free(vm->mq);	/* the monitor is the VM's again */
	policy_vm_free(vm->policy);
	migration_free(vm->mig);
	session_free(vm->session);
	reclaim_free(vm->reclaim);
	loop_timer_disarm(vm->loop, &vm->qmp_retry);
	loop_timer_disarm(vm->loop, &vm->layout_timer);
	loop_io_remove(vm->loop, &vm->qmp_io);
	qmp_close(vm->qmp);
	vm_layout_free(vm->layout);
	vm_counters_free(vm->counters);	/* after reclaim: its last op counts */
	free(vm);
}
