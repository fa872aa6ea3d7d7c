/* SPDX-License-Identifier: GPL-2.0 */
/*
 * relay.c - the agent's session with the host and its relay to the module.
 *
 * Host side, one virtio-serial port, in one of three states:
 *
 *   DOWN    no host process has the port open (POLLHUP).  The port is not
 *           polled (it would report POLLHUP without end); every tick checks
 *           whether the host came back.  Events are dropped and counted.
 *   UP      frames flow.  Entered on connect: the stream decoder is reset
 *           and HELLO sent.  Each whole frame is decoded with the shared
 *           codec; requests become generic netlink commands and their
 *           replies become responses; module events become EVT_* frames.
 *   DESYNC  the host sent a corrupt frame header.  The stream cannot be
 *           trusted past it, so input is discarded until the host
 *           disconnects (and reconnects into UP with a fresh decoder) or a
 *           host HELLO header shows up in the input: a host starts every
 *           connection with HELLO, and a quick close + reopen of the port
 *           can pass unseen (the driver only shows the current state), so
 *           that HELLO is the new connection's first byte.
 *
 * A read of 0 or POLLHUP moves UP/DESYNC to DOWN, as does a write the host
 * does not take (EPIPE, or no room for AGENT_RELAY_WRITE_MS).  Every host
 * HELLO is answered with the guest's HELLO.
 *
 * Capture handshake (include/uapi/vmdefrag_genl.h, "Host handshake"):
 * every CAPTURE and LIST relayed from the host carries VMDEFRAG_A_HOST, so
 * the blocks it reports stay PENDING (not releasable under pressure) until
 * the host ACKs them.  When the host goes away (DOWN) or starts a new
 * session (a host HELLO), no reclaim of the old session can still be in
 * flight: the host closes its end only after its last punch returned.  So
 * the first thing done then is a genl ACK with VMDEFRAG_A_ALL, making
 * every PENDING block releasable again.
 *
 * Module events are batched: consecutive events of the same kind and
 * reason are merged for up to AGENT_RELAY_BATCH_MS (or until a frame's
 * worth of ranges) and sent as one EVT_* run, because under pressure the
 * module reports each 2 MiB block it gives back on its own, and the host
 * rate-limits what a guest may send.  A batch is flushed before any other
 * frame goes out, so the host sees events and responses in the order the
 * module produced them.
 *
 * Module side: a generic netlink client (nl.c) that may be absent (module
 * not loaded yet, or unloaded).  While it is, requests are answered with
 * -ENODEV and every tick retries; when it comes (back), HELLO is sent
 * again so the host sees PROTO_FEAT_MODULE.
 *
 * Memory signals (protocol version 3, meminfo.c): every
 * AGENT_RELAY_SAMPLE_MS the relay samples the guest's memory signals and
 * sends EVT_MEMINFO when its period (--meminfo-interval) is due or a
 * signal crossed a threshold; only to a host whose HELLO offered version
 * 3 (an older host would drop the session on an unknown event).
 *
 * Everything runs on the main loop's thread; requests are handled one at a
 * time, in order, and the module's replies can take seconds (a CAPTURE).
 */
#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "clock.h"
#include "log.h"
#include "meminfo.h"
#include "nl.h"
#include "outbuf.h"
#include "port.h"
#include "relay.h"
#include "vmdefrag/proto.h"

#define AGENT_RELAY_WRITE_MS	5000
#define AGENT_RELAY_POLL_MS	250	/* host reconnect check while DOWN */
#define AGENT_RELAY_NL_RETRY_MS	1000
#define AGENT_RELAY_BATCH_MS	100	/* longest a module event waits */
#define AGENT_RELAY_SAMPLE_MS	500	/* memory signals sampled this often */
/* DESYNC keeps this many bytes between reads to find a split HELLO header */
#define AGENT_RELAY_CARRY	(PROTO_HDR_SIZE - 1)

enum agent_relay_state {
	AGENT_HOST_DOWN,
	AGENT_HOST_UP,
	AGENT_HOST_DESYNC,
};

static const char *const agent_relay_reasons[] = {
	[VMDEFRAG_RELEASE_REQUEST]	= "request",
	[VMDEFRAG_RELEASE_SHRINKER]	= "shrinker",
	[VMDEFRAG_RELEASE_OOM]		= "oom",
	[VMDEFRAG_RELEASE_UNLOAD]	= "unload",
};

struct agent_relay {
	int port_fd;
	enum agent_relay_state state;
	struct agent_nl *nl;		/* NULL while the module is absent */
	bool nl_absent_logged;
	unsigned int stats_interval_s;
	uint64_t next_stats_ms;		/* CLOCK_MONOTONIC */
	uint64_t next_nl_retry_ms;
	unsigned int meminfo_interval_ms;	/* EVT_MEMINFO period, 0: none */
	uint64_t next_sample_ms;	/* next look at the memory signals */
	uint64_t next_meminfo_ms;	/* next periodic EVT_MEMINFO */
	struct agent_meminfo mem;	/* the signals' sampler */
	uint64_t events_dropped;	/* while DOWN */
	struct agent_ranges batch;	/* module events not sent yet */
	uint8_t batch_cmd;		/* their VMDEFRAG_CMD_EVENT_* */
	uint32_t batch_reason;		/* their release reason */
	uint64_t batch_due_ms;		/* flush by then (CLOCK_MONOTONIC) */
	uint16_t version;		/* negotiated with the host's HELLO,
					 * 0 before one */
	struct proto_decoder dec;
	struct proto_msg in;		/* the host frame being handled */
	struct proto_msg out;		/* the frame being sent */
	uint8_t wbuf[PROTO_MAX_FRAME];	/* the frame being encoded */
	struct outbuf port_out;		/* its bytes the port has not taken */
	size_t carry;			/* DESYNC: tail bytes kept before rbuf */
	uint8_t rbuf[AGENT_RELAY_CARRY + PROTO_MAX_FRAME];
};

/*
 * The host's session ended: no reclaim of it can be in flight, so every
 * PENDING block becomes releasable (ACK with VMDEFRAG_A_ALL).
 */
static void agent_relay_ack_all(struct agent_relay *r, const char *why)
{
	uint64_t bytes = 0;
	int ret;

	if (!r->nl)
		return;
	ret = agent_nl_ack(r->nl, NULL, 0, &bytes);
	if (ret < 0)
		log_warning_errno(ret, "ACK of every pending block "
				"(%s) failed: %m", why);
	else
		log_info("%s: acknowledged every pending block (%llu MiB)", why,
			 (unsigned long long)(bytes >> 20));
}

static void agent_relay_host_down(struct agent_relay *r, const char *why)
{
	if (r->state == AGENT_HOST_DOWN)
		return;
	agent_relay_ack_all(r, "host disconnected");
	log_info("host disconnected (%s)", why);
	r->state = AGENT_HOST_DOWN;
}

/* Send out as one frame; a host that does not take it is DOWN. */
static int agent_relay_send_raw(struct agent_relay *r, size_t len)
{
	int ret;

	if (r->state != AGENT_HOST_UP)
		return -ENOTCONN;
	ret = outbuf_append(&r->port_out, r->wbuf, len);
	if (ret == 0)
		ret = outbuf_drain(&r->port_out, r->port_fd, AGENT_RELAY_WRITE_MS);
	if (ret < 0) {
		/* the frame's tail is lost with the connection */
		outbuf_clear(&r->port_out);
		agent_relay_host_down(r, ret == -ETIMEDOUT ? "not reading" : "write failed");
		return ret;
	}
	return 0;
}

static int agent_relay_send(struct agent_relay *r)
{
	size_t len;
	int ret;

	ret = proto_encode(&r->out, r->wbuf, sizeof(r->wbuf), &len);
	if (ret < 0)
		return ret;
	return agent_relay_send_raw(r, len);
}

static void agent_relay_send_status(struct agent_relay *r, uint16_t type,
				    uint32_t id, int status)
{
	size_t len;

	if (status < -PROTO_ERRNO_MAX || status >= 0)
		status = -EIO;
	if (proto_encode_status(type, id, status, r->wbuf, sizeof(r->wbuf), &len) == 0)
		(void)agent_relay_send_raw(r, len);
}

static void agent_relay_out_init(struct agent_relay *r, uint16_t type, uint32_t id)
{
	memset(&r->out.u, 0, sizeof(r->out.u));
	r->out.type = type;
	r->out.flags = 0;
	r->out.id = id;
}

static void agent_relay_send_hello(struct agent_relay *r)
{
	struct proto_hello *h;
	struct sysinfo si;

	agent_relay_out_init(r, PROTO_HELLO, 0);
	h = &r->out.u.hello;
	h->version_min = PROTO_VERSION_MIN;
	h->version_max = PROTO_VERSION_MAX;
	h->features = PROTO_FEAT_EVENTS;
	if (r->stats_interval_s)
		h->features |= PROTO_FEAT_STATS_EVT;
	if (r->nl)
		h->features |= PROTO_FEAT_MODULE | PROTO_FEAT_MAP;
	h->page_size = (uint32_t)sysconf(_SC_PAGESIZE);
	h->block_size = PROTO_BLOCK_SIZE;
	if (sysinfo(&si) == 0)
		h->ram_bytes = (uint64_t)si.totalram * si.mem_unit;
	if (agent_relay_send(r) == 0)
		log_info("sent HELLO (module %s)", r->nl ? "ready" : "not loaded");
}

/* ---- module connection -------------------------------------------------- */

static void agent_relay_nl_try_open(struct agent_relay *r)
{
	int ret = agent_nl_open(&r->nl);

	r->next_nl_retry_ms = clock_now_ms() + AGENT_RELAY_NL_RETRY_MS;
	if (ret < 0) {
		r->nl = NULL;
		if (!r->nl_absent_logged)
			log_warning_errno(ret,
					"generic netlink family \"%s\" not available, "
					"retrying every %d ms: %m", VMDEFRAG_GENL_NAME,
					AGENT_RELAY_NL_RETRY_MS);
		r->nl_absent_logged = true;
		return;
	}
	r->nl_absent_logged = false;
	log_info("connected to the vmdefrag module (events subscribed)");
	if (r->state == AGENT_HOST_UP)
		agent_relay_send_hello(r);
}

/* An errno from the module that means the family itself went away. */
static void agent_relay_nl_check_gone(struct agent_relay *r, int err)
{
	if (err != -ENOENT || !r->nl)
		return;
	log_warning("the vmdefrag module went away, reconnecting");
	agent_nl_close(r->nl);
	r->nl = NULL;
	r->next_nl_retry_ms = clock_now_ms() + AGENT_RELAY_NL_RETRY_MS;
}

/* ---- ranges runs ------------------------------------------------------- */

static int agent_relay_range_cmp(const void *a, const void *b)
{
	const struct proto_range *x = a, *y = b;

	return x->gpa < y->gpa ? -1 : x->gpa > y->gpa;
}

/*
 * Sort the module's ranges and check them as the host will.  -EPROTO if
 * the module broke the contract (a misaligned, empty, overflowing or
 * overlapping range): the host gets that status instead of the ranges.
 */
static int agent_relay_ranges_prepare(struct agent_ranges *rg)
{
	if (rg->n > 1)
		qsort(rg->v, rg->n, sizeof(rg->v[0]), agent_relay_range_cmp);
	for (size_t i = 0; i < rg->n; i++) {
		if (proto_range_check(&rg->v[i]) < 0)
			return -EPROTO;
		if (i && rg->v[i - 1].gpa + rg->v[i - 1].len > rg->v[i].gpa)
			return -EPROTO;
	}
	return 0;
}

/* Pointer to the nranges field of r->out's body. */
static uint32_t *agent_relay_out_nranges(struct agent_relay *r)
{
	switch (r->out.type) {
	case PROTO_RESP_LIST:
		return &r->out.u.list.nranges;
	case PROTO_EVT_CAPTURED:
	case PROTO_EVT_RELEASED:
		return &r->out.u.evt.nranges;
	default:
		return &r->out.u.ranges_resp.nranges;
	}
}

/*
 * Send r->out (its fixed fields set) with rg's ranges, as a run of frames
 * of at most PROTO_MAX_RANGES each.
 */
static int agent_relay_send_run(struct agent_relay *r, const struct agent_ranges *rg)
{
	size_t off = 0;

	do {
		size_t n = rg->n - off;
		int ret;

		if (n > PROTO_MAX_RANGES)
			n = PROTO_MAX_RANGES;
		if (n)
			memcpy(r->out.ranges, rg->v + off, n * sizeof(rg->v[0]));
		*agent_relay_out_nranges(r) = (uint32_t)n;
		off += n;
		r->out.flags = off < rg->n ? PROTO_F_MORE : 0;
		ret = agent_relay_send(r);
		if (ret < 0)
			return ret;
	} while (off < rg->n);
	return 0;
}

static uint64_t agent_relay_ranges_bytes(const struct agent_ranges *rg)
{
	uint64_t b = 0;

	for (size_t i = 0; i < rg->n; i++)
		b += rg->v[i].len;
	return b;
}

/* ---- requests ---------------------------------------------------------- */

static int agent_relay_req_scan(struct agent_relay *r, uint32_t id)
{
	int ret;

	agent_relay_out_init(r, PROTO_RESP_SCAN, id);
	ret = agent_nl_scan(r->nl, &r->out);
	if (ret < 0)
		return ret;
	/*
	 * The census goes only to a host that speaks the version with it; a
	 * version-1 host gets version 1's histogram: SLAB_RECLAIM blocks are
	 * SLAB blocks to it.
	 */
	if (r->version < PROTO_VERSION_CENSUS) {
		struct proto_scan_resp *s = &r->out.u.scan;

		s->flags &= ~PROTO_SCAN_F_CENSUS;
		memset(&r->out.census, 0, sizeof(r->out.census));
		if (s->nunmovable > VMDEFRAG_CAUSE_SLAB_RECLAIM) {
			s->unmovable[VMDEFRAG_CAUSE_SLAB] +=
				s->unmovable[VMDEFRAG_CAUSE_SLAB_RECLAIM];
			s->unmovable[VMDEFRAG_CAUSE_SLAB_RECLAIM] = 0;
			s->nunmovable = VMDEFRAG_CAUSE_SLAB_RECLAIM;
		}
	}
	log_info("SCAN #%u: %llu MiB total, %llu MiB free, %llu MiB capturable",
		 id, (unsigned long long)(r->out.u.scan.total_bytes >> 20),
		 (unsigned long long)(r->out.u.scan.free_bytes >> 20),
		 (unsigned long long)(r->out.u.scan.capturable_bytes >> 20));
	return agent_relay_send(r);
}

static int agent_relay_req_map(struct agent_relay *r, uint32_t id)
{
	const struct proto_map_req *q = &r->in.u.map_req;
	int ret;

	agent_relay_out_init(r, PROTO_RESP_MAP, id);
	ret = agent_nl_map(r->nl, q->first_block, q->max_blocks, &r->out);
	if (ret < 0)
		return ret;
	log_info("MAP #%u: blocks %llu..%llu of %llu", id,
		 (unsigned long long)r->out.u.map.first_block,
		 (unsigned long long)(r->out.u.map.first_block + r->out.u.map.nblocks),
		 (unsigned long long)r->out.u.map.end_block);
	return agent_relay_send(r);
}

/*
 * Keep only the whole blocks of the preferred ranges that are "System RAM"
 * in /proc/iomem: the host's RAM map includes blocks the guest firmware
 * reserved (the top of low RAM on q35), which the module refuses as
 * outside guest RAM.  In place; the ranges stay ascending.  Without
 * /proc/iomem the ranges are left alone.
 */
static void agent_relay_clip_to_ram(struct proto_capture_req *c,
				    struct proto_range *v)
{
	struct proto_range ram[64], *out;
	uint32_t n = 0, nram = 0;
	char line[256];
	FILE *f;

	if (!c->nranges)
		return;
	f = fopen("/proc/iomem", "re");
	if (!f)
		return;
	while (nram < 64 && fgets(line, sizeof(line), f)) {
		unsigned long long a, b;

		/* top-level entries only: no indentation */
		if (line[0] == ' ' || !strstr(line, ": System RAM"))
			continue;
		if (sscanf(line, "%llx-%llx", &a, &b) != 2 || b < a)
			continue;
		a = (a + PROTO_BLOCK_SIZE - 1) & ~(PROTO_BLOCK_SIZE - 1);
		b = (b + 1) & ~(PROTO_BLOCK_SIZE - 1);
		if (b > a) {
			ram[nram].gpa = a;
			ram[nram].len = b - a;
			nram++;
		}
	}
	fclose(f);
	if (!nram)
		return;
	out = malloc(c->nranges * sizeof(*out));
	if (!out)
		return;
	for (uint32_t i = 0; i < c->nranges; i++) {
		for (uint32_t k = 0; k < nram; k++) {
			uint64_t s0 = v[i].gpa > ram[k].gpa ? v[i].gpa : ram[k].gpa;
			uint64_t e0 = v[i].gpa + v[i].len < ram[k].gpa + ram[k].len ?
				      v[i].gpa + v[i].len : ram[k].gpa + ram[k].len;

			if (e0 <= s0 || n == c->nranges)
				continue;
			out[n].gpa = s0;
			out[n].len = e0 - s0;
			n++;
		}
	}
	if (n < c->nranges || memcmp(out, v, n * sizeof(*v)))
		log_info("preferred ranges clipped to the guest's System RAM: %u -> %u",
			 c->nranges, n);
	if (n)
		memcpy(v, out, n * sizeof(*v));
	c->nranges = n;
	free(out);
}

static int agent_relay_req_capture(struct agent_relay *r, uint32_t id)
{
	_cleanup_(agent_ranges_free) struct agent_ranges rg = { 0 };
	uint64_t bytes = 0;
	int32_t stop = 0;
	int ret;

	agent_relay_clip_to_ram(&r->in.u.capture, r->in.ranges);
	if ((r->in.u.capture.flags & PROTO_CAPTURE_STRICT) && !r->in.u.capture.nranges) {
		/* nothing the host asked for is RAM here: nothing to empty */
		log_info("CAPTURE #%u: no preferred range is guest RAM", id);
		agent_relay_out_init(r, PROTO_RESP_CAPTURE, id);
		r->out.u.ranges_resp.stop_errno = -EBUSY;
		return agent_relay_send_run(r, &rg);
	}
	ret = agent_nl_capture(r->nl, &r->in.u.capture, r->in.ranges, &bytes,
			       &stop, &rg);
	if (ret < 0)
		return ret;
	ret = agent_relay_ranges_prepare(&rg);
	if (ret < 0)
		return ret;
	if (stop > 0 || stop < -PROTO_ERRNO_MAX)
		stop = -EIO;
	log_info("CAPTURE #%u: asked %llu MiB (%s%s), got %llu MiB in %zu ranges%s%s",
		 id, (unsigned long long)(r->in.u.capture.bytes >> 20),
		 r->in.u.capture.mode == VMDEFRAG_MODE_COMPACT ? "compact" : "capture",
		 r->in.u.capture.flags & PROTO_CAPTURE_STRICT ? ", strict" : "",
		 (unsigned long long)(bytes >> 20), rg.n,
		 stop ? ", stopped: " : "", stop ? strerror(-stop) : "");
	agent_relay_out_init(r, PROTO_RESP_CAPTURE, id);
	r->out.u.ranges_resp.stop_errno = stop;
	r->out.u.ranges_resp.bytes = bytes;
	return agent_relay_send_run(r, &rg);
}

static int agent_relay_req_release(struct agent_relay *r, uint32_t id)
{
	_cleanup_(agent_ranges_free) struct agent_ranges rg = { 0 };
	uint64_t bytes = 0;
	int ret;

	ret = agent_nl_release(r->nl, r->in.u.release.bytes, r->in.ranges,
			       r->in.u.release.nranges, &bytes, &rg);
	if (ret < 0)
		return ret;
	ret = agent_relay_ranges_prepare(&rg);
	if (ret < 0)
		return ret;
	log_info("RELEASE #%u: released %llu MiB in %zu ranges", id,
		 (unsigned long long)(bytes >> 20), rg.n);
	agent_relay_out_init(r, PROTO_RESP_RELEASE, id);
	r->out.u.ranges_resp.bytes = bytes;
	return agent_relay_send_run(r, &rg);
}

static int agent_relay_req_list(struct agent_relay *r, uint32_t id)
{
	_cleanup_(agent_ranges_free) struct agent_ranges rg = { 0 };
	int ret;

	ret = agent_nl_list(r->nl, &rg);
	if (ret < 0)
		return ret;
	ret = agent_relay_ranges_prepare(&rg);
	if (ret < 0)
		return ret;
	log_info("LIST #%u: %zu ranges, %llu MiB captured", id, rg.n,
		 (unsigned long long)(agent_relay_ranges_bytes(&rg) >> 20));
	agent_relay_out_init(r, PROTO_RESP_LIST, id);
	return agent_relay_send_run(r, &rg);
}

static int agent_relay_req_ack(struct agent_relay *r, uint32_t id)
{
	uint64_t bytes = 0;
	int ret;

	ret = agent_nl_ack(r->nl, r->in.ranges, r->in.u.ack.nranges, &bytes);
	if (ret < 0)
		return ret;
	log_info("ACK #%u: %s, %llu MiB acknowledged", id,
		 r->in.u.ack.flags & PROTO_ACK_ALL ? "all" : "ranges",
		 (unsigned long long)(bytes >> 20));
	agent_relay_out_init(r, PROTO_RESP_ACK, id);
	r->out.u.ack_resp.bytes = bytes;
	return agent_relay_send(r);
}

static int agent_relay_req_stats(struct agent_relay *r, uint32_t id)
{
	int ret;

	agent_relay_out_init(r, PROTO_RESP_STATS, id);
	ret = agent_nl_stats(r->nl, &r->out.u.stats_resp.stats);
	if (ret < 0)
		return ret;
	log_debug("STATS #%u", id);
	return agent_relay_send(r);
}

static int agent_relay_req_set_floor(struct agent_relay *r, uint32_t id)
{
	int ret;

	ret = agent_nl_set_floor(r->nl, r->in.u.set_floor.floor_bytes);
	if (ret < 0)
		return ret;
	log_info("SET_FLOOR #%u: floor %llu MiB", id,
		 (unsigned long long)(r->in.u.set_floor.floor_bytes >> 20));
	agent_relay_out_init(r, PROTO_RESP_SET_FLOOR, id);
	return agent_relay_send(r);
}

static void agent_relay_request(struct agent_relay *r)
{
	uint16_t type = r->in.type;
	uint32_t id = r->in.id;
	int ret;

	if (!r->nl) {
		ret = -ENODEV;
	} else {
		switch (type) {
		case PROTO_REQ_SCAN:
			ret = agent_relay_req_scan(r, id);
			break;
		case PROTO_REQ_CAPTURE:
			ret = agent_relay_req_capture(r, id);
			break;
		case PROTO_REQ_RELEASE:
			ret = agent_relay_req_release(r, id);
			break;
		case PROTO_REQ_LIST:
			ret = agent_relay_req_list(r, id);
			break;
		case PROTO_REQ_STATS:
			ret = agent_relay_req_stats(r, id);
			break;
		case PROTO_REQ_ACK:
			ret = agent_relay_req_ack(r, id);
			break;
		case PROTO_REQ_MAP:
			ret = agent_relay_req_map(r, id);
			break;
		default:
			ret = agent_relay_req_set_floor(r, id);
			break;
		}
	}
	if (ret == 0 || r->state != AGENT_HOST_UP)
		return;
	/* the module (or the encoder) refused: tell the host why */
	log_warning_errno(ret, "%s #%u failed: %m", proto_type_name(type), id);
	agent_relay_nl_check_gone(r, ret);
	agent_relay_send_status(r, PROTO_RESP(type), id, ret);
}

/* Send the batched module events as one EVT_* run, if there are any. */
static void agent_relay_batch_flush(struct agent_relay *r)
{
	struct agent_ranges *b = &r->batch;
	bool captured = r->batch_cmd == VMDEFRAG_CMD_EVENT_CAPTURED;

	if (!b->n)
		return;
	if (agent_relay_ranges_prepare(b) < 0) {
		log_error("module events with invalid ranges, dropped");
	} else {
		agent_relay_out_init(r, captured ? PROTO_EVT_CAPTURED :
				     PROTO_EVT_RELEASED, 0);
		r->out.u.evt.reason = captured ? 0 : r->batch_reason;
		(void)agent_relay_send_run(r, b);
	}
	b->n = 0;
}

static bool agent_relay_is_request(uint16_t type)
{
	return (type >= PROTO_REQ_SCAN && type <= PROTO_REQ_ACK) ||
	       type == PROTO_REQ_MAP;
}

static void agent_relay_frame(struct agent_relay *r, const struct proto_frame *f)
{
	uint16_t version;
	int ret;

	/* whatever this frame makes us send goes after the events before it */
	agent_relay_batch_flush(r);
	ret = proto_decode(f, &r->in);
	if (ret < 0) {
		log_warning("invalid %s frame (type 0x%04x, id %u) from the host: %s, ignoring",
			 proto_type_name(f->type), f->type, f->id, strerror(-ret));
		if (f->id && agent_relay_is_request(f->type))
			agent_relay_send_status(r, PROTO_RESP(f->type), f->id, ret);
		else if (f->id && !(f->type & PROTO_RESP_BIT))
			agent_relay_send_status(r, PROTO_RESP_ERROR, f->id, ret);
		return;
	}
	if (r->in.type == PROTO_HELLO) {
		struct proto_hello mine = {
			.version_min = PROTO_VERSION_MIN,
			.version_max = PROTO_VERSION_MAX,
		};

		ret = proto_hello_negotiate(&mine, &r->in.u.hello, &version);
		r->version = ret < 0 ? 0 : version;
		if (ret < 0)
			log_error("host speaks protocol versions %u..%u, we speak %u..%u",
				r->in.u.hello.version_min, r->in.u.hello.version_max,
				PROTO_VERSION_MIN, PROTO_VERSION_MAX);
		else
			log_info("host HELLO: protocol version %u", version);
		/* a new host session gets the memory signals at once */
		r->mem.have_sent = false;
		r->next_sample_ms = 0;
		/* a new host session: the old one has no punch in flight */
		agent_relay_ack_all(r, "host HELLO");
		agent_relay_send_hello(r);
		return;
	}
	if (agent_relay_is_request(r->in.type)) {
		agent_relay_request(r);
		return;
	}
	log_warning("unexpected %s frame from the host, ignoring",
		 proto_type_name(r->in.type));
}

/* ---- port input -------------------------------------------------------- */

static void agent_relay_host_up(struct agent_relay *r)
{
	proto_decoder_init(&r->dec);
	r->state = AGENT_HOST_UP;
	if (r->events_dropped)
		log_warning("%llu module events dropped while the host was away",
			 (unsigned long long)r->events_dropped);
	r->events_dropped = 0;
	/* statistics at once: a host that missed events while no agent ran
	 * (blocks given back under pressure) sees the module's captured
	 * bytes differ from its own and reconciles */
	r->next_stats_ms = 0;
	log_info("host connected");
	agent_relay_send_hello(r);
}

static void agent_relay_feed(struct agent_relay *r, const uint8_t *buf, size_t n)
{
	struct proto_frame f;
	size_t off = 0;
	int ret;

	while (off < n && r->state == AGENT_HOST_UP) {
		off += proto_decoder_feed(&r->dec, buf + off, n - off);
		while (r->state == AGENT_HOST_UP &&
		       (ret = proto_decoder_next(&r->dec, &f)) == 1)
			agent_relay_frame(r, &f);
		if (r->state == AGENT_HOST_UP && ret < 0) {
			log_error_errno(ret,
					"corrupt frame header from the host, "
					"ignoring input until it reconnects: %m");
			r->state = AGENT_HOST_DESYNC;
			r->carry = 0;
		}
	}
}

/* DESYNC: look for a host HELLO header in carry + the n bytes just read. */
static void agent_relay_desync_scan(struct agent_relay *r, size_t n)
{
	const struct proto_hdr hello = {
		.magic = htole32(PROTO_MAGIC),
		.version = PROTO_FRAME_VERSION,
		.type = htole16(PROTO_HELLO),
		.len = htole32(sizeof(struct proto_hello)),
	};
	uint8_t *start = r->rbuf + AGENT_RELAY_CARRY - r->carry;
	size_t len = r->carry + n;
	uint8_t *p = memmem(start, len, &hello, sizeof(hello));

	if (p) {
		log_info("host HELLO after the corrupt stream, new session");
		proto_decoder_init(&r->dec);
		r->state = AGENT_HOST_UP;
		r->carry = 0;
		agent_relay_feed(r, p, (size_t)(start + len - p));
		return;
	}
	r->carry = len < AGENT_RELAY_CARRY ? len : AGENT_RELAY_CARRY;
	memmove(r->rbuf + AGENT_RELAY_CARRY - r->carry, start + len - r->carry,
		r->carry);
}

void agent_relay_port_ready(struct agent_relay *r, short revents)
{
	if (r->state == AGENT_HOST_DOWN)
		return;
	if (revents & POLLIN) {
		for (;;) {
			ssize_t n = read(r->port_fd, r->rbuf + AGENT_RELAY_CARRY,
					 PROTO_MAX_FRAME);

			if (n > 0) {
				if (r->state == AGENT_HOST_UP)
					agent_relay_feed(r, r->rbuf + AGENT_RELAY_CARRY,
							 (size_t)n);
				else if (r->state == AGENT_HOST_DESYNC)
					agent_relay_desync_scan(r, (size_t)n);
				if (r->state == AGENT_HOST_DOWN)
					return;
				continue;
			}
			if (n == 0) {
				agent_relay_host_down(r, "end of stream");
				return;
			}
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				agent_relay_host_down(r, "read failed");
			break;
		}
	}
	if (revents & (POLLHUP | POLLERR))
		agent_relay_host_down(r, "hangup");
}

/* ---- module events ----------------------------------------------------- */

static void agent_relay_event(void *arg, uint8_t cmd, uint32_t reason,
			      const struct agent_ranges *ranges)
{
	struct agent_relay *r = arg;
	struct agent_ranges *b = &r->batch;
	bool captured = cmd == VMDEFRAG_CMD_EVENT_CAPTURED;

	if (!captured && reason > VMDEFRAG_RELEASE_UNLOAD) {
		log_warning("module release event with unknown reason %u, ignoring", reason);
		return;
	}
	log_info("module %s %zu ranges (%llu MiB)%s%s",
		 captured ? "captured" : "released", ranges->n,
		 (unsigned long long)(agent_relay_ranges_bytes(ranges) >> 20),
		 captured ? "" : ", reason ",
		 captured ? "" : agent_relay_reasons[reason]);
	if (r->state != AGENT_HOST_UP) {
		r->events_dropped++;
		return;
	}
	if (!ranges->n)
		return;
	if (b->n && (r->batch_cmd != cmd || (!captured && r->batch_reason != reason)))
		agent_relay_batch_flush(r);
	if (b->n + ranges->n > b->cap) {
		size_t cap = b->n + ranges->n + PROTO_MAX_RANGES;
		struct proto_range *v = realloc(b->v, cap * sizeof(*v));

		if (!v) {
			log_error("out of memory batching a module event, dropped");
			return;
		}
		b->v = v;
		b->cap = cap;
	}
	if (!b->n) {
		r->batch_cmd = cmd;
		r->batch_reason = captured ? 0 : reason;
		r->batch_due_ms = clock_now_ms() + AGENT_RELAY_BATCH_MS;
	}
	memcpy(b->v + b->n, ranges->v, ranges->n * sizeof(*b->v));
	b->n += ranges->n;
	if (b->n >= PROTO_MAX_RANGES)
		agent_relay_batch_flush(r);
}

void agent_relay_nl_ready(struct agent_relay *r)
{
	int ret;

	if (!r->nl)
		return;
	ret = agent_nl_events_recv(r->nl, agent_relay_event, r);
	if (ret == -ENOBUFS)
		log_warning("module events lost (socket buffer overrun); "
			 "the host must LIST to resynchronise");
	else if (ret < 0)
		log_warning_errno(ret, "reading module events: %m");
}

/* ---- timers ------------------------------------------------------------ */

static void agent_relay_stats_event(struct agent_relay *r)
{
	int ret;

	agent_relay_batch_flush(r);
	agent_relay_out_init(r, PROTO_EVT_STATS, 0);
	ret = agent_nl_stats(r->nl, &r->out.u.stats);
	if (ret < 0) {
		log_warning_errno(ret, "periodic STATS: %m");
		agent_relay_nl_check_gone(r, ret);
		return;
	}
	(void)agent_relay_send(r);
}

/*
 * Sample the memory signals; send EVT_MEMINFO when the period is due or a
 * threshold was crossed (only to a host that speaks version 3).
 */
static void agent_relay_meminfo(struct agent_relay *r, uint64_t now)
{
	struct proto_meminfo *m = &r->out.u.meminfo;
	struct proto_stats st;
	const char *why = NULL;
	bool due;
	int ret;

	r->next_sample_ms = now + (r->meminfo_interval_ms < AGENT_RELAY_SAMPLE_MS ?
				   r->meminfo_interval_ms : AGENT_RELAY_SAMPLE_MS);
	if (r->state != AGENT_HOST_UP || r->version < PROTO_VERSION_MEMINFO)
		return;
	agent_relay_batch_flush(r);
	agent_relay_out_init(r, PROTO_EVT_MEMINFO, 0);
	ret = agent_meminfo_sample(&r->mem, now, r->meminfo_interval_ms, m);
	if (ret < 0) {
		log_warning_errno(ret, "reading the memory signals: %m");
		return;
	}
	due = now >= r->next_meminfo_ms;
	/* the module's floor and captured bytes, cheap (one genl round trip) */
	if (r->nl && agent_nl_stats(r->nl, &st) == 0 &&
	    st.captured_bytes <= m->total_bytes && st.floor_bytes <= m->total_bytes) {
		m->captured_bytes = st.captured_bytes;
		m->floor_bytes = st.floor_bytes;
		m->vacate_ns = st.vacate_ns;
		m->flags |= PROTO_MEMINFO_F_MODULE;
	}
	if (agent_meminfo_urgent(&r->mem, m, &why)) {
		m->flags |= PROTO_MEMINFO_F_URGENT;
		log_debug("EVT_MEMINFO now: %s (free %llu MiB)", why,
			  (unsigned long long)(m->free_bytes >> 20));
	} else if (!due) {
		return;
	}
	if (agent_relay_send(r) == 0) {
		agent_meminfo_sent(&r->mem, m);
		r->next_meminfo_ms = now + r->meminfo_interval_ms;
	}
}

void agent_relay_tick(struct agent_relay *r)
{
	uint64_t now = clock_now_ms();

	if (!r->nl && now >= r->next_nl_retry_ms)
		agent_relay_nl_try_open(r);
	if (r->state == AGENT_HOST_DOWN && agent_port_host_connected(r->port_fd))
		agent_relay_host_up(r);
	if (r->batch.n && (now >= r->batch_due_ms || r->state != AGENT_HOST_UP))
		agent_relay_batch_flush(r);
	if (r->stats_interval_s && now >= r->next_stats_ms) {
		r->next_stats_ms = now + r->stats_interval_s * 1000ULL;
		if (r->state == AGENT_HOST_UP && r->nl)
			agent_relay_stats_event(r);
	}
	if (r->meminfo_interval_ms && now >= r->next_sample_ms)
		agent_relay_meminfo(r, now);
}

int agent_relay_timeout_ms(const struct agent_relay *r)
{
	uint64_t now = clock_now_ms();
	uint64_t t = 1000;

	if (r->state == AGENT_HOST_DOWN)
		t = AGENT_RELAY_POLL_MS;
	if (!r->nl && r->next_nl_retry_ms > now && r->next_nl_retry_ms - now < t)
		t = r->next_nl_retry_ms - now;
	else if (!r->nl && r->next_nl_retry_ms <= now)
		t = 0;
	if (r->stats_interval_s && r->next_stats_ms > now &&
	    r->next_stats_ms - now < t)
		t = r->next_stats_ms - now;
	if (r->meminfo_interval_ms && r->state == AGENT_HOST_UP)
		t = r->next_sample_ms > now ? (r->next_sample_ms - now < t ?
					       r->next_sample_ms - now : t) : 0;
	if (r->batch.n)
		t = r->batch_due_ms > now ? (r->batch_due_ms - now < t ?
					     r->batch_due_ms - now : t) : 0;
	return (int)t;
}

int agent_relay_port_fd(const struct agent_relay *r)
{
	return r->state == AGENT_HOST_DOWN ? -1 : r->port_fd;
}

int agent_relay_nl_fd(const struct agent_relay *r)
{
	return r->nl ? agent_nl_event_fd(r->nl) : -1;
}

/* ---- lifetime ---------------------------------------------------------- */

int agent_relay_new(int port_fd, unsigned int stats_interval_s,
		    unsigned int meminfo_interval_ms, struct agent_relay **ret_relay)
{
	struct agent_relay *r = calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	if (outbuf_init(&r->port_out, PROTO_MAX_FRAME, PROTO_MAX_FRAME) < 0) {
		free(r);
		return -ENOMEM;
	}
	r->port_fd = port_fd;
	r->state = AGENT_HOST_DOWN;
	r->stats_interval_s = stats_interval_s;
	r->next_stats_ms = clock_now_ms() + stats_interval_s * 1000ULL;
	r->meminfo_interval_ms = meminfo_interval_ms;
	proto_decoder_init(&r->dec);
	/* module first, so the first HELLO can say whether it is there */
	agent_relay_nl_try_open(r);
	*ret_relay = r;
	return 0;
}

void agent_relay_free(struct agent_relay *r)
{
	if (!r)
		return;
	agent_nl_close(r->nl);
	close(r->port_fd);
	agent_ranges_free(&r->batch);
	outbuf_free(&r->port_out);
	free(r);
}
