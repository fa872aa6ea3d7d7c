// SPDX-License-Identifier: GPL-2.0
/*
 * control.c - the control socket: JSON-lines requests from vmdefragctl.
 *
 * Access: the socket file has mode socket_mode (0660 by default) and
 * belongs to root and socket_group; on top of the file permissions every
 * client's credentials are checked on connect, from the socket itself
 * (SO_PEERCRED for uid and gid, SO_PEERGROUPS for the supplementary
 * groups; nothing read from /proc, where the pid may be reused):
 *   admin   root, the daemon's own user, or a member of socket_group
 *           (primary or supplementary group): every command
 *   read    a member of socket_read_group: the read-only commands
 * anyone else gets one "permission" error and is disconnected.  Which
 * command needs which is control_cmd_access[], one line per command name;
 * a name not there needs admin.  A read client asking for an admin command
 * gets a "permission" error for that request and stays connected.
 *
 * Slots: at most CONTROL_MAX_CLIENTS clients, and socket_clients_per_uid
 * of one uid, so that one user cannot take every slot; a client refused
 * for either gets one "busy" error line and is closed.  A client that has
 * sent nothing and been sent nothing for socket_idle_timeout_ms gets one
 * error line and is closed (a client WAITING on a guest is not idle; one
 * that does not even read its error is freed one period later).
 *
 * Each client is a small state machine:
 *   READING   collecting a request line (at most CTL_REQUEST_MAX bytes;
 *             a longer line is an error and closes the client)
 *   WAITING   a scan was relayed to a guest; reading is paused until the
 *             answer (or the session's failure) arrives, so one client has
 *             at most one request in flight and cannot fill a VM's queue
 *   WRITING   any state may have output pending; it is flushed on
 *             EPOLLOUT, bounded by 2 * CTL_RESPONSE_MAX
 * A client that disconnects while WAITING cancels its interest in the
 * scan (vm_scan_cancel()); the guest's answer still refreshes the VM's
 * cached picture.
 *
 * The VM set is the daemon's vm_list: it grows while the server runs (a
 * libvirt domain seen for the first time) and never shrinks, so a client
 * never holds a freed VM.  notify (from the libvirt hook) is answered at
 * once; its effect runs later, in the notify function's owner.
 *
 * Clients are trusted only as far as the socket's permissions go: their
 * input is still bounded and parsed strictly (ctl_proto_parse_request()).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "control.h"
#include "ctl_proto.h"
#include "cleanup.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "outbuf.h"
#include "vm.h"
#include "vm_map.h"

#define CONTROL_OUT_MAX	(2 * CTL_RESPONSE_MAX)
#define CONTROL_GROUPS_TRIES	4	/* SO_PEERGROUPS: ERANGE, grow, again */

_Static_assert(CONFIG_CLIENTS_PER_UID_MAX <= CONTROL_MAX_CLIENTS,
	       "socket_clients_per_uid may not exceed the slots there are");

enum control_access {
	CONTROL_ACCESS_READ,		/* socket_read_group and admins */
	CONTROL_ACCESS_ADMIN,		/* root, the daemon's user, socket_group */
};

/*
 * What each command needs, by the request's "cmd" name.  A new command is
 * one line here; a name missing from the table needs admin.
 */
static const struct {
	const char *cmd;
	enum control_access access;
} control_cmd_access[] = {
	{ "status",	CONTROL_ACCESS_READ },
	{ "scan",	CONTROL_ACCESS_READ },	/* a fresh picture, changes nothing */
	{ "op",		CONTROL_ACCESS_READ },	/* an operation's progress */
	{ "metrics",	CONTROL_ACCESS_READ },
	{ "history",	CONTROL_ACCESS_READ },
	{ "map",	CONTROL_ACCESS_READ },
	{ "reclaim",	CONTROL_ACCESS_ADMIN },
	{ "return",	CONTROL_ACCESS_ADMIN },
	{ "cancel",	CONTROL_ACCESS_ADMIN },
	{ "notify",	CONTROL_ACCESS_ADMIN },
	{ "policy",	CONTROL_ACCESS_ADMIN },
};

struct control_client {
	struct control *ctl;
	int fd;
	struct loop_io io;
	char in[CTL_REQUEST_MAX + 1];
	size_t in_len;
	struct outbuf out;		/* at most CONTROL_OUT_MAX */
	bool closing;			/* close once out is flushed */
	struct vm *waiting_vm;		/* WAITING on a scan of this VM */
	uint32_t waiting_id;
	struct vm_map *waiting_map;	/* WAITING on this VM's block map */
	uid_t uid;			/* the peer's, from SO_PEERCRED */
	enum control_access access;	/* the most it may ask */
	struct loop_timer idle;		/* closes it after socket_idle_timeout_ms */
	struct control_client *next;
};

struct control {
	struct loop *loop;
	const struct config *cfg;
	const struct vm_list *vms;
	control_notify_fn notify;
	void *notify_userdata;
	int fd;
	struct loop_io io;
	char path[108];
	struct control_client *clients;
	size_t nclients;
};

static void control_client_free(struct control_client *cl)
{
	struct control *c = cl->ctl;

	for (struct control_client **p = &c->clients; *p; p = &(*p)->next) {
		if (*p == cl) {
			*p = cl->next;
			break;
		}
	}
	c->nclients--;
	if (cl->waiting_map)
		vm_map_abort(cl->waiting_map);
	else if (cl->waiting_vm)
		vm_scan_cancel(cl->waiting_vm, cl->waiting_id);
	loop_timer_disarm(c->loop, &cl->idle);
	loop_io_remove(c->loop, &cl->io);
	close(cl->fd);
	outbuf_free(&cl->out);
	free(cl);
}

/* After any activity: what to poll for, and the idle clock starts again. */
static void control_client_update(struct control_client *cl)
{
	struct control *c = cl->ctl;
	uint32_t ev = 0;

	if (!cl->waiting_vm && !cl->closing)
		ev |= EPOLLIN;
	if (outbuf_pending(&cl->out))
		ev |= EPOLLOUT;
	(void)loop_io_modify(c->loop, &cl->io, ev);
	if (cl->waiting_vm)
		loop_timer_disarm(c->loop, &cl->idle);	/* the guest's turn */
	else
		loop_timer_arm(c->loop, &cl->idle, c->cfg->socket_idle_timeout_ms);
}

/* Writes what it can; false if the client is gone (freed). */
static bool control_client_flush(struct control_client *cl)
{
	if (outbuf_flush(&cl->out, cl->fd) < 0) {
		control_client_free(cl);
		return false;
	}
	if (!outbuf_pending(&cl->out) && cl->closing) {
		control_client_free(cl);
		return false;
	}
	control_client_update(cl);
	return true;
}

/* Queues one response line (consumes obj); false if the client is gone. */
static bool control_client_send(struct control_client *cl, struct json_object *obj)
{
	const char *s = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN);
	size_t len = s ? strlen(s) : 0;
	int r = -ENOBUFS;

	/* the line and its newline go in together, or neither does */
	if (s && len + 1 <= CTL_RESPONSE_MAX &&
	    len + 1 <= outbuf_room(&cl->out)) {
		r = outbuf_append(&cl->out, s, len);
		if (r == 0)
			r = outbuf_append(&cl->out, "\n", 1);
	}
	json_object_put(obj);
	if (r == -ENOBUFS)
		log_warning("control client: response too large or client not "
			    "reading, disconnecting it");
	if (r < 0) {
		control_client_free(cl);
		return false;
	}
	return control_client_flush(cl);
}

static bool control_client_error(struct control_client *cl, const char *code,
				 const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static bool control_client_error(struct control_client *cl, const char *code,
				 const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return control_client_send(cl, ctl_proto_error(code, msg));
}

static struct vm *control_find_vm(struct control *c, const char *name)
{
	return vm_list_find(c->vms, name);
}

static void control_scan_done(void *userdata, int status,
			      const struct proto_scan_resp *scan,
			      const struct proto_slab *slabs,
			      const struct proto_scan_census *census)
{
	struct control_client *cl = userdata;
	struct vm *vm = cl->waiting_vm;

	cl->waiting_vm = NULL;
	if (status == 0) {
		control_client_send(cl, ctl_proto_ok("scan",
				    ctl_proto_scan_json(vm_name(vm), scan, slabs,
							census)));
		return;
	}
	if (status == -ECONNRESET)
		control_client_error(cl, CTL_ERR_LOST, "VM '%s': guest session "
				     "dropped before the scan was answered",
				     vm_name(vm));
	else
		control_client_error(cl, CTL_ERR_GUEST, "VM '%s': guest answered "
				     "the scan with error %d (%s)", vm_name(vm),
				     status, strerror(-status));
}

static bool control_cmd_status(struct control_client *cl, const struct ctl_request *req)
{
	struct control *c = cl->ctl;
	struct json_object *arr = json_object_new_array();
	struct ctl_vm_status *st = malloc(sizeof(*st));

	if (!st) {
		json_object_put(arr);
		return control_client_error(cl, CTL_ERR_INTERNAL, "out of memory");
	}
	for (size_t i = 0; i < c->vms->n; i++) {
		if (req->vm[0] && strcmp(req->vm, vm_name(c->vms->v[i])) != 0)
			continue;
		vm_get_status(c->vms->v[i], st);
		json_object_array_add(arr, ctl_proto_status_json(st));
	}
	free(st);
	if (req->vm[0] && json_object_array_length(arr) == 0) {
		json_object_put(arr);
		return control_client_error(cl, CTL_ERR_UNKNOWN_VM,
					    "no VM named '%s'", req->vm);
	}
	return control_client_send(cl, ctl_proto_ok("vms", arr));
}

static bool control_cmd_scan(struct control_client *cl, const struct ctl_request *req)
{
	struct vm *vm = control_find_vm(cl->ctl, req->vm);
	uint32_t id;
	int r;

	if (!vm)
		return control_client_error(cl, CTL_ERR_UNKNOWN_VM, "no VM named '%s'",
					    req->vm);
	r = vm_scan(vm, control_scan_done, cl, &id);
	if (r == -ENOTCONN)
		return control_client_error(cl, CTL_ERR_NOT_READY,
					    "VM '%s': guest session is not ready "
					    "(is vmdefrag-agent running in the guest?)",
					    req->vm);
	if (r == -EBUSY)
		return control_client_error(cl, CTL_ERR_BUSY,
					    "VM '%s': too many requests queued", req->vm);
	if (r < 0)
		return control_client_error(cl, CTL_ERR_INTERNAL, "VM '%s': %s",
					    req->vm, strerror(-r));
	cl->waiting_vm = vm;
	cl->waiting_id = id;
	control_client_update(cl);
	return true;
}

/*
 * reclaim / return: start the operation and answer at once with its id
 * (vmdefragctl --wait polls "op"); the operation runs on the loop.
 */
static bool control_cmd_start_op(struct control_client *cl, const struct ctl_request *req)
{
	struct vm *vm = control_find_vm(cl->ctl, req->vm);
	enum reclaim_kind kind = req->cmd == CTL_CMD_RECLAIM ? RECLAIM_KIND_RECLAIM :
			     RECLAIM_KIND_RETURN;
	struct reclaim_op_info op;
	const char *code;
	char err[384];
	uint32_t id;
	int r;

	if (!vm)
		return control_client_error(cl, CTL_ERR_UNKNOWN_VM, "no VM named '%s'",
					    req->vm);
	r = vm_start_op(vm, kind, req->bytes, req->evict, RECLAIM_ORIGIN_USER, err,
			sizeof(err), &id);
	if (r < 0) {
		switch (r) {
		case -EBUSY: code = CTL_ERR_BUSY; break;
		case -ENOTCONN:
		case -ENODATA: code = CTL_ERR_NOT_READY; break;
		case -EOPNOTSUPP: code = CTL_ERR_UNSUPPORTED; break;
		case -EINVAL: code = CTL_ERR_TOO_LARGE; break;
		default: code = CTL_ERR_INTERNAL; break;
		}
		return control_client_error(cl, code, "VM '%s': %s", req->vm, err);
	}
	memset(&op, 0, sizeof(op));
	if (vm_get_op(vm, id, &op) < 0)
		op.id = id;
	return control_client_send(cl, ctl_proto_ok("operation",
				   ctl_proto_op_json(vm_name(vm), &op)));
}

static bool control_cmd_op(struct control_client *cl, const struct ctl_request *req)
{
	struct vm *vm = control_find_vm(cl->ctl, req->vm);
	struct reclaim_op_info op;

	if (!vm)
		return control_client_error(cl, CTL_ERR_UNKNOWN_VM, "no VM named '%s'",
					    req->vm);
	if (vm_get_op(vm, req->id, &op) < 0)
		return control_client_error(cl, CTL_ERR_NO_OP, "VM '%s': operation #%u "
					    "is neither running nor the last one "
					    "(the daemon restarted, or another "
					    "operation followed it)", req->vm, req->id);
	return control_client_send(cl, ctl_proto_ok("operation",
				   ctl_proto_op_json(vm_name(vm), &op)));
}

/*
 * cancel: stop the running reclaim or return the way a live migration does
 * (reclaim_stop(): the request in flight completes, what was done stays);
 * the answer is the operation as it ended.
 */
static bool control_cmd_cancel(struct control_client *cl, const struct ctl_request *req)
{
	struct vm *vm = control_find_vm(cl->ctl, req->vm);
	struct reclaim_op_info op;
	char which[32] = "";
	uint32_t id = 0;
	int r;

	if (!vm)
		return control_client_error(cl, CTL_ERR_UNKNOWN_VM, "no VM named '%s'",
					    req->vm);
	if (req->id)
		snprintf(which, sizeof(which), " #%u", req->id);
	r = vm_cancel_op(vm, req->id, &id);
	if (r == -EBUSY)
		return control_client_error(cl, CTL_ERR_BUSY, "VM '%s': the running "
					    "operation is a reconcile, which is not "
					    "cancelled", req->vm);
	if (r < 0 || vm_get_op(vm, id, &op) < 0)
		return control_client_error(cl, CTL_ERR_NO_OP, "VM '%s': no reclaim "
					    "or return%s is running", req->vm, which);
	return control_client_send(cl, ctl_proto_ok("operation",
				   ctl_proto_op_json(vm_name(vm), &op)));
}

/* The libvirt hook: answered at once, acted on by the notify function. */
static bool control_cmd_notify(struct control_client *cl, const struct ctl_request *req)
{
	struct control *c = cl->ctl;
	struct json_object *ok;
	char name[160];

	if (c->notify)
		c->notify(c->notify_userdata, req->vm, req->event);
	else
		log_debug("notify: domain %s %s (not in libvirt mode, ignoring)",
			  log_quote_str(req->vm, name, sizeof(name)),
			  ctl_proto_notify_name(req->event));
	ok = json_object_new_object();
	json_object_object_add(ok, "ok", json_object_new_boolean(1));
	return control_client_send(cl, ok);
}

/* policy: set (and persist) the VM's mode; the answer is the mode now. */
static bool control_cmd_policy(struct control_client *cl, const struct ctl_request *req)
{
	struct vm *vm = control_find_vm(cl->ctl, req->vm);
	char err[384];
	int r;

	if (!vm)
		return control_client_error(cl, CTL_ERR_UNKNOWN_VM, "no VM named '%s'",
					    req->vm);
	r = vm_set_policy(vm, req->mode, err, sizeof(err));
	if (r < 0)
		return control_client_error(cl, CTL_ERR_INTERNAL, "VM '%s': %s",
					    req->vm, err);
	return control_client_send(cl, ctl_proto_ok("policy",
				   ctl_proto_policy_json(vm_name(vm), req->mode)));
}

static void control_map_done(void *userdata, int status,
			     const struct vm_map_result *map)
{
	struct control_client *cl = userdata;
	struct vm *vm = cl->waiting_vm;
	struct json_object *o;

	cl->waiting_vm = NULL;
	cl->waiting_map = NULL;
	if (status == 0) {
		o = ctl_proto_map_json(vm_name(vm), map);
		if (!o)
			control_client_error(cl, CTL_ERR_INTERNAL, "out of memory");
		else
			control_client_send(cl, ctl_proto_ok("map", o));
		return;
	}
	if (status == -ECONNRESET || status == -ETIMEDOUT)
		control_client_error(cl, CTL_ERR_LOST, "VM '%s': guest session "
				     "dropped before the map was answered", vm_name(vm));
	else if (status == -E2BIG)
		control_client_error(cl, CTL_ERR_TOO_LARGE, "VM '%s': more than %u "
				     "blocks to map", vm_name(vm), VM_MAP_MAX_BLOCKS);
	else if (status == -ENODATA)
		control_client_error(cl, CTL_ERR_NOT_READY, "VM '%s': not attached to "
				     "QEMU", vm_name(vm));
	else
		control_client_error(cl, CTL_ERR_GUEST, "VM '%s': the block map failed "
				     "with error %d (%s)", vm_name(vm), status,
				     strerror(-status));
}

static bool control_cmd_map(struct control_client *cl, const struct ctl_request *req)
{
	struct vm *vm = control_find_vm(cl->ctl, req->vm);
	int r;

	if (!vm)
		return control_client_error(cl, CTL_ERR_UNKNOWN_VM, "no VM named '%s'",
					    req->vm);
	cl->waiting_vm = vm;
	r = vm_map_start(vm, control_map_done, cl, &cl->waiting_map);
	if (r == 0) {
		control_client_update(cl);
		return true;
	}
	cl->waiting_vm = NULL;
	if (r == -ENOTCONN)
		return control_client_error(cl, CTL_ERR_NOT_READY, "VM '%s': guest "
					    "session is not ready", req->vm);
	if (r == -EBUSY)
		return control_client_error(cl, CTL_ERR_BUSY, "VM '%s': request queue "
					    "full", req->vm);
	if (r == -EOPNOTSUPP)
		return control_client_error(cl, CTL_ERR_UNSUPPORTED, "VM '%s': the "
					    "guest agent cannot send a block map "
					    "(update the guest)", req->vm);
	return control_client_error(cl, CTL_ERR_INTERNAL, "VM '%s': %s", req->vm,
				    strerror(-r));
}

static bool control_cmd_metrics(struct control_client *cl, const struct ctl_request *req)
{
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	int r = metrics_render_vms(cl->ctl->vms, &text, &len);

	if (r < 0)
		return control_client_error(cl, CTL_ERR_INTERNAL, "cannot render "
					    "the metrics: %s", strerror(-r));
	return control_client_send(cl, ctl_proto_ok("metrics",
						    json_object_new_string_len(text, (int)len)));
}

static bool control_cmd_history(struct control_client *cl, const struct ctl_request *req)
{
	struct control *c = cl->ctl;
	_cleanup_free_ struct vm_history_entry *e = NULL;
	struct json_object *arr;
	bool found = false;

	e = calloc(VM_COUNTERS_HISTORY, sizeof(*e));
	arr = json_object_new_array();
	if (!e || !arr) {
		json_object_put(arr);
		return control_client_error(cl, CTL_ERR_INTERNAL, "out of memory");
	}
	for (size_t i = 0; i < c->vms->n; i++) {
		struct vm *vm = c->vms->v[i];
		size_t n;

		if (req->vm[0] && strcmp(req->vm, vm_name(vm)) != 0)
			continue;
		found = true;
		n = vm_get_history(vm, e, VM_COUNTERS_HISTORY);
		for (size_t j = 0; j < n; j++)
			json_object_array_add(arr, ctl_proto_history_json(vm_name(vm),
									  &e[j]));
	}
	if (req->vm[0] && !found) {
		json_object_put(arr);
		return control_client_error(cl, CTL_ERR_UNKNOWN_VM, "no VM named '%s'",
					    req->vm);
	}
	return control_client_send(cl, ctl_proto_ok("history", arr));
}

/* What the command named cmd needs (admin if it is not in the table). */
static enum control_access control_cmd_needs(const char *cmd)
{
	for (size_t i = 0; i < sizeof(control_cmd_access) / sizeof(control_cmd_access[0]); i++)
		if (strcmp(control_cmd_access[i].cmd, cmd) == 0)
			return control_cmd_access[i].access;
	return CONTROL_ACCESS_ADMIN;
}

/*
 * May cl send this request line?  Decided on its "cmd" alone, before the
 * request is parsed further; a line that is not a JSON object with a
 * string "cmd" is left to the parser's error.
 */
static bool control_client_may(const struct control_client *cl, const char *line)
{
	struct json_object *o, *cmd;
	bool ok = true;

	if (cl->access == CONTROL_ACCESS_ADMIN)
		return true;
	o = json_tokener_parse(line);
	if (o && json_object_object_get_ex(o, "cmd", &cmd) &&
	    json_object_is_type(cmd, json_type_string))
		ok = control_cmd_needs(json_object_get_string(cmd)) <= cl->access;
	json_object_put(o);
	return ok;
}

/* Handles one request line; false if the client is gone. */
static bool control_client_line(struct control_client *cl, char *line)
{
	struct ctl_request req;
	char err[256];

	if (!control_client_may(cl, line))
		return control_client_error(cl, CTL_ERR_PERMISSION,
					    "permission denied: this command needs "
					    "root or the daemon's socket group; "
					    "socket_read_group may only read");
	if (ctl_proto_parse_request(line, &req, err, sizeof(err)) < 0)
		return control_client_error(cl, CTL_ERR_BAD_REQUEST, "%s", err);
	switch (req.cmd) {
	case CTL_CMD_STATUS:
		return control_cmd_status(cl, &req);
	case CTL_CMD_SCAN:
		return control_cmd_scan(cl, &req);
	case CTL_CMD_RECLAIM:
	case CTL_CMD_RETURN:
		return control_cmd_start_op(cl, &req);
	case CTL_CMD_OP:
		return control_cmd_op(cl, &req);
	case CTL_CMD_NOTIFY:
		return control_cmd_notify(cl, &req);
	case CTL_CMD_CANCEL:
		return control_cmd_cancel(cl, &req);
	case CTL_CMD_POLICY:
		return control_cmd_policy(cl, &req);
	case CTL_CMD_METRICS:
		return control_cmd_metrics(cl, &req);
	case CTL_CMD_HISTORY:
		return control_cmd_history(cl, &req);
	case CTL_CMD_MAP:
		return control_cmd_map(cl, &req);
	}
	return true;
}

static void control_client_io(struct loop_io *io, uint32_t events)
{
	struct control_client *cl = io->userdata;
	ssize_t n;

	if ((events & EPOLLOUT) && !control_client_flush(cl))
		return;
	if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)) || cl->waiting_vm || cl->closing)
		return;
	n = recv(cl->fd, cl->in + cl->in_len, CTL_REQUEST_MAX - cl->in_len, MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0)
		return control_client_free(cl);
	cl->in_len += (size_t)n;
	control_client_update(cl);		/* not idle */
	/* one request at a time: the next is read after this one's answer */
	while (!cl->waiting_vm) {
		char *nl = memchr(cl->in, '\n', cl->in_len);
		size_t used;

		if (!nl) {
			if (cl->in_len >= CTL_REQUEST_MAX) {
				cl->closing = true;
				control_client_error(cl, CTL_ERR_BAD_REQUEST,
						     "request longer than %u bytes",
						     CTL_REQUEST_MAX);
			}
			return;
		}
		*nl = '\0';
		used = (size_t)(nl - cl->in) + 1;
		if (!control_client_line(cl, cl->in))
			return;
		memmove(cl->in, cl->in + used, cl->in_len - used);
		cl->in_len -= used;
	}
}

/*
 * The peer's supplementary groups (SO_PEERGROUPS: the socket's, as they
 * were at connect).  A buffer too small gives ERANGE and the size needed:
 * grow and ask again.  *ret_groups is malloc'ed.
 */
static int control_peer_groups(int fd, gid_t **ret_groups, size_t *ret_n)
{
	socklen_t want = 32 * sizeof(gid_t);

	for (int tries = 0; tries < CONTROL_GROUPS_TRIES; tries++) {
		socklen_t len = want;
		gid_t *g = malloc(want);

		if (!g)
			return -ENOMEM;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len) == 0) {
			*ret_groups = g;
			*ret_n = len / sizeof(gid_t);
			return 0;
		}
		free(g);
		if (errno != ERANGE)
			return -errno;
		if (len <= want)	/* no bigger size given: do not spin */
			return -ERANGE;
		want = len;
	}
	return -ERANGE;
}

static bool control_in_group(gid_t gid, const gid_t *groups, size_t n, gid_t want)
{
	if (gid == want)
		return true;
	for (size_t i = 0; i < n; i++)
		if (groups[i] == want)
			return true;
	return false;
}

/*
 * What may the peer on fd ask?  *ret_uid and *ret_gid are set on every
 * path (-1 when unknown).  -EACCES for a peer in no allowed group; another
 * negative errno if its credentials cannot be read.
 */
static int control_peer_access(const struct control *c, int fd, uid_t *ret_uid,
			       gid_t *ret_gid, enum control_access *ret_access)
{
	struct ucred cred = { .pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1 };
	socklen_t len = sizeof(cred);
	gid_t *groups = NULL;
	size_t n = 0;
	int r;

	*ret_uid = (uid_t)-1;
	*ret_gid = (gid_t)-1;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return -errno;
	if (len != sizeof(cred))
		return -EINVAL;
	*ret_uid = cred.uid;
	*ret_gid = cred.gid;
	if (cred.uid == 0 || cred.uid == geteuid()) {
		*ret_access = CONTROL_ACCESS_ADMIN;
		return 0;
	}
	if (!c->cfg->socket_group_set && !c->cfg->socket_read_group_set)
		return -EACCES;
	r = control_peer_groups(fd, &groups, &n);
	if (r < 0)
		return r;
	r = -EACCES;
	if (c->cfg->socket_group_set &&
	    control_in_group(cred.gid, groups, n, c->cfg->socket_group)) {
		*ret_access = CONTROL_ACCESS_ADMIN;
		r = 0;
	} else if (c->cfg->socket_read_group_set &&
		   control_in_group(cred.gid, groups, n, c->cfg->socket_read_group)) {
		*ret_access = CONTROL_ACCESS_READ;
		r = 0;
	}
	free(groups);
	return r;
}

/*
 * Refuses a connection that never becomes a client: one error line (a
 * fresh socket's buffer takes it without blocking) and close.
 */
static void control_refuse(int fd, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void control_refuse(int fd, const char *code, const char *fmt, ...)
{
	struct json_object *o;
	const char *s;
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	o = ctl_proto_error(code, msg);
	s = o ? json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN) : NULL;
	if (s) {
		struct iovec iov[2] = {
			{ .iov_base = (void *)s, .iov_len = strlen(s) },
			{ .iov_base = "\n", .iov_len = 1 },
		};
		struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };

		(void)sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
	}
	json_object_put(o);
	close(fd);
}

static size_t control_clients_of(const struct control *c, uid_t uid)
{
	size_t n = 0;

	for (const struct control_client *cl = c->clients; cl; cl = cl->next)
		n += cl->uid == uid;
	return n;
}

static void control_client_idle(struct loop_timer *t)
{
	struct control_client *cl = t->userdata;
	uint32_t ms = cl->ctl->cfg->socket_idle_timeout_ms;

	if (cl->closing)	/* told already, and it does not read: gone */
		return control_client_free(cl);
	log_info("control: closing client uid %d, idle for %u ms", (int)cl->uid, ms);
	cl->closing = true;
	control_client_error(cl, CTL_ERR_BUSY, "closed: idle for %u ms "
			     "(socket_idle_timeout_ms)", ms);
}

static void control_accept(struct loop_io *io, uint32_t events)
{
	struct control *c = io->userdata;
	struct control_client *cl;
	enum control_access access = CONTROL_ACCESS_READ;
	uid_t uid;
	gid_t gid;
	size_t mine;
	int fd, r;

	fd = accept4(c->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	r = control_peer_access(c, fd, &uid, &gid, &access);
	if (r < 0) {
		log_info("control: refused client uid %d gid %d (%s)", (int)uid, (int)gid,
			 r == -EACCES ? "not root, not in a socket group" : strerror(-r));
		return control_refuse(fd, CTL_ERR_PERMISSION,
				      "permission denied: not root and not in the "
				      "daemon's socket group");
	}
	if (c->nclients >= CONTROL_MAX_CLIENTS) {
		log_warning("control: %d clients already, refusing one of uid %d",
			    CONTROL_MAX_CLIENTS, (int)uid);
		return control_refuse(fd, CTL_ERR_BUSY, "too many clients (%d): try "
				      "again later", CONTROL_MAX_CLIENTS);
	}
	mine = control_clients_of(c, uid);
	if (mine >= c->cfg->socket_clients_per_uid) {
		log_warning("control: uid %d holds %zu connections, refusing another "
			    "(socket_clients_per_uid)", (int)uid, mine);
		return control_refuse(fd, CTL_ERR_BUSY, "too many connections from uid "
				      "%d (socket_clients_per_uid = %u)", (int)uid,
				      c->cfg->socket_clients_per_uid);
	}
	cl = calloc(1, sizeof(*cl));
	if (!cl) {
		close(fd);
		return;
	}
	cl->ctl = c;
	cl->fd = fd;
	cl->uid = uid;
	cl->access = access;
	(void)outbuf_init(&cl->out, CONTROL_OUT_MAX, 0);	/* allocates nothing */
	loop_io_init(&cl->io, control_client_io, cl);
	loop_timer_init(&cl->idle, control_client_idle, cl);
	if (loop_io_add(c->loop, &cl->io, fd, EPOLLIN) < 0) {
		close(fd);
		free(cl);
		return;
	}
	cl->next = c->clients;
	c->clients = cl;
	c->nclients++;
	control_client_update(cl);		/* the idle clock starts */
}

/* Removes a stale socket at path; -EADDRINUSE if someone listens there. */
static int control_clear_stale(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, r;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	strcpy(sa.sun_path, path);
	r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	close(fd);
	if (r == 0)
		return -EADDRINUSE;
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

int control_new(struct loop *loop, const struct config *cfg,
		const struct vm_list *vms, struct control **ret_control)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct control *c;
	mode_t old_umask;
	int r;

	if (strlen(cfg->socket) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	r = control_clear_stale(cfg->socket);
	if (r < 0)
		return r;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->loop = loop;
	c->cfg = cfg;
	c->vms = vms;
	strcpy(c->path, cfg->socket);
	strcpy(sa.sun_path, cfg->socket);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		r = -errno;
		goto out_free;
	}
	/* no window in which the socket is more open than configured */
	old_umask = umask(0177);
	r = bind(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ? -errno : 0;
	umask(old_umask);
	if (r < 0)
		goto out_close;
	if (cfg->socket_group_set && chown(c->path, (uid_t)-1, cfg->socket_group) < 0) {
		r = -errno;
		goto out_unlink;
	}
	if (chmod(c->path, cfg->socket_mode) < 0 || listen(c->fd, 16) < 0) {
		r = -errno;
		goto out_unlink;
	}
	loop_io_init(&c->io, control_accept, c);
	r = loop_io_add(loop, &c->io, c->fd, EPOLLIN);
	if (r < 0)
		goto out_unlink;
	*ret_control = c;
	return 0;

out_unlink:
	unlink(c->path);
out_close:
	close(c->fd);
out_free:
	free(c);
	return r;
}

void control_set_notify(struct control *c, control_notify_fn fn, void *userdata)
{
	c->notify = fn;
	c->notify_userdata = userdata;
}

void control_free(struct control *c)
{
	if (!c)
		return;
	while (c->clients)
		control_client_free(c->clients);
	loop_io_remove(c->loop, &c->io);
	close(c->fd);
	unlink(c->path);
	free(c);
}
