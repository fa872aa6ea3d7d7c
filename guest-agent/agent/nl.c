/* SPDX-License-Identifier: GPL-2.0 */
/*
 * nl.c - the agent's commands to vmdefrag.ko (include/uapi/vmdefrag_genl.h),
 * typed as the wire protocol needs them; the family-level work (sockets,
 * messages, the transaction) is genl.c's, shared with the test client.
 *
 * Two sockets:
 *   req  blocking, one transaction at a time (agent_genl_transact()).  Its
 *        receive timeout (AGENT_NL_REPLY_TIMEOUT_MS) is the safety net for
 *        a reply that never comes: the transaction fails with -ETIMEDOUT
 *        and the socket is replaced, so a late reply cannot be taken for
 *        the next transaction's.
 *   evt  non-blocking, subscribed to the "events" multicast group, drained
 *        by agent_nl_events_recv() when poll() says it is readable.
 *
 * Replies are parsed with attribute policies, so an attribute of the wrong
 * size is an error, never an over-read.  Ranges are collected into a
 * growable list bounded by AGENT_NL_MAX_RANGES.  Nothing here logs.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <netlink/genl/ctrl.h>
#include <netlink/genl/genl.h>
#include <netlink/netlink.h>

#include "genl.h"
#include "nl.h"

#define AGENT_NL_REPLY_TIMEOUT_MS	10000

struct agent_nl {
	struct nl_sock *req;
	struct nl_sock *evt;
	int family;
};

static struct nla_policy agent_nl_policy[VMDEFRAG_A_MAX + 1] = {
	[VMDEFRAG_A_BYTES]		= { .type = NLA_U64 },
	[VMDEFRAG_A_MODE]		= { .type = NLA_U32 },
	[VMDEFRAG_A_RANGES]		= { .type = NLA_NESTED },
	[VMDEFRAG_A_BUDGET_MS]		= { .type = NLA_U32 },
	[VMDEFRAG_A_FLOOR_BYTES]	= { .type = NLA_U64 },
	[VMDEFRAG_A_ERRNO]		= { .type = NLA_U32 },
	[VMDEFRAG_A_REASON]		= { .type = NLA_U32 },
	[VMDEFRAG_A_TOTAL_BYTES]	= { .type = NLA_U64 },
	[VMDEFRAG_A_FREE_BYTES]		= { .type = NLA_U64 },
	[VMDEFRAG_A_FREE_BLOCK_BYTES]	= { .type = NLA_U64 },
	[VMDEFRAG_A_CAPTURABLE_BYTES]	= { .type = NLA_U64 },
	[VMDEFRAG_A_CAPTURED_BYTES]	= { .type = NLA_U64 },
	[VMDEFRAG_A_AVAILABLE_BYTES]	= { .type = NLA_U64 },
	[VMDEFRAG_A_SCAN_NS]		= { .type = NLA_U64 },
	[VMDEFRAG_A_CLASSES]		= { .type = NLA_NESTED },
	[VMDEFRAG_A_COST_HIST]		= { .type = NLA_NESTED },
	[VMDEFRAG_A_UNMOVABLE]		= { .type = NLA_NESTED },
	[VMDEFRAG_A_SLAB_CACHES]	= { .type = NLA_NESTED },
	[VMDEFRAG_A_STAT_BLOCKS_SCANNED]	= { .type = NLA_U64 },
	[VMDEFRAG_A_STAT_BLOCKS_VACATED]	= { .type = NLA_U64 },
	[VMDEFRAG_A_STAT_BLOCKS_FAILED_BUSY]	= { .type = NLA_U64 },
	[VMDEFRAG_A_STAT_BLOCKS_FAILED_NOMEM]	= { .type = NLA_U64 },
	[VMDEFRAG_A_STAT_BLOCKS_FAILED_OTHER]	= { .type = NLA_U64 },
	[VMDEFRAG_A_STAT_PAGES_MIGRATED]	= { .type = NLA_U64 },
	[VMDEFRAG_A_STAT_VACATE_NS]		= { .type = NLA_U64 },
	[VMDEFRAG_A_STAT_BLOCKS_RELEASED]	= { .type = NLA_U64 },
	[VMDEFRAG_A_STAT_PRESSURE_RELEASES]	= { .type = NLA_U64 },
	[VMDEFRAG_A_STAT_OOM_RELEASES]		= { .type = NLA_U64 },
	[VMDEFRAG_A_STAT_BLOCKS_COMPACTED]	= { .type = NLA_U64 },
	[VMDEFRAG_A_HOST]			= { .type = NLA_FLAG },
	[VMDEFRAG_A_ALL]			= { .type = NLA_FLAG },
	[VMDEFRAG_A_STRICT]			= { .type = NLA_FLAG },
	[VMDEFRAG_A_PENDING_BYTES]		= { .type = NLA_U64 },
	[VMDEFRAG_A_EVICT]			= { .type = NLA_U32 },
	[VMDEFRAG_A_MOVABLE_PAGES]		= { .type = NLA_U64 },
	[VMDEFRAG_A_SLAB_RECLAIM_PAGES]		= { .type = NLA_U64 },
	[VMDEFRAG_A_SLAB_RECLAIM_OBJECTS]	= { .type = NLA_U64 },
	[VMDEFRAG_A_EVICTED_DENTRIES]		= { .type = NLA_U64 },
	[VMDEFRAG_A_EVICTED_INODES]		= { .type = NLA_U64 },
	[VMDEFRAG_A_EVICTED_PAGECACHE_BYTES]	= { .type = NLA_U64 },
	[VMDEFRAG_A_EVICTED_BLOCKS]		= { .type = NLA_U64 },
	[VMDEFRAG_A_MAP_FIRST]			= { .type = NLA_U64 },
	[VMDEFRAG_A_MAP_END]			= { .type = NLA_U64 },
	[VMDEFRAG_A_MAP_CLASSES]		= { .type = NLA_UNSPEC },
	[VMDEFRAG_A_MAP_SLABS]			= { .type = NLA_UNSPEC },
};

static struct nla_policy agent_nl_range_policy[VMDEFRAG_A_RANGE_MAX + 1] = {
	[VMDEFRAG_A_RANGE_ADDR]	= { .type = NLA_U64 },
	[VMDEFRAG_A_RANGE_LEN]	= { .type = NLA_U64 },
};

static struct nla_policy agent_nl_slab_policy[VMDEFRAG_A_SLAB_MAX + 1] = {
	[VMDEFRAG_A_SLAB_NAME]		= { .type = NLA_UNSPEC },
	[VMDEFRAG_A_SLAB_PAGES]		= { .type = NLA_U64 },
	[VMDEFRAG_A_SLAB_BLOCKS]	= { .type = NLA_U64 },
	[VMDEFRAG_A_SLAB_RECLAIM_BLOCKS] = { .type = NLA_U64 },
};

void agent_ranges_free(struct agent_ranges *r)
{
	free(r->v);
	r->v = NULL;
	r->n = r->cap = 0;
}

static int agent_ranges_push(struct agent_ranges *r, uint64_t gpa, uint64_t len)
{
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 64;
		struct proto_range *v;

		if (r->n >= AGENT_NL_MAX_RANGES)
			return -E2BIG;
		v = realloc(r->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		r->v = v;
		r->cap = cap;
	}
	r->v[r->n].gpa = gpa;
	r->v[r->n].len = len;
	r->n++;
	return 0;
}

/* Append the ranges of a VMDEFRAG_A_RANGES nest to r. */
static int agent_nl_parse_ranges(struct nlattr *nest, struct agent_ranges *r)
{
	struct nlattr *a;
	int rem;

	nla_for_each_nested(a, nest, rem) {
		struct nlattr *tb[VMDEFRAG_A_RANGE_MAX + 1];
		int ret;

		if (nla_type(a) != VMDEFRAG_A_RANGE)
			continue;
		if (nla_parse_nested(tb, VMDEFRAG_A_RANGE_MAX, a,
				     agent_nl_range_policy) < 0 ||
		    !tb[VMDEFRAG_A_RANGE_ADDR] || !tb[VMDEFRAG_A_RANGE_LEN])
			return -EBADMSG;
		ret = agent_ranges_push(r, nla_get_u64(tb[VMDEFRAG_A_RANGE_ADDR]),
					nla_get_u64(tb[VMDEFRAG_A_RANGE_LEN]));
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* A histogram nest: attribute type i + 1 holds bucket i as a u64. */
static void agent_nl_parse_hist(struct nlattr *nest, uint64_t *hist,
				unsigned int n)
{
	struct nlattr *a;
	int rem;

	if (!nest)
		return;
	nla_for_each_nested(a, nest, rem) {
		int type = nla_type(a);

		if (type >= 1 && (unsigned int)type <= n && nla_len(a) >= 8)
			hist[type - 1] = nla_get_u64(a);
	}
}

/*
 * Copy a slab cache name the module sent into the wire's fixed, printable,
 * NUL-padded field; characters the protocol refuses become '?'.
 */
static void agent_nl_copy_name(char dst[PROTO_NAME_LEN], const struct nlattr *a)
{
	const char *src = nla_data(a);
	size_t n = (size_t)nla_len(a);

	memset(dst, 0, PROTO_NAME_LEN);
	for (size_t i = 0; i < n && i < PROTO_NAME_LEN - 1 && src[i]; i++)
		dst[i] = (src[i] >= 0x20 && src[i] <= 0x7e) ? src[i] : '?';
	if (!dst[0])
		dst[0] = '?';
}

static uint64_t agent_nl_u64(struct nlattr **tb, int attr)
{
	return tb[attr] ? nla_get_u64(tb[attr]) : 0;
}

/* ---- transactions ------------------------------------------------------ */

static int agent_nl_sock(struct nl_sock **ret_sk, bool reply_timeout);

/*
 * After a receive timeout the socket may still get the late reply: swap in
 * a fresh one.  If that fails the old one stays (its sequence check drops
 * the stale reply at worst as an error of the next transaction).
 */
static void agent_nl_replace_req(struct agent_nl *nl)
{
	struct nl_sock *sk;

	if (agent_nl_sock(&sk, true) < 0)
		return;
	nl_socket_free(nl->req);
	nl->req = sk;
}

/* Send msg (consumed) and receive until its ACK, DONE or error. */
static int agent_nl_transact(struct agent_nl *nl, struct nl_msg *msg,
			     struct agent_genl_txn *t)
{
	int r;

	t->policy = agent_nl_policy;
	r = agent_genl_transact(nl->req, msg, t);
	if (r == -ETIMEDOUT)
		agent_nl_replace_req(nl);
	return r;
}

static struct nl_msg *agent_nl_msg(struct agent_nl *nl, uint8_t cmd, int flags,
				   size_t size)
{
	return agent_genl_msg(nl->family, cmd, flags, size);
}

/* ---- SCAN -------------------------------------------------------------- */

static int agent_nl_parse_scan(struct agent_genl_txn *t, uint8_t cmd,
				struct nlattr **tb)
{
	if (!tb)
		return -EBADMSG;
	static const uint32_t bounds[VMDEFRAG_COST_BUCKETS] = VMDEFRAG_COST_BOUNDS;
	struct proto_msg *m = t->out;
	struct proto_scan_resp *s = &m->u.scan;
	struct nlattr *a;
	int rem;

	s->total_bytes = agent_nl_u64(tb, VMDEFRAG_A_TOTAL_BYTES);
	s->free_bytes = agent_nl_u64(tb, VMDEFRAG_A_FREE_BYTES);
	s->free_block_bytes = agent_nl_u64(tb, VMDEFRAG_A_FREE_BLOCK_BYTES);
	s->capturable_bytes = agent_nl_u64(tb, VMDEFRAG_A_CAPTURABLE_BYTES);
	s->captured_bytes = agent_nl_u64(tb, VMDEFRAG_A_CAPTURED_BYTES);
	s->available_bytes = agent_nl_u64(tb, VMDEFRAG_A_AVAILABLE_BYTES);
	s->scan_ns = agent_nl_u64(tb, VMDEFRAG_A_SCAN_NS);
	s->nclasses = __VMDEFRAG_CLASS_MAX;
	agent_nl_parse_hist(tb[VMDEFRAG_A_CLASSES], s->classes, s->nclasses);
	s->ncost = VMDEFRAG_COST_BUCKETS;
	memcpy(s->cost_bounds, bounds, sizeof(bounds));
	agent_nl_parse_hist(tb[VMDEFRAG_A_COST_HIST], s->cost, s->ncost);
	s->nunmovable = __VMDEFRAG_CAUSE_MAX;
	agent_nl_parse_hist(tb[VMDEFRAG_A_UNMOVABLE], s->unmovable, s->nunmovable);
	/* a module with slab eviction: the census (the relay decides whether
	 * the host speaks the version that carries it) */
	if (tb[VMDEFRAG_A_MOVABLE_PAGES]) {
		struct proto_scan_census *c = &m->census;

		s->flags |= PROTO_SCAN_F_CENSUS;
		c->movable_pages = agent_nl_u64(tb, VMDEFRAG_A_MOVABLE_PAGES);
		c->slab_reclaim_pages = agent_nl_u64(tb, VMDEFRAG_A_SLAB_RECLAIM_PAGES);
		c->slab_reclaim_objects = agent_nl_u64(tb, VMDEFRAG_A_SLAB_RECLAIM_OBJECTS);
		c->evicted_dentries = agent_nl_u64(tb, VMDEFRAG_A_EVICTED_DENTRIES);
		c->evicted_inodes = agent_nl_u64(tb, VMDEFRAG_A_EVICTED_INODES);
		c->evicted_pagecache_bytes =
			agent_nl_u64(tb, VMDEFRAG_A_EVICTED_PAGECACHE_BYTES);
		c->evicted_blocks = agent_nl_u64(tb, VMDEFRAG_A_EVICTED_BLOCKS);
	}

	if (!tb[VMDEFRAG_A_SLAB_CACHES])
		return 0;
	nla_for_each_nested(a, tb[VMDEFRAG_A_SLAB_CACHES], rem) {
		struct nlattr *stb[VMDEFRAG_A_SLAB_MAX + 1];
		struct proto_slab *sl;

		if (nla_type(a) != VMDEFRAG_A_SLAB_CACHE)
			continue;
		if (s->nslabs >= PROTO_MAX_SLABS)
			break;
		if (nla_parse_nested(stb, VMDEFRAG_A_SLAB_MAX, a,
				     agent_nl_slab_policy) < 0 ||
		    !stb[VMDEFRAG_A_SLAB_NAME])
			return -EBADMSG;
		sl = &m->slabs[s->nslabs];
		agent_nl_copy_name(sl->name, stb[VMDEFRAG_A_SLAB_NAME]);
		sl->pages = agent_nl_u64(stb, VMDEFRAG_A_SLAB_PAGES);
		sl->blocks = agent_nl_u64(stb, VMDEFRAG_A_SLAB_BLOCKS);
		m->census.slab_reclaim_blocks[s->nslabs] =
			agent_nl_u64(stb, VMDEFRAG_A_SLAB_RECLAIM_BLOCKS);
		if (m->census.slab_reclaim_blocks[s->nslabs] > sl->blocks)
			m->census.slab_reclaim_blocks[s->nslabs] = sl->blocks;
		s->nslabs++;
	}
	return 0;
}

int agent_nl_scan(struct agent_nl *nl, struct proto_msg *ret_msg)
{
	struct proto_msg *m = calloc(1, sizeof(*m));
	struct agent_genl_txn t = { .reply = agent_nl_parse_scan, .out = m };
	struct nl_msg *msg;
	int r;

	if (!m)
		return -ENOMEM;
	msg = agent_nl_msg(nl, VMDEFRAG_CMD_SCAN, NLM_F_ACK, 0);
	if (!msg) {
		free(m);
		return -ENOMEM;
	}
	r = agent_nl_transact(nl, msg, &t);
	if (r == 0) {
		ret_msg->u.scan = m->u.scan;
		memcpy(ret_msg->slabs, m->slabs, sizeof(m->slabs));
		ret_msg->census = m->census;
	}
	free(m);
	return r;
}

/* ---- MAP --------------------------------------------------------------- */

/*
 * The module's reply as RESP_MAP's body.  Only its shape is checked here
 * (lengths, counts); the relay's encoder checks every byte the way the
 * host's decoder will.
 */
static int agent_nl_parse_map(struct agent_genl_txn *t, uint8_t cmd,
			      struct nlattr **tb)
{
	struct proto_msg *m = t->out;
	struct proto_map_resp *mr = &m->u.map;
	struct nlattr *a;
	int rem, n;

	if (!tb || !tb[VMDEFRAG_A_MAP_FIRST] || !tb[VMDEFRAG_A_MAP_END] ||
	    !tb[VMDEFRAG_A_MAP_CLASSES] || !tb[VMDEFRAG_A_MAP_SLABS])
		return -EBADMSG;
	n = nla_len(tb[VMDEFRAG_A_MAP_CLASSES]);
	if (n < 0 || n > PROTO_MAP_MAX_BLOCKS || nla_len(tb[VMDEFRAG_A_MAP_SLABS]) != n)
		return -EBADMSG;
	mr->first_block = agent_nl_u64(tb, VMDEFRAG_A_MAP_FIRST);
	mr->end_block = agent_nl_u64(tb, VMDEFRAG_A_MAP_END);
	mr->nblocks = (uint32_t)n;
	memcpy(m->map.classes, nla_data(tb[VMDEFRAG_A_MAP_CLASSES]), (size_t)n);
	memcpy(m->map.slabs, nla_data(tb[VMDEFRAG_A_MAP_SLABS]), (size_t)n);
	if (!tb[VMDEFRAG_A_SLAB_CACHES])
		return 0;
	nla_for_each_nested(a, tb[VMDEFRAG_A_SLAB_CACHES], rem) {
		struct nlattr *stb[VMDEFRAG_A_SLAB_MAX + 1];

		if (nla_type(a) != VMDEFRAG_A_SLAB_CACHE)
			continue;
		if (mr->nslabs >= PROTO_MAP_MAX_SLABS)
			break;
		if (nla_parse_nested(stb, VMDEFRAG_A_SLAB_MAX, a,
				     agent_nl_slab_policy) < 0 ||
		    !stb[VMDEFRAG_A_SLAB_NAME])
			return -EBADMSG;
		agent_nl_copy_name(m->map.names[mr->nslabs], stb[VMDEFRAG_A_SLAB_NAME]);
		mr->nslabs++;
	}
	return 0;
}

int agent_nl_map(struct agent_nl *nl, uint64_t first_block, uint32_t max_blocks,
		 struct proto_msg *ret_msg)
{
	struct proto_msg *m = calloc(1, sizeof(*m));
	struct agent_genl_txn t = { .reply = agent_nl_parse_map, .out = m };
	struct nl_msg *msg;
	int r;

	if (!m)
		return -ENOMEM;
	msg = agent_nl_msg(nl, VMDEFRAG_CMD_MAP, NLM_F_ACK, 64);
	if (!msg || nla_put_u64(msg, VMDEFRAG_A_MAP_FIRST, first_block) < 0 ||
	    nla_put_u32(msg, VMDEFRAG_A_MAP_MAX, max_blocks) < 0) {
		nlmsg_free(msg);
		free(m);
		return -ENOMEM;
	}
	/* the reply holds two bytes per block: more than a page */
	(void)nl_socket_set_msg_buf_size(nl->req, 2 * PROTO_MAP_MAX_BLOCKS + 16384);
	r = agent_nl_transact(nl, msg, &t);
	if (r == 0) {
		ret_msg->u.map = m->u.map;
		ret_msg->map = m->map;
	}
	free(m);
	return r;
}

/* ---- CAPTURE / RELEASE / LIST ------------------------------------------ */

struct agent_nl_ranges_out {
	uint64_t bytes;
	int32_t stop_errno;
	struct agent_ranges ranges;
};

static int agent_nl_parse_ranges_reply(struct agent_genl_txn *t, uint8_t cmd,
				struct nlattr **tb)
{
	if (!tb)
		return -EBADMSG;
	struct agent_nl_ranges_out *o = t->out;

	o->bytes += agent_nl_u64(tb, VMDEFRAG_A_BYTES);
	if (tb[VMDEFRAG_A_ERRNO])
		o->stop_errno = (int32_t)nla_get_u32(tb[VMDEFRAG_A_ERRNO]);
	if (tb[VMDEFRAG_A_RANGES])
		return agent_nl_parse_ranges(tb[VMDEFRAG_A_RANGES], &o->ranges);
	return 0;
}

/*
 * Sends msg (consumed; built false: filling it failed, -EMSGSIZE) and
 * collects its ranges reply into *o; on failure the ranges gathered so far
 * are freed.
 */
static int agent_nl_transact_ranges(struct agent_nl *nl, struct nl_msg *msg,
				    bool built, struct agent_nl_ranges_out *o)
{
	struct agent_genl_txn t = { .reply = agent_nl_parse_ranges_reply, .out = o };
	int r;

	if (!built) {
		nlmsg_free(msg);
		return -EMSGSIZE;
	}
	r = agent_nl_transact(nl, msg, &t);
	if (r < 0)
		agent_ranges_free(&o->ranges);
	return r;
}

int agent_nl_capture(struct agent_nl *nl, const struct proto_capture_req *req,
		     const struct proto_range *preferred, uint64_t *ret_bytes,
		     int32_t *ret_stop_errno, struct agent_ranges *ret_ranges)
{
	struct agent_nl_ranges_out o = { 0 };
	struct nl_msg *msg;
	int r;

	msg = agent_nl_msg(nl, VMDEFRAG_CMD_CAPTURE, NLM_F_ACK,
			   agent_genl_ranges_size(req->nranges));
	if (!msg)
		return -ENOMEM;
	/* every CAPTURE relayed from the host is made on its behalf */
	r = agent_nl_transact_ranges(nl, msg,
		nla_put_flag(msg, VMDEFRAG_A_HOST) == 0 &&
		(!(req->flags & PROTO_CAPTURE_STRICT) ||
		 nla_put_flag(msg, VMDEFRAG_A_STRICT) == 0) &&
		/* "movable" is the module's default: old modules stay usable */
		(!proto_capture_evict(req->flags) ||
		 nla_put_u32(msg, VMDEFRAG_A_EVICT,
			     proto_capture_evict(req->flags)) == 0) &&
		nla_put_u64(msg, VMDEFRAG_A_BYTES, req->bytes) == 0 &&
		nla_put_u32(msg, VMDEFRAG_A_MODE, req->mode) == 0 &&
		(!req->budget_ms ||
		 nla_put_u32(msg, VMDEFRAG_A_BUDGET_MS, req->budget_ms) == 0) &&
		(!req->floor_bytes ||
		 nla_put_u64(msg, VMDEFRAG_A_FLOOR_BYTES, req->floor_bytes) == 0) &&
		(!req->nranges ||
		 agent_genl_put_ranges(msg, preferred, req->nranges) == 0), &o);
	if (r < 0)
		return r;
	*ret_bytes = o.bytes;
	*ret_stop_errno = o.stop_errno;
	*ret_ranges = o.ranges;
	return 0;
}

int agent_nl_release(struct agent_nl *nl, uint64_t bytes,
		     const struct proto_range *ranges, uint32_t nranges,
		     uint64_t *ret_bytes, struct agent_ranges *ret_ranges)
{
	struct agent_nl_ranges_out o = { 0 };
	struct nl_msg *msg;
	int r;

	msg = agent_nl_msg(nl, VMDEFRAG_CMD_RELEASE, NLM_F_ACK,
			   agent_genl_ranges_size(nranges));
	if (!msg)
		return -ENOMEM;
	r = agent_nl_transact_ranges(nl, msg, nranges ?
		agent_genl_put_ranges(msg, ranges, nranges) == 0 :
		nla_put_u64(msg, VMDEFRAG_A_BYTES, bytes) == 0, &o);
	if (r < 0)
		return r;
	*ret_bytes = o.bytes;
	*ret_ranges = o.ranges;
	return 0;
}

int agent_nl_list(struct agent_nl *nl, struct agent_ranges *ret_ranges)
{
	struct agent_nl_ranges_out o = { 0 };
	struct nl_msg *msg;
	int r;

	msg = agent_nl_msg(nl, VMDEFRAG_CMD_LIST, NLM_F_DUMP, 0);
	if (!msg)
		return -ENOMEM;
	/* a LIST from the host is a reconciliation: listed blocks -> PENDING */
	r = agent_nl_transact_ranges(nl, msg,
				     nla_put_flag(msg, VMDEFRAG_A_HOST) == 0, &o);
	if (r < 0)
		return r;
	*ret_ranges = o.ranges;
	return 0;
}

/* ---- ACK --------------------------------------------------------------- */

static int agent_nl_parse_bytes(struct agent_genl_txn *t, uint8_t cmd,
				struct nlattr **tb)
{
	if (!tb)
		return -EBADMSG;
	uint64_t *bytes = t->out;

	*bytes += agent_nl_u64(tb, VMDEFRAG_A_BYTES);
	return 0;
}

int agent_nl_ack(struct agent_nl *nl, const struct proto_range *ranges,
		 uint32_t nranges, uint64_t *ret_bytes)
{
	uint64_t bytes = 0;
	struct agent_genl_txn t = { .reply = agent_nl_parse_bytes, .out = &bytes };
	struct nl_msg *msg;
	int r;

	msg = agent_nl_msg(nl, VMDEFRAG_CMD_ACK, NLM_F_ACK,
			   agent_genl_ranges_size(nranges));
	if (!msg)
		return -ENOMEM;
	if (nranges ? agent_genl_put_ranges(msg, ranges, nranges) < 0 :
		      nla_put_flag(msg, VMDEFRAG_A_ALL) < 0) {
		nlmsg_free(msg);
		return -EMSGSIZE;
	}
	r = agent_nl_transact(nl, msg, &t);
	if (r == 0)
		*ret_bytes = bytes;
	return r;
}

/* ---- STATS / SET ------------------------------------------------------- */

static int agent_nl_parse_stats(struct agent_genl_txn *t, uint8_t cmd,
				struct nlattr **tb)
{
	if (!tb)
		return -EBADMSG;
	struct proto_stats *s = t->out;

	s->blocks_scanned = agent_nl_u64(tb, VMDEFRAG_A_STAT_BLOCKS_SCANNED);
	s->blocks_vacated = agent_nl_u64(tb, VMDEFRAG_A_STAT_BLOCKS_VACATED);
	s->blocks_failed_busy = agent_nl_u64(tb, VMDEFRAG_A_STAT_BLOCKS_FAILED_BUSY);
	s->blocks_failed_nomem = agent_nl_u64(tb, VMDEFRAG_A_STAT_BLOCKS_FAILED_NOMEM);
	s->blocks_failed_other = agent_nl_u64(tb, VMDEFRAG_A_STAT_BLOCKS_FAILED_OTHER);
	s->pages_migrated = agent_nl_u64(tb, VMDEFRAG_A_STAT_PAGES_MIGRATED);
	s->vacate_ns = agent_nl_u64(tb, VMDEFRAG_A_STAT_VACATE_NS);
	s->blocks_released = agent_nl_u64(tb, VMDEFRAG_A_STAT_BLOCKS_RELEASED);
	s->pressure_releases = agent_nl_u64(tb, VMDEFRAG_A_STAT_PRESSURE_RELEASES);
	s->oom_releases = agent_nl_u64(tb, VMDEFRAG_A_STAT_OOM_RELEASES);
	s->blocks_compacted = agent_nl_u64(tb, VMDEFRAG_A_STAT_BLOCKS_COMPACTED);
	s->captured_bytes = agent_nl_u64(tb, VMDEFRAG_A_CAPTURED_BYTES);
	s->floor_bytes = agent_nl_u64(tb, VMDEFRAG_A_FLOOR_BYTES);
	return 0;
}

int agent_nl_stats(struct agent_nl *nl, struct proto_stats *ret_stats)
{
	struct proto_stats s = { 0 };
	struct agent_genl_txn t = { .reply = agent_nl_parse_stats, .out = &s };
	struct nl_msg *msg;
	int r;

	msg = agent_nl_msg(nl, VMDEFRAG_CMD_STATS, NLM_F_ACK, 0);
	if (!msg)
		return -ENOMEM;
	r = agent_nl_transact(nl, msg, &t);
	if (r == 0)
		*ret_stats = s;
	return r;
}

int agent_nl_set_floor(struct agent_nl *nl, uint64_t floor_bytes)
{
	struct agent_genl_txn t = { 0 };
	struct nl_msg *msg;

	msg = agent_nl_msg(nl, VMDEFRAG_CMD_SET, NLM_F_ACK, 0);
	if (!msg)
		return -ENOMEM;
	if (nla_put_u64(msg, VMDEFRAG_A_FLOOR_BYTES, floor_bytes) < 0) {
		nlmsg_free(msg);
		return -EMSGSIZE;
	}
	return agent_nl_transact(nl, msg, &t);
}

/* ---- events ------------------------------------------------------------ */

struct agent_nl_evt_ctx {
	agent_nl_event_fn fn;
	void *arg;
	int err;
};

static int agent_nl_event_cb(struct nl_msg *msg, void *arg)
{
	struct agent_nl_evt_ctx *ctx = arg;
	struct genlmsghdr *gh = nlmsg_data(nlmsg_hdr(msg));
	struct nlattr *tb[VMDEFRAG_A_MAX + 1];
	struct agent_ranges ranges = { 0 };
	uint32_t reason = 0;
	int r;

	if (gh->cmd != VMDEFRAG_CMD_EVENT_CAPTURED &&
	    gh->cmd != VMDEFRAG_CMD_EVENT_RELEASED)
		return NL_SKIP;
	r = genlmsg_parse(nlmsg_hdr(msg), 0, tb, VMDEFRAG_A_MAX, agent_nl_policy);
	if (r == 0 && tb[VMDEFRAG_A_RANGES])
		r = agent_nl_parse_ranges(tb[VMDEFRAG_A_RANGES], &ranges);
	if (r < 0) {
		ctx->err = r < -4095 ? -EBADMSG : r;
		agent_ranges_free(&ranges);
		return NL_SKIP;
	}
	if (tb[VMDEFRAG_A_REASON])
		reason = nla_get_u32(tb[VMDEFRAG_A_REASON]);
	ctx->fn(ctx->arg, gh->cmd, reason, &ranges);
	agent_ranges_free(&ranges);
	return NL_OK;
}

static int agent_nl_noop_cb(struct nl_msg *msg, void *arg)
{
	return NL_OK;
}

int agent_nl_events_recv(struct agent_nl *nl, agent_nl_event_fn fn, void *arg)
{
	struct agent_nl_evt_ctx ctx = { .fn = fn, .arg = arg };
	struct nl_cb *cb = nl_cb_alloc(NL_CB_DEFAULT);
	int r;

	if (!cb)
		return -ENOMEM;
	nl_cb_set(cb, NL_CB_VALID, NL_CB_CUSTOM, agent_nl_event_cb, &ctx);
	/* multicast messages carry no sequence number of ours */
	nl_cb_set(cb, NL_CB_SEQ_CHECK, NL_CB_CUSTOM, agent_nl_noop_cb, NULL);
	for (;;) {
		r = nl_recvmsgs(nl->evt, cb);
		if (r < 0)
			break;
	}
	nl_cb_put(cb);
	/* libnl reports the socket's ENOBUFS (events dropped) as NLE_NOMEM */
	r = r == -NLE_NOMEM ? -ENOBUFS : agent_genl_errno(r);
	if (r == -EAGAIN)
		r = 0;
	return r ? r : ctx.err;
}

/* ---- setup ------------------------------------------------------------- */

static int agent_nl_sock(struct nl_sock **ret_sk, bool reply_timeout)
{
	return agent_genl_sock(ret_sk, 4 << 20,
			       reply_timeout ? AGENT_NL_REPLY_TIMEOUT_MS : 0);
}

int agent_nl_open(struct agent_nl **ret_nl)
{
	struct agent_nl *nl = calloc(1, sizeof(*nl));
	int r, grp;

	if (!nl)
		return -ENOMEM;
	r = agent_nl_sock(&nl->req, true);
	if (r < 0)
		goto out_free;
	r = agent_nl_sock(&nl->evt, false);
	if (r < 0)
		goto out_free_req;

	r = agent_genl_family(nl->req, &nl->family);
	if (r < 0)
		goto out_free_evt;
	grp = genl_ctrl_resolve_grp(nl->req, VMDEFRAG_GENL_NAME,
				    VMDEFRAG_MCGRP_EVENTS);
	if (grp < 0) {
		r = agent_genl_errno(grp);
		goto out_free_evt;
	}
	nl_socket_disable_seq_check(nl->evt);
	r = nl_socket_add_membership(nl->evt, grp);
	if (r < 0) {
		r = agent_genl_errno(r);
		goto out_free_evt;
	}
	r = nl_socket_set_nonblocking(nl->evt);
	if (r < 0) {
		r = agent_genl_errno(r);
		goto out_free_evt;
	}
	*ret_nl = nl;
	return 0;

out_free_evt:
	nl_socket_free(nl->evt);
out_free_req:
	nl_socket_free(nl->req);
out_free:
	free(nl);
	return r;
}

void agent_nl_close(struct agent_nl *nl)
{
	if (!nl)
		return;
	nl_socket_free(nl->evt);
	nl_socket_free(nl->req);
	free(nl);
}

int agent_nl_event_fd(const struct agent_nl *nl)
{
	return nl_socket_get_fd(nl->evt);
}
