/* SPDX-License-Identifier: GPL-2.0 */
#ifndef AGENT_NL_H
#define AGENT_NL_H

#include <stddef.h>
#include <stdint.h>

#include "vmdefrag/proto.h"

/* A growable list of ranges as the module reports them (host order). */
struct agent_ranges {
	struct proto_range *v;
	size_t n, cap;
};

void agent_ranges_free(struct agent_ranges *r);

/* Most ranges the agent takes from one module reply or dump. */
#define AGENT_NL_MAX_RANGES (1u << 20)

struct agent_nl;

/*
 * Connect to the vmdefrag generic netlink family and subscribe to its
 * events group.  -ENOENT while the module is not loaded.
 */
int agent_nl_open(struct agent_nl **ret_nl);
void agent_nl_close(struct agent_nl *nl);

/* Non-blocking fd that turns readable when events arrive. */
int agent_nl_event_fd(const struct agent_nl *nl);

/*
 * Requests.  Each returns 0 or a negative errno: the module's own errno
 * (a NLMSG_ERROR reply), or -EBADMSG for a reply the agent cannot parse.
 * Outputs are filled on success only.
 */
int agent_nl_scan(struct agent_nl *nl, struct proto_msg *ret_msg);
/* MAP: ret_msg's u.map (status aside) and map filled from the module. */
int agent_nl_map(struct agent_nl *nl, uint64_t first_block, uint32_t max_blocks,
		 struct proto_msg *ret_msg);
int agent_nl_capture(struct agent_nl *nl, const struct proto_capture_req *req,
		     const struct proto_range *preferred, uint64_t *ret_bytes,
		     int32_t *ret_stop_errno, struct agent_ranges *ret_ranges);
int agent_nl_release(struct agent_nl *nl, uint64_t bytes,
		     const struct proto_range *ranges, uint32_t nranges,
		     uint64_t *ret_bytes, struct agent_ranges *ret_ranges);
/*
 * CAPTURE always carries VMDEFRAG_A_HOST (and VMDEFRAG_A_STRICT when the
 * host's request has PROTO_CAPTURE_STRICT): the agent only relays the
 * host.  LIST carries VMDEFRAG_A_HOST: a host LIST is a reconciliation.
 */
int agent_nl_list(struct agent_nl *nl, struct agent_ranges *ret_ranges);
/* ACK of nranges ranges, or of every PENDING block if nranges is 0. */
int agent_nl_ack(struct agent_nl *nl, const struct proto_range *ranges,
		 uint32_t nranges, uint64_t *ret_bytes);
int agent_nl_stats(struct agent_nl *nl, struct proto_stats *ret_stats);
int agent_nl_set_floor(struct agent_nl *nl, uint64_t floor_bytes);

/*
 * Drain pending events, calling fn for each (cmd is VMDEFRAG_CMD_EVENT_*).
 * Returns 0, or -ENOBUFS if the kernel dropped events (the socket buffer
 * overflowed; the caller should tell the host to resynchronise), or
 * another negative errno.
 */
typedef void (*agent_nl_event_fn)(void *arg, uint8_t cmd, uint32_t reason,
				  const struct agent_ranges *ranges);
int agent_nl_events_recv(struct agent_nl *nl, agent_nl_event_fn fn, void *arg);

#endif /* AGENT_NL_H */
