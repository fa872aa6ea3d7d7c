/* SPDX-License-Identifier: GPL-2.0 */
/*
 * blockmap.h - what the daemon knows about each 2 MiB block of one VM's
 * guest-physical address space (prefix blockmap_).
 *
 * One byte per block, from gpa 0 to the end of the VM's highest RAM range
 * (bounded by BLOCKMAP_MAX_BLOCKS, 16 TiB).  The state says who owns the
 * block from the host's point of view; two flag bits carry the capture
 * handshake and a scratch bit serves the operation in progress.
 */
#ifndef VDF_BLOCKMAP_H
#define VDF_BLOCKMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmdefrag/proto.h"

#define BLOCKMAP_BLOCK		PROTO_BLOCK_SIZE
#define BLOCKMAP_MAX_BLOCKS	(1ull << 23)	/* 16 TiB of guest-physical space */

enum blockmap_state {
	BLOCKMAP_GUEST,		/* the guest's (or not known to be captured) */
	BLOCKMAP_CAPTURED,	/* captured for the host, backing not reclaimed */
	BLOCKMAP_RECLAIMED,	/* captured for the host, backing punched */
	BLOCKMAP_RETURNING,	/* re-backed, RELEASE sent, answer awaited */
	BLOCKMAP_NSTATES,
};

/* Flag bits beside the state */
#define BLOCKMAP_F_UNACKED	0x10u	/* PENDING in the guest: ACK not answered */
#define BLOCKMAP_F_ASKED	0x20u	/* scratch: in the request in flight */
#define BLOCKMAP_F_SEEN		0x40u	/* scratch: reported by its answer */
/*
 * The host is done with the block (punched, or decided not to) and owes
 * the guest its ACK, not sent yet (reclaim.c sends them coalesced, one
 * REQ_ACK at a time).  Only beside CAPTURED/RECLAIMED: blockmap_set() to
 * any other state clears it, so a block the guest took back and captured
 * again is never acknowledged for an earlier capture.
 */
#define BLOCKMAP_F_ACKQ		0x80u
/*
 * Host work on the block runs on a worker (reclaim.c): a punch (state
 * CAPTURED until it is done) or a return's re-back (RECLAIMED until the
 * RELEASE); the job's result applies only to blocks that still carry it.
 */
#define BLOCKMAP_F_BUSY		0x08u
/* The guest took the block back and its backing owes a re-back (reclaim.c). */
#define BLOCKMAP_F_REBACK	0x04u
#define BLOCKMAP_STATE_MASK	0x03u
_Static_assert(BLOCKMAP_NSTATES - 1 <= BLOCKMAP_STATE_MASK,
	       "block states fit the state bits");

struct blockmap {
	uint64_t nblocks;
	uint8_t *b;			/* nblocks bytes: state | flags */
	uint64_t count[BLOCKMAP_NSTATES];	/* blocks in each state */
	uint64_t unacked;		/* blocks with BLOCKMAP_F_UNACKED */
};

/* Every block GUEST, no flag; -E2BIG above BLOCKMAP_MAX_BLOCKS. */
int blockmap_init(struct blockmap *bm, uint64_t gpa_end);
void blockmap_free(struct blockmap *bm);
void blockmap_reset(struct blockmap *bm);
/*
 * The map up to gpa_end instead (memory hot-plug changed the layout):
 * blocks below both ends keep their state and flags, new ones are GUEST.
 * -EBUSY if a block that would go is not GUEST or is flagged (the map is
 * left as it was), -E2BIG above BLOCKMAP_MAX_BLOCKS.
 */
int blockmap_resize(struct blockmap *bm, uint64_t gpa_end);

/* 0 if [gpa, gpa+len) is whole blocks inside the map, else -ERANGE. */
int blockmap_check(const struct blockmap *bm, uint64_t gpa, uint64_t len);

static inline enum blockmap_state blockmap_get(const struct blockmap *bm, uint64_t blk)
{
	return (enum blockmap_state)(bm->b[blk] & BLOCKMAP_STATE_MASK);
}

static inline bool blockmap_test(const struct blockmap *bm, uint64_t blk, uint8_t flag)
{
	return bm->b[blk] & flag;
}

/* Set one block's state (its flags are kept, but BLOCKMAP_F_ACKQ only
 * beside CAPTURED/RECLAIMED). */
void blockmap_set(struct blockmap *bm, uint64_t blk, enum blockmap_state state);
void blockmap_flag(struct blockmap *bm, uint64_t blk, uint8_t flag, bool on);
/* The same over a checked range. */
void blockmap_set_range(struct blockmap *bm, uint64_t gpa, uint64_t len,
			enum blockmap_state state);
void blockmap_flag_range(struct blockmap *bm, uint64_t gpa, uint64_t len,
			 uint8_t flag, bool on);
/* Clear `flag` on every block. */
void blockmap_clear_flag(struct blockmap *bm, uint8_t flag);

static inline uint64_t blockmap_bytes(const struct blockmap *bm, enum blockmap_state s)
{
	return bm->count[s] * BLOCKMAP_BLOCK;
}

/*
 * Coalesced ranges of the blocks that match (state == `state` if state is
 * not BLOCKMAP_NSTATES; every bit of `flags` set), in ascending order,
 * starting at block *pos, until max_ranges ranges or max_bytes bytes;
 * *pos is left after the last block taken.  Returns the number of ranges;
 * *ret_bytes their total.
 */
size_t blockmap_collect(const struct blockmap *bm, enum blockmap_state state,
			uint8_t flags, uint64_t *pos, uint64_t max_bytes,
			struct proto_range *out, size_t max_ranges,
			uint64_t *ret_bytes);

const char *blockmap_state_name(enum blockmap_state state);

#endif /* VDF_BLOCKMAP_H */
