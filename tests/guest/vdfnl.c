// SPDX-License-Identifier: GPL-2.0
/*
 * vdfnl: test-only client of the vmdefrag generic netlink family.
 *
 * It speaks include/uapi/vmdefrag_genl.h directly, one command per run, and
 * prints what the module answered as key=value lines for the integration
 * tests to parse:
 *
 *   vdfnl scan
 *   vdfnl capture BYTES [--mode capture|compact] [--range ADDR:LEN]...
 *                       [--budget-ms N] [--floor BYTES] [--host] [--strict]
 *                       [--hold-ms N] [--evict movable|evict-slab|evict]
 *   vdfnl release BYTES | vdfnl release --range ADDR:LEN...
 *   vdfnl list [--host] [--hold-ms N]
 *   vdfnl ack --all | vdfnl ack --range ADDR:LEN...
 *   vdfnl stats | set-floor BYTES
 *   vdfnl events [--count N] [--timeout-ms N]     (multicast listener)
 *   vdfnl raw CASE                                 (malformed requests)
 *   vdfnl raw-cases                                (lists the CASEs)
 *
 * BYTES, ADDR and LEN take 0x hex and K/M/G/T suffixes.  Ranges print as
 * range=0xADDR:0xLEN.  A netlink error prints error=-ERRNO and, when the
 * kernel gave one, extack=MESSAGE, and the exit status is 1; usage and
 * setup errors exit 2.  `raw` sends a request that is deliberately wrong
 * (bad types, lengths, alignment, ranges, counts, flags) so that a test can
 * check the module rejects it: a rejected case exits 1 with its error=.
 * --hold-ms keeps the socket open that long after the reply (the module
 * ties PENDING blocks to the requester's socket).
 *
 * The family-level client -- socket, message, ranges, the transaction with
 * the module's errno and extended ack -- is the agent's (guest-agent/agent/
 * genl.c), and `events` listens through the agent's own event client
 * (nl.c), so what the tests see of the module is what the agent sees.
 * Only the printing and the deliberately malformed requests are here.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <linux/netlink.h>
#include <netlink/genl/ctrl.h>
#include <netlink/genl/genl.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>

#include "genl.h"
#include "nl.h"
#include "uapi/vmdefrag_genl.h"

#define VDFNL_MAX_RANGES	(VMDEFRAG_MAX_REQ_RANGES + 8)

struct vdfnl {
	struct nl_sock *sk;
	int family;
	void (*show)(struct nlattr **tb);	/* prints a reply */
};

static const char *const vdfnl_class_names[] = {
	"captured", "free", "movable", "unmovable", "offline",
};
static const char *const vdfnl_cause_names[] = {
	"slab", "pagetable", "reserved", "pinned", "other", "slab_reclaim",
};
static const char *const vdfnl_migratetype_names[] = {
	"unmovable", "movable", "reclaimable", "highatomic", "cma", "isolate",
	"other",
};
static const char *const vdfnl_stat_names[] = {
	"blocks_scanned", "blocks_vacated", "blocks_failed_busy",
	"blocks_failed_nomem", "blocks_failed_other", "pages_migrated",
	"vacate_ns", "blocks_released", "pressure_releases", "oom_releases",
	"blocks_compacted",
};
static const char *const vdfnl_reason_names[] = {
	"request", "shrinker", "oom", "unload",
};

static void vdfnl_usage(FILE *out)
{
	fputs("usage: vdfnl scan | list | stats\n"
	      "       vdfnl capture BYTES [--mode capture|compact] [--range ADDR:LEN]...\n"
	      "                     [--budget-ms N] [--floor BYTES]\n"
	      "                     [--host] [--strict] [--hold-ms N]\n"
	      "                     [--evict movable|evict-slab|evict]\n"
	      "       vdfnl release BYTES | release --range ADDR:LEN...\n"
	      "       vdfnl list [--host] [--hold-ms N]\n"
	      "       vdfnl ack --all | ack --range ADDR:LEN...\n"
	      "       vdfnl set-floor BYTES\n"
	      "       vdfnl events [--count N] [--timeout-ms N]\n"
	      "       vdfnl raw CASE | raw-cases\n", out);
}

/* Parse a size: decimal or 0x hex, optional K/M/G/T suffix.  0 or -EINVAL. */
static int vdfnl_parse_size(const char *s, uint64_t *ret)
{
	unsigned int shift = 0;
	char *end;
	uint64_t v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	}
	if (*end || (shift && v > (UINT64_MAX >> shift)))
		return -EINVAL;
	*ret = v << shift;
	return 0;
}

static int vdfnl_parse_range(const char *s, struct proto_range *ret)
{
	char buf[128], *colon;
	struct proto_range r;

	if (strlen(s) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, s);
	colon = strchr(buf, ':');
	if (!colon)
		return -EINVAL;
	*colon = '\0';
	if (vdfnl_parse_size(buf, &r.gpa) || vdfnl_parse_size(colon + 1, &r.len))
		return -EINVAL;
	*ret = r;
	return 0;
}

/* ---- receiving ---- */

static void vdfnl_show_ranges(struct nlattr *ranges)
{
	struct nlattr *r, *tb[VMDEFRAG_A_RANGE_MAX + 1];
	unsigned int n = 0;
	int rem;

	nla_for_each_nested(r, ranges, rem) {
		if (nla_parse_nested(tb, VMDEFRAG_A_RANGE_MAX, r, NULL) ||
		    !tb[VMDEFRAG_A_RANGE_ADDR] || !tb[VMDEFRAG_A_RANGE_LEN]) {
			printf("bad_range=1\n");
			continue;
		}
		printf("range=0x%" PRIx64 ":0x%" PRIx64 "\n",
		       (uint64_t)nla_get_u64(tb[VMDEFRAG_A_RANGE_ADDR]),
		       (uint64_t)nla_get_u64(tb[VMDEFRAG_A_RANGE_LEN]));
		n++;
	}
	printf("ranges=%u\n", n);
}

static void vdfnl_show_u64(struct nlattr **tb, int attr, const char *key)
{
	if (tb[attr])
		printf("%s=%" PRIu64 "\n", key, (uint64_t)nla_get_u64(tb[attr]));
}

static void vdfnl_show_hist(struct nlattr *nest, const char *prefix,
			    const char *const *names, unsigned int n)
{
	struct nlattr *a;
	int rem;

	nla_for_each_nested(a, nest, rem) {
		unsigned int i = nla_type(a) - 1;

		if (i < n && names)
			printf("%s.%s=%" PRIu64 "\n", prefix, names[i], (uint64_t)nla_get_u64(a));
		else
			printf("%s.%u=%" PRIu64 "\n", prefix, i, (uint64_t)nla_get_u64(a));
	}
}

static void vdfnl_show_scan(struct nlattr **tb)
{
	struct nlattr *c, *sb[VMDEFRAG_A_SLAB_MAX + 1];
	int rem;

	vdfnl_show_u64(tb, VMDEFRAG_A_TOTAL_BYTES, "total_bytes");
	vdfnl_show_u64(tb, VMDEFRAG_A_FREE_BYTES, "free_bytes");
	vdfnl_show_u64(tb, VMDEFRAG_A_FREE_BLOCK_BYTES, "free_block_bytes");
	vdfnl_show_u64(tb, VMDEFRAG_A_CAPTURABLE_BYTES, "capturable_bytes");
	vdfnl_show_u64(tb, VMDEFRAG_A_CAPTURED_BYTES, "captured_bytes");
	vdfnl_show_u64(tb, VMDEFRAG_A_PENDING_BYTES, "pending_bytes");
	vdfnl_show_u64(tb, VMDEFRAG_A_AVAILABLE_BYTES, "available_bytes");
	vdfnl_show_u64(tb, VMDEFRAG_A_SCAN_NS, "scan_ns");
	vdfnl_show_u64(tb, VMDEFRAG_A_MOVABLE_PAGES, "movable_pages");
	vdfnl_show_u64(tb, VMDEFRAG_A_SLAB_RECLAIM_PAGES, "slab_reclaim_pages");
	vdfnl_show_u64(tb, VMDEFRAG_A_SLAB_RECLAIM_OBJECTS, "slab_reclaim_objects");
	vdfnl_show_u64(tb, VMDEFRAG_A_EVICTED_DENTRIES, "evicted_dentries");
	vdfnl_show_u64(tb, VMDEFRAG_A_EVICTED_INODES, "evicted_inodes");
	vdfnl_show_u64(tb, VMDEFRAG_A_EVICTED_PAGECACHE_BYTES,
		       "evicted_pagecache_bytes");
	vdfnl_show_u64(tb, VMDEFRAG_A_EVICTED_BLOCKS, "evicted_blocks");
	if (tb[VMDEFRAG_A_CLASSES])
		vdfnl_show_hist(tb[VMDEFRAG_A_CLASSES], "class", vdfnl_class_names,
				__VMDEFRAG_CLASS_MAX);
	if (tb[VMDEFRAG_A_COST_HIST])
		vdfnl_show_hist(tb[VMDEFRAG_A_COST_HIST], "cost", NULL, 0);
	if (tb[VMDEFRAG_A_UNMOVABLE])
		vdfnl_show_hist(tb[VMDEFRAG_A_UNMOVABLE], "cause", vdfnl_cause_names,
				__VMDEFRAG_CAUSE_MAX);
	if (tb[VMDEFRAG_A_MIGRATETYPES])
		vdfnl_show_hist(tb[VMDEFRAG_A_MIGRATETYPES], "migratetype",
				vdfnl_migratetype_names, __VMDEFRAG_MT_MAX);
	if (!tb[VMDEFRAG_A_SLAB_CACHES])
		return;
	nla_for_each_nested(c, tb[VMDEFRAG_A_SLAB_CACHES], rem) {
		if (nla_parse_nested(sb, VMDEFRAG_A_SLAB_MAX, c, NULL) ||
		    !sb[VMDEFRAG_A_SLAB_NAME] || !sb[VMDEFRAG_A_SLAB_PAGES] ||
		    !sb[VMDEFRAG_A_SLAB_BLOCKS])
			continue;
		printf("slab.%s=%" PRIu64 ":%" PRIu64 "\n",
		       nla_get_string(sb[VMDEFRAG_A_SLAB_NAME]),
		       (uint64_t)nla_get_u64(sb[VMDEFRAG_A_SLAB_PAGES]),
		       (uint64_t)nla_get_u64(sb[VMDEFRAG_A_SLAB_BLOCKS]));
		if (sb[VMDEFRAG_A_SLAB_RECLAIM_BLOCKS])
			printf("slab_reclaim.%s=%" PRIu64 "\n",
			       nla_get_string(sb[VMDEFRAG_A_SLAB_NAME]),
			       (uint64_t)nla_get_u64(sb[VMDEFRAG_A_SLAB_RECLAIM_BLOCKS]));
	}
}

static void vdfnl_show_blocks(struct nlattr **tb)
{
	vdfnl_show_u64(tb, VMDEFRAG_A_BYTES, "bytes");
	if (tb[VMDEFRAG_A_ERRNO])
		printf("errno=%d\n", (int32_t)nla_get_u32(tb[VMDEFRAG_A_ERRNO]));
	if (tb[VMDEFRAG_A_RANGES])
		vdfnl_show_ranges(tb[VMDEFRAG_A_RANGES]);
}

static void vdfnl_show_stats(struct nlattr **tb)
{
	unsigned int i;

	for (i = 0; i < sizeof(vdfnl_stat_names) / sizeof(vdfnl_stat_names[0]); i++)
		vdfnl_show_u64(tb, VMDEFRAG_A_STAT_BLOCKS_SCANNED + i, vdfnl_stat_names[i]);
	vdfnl_show_u64(tb, VMDEFRAG_A_CAPTURED_BYTES, "captured_bytes");
	vdfnl_show_u64(tb, VMDEFRAG_A_PENDING_BYTES, "pending_bytes");
	vdfnl_show_u64(tb, VMDEFRAG_A_FLOOR_BYTES, "floor_bytes");
}

static int vdfnl_on_reply(struct agent_genl_txn *t, uint8_t cmd, struct nlattr **tb)
{
	struct vdfnl *v = t->out;

	if (!tb)
		printf("bad_reply=1\n");
	else if (v->show)
		v->show(tb);
	return 0;
}

static int vdfnl_open(struct vdfnl *v)
{
	int r = agent_genl_sock(&v->sk, 1 << 20, 0);

	if (r == -ENOMEM)
		return r;
	if (r < 0) {
		fprintf(stderr, "vdfnl: cannot open a generic netlink socket\n");
		return -EIO;
	}
	if (agent_genl_family(v->sk, &v->family) < 0) {
		fprintf(stderr, "vdfnl: family \"%s\" not found (module not loaded?)\n",
			VMDEFRAG_GENL_NAME);
		return -ENOENT;
	}
	return 0;
}

/* Start a message for @cmd with room for @size bytes of attributes. */
static struct nl_msg *vdfnl_msg(struct vdfnl *v, uint8_t cmd, int flags, size_t size)
{
	return agent_genl_msg(v->family, cmd, flags, size + 4096);
}

/* Send @msg (consumed), wait for the reply and ack; 1 on kernel error. */
static int vdfnl_transact(struct vdfnl *v, struct nl_msg *msg)
{
	struct agent_genl_txn t = { .reply = vdfnl_on_reply, .out = v };
	int ret = agent_genl_transact(v->sk, msg, &t);

	if (t.nlerr && !t.err) {
		printf("error=-%d\n%s_error=%s\n", EIO, t.sent ? "recv" : "send",
		       nl_geterror(t.nlerr));
		return 1;
	}
	if (ret < 0) {
		printf("error=%d\nerror_name=%s\n", ret, strerror(-ret));
		if (t.extack[0])
			printf("extack=%s\n", t.extack);
		return 1;
	}
	return 0;
}

/* ---- commands ---- */

/* Keep the socket (and what the module ties to it) for @ms, then go on. */
static void vdfnl_hold(uint64_t ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000 };

	fflush(stdout);
	while (ms && nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static int vdfnl_simple(struct vdfnl *v, uint8_t cmd, int flags, void (*show)(struct nlattr **))
{
	struct nl_msg *msg = vdfnl_msg(v, cmd, flags, 0);

	if (!msg)
		return 2;
	v->show = show;
	return vdfnl_transact(v, msg);
}

static int vdfnl_capture(struct vdfnl *v, int argc, char **argv)
{
	static struct proto_range r[VDFNL_MAX_RANGES];
	uint64_t bytes, floor = 0, budget = 0, hold = 0;
	unsigned int n = 0, mode = VMDEFRAG_MODE_CAPTURE;
	int i, host = 0, strict = 0, evict = -1, ret;
	struct nl_msg *msg;

	if (argc < 1 || vdfnl_parse_size(argv[0], &bytes))
		return vdfnl_usage(stderr), 2;
	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--mode") && i + 1 < argc) {
			i++;
			if (!strcmp(argv[i], "compact"))
				mode = VMDEFRAG_MODE_COMPACT;
			else if (strcmp(argv[i], "capture"))
				return vdfnl_usage(stderr), 2;
		} else if (!strcmp(argv[i], "--range") && i + 1 < argc && n < VDFNL_MAX_RANGES) {
			if (vdfnl_parse_range(argv[++i], &r[n++]))
				return vdfnl_usage(stderr), 2;
		} else if (!strcmp(argv[i], "--budget-ms") && i + 1 < argc) {
			if (vdfnl_parse_size(argv[++i], &budget) || budget > UINT32_MAX)
				return vdfnl_usage(stderr), 2;
		} else if (!strcmp(argv[i], "--floor") && i + 1 < argc) {
			if (vdfnl_parse_size(argv[++i], &floor))
				return vdfnl_usage(stderr), 2;
		} else if (!strcmp(argv[i], "--hold-ms") && i + 1 < argc) {
			if (vdfnl_parse_size(argv[++i], &hold))
				return vdfnl_usage(stderr), 2;
		} else if (!strcmp(argv[i], "--host")) {
			host = 1;
		} else if (!strcmp(argv[i], "--strict")) {
			strict = 1;
		} else if (!strcmp(argv[i], "--evict") && i + 1 < argc) {
			i++;
			if (!strcmp(argv[i], "movable"))
				evict = VMDEFRAG_EVICT_NONE;
			else if (!strcmp(argv[i], "evict-slab"))
				evict = VMDEFRAG_EVICT_SLAB;
			else if (!strcmp(argv[i], "evict"))
				evict = VMDEFRAG_EVICT_ALL;
			else
				evict = atoi(argv[i]);	/* raw, for rejection tests */
		} else {
			return vdfnl_usage(stderr), 2;
		}
	}
	msg = vdfnl_msg(v, VMDEFRAG_CMD_CAPTURE, 0, n * 32);
	if (!msg || nla_put_u64(msg, VMDEFRAG_A_BYTES, bytes) ||
	    nla_put_u32(msg, VMDEFRAG_A_MODE, mode) ||
	    (budget && nla_put_u32(msg, VMDEFRAG_A_BUDGET_MS, budget)) ||
	    (floor && nla_put_u64(msg, VMDEFRAG_A_FLOOR_BYTES, floor)) ||
	    (host && nla_put_flag(msg, VMDEFRAG_A_HOST)) ||
	    (strict && nla_put_flag(msg, VMDEFRAG_A_STRICT)) ||
	    (evict >= 0 && nla_put_u32(msg, VMDEFRAG_A_EVICT, (uint32_t)evict)) ||
	    (n && agent_genl_put_ranges(msg, r, n)))
		return 2;
	v->show = vdfnl_show_blocks;
	ret = vdfnl_transact(v, msg);
	vdfnl_hold(hold);
	return ret;
}

static int vdfnl_list(struct vdfnl *v, int argc, char **argv)
{
	uint64_t hold = 0;
	struct nl_msg *msg;
	int i, host = 0, ret;

	for (i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--host")) {
			host = 1;
		} else if (!strcmp(argv[i], "--hold-ms") && i + 1 < argc) {
			if (vdfnl_parse_size(argv[++i], &hold))
				return vdfnl_usage(stderr), 2;
		} else {
			return vdfnl_usage(stderr), 2;
		}
	}
	msg = vdfnl_msg(v, VMDEFRAG_CMD_LIST, NLM_F_DUMP, 0);
	if (!msg || (host && nla_put_flag(msg, VMDEFRAG_A_HOST)))
		return 2;
	v->show = vdfnl_show_blocks;
	ret = vdfnl_transact(v, msg);
	vdfnl_hold(hold);
	return ret;
}

static int vdfnl_ack(struct vdfnl *v, int argc, char **argv)
{
	static struct proto_range r[VDFNL_MAX_RANGES];
	unsigned int n = 0;
	struct nl_msg *msg;
	int i, all = 0;

	for (i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--range") && i + 1 < argc && n < VDFNL_MAX_RANGES) {
			if (vdfnl_parse_range(argv[++i], &r[n++]))
				return vdfnl_usage(stderr), 2;
		} else if (!strcmp(argv[i], "--all")) {
			all = 1;
		} else {
			return vdfnl_usage(stderr), 2;
		}
	}
	if (all == !!n)
		return vdfnl_usage(stderr), 2;
	msg = vdfnl_msg(v, VMDEFRAG_CMD_ACK, 0, n * 32);
	if (!msg || (all && nla_put_flag(msg, VMDEFRAG_A_ALL)) ||
	    (n && agent_genl_put_ranges(msg, r, n)))
		return 2;
	v->show = vdfnl_show_blocks;
	return vdfnl_transact(v, msg);
}

static int vdfnl_release(struct vdfnl *v, int argc, char **argv)
{
	static struct proto_range r[VDFNL_MAX_RANGES];
	unsigned int n = 0;
	struct nl_msg *msg;
	uint64_t bytes = 0;
	int i, have_bytes = 0;

	for (i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--range") && i + 1 < argc && n < VDFNL_MAX_RANGES) {
			if (vdfnl_parse_range(argv[++i], &r[n++]))
				return vdfnl_usage(stderr), 2;
		} else if (!have_bytes && !vdfnl_parse_size(argv[i], &bytes)) {
			have_bytes = 1;
		} else {
			return vdfnl_usage(stderr), 2;
		}
	}
	if (have_bytes == !!n)
		return vdfnl_usage(stderr), 2;
	msg = vdfnl_msg(v, VMDEFRAG_CMD_RELEASE, 0, n * 32);
	if (!msg || (have_bytes && nla_put_u64(msg, VMDEFRAG_A_BYTES, bytes)) ||
	    (n && agent_genl_put_ranges(msg, r, n)))
		return 2;
	v->show = vdfnl_show_blocks;
	return vdfnl_transact(v, msg);
}

static int vdfnl_set_floor(struct vdfnl *v, int argc, char **argv)
{
	struct nl_msg *msg;
	uint64_t bytes;

	if (argc != 1 || vdfnl_parse_size(argv[0], &bytes))
		return vdfnl_usage(stderr), 2;
	msg = vdfnl_msg(v, VMDEFRAG_CMD_SET, 0, 0);
	if (!msg || nla_put_u64(msg, VMDEFRAG_A_FLOOR_BYTES, bytes))
		return 2;
	v->show = NULL;
	return vdfnl_transact(v, msg);
}

/* One module event, as the agent receives it. */
static void vdfnl_on_event(void *arg, uint8_t cmd, uint32_t reason,
			   const struct agent_ranges *ranges)
{
	uint64_t *seen = arg;

	printf("event=%s\n", cmd == VMDEFRAG_CMD_EVENT_CAPTURED ? "captured" : "released");
	if (cmd == VMDEFRAG_CMD_EVENT_RELEASED)
		printf("reason=%s\n", reason < 4 ? vdfnl_reason_names[reason] : "?");
	for (size_t i = 0; i < ranges->n; i++)
		printf("range=0x%" PRIx64 ":0x%" PRIx64 "\n",
		       ranges->v[i].gpa, ranges->v[i].len);
	printf("ranges=%zu\n", ranges->n);
	(*seen)++;
}

/*
 * Listen to the events group until @count events or the timeout, through
 * the agent's own event client (nl.c).
 */
static int vdfnl_events(struct vdfnl *v, int argc, char **argv)
{
	uint64_t count = 1, timeout_ms = 10000, seen = 0;
	struct agent_nl *nl;
	struct pollfd pfd;
	int i;

	for (i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--count") && i + 1 < argc) {
			if (vdfnl_parse_size(argv[++i], &count))
				return vdfnl_usage(stderr), 2;
		} else if (!strcmp(argv[i], "--timeout-ms") && i + 1 < argc) {
			if (vdfnl_parse_size(argv[++i], &timeout_ms))
				return vdfnl_usage(stderr), 2;
		} else {
			return vdfnl_usage(stderr), 2;
		}
	}
	if (agent_nl_open(&nl) < 0) {
		printf("error=-%d\n", ENOENT);
		return 1;
	}
	printf("listening=1\n");
	fflush(stdout);
	pfd.fd = agent_nl_event_fd(nl);
	pfd.events = POLLIN;
	while (seen < count) {
		if (poll(&pfd, 1, (int)timeout_ms) <= 0)
			break;
		(void)agent_nl_events_recv(nl, vdfnl_on_event, &seen);
		fflush(stdout);
	}
	printf("events=%d\n", (int)seen);
	agent_nl_close(nl);
	return 0;
}

/* ---- malformed requests ---- */

/* Append an attribute with an arbitrary payload length. */
static int vdfnl_put_raw(struct nl_msg *msg, int type, size_t len)
{
	char zero[64] = { 0 };

	return nla_put(msg, type, (int)len, zero);
}

static int vdfnl_raw_ranges(struct nl_msg *msg, uint64_t addr, uint64_t len, unsigned int n)
{
	static struct proto_range r[VDFNL_MAX_RANGES];
	unsigned int i;

	for (i = 0; i < n; i++) {
		r[i].gpa = addr + (uint64_t)i * VMDEFRAG_BLOCK_SIZE;
		r[i].len = len;
	}
	return agent_genl_put_ranges(msg, r, n);
}

struct vdfnl_raw_case {
	const char *name;
	uint8_t cmd;
	int (*build)(struct nl_msg *msg);
};

static int vdfnl_raw_bytes_u32(struct nl_msg *m)
{
	return nla_put_u32(m, VMDEFRAG_A_BYTES, 1 << 21);
}

static int vdfnl_raw_bytes_long(struct nl_msg *m)
{
	return vdfnl_put_raw(m, VMDEFRAG_A_BYTES, 12);
}

static int vdfnl_raw_mode_bad(struct nl_msg *m)
{
	return nla_put_u64(m, VMDEFRAG_A_BYTES, 1 << 21) ||
	       nla_put_u32(m, VMDEFRAG_A_MODE, 7);
}

static int vdfnl_raw_budget_zero(struct nl_msg *m)
{
	return nla_put_u64(m, VMDEFRAG_A_BYTES, 1 << 21) ||
	       nla_put_u32(m, VMDEFRAG_A_BUDGET_MS, 0);
}

static int vdfnl_raw_unknown_attr(struct nl_msg *m)
{
	return nla_put_u64(m, VMDEFRAG_A_BYTES, 1 << 21) ||
	       nla_put_u32(m, VMDEFRAG_A_MAX + 7, 1);
}

static int vdfnl_raw_reply_attr(struct nl_msg *m)
{
	return nla_put_u64(m, VMDEFRAG_A_BYTES, 1 << 21) ||
	       nla_put_u64(m, VMDEFRAG_A_SCAN_NS, 1);
}

static int vdfnl_raw_missing_bytes(struct nl_msg *m)
{
	return nla_put_u32(m, VMDEFRAG_A_MODE, VMDEFRAG_MODE_CAPTURE);
}

static int vdfnl_raw_misaligned(struct nl_msg *m)
{
	return nla_put_u64(m, VMDEFRAG_A_BYTES, 1 << 21) ||
	       vdfnl_raw_ranges(m, 0x40001000ULL, VMDEFRAG_BLOCK_SIZE, 1);
}

static int vdfnl_raw_len_misaligned(struct nl_msg *m)
{
	return nla_put_u64(m, VMDEFRAG_A_BYTES, 1 << 21) ||
	       vdfnl_raw_ranges(m, 0x20000000ULL, 0x1000, 1);
}

static int vdfnl_raw_zero_len(struct nl_msg *m)
{
	return nla_put_u64(m, VMDEFRAG_A_BYTES, 1 << 21) ||
	       vdfnl_raw_ranges(m, 0x20000000ULL, 0, 1);
}

static int vdfnl_raw_out_of_ram(struct nl_msg *m)
{
	return nla_put_u64(m, VMDEFRAG_A_BYTES, 1 << 21) ||
	       vdfnl_raw_ranges(m, 1ULL << 44, VMDEFRAG_BLOCK_SIZE, 1);
}

static int vdfnl_raw_overflow(struct nl_msg *m)
{
	return nla_put_u64(m, VMDEFRAG_A_BYTES, 1 << 21) ||
	       vdfnl_raw_ranges(m, UINT64_MAX - VMDEFRAG_BLOCK_SIZE + 1,
				4 * VMDEFRAG_BLOCK_SIZE, 1);
}

static int vdfnl_raw_too_many(struct nl_msg *m)
{
	/*
	 * Full ranges cannot exceed the limit in one nest (u16 length), so
	 * the extra entries are empty nests: the count is checked first.
	 */
	struct nlattr *nest;
	unsigned int i;

	if (nla_put_u64(m, VMDEFRAG_A_BYTES, 1 << 21))
		return -1;
	nest = nla_nest_start(m, VMDEFRAG_A_RANGES | NLA_F_NESTED);
	if (!nest)
		return -1;
	for (i = 0; i <= VMDEFRAG_MAX_REQ_RANGES; i++)
		if (nla_put(m, VMDEFRAG_A_RANGE | NLA_F_NESTED, 0, NULL))
			return -1;
	return nla_nest_end(m, nest);
}

static int vdfnl_raw_no_ranges(struct nl_msg *m)
{
	/* libnl drops empty nests, so put the empty attribute by hand */
	return nla_put_u64(m, VMDEFRAG_A_BYTES, 1 << 21) ||
	       nla_put(m, VMDEFRAG_A_RANGES | NLA_F_NESTED, 0, NULL);
}

static int vdfnl_raw_range_no_len(struct nl_msg *m)
{
	struct nlattr *nest, *one;

	if (nla_put_u64(m, VMDEFRAG_A_BYTES, 1 << 21))
		return -1;
	nest = nla_nest_start(m, VMDEFRAG_A_RANGES | NLA_F_NESTED);
	one = nest ? nla_nest_start(m, VMDEFRAG_A_RANGE | NLA_F_NESTED) : NULL;
	if (!one || nla_put_u64(m, VMDEFRAG_A_RANGE_ADDR, 0x20000000ULL))
		return -1;
	nla_nest_end(m, one);
	nla_nest_end(m, nest);
	return 0;
}

static int vdfnl_raw_range_u32(struct nl_msg *m)
{
	struct nlattr *nest, *one;

	if (nla_put_u64(m, VMDEFRAG_A_BYTES, 1 << 21))
		return -1;
	nest = nla_nest_start(m, VMDEFRAG_A_RANGES | NLA_F_NESTED);
	one = nest ? nla_nest_start(m, VMDEFRAG_A_RANGE | NLA_F_NESTED) : NULL;
	if (!one || nla_put_u32(m, VMDEFRAG_A_RANGE_ADDR, 0x20000000U) ||
	    nla_put_u64(m, VMDEFRAG_A_RANGE_LEN, VMDEFRAG_BLOCK_SIZE))
		return -1;
	nla_nest_end(m, one);
	nla_nest_end(m, nest);
	return 0;
}

static int vdfnl_raw_ranges_flat(struct nl_msg *m)
{
	/* a u64 where a nest belongs */
	return nla_put_u64(m, VMDEFRAG_A_BYTES, 1 << 21) ||
	       nla_put_u64(m, VMDEFRAG_A_RANGES, 0x20000000ULL);
}

static int vdfnl_raw_not_nested(struct nl_msg *m)
{
	/* a nest without NLA_F_NESTED */
	struct nlattr *nest, *one;

	if (nla_put_u64(m, VMDEFRAG_A_BYTES, 1 << 21))
		return -1;
	nest = nla_nest_start(m, VMDEFRAG_A_RANGES);
	one = nest ? nla_nest_start(m, VMDEFRAG_A_RANGE) : NULL;
	if (!one || nla_put_u64(m, VMDEFRAG_A_RANGE_ADDR, 0x20000000ULL) ||
	    nla_put_u64(m, VMDEFRAG_A_RANGE_LEN, VMDEFRAG_BLOCK_SIZE))
		return -1;
	nla_nest_end(m, one);
	nla_nest_end(m, nest);
	/* libnl sets the flag itself; take it off again */
	nest->nla_type &= ~NLA_F_NESTED;
	return 0;
}

static int vdfnl_raw_truncated(struct nl_msg *m)
{
	/* an attribute header claiming more payload than the message has */
	struct nlattr *a = nlmsg_reserve(m, sizeof(*a), NLMSG_ALIGNTO);

	if (!a)
		return -1;
	a->nla_type = VMDEFRAG_A_BYTES;
	a->nla_len = 64;
	return 0;
}

static int vdfnl_raw_release_both(struct nl_msg *m)
{
	return nla_put_u64(m, VMDEFRAG_A_BYTES, 1 << 21) ||
	       vdfnl_raw_ranges(m, 0x20000000ULL, VMDEFRAG_BLOCK_SIZE, 1);
}

static int vdfnl_raw_release_misaligned(struct nl_msg *m)
{
	return vdfnl_raw_ranges(m, 0x40001000ULL, VMDEFRAG_BLOCK_SIZE, 1);
}

static int vdfnl_raw_release_outside(struct nl_msg *m)
{
	return vdfnl_raw_ranges(m, 1ULL << 44, VMDEFRAG_BLOCK_SIZE, 1);
}

static int vdfnl_raw_strict_alone(struct nl_msg *m)
{
	return nla_put_u64(m, VMDEFRAG_A_BYTES, 1 << 21) ||
	       nla_put_flag(m, VMDEFRAG_A_STRICT);
}

static int vdfnl_raw_flag_value(struct nl_msg *m)
{
	/* a flag carrying a payload */
	return nla_put_u64(m, VMDEFRAG_A_BYTES, 1 << 21) ||
	       nla_put_u32(m, VMDEFRAG_A_HOST, 1);
}

static int vdfnl_raw_ack_both(struct nl_msg *m)
{
	return nla_put_flag(m, VMDEFRAG_A_ALL) ||
	       vdfnl_raw_ranges(m, 0x20000000ULL, VMDEFRAG_BLOCK_SIZE, 1);
}

static int vdfnl_raw_nothing(struct nl_msg *m)
{
	return 0;
}

static int vdfnl_raw_floor_low(struct nl_msg *m)
{
	return nla_put_u64(m, VMDEFRAG_A_FLOOR_BYTES, 4096);
}

static int vdfnl_raw_floor_u32(struct nl_msg *m)
{
	return nla_put_u32(m, VMDEFRAG_A_FLOOR_BYTES, 1U << 30);
}

static const struct vdfnl_raw_case vdfnl_raw_cases[] = {
	{ "bytes-u32",		VMDEFRAG_CMD_CAPTURE,	vdfnl_raw_bytes_u32 },
	{ "bytes-long",		VMDEFRAG_CMD_CAPTURE,	vdfnl_raw_bytes_long },
	{ "mode-bad",		VMDEFRAG_CMD_CAPTURE,	vdfnl_raw_mode_bad },
	{ "budget-zero",	VMDEFRAG_CMD_CAPTURE,	vdfnl_raw_budget_zero },
	{ "unknown-attr",	VMDEFRAG_CMD_CAPTURE,	vdfnl_raw_unknown_attr },
	{ "reply-attr",		VMDEFRAG_CMD_CAPTURE,	vdfnl_raw_reply_attr },
	{ "missing-bytes",	VMDEFRAG_CMD_CAPTURE,	vdfnl_raw_missing_bytes },
	{ "misaligned",		VMDEFRAG_CMD_CAPTURE,	vdfnl_raw_misaligned },
	{ "len-misaligned",	VMDEFRAG_CMD_CAPTURE,	vdfnl_raw_len_misaligned },
	{ "zero-len",		VMDEFRAG_CMD_CAPTURE,	vdfnl_raw_zero_len },
	{ "out-of-ram",		VMDEFRAG_CMD_CAPTURE,	vdfnl_raw_out_of_ram },
	{ "overflow",		VMDEFRAG_CMD_CAPTURE,	vdfnl_raw_overflow },
	{ "too-many",		VMDEFRAG_CMD_CAPTURE,	vdfnl_raw_too_many },
	{ "no-ranges",		VMDEFRAG_CMD_CAPTURE,	vdfnl_raw_no_ranges },
	{ "range-no-len",	VMDEFRAG_CMD_CAPTURE,	vdfnl_raw_range_no_len },
	{ "range-u32",		VMDEFRAG_CMD_CAPTURE,	vdfnl_raw_range_u32 },
	{ "ranges-flat",	VMDEFRAG_CMD_CAPTURE,	vdfnl_raw_ranges_flat },
	{ "not-nested",		VMDEFRAG_CMD_CAPTURE,	vdfnl_raw_not_nested },
	{ "truncated",		VMDEFRAG_CMD_CAPTURE,	vdfnl_raw_truncated },
	{ "release-both",	VMDEFRAG_CMD_RELEASE,	vdfnl_raw_release_both },
	{ "release-none",	VMDEFRAG_CMD_RELEASE,	vdfnl_raw_nothing },
	{ "release-misaligned",	VMDEFRAG_CMD_RELEASE,	vdfnl_raw_release_misaligned },
	{ "release-outside",	VMDEFRAG_CMD_RELEASE,	vdfnl_raw_release_outside },
	{ "strict-alone",	VMDEFRAG_CMD_CAPTURE,	vdfnl_raw_strict_alone },
	{ "flag-value",		VMDEFRAG_CMD_CAPTURE,	vdfnl_raw_flag_value },
	{ "ack-both",		VMDEFRAG_CMD_ACK,	vdfnl_raw_ack_both },
	{ "ack-none",		VMDEFRAG_CMD_ACK,	vdfnl_raw_nothing },
	{ "ack-misaligned",	VMDEFRAG_CMD_ACK,	vdfnl_raw_release_misaligned },
	{ "set-missing",	VMDEFRAG_CMD_SET,	vdfnl_raw_nothing },
	{ "set-floor-low",	VMDEFRAG_CMD_SET,	vdfnl_raw_floor_low },
	{ "set-floor-u32",	VMDEFRAG_CMD_SET,	vdfnl_raw_floor_u32 },
	{ "unknown-cmd",	99,			vdfnl_raw_nothing },
	{ "event-cmd",		VMDEFRAG_CMD_EVENT_CAPTURED, vdfnl_raw_nothing },
};

#define VDFNL_NR_RAW (sizeof(vdfnl_raw_cases) / sizeof(vdfnl_raw_cases[0]))

static int vdfnl_raw(struct vdfnl *v, const char *name)
{
	const struct vdfnl_raw_case *c = NULL;
	struct nl_msg *msg;
	unsigned int i;

	for (i = 0; i < VDFNL_NR_RAW; i++)
		if (!strcmp(vdfnl_raw_cases[i].name, name))
			c = &vdfnl_raw_cases[i];
	if (!c) {
		fprintf(stderr, "vdfnl: unknown raw case \"%s\" (see raw-cases)\n", name);
		return 2;
	}
	msg = vdfnl_msg(v, c->cmd, 0, (VMDEFRAG_MAX_REQ_RANGES + 2) * 48);
	if (!msg || c->build(msg)) {
		fprintf(stderr, "vdfnl: cannot build raw case \"%s\"\n", name);
		return 2;
	}
	printf("raw=%s\n", name);
	v->show = vdfnl_show_blocks;
	return vdfnl_transact(v, msg);
}

int main(int argc, char **argv)
{
	struct vdfnl v = { 0 };
	const char *cmd;
	unsigned int i;
	int ret;

	if (argc < 2) {
		vdfnl_usage(stderr);
		return 2;
	}
	cmd = argv[1];
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
		vdfnl_usage(stdout);
		return 0;
	}
	if (!strcmp(cmd, "raw-cases")) {
		for (i = 0; i < VDFNL_NR_RAW; i++)
			printf("%s\n", vdfnl_raw_cases[i].name);
		return 0;
	}
	ret = vdfnl_open(&v);
	if (ret) {
		printf("error=%d\n", ret);
		return 2;
	}
	if (!strcmp(cmd, "scan"))
		ret = vdfnl_simple(&v, VMDEFRAG_CMD_SCAN, 0, vdfnl_show_scan);
	else if (!strcmp(cmd, "stats"))
		ret = vdfnl_simple(&v, VMDEFRAG_CMD_STATS, 0, vdfnl_show_stats);
	else if (!strcmp(cmd, "list"))
		ret = vdfnl_list(&v, argc - 2, argv + 2);
	else if (!strcmp(cmd, "ack"))
		ret = vdfnl_ack(&v, argc - 2, argv + 2);
	else if (!strcmp(cmd, "capture"))
		ret = vdfnl_capture(&v, argc - 2, argv + 2);
	else if (!strcmp(cmd, "release"))
		ret = vdfnl_release(&v, argc - 2, argv + 2);
	else if (!strcmp(cmd, "set-floor"))
		ret = vdfnl_set_floor(&v, argc - 2, argv + 2);
	else if (!strcmp(cmd, "events"))
		ret = vdfnl_events(&v, argc - 2, argv + 2);
	else if (!strcmp(cmd, "raw") && argc == 3)
		ret = vdfnl_raw(&v, argv[2]);
	else
		ret = (vdfnl_usage(stderr), 2);
	fflush(stdout);
	nl_socket_free(v.sk);
	return ret;
}
