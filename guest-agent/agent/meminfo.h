/* SPDX-License-Identifier: GPL-2.0 */
/*
 * meminfo.h - the guest's memory signals for EVT_MEMINFO (prefix
 * agent_meminfo_): what the host's policy engine decides on.
 */
#ifndef AGENT_MEMINFO_H
#define AGENT_MEMINFO_H

#include <stdbool.h>
#include <stdint.h>

#include "vmdefrag/proto.h"

/* What the sampler keeps between samples. */
struct agent_meminfo {
	uint64_t prev_pgalloc;		/* pages, sum of pgalloc_* */
	uint64_t prev_ms;		/* CLOCK_MONOTONIC of prev_pgalloc, 0: none */
	uint64_t wmark_ms;		/* when the watermarks were read */
	uint64_t wmark_low, wmark_high;	/* bytes */
	bool psi_absent_logged;
	bool have_sent;
	struct proto_meminfo sent;	/* the last one sent */
};

/*
 * Reads the signals now into *ret (interval_ms, flags F_PSI set here;
 * captured/floor and F_MODULE are the caller's).  0 or a negative errno
 * when /proc/meminfo cannot be read.  Every value is clamped to what the
 * codec accepts, so a kernel quirk never costs the session.
 */
int agent_meminfo_sample(struct agent_meminfo *mi, uint64_t now_ms,
			 uint32_t interval_ms, struct proto_meminfo *ret);

/*
 * Did a signal cross a threshold since the last one sent (free fell by a
 * step, free nears the watermarks, PSI rose, an allocation burst began)?
 * Sets why to a short reason.
 */
bool agent_meminfo_urgent(const struct agent_meminfo *mi,
			  const struct proto_meminfo *now, const char **why);

/* Remembers *sent as the last one sent. */
void agent_meminfo_sent(struct agent_meminfo *mi, const struct proto_meminfo *sent);

#endif /* AGENT_MEMINFO_H */
