/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ctl_proto.h - the control socket's message format, shared by vmdefragd
 * and vmdefragctl (prefix ctl_proto_).
 *
 * JSON lines over a unix stream socket: the client writes one request
 * object per line, the daemon answers each with one response object per
 * line, in order.
 *
 *   request   {"cmd": "status"}            every VM
 *             {"cmd": "status", "vm": N}   one VM
 *             {"cmd": "scan", "vm": N}     relay REQ_SCAN to the guest
 *             {"cmd": "reclaim", "vm": N, "bytes": B}   start a reclaim
 *               optional "evict": "movable" | "evict-slab" | "evict"
 *             {"cmd": "return", "vm": N, "bytes": B}    start a return
 *             {"cmd": "op", "vm": N, "id": I}  one operation's progress
 *             {"cmd": "cancel", "vm": N[, "id": I]}  stop the running one
 *             {"cmd": "notify", "vm": N, "event": E}  from the libvirt hook
 *             {"cmd": "policy", "vm": N, "mode": "auto" | "manual"}
 *             {"cmd": "metrics"}           Prometheus text of every VM
 *             {"cmd": "history"[, "vm": N]}  the last operations, oldest first
 *             {"cmd": "map", "vm": N}      the guest's blocks and the host's
 *   response  {"ok": true, "vms": [VMSTATUS, ...]}
 *             {"ok": true, "scan": SCAN}
 *             {"ok": true, "operation": OP}   reclaim, return, op, cancel
 *             {"ok": true}                    notify
 *             {"ok": true, "policy": {vm, mode}}   policy
 *             {"ok": true, "metrics": "TEXT"}  metrics (format 0.0.4)
 *             {"ok": true, "history": [HIST, ...]}  history
 *             {"ok": true, "map": MAP}     map (ctl_proto_map_json())
 *             {"ok": false, "error": CODE, "message": "one line"}
 *
 * notify: E is "prepare", "started", "stopped", "release" or "migrate"
 * (libvirt's qemu hook operations of the same names); anything else is
 * bad-request.
 * N is a libvirt domain name, which need not be a VM the daemon knows.
 * The answer comes at once and never waits on libvirt (the hook runs while
 * libvirtd holds the domain).  With --libvirt, "started" makes the daemon
 * re-read that domain soon and attach to it, "stopped" and "release" detach
 * it; "migrate" (run on the destination of a live migration before its
 * QEMU exists) makes it expect the domain as an incoming migration (status
 * "incoming" at once; it drops the expectation if no such domain runs
 * within a minute); "prepare" is only logged.  Without --libvirt every event is accepted
 * and logged at debug level.
 *
 * CODE is one of the CTL_ERR_* strings below; vmdefragctl maps each to an
 * exit status (ctl_proto_exit_code()).  VMSTATUS, SCAN and OP are built
 * only by ctl_proto_status_json() / ctl_proto_scan_json() /
 * ctl_proto_op_json(): their keys are documented there.
 */
#ifndef VDF_CTL_PROTO_H
#define VDF_CTL_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "migration.h"
#include "policy_vm.h"
#include "reclaim.h"
#include "session.h"
#include "vm_counters.h"
#include "vmdefrag/proto.h"

#define CTL_REQUEST_MAX		4096		/* bytes in one request line */
#define CTL_RESPONSE_MAX	(1u << 20)	/* bytes in one response line */
#define CTL_DEFAULT_SOCKET	"/run/vmdefragd.sock"

#define CTL_ERR_BAD_REQUEST	"bad-request"
#define CTL_ERR_UNKNOWN_VM	"unknown-vm"
#define CTL_ERR_NOT_READY	"not-ready"	/* guest session not READY */
#define CTL_ERR_BUSY		"busy"		/* request queue full */
#define CTL_ERR_GUEST		"guest-error"	/* guest answered with an errno */
#define CTL_ERR_LOST		"session-lost"	/* dropped or timed out meanwhile */
#define CTL_ERR_PERMISSION	"permission"
#define CTL_ERR_UNSUPPORTED	"unsupported"	/* e.g. reclaim on the hint backend */
#define CTL_ERR_TOO_LARGE	"too-large"	/* size beyond what is possible */
#define CTL_ERR_NO_OP		"no-operation"	/* op id unknown (superseded) */
#define CTL_ERR_INTERNAL	"internal"

/* vmdefragctl exit statuses */
enum ctl_exit {
	CTL_EXIT_OK		= 0,
	CTL_EXIT_FAILED		= 1,	/* the daemon or guest could not do it */
	CTL_EXIT_USAGE		= 2,	/* bad arguments */
	CTL_EXIT_NO_DAEMON	= 3,	/* socket missing / nobody listening */
	CTL_EXIT_PERMISSION	= 4,	/* not allowed to use the socket */
	CTL_EXIT_UNKNOWN_VM	= 5,
	CTL_EXIT_NOT_READY	= 6,	/* the VM's guest session is not ready */
	CTL_EXIT_TIMEOUT	= 7,	/* no answer within --timeout */
};

/*
 * The version of the JSON the daemon answers (and vmdefragctl --json
 * prints), carried as "schema" in every top-level object.  Adding a key
 * keeps it; renaming or removing one, or changing what a value means or
 * its unit, raises it.  Units are in the key: _bytes, _ms, _ns; an integer
 * key without one is a count (vmdefragctl(1), JSON OUTPUT).
 */
#define CTL_JSON_SCHEMA	1

enum ctl_cmd {
	CTL_CMD_STATUS,
	CTL_CMD_SCAN,
	CTL_CMD_RECLAIM,
	CTL_CMD_RETURN,
	CTL_CMD_OP,
	CTL_CMD_NOTIFY,
	CTL_CMD_CANCEL,
	CTL_CMD_POLICY,
	CTL_CMD_METRICS,
	CTL_CMD_HISTORY,
	CTL_CMD_MAP,
};

/* notify's events, named as libvirt's qemu hook names its operations */
enum ctl_notify_event {
	CTL_NOTIFY_PREPARE,
	CTL_NOTIFY_STARTED,
	CTL_NOTIFY_STOPPED,
	CTL_NOTIFY_RELEASE,
	CTL_NOTIFY_MIGRATE,
};

struct ctl_request {
	enum ctl_cmd cmd;
	char vm[64];		/* "" if none given */
	uint64_t bytes;		/* reclaim, return: > 0 */
	uint32_t id;		/* op: the operation's id */
	enum ctl_notify_event event;	/* notify */
	int evict;		/* reclaim: enum vmdefrag_evict, -1 the VM's
				 * default (config "evict") */
	enum policy_mode mode;	/* policy */
};

/* "prepare", ... for an event; NULL if out of range. */
const char *ctl_proto_notify_name(enum ctl_notify_event event);
/* The event named `name`; -EINVAL if none. */
int ctl_proto_notify_from_name(const char *name, enum ctl_notify_event *ret_event);

/* Encodes a request as one line (with "\n"); *ret_line is malloc'ed. */
int ctl_proto_format_request(const struct ctl_request *req, char **ret_line);
/*
 * Parses one request line.  -EINVAL with a message in err (for the
 * client) when it is not a valid request.
 */
int ctl_proto_parse_request(const char *line, struct ctl_request *ret_req,
			    char *err, size_t errsz);

/* {"ok": false, "error": code, "message": message} */
struct json_object *ctl_proto_error(const char *code, const char *message);
/* {"ok": true, key: value}; takes ownership of value. */
struct json_object *ctl_proto_ok(const char *key, struct json_object *value);

/* One VM's state as the daemon sees it; vm.c fills it. */
struct ctl_vm_status {
	char name[64];
	bool qmp_connected;
	char qmp_error[256];		/* why not connected / attached */
	int pid;			/* QEMU's pid, 0 if unknown */
	const char *backend;		/* "shared", "hint", "none", "unknown" */
	char backend_note[512];		/* why hint / none / unknown */
	uint64_t ram_bytes;
	bool rss_known;
	uint64_t rss_anon_bytes;	/* QEMU's RssAnon */
	bool backing_known;
	uint64_t backing_bytes;		/* allocated in the backing file(s) */
	bool huge_known;
	uint64_t huge_mapped_bytes;	/* guest RAM mapped by huge pages */
	const char *shmem_enabled;	/* host setting, NULL if unreadable */
	bool reback_huge;		/* re-backing can use 2 MiB folios */
	char reback_note[192];
	struct session_info session;
	bool have_scan;
	uint64_t scan_age_ms;
	struct proto_scan_resp scan;
	bool have_stats;
	uint64_t stats_age_ms;
	struct proto_stats stats;
	struct reclaim_status mem;	/* blocks held for the host, operations */
	struct migration_status migration;	/* live migration, either way */
	struct policy_status policy;	/* automatic densification */
	struct vm_counters_totals counters;	/* persisted totals (metrics) */
};

struct json_object *ctl_proto_status_json(const struct ctl_vm_status *st);
struct json_object *ctl_proto_op_json(const char *vm, const struct reclaim_op_info *op);
/* The answer of policy: {vm, mode}. */
struct json_object *ctl_proto_policy_json(const char *vm, enum policy_mode mode);
struct vm_map_result;
/*
 * MAP: "vm", "block_size_bytes", "huge_known", one character per block
 * from gpa 0 in "guest" (CTL_MAP_GUEST_*) and "host" (a hex digit of
 * VM_HOST_* flags), "slab_caches" (names) and "slabs" ([block, index into
 * slab_caches] for the unmovable blocks that hold a named slab cache).
 */
#define CTL_MAP_GUEST_CHARS	"CFMUO"		/* by enum vmdefrag_block_class */
#define CTL_MAP_CAUSE_CHARS	"SPRNUE"	/* UNMOVABLE, by cause */
struct json_object *ctl_proto_map_json(const char *vm, const struct vm_map_result *m);
struct json_object *ctl_proto_history_json(const char *vm,
					   const struct vm_history_entry *e);
struct json_object *ctl_proto_scan_json(const char *vm,
					const struct proto_scan_resp *scan,
					const struct proto_slab *slabs,
					const struct proto_scan_census *census);

/* Exit status for an error code from a response (unknown codes: FAILED). */
int ctl_proto_exit_code(const char *code);

const char *ctl_proto_class_name(unsigned int i);
const char *ctl_proto_cause_name(unsigned int i);

#endif /* VDF_CTL_PROTO_H */
