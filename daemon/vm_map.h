/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vm_map.h - one VM's block map, the guest's view and the host's side by
 * side (prefix vm_map_): what vmdefragctl map draws.
 */
#ifndef VDF_VM_MAP_H
#define VDF_VM_MAP_H

#include <stdbool.h>
#include <stdint.h>

#include "vmdefrag/proto.h"

struct vm;
struct vm_map;

/* Most blocks one map holds (512 GiB of guest-physical space): its JSON
 * stays well inside CTL_RESPONSE_MAX. */
#define VM_MAP_MAX_BLOCKS	(1u << 18)
/* Distinct slab cache names over all frames of one map. */
#define VM_MAP_MAX_NAMES	254

struct vm_map_result {
	uint64_t nblocks;		/* blocks 0..nblocks: gpa 0 to the RAM's end */
	uint8_t *guest;			/* VMDEFRAG_MAP_BYTE() per block */
	uint8_t *slab;			/* index into names, or PROTO_MAP_NO_SLAB */
	uint8_t *host;			/* VM_HOST_* per block */
	bool huge_known;		/* VM_HOST_HUGE was measured */
	uint32_t nnames;
	char names[VM_MAP_MAX_NAMES][PROTO_NAME_LEN];
};

/*
 * Called once: status 0 and the map (valid during the call), or a
 * negative errno: -EOPNOTSUPP (the guest cannot map), -ENOTCONN,
 * -ECONNRESET (session dropped), -E2BIG (more than VM_MAP_MAX_BLOCKS),
 * -ENODATA (QEMU not attached), or the guest's own errno.
 */
typedef void (*vm_map_done_fn)(void *userdata, int status,
			       const struct vm_map_result *map);

/*
 * Asks the guest for its blocks, a frame at a time, then adds the host's
 * view.  The first request is sent before this returns: a failure to send
 * it is returned here, and fn is not called then.
 */
int vm_map_start(struct vm *vm, vm_map_done_fn fn, void *userdata,
		 struct vm_map **ret_map);
/* Forgets a map in progress (its requester left); fn is not called again. */
void vm_map_abort(struct vm_map *m);

#endif /* VDF_VM_MAP_H */
