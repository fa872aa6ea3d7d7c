/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vm.h - one VM as the daemon manages it (prefix vm_): its QEMU monitor,
 * RAM layout and backing, its guest session, and what the guest last
 * reported.
 */
#ifndef VDF_VM_H
#define VDF_VM_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "ctl_proto.h"
#include "reclaim.h"
#include "vmdefrag/proto.h"

struct loop;
struct vm;

int vm_new(struct loop *loop, const struct config *cfg,
	   const struct config_vm *conf, struct vm **ret_vm);
void vm_free(struct vm *vm);

/* Attaches to QEMU (retrying with backoff) and starts the guest session. */
void vm_start(struct vm *vm);

const char *vm_name(const struct vm *vm);

/* Fills *ret_status from the VM's state and fresh host measurements. */
void vm_get_status(struct vm *vm, struct ctl_vm_status *ret_status);

/*
 * Result of vm_scan(): status 0 and the guest's picture, or a negative
 * errno (-ECONNRESET session dropped, or the guest's own status) with
 * scan and slabs NULL.  Valid only during the call.
 */
typedef void (*vm_scan_fn)(void *userdata, int status,
			   const struct proto_scan_resp *scan,
			   const struct proto_slab *slabs);

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
int vm_start_op(struct vm *vm, enum reclaim_kind kind, uint64_t bytes, char *err,
		size_t errsz, uint32_t *ret_id);
/* The running or last operation, if its id is `id`; else -ENOENT. */
int vm_get_op(struct vm *vm, uint32_t id, struct reclaim_op_info *ret_op);

#endif /* VDF_VM_H */
