/* SPDX-License-Identifier: GPL-2.0 */
/*
 * hint.h - what the hint backend needs to know that no guest can tell it
 * (prefix hint_): whether QEMU has a virtio-balloon with free page
 * reporting on, and when QEMU's anonymous RSS has stopped falling after
 * the guest freed whole 2 MiB blocks.
 */
#ifndef VDF_HINT_H
#define VDF_HINT_H

#include <stdbool.h>
#include <stdint.h>

struct qmp;

/* QOM containers that hold user-created devices (with and without an id). */
#define HINT_QOM_PERIPHERAL		"/machine/peripheral"
#define HINT_QOM_PERIPHERAL_ANON	"/machine/peripheral-anon"

struct hint_balloon {
	bool found;			/* a virtio-balloon device exists */
	bool fpr;			/* its free-page-reporting property is on */
	char path[160];			/* its QOM path, "" if none */
};

/* Is a qom-list entry of this type a virtio-balloon (pci, ccw, device)? */
bool hint_qom_type_is_balloon(const char *type);

/*
 * Looks for a virtio-balloon among QEMU's peripherals (qom-list of both
 * containers) and reads its free-page-reporting property (qom-get, on the
 * device or else on its virtio-backend child).  0 with *ret_balloon filled
 * (found false when there is none), or a negative errno when QEMU did not
 * answer (the caller cannot tell either way then).
 */
int hint_probe_balloon(struct qmp *q, int timeout_ms, struct hint_balloon *ret_balloon);

/*
 * Settling of QEMU's RssAnon after a compaction: free page reporting hands
 * freed blocks to QEMU in passes two seconds apart (mm/page_reporting.c,
 * a budget of about a sixteenth of each free list per pass), so the value
 * falls in steps.  It has settled when it made no new low (by more than
 * HINT_SETTLE_NOISE) for quiet_ms, or cap_ms after the settling began.
 */
#define HINT_SETTLE_NOISE	(1ull << 20)

enum hint_settle_state {
	HINT_SETTLE_FALLING,	/* keep sampling */
	HINT_SETTLE_QUIET,	/* no new low for quiet_ms */
	HINT_SETTLE_CAPPED,	/* cap_ms ran out */
};

struct hint_settle {
	uint64_t begin_ms;	/* settling began */
	uint64_t low_ms;	/* the last new low */
	uint64_t low;		/* lowest sample, bytes */
	uint64_t last;		/* latest sample, bytes */
	uint32_t quiet_ms, cap_ms;
};

void hint_settle_begin(struct hint_settle *s, uint64_t now_ms, uint64_t rss,
		       uint32_t quiet_ms, uint32_t cap_ms);
enum hint_settle_state hint_settle_feed(struct hint_settle *s, uint64_t now_ms,
					uint64_t rss);

#endif /* VDF_HINT_H */
