/* SPDX-License-Identifier: GPL-2.0 */
/*
 * migration.h - one VM's live migration as the daemon follows it (prefix
 * migration_): the source side (hold operations, mark the VM migrated
 * away) and the destination side (wait, then let the guest session
 * reconcile and run a collapse pass).  See migration.c for the states.
 */
#ifndef VDF_MIGRATION_H
#define VDF_MIGRATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <json-c/json.h>

#include "collapse.h"
#include "qmp.h"
#include "reclaim.h"

struct loop;
struct qmp;
struct worker_job;
struct reclaim;
struct session;
struct vm_layout;
struct migration;

enum migration_state {
	MIGRATION_NONE,		/* no migration known: normal operation */
	MIGRATION_OUTGOING,	/* QEMU is sending the VM away */
	MIGRATION_AWAY,		/* sent: the guest runs on another host */
	MIGRATION_INCOMING,	/* QEMU runs with -incoming: the VM arrives */
	MIGRATION_ARRIVED,	/* the incoming migration completed here */
	MIGRATION_POSTCOPY_FAILED,	/* an outgoing post-copy broke: the
					 * guest's RAM is split between both
					 * hosts; nothing is touched until the
					 * migration resumes or QEMU goes */
};

#define MIGRATION_QEMU_STATUS_MAX	24
#define MIGRATION_NOTE_MAX		160

struct migration_status {
	enum migration_state state;
	char qemu_status[MIGRATION_QEMU_STATUS_MAX];	/* QEMU's last, "" if none */
	uint64_t since_ms;		/* time in this state */
	uint32_t outgoing;		/* outgoing migrations seen since daemon start */
	char last_outcome[MIGRATION_NOTE_MAX];	/* the last that ended, "" if none */
	bool postcopy;			/* the current or last migration switched
					 * to post-copy (as far as seen) */
	/* the attached QEMU (query-version), if it answered */
	bool qemu_known;
	bool qemu_patched;		/* built with qemu-patches/ */
	int qemu_version;		/* major*10000 + minor*100 + micro */
	char qemu_package[QMP_PACKAGE_MAX];
	/* ARRIVED only */
	bool reconciled;		/* the guest session reconciled since arrival */
	uint64_t reconcile_listed_bytes;	/* blocks the guest holds captured */
	uint64_t reconcile_punched_bytes;	/* backing the reconcile freed */
	struct collapse_status collapse;
};

int migration_new(struct loop *loop, const char *vm_name, struct session *session,
		  struct reclaim *reclaim, uint32_t collapse_cpu_percent,
		  struct migration **ret_m);
void migration_free(struct migration *m);
/* A config reload: the collapse pass's CPU share from now on. */
void migration_set_collapse_cpu_percent(struct migration *m, uint32_t cpu_percent);

/*
 * What QEMU says at attach: which QEMU (query-version) and, on a socket
 * monitor, its run state, its migration's status and whether its
 * MIGRATION events could be turned on.  migration_probe() asks, on any
 * thread that may use q (the VM's attach job: a worker), and logs nothing;
 * migration_attach() takes the answers on the loop.
 */
struct migration_probe {
	int version_r;			/* 0, or query-version's errno */
	struct qmp_version ver;
	bool asked;			/* a socket monitor: the rest was asked */
	char run[32];			/* query-status, "" if it failed */
	char mig[MIGRATION_QEMU_STATUS_MAX];	/* query-migrate, "none" */
	int events_r;			/* migrate-set-capabilities events */
	char events_error[160];		/* QMP's error when events_r < 0 */
};

void migration_probe(struct qmp *q, struct migration_probe *ret_probe);

/*
 * QEMU was attached (q, its layout l and pid stay valid until
 * migration_detach()): from the probe, whether QEMU migrates, and in which
 * direction.  q may be a custom transport (libvirt): then nothing is
 * polled, migration_note() informs.
 */
void migration_attach(struct migration *m, struct qmp *q, const struct vm_layout *l,
		      pid_t pid, const struct migration_probe *p);

/*
 * How a poll of query-migrate reaches the VM's monitor without the loop
 * waiting for it (vm.c provides these; without them a poll runs inline):
 *   submit     queue job on the VM's monitor queue, the monitor lent to
 *              it; 0, or a negative errno and nothing queued
 *   events     in the job's done(): the monitor's events read so far
 *              (those QEMU sent before the poll's reply) are handled
 *   give_back  last thing in the job's done(): the monitor is the VM's
 *              again (it reads what came since; it may detach the VM)
 * A job of a monitor dropped meanwhile is cancelled, and its
 * migration_detach() follows.
 */
struct migration_monitor_ops {
	int (*submit)(void *opaque, struct worker_job *job);
	void (*events)(void *opaque);
	void (*give_back)(void *opaque);
};

void migration_set_monitor_ops(struct migration *m,
			       const struct migration_monitor_ops *ops, void *opaque);
void migration_detach(struct migration *m);
/* A QMP event from the VM's monitor (any; the ones that matter are used). */
void migration_qmp_event(struct migration *m, struct json_object *ev);
/*
 * A migration status learnt elsewhere (libvirt's lifecycle events): one of
 * QEMU's MigrationStatus names ("active", "completed", "failed", ...).
 * "postcopy-paused" is how libvirt's "post-copy failed" is noted.
 */
void migration_note(struct migration *m, const char *qemu_status);

/*
 * libvirt started the domain as the destination of a live migration (its
 * lifecycle event STARTED/MIGRATED): INCOMING, the guest session held,
 * with or without a monitor attached.  migration_note("completed") after
 * the monitor is attached lets the session reconcile and the collapse
 * pass run; a detach ends it.
 */
void migration_expect_incoming(struct migration *m);
/* INCOMING: QEMU waits for or receives a migration. */
bool migration_incoming(const struct migration *m);

/* OUTGOING: QEMU sends the VM away. */
bool migration_outgoing(const struct migration *m);
enum migration_state migration_state(const struct migration *m);

/*
 * The guest took [gpa, gpa+len) back and reclaim.c re-backed it: after a
 * migration in (ARRIVED), the collapse pass's work is redone there
 * (collapse_queue()), since post-copy left QEMU's mapping of that range
 * with 4 KiB entries.  Nothing otherwise.
 */
void migration_guest_released(struct migration *m, uint64_t gpa, uint64_t len);
/*
 * An operation started (reclaim.c): after a migration in, when a return
 * ends, the whole RAM is queued for a re-collapse (the blocks it re-backed
 * are not known here; a range already 2 MiB-mapped costs little).
 */
void migration_op_started(struct migration *m, enum reclaim_kind kind);

/* Should the guest session stay stopped (incoming, migrated away)? */
bool migration_holds_session(const struct migration *m);
/*
 * May a reclaim or return start now?  0, or -EBUSY with one line in err.
 */
int migration_check_op(const struct migration *m, char *err, size_t errsz);

void migration_get_status(const struct migration *m, struct migration_status *ret_st);
const char *migration_state_name(enum migration_state state);

#endif /* VDF_MIGRATION_H */
