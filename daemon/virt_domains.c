// SPDX-License-Identifier: GPL-2.0
/*
 * virt_domains.c - libvirt mode: which running domain is which VM.
 *
 * Model: one record per domain name ever seen running (bounded by
 * VIRT_DOMAINS_MAX), each in one of
 *
 *   unmanaged   no usable org.vmdefrag.0 unix channel in its live XML, a
 *               name that cannot be a VM name, or a --vm of the same name
 *               (the --vm wins); said once per record at info level
 *   stopped     has a struct vm (created the first time the domain was
 *               seen managed, kept for the daemon's lifetime), detached:
 *               status says why ("domain is not running")
 *   attached    its struct vm holds a monitor carried by libvirt and the
 *               guest session runs on the channel path from the live XML
 *
 * What moves a record, all on the loop thread (virt_conn.c delivers):
 *   - (re)connect and lost events: every active domain is refreshed, and
 *     every attached VM whose domain is not among them is detached;
 *   - device added/removed, memory device resized: the VM reads its RAM
 *     layout again (memory hot-plug; vm_layout_changed());
 *   - lifecycle events: STARTED/RESUMED refresh, STOPPED detaches (also
 *     the source side of a migration: STOPPED/MIGRATED);
 *   - live migration, which libvirt's monitor does not show (no QMP
 *     events, and a monitor command waits for libvirt's migration job):
 *     source: migration-iteration (pass 1 comes at the start) and
 *     SUSPENDED/MIGRATED note "active", SUSPENDED/POSTCOPY
 *     "postcopy-active", STOPPED/MIGRATED "completed", RESUMED/MIGRATED
 *     "failed" (the source runs again); the hook's stopped/release then
 *     leave the detach to that event.  A post-copy that fails leaves the
 *     source domain paused (reason postcopy-failed, event
 *     SUSPENDED/POSTCOPY_FAILED) with libvirt's job ended or kept for a
 *     --postcopy-resume: both the event and the outgoing watch (domain
 *     state paused/postcopy-failed) note "postcopy-paused", and the VM
 *     stays in migration.c's POSTCOPY_FAILED (nothing punched) until the
 *     watch sees the post-copy run again (paused/postcopy: noted
 *     "postcopy-active") or the domain stops (destroyed: detached);
 *     Destination: STARTED/MIGRATED, or any refresh that finds libvirt's
 *     job to be an incoming migration (virt_domains_job()), marks the
 *     record incoming: the VM waits (migration_expect_incoming()), nothing
 *     is asked of its monitor, and the record is refreshed every
 *     VIRT_DOMAINS_INCOMING_POLL_MS and on its events until the job ended
 *     (RESUMED/POSTCOPY, the switch-over, notes "postcopy-active": status
 *     then says it came by post-copy); then it is attached and
 *     "completed" is noted (reconcile, collapse);
 *   - the hook's notify: "started" queues a refresh on a zero-delay timer
 *     (the hook runs while libvirtd holds the domain, so nothing here may
 *     call libvirt before the hook has its answer), "stopped"/"release"
 *     detach at once (no libvirt call needed); "migrate" (the destination,
 *     before its QEMU exists) creates the record and its VM if needed and
 *     marks the VM incoming at once, announced: if no domain of that name
 *     runs VIRT_DOMAINS_ANNOUNCE_MS later (libvirt's prepare failed after
 *     the hook), the expectation is dropped;
 *   - the connection dropped: every VM is detached until the reconnect;
 *   - a running domain that could not be attached is retried every
 *     reconnect_max_ms (virt_domains_retry_later()).
 * A refresh is idempotent: same QEMU pid and attached means nothing to do.
 *
 * Every libvirt call here is synchronous on the loop thread, so the loop
 * waits while libvirtd works.  A monitor command waits for the domain's
 * job; when libvirtd holds it while it runs the hook, and the hook waits
 * for this daemon's answer to notify, the two wait on each other until
 * vmdefragctl's own timeout (2 s) lets the hook go or the command's
 * (QMP_DEFAULT_TIMEOUT_MS, virt_monitor.c) gives up: bounded, and only if
 * a refresh of that very domain was already running when the hook came.
 * The other calls (lookups, XML, job info) have no timeout in libvirt
 * either, but do not wait for a domain's job: libvirtd answers them from
 * its own state, and a libvirtd that stops answering at all is noticed by
 * the keepalive on libvirt's event thread (virt_conn.c, ~20 s), which
 * closes the connection and fails the call.
 * notify itself never calls libvirt, which keeps the common case free of it.
 *
 * A refresh reads the live XML (domain_xml_parse()), finds the QEMU pid
 * (virt_domains_pid()), and attaches the VM through a qmp whose transport
 * is virDomainQemuMonitorCommand() on that domain (virt_monitor.c: each
 * command bounded by the qmp's timeout, as libvirt has none).  libvirt marks such a
 * domain tainted ("custom-monitor") in its log; that is the documented
 * price of not opening a second monitor.
 *
 * The QEMU pid: libvirt's qemu driver writes it to RUNDIR/NAME.pid, where
 * RUNDIR is /run/libvirt/qemu for qemu:///system and
 * $XDG_RUNTIME_DIR/libvirt/qemu/run for qemu:///session.  The daemon needs
 * the pid to open the RAM backing through /proc, so it must run on the
 * domain's host: other URIs (remote, other drivers) are refused per
 * domain with a status line.  The pid is cross-checked against the
 * process's command line (libvirt passes "-name guest=NAME,...").
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libvirt/virterror.h>

#include "cleanup.h"
#include "domain_xml.h"
#include "hostmem.h"
#include "log.h"
#include "loop.h"
#include "qmp.h"
#include "virt_conn.h"
#include "virt_domains.h"
#include "virt_monitor.h"
#include "vm.h"

#define VIRT_DOMAINS_MAX	4096	/* records kept */
#define VIRT_DOMAINS_INCOMING_POLL_MS	250	/* until an incoming job ends */
#define VIRT_DOMAINS_OUTGOING_POLL_MS	1000	/* until an outgoing job ends */
#define VIRT_DOMAINS_ANNOUNCE_MS	60000	/* hook "migrate" to a running domain */

enum virt_rundir {
	VIRT_RUNDIR_UNKNOWN,	/* not connected yet */
	VIRT_RUNDIR_SYSTEM,
	VIRT_RUNDIR_SESSION,
	VIRT_RUNDIR_NONE,	/* not a local qemu driver */
};

struct virt_domain {
	char name[VIRT_CONN_NAME_MAX];
	struct vm *vm;			/* NULL while unmanaged */
	pid_t pid;			/* QEMU pid while attached, else 0 */
	bool said_unmanaged;		/* the info line was logged */
	bool refresh_pending;		/* the hook said "started" */
	bool seen;			/* scratch for virt_domains_resync() */
	bool incoming;			/* started by a live migration that runs */
	bool outgoing;			/* its VM was noted migrating away */
	uint64_t announced_ms;		/* hook "migrate" came then; 0: none */
	struct virt_domain *next;
};

struct virt_domains {
	struct loop *loop;
	const struct config *cfg;
	struct vm_list *vms;
	struct virt_conn *conn;
	enum virt_rundir rundir;
	struct virt_domain *doms;
	size_t ndoms;
	struct loop_timer refresh;	/* runs refresh_pending records */
	struct loop_timer incoming;	/* refreshes incoming records */
	struct loop_timer outgoing;	/* watches outgoing records' jobs */
};

/* libvirt's job on a domain, as far as attaching goes. */
enum virt_job {
	VIRT_JOB_UNKNOWN,	/* libvirt did not say */
	VIRT_JOB_NONE,		/* none, or one a monitor command may wait out */
	VIRT_JOB_MIGRATION_IN,
	VIRT_JOB_MIGRATION_OUT,
};

/* ---- records ---------------------------------------------------------- */

static struct virt_domain *virt_domains_find(struct virt_domains *d, const char *name)
{
	for (struct virt_domain *v = d->doms; v; v = v->next)
		if (strcmp(v->name, name) == 0)
			return v;
	return NULL;
}

/* The record of `name`, created if needed; NULL if none can be kept. */
static struct virt_domain *virt_domains_get(struct virt_domains *d, const char *name)
{
	struct virt_domain *v = virt_domains_find(d, name);

	if (v)
		return v;
	if (d->ndoms >= VIRT_DOMAINS_MAX || strlen(name) >= sizeof(v->name))
		return NULL;
	v = calloc(1, sizeof(*v));
	if (!v)
		return NULL;
	strcpy(v->name, name);
	v->next = d->doms;
	d->doms = v;
	d->ndoms++;
	return v;
}

static void virt_domains_unmanaged(struct virt_domain *v, const char *name,
				   const char *why)
{
	char q[320];

	if (v && v->said_unmanaged)
		return;
	if (v)
		v->said_unmanaged = true;
	log_info("libvirt: domain %s is not managed: %s",
		 log_quote_str(name, q, sizeof(q)), why);
}

static void virt_domains_detach(struct virt_domain *v, const char *why)
{
	if (v) {
		v->incoming = v->outgoing = false;
		v->announced_ms = 0;
	}
	if (!v || !v->vm)
		return;
	v->pid = 0;
	vm_detach_monitor(v->vm, why);
}

/* ---- the QEMU pid ----------------------------------------------------- */

static enum virt_rundir virt_domains_rundir_of(virConnectPtr conn)
{
	char *uri = virConnectGetURI(conn);
	enum virt_rundir rd = VIRT_RUNDIR_NONE;

	if (!uri)
		return VIRT_RUNDIR_NONE;
	/* local qemu driver only: "qemu:///system", "qemu+unix:///system" */
	if (strncmp(uri, "qemu:", 5) == 0 || strncmp(uri, "qemu+unix:", 10) == 0) {
		const char *path = strstr(uri, ":///");

		if (path && strncmp(path + 4, "system", 6) == 0 &&
		    (path[10] == '\0' || path[10] == '?'))
			rd = VIRT_RUNDIR_SYSTEM;
		else if (path && strncmp(path + 4, "session", 7) == 0 &&
			 (path[11] == '\0' || path[11] == '?'))
			rd = VIRT_RUNDIR_SESSION;
	}
	free(uri);
	return rd;
}

/* Does /proc/PID/cmdline carry "-name guest=NAME[,...]"? */
static bool virt_domains_pid_is(pid_t pid, const char *name)
{
	char path[64], want[VIRT_CONN_NAME_MAX + 8], *text;
	size_t len, wlen;
	bool ok = false;

	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	if (hostmem_read_text(path, 1u << 20, &text, &len) < 0)
		return false;
	wlen = (size_t)snprintf(want, sizeof(want), "guest=%s", name);
	for (size_t off = 0; off < len; off += strlen(text + off) + 1) {
		const char *arg = text + off;

		if (strncmp(arg, want, wlen) == 0 && (arg[wlen] == ',' || arg[wlen] == '\0')) {
			ok = true;
			break;
		}
	}
	free(text);
	return ok;
}

static int virt_domains_pid(struct virt_domains *d, const char *name, pid_t *ret_pid,
			    char *why, size_t whysz)
{
	const char *xdg;
	char path[512], *text, *end;
	long pid;
	int r;

	switch (d->rundir) {
	case VIRT_RUNDIR_SYSTEM:
		snprintf(path, sizeof(path), "/run/libvirt/qemu/%s.pid", name);
		break;
	case VIRT_RUNDIR_SESSION:
		xdg = getenv("XDG_RUNTIME_DIR");
		if (!xdg || !*xdg) {
			snprintf(why, whysz, "qemu:///session needs XDG_RUNTIME_DIR "
				 "to find the QEMU pid");
			return -ENOENT;
		}
		snprintf(path, sizeof(path), "%s/libvirt/qemu/run/%s.pid", xdg, name);
		break;
	default:
		snprintf(why, whysz, "URI %s is not a local qemu driver: vmdefragd "
			 "must run on the domain's host", virt_conn_uri(d->conn));
		return -EOPNOTSUPP;
	}
	r = hostmem_read_text(path, 64, &text, NULL);
	if (r < 0) {
		snprintf(why, whysz, "cannot read %s: %s", path, strerror(-r));
		return r;
	}
	pid = strtol(text, &end, 10);
	r = (end != text && (*end == '\0' || *end == '\n') && pid > 1 &&
	     pid < (1L << 30)) ? 0 : -EINVAL;
	free(text);
	if (r < 0) {
		snprintf(why, whysz, "%s does not hold a pid", path);
		return r;
	}
	if (!virt_domains_pid_is((pid_t)pid, name)) {
		snprintf(why, whysz, "pid %ld from %s is not the domain's QEMU",
			 pid, path);
		return -ESRCH;
	}
	*ret_pid = (pid_t)pid;
	return 0;
}

/* ---- libvirt's job ---------------------------------------------------- */

/*
 * Is a live migration of dom running, and which way?  libvirt holds the
 * domain's job for the whole migration (post-copy included), and a
 * monitor command waits for it: on the destination until the migration
 * ends, on the source until libvirt's 30 s lock timeout.  A query of the
 * job itself does not wait.
 */
static enum virt_job virt_domains_job(virDomainPtr dom)
{
	virTypedParameterPtr params = NULL;
	int type = VIR_DOMAIN_JOB_NONE, nparams = 0, op = 0;
	enum virt_job job = VIRT_JOB_NONE;

	if (virDomainGetJobStats(dom, &type, &params, &nparams, 0) < 0) {
		/* libvirt 9.0's answer on the destination of a running
		 * migration ("available only on the source host") */
		if (virGetLastErrorCode() == VIR_ERR_OPERATION_UNSUPPORTED)
			return VIRT_JOB_MIGRATION_IN;
		log_debug("libvirt: no job stats: %s", virt_conn_last_error());
		return VIRT_JOB_UNKNOWN;
	}
	if (type != VIR_DOMAIN_JOB_NONE &&
	    virTypedParamsGetInt(params, nparams, VIR_DOMAIN_JOB_OPERATION, &op) == 1) {
		if (op == VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN)
			job = VIRT_JOB_MIGRATION_IN;
		else if (op == VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT)
			job = VIRT_JOB_MIGRATION_OUT;
	}
	virTypedParamsFree(params, nparams);
	return job;
}

static void virt_domains_incoming_later(struct virt_domains *d)
{
	if (!d->incoming.armed)
		loop_timer_arm(d->loop, &d->incoming, VIRT_DOMAINS_INCOMING_POLL_MS);
}

/*
 * The source of a migration, noted "active": a precopy aborted while the
 * guest ran (virsh domjobabort, a destination that failed) resumes nothing,
 * so no lifecycle event says it ended.  Its job does: gone while the
 * domain still runs here means failed or cancelled (on success libvirt
 * stops the domain before it ends the job).
 */
static void virt_domains_outgoing_watch(struct virt_domains *d, struct virt_domain *v)
{
	v->outgoing = true;
	if (!d->outgoing.armed)
		loop_timer_arm(d->loop, &d->outgoing, VIRT_DOMAINS_OUTGOING_POLL_MS);
}

static void virt_domains_outgoing_check(struct virt_domains *d, struct virt_domain *v)
{
	virConnectPtr conn = virt_conn_get(d->conn);
	virDomainPtr dom;
	enum virt_job job;
	int active, state = VIR_DOMAIN_NOSTATE, reason = 0;

	if (!conn || !v->vm || (!vm_migration_outgoing(v->vm) &&
				!vm_migration_postcopy_failed(v->vm))) {
		v->outgoing = false;
		return;
	}
	dom = virDomainLookupByName(conn, v->name);
	if (!dom)
		return;		/* STOPPED says how it ended */
	job = virt_domains_job(dom);
	active = virDomainIsActive(dom);
	if (virDomainGetState(dom, &state, &reason, 0) < 0)
		state = VIR_DOMAIN_NOSTATE;
	virDomainFree(dom);
	if (state == VIR_DOMAIN_PAUSED && reason == VIR_DOMAIN_PAUSED_POSTCOPY_FAILED) {
		vm_migration_note(v->vm, "postcopy-paused");
	} else if (state == VIR_DOMAIN_PAUSED && reason == VIR_DOMAIN_PAUSED_POSTCOPY) {
		vm_migration_note(v->vm, "postcopy-active");
	} else if (job == VIRT_JOB_NONE && active == 1 &&
		   vm_migration_outgoing(v->vm)) {
		v->outgoing = false;
		log_info("VM '%s': libvirt's outgoing migration job ended with the "
			 "domain still running here", v->name);
		vm_migration_note(v->vm, "cancelled");
		return;
	}
	virt_domains_outgoing_watch(d, v);
}

/* ---- refresh ---------------------------------------------------------- */

/*
 * A running, managed domain we could not attach (its pid file, a monitor
 * command that timed out): one more try after reconnect_max_ms, and again
 * until it works or the domain stops.
 */
static void virt_domains_retry_later(struct virt_domains *d, struct virt_domain *v)
{
	v->refresh_pending = true;
	if (!d->refresh.armed)
		loop_timer_arm(d->loop, &d->refresh, d->cfg->reconnect_max_ms);
}

/* The VM of record v, created on first use; NULL (said why) if none. */
static struct vm *virt_domains_vm(struct virt_domains *d, struct virt_domain *v,
				  const char *channel)
{
	struct config_vm conf = d->cfg->libvirt_defaults;
	struct vm *vm;
	int r;

	if (v->vm)
		return v->vm;
	strcpy(conf.name, v->name);	/* config_vm_name_ok() checked it fits */
	conf.qmp[0] = '\0';
	snprintf(conf.channel, sizeof(conf.channel), "%s", channel);
	r = vm_new_libvirt(d->loop, d->cfg, &conf, &vm);
	if (r == 0) {
		r = vm_list_add(d->vms, vm);
		if (r < 0)
			vm_free(vm);
	}
	if (r < 0) {
		log_error_errno(r, "libvirt: domain '%s': cannot create its VM: %m",
				v->name);
		return NULL;
	}
	v->vm = vm;
	return vm;
}

/*
 * A domain found paused after its post-copy failed (the daemon restarted
 * meanwhile; libvirt may still hold its migration job for a resume) is
 * noted so before anything runs, attached or not, and watched.
 */
static void virt_domains_split(struct virt_domains *d, struct virt_domain *v,
			       virDomainPtr dom)
{
	int state = VIR_DOMAIN_NOSTATE, reason = 0;

	if (virDomainGetState(dom, &state, &reason, 0) < 0 ||
	    state != VIR_DOMAIN_PAUSED || reason != VIR_DOMAIN_PAUSED_POSTCOPY_FAILED)
		return;
	vm_migration_note(v->vm, "postcopy-paused");
	virt_domains_outgoing_watch(d, v);
}

CLEANUP_DEFINE(virt_domains_dom_freep, virDomainPtr, virDomainFree)

/* Takes dom.  Attaches the domain's VM if it runs and is usable. */
static void virt_domains_refresh_dom(struct virt_domains *d, virDomainPtr dom_in)
{
	_cleanup_(virt_domains_dom_freep) virDomainPtr dom = dom_in;
	_cleanup_free_ struct domain_xml *x = NULL;
	_cleanup_free_ char *xml = NULL;
	const char *name = virDomainGetName(dom);
	struct virt_domain *v;
	struct vm *vm, *other;
	struct qmp *q;
	char why[1024];
	enum virt_job job;
	virDomainPtr q_dom;
	bool arrived;
	pid_t pid = 0;
	int r;

	if (!name)
		return;
	v = virt_domains_get(d, name);
	if (!v) {
		char nq[320];

		log_debug("libvirt: no record for domain %s (too many), ignoring",
			  log_quote_str(name, nq, sizeof(nq)));
		return;
	}
	v->refresh_pending = false;
	v->seen = true;
	v->announced_ms = 0;
	if (virDomainIsActive(dom) != 1) {
		virt_domains_detach(v, "domain is not running");
		return;
	}
	if (!config_vm_name_ok(name)) {
		virt_domains_unmanaged(v, name, "its name is not a valid VM name "
				       "(1-63 of A-Z a-z 0-9 _ - .)");
		return;
	}
	other = vm_list_find(d->vms, name);
	if (other && !vm_is_libvirt(other)) {
		virt_domains_unmanaged(v, name, "a --vm of the same name wins");
		return;
	}
	xml = virDomainGetXMLDesc(dom, 0);
	x = calloc(1, sizeof(*x));
	if (!xml || !x) {
		log_warning("libvirt: domain '%s': cannot read its XML: %s", name,
			    virt_conn_last_error());
		return;
	}
	r = domain_xml_parse(xml, strlen(xml), x, why, sizeof(why));
	if (r < 0) {
		virt_domains_unmanaged(v, name, why);
		return;
	}
	if (!domain_xml_channel_ok(x) || !x->channel_path[0]) {
		virt_domains_unmanaged(v, name, "no unix channel "
				       DOMAIN_XML_CHANNEL " in its XML");
		return;
	}
	v->said_unmanaged = false;
	vm = virt_domains_vm(d, v, x->channel_path);
	if (!vm)
		return;
	job = virt_domains_job(dom);
	if (job == VIRT_JOB_MIGRATION_IN) {
		/* no monitor until it ends: a command would wait for it */
		if (vm_monitor_attached(vm))
			virt_domains_detach(v, "the domain is replaced by an "
					    "incoming live migration");
		v->incoming = true;
		vm_migration_expect_incoming(vm);
		virt_domains_incoming_later(d);
		return;
	}
	if (job == VIRT_JOB_MIGRATION_OUT && !vm_monitor_attached(vm)) {
		if (!vm_migration_postcopy_failed(vm))
			log_info("VM '%s': the domain migrates away; not attaching "
				 "during its migration", name);
		virt_domains_split(d, v, dom);
		virt_domains_retry_later(d, v);
		return;
	}
	/* an incoming record stays so until attached: a retry notes it */
	arrived = v->incoming;
	r = virt_domains_pid(d, name, &pid, why, sizeof(why));
	if (r < 0) {
		log_warning("VM '%s': cannot attach: %s", name, why);
		virt_domains_detach(v, why);
		if (r != -EOPNOTSUPP)
			virt_domains_retry_later(d, v);
		return;
	}
	if (v->pid == pid && vm_monitor_attached(vm))
		return;			/* nothing changed */
	r = virt_monitor_open(dom, &q);
	if (r < 0)
		return;
	q_dom = TAKE_PTR(dom);		/* the qmp owns it now */
	r = vm_attach_monitor(vm, q, pid, x->channel_path);
	if (r < 0) {
		log_warning_errno(r, "VM '%s': cannot attach through libvirt: %m; "
				  "retrying in %u ms", name, d->cfg->reconnect_max_ms);
		v->pid = 0;
		virt_domains_retry_later(d, v);
		return;
	}
	v->pid = pid;
	v->incoming = false;
	if (arrived && vm_migration_incoming(vm))
		vm_migration_note(vm, "completed");
	if (!arrived)
		virt_domains_split(d, v, q_dom);
}

static void virt_domains_refresh_name(struct virt_domains *d, const char *name)
{
	virConnectPtr conn = virt_conn_get(d->conn);
	virDomainPtr dom;

	if (!conn)
		return;
	dom = virDomainLookupByName(conn, name);
	if (!dom) {
		struct virt_domain *v = virt_domains_find(d, name);

		if (v)
			v->refresh_pending = false;
		if (v && v->announced_ms &&
		    loop_now_ms() - v->announced_ms < VIRT_DOMAINS_ANNOUNCE_MS) {
			virt_domains_incoming_later(d);	/* not there yet */
			return;
		}
		virt_domains_detach(v, v && v->announced_ms ? "the incoming "
				    "migration the hook announced did not come" :
				    "domain is not running");
		return;
	}
	virt_domains_refresh_dom(d, dom);
}

/* Every active domain refreshed; attached VMs of vanished domains detached. */
static void virt_domains_resync(void *userdata)
{
	struct virt_domains *d = userdata;
	virConnectPtr conn = virt_conn_get(d->conn);
	virDomainPtr *list = NULL;
	int n;

	if (!conn)
		return;
	n = virConnectListAllDomains(conn, &list, VIR_CONNECT_LIST_DOMAINS_ACTIVE);
	if (n < 0) {
		log_warning("libvirt: cannot list domains: %s; waiting for events",
			    virt_conn_last_error());
		return;
	}
	for (struct virt_domain *v = d->doms; v; v = v->next)
		v->seen = false;
	for (int i = 0; i < n; i++)
		virt_domains_refresh_dom(d, list[i]);	/* takes list[i] */
	free(list);
	for (struct virt_domain *v = d->doms; v; v = v->next)
		if (!v->seen && !(v->announced_ms && loop_now_ms() - v->announced_ms <
				  VIRT_DOMAINS_ANNOUNCE_MS))
			virt_domains_detach(v, "domain is not running");
}

/* ---- virt_conn hooks -------------------------------------------------- */

static void virt_domains_connected(void *userdata, virConnectPtr conn)
{
	struct virt_domains *d = userdata;

	d->rundir = virt_domains_rundir_of(conn);
	if (d->rundir == VIRT_RUNDIR_NONE)
		log_warning("libvirt: %s is not a local qemu driver; domains "
			    "cannot be attached (their QEMU pid is not known here)",
			    virt_conn_uri(d->conn));
	virt_domains_resync(d);
}

static void virt_domains_disconnected(void *userdata)
{
	struct virt_domains *d = userdata;

	for (struct virt_domain *v = d->doms; v; v = v->next)
		virt_domains_detach(v, "libvirt connection lost");
}

static void virt_domains_event(void *userdata, const char *name, int event, int detail)
{
	struct virt_domains *d = userdata;
	struct virt_domain *v;
	char q[320];

	log_debug("libvirt: domain %s event %d detail %d",
		  log_quote_str(name, q, sizeof(q)), event, detail);
	v = virt_domains_find(d, name);
	if (event == VIRT_CONN_EVENT_DEVICE) {
		/* memory hot-plug: the VM reads its RAM layout again */
		if (v && v->vm)
			vm_layout_changed(v->vm);
		return;
	}
	if (event == VIR_DOMAIN_EVENT_STARTED &&
	    detail == VIR_DOMAIN_EVENT_STARTED_MIGRATED) {
		/* the destination: wait for the job, never through the monitor */
		v = virt_domains_get(d, name);
		if (v)
			v->incoming = true;
		virt_domains_refresh_name(d, name);
		return;
	}
	if (v && v->incoming) {
		/* RESUMED/POSTCOPY (switch-over), RESUMED/MIGRATED (finish):
		 * the job may still run; the refresh looks */
		if (v->vm && event == VIR_DOMAIN_EVENT_RESUMED &&
		    detail == VIR_DOMAIN_EVENT_RESUMED_POSTCOPY)
			vm_migration_note(v->vm, "postcopy-active");
		if (event == VIR_DOMAIN_EVENT_STOPPED)
			virt_domains_detach(v, "the incoming migration failed");
		else
			virt_domains_refresh_name(d, name);
		return;
	}
	/* libvirt's monitor carries no QMP events: the migration's phases */
	if (v && v->vm && (event == VIRT_CONN_EVENT_MIGRATING ||
			   (event == VIR_DOMAIN_EVENT_SUSPENDED &&
			    (detail == VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED ||
			     detail == VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY)))) {
		/* a pass (precopy runs), or the switch-over */
		vm_migration_note(v->vm, event == VIR_DOMAIN_EVENT_SUSPENDED &&
				  detail == VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY ?
				  "postcopy-active" : "active");
		if (vm_migration_outgoing(v->vm))
			virt_domains_outgoing_watch(d, v);
	}
	else if (v && v->vm && event == VIR_DOMAIN_EVENT_SUSPENDED &&
		 detail == VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY_FAILED) {
		/* the source of a post-copy that broke: paused, split */
		vm_migration_note(v->vm, "postcopy-paused");
		if (vm_migration_postcopy_failed(v->vm))
			virt_domains_outgoing_watch(d, v);
	}
	else if (v && v->vm && event == VIR_DOMAIN_EVENT_RESUMED &&
		 detail == VIR_DOMAIN_EVENT_RESUMED_MIGRATED)
		vm_migration_note(v->vm, "failed");	/* the source resumes */
	else if (v && v->vm && event == VIR_DOMAIN_EVENT_STOPPED &&
		 detail == VIR_DOMAIN_EVENT_STOPPED_MIGRATED)
		vm_migration_note(v->vm, "completed");
	switch (event) {
	case VIR_DOMAIN_EVENT_STARTED:
	case VIR_DOMAIN_EVENT_RESUMED:
		virt_domains_refresh_name(d, name);
		break;
	case VIR_DOMAIN_EVENT_STOPPED:
		virt_domains_detach(virt_domains_find(d, name),
				    detail == VIR_DOMAIN_EVENT_STOPPED_MIGRATED ?
				    "domain migrated away" : "domain is not running");
		break;
	default:
		break;
	}
}

static const struct virt_conn_hooks virt_domains_hooks = {
	.connected = virt_domains_connected,
	.disconnected = virt_domains_disconnected,
	.domain_event = virt_domains_event,
	.resync = virt_domains_resync,
};

/* ---- the hook's notify ------------------------------------------------ */

static void virt_domains_refresh_timer(struct loop_timer *t)
{
	struct virt_domains *d = t->userdata;

	for (struct virt_domain *v = d->doms; v; v = v->next)
		if (v->refresh_pending)
			virt_domains_refresh_name(d, v->name);	/* clears it */
}

static void virt_domains_outgoing_timer(struct loop_timer *t)
{
	struct virt_domains *d = t->userdata;

	for (struct virt_domain *v = d->doms; v; v = v->next)
		if (v->outgoing)
			virt_domains_outgoing_check(d, v);	/* re-arms */
}

/* Domains arriving by migration: attached once libvirt's job ended. */
static void virt_domains_incoming_timer(struct loop_timer *t)
{
	struct virt_domains *d = t->userdata;

	for (struct virt_domain *v = d->doms; v; v = v->next) {
		if (v->incoming)
			virt_domains_refresh_name(d, v->name);	/* re-arms */
		else if (v->announced_ms &&
			 loop_now_ms() - v->announced_ms >= VIRT_DOMAINS_ANNOUNCE_MS)
			virt_domains_refresh_name(d, v->name);	/* came, or drop */
		else if (v->announced_ms)
			virt_domains_incoming_later(d);
	}
}

/*
 * The hook's "migrate": the domain arrives here by live migration, and its
 * QEMU does not exist yet.  No libvirt call (the hook waits for us).
 */
static void virt_domains_announce(struct virt_domains *d, const char *domain)
{
	struct virt_domain *v;
	struct vm *other;
	char q[320];

	if (!config_vm_name_ok(domain)) {
		log_info("libvirt hook: migrate of domain %s: not a valid VM name, "
			 "ignoring", log_quote_str(domain, q, sizeof(q)));
		return;
	}
	other = vm_list_find(d->vms, domain);
	if (other && !vm_is_libvirt(other)) {
		log_info("libvirt hook: migrate of domain '%s': a --vm of the same "
			 "name wins, ignoring", domain);
		return;
	}
	v = virt_domains_get(d, domain);
	if (!v)
		return;
	if (v->vm && vm_monitor_attached(v->vm) && !vm_migration_incoming(v->vm)) {
		/* libvirt does not migrate a domain to a host where it runs */
		log_warning("libvirt hook: migrate of domain '%s', which runs here "
			    "attached, ignoring", domain);
		return;
	}
	/* the channel comes with the live XML when the domain is attached */
	if (!virt_domains_vm(d, v, ""))
		return;
	v->announced_ms = loop_now_ms();
	if (!v->announced_ms)
		v->announced_ms = 1;
	vm_migration_expect_incoming(v->vm);
	virt_domains_incoming_later(d);
}

void virt_domains_notify(void *userdata, const char *domain,
			 enum ctl_notify_event event)
{
	struct virt_domains *d = userdata;
	struct virt_domain *v;
	char q[320];

	log_info("libvirt hook: domain %s %s", log_quote_str(domain, q, sizeof(q)),
		 ctl_proto_notify_name(event));
	switch (event) {
	case CTL_NOTIFY_PREPARE:
		break;
	case CTL_NOTIFY_MIGRATE:
		virt_domains_announce(d, domain);
		break;
	case CTL_NOTIFY_STARTED:
		v = virt_domains_get(d, domain);
		if (!v)
			break;
		v->refresh_pending = true;
		loop_timer_arm(d->loop, &d->refresh, 0);
		break;
	case CTL_NOTIFY_STOPPED:
	case CTL_NOTIFY_RELEASE:
		v = virt_domains_find(d, domain);
		/* the source's QEMU stops before libvirt's STOPPED/MIGRATED
		 * says how the migration ended: that event detaches */
		if (v && v->vm && vm_migration_outgoing(v->vm)) {
			log_debug("libvirt hook: '%s' migrates away; waiting for "
				  "libvirt's lifecycle event", v->name);
			break;
		}
		virt_domains_detach(v, "domain is not running");
		break;
	}
}

/* ---- lifetime --------------------------------------------------------- */

int virt_domains_new(struct loop *loop, const struct config *cfg,
		     struct vm_list *vms, struct virt_domains **ret_domains)
{
	struct virt_domains *d;
	int r;

	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->loop = loop;
	d->cfg = cfg;
	d->vms = vms;
	loop_timer_init(&d->refresh, virt_domains_refresh_timer, d);
	loop_timer_init(&d->incoming, virt_domains_incoming_timer, d);
	loop_timer_init(&d->outgoing, virt_domains_outgoing_timer, d);
	r = virt_conn_new(loop, cfg->libvirt_uri, cfg->reconnect_min_ms,
			  cfg->reconnect_max_ms, &virt_domains_hooks, d, &d->conn);
	if (r < 0) {
		free(d);
		return r;
	}
	*ret_domains = d;
	return 0;
}

void virt_domains_start(struct virt_domains *d)
{
	virt_conn_start(d->conn);
}

void virt_domains_free(struct virt_domains *d)
{
	if (!d)
		return;
	loop_timer_disarm(d->loop, &d->refresh);
	loop_timer_disarm(d->loop, &d->incoming);
	loop_timer_disarm(d->loop, &d->outgoing);
	/* detaches every VM (through the disconnected hook) before closing */
	virt_conn_free(d->conn);
	while (d->doms) {
		struct virt_domain *v = d->doms;

		d->doms = v->next;
		free(v);
	}
	free(d);
}
