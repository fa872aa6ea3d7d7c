// SPDX-License-Identifier: GPL-2.0
/*
 * ctl_proto.c - JSON of the control socket (see ctl_proto.h).
 *
 * The one place that knows the keys of every request and response, so the
 * daemon (which builds them) and vmdefragctl (which reads them) cannot
 * drift apart.  Requests are parsed strictly: an object, a known "cmd",
 * "vm" a string of the right length when the command needs one, and no
 * unknown keys, each refusal explained in one line for the client.
 *
 * Strings that came from a guest (slab cache names) appear in JSON as
 * JSON strings: json-c escapes them.  The codec already guaranteed they
 * are printable ASCII; vmdefragctl quotes them again when printing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_proto.h"
#include "vm_map.h"

#define SIZE_BLOCK_BYTES	(2ull << 20)

static const char *const ctl_class_names[] = {
	[VMDEFRAG_CLASS_CAPTURED] = "captured",
	[VMDEFRAG_CLASS_FREE] = "free",
	[VMDEFRAG_CLASS_MOVABLE] = "movable",
	[VMDEFRAG_CLASS_UNMOVABLE] = "unmovable",
	[VMDEFRAG_CLASS_OFFLINE] = "offline",
};

static const char *const ctl_cause_names[] = {
	[VMDEFRAG_CAUSE_SLAB] = "slab",
	[VMDEFRAG_CAUSE_PAGETABLE] = "pagetable",
	[VMDEFRAG_CAUSE_RESERVED] = "reserved",
	[VMDEFRAG_CAUSE_PINNED] = "pinned",
	[VMDEFRAG_CAUSE_OTHER] = "other",
	[VMDEFRAG_CAUSE_SLAB_RECLAIM] = "slab-reclaimable",
};

const char *ctl_proto_class_name(unsigned int i)
{
	return i < sizeof(ctl_class_names) / sizeof(ctl_class_names[0]) ?
	       ctl_class_names[i] : NULL;
}

const char *ctl_proto_cause_name(unsigned int i)
{
	return i < sizeof(ctl_cause_names) / sizeof(ctl_cause_names[0]) ?
	       ctl_cause_names[i] : NULL;
}

static const char *const ctl_notify_names[] = {
	[CTL_NOTIFY_PREPARE] = "prepare",
	[CTL_NOTIFY_STARTED] = "started",
	[CTL_NOTIFY_STOPPED] = "stopped",
	[CTL_NOTIFY_RELEASE] = "release",
	[CTL_NOTIFY_MIGRATE] = "migrate",
};

const char *ctl_proto_notify_name(enum ctl_notify_event event)
{
	return (unsigned int)event < sizeof(ctl_notify_names) / sizeof(ctl_notify_names[0]) ?
	       ctl_notify_names[event] : NULL;
}

int ctl_proto_notify_from_name(const char *name, enum ctl_notify_event *ret_event)
{
	for (unsigned int i = 0; i < sizeof(ctl_notify_names) / sizeof(ctl_notify_names[0]); i++) {
		if (strcmp(name, ctl_notify_names[i]) == 0) {
			*ret_event = (enum ctl_notify_event)i;
			return 0;
		}
	}
	return -EINVAL;
}

static const char *ctl_cmd_name(enum ctl_cmd cmd)
{
	switch (cmd) {
	case CTL_CMD_NOTIFY: return "notify";
	case CTL_CMD_SCAN: return "scan";
	case CTL_CMD_RECLAIM: return "reclaim";
	case CTL_CMD_RETURN: return "return";
	case CTL_CMD_OP: return "op";
	case CTL_CMD_CANCEL: return "cancel";
	case CTL_CMD_POLICY: return "policy";
	case CTL_CMD_METRICS: return "metrics";
	case CTL_CMD_HISTORY: return "history";
	case CTL_CMD_MAP: return "map";
	default: return "status";
	}
}

int ctl_proto_format_request(const struct ctl_request *req, char **ret_line)
{
	struct json_object *o = json_object_new_object();
	const char *s;
	char *line;

	if (!o)
		return -ENOMEM;
	json_object_object_add(o, "cmd", json_object_new_string(ctl_cmd_name(req->cmd)));
	if (req->vm[0])
		json_object_object_add(o, "vm", json_object_new_string(req->vm));
	if (req->cmd == CTL_CMD_RECLAIM || req->cmd == CTL_CMD_RETURN)
		json_object_object_add(o, "bytes", json_object_new_uint64(req->bytes));
	if (req->cmd == CTL_CMD_RECLAIM && req->evict >= 0) {
		const char *ev = proto_evict_name((uint32_t)req->evict);

		if (!ev) {
			json_object_put(o);
			return -EINVAL;
		}
		json_object_object_add(o, "evict", json_object_new_string(ev));
	}
	if (req->cmd == CTL_CMD_POLICY)
		json_object_object_add(o, "mode",
				       json_object_new_string(policy_mode_name(req->mode)));
	if (req->cmd == CTL_CMD_OP || (req->cmd == CTL_CMD_CANCEL && req->id))
		json_object_object_add(o, "id", json_object_new_uint64(req->id));
	if (req->cmd == CTL_CMD_NOTIFY) {
		const char *ev = ctl_proto_notify_name(req->event);

		if (!ev) {
			json_object_put(o);
			return -EINVAL;
		}
		json_object_object_add(o, "event", json_object_new_string(ev));
	}
	s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	if (!s || asprintf(&line, "%s\n", s) < 0) {
		json_object_put(o);
		return -ENOMEM;
	}
	json_object_put(o);
	*ret_line = line;
	return 0;
}

int ctl_proto_parse_request(const char *line, struct ctl_request *ret_req,
			    char *err, size_t errsz)
{
	struct json_object *o = json_tokener_parse(line), *v;
	struct ctl_request req = { .evict = -1 };
	const char *cmd;
	int r = -EINVAL;

	if (!o || !json_object_is_type(o, json_type_object)) {
		snprintf(err, errsz, "request is not a JSON object");
		goto out_put;
	}
	if (!json_object_object_get_ex(o, "cmd", &v) ||
	    !json_object_is_type(v, json_type_string)) {
		snprintf(err, errsz, "request has no \"cmd\" string");
		goto out_put;
	}
	cmd = json_object_get_string(v);
	if (strcmp(cmd, "status") == 0) {
		req.cmd = CTL_CMD_STATUS;
	} else if (strcmp(cmd, "scan") == 0) {
		req.cmd = CTL_CMD_SCAN;
	} else if (strcmp(cmd, "reclaim") == 0) {
		req.cmd = CTL_CMD_RECLAIM;
	} else if (strcmp(cmd, "return") == 0) {
		req.cmd = CTL_CMD_RETURN;
	} else if (strcmp(cmd, "op") == 0) {
		req.cmd = CTL_CMD_OP;
	} else if (strcmp(cmd, "notify") == 0) {
		req.cmd = CTL_CMD_NOTIFY;
	} else if (strcmp(cmd, "cancel") == 0) {
		req.cmd = CTL_CMD_CANCEL;
	} else if (strcmp(cmd, "policy") == 0) {
		req.cmd = CTL_CMD_POLICY;
	} else if (strcmp(cmd, "metrics") == 0) {
		req.cmd = CTL_CMD_METRICS;
	} else if (strcmp(cmd, "history") == 0) {
		req.cmd = CTL_CMD_HISTORY;
	} else if (strcmp(cmd, "map") == 0) {
		req.cmd = CTL_CMD_MAP;
	} else {
		snprintf(err, errsz, "unknown command (known: status, scan, reclaim, "
			 "return, op, notify, cancel, policy, metrics, history, map)");
		goto out_put;
	}
	if (json_object_object_get_ex(o, "vm", &v)) {
		const char *name;

		if (!json_object_is_type(v, json_type_string)) {
			snprintf(err, errsz, "\"vm\" is not a string");
			goto out_put;
		}
		name = json_object_get_string(v);
		if (!name[0] || strlen(name) >= sizeof(req.vm)) {
			snprintf(err, errsz, "\"vm\" is empty or too long");
			goto out_put;
		}
		strcpy(req.vm, name);
	} else if (req.cmd != CTL_CMD_STATUS && req.cmd != CTL_CMD_METRICS &&
		   req.cmd != CTL_CMD_HISTORY) {
		snprintf(err, errsz, "%s needs \"vm\"", cmd);
		goto out_put;
	}
	if (req.cmd == CTL_CMD_RECLAIM || req.cmd == CTL_CMD_RETURN) {
		if (!json_object_object_get_ex(o, "bytes", &v) ||
		    !json_object_is_type(v, json_type_int) ||
		    json_object_get_uint64(v) == 0 ||
		    json_object_get_uint64(v) % SIZE_BLOCK_BYTES) {
			snprintf(err, errsz, "%s needs \"bytes\", a positive multiple "
				 "of 2 MiB", cmd);
			goto out_put;
		}
		req.bytes = json_object_get_uint64(v);
	}
	if (req.cmd == CTL_CMD_RECLAIM && json_object_object_get_ex(o, "evict", &v) &&
	    (!json_object_is_type(v, json_type_string) ||
	     (req.evict = proto_evict_from_name(json_object_get_string(v))) < 0)) {
		snprintf(err, errsz, "\"evict\" is one of movable, evict-slab, evict");
		goto out_put;
	}
	if (req.cmd == CTL_CMD_OP ||
	    (req.cmd == CTL_CMD_CANCEL && json_object_object_get_ex(o, "id", &v))) {
		if (!json_object_object_get_ex(o, "id", &v) ||
		    !json_object_is_type(v, json_type_int) ||
		    json_object_get_uint64(v) == 0 ||
		    json_object_get_uint64(v) > UINT32_MAX) {
			snprintf(err, errsz, "%s needs \"id\", an operation id", cmd);
			goto out_put;
		}
		req.id = (uint32_t)json_object_get_uint64(v);
	}
	if (req.cmd == CTL_CMD_NOTIFY &&
	    (!json_object_object_get_ex(o, "event", &v) ||
	     !json_object_is_type(v, json_type_string) ||
	     ctl_proto_notify_from_name(json_object_get_string(v), &req.event) < 0)) {
		snprintf(err, errsz, "notify needs \"event\": prepare, started, "
			 "stopped, release or migrate");
		goto out_put;
	}
	if (req.cmd == CTL_CMD_POLICY &&
	    (!json_object_object_get_ex(o, "mode", &v) ||
	     !json_object_is_type(v, json_type_string) ||
	     policy_mode_from_name(json_object_get_string(v), &req.mode) < 0)) {
		snprintf(err, errsz, "policy needs \"mode\": auto or manual");
		goto out_put;
	}
	json_object_object_foreach(o, key, val) {
		bool known = strcmp(key, "cmd") == 0 || strcmp(key, "vm") == 0 ||
			     (strcmp(key, "bytes") == 0 && (req.cmd == CTL_CMD_RECLAIM ||
							   req.cmd == CTL_CMD_RETURN)) ||
			     (strcmp(key, "evict") == 0 && req.cmd == CTL_CMD_RECLAIM) ||
			     (strcmp(key, "id") == 0 && (req.cmd == CTL_CMD_OP ||
							 req.cmd == CTL_CMD_CANCEL)) ||
			     (strcmp(key, "event") == 0 && req.cmd == CTL_CMD_NOTIFY) ||
			     (strcmp(key, "mode") == 0 && req.cmd == CTL_CMD_POLICY);

		(void)val;
		if (!known) {
			snprintf(err, errsz, "unknown key in request");
			goto out_put;
		}
	}
	*ret_req = req;
	r = 0;
out_put:
	json_object_put(o);
	return r;
}

struct json_object *ctl_proto_error(const char *code, const char *message)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "schema", json_object_new_int(CTL_JSON_SCHEMA));
	json_object_object_add(o, "ok", json_object_new_boolean(0));
	json_object_object_add(o, "error", json_object_new_string(code));
	json_object_object_add(o, "message", json_object_new_string(message));
	return o;
}

struct json_object *ctl_proto_ok(const char *key, struct json_object *value)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "schema", json_object_new_int(CTL_JSON_SCHEMA));
	json_object_object_add(o, "ok", json_object_new_boolean(1));
	json_object_object_add(o, key, value);
	return o;
}

static void ctl_add_u64(struct json_object *o, const char *key, uint64_t v)
{
	json_object_object_add(o, key, json_object_new_uint64(v));
}

static void ctl_add_str(struct json_object *o, const char *key, const char *s)
{
	json_object_object_add(o, key, s && *s ? json_object_new_string(s) : NULL);
}

/* An operation's work: pages_migrated and vacate_ns, both null if unknown. */
static void ctl_add_work(struct json_object *o, bool known, uint64_t pages,
			 uint64_t ns)
{
	json_object_object_add(o, "pages_migrated",
			       known ? json_object_new_uint64(pages) : NULL);
	json_object_object_add(o, "vacate_ns", known ? json_object_new_uint64(ns) : NULL);
}

static struct json_object *ctl_features_json(uint64_t f)
{
	struct json_object *a = json_object_new_array();

	if (f & PROTO_FEAT_EVENTS)
		json_object_array_add(a, json_object_new_string("events"));
	if (f & PROTO_FEAT_STATS_EVT)
		json_object_array_add(a, json_object_new_string("stats-events"));
	if (f & PROTO_FEAT_MODULE)
		json_object_array_add(a, json_object_new_string("module"));
	if (f & PROTO_FEAT_MAP)
		json_object_array_add(a, json_object_new_string("map"));
	return a;
}

/*
 * VMSTATUS keys: name; qmp {connected, error, pid}; backend ("shared",
 * "hint", "none", "unknown"), backend_note (why: always set but for
 * "shared"); ram_bytes; rss_anon_bytes (QEMU's RssAnon, null when
 * unreadable); backing_bytes and
 * huge_mapped_bytes (null when unknown); shmem_enabled (null if
 * unreadable), reback_huge, reback_note; session {state, version,
 * features [names], features_raw, guest_page_size, guest_ram_bytes,
 * connects, drops, frames, queued, last_drop}; guest (null before any
 * SCAN or STATS) {free_bytes, free_block_bytes, unmovable_blocks,
 * scan_age_ms (from the last SCAN; null without one), captured_bytes,
 * stats_age_ms}; memory (null until QEMU is attached) {reconciled,
 * captured_bytes, reclaimed_bytes (held for the host and a hole in the
 * backing right now), pending_bytes (PENDING in the guest, ACK unanswered),
 * returned_bytes and guest_released_bytes (since the daemon started),
 * hint_returned_bytes (hint reclaims: measured RssAnon drops, summed since
 * the daemon started)};
 * operation (OP of the running or last operation, null if none);
 * migration (ctl_migration_json()); policy (ctl_policy_json()).
 */
static struct json_object *ctl_migration_json(const struct migration_status *m);
static struct json_object *ctl_policy_json(const struct policy_status *p);

struct json_object *ctl_proto_status_json(const struct ctl_vm_status *st)
{
	struct json_object *o = json_object_new_object();
	struct json_object *q = json_object_new_object();
	struct json_object *s = json_object_new_object();
	const struct session_info *si = &st->session;

	ctl_add_str(o, "name", st->name);
	json_object_object_add(q, "connected", json_object_new_boolean(st->qmp_connected));
	ctl_add_str(q, "error", st->qmp_error);
	json_object_object_add(q, "pid", json_object_new_int(st->pid));
	json_object_object_add(o, "qmp", q);
	ctl_add_str(o, "backend", st->backend);
	ctl_add_str(o, "backend_note", st->backend_note);
	ctl_add_u64(o, "ram_bytes", st->ram_bytes);
	json_object_object_add(o, "rss_anon_bytes", st->rss_known ?
			       json_object_new_uint64(st->rss_anon_bytes) : NULL);
	json_object_object_add(o, "backing_bytes", st->backing_known ?
			       json_object_new_uint64(st->backing_bytes) : NULL);
	json_object_object_add(o, "huge_mapped_bytes", st->huge_known ?
			       json_object_new_uint64(st->huge_mapped_bytes) : NULL);
	ctl_add_str(o, "shmem_enabled", st->shmem_enabled);
	json_object_object_add(o, "reback_huge", json_object_new_boolean(st->reback_huge));
	ctl_add_str(o, "reback_note", st->reback_note);

	ctl_add_str(s, "state", session_state_name(si->state));
	json_object_object_add(s, "version", json_object_new_int(si->version));
	json_object_object_add(s, "features", ctl_features_json(si->guest.features));
	ctl_add_u64(s, "features_raw", si->guest.features);
	ctl_add_u64(s, "guest_page_size_bytes", si->guest.page_size);
	ctl_add_u64(s, "guest_ram_bytes", si->guest.ram_bytes);
	ctl_add_u64(s, "connects", si->connects);
	ctl_add_u64(s, "drops", si->drops);
	ctl_add_u64(s, "frames", si->frames);
	ctl_add_u64(s, "queued", si->queued);
	ctl_add_str(s, "last_drop", si->last_drop);
	json_object_object_add(o, "session", s);

	if (st->have_scan || st->have_stats) {
		struct json_object *g = json_object_new_object();

		if (st->have_scan) {
			ctl_add_u64(g, "free_bytes", st->scan.free_bytes);
			ctl_add_u64(g, "free_block_bytes", st->scan.free_block_bytes);
			ctl_add_u64(g, "unmovable_blocks",
				    st->scan.classes[VMDEFRAG_CLASS_UNMOVABLE]);
			ctl_add_u64(g, "scan_age_ms", st->scan_age_ms);
		} else {
			json_object_object_add(g, "scan_age_ms", NULL);
		}
		/* the newer of the two says how much the module holds */
		if (st->have_stats && (!st->have_scan || st->stats_age_ms <= st->scan_age_ms))
			ctl_add_u64(g, "captured_bytes", st->stats.captured_bytes);
		else
			ctl_add_u64(g, "captured_bytes", st->scan.captured_bytes);
		json_object_object_add(g, "stats_age_ms", st->have_stats ?
				       json_object_new_uint64(st->stats_age_ms) : NULL);
		json_object_object_add(o, "guest", g);
	} else {
		json_object_object_add(o, "guest", NULL);
	}
	if (st->mem.layout_known) {
		struct json_object *m = json_object_new_object();

		json_object_object_add(m, "reconciled",
				       json_object_new_boolean(st->mem.reconciled));
		ctl_add_u64(m, "captured_bytes", st->mem.captured_bytes);
		ctl_add_u64(m, "reclaimed_bytes", st->mem.reclaimed_bytes);
		ctl_add_u64(m, "pending_bytes", st->mem.pending_bytes);
		ctl_add_u64(m, "returned_bytes", st->mem.returned_bytes);
		ctl_add_u64(m, "guest_released_bytes", st->mem.guest_released_bytes);
		ctl_add_u64(m, "hint_returned_bytes", st->mem.hint_returned_bytes);
		json_object_object_add(o, "memory", m);
	} else {
		json_object_object_add(o, "memory", NULL);
	}
	json_object_object_add(o, "operation", st->mem.have_op ?
			       ctl_proto_op_json(st->name, &st->mem.op) : NULL);
	json_object_object_add(o, "migration", ctl_migration_json(&st->migration));
	json_object_object_add(o, "policy", st->policy.known ?
			       ctl_policy_json(&st->policy) : NULL);
	return o;
}

static const char *ctl_host_level_name(enum policy_host_level l)
{
	switch (l) {
	case POLICY_HOST_MODERATE: return "moderate";
	case POLICY_HOST_HIGH: return "high";
	default: return "relaxed";
	}
}

static struct json_object *ctl_decision_json(const struct policy_decision_info *d)
{
	struct json_object *o;

	if (!d->known)
		return NULL;
	o = json_object_new_object();
	ctl_add_str(o, "action", policy_action_name(d->action));
	ctl_add_u64(o, "target_bytes", d->bytes);
	ctl_add_str(o, "reason", d->reason);
	json_object_object_add(o, "error", json_object_new_int(d->error));
	ctl_add_u64(o, "age_ms", d->age_ms);
	return o;
}

/* hundredths of a percent as a JSON number of percent */
static struct json_object *ctl_percent(uint32_t hundredths)
{
	return json_object_new_double(hundredths / 100.0);
}

/*
 * policy: {mode ("manual", "auto"), weight, headroom_bytes (floor +
 * margin the engine keeps free above the guest's watermarks; null before
 * the guest's first signals), policy_misses (the guest released memory
 * under pressure while auto), reclaims and returns (operations the policy
 * started), host_pressure ("relaxed", "moderate", "high"), state_saved
 * (the mode is in the state_dir), decision (the latest evaluation, null
 * before the first): {action ("none", "reclaim", "return", "stop"),
 * target_bytes, reason, error (0, or the errno of an action that could
 * not start), age_ms}, last_action (the latest decision that was not
 * "none", same keys, null if none), signals (the guest's last EVT_MEMINFO,
 * null before one): {total_bytes, free_bytes, available_bytes,
 * wmark_low_bytes, wmark_high_bytes, alloc_bytes_per_second (allocated per
 * second), captured_bytes and floor_bytes (null without the module),
 * psi_some_avg10_percent, psi_full_avg10_percent (numbers; null without
 * PSI), psi_some_total_ns, psi_full_total_ns (null without PSI), urgent
 * (sent at once on a threshold), interval_ms, age_ms}}
 */
static struct json_object *ctl_policy_json(const struct policy_status *p)
{
	struct json_object *o = json_object_new_object();
	const struct proto_meminfo *mi = &p->signals;
	bool psi = mi->flags & PROTO_MEMINFO_F_PSI;
	bool mod = mi->flags & PROTO_MEMINFO_F_MODULE;

	ctl_add_str(o, "mode", policy_mode_name(p->mode));
	ctl_add_u64(o, "weight", p->weight);
	json_object_object_add(o, "headroom_bytes", p->headroom_bytes ?
			       json_object_new_uint64(p->headroom_bytes) : NULL);
	ctl_add_u64(o, "policy_misses", p->misses);
	ctl_add_u64(o, "reclaims", p->reclaims);
	ctl_add_u64(o, "returns", p->returns);
	ctl_add_str(o, "host_pressure", ctl_host_level_name(p->host_level));
	json_object_object_add(o, "state_saved", json_object_new_boolean(p->state_saved));
	json_object_object_add(o, "decision", ctl_decision_json(&p->last));
	json_object_object_add(o, "last_action", ctl_decision_json(&p->last_action));
	if (p->have_signals) {
		struct json_object *g = json_object_new_object();

		ctl_add_u64(g, "total_bytes", mi->total_bytes);
		ctl_add_u64(g, "free_bytes", mi->free_bytes);
		ctl_add_u64(g, "available_bytes", mi->available_bytes);
		ctl_add_u64(g, "wmark_low_bytes", mi->wmark_low_bytes);
		ctl_add_u64(g, "wmark_high_bytes", mi->wmark_high_bytes);
		ctl_add_u64(g, "alloc_bytes_per_second", mi->alloc_bytes_per_sec);
		json_object_object_add(g, "captured_bytes", mod ?
				       json_object_new_uint64(mi->captured_bytes) : NULL);
		json_object_object_add(g, "floor_bytes", mod ?
				       json_object_new_uint64(mi->floor_bytes) : NULL);
		json_object_object_add(g, "psi_some_avg10_percent", psi ?
				       ctl_percent(mi->psi_some_avg10) : NULL);
		json_object_object_add(g, "psi_full_avg10_percent", psi ?
				       ctl_percent(mi->psi_full_avg10) : NULL);
		json_object_object_add(g, "psi_some_total_ns", psi ?
				       json_object_new_uint64(mi->psi_some_total_us * 1000) : NULL);
		json_object_object_add(g, "psi_full_total_ns", psi ?
				       json_object_new_uint64(mi->psi_full_total_us * 1000) : NULL);
		json_object_object_add(g, "urgent", json_object_new_boolean(
				       mi->flags & PROTO_MEMINFO_F_URGENT));
		ctl_add_u64(g, "interval_ms", mi->interval_ms);
		ctl_add_u64(g, "age_ms", p->signals_age_ms);
		json_object_object_add(o, "signals", g);
	} else {
		json_object_object_add(o, "signals", NULL);
	}
	return o;
}

struct json_object *ctl_proto_policy_json(const char *vm, enum policy_mode mode)
{
	struct json_object *o = json_object_new_object();

	ctl_add_str(o, "vm", vm);
	ctl_add_str(o, "mode", policy_mode_name(mode));
	return o;
}

/*
 * migration: {state ("none", "outgoing", "migrated-away", "incoming",
 * "migrated-in", "postcopy-failed"), qemu_status (QEMU's MigrationStatus,
 * null if none seen), since_ms, outgoing (count since daemon start),
 * last_outcome (null if none), postcopy (the current or last migration
 * switched to post-copy), qemu (null unless query-version answered:
 * {version "M.m.u", package (printable ASCII, null if empty), patched});
 * migrated-in only: path ("patched" or "stock": the QEMU it arrived in),
 * reconciled, reconcile_listed_bytes, reconcile_punched_bytes, collapse
 * {state, cpu_percent, ram_bytes, scanned_bytes, candidate_bytes,
 * collapsed_bytes, folio_only_bytes, hole_bytes, failed_bytes, cpu_ns,
 * elapsed_ms, note (null if none), rerun {running, passes, queued_bytes,
 * candidate_bytes, collapsed_bytes, hole_bytes, failed_bytes, cpu_ns}:
 * re-collapses of ranges the guest took back after the pass}}
 */
static struct json_object *ctl_migration_json(const struct migration_status *m)
{
	struct json_object *o = json_object_new_object();
	const struct collapse_status *c = &m->collapse;
	struct json_object *co, *ro;

	ctl_add_str(o, "state", migration_state_name(m->state));
	ctl_add_str(o, "qemu_status", m->qemu_status);
	ctl_add_u64(o, "since_ms", m->since_ms);
	ctl_add_u64(o, "outgoing", m->outgoing);
	ctl_add_str(o, "last_outcome", m->last_outcome);
	json_object_object_add(o, "postcopy", json_object_new_boolean(m->postcopy));
	if (m->qemu_known) {
		struct json_object *q = json_object_new_object();
		char v[32];

		snprintf(v, sizeof(v), "%d.%d.%d", m->qemu_version / 10000,
			 m->qemu_version / 100 % 100, m->qemu_version % 100);
		ctl_add_str(q, "version", v);
		ctl_add_str(q, "package", m->qemu_package);
		json_object_object_add(q, "patched", json_object_new_boolean(m->qemu_patched));
		json_object_object_add(o, "qemu", q);
	} else {
		json_object_object_add(o, "qemu", NULL);
	}
	if (m->state != MIGRATION_ARRIVED)
		return o;
	ctl_add_str(o, "path", m->qemu_known && m->qemu_patched ? "patched" : "stock");
	json_object_object_add(o, "reconciled", json_object_new_boolean(m->reconciled));
	ctl_add_u64(o, "reconcile_listed_bytes", m->reconcile_listed_bytes);
	ctl_add_u64(o, "reconcile_punched_bytes", m->reconcile_punched_bytes);
	co = json_object_new_object();
	ctl_add_str(co, "state", collapse_state_name(c->state));
	ctl_add_u64(co, "cpu_percent", c->cpu_percent);
	ctl_add_u64(co, "ram_bytes", c->ram_bytes);
	ctl_add_u64(co, "scanned_bytes", c->scanned_bytes);
	ctl_add_u64(co, "candidate_bytes", c->candidate_bytes);
	ctl_add_u64(co, "collapsed_bytes", c->collapsed_bytes);
	ctl_add_u64(co, "folio_only_bytes", c->folio_only_bytes);
	ctl_add_u64(co, "hole_bytes", c->hole_bytes);
	ctl_add_u64(co, "failed_bytes", c->failed_bytes);
	ctl_add_u64(co, "cpu_ns", c->cpu_ns);
	ctl_add_u64(co, "elapsed_ms", c->elapsed_ms);
	ctl_add_str(co, "note", c->note);
	ro = json_object_new_object();
	json_object_object_add(ro, "running", json_object_new_boolean(c->rerun.running));
	ctl_add_u64(ro, "passes", c->rerun.passes);
	ctl_add_u64(ro, "queued_bytes", c->rerun.queued_bytes);
	ctl_add_u64(ro, "candidate_bytes", c->rerun.candidate_bytes);
	ctl_add_u64(ro, "collapsed_bytes", c->rerun.collapsed_bytes);
	ctl_add_u64(ro, "hole_bytes", c->rerun.hole_bytes);
	ctl_add_u64(ro, "failed_bytes", c->rerun.failed_bytes);
	ctl_add_u64(ro, "cpu_ns", c->rerun.cpu_ns);
	json_object_object_add(co, "rerun", ro);
	json_object_object_add(o, "collapse", co);
	return o;
}

/*
 * OP keys: vm, id, kind ("reclaim", "return", "reconcile"), state
 * ("running", "done", "stopped", "failed"), target_bytes, done_bytes
 * (reclaim/reconcile: backing freed; return: bytes the guest got back),
 * error (0 or a negative errno), reason (null unless short), elapsed_ms,
 * rounds; return only: reback ("huge", "partial", "small",
 * "small-policy"; null before the first re-back), reback_huge_bytes,
 * reback_note (null when huge); reclaim on the shared backend only:
 * punched_bytes (backing freed by the operation's own punches; done_bytes
 * is the backing's net drop, which free page reporting on the same memfd
 * adds to and the guest's migrations take from); reclaim on the hint
 * backend only: backend "hint", compacted_bytes (what the guest emptied
 * and freed: its claim),
 * rss_anon_before_bytes, rss_anon_after_bytes (QEMU's RssAnon at the start and at the
 * latest sample; done_bytes is the drop between them, never the claim).
 * Every operation: pages_migrated (pages the guest module moved out of
 * the blocks it emptied) and vacate_ns (guest CPU it spent emptying them),
 * the growth of the module's counters over a reclaim; null unless both
 * readings came (returns and reconciles move nothing).
 */
struct json_object *ctl_proto_op_json(const char *vm, const struct reclaim_op_info *op)
{
	struct json_object *o = json_object_new_object();

	ctl_add_str(o, "vm", vm);
	ctl_add_u64(o, "id", op->id);
	ctl_add_str(o, "kind", reclaim_kind_name(op->kind));
	ctl_add_str(o, "state", reclaim_op_state_name(op->state));
	ctl_add_str(o, "origin", reclaim_origin_name(op->origin));
	ctl_add_u64(o, "started_unix_ms", op->started_unix_ms);
	ctl_add_u64(o, "target_bytes", op->target_bytes);
	ctl_add_u64(o, "done_bytes", op->done_bytes);
	json_object_object_add(o, "error", json_object_new_int(op->error));
	ctl_add_str(o, "reason", op->reason);
	ctl_add_u64(o, "elapsed_ms", op->elapsed_ms);
	ctl_add_u64(o, "rounds", op->rounds);
	ctl_add_work(o, op->work_known, op->pages_migrated, op->vacate_ns);
	if (op->kind == RECLAIM_KIND_RETURN) {
		ctl_add_str(o, "reback", op->reback_known ?
			    backend_shared_status_name(op->reback) : NULL);
		ctl_add_u64(o, "reback_huge_bytes", op->reback_huge_bytes);
		ctl_add_str(o, "reback_note", op->reback_note);
	}
	if (op->kind == RECLAIM_KIND_RECLAIM && !op->hint)
		ctl_add_u64(o, "punched_bytes", op->punched_bytes);
	if (op->hint) {
		ctl_add_str(o, "backend", "hint");
		ctl_add_u64(o, "compacted_bytes", op->compacted_bytes);
		ctl_add_u64(o, "rss_anon_before_bytes", op->rss_anon_before);
		ctl_add_u64(o, "rss_anon_after_bytes", op->rss_anon_after);
	}
	return o;
}

struct json_object *ctl_proto_map_json(const char *vm, const struct vm_map_result *m)
{
	static const char classes[] = CTL_MAP_GUEST_CHARS, causes[] = CTL_MAP_CAUSE_CHARS;
	struct json_object *o = json_object_new_object();
	struct json_object *names = json_object_new_array();
	struct json_object *slabs = json_object_new_array();
	char *guest = malloc(m->nblocks + 1), *host = malloc(m->nblocks + 1);

	if (!o || !names || !slabs || !guest || !host) {
		json_object_put(o);
		json_object_put(names);
		json_object_put(slabs);
		free(guest);
		free(host);
		return NULL;
	}
	for (uint64_t i = 0; i < m->nblocks; i++) {
		unsigned int cls = VMDEFRAG_MAP_CLASS(m->guest[i]);
		unsigned int cause = VMDEFRAG_MAP_CAUSE(m->guest[i]);

		guest[i] = cls == VMDEFRAG_CLASS_UNMOVABLE ? causes[cause] : classes[cls];
		host[i] = "0123456789abcdef"[m->host[i] & 0xf];
		if (m->slab[i] != PROTO_MAP_NO_SLAB) {
			struct json_object *pair = json_object_new_array();

			json_object_array_add(pair, json_object_new_uint64(i));
			json_object_array_add(pair, json_object_new_int(m->slab[i]));
			json_object_array_add(slabs, pair);
		}
	}
	guest[m->nblocks] = host[m->nblocks] = '\0';
	for (uint32_t i = 0; i < m->nnames; i++)
		json_object_array_add(names, json_object_new_string_len(m->names[i],
			(int)strnlen(m->names[i], PROTO_NAME_LEN)));
	ctl_add_str(o, "vm", vm);
	ctl_add_u64(o, "block_size_bytes", PROTO_BLOCK_SIZE);
	json_object_object_add(o, "huge_known", json_object_new_boolean(m->huge_known));
	json_object_object_add(o, "guest", json_object_new_string(guest));
	json_object_object_add(o, "host", json_object_new_string(host));
	json_object_object_add(o, "slab_caches", names);
	json_object_object_add(o, "slabs", slabs);
	free(guest);
	free(host);
	return o;
}

struct json_object *ctl_proto_history_json(const char *vm,
					   const struct vm_history_entry *e)
{
	struct json_object *o = json_object_new_object();

	ctl_add_str(o, "vm", vm);
	ctl_add_u64(o, "id", e->id);
	ctl_add_str(o, "kind", reclaim_kind_name(e->kind));
	ctl_add_str(o, "origin", reclaim_origin_name(e->origin));
	ctl_add_str(o, "state", reclaim_op_state_name(e->state));
	ctl_add_u64(o, "started_unix_ms", e->started_unix_ms);
	ctl_add_u64(o, "duration_ms", e->duration_ms);
	ctl_add_u64(o, "target_bytes", e->asked_bytes);
	ctl_add_u64(o, "done_bytes", e->done_bytes);
	json_object_object_add(o, "error", json_object_new_int(e->error));
	ctl_add_work(o, e->work_known, e->pages_migrated, e->vacate_ns);
	return o;
}

/*
 * A histogram whose buckets have names: [{<key>: name, blocks}], a bucket
 * without a name is "<key>-N".
 */
static struct json_object *ctl_named_hist(const char *key,
					  const char *(*name_of)(unsigned int),
					  const uint64_t *blocks, unsigned int n)
{
	struct json_object *a = json_object_new_array();
	char name[32];

	for (unsigned int i = 0; i < n && i < PROTO_HIST_MAX; i++) {
		struct json_object *e = json_object_new_object();
		const char *nm = name_of(i);

		if (!nm) {
			snprintf(name, sizeof(name), "%s-%u", key, i);
			nm = name;
		}
		ctl_add_str(e, key, nm);
		ctl_add_u64(e, "blocks", blocks[i]);
		json_object_array_add(a, e);
	}
	return a;
}

/*
 * SCAN keys: vm; total_bytes, free_bytes, free_block_bytes,
 * capturable_bytes, captured_bytes, available_bytes, scan_ns; classes
 * [{class, blocks}]; cost [{max_pages, blocks}] (bucket i holds blocks
 * needing at most max_pages migrations, more than the bucket before);
 * unmovable [{cause, blocks}]; slabs [{name, pages, blocks}, with a
 * census also reclaim_blocks].  A class or cause the daemon has no name for
 * is "class-N" / "cause-N".  With a census (protocol version 2), census
 * {blocks {free, movable, slab_reclaimable, other_unmovable}, cost
 * {movable_pages, slab_reclaim_pages, slab_reclaim_objects}, evicted
 * {dentries, inodes, pagecache_bytes, blocks}}; without, census is null.
 */
static struct json_object *ctl_proto_census_json(const struct proto_scan_resp *sc,
						 const struct proto_scan_census *c)
{
	struct json_object *o = json_object_new_object(), *b;
	uint64_t unmovable = sc->nclasses > VMDEFRAG_CLASS_UNMOVABLE ?
			     sc->classes[VMDEFRAG_CLASS_UNMOVABLE] : 0;
	uint64_t reclaim = sc->nunmovable > VMDEFRAG_CAUSE_SLAB_RECLAIM ?
			   sc->unmovable[VMDEFRAG_CAUSE_SLAB_RECLAIM] : 0;

	b = json_object_new_object();
	ctl_add_u64(b, "free", sc->nclasses > VMDEFRAG_CLASS_FREE ?
		    sc->classes[VMDEFRAG_CLASS_FREE] : 0);
	ctl_add_u64(b, "movable", sc->nclasses > VMDEFRAG_CLASS_MOVABLE ?
		    sc->classes[VMDEFRAG_CLASS_MOVABLE] : 0);
	ctl_add_u64(b, "slab_reclaimable", reclaim);
	/* a guest's histogram may disagree with itself: never below 0 */
	ctl_add_u64(b, "other_unmovable", unmovable > reclaim ? unmovable - reclaim : 0);
	json_object_object_add(o, "blocks", b);

	b = json_object_new_object();
	ctl_add_u64(b, "movable_pages", c->movable_pages);
	ctl_add_u64(b, "slab_reclaim_pages", c->slab_reclaim_pages);
	ctl_add_u64(b, "slab_reclaim_objects", c->slab_reclaim_objects);
	json_object_object_add(o, "cost", b);

	b = json_object_new_object();
	ctl_add_u64(b, "dentries", c->evicted_dentries);
	ctl_add_u64(b, "inodes", c->evicted_inodes);
	ctl_add_u64(b, "pagecache_bytes", c->evicted_pagecache_bytes);
	ctl_add_u64(b, "blocks", c->evicted_blocks);
	json_object_object_add(o, "evicted", b);
	return o;
}

struct json_object *ctl_proto_scan_json(const char *vm,
					const struct proto_scan_resp *sc,
					const struct proto_slab *slabs,
					const struct proto_scan_census *census)
{
	struct json_object *o = json_object_new_object();
	struct json_object *a;

	ctl_add_str(o, "vm", vm);
	ctl_add_u64(o, "total_bytes", sc->total_bytes);
	ctl_add_u64(o, "free_bytes", sc->free_bytes);
	ctl_add_u64(o, "free_block_bytes", sc->free_block_bytes);
	ctl_add_u64(o, "capturable_bytes", sc->capturable_bytes);
	ctl_add_u64(o, "captured_bytes", sc->captured_bytes);
	ctl_add_u64(o, "available_bytes", sc->available_bytes);
	ctl_add_u64(o, "scan_ns", sc->scan_ns);

	json_object_object_add(o, "classes",
			       ctl_named_hist("class", ctl_proto_class_name,
					      sc->classes, sc->nclasses));

	a = json_object_new_array();
	for (unsigned int i = 0; i < sc->ncost && i < PROTO_HIST_MAX; i++) {
		struct json_object *e = json_object_new_object();

		ctl_add_u64(e, "max_pages", sc->cost_bounds[i]);
		ctl_add_u64(e, "blocks", sc->cost[i]);
		json_object_array_add(a, e);
	}
	json_object_object_add(o, "cost", a);

	json_object_object_add(o, "unmovable",
			       ctl_named_hist("cause", ctl_proto_cause_name,
					      sc->unmovable, sc->nunmovable));

	a = json_object_new_array();
	for (uint32_t i = 0; i < sc->nslabs && i < PROTO_MAX_SLABS; i++) {
		struct json_object *e = json_object_new_object();

		json_object_object_add(e, "name",
				       json_object_new_string_len(slabs[i].name,
								  (int)strnlen(slabs[i].name,
									       PROTO_NAME_LEN)));
		ctl_add_u64(e, "pages", slabs[i].pages);
		ctl_add_u64(e, "blocks", slabs[i].blocks);
		if (census)
			ctl_add_u64(e, "reclaim_blocks", census->slab_reclaim_blocks[i]);
		json_object_array_add(a, e);
	}
	json_object_object_add(o, "slabs", a);
	json_object_object_add(o, "census",
			       census ? ctl_proto_census_json(sc, census) : NULL);
	return o;
}

int ctl_proto_exit_code(const char *code)
{
	if (!code)
		return CTL_EXIT_FAILED;
	if (strcmp(code, CTL_ERR_UNKNOWN_VM) == 0)
		return CTL_EXIT_UNKNOWN_VM;
	if (strcmp(code, CTL_ERR_NOT_READY) == 0)
		return CTL_EXIT_NOT_READY;
	if (strcmp(code, CTL_ERR_PERMISSION) == 0)
		return CTL_EXIT_PERMISSION;
	if (strcmp(code, CTL_ERR_BAD_REQUEST) == 0 || strcmp(code, CTL_ERR_TOO_LARGE) == 0)
		return CTL_EXIT_USAGE;
	return CTL_EXIT_FAILED;
}
