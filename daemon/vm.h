/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vm.h - one VM as the daemon manages it (prefix vm_): its QEMU monitor,
 * RAM layout and backing, its guest session, and what the guest last
 * reported.
 */
#ifndef VDF_VM_H
#define VDF_VM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "ctl_proto.h"
#include "reclaim.h"
#include "vmdefrag/proto.h"

struct loop;
struct qmp;
struct vm;

/*
 * The daemon's VMs.  It only grows: a VM lives as long as the daemon, so
 * a control client never holds a freed one.
 */
struct vm_list {
	struct vm **v;
	size_t n, cap;
};

int vm_list_add(struct vm_list *l, struct vm *vm);
struct vm *vm_list_find(const struct vm_list *l, const char *name);
/* Frees every VM and the array. */
void vm_list_free(struct vm_list *l);

int vm_new(struct loop *loop, const struct config *cfg,
	   const struct config_vm *conf, struct vm **ret_vm);
void vm_free(struct vm *vm);
/*
 * A config reload: the limits that may change while the VM runs (floor,
 * max_reclaim, rates, request timeout, reconnect backoff, the collapse
 * pass's CPU share) from conf and cfg; name, qmp and channel stay.
 */
void vm_apply_config(struct vm *vm, const struct config *cfg,
		     const struct config_vm *conf);

/* Attaches to QEMU (retrying with backoff) and starts the guest session. */
void vm_start(struct vm *vm);

/*
 * A VM whose monitor and channel come from libvirt (conf->qmp and
 * conf->channel may be empty): vm_start() does nothing for it; its owner
 * calls vm_attach_monitor() when the domain runs and vm_detach_monitor()
 * when it stops.  It reports "not running" in between.
 */
int vm_new_libvirt(struct loop *loop, const struct config *cfg,
		   const struct config_vm *conf, struct vm **ret_vm);
bool vm_is_libvirt(const struct vm *vm);
/*
 * Attaches to a running QEMU through q (always taken over, closed on
 * failure): discovers the RAM layout with QEMU pid `pid`, then (re)starts
 * the guest session on `channel`.  A previous attachment is dropped first.
 * On failure the reason is in the VM's status and returned.
 */
int vm_attach_monitor(struct vm *vm, struct qmp *q, pid_t pid, const char *channel);
/* Drops the monitor and the guest session; `why` shows in status. */
void vm_detach_monitor(struct vm *vm, const char *why);
bool vm_monitor_attached(const struct vm *vm);
/*
 * QEMU's RAM may have changed (memory hot-plug: a QMP event, a libvirt
 * device event): the layout is discovered again soon, at most once per
 * second; no-op while detached.
 */
void vm_layout_changed(struct vm *vm);

const char *vm_name(const struct vm *vm);

/*
 * A live migration status learnt outside QMP (libvirt's lifecycle events):
 * one of QEMU's MigrationStatus names (migration.c).
 */
void vm_migration_note(struct vm *vm, const char *qemu_status);
/* libvirt started the domain as a migration's destination (migration.h). */
void vm_migration_expect_incoming(struct vm *vm);
/* Waiting for an incoming migration to complete? */
bool vm_migration_incoming(const struct vm *vm);
/* Sending the VM away (a live migration from here)? */
bool vm_migration_outgoing(const struct vm *vm);
/* Its outgoing post-copy failed (the guest is split between two hosts)? */
bool vm_migration_postcopy_failed(const struct vm *vm);

/* Fills *ret_status from the VM's state and fresh host measurements. */
void vm_get_status(struct vm *vm, struct ctl_vm_status *ret_status);

/*
 * Result of vm_scan(): status 0 and the guest's picture, or a negative
 * errno (-ECONNRESET session dropped, or the guest's own status) with
 * scan and slabs NULL.  census: the slab-eviction census, NULL when the
 * guest sent none (protocol version 1, or a module without it).  Valid
 * only during the call.
 */
typedef void (*vm_scan_fn)(void *userdata, int status,
			   const struct proto_scan_resp *scan,
			   const struct proto_slab *slabs,
			   const struct proto_scan_census *census);

/*
 * Sends REQ_SCAN to the guest.  -ENOTCONN if its session is not ready,
 * -EBUSY if its queue is full.  *ret_id is for vm_scan_cancel().
 */
int vm_scan(struct vm *vm, vm_scan_fn fn, void *userdata, uint32_t *ret_id);
/* fn will not be called for request id. */
void vm_scan_cancel(struct vm *vm, uint32_t id);

/*
 * Starts a reclaim or return of bytes on this VM (reclaim_start()): 0 and
 * the operation's id, or a negative errno with one line in err.
 */
int vm_start_op(struct vm *vm, enum reclaim_kind kind, uint64_t bytes, int evict,
		char *err,
		size_t errsz, uint32_t *ret_id);
/* Operation `id` if it runs, is the last one, or the last reclaim/return; else -ENOENT. */
int vm_get_op(struct vm *vm, uint32_t id, struct reclaim_op_info *ret_op);
/* Stops the running reclaim / return (id, or 0: any): reclaim_cancel(). */
int vm_cancel_op(struct vm *vm, uint32_t id, uint32_t *ret_id);

#endif /* VDF_VM_H */
