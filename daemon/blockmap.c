// SPDX-License-Identifier: GPL-2.0
/*
 * blockmap.c - per-VM state of every 2 MiB guest-physical block.
 *
 * A block moves through (host's view, reclaim.c drives it):
 *
 *   GUEST --CAPTURE answered--> CAPTURED --punched--> RECLAIMED
 *     ^                            |                     |
 *     |                            +---- punch failed ---+ (stays CAPTURED)
 *     |                                                  |
 *     +---- RELEASE answered <-- RETURNING <-- re-backed-+
 *     +---- EVT_RELEASED (guest pressure), from any captured state
 *
 * BLOCKMAP_F_UNACKED rides beside CAPTURED/RECLAIMED: the guest holds the
 * block PENDING until the host's ACK is answered; BLOCKMAP_F_ACKQ marks
 * the ones whose ACK is owed but not sent yet; BLOCKMAP_F_BUSY and
 * BLOCKMAP_F_REBACK mark host work on a worker thread (reclaim.c).  The
 * counts per state are kept exact on every change, so status never walks
 * the map.
 *
 * The map is sized once from the VM's RAM layout (one byte per block up to
 * the end of the highest RAM range) and never grows: a guest cannot make
 * the daemon allocate by naming far addresses (those fail blockmap_check()).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockmap.h"

int blockmap_init(struct blockmap *bm, uint64_t gpa_end)
{
	uint64_t n = (gpa_end + BLOCKMAP_BLOCK - 1) / BLOCKMAP_BLOCK;
	uint8_t *b;

	if (n > BLOCKMAP_MAX_BLOCKS)
		return -E2BIG;
	b = calloc(n ? n : 1, 1);
	if (!b)
		return -ENOMEM;
	memset(bm, 0, sizeof(*bm));
	bm->b = b;
	bm->nblocks = n;
	bm->count[BLOCKMAP_GUEST] = n;
	return 0;
}

void blockmap_free(struct blockmap *bm)
{
	free(bm->b);
	memset(bm, 0, sizeof(*bm));
}

int blockmap_resize(struct blockmap *bm, uint64_t gpa_end)
{
	uint64_t n = (gpa_end + BLOCKMAP_BLOCK - 1) / BLOCKMAP_BLOCK;
	uint8_t *b;

	if (n > BLOCKMAP_MAX_BLOCKS)
		return -E2BIG;
	for (uint64_t i = n; i < bm->nblocks; i++)
		if (bm->b[i])		/* a state other than GUEST, or a flag */
			return -EBUSY;
	b = realloc(bm->b, n ? n : 1);
	if (!b)
		return -ENOMEM;
	if (n > bm->nblocks)
		memset(b + bm->nblocks, 0, n - bm->nblocks);
	bm->count[BLOCKMAP_GUEST] = bm->count[BLOCKMAP_GUEST] + n - bm->nblocks;
	bm->b = b;
	bm->nblocks = n;
	return 0;
}

void blockmap_reset(struct blockmap *bm)
{
	memset(bm->b, 0, bm->nblocks);
	memset(bm->count, 0, sizeof(bm->count));
	bm->count[BLOCKMAP_GUEST] = bm->nblocks;
	bm->unacked = 0;
}

int blockmap_check(const struct blockmap *bm, uint64_t gpa, uint64_t len)
{
	if (len == 0 || gpa % BLOCKMAP_BLOCK || len % BLOCKMAP_BLOCK)
		return -ERANGE;
	if (gpa + len < gpa || (gpa + len) / BLOCKMAP_BLOCK > bm->nblocks)
		return -ERANGE;
	return 0;
}

void blockmap_set(struct blockmap *bm, uint64_t blk, enum blockmap_state state)
{
	enum blockmap_state old = blockmap_get(bm, blk);

	bm->count[old]--;
	bm->count[state]++;
	bm->b[blk] = (uint8_t)((bm->b[blk] & ~BLOCKMAP_STATE_MASK) | state);
	if (state != BLOCKMAP_CAPTURED && state != BLOCKMAP_RECLAIMED)
		bm->b[blk] &= (uint8_t)~BLOCKMAP_F_ACKQ;
}

void blockmap_flag(struct blockmap *bm, uint64_t blk, uint8_t flag, bool on)
{
	bool was = bm->b[blk] & BLOCKMAP_F_UNACKED;

	if (on)
		bm->b[blk] |= flag;
	else
		bm->b[blk] &= (uint8_t)~flag;
	if (flag & BLOCKMAP_F_UNACKED) {
		if (on && !was)
			bm->unacked++;
		else if (!on && was)
			bm->unacked--;
	}
}

void blockmap_set_range(struct blockmap *bm, uint64_t gpa, uint64_t len,
			enum blockmap_state state)
{
	for (uint64_t b = gpa / BLOCKMAP_BLOCK; b < (gpa + len) / BLOCKMAP_BLOCK; b++)
		blockmap_set(bm, b, state);
}

void blockmap_flag_range(struct blockmap *bm, uint64_t gpa, uint64_t len,
			 uint8_t flag, bool on)
{
	for (uint64_t b = gpa / BLOCKMAP_BLOCK; b < (gpa + len) / BLOCKMAP_BLOCK; b++)
		blockmap_flag(bm, b, flag, on);
}

void blockmap_clear_flag(struct blockmap *bm, uint8_t flag)
{
	for (uint64_t b = 0; b < bm->nblocks; b++)
		if (bm->b[b] & flag)
			blockmap_flag(bm, b, flag, false);
}

static bool blockmap_match(const struct blockmap *bm, uint64_t blk,
			   enum blockmap_state state, uint8_t flags)
{
	if (state != BLOCKMAP_NSTATES && blockmap_get(bm, blk) != state)
		return false;
	return (bm->b[blk] & flags) == flags;
}

size_t blockmap_collect(const struct blockmap *bm, enum blockmap_state state,
			uint8_t flags, uint64_t *pos, uint64_t max_bytes,
			struct proto_range *out, size_t max_ranges,
			uint64_t *ret_bytes)
{
	uint64_t bytes = 0, blk = *pos;
	size_t n = 0;

	for (; blk < bm->nblocks && bytes < max_bytes; blk++) {
		if (!blockmap_match(bm, blk, state, flags))
			continue;
		if (n && out[n - 1].gpa + out[n - 1].len == blk * BLOCKMAP_BLOCK) {
			out[n - 1].len += BLOCKMAP_BLOCK;
		} else {
			if (n == max_ranges)
				break;
			out[n].gpa = blk * BLOCKMAP_BLOCK;
			out[n].len = BLOCKMAP_BLOCK;
			n++;
		}
		bytes += BLOCKMAP_BLOCK;
	}
	*pos = blk;
	*ret_bytes = bytes;
	return n;
}

const char *blockmap_state_name(enum blockmap_state state)
{
	switch (state) {
	case BLOCKMAP_GUEST: return "guest";
	case BLOCKMAP_CAPTURED: return "captured";
	case BLOCKMAP_RECLAIMED: return "reclaimed";
	case BLOCKMAP_RETURNING: return "returning";
	default: return "?";
	}
}
