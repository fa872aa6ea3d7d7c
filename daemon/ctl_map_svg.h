/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ctl_map_svg.h - vmdefragctl map's picture: the daemon's MAP answer drawn
 * as an SVG grid of 2 MiB blocks (prefix ctl_map_).
 */
#ifndef VDF_CTL_MAP_SVG_H
#define VDF_CTL_MAP_SVG_H

#include <stdint.h>
#include <stdio.h>

#include <json-c/json.h>

/* What a block is drawn as; a block is one of these, first match wins. */
enum ctl_map_kind {
	CTL_MAP_RECLAIMED,	/* captured, and its host backing freed */
	CTL_MAP_CAPTURED,	/* held by the guest for the host */
	CTL_MAP_FREE,
	CTL_MAP_MOVABLE,	/* only free and movable pages */
	CTL_MAP_SLAB,		/* pinned by slab (a cache named on hover) */
	CTL_MAP_UNMOVABLE,	/* pinned by other unmovable memory */
	CTL_MAP_OFFLINE,	/* reserved, offline, or not guest RAM */
	CTL_MAP_NKINDS,
};

struct ctl_map_totals {
	uint64_t blocks;
	uint64_t kind[CTL_MAP_NKINDS];
	uint64_t huge;		/* of all blocks, huge-mapped on the host */
};

/* The kind of block i of a MAP answer's "guest" and "host" strings. */
enum ctl_map_kind ctl_map_block_kind(char guest, char host);
const char *ctl_map_kind_name(enum ctl_map_kind kind);

/*
 * Writes map (the "map" object of the answer) as an SVG document to f,
 * *ret_totals what it drew.  -EBADMSG if the object lacks its keys.
 */
int ctl_map_svg(struct json_object *map, FILE *f, struct ctl_map_totals *ret_totals);

#endif /* VDF_CTL_MAP_SVG_H */
