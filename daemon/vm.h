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
#include "policy.h"
#include "reclaim.h"
#include "vm_counters.h"
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

/* Its last operations (vmdefragctl history), oldest first; how many. */
size_t vm_get_history(struct vm *vm, struct vm_history_entry *ret_entries,
		      size_t max);

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
 * Block map.  vm_map_request() sends one REQ_MAP (first block, at most max
 * blocks): -EOPNOTSUPP if the guest did not offer PROTO_FEAT_MAP,
 * -ENOTCONN / -EBUSY as vm_scan().  fn gets the validated RESP_MAP (its
 * first_block is the one asked for) or a negative errno with resp NULL;
 * resp is valid only during the call.
 */
typedef void (*vm_map_fn)(void *userdata, int status, const struct proto_msg *resp);
int vm_map_request(struct vm *vm, uint64_t first, uint32_t max, vm_map_fn fn,
		   void *userdata, uint32_t *ret_id);

/* The host's view of each block, for the block map. */
#define VM_HOST_RAM		0x01u	/* guest RAM in QEMU's layout */
#define VM_HOST_CAPTURED	0x02u	/* held by the guest for the host */
#define VM_HOST_RECLAIMED	0x04u	/* and its backing freed */
#define VM_HOST_HUGE		0x08u	/* backed by one 2 MiB host folio */
/*
 * Fills ret_flags[0..n) with VM_HOST_* of blocks first..first+n.  Huge is
 * measured when the daemon may read QEMU's pagemap (root); *ret_huge_known
 * says whether it could.  -ENODATA when QEMU is not attached.
 */
int vm_host_blocks(struct vm *vm, uint64_t first, uint64_t n, uint8_t *ret_flags,
		   bool *ret_huge_known);

/*
 * Starts a reclaim or return of bytes on this VM (reclaim_start()): 0 and
 * the operation's id, or a negative errno with one line in err.
 */
int vm_start_op(struct vm *vm, enum reclaim_kind kind, uint64_t bytes, int evict,
		enum reclaim_origin origin, char *err, size_t errsz,
		uint32_t *ret_id);
/*
 * vmdefragctl policy: the VM's policy mode, persisted in the state_dir
 * (policy_vm_set_mode()); -errno with one line in err.
 */
int vm_set_policy(struct vm *vm, enum policy_mode mode, char *err, size_t errsz);
/* Operation `id` if it runs, is the last one, or the last reclaim/return; else -ENOENT. */
int vm_get_op(struct vm *vm, uint32_t id, struct reclaim_op_info *ret_op);
/* Stops the running reclaim / return (id, or 0: any): reclaim_cancel(). */
int vm_cancel_op(struct vm *vm, uint32_t id, uint32_t *ret_id);

#endif /* VDF_VM_H */
