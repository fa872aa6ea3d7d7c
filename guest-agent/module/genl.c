// SPDX-License-Identifier: GPL-2.0
/*
 * vmdefrag generic netlink family: the module's only interface.
 *
 * The family, its commands, attributes and events are defined once, in
 * include/uapi/vmdefrag_genl.h; this file implements that contract.
 *
 * Validation happens in two layers before any handler acts:
 *
 *   policy     the core validates every request strictly against
 *              vdf_genl_policy: attribute types and exact lengths, unknown
 *              or reply-only attributes rejected, VMDEFRAG_A_MODE within
 *              the enum, VMDEFRAG_A_BUDGET_MS within 1..600000 ms, and the
 *              nested ranges (each a nest of exactly u64 address and u64
 *              length) validated deeply;
 *   semantics  vdf_genl_parse_ranges() then checks what a policy cannot:
 *              at most VMDEFRAG_MAX_REQ_RANGES ranges, both fields present,
 *              block alignment, no overflow, inside the guest's RAM with
 *              online first and last blocks; commands check required and
 *              mutually exclusive attributes.
 *
 * Every failure is a negative errno with an extack message; nothing a
 * request carries can do more than fail.  Every command needs
 * CAP_NET_ADMIN (GENL_ADMIN_PERM) and CAP_SYS_ADMIN (checked here).
 *
 * Replies and events carry block lists as coalesced ranges, in ascending
 * order.  Events go to the "events" multicast group (CAP_SYS_ADMIN to
 * join) and are best effort: no listener, or no memory, means no event.
 *
 * The host handshake (uapi header, "Host handshake") is carried by the
 * VMDEFRAG_A_HOST, VMDEFRAG_A_ALL and VMDEFRAG_A_STRICT flags, the ACK
 * command, and a netlink notifier that hears generic netlink sockets close
 * (a requester gone cannot be reclaiming anything any more).
 *
 * Concurrency: the family is parallel_ops, so a long CAPTURE does not hold
 * the global genl mutex; requests serialize on capture.c's mutex.  The
 * handlers keep no state between calls except LIST's dump cursor
 * (cb->args[0]: next block index, cb->args[1]: finished).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/capability.h>
#include <linux/memory_hotplug.h>
#include <linux/mm.h>
#include <linux/netlink.h>
#include <linux/slab.h>
#include <linux/sort.h>
#include <net/genetlink.h>
#include <net/netlink.h>

#include "vmdefrag.h"

#define VDF_BUDGET_MAX_MS	600000

static struct genl_family vdf_genl_family;

static const struct nla_policy vdf_genl_range_policy[VMDEFRAG_A_RANGE_MAX + 1] = {
	[VMDEFRAG_A_RANGE_ADDR]	= { .type = NLA_U64 },
	[VMDEFRAG_A_RANGE_LEN]	= { .type = NLA_U64 },
};

static const struct nla_policy vdf_genl_ranges_policy[VMDEFRAG_A_RANGE_MAX + 1] = {
	[VMDEFRAG_A_RANGE]	= NLA_POLICY_NESTED(vdf_genl_range_policy),
};

/* not const: 6.1's nla_policy points to it without const */
static struct netlink_range_validation vdf_genl_budget_range = {
	.min = 1,
	.max = VDF_BUDGET_MAX_MS,
};

static const struct nla_policy vdf_genl_policy[VMDEFRAG_A_MAX + 1] = {
	[VMDEFRAG_A_BYTES]	= { .type = NLA_U64 },
	[VMDEFRAG_A_MODE]	= NLA_POLICY_MAX(NLA_U32, VMDEFRAG_MODE_COMPACT),
	[VMDEFRAG_A_RANGES]	= NLA_POLICY_NESTED(vdf_genl_ranges_policy),
	[VMDEFRAG_A_BUDGET_MS]	= NLA_POLICY_FULL_RANGE(NLA_U32, &vdf_genl_budget_range),
	[VMDEFRAG_A_FLOOR_BYTES] = { .type = NLA_U64 },
	[VMDEFRAG_A_HOST]	= { .type = NLA_FLAG },
	[VMDEFRAG_A_ALL]	= { .type = NLA_FLAG },
	[VMDEFRAG_A_STRICT]	= { .type = NLA_FLAG },
	[VMDEFRAG_A_EVICT]	= NLA_POLICY_MAX(NLA_U32, VMDEFRAG_EVICT_ALL),
	[VMDEFRAG_A_MAP_FIRST]	= { .type = NLA_U64 },
	[VMDEFRAG_A_MAP_MAX]	= NLA_POLICY_RANGE(NLA_U32, 1, VMDEFRAG_MAP_MAX_BLOCKS),
};

/* ---- ranges ---- */

static int vdf_genl_cmp_ulong(const void *a, const void *b)
{
	unsigned long x = *(const unsigned long *)a, y = *(const unsigned long *)b;

	return x < y ? -1 : x > y;
}

/* Sort @b and count its runs of adjacent blocks. */
static unsigned int vdf_genl_runs(struct vdf_blocks *b)
{
	unsigned int i, runs = 0;

	sort(b->idx, b->nr, sizeof(*b->idx), vdf_genl_cmp_ulong, NULL);
	for (i = 0; i < b->nr; i++)
		if (!i || b->idx[i] != b->idx[i - 1] + 1)
			runs++;
	return runs;
}

static size_t vdf_genl_range_size(void)
{
	return nla_total_size(0) + 2 * nla_total_size_64bit(sizeof(u64));
}

/* Put one range of blocks [@first, @end) as a VMDEFRAG_A_RANGE nest. */
static int vdf_genl_put_range(struct sk_buff *skb, unsigned long first,
			      unsigned long end)
{
	struct nlattr *nest = nla_nest_start(skb, VMDEFRAG_A_RANGE);

	if (!nest)
		return -EMSGSIZE;
	if (nla_put_u64_64bit(skb, VMDEFRAG_A_RANGE_ADDR,
			      (u64)first << VMDEFRAG_BLOCK_SHIFT, VMDEFRAG_A_RANGE_UNSPEC) ||
	    nla_put_u64_64bit(skb, VMDEFRAG_A_RANGE_LEN,
			      (u64)(end - first) << VMDEFRAG_BLOCK_SHIFT,
			      VMDEFRAG_A_RANGE_UNSPEC)) {
		nla_nest_cancel(skb, nest);
		return -EMSGSIZE;
	}
	nla_nest_end(skb, nest);
	return 0;
}

/* Put the sorted block list @b as VMDEFRAG_A_RANGES of coalesced ranges. */
static int vdf_genl_put_ranges(struct sk_buff *skb, const struct vdf_blocks *b)
{
	struct nlattr *nest = nla_nest_start(skb, VMDEFRAG_A_RANGES);
	unsigned int i, j;

	if (!nest)
		return -EMSGSIZE;
	for (i = 0; i < b->nr; i = j) {
		for (j = i + 1; j < b->nr && b->idx[j] == b->idx[j - 1] + 1; j++)
			;
		if (vdf_genl_put_range(skb, b->idx[i], b->idx[j - 1] + 1)) {
			nla_nest_cancel(skb, nest);
			return -EMSGSIZE;
		}
	}
	nla_nest_end(skb, nest);
	return 0;
}

/*
 * Check and copy the ranges of a request.  On success *@ret_r (kvfree it)
 * and *@ret_nr are set; otherwise an extack message says what is wrong.
 */
static int vdf_genl_parse_ranges(struct nlattr *ranges, struct netlink_ext_ack *extack,
				 struct vdf_range **ret_r, unsigned int *ret_nr)
{
	struct nlattr *tb[VMDEFRAG_A_RANGE_MAX + 1];
	unsigned long span_start, span_end;
	struct vdf_range *r;
	unsigned int n = 0;
	struct nlattr *a;
	int rem, ret;

	nla_for_each_nested(a, ranges, rem)
		n++;
	if (!n) {
		NL_SET_ERR_MSG_ATTR(extack, ranges, "no ranges");
		return -EINVAL;
	}
	if (n > VMDEFRAG_MAX_REQ_RANGES) {
		NL_SET_ERR_MSG_ATTR(extack, ranges, "too many ranges");
		return -E2BIG;
	}
	ret = vdf_scan_ram_span(&span_start, &span_end);
	if (ret)
		return ret;
	r = kvmalloc_array(n, sizeof(*r), GFP_KERNEL);
	if (!r)
		return -ENOMEM;

	n = 0;
	nla_for_each_nested(a, ranges, rem) {
		u64 addr, len;

		ret = nla_parse_nested(tb, VMDEFRAG_A_RANGE_MAX, a,
				       vdf_genl_range_policy, extack);
		if (ret)
			goto out_free;
		ret = -EINVAL;
		if (!tb[VMDEFRAG_A_RANGE_ADDR] || !tb[VMDEFRAG_A_RANGE_LEN]) {
			NL_SET_ERR_MSG_ATTR(extack, a, "range needs address and length");
			goto out_free;
		}
		addr = nla_get_u64(tb[VMDEFRAG_A_RANGE_ADDR]);
		len = nla_get_u64(tb[VMDEFRAG_A_RANGE_LEN]);
		if (!len || !IS_ALIGNED(addr, VMDEFRAG_BLOCK_SIZE) ||
		    !IS_ALIGNED(len, VMDEFRAG_BLOCK_SIZE)) {
			NL_SET_ERR_MSG_ATTR(extack, a, "range empty or not block aligned");
			goto out_free;
		}
		if (len > U64_MAX - addr ||
		    PHYS_PFN(addr) < span_start || PHYS_PFN(addr + len) > span_end ||
		    !pfn_to_online_page(PHYS_PFN(addr)) ||
		    !pfn_to_online_page(PHYS_PFN(addr + len - 1))) {
			NL_SET_ERR_MSG_ATTR(extack, a, "range outside guest RAM");
			ret = -ERANGE;
			goto out_free;
		}
		r[n].addr = addr;
		r[n].len = len;
		n++;
	}
	*ret_r = r;
	*ret_nr = n;
	return 0;

out_free:
	kvfree(r);
	return ret;
}

/* ---- events ---- */

/*
 * Multicast @cmd (EVENT_CAPTURED or EVENT_RELEASED) for the blocks in @b,
 * which gets sorted.  Best effort; callable where @gfp allows.
 */
void vdf_genl_notify(u8 cmd, struct vdf_blocks *b,
		     enum vmdefrag_release_reason reason, gfp_t gfp)
{
	struct sk_buff *msg;
	unsigned int runs;
	void *hdr;

	if (!genl_has_listeners(&vdf_genl_family, &init_net, 0))
		return;
	runs = vdf_genl_runs(b);
	msg = genlmsg_new(nla_total_size(0) + runs * vdf_genl_range_size() +
			  nla_total_size(sizeof(u32)), gfp);
	if (!msg)
		return;
	hdr = genlmsg_put(msg, 0, 0, &vdf_genl_family, 0, cmd);
	if (!hdr)
		goto out_free;
	if (vdf_genl_put_ranges(msg, b))
		goto out_free;
	if (cmd == VMDEFRAG_CMD_EVENT_RELEASED &&
	    nla_put_u32(msg, VMDEFRAG_A_REASON, reason))
		goto out_free;
	genlmsg_end(msg, hdr);
	genlmsg_multicast(&vdf_genl_family, msg, 0, 0, gfp);
	return;

out_free:
	nlmsg_free(msg);
}

/* ---- commands ---- */

static int vdf_genl_admin(struct sk_buff *skb, struct netlink_ext_ack *extack)
{
	if (netlink_capable(skb, CAP_SYS_ADMIN))
		return 0;
	NL_SET_ERR_MSG_MOD(extack, "CAP_SYS_ADMIN required");
	return -EPERM;
}

static int vdf_genl_put_u64(struct sk_buff *msg, int attr, u64 val)
{
	return nla_put_u64_64bit(msg, attr, val, VMDEFRAG_A_PAD);
}

/* Put a histogram as a nest whose attribute types are bucket + 1. */
static int vdf_genl_put_hist(struct sk_buff *msg, int attr, const u64 *v,
			     unsigned int n)
{
	struct nlattr *nest = nla_nest_start(msg, attr);
	unsigned int i;

	if (!nest)
		return -EMSGSIZE;
	for (i = 0; i < n; i++) {
		if (nla_put_u64_64bit(msg, i + 1, v[i], 0)) {
			nla_nest_cancel(msg, nest);
			return -EMSGSIZE;
		}
	}
	nla_nest_end(msg, nest);
	return 0;
}

static int vdf_genl_slab_cmp(const void *a, const void *b)
{
	const struct vdf_slab_slot *x = a, *y = b;

	if (x->pages != y->pages)
		return x->pages > y->pages ? -1 : 1;
	return 0;
}

static int vdf_genl_put_slab(struct sk_buff *msg, struct vdf_scan_report *rep)
{
	char name[VMDEFRAG_SLAB_NAME_LEN];
	struct nlattr *nest, *cache;
	unsigned int i;

	sort(rep->slab, rep->nr_slab, sizeof(rep->slab[0]), vdf_genl_slab_cmp, NULL);
	nest = nla_nest_start(msg, VMDEFRAG_A_SLAB_CACHES);
	if (!nest)
		return -EMSGSIZE;
	for (i = 0; i < rep->nr_slab && i < VMDEFRAG_MAX_SLAB_CACHES; i++) {
		vdf_slabcal_name(rep->slab[i].cache, name, sizeof(name));
		cache = nla_nest_start(msg, VMDEFRAG_A_SLAB_CACHE);
		if (!cache ||
		    nla_put_string(msg, VMDEFRAG_A_SLAB_NAME, name) ||
		    nla_put_u64_64bit(msg, VMDEFRAG_A_SLAB_PAGES, rep->slab[i].pages,
				      VMDEFRAG_A_SLAB_UNSPEC) ||
		    nla_put_u64_64bit(msg, VMDEFRAG_A_SLAB_BLOCKS, rep->slab[i].blocks,
				      VMDEFRAG_A_SLAB_UNSPEC) ||
		    nla_put_u64_64bit(msg, VMDEFRAG_A_SLAB_RECLAIM_BLOCKS,
				      rep->slab[i].reclaim_blocks,
				      VMDEFRAG_A_SLAB_UNSPEC)) {
			nla_nest_cancel(msg, nest);
			return -EMSGSIZE;
		}
		nla_nest_end(msg, cache);
	}
	nla_nest_end(msg, nest);
	return 0;
}

static int vdf_genl_fill_scan(struct sk_buff *msg, struct vdf_scan_report *rep)
{
	u64 candidates = (rep->classes[VMDEFRAG_CLASS_FREE] +
			  rep->classes[VMDEFRAG_CLASS_MOVABLE]) * VMDEFRAG_BLOCK_SIZE;
	long room = vdf_pressure_headroom(vdf_pressure_floor_bytes());
	u64 above = room > 0 ? (u64)room << PAGE_SHIFT : 0;
	u64 ev_dentries, ev_inodes, ev_pages, ev_blocks;

	vdf_evict_totals(&ev_dentries, &ev_inodes, &ev_pages, &ev_blocks);

	if (vdf_genl_put_u64(msg, VMDEFRAG_A_TOTAL_BYTES,
			     rep->managed_pages << PAGE_SHIFT) ||
	    vdf_genl_put_u64(msg, VMDEFRAG_A_FREE_BYTES, rep->free_pages << PAGE_SHIFT) ||
	    vdf_genl_put_u64(msg, VMDEFRAG_A_FREE_BLOCK_BYTES,
			     rep->classes[VMDEFRAG_CLASS_FREE] * VMDEFRAG_BLOCK_SIZE) ||
	    vdf_genl_put_u64(msg, VMDEFRAG_A_CAPTURABLE_BYTES,
			     min(candidates, round_down(above, VMDEFRAG_BLOCK_SIZE))) ||
	    vdf_genl_put_u64(msg, VMDEFRAG_A_CAPTURED_BYTES,
			     (u64)vdf_capture_count() * VMDEFRAG_BLOCK_SIZE) ||
	    vdf_genl_put_u64(msg, VMDEFRAG_A_PENDING_BYTES,
			     (u64)vdf_capture_pending() * VMDEFRAG_BLOCK_SIZE) ||
	    vdf_genl_put_u64(msg, VMDEFRAG_A_AVAILABLE_BYTES,
			     (u64)si_mem_available() << PAGE_SHIFT) ||
	    vdf_genl_put_u64(msg, VMDEFRAG_A_SCAN_NS, rep->scan_ns) ||
	    vdf_genl_put_hist(msg, VMDEFRAG_A_CLASSES, rep->classes, __VMDEFRAG_CLASS_MAX) ||
	    vdf_genl_put_hist(msg, VMDEFRAG_A_COST_HIST, rep->cost_hist,
			      VMDEFRAG_COST_BUCKETS) ||
	    vdf_genl_put_hist(msg, VMDEFRAG_A_UNMOVABLE, rep->causes, __VMDEFRAG_CAUSE_MAX) ||
	    vdf_genl_put_hist(msg, VMDEFRAG_A_MIGRATETYPES, rep->migratetypes,
			      __VMDEFRAG_MT_MAX) ||
	    vdf_genl_put_u64(msg, VMDEFRAG_A_MOVABLE_PAGES, rep->movable_pages) ||
	    vdf_genl_put_u64(msg, VMDEFRAG_A_SLAB_RECLAIM_PAGES,
			     rep->slab_reclaim_pages) ||
	    vdf_genl_put_u64(msg, VMDEFRAG_A_SLAB_RECLAIM_OBJECTS,
			     rep->slab_reclaim_objects) ||
	    vdf_genl_put_u64(msg, VMDEFRAG_A_EVICTED_DENTRIES, ev_dentries) ||
	    vdf_genl_put_u64(msg, VMDEFRAG_A_EVICTED_INODES, ev_inodes) ||
	    vdf_genl_put_u64(msg, VMDEFRAG_A_EVICTED_PAGECACHE_BYTES,
			     ev_pages << PAGE_SHIFT) ||
	    vdf_genl_put_u64(msg, VMDEFRAG_A_EVICTED_BLOCKS, ev_blocks))
		return -EMSGSIZE;
	return vdf_genl_put_slab(msg, rep);
}

static int vdf_genl_scan(struct sk_buff *skb, struct genl_info *info)
{
	struct vdf_scan_report *rep;
	struct sk_buff *msg;
	void *hdr;
	int ret;

	ret = vdf_genl_admin(skb, info->extack);
	if (ret)
		return ret;
	rep = kzalloc(sizeof(*rep), GFP_KERNEL);
	if (!rep)
		return -ENOMEM;
	vdf_scan_all(rep, NULL, NULL);

	ret = -ENOMEM;
	msg = genlmsg_new(NLMSG_GOODSIZE, GFP_KERNEL);
	if (!msg)
		goto out_free_rep;
	ret = -EMSGSIZE;
	hdr = genlmsg_put_reply(msg, info, &vdf_genl_family, 0, VMDEFRAG_CMD_SCAN);
	if (!hdr || vdf_genl_fill_scan(msg, rep))
		goto out_free_msg;
	genlmsg_end(msg, hdr);
	kfree(rep);
	return genlmsg_reply(msg, info);

out_free_msg:
	nlmsg_free(msg);
out_free_rep:
	kfree(rep);
	return ret;
}

/* ---- MAP: a fresh scan, one byte per block ---- */

struct vdf_genl_map {
	unsigned long first;	/* block index of classes[0] */
	unsigned int nr;	/* blocks asked for */
	u8 *classes;		/* VMDEFRAG_MAP_BYTE() per block */
	u8 *slabs;		/* slab slot per block */
};

static int vdf_genl_map_block(const struct vdf_block *blk, void *arg)
{
	struct vdf_genl_map *m = arg;
	unsigned long i;

	if (blk->idx < m->first || blk->idx - m->first >= m->nr)
		return 0;
	i = blk->idx - m->first;
	m->classes[i] = VMDEFRAG_MAP_BYTE(blk->class,
					  blk->class == VMDEFRAG_CLASS_UNMOVABLE ?
					  blk->cause : 0);
	m->slabs[i] = blk->slab_slot < VMDEFRAG_MAP_MAX_SLABS ? blk->slab_slot :
		      VMDEFRAG_MAP_NO_SLAB;
	return 0;
}

static int vdf_genl_put_map(struct sk_buff *msg, const struct vdf_genl_map *m,
			    unsigned long end, const struct vdf_scan_report *rep)
{
	char name[VMDEFRAG_SLAB_NAME_LEN];
	struct nlattr *nest, *cache;
	unsigned int i;

	if (vdf_genl_put_u64(msg, VMDEFRAG_A_MAP_FIRST, m->first) ||
	    vdf_genl_put_u64(msg, VMDEFRAG_A_MAP_END, end) ||
	    nla_put(msg, VMDEFRAG_A_MAP_CLASSES, m->nr, m->classes) ||
	    nla_put(msg, VMDEFRAG_A_MAP_SLABS, m->nr, m->slabs))
		return -EMSGSIZE;
	nest = nla_nest_start(msg, VMDEFRAG_A_SLAB_CACHES);
	if (!nest)
		return -EMSGSIZE;
	for (i = 0; i < rep->nr_slab && i < VMDEFRAG_MAP_MAX_SLABS; i++) {
		vdf_slabcal_name(rep->slab[i].cache, name, sizeof(name));
		cache = nla_nest_start(msg, VMDEFRAG_A_SLAB_CACHE);
		if (!cache || nla_put_string(msg, VMDEFRAG_A_SLAB_NAME, name)) {
			nla_nest_cancel(msg, nest);
			return -EMSGSIZE;
		}
		nla_nest_end(msg, cache);
	}
	nla_nest_end(msg, nest);
	return 0;
}

static int vdf_genl_map(struct sk_buff *skb, struct genl_info *info)
{
	struct vdf_genl_map m = { 0 };
	struct vdf_scan_report *rep;
	unsigned long start_pfn, end_pfn, end;
	struct sk_buff *msg;
	void *hdr;
	u64 first;
	int ret;

	ret = vdf_genl_admin(skb, info->extack);
	if (ret)
		return ret;
	if (!info->attrs[VMDEFRAG_A_MAP_FIRST] || !info->attrs[VMDEFRAG_A_MAP_MAX]) {
		NL_SET_ERR_MSG_MOD(info->extack, "MAP needs MAP_FIRST and MAP_MAX");
		return -EINVAL;
	}
	ret = vdf_scan_ram_span(&start_pfn, &end_pfn);
	if (ret)
		return ret;
	end = vdf_pfn_block(end_pfn + VDF_BLOCK_PAGES - 1);
	first = nla_get_u64(info->attrs[VMDEFRAG_A_MAP_FIRST]);
	if (first > end) {
		NL_SET_ERR_MSG_MOD(info->extack, "MAP_FIRST past the guest's RAM");
		return -ERANGE;
	}
	m.first = first;
	m.nr = min_t(u64, nla_get_u32(info->attrs[VMDEFRAG_A_MAP_MAX]), end - first);
	rep = kzalloc(sizeof(*rep), GFP_KERNEL);
	m.classes = kmalloc(max(m.nr, 1U), GFP_KERNEL);
	m.slabs = kmalloc(max(m.nr, 1U), GFP_KERNEL);
	ret = -ENOMEM;
	if (!rep || !m.classes || !m.slabs)
		goto out_free;
	memset(m.classes, VMDEFRAG_MAP_BYTE(VMDEFRAG_CLASS_OFFLINE, 0), m.nr);
	memset(m.slabs, VMDEFRAG_MAP_NO_SLAB, m.nr);
	vdf_scan_all(rep, vdf_genl_map_block, &m);

	msg = genlmsg_new(2 * m.nr + NLMSG_GOODSIZE, GFP_KERNEL);
	if (!msg)
		goto out_free;
	ret = -EMSGSIZE;
	hdr = genlmsg_put_reply(msg, info, &vdf_genl_family, 0, VMDEFRAG_CMD_MAP);
	if (!hdr || vdf_genl_put_map(msg, &m, end, rep)) {
		nlmsg_free(msg);
		goto out_free;
	}
	genlmsg_end(msg, hdr);
	ret = genlmsg_reply(msg, info);
out_free:
	kfree(m.slabs);
	kfree(m.classes);
	kfree(rep);
	return ret;
}

/* Reply with bytes done, the ranges of @b (sorted here) and optional errno. */
static int vdf_genl_reply_blocks(struct genl_info *info, u8 cmd,
				 struct vdf_blocks *b, bool with_errno, int err)
{
	unsigned int runs = vdf_genl_runs(b);
	struct sk_buff *msg;
	void *hdr;

	msg = genlmsg_new(nla_total_size_64bit(sizeof(u64)) + nla_total_size(0) +
			  runs * vdf_genl_range_size() + nla_total_size(sizeof(s32)),
			  GFP_KERNEL);
	if (!msg)
		return -ENOMEM;
	hdr = genlmsg_put_reply(msg, info, &vdf_genl_family, 0, cmd);
	if (!hdr ||
	    vdf_genl_put_u64(msg, VMDEFRAG_A_BYTES, (u64)b->nr * VMDEFRAG_BLOCK_SIZE) ||
	    vdf_genl_put_ranges(msg, b) ||
	    (with_errno && nla_put_s32(msg, VMDEFRAG_A_ERRNO, err))) {
		nlmsg_free(msg);
		return -EMSGSIZE;
	}
	genlmsg_end(msg, hdr);
	return genlmsg_reply(msg, info);
}

static int vdf_genl_capture(struct sk_buff *skb, struct genl_info *info)
{
	struct vdf_capture_req req = { .mode = VMDEFRAG_MODE_CAPTURE };
	struct nlattr **attrs = info->attrs;
	struct vdf_range *pref = NULL;
	struct vdf_blocks done = { 0 };
	int ret, stop = 0;

	ret = vdf_genl_admin(skb, info->extack);
	if (ret)
		return ret;
	if (!attrs[VMDEFRAG_A_BYTES]) {
		NL_SET_ERR_ATTR_MISS(info->extack, NULL, VMDEFRAG_A_BYTES);
		NL_SET_ERR_MSG_MOD(info->extack, "byte count required");
		return -EINVAL;
	}
	req.bytes = nla_get_u64(attrs[VMDEFRAG_A_BYTES]);
	if (attrs[VMDEFRAG_A_MODE])
		req.mode = nla_get_u32(attrs[VMDEFRAG_A_MODE]);
	if (attrs[VMDEFRAG_A_BUDGET_MS])
		req.budget_ms = nla_get_u32(attrs[VMDEFRAG_A_BUDGET_MS]);
	if (attrs[VMDEFRAG_A_FLOOR_BYTES])
		req.floor_bytes = nla_get_u64(attrs[VMDEFRAG_A_FLOOR_BYTES]);
	req.host = nla_get_flag(attrs[VMDEFRAG_A_HOST]);
	req.strict = nla_get_flag(attrs[VMDEFRAG_A_STRICT]);
	if (attrs[VMDEFRAG_A_EVICT])
		req.evict = nla_get_u32(attrs[VMDEFRAG_A_EVICT]);
	req.portid = info->snd_portid;
	if (req.strict && !attrs[VMDEFRAG_A_RANGES]) {
		NL_SET_ERR_MSG_MOD(info->extack, "strict capture needs ranges");
		return -EINVAL;
	}
	if (attrs[VMDEFRAG_A_RANGES]) {
		ret = vdf_genl_parse_ranges(attrs[VMDEFRAG_A_RANGES], info->extack,
					    &pref, &req.nr_pref);
		if (ret)
			return ret;
		req.pref = pref;
	}

	ret = vdf_capture_run(&req, &done, &stop);
	if (ret)
		goto out_free;
	if (req.mode == VMDEFRAG_MODE_CAPTURE && done.nr)
		vdf_genl_notify(VMDEFRAG_CMD_EVENT_CAPTURED, &done, 0, GFP_KERNEL);
	ret = vdf_genl_reply_blocks(info, VMDEFRAG_CMD_CAPTURE, &done, true, stop);

out_free:
	vdf_blocks_free(&done);
	kvfree(pref);
	return ret;
}

static int vdf_genl_release(struct sk_buff *skb, struct genl_info *info)
{
	struct nlattr **attrs = info->attrs;
	struct vdf_blocks done = { 0 };
	struct vdf_range *r = NULL;
	unsigned int nr;
	int ret;

	ret = vdf_genl_admin(skb, info->extack);
	if (ret)
		return ret;
	if (!!attrs[VMDEFRAG_A_RANGES] == !!attrs[VMDEFRAG_A_BYTES]) {
		NL_SET_ERR_MSG_MOD(info->extack, "give either ranges or a byte count");
		return -EINVAL;
	}
	if (attrs[VMDEFRAG_A_RANGES]) {
		ret = vdf_genl_parse_ranges(attrs[VMDEFRAG_A_RANGES], info->extack,
					    &r, &nr);
		if (ret)
			return ret;
		ret = vdf_capture_release_ranges(r, nr, &done);
	} else {
		ret = vdf_capture_release_bytes(nla_get_u64(attrs[VMDEFRAG_A_BYTES]),
						&done);
	}
	if (done.nr)
		vdf_genl_notify(VMDEFRAG_CMD_EVENT_RELEASED, &done,
				VMDEFRAG_RELEASE_REQUEST, GFP_KERNEL);
	if (!ret)
		ret = vdf_genl_reply_blocks(info, VMDEFRAG_CMD_RELEASE, &done, false, 0);
	vdf_blocks_free(&done);
	kvfree(r);
	return ret;
}

/*
 * LIST.  With VMDEFRAG_A_HOST every block is made PENDING for the dumping
 * socket before it is put in a message, so a block listed to the host can
 * no longer be released under pressure.  The flag is read from the request
 * header directly (the core validated it): how genl hands attributes to a
 * dump differs between kernel versions.
 */
static int vdf_genl_list_dump(struct sk_buff *skb, struct netlink_callback *cb)
{
	bool host = nlmsg_find_attr(cb->nlh, GENL_HDRLEN, VMDEFRAG_A_HOST);
	u32 portid = NETLINK_CB(cb->skb).portid;
	unsigned long idx = cb->args[0];
	struct nlattr *nest;
	void *hdr;
	int ret;

	ret = vdf_genl_admin(cb->skb, cb->extack);
	if (ret)
		return ret;
	if (cb->args[1])
		return 0;
	hdr = genlmsg_put(skb, portid, cb->nlh->nlmsg_seq,
			  &vdf_genl_family, NLM_F_MULTI, VMDEFRAG_CMD_LIST);
	if (!hdr)
		return -EMSGSIZE;
	nest = nla_nest_start(skb, VMDEFRAG_A_RANGES);
	if (!nest) {
		genlmsg_cancel(skb, hdr);
		return -EMSGSIZE;
	}
	for (;;) {
		unsigned long end;

		if (!vdf_capture_next(&idx)) {
			cb->args[1] = 1;
			break;
		}
		if (host && !vdf_capture_mark_pending(idx, portid)) {
			idx++;	/* released meanwhile */
			continue;
		}
		for (end = idx + 1; host ? vdf_capture_mark_pending(end, portid) :
					   vdf_capture_held(end); end++)
			;
		if (vdf_genl_put_range(skb, idx, end))
			break;
		idx = end;
	}
	cb->args[0] = idx;
	nla_nest_end(skb, nest);
	genlmsg_end(skb, hdr);
	return skb->len;
}

static int vdf_genl_stats(struct sk_buff *skb, struct genl_info *info)
{
	struct sk_buff *msg;
	unsigned int i;
	void *hdr;
	int ret;

	ret = vdf_genl_admin(skb, info->extack);
	if (ret)
		return ret;
	msg = genlmsg_new(NLMSG_GOODSIZE, GFP_KERNEL);
	if (!msg)
		return -ENOMEM;
	hdr = genlmsg_put_reply(msg, info, &vdf_genl_family, 0, VMDEFRAG_CMD_STATS);
	if (!hdr)
		goto out_free;
	for (i = 0; i < VDF_STAT_NR; i++)
		if (vdf_genl_put_u64(msg, VMDEFRAG_A_STAT_BLOCKS_SCANNED + i,
				     atomic64_read(&vdf_stats[i])))
			goto out_free;
	if (vdf_genl_put_u64(msg, VMDEFRAG_A_CAPTURED_BYTES,
			     (u64)vdf_capture_count() * VMDEFRAG_BLOCK_SIZE) ||
	    vdf_genl_put_u64(msg, VMDEFRAG_A_PENDING_BYTES,
			     (u64)vdf_capture_pending() * VMDEFRAG_BLOCK_SIZE) ||
	    vdf_genl_put_u64(msg, VMDEFRAG_A_FLOOR_BYTES, vdf_pressure_floor_bytes()))
		goto out_free;
	genlmsg_end(msg, hdr);
	return genlmsg_reply(msg, info);

out_free:
	nlmsg_free(msg);
	return -EMSGSIZE;
}

static int vdf_genl_set(struct sk_buff *skb, struct genl_info *info)
{
	int ret;

	ret = vdf_genl_admin(skb, info->extack);
	if (ret)
		return ret;
	if (!info->attrs[VMDEFRAG_A_FLOOR_BYTES]) {
		NL_SET_ERR_ATTR_MISS(info->extack, NULL, VMDEFRAG_A_FLOOR_BYTES);
		NL_SET_ERR_MSG_MOD(info->extack, "floor required");
		return -EINVAL;
	}
	return vdf_pressure_set_floor(nla_get_u64(info->attrs[VMDEFRAG_A_FLOOR_BYTES]),
				      info->extack);
}

static int vdf_genl_ack(struct sk_buff *skb, struct genl_info *info)
{
	struct nlattr **attrs = info->attrs;
	struct vdf_range *r = NULL;
	unsigned long moved = 0;
	struct sk_buff *msg;
	unsigned int nr = 0;
	void *hdr;
	int ret;

	ret = vdf_genl_admin(skb, info->extack);
	if (ret)
		return ret;
	if (!!attrs[VMDEFRAG_A_RANGES] == nla_get_flag(attrs[VMDEFRAG_A_ALL])) {
		NL_SET_ERR_MSG_MOD(info->extack, "give either ranges or the all flag");
		return -EINVAL;
	}
	if (attrs[VMDEFRAG_A_RANGES]) {
		ret = vdf_genl_parse_ranges(attrs[VMDEFRAG_A_RANGES], info->extack,
					    &r, &nr);
		if (ret)
			return ret;
	}
	ret = vdf_capture_ack(r, nr, &moved);
	kvfree(r);
	if (ret)
		return ret;

	msg = genlmsg_new(nla_total_size_64bit(sizeof(u64)), GFP_KERNEL);
	if (!msg)
		return -ENOMEM;
	hdr = genlmsg_put_reply(msg, info, &vdf_genl_family, 0, VMDEFRAG_CMD_ACK);
	if (!hdr || vdf_genl_put_u64(msg, VMDEFRAG_A_BYTES,
				     (u64)moved * VMDEFRAG_BLOCK_SIZE)) {
		nlmsg_free(msg);
		return -EMSGSIZE;
	}
	genlmsg_end(msg, hdr);
	return genlmsg_reply(msg, info);
}

static const struct genl_small_ops vdf_genl_ops[] = {
	{
		.cmd	= VMDEFRAG_CMD_SCAN,
		.flags	= GENL_ADMIN_PERM,
		.doit	= vdf_genl_scan,
	},
	{
		.cmd	= VMDEFRAG_CMD_CAPTURE,
		.flags	= GENL_ADMIN_PERM,
		.doit	= vdf_genl_capture,
	},
	{
		.cmd	= VMDEFRAG_CMD_RELEASE,
		.flags	= GENL_ADMIN_PERM,
		.doit	= vdf_genl_release,
	},
	{
		.cmd	= VMDEFRAG_CMD_LIST,
		.flags	= GENL_ADMIN_PERM,
		.dumpit	= vdf_genl_list_dump,
	},
	{
		.cmd	= VMDEFRAG_CMD_STATS,
		.flags	= GENL_ADMIN_PERM,
		.doit	= vdf_genl_stats,
	},
	{
		.cmd	= VMDEFRAG_CMD_SET,
		.flags	= GENL_ADMIN_PERM,
		.doit	= vdf_genl_set,
	},
	{
		.cmd	= VMDEFRAG_CMD_ACK,
		.flags	= GENL_ADMIN_PERM,
		.doit	= vdf_genl_ack,
	},
	{
		.cmd	= VMDEFRAG_CMD_MAP,
		.flags	= GENL_ADMIN_PERM,
		.doit	= vdf_genl_map,
	},
};

static const struct genl_multicast_group vdf_genl_mcgrps[] = {
	{ .name = VMDEFRAG_MCGRP_EVENTS, .flags = GENL_MCAST_CAP_SYS_ADMIN },
};

static struct genl_family vdf_genl_family __ro_after_init = {
	.name		= VMDEFRAG_GENL_NAME,
	.version	= VMDEFRAG_GENL_VERSION,
	.maxattr	= VMDEFRAG_A_MAX,
	.policy		= vdf_genl_policy,
	.parallel_ops	= true,
	.module		= THIS_MODULE,
	.small_ops	= vdf_genl_ops,
	.n_small_ops	= ARRAY_SIZE(vdf_genl_ops),
	.mcgrps		= vdf_genl_mcgrps,
	.n_mcgrps	= ARRAY_SIZE(vdf_genl_mcgrps),
};

/* A generic netlink socket closed: its PENDING blocks become HOST. */
static int vdf_genl_sock_event(struct notifier_block *nb, unsigned long event,
			       void *ptr)
{
	struct netlink_notify *n = ptr;

	if (event == NETLINK_URELEASE && n->protocol == NETLINK_GENERIC &&
	    net_eq(n->net, &init_net))
		vdf_capture_owner_gone(n->portid);
	return NOTIFY_DONE;
}

static struct notifier_block vdf_genl_sock_nb = {
	.notifier_call = vdf_genl_sock_event,
};

int vdf_genl_init(void)
{
	int ret;

	ret = netlink_register_notifier(&vdf_genl_sock_nb);
	if (ret)
		return ret;
	ret = genl_register_family(&vdf_genl_family);
	if (ret)
		goto out_unregister_notifier;
	return 0;

out_unregister_notifier:
	netlink_unregister_notifier(&vdf_genl_sock_nb);
	return ret;
}

/* Unregister; returns once no request of ours is running. */
void vdf_genl_exit(void)
{
	genl_unregister_family(&vdf_genl_family);
	netlink_unregister_notifier(&vdf_genl_sock_nb);
}

MODULE_ALIAS_GENL_FAMILY(VMDEFRAG_GENL_NAME);
