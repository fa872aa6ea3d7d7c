// SPDX-License-Identifier: GPL-2.0
/*
 * vm_map.c - collects a VM's block map for vmdefragctl map.
 *
 * The guest answers REQ_MAP one frame of at most PROTO_MAP_MAX_BLOCKS
 * blocks at a time (each a fresh scan of those blocks), so a map is a
 * short sequence of requests, each sent from the previous one's answer:
 *
 *   ASKING  REQ_MAP { first = next, max } in flight; its answer's blocks
 *           are copied in, its slab names merged into one table (each
 *           frame numbers its caches afresh), and next = first + nblocks;
 *           while next < end_block, ask again;
 *   DONE    the host's view is added (vm_host_blocks(): captured,
 *           reclaimed, huge-mapped) and the requester called, once.
 *
 * end_block comes from the guest: it is bounded by PROTO_MAP_MAX_END in
 * the codec and here by VM_MAP_MAX_BLOCKS, and a frame that makes no
 * progress (nblocks 0 before the end) ends the map with -EPROTO.
 *
 * A requester that leaves (vm_map_abort()) orphans the map: the request in
 * flight still gets its answer, or fails with the session, and that frees
 * it; nothing more is asked.
 *
 * Single-threaded, on the loop's thread.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "vm.h"
#include "vm_map.h"

struct vm_map {
	struct vm *vm;
	vm_map_done_fn fn;
	void *userdata;
	uint32_t req_id;		/* REQ_MAP in flight */
	bool orphan;			/* requester gone: free at the answer */
	uint64_t next;			/* first block of the next request */
	struct vm_map_result res;
	uint64_t cap;			/* blocks allocated in res */
};

static void vm_map_free(struct vm_map *m)
{
	free(m->res.guest);
	free(m->res.slab);
	free(m->res.host);
	free(m);
}

static void vm_map_finish(struct vm_map *m, int status)
{
	if (status == 0)
		status = vm_host_blocks(m->vm, 0, m->res.nblocks, m->res.host,
					&m->res.huge_known);
	m->fn(m->userdata, status, status == 0 ? &m->res : NULL);
	vm_map_free(m);
}

static int vm_map_grow(struct vm_map *m, uint64_t n)
{
	uint8_t *g, *s, *h;

	if (n <= m->cap)
		return 0;
	g = realloc(m->res.guest, n);
	if (g)
		m->res.guest = g;
	s = realloc(m->res.slab, n);
	if (s)
		m->res.slab = s;
	h = realloc(m->res.host, n);
	if (h)
		m->res.host = h;
	if (!g || !s || !h)
		return -ENOMEM;
	m->cap = n;
	return 0;
}

/* The merged table's index of a frame's name; PROTO_MAP_NO_SLAB when full. */
static uint8_t vm_map_name(struct vm_map *m, const char *name)
{
	for (uint32_t i = 0; i < m->res.nnames; i++)
		if (strncmp(m->res.names[i], name, PROTO_NAME_LEN) == 0)
			return (uint8_t)i;
	if (m->res.nnames == VM_MAP_MAX_NAMES)
		return PROTO_MAP_NO_SLAB;
	memcpy(m->res.names[m->res.nnames], name, PROTO_NAME_LEN);
	return (uint8_t)m->res.nnames++;
}

static int vm_map_ask(struct vm_map *m);

static void vm_map_answer(void *userdata, int status, const struct proto_msg *resp)
{
	struct vm_map *m = userdata;
	const struct proto_map_resp *mr;
	uint8_t idx[PROTO_MAP_MAX_SLABS];
	uint64_t end;
	int r;

	if (m->orphan) {
		vm_map_free(m);
		return;
	}
	if (status < 0)
		return vm_map_finish(m, status);
	mr = &resp->u.map;
	end = mr->end_block;
	if (end > VM_MAP_MAX_BLOCKS)
		return vm_map_finish(m, -E2BIG);
	if (mr->nblocks == 0 && m->next < end) {
		log_warning("VM '%s': the guest's block map made no progress at block "
			    "%llu, ignoring it", vm_name(m->vm),
			    (unsigned long long)m->next);
		return vm_map_finish(m, -EPROTO);
	}
	r = vm_map_grow(m, end);
	if (r < 0)
		return vm_map_finish(m, r);
	for (uint32_t i = 0; i < mr->nslabs; i++)
		idx[i] = vm_map_name(m, resp->map.names[i]);
	for (uint32_t i = 0; i < mr->nblocks; i++) {
		uint8_t s = resp->map.slabs[i];

		m->res.guest[m->next + i] = resp->map.classes[i];
		m->res.slab[m->next + i] = s == PROTO_MAP_NO_SLAB ? s : idx[s];
	}
	m->next += mr->nblocks;
	/* the guest's span may have shrunk since the first frame */
	m->res.nblocks = m->next;
	if (m->next >= end)
		return vm_map_finish(m, 0);
	r = vm_map_ask(m);
	if (r < 0)
		vm_map_finish(m, r);
}

static int vm_map_ask(struct vm_map *m)
{
	return vm_map_request(m->vm, m->next, PROTO_MAP_MAX_BLOCKS, vm_map_answer, m,
			      &m->req_id);
}

int vm_map_start(struct vm *vm, vm_map_done_fn fn, void *userdata,
		 struct vm_map **ret_map)
{
	struct vm_map *m = calloc(1, sizeof(*m));
	int r;

	if (!m)
		return -ENOMEM;
	m->vm = vm;
	m->fn = fn;
	m->userdata = userdata;
	r = vm_map_ask(m);
	if (r < 0) {
		vm_map_free(m);
		return r;
	}
	*ret_map = m;
	return 0;
}

void vm_map_abort(struct vm_map *m)
{
	/* its request is in flight: the answer (or the session's end) frees it */
	if (m)
		m->orphan = true;
}
