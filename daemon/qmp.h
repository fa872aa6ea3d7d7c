/* SPDX-License-Identifier: GPL-2.0 */
/*
 * qmp.h - QEMU Machine Protocol client (prefix qmp_).
 *
 * One struct qmp per QEMU monitor socket.  Commands are synchronous with a
 * timeout; asynchronous events that arrive meanwhile are queued, never lost
 * (up to QMP_EVENT_QUEUE_MAX, beyond which the oldest are dropped and
 * counted).  The socket is non-blocking: a daemon can poll(qmp_fd()) and
 * call qmp_process_input() when it is readable, then drain the events with
 * qmp_next_event().
 *
 * Errors: negative errno.  A QMP "error" reply is -EIO and its class and
 * description are kept until the next command (qmp_last_error()).  A timed
 * out command returns -ETIMEDOUT; its late reply is recognised by its id
 * and discarded, and until it has come every command fails at once with
 * -ETIMEDOUT.  -ECONNRESET when QEMU closed the socket, -EPROTO when it
 * sent something that is not QMP, -EMSGSIZE for a line over QMP_LINE_MAX.
 *
 * Two transports sit under the same struct qmp: the socket above, and a
 * custom one (qmp_open_custom()) that hands each command's JSON text to a
 * function and gets the reply's JSON text back, e.g. libvirt's
 * virDomainQemuMonitorCommand().  A custom qmp has no fd (qmp_fd() is -1),
 * no greeting (version 0), no peer pid and no events; everything built on
 * qmp_execute() works unchanged.
 */
#ifndef VDF_QMP_H
#define VDF_QMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <json-c/json.h>

#define QMP_LINE_MAX		(16u << 20)	/* longest line accepted from QEMU */
#define QMP_EVENT_QUEUE_MAX	1024
/*
 * The timeout of every command the daemon sends, and of connecting.  The
 * daemon sends a socket monitor's commands from a worker thread (vm.c,
 * migration.c), where a hung QEMU holds that thread this long; only a
 * monitor reached through libvirt is still asked on the loop (when it is
 * handed over), so a hung libvirtd or QEMU can stall every other VM this
 * long per command there.  After it, later commands to that monitor fail
 * at once until the late answer comes (qmp.c, virt_monitor.c).  A live QEMU
 * answers the daemon's commands in milliseconds, also under TCG; 5 s
 * leaves room for a loaded host and for libvirt's own locking (a monitor
 * command waits for the domain's job), the longest the daemon waited
 * before this bound was shared.
 */
#define QMP_DEFAULT_TIMEOUT_MS	5000

struct qmp;

/* Connects to a unix socket, reads the greeting, negotiates capabilities. */
int qmp_connect(const char *path, int timeout_ms, struct qmp **ret_qmp);
/* Same on an already connected stream socket; takes ownership of fd. */
int qmp_connect_fd(int fd, int timeout_ms, struct qmp **ret_qmp);
void qmp_close(struct qmp *q);

/* A transport that runs one command at a time on the caller's behalf. */
struct qmp_transport {
	/*
	 * Sends `command` (one JSON object, no trailing newline) and returns
	 * the reply object's JSON text in *ret_reply (malloc'ed), or a
	 * negative errno (-ECONNRESET if the monitor is gone for good).
	 */
	int (*execute)(void *ctx, const char *command, int timeout_ms,
		       char **ret_reply);
	/* Called by qmp_close(); may be NULL. */
	void (*close)(void *ctx);
};

/* A qmp on transport t (not copied: it must outlive the qmp). */
int qmp_open_custom(const struct qmp_transport *t, void *ctx,
		    struct qmp **ret_qmp);

/* The socket, or -1 on a custom transport. */
int qmp_fd(const struct qmp *q);
/* QEMU's version from the greeting, as major*10000 + minor*100 + micro. */
int qmp_qemu_version(const struct qmp *q);
/*
 * PID of the process at the other end of the socket (SO_PEERCRED);
 * -EOPNOTSUPP on a custom transport.
 */
int qmp_peer_pid(const struct qmp *q, pid_t *ret_pid);

/*
 * Runs one command.  args may be NULL; it is not consumed.  On success
 * *ret_return (if non-NULL) receives a new reference to the "return" value
 * that the caller must json_object_put().
 */
int qmp_execute(struct qmp *q, const char *command, struct json_object *args,
		int timeout_ms, struct json_object **ret_return);
/* human-monitor-command; *ret_output is malloc'ed text. */
int qmp_hmp(struct qmp *q, const char *command_line, int timeout_ms,
	    char **ret_output);
/*
 * QEMU's answer to query-version: its version and the "package" string
 * (the distribution's build, e.g. "Debian 1:7.2+dfsg-7+deb12u18"; a QEMU
 * built by qemu-patches/build.sh adds ", vmdefrag-patches <hash>").
 * package keeps only printable ASCII, cut at QMP_PACKAGE_MAX - 1 bytes.
 */
#define QMP_PACKAGE_MAX		128
#define QMP_PATCHED_MARK	"vmdefrag-patches"
struct qmp_version {
	int version;			/* major*10000 + minor*100 + micro */
	char package[QMP_PACKAGE_MAX];
	bool patched;			/* package carries QMP_PATCHED_MARK */
};

int qmp_query_version(struct qmp *q, int timeout_ms, struct qmp_version *ret_ver);
/* The parser of query-version's "return" object; exposed for tests. */
int qmp_parse_version(struct json_object *ret, struct qmp_version *ret_ver);

/*
 * Lending a qmp to a job on another thread (worker.c): qmp_lend(q, true)
 * on the owner's thread before the job is queued, qmp_borrow(q) on the
 * job's thread before its first command and qmp_borrow(NULL) after its
 * last, qmp_lend(q, false) on the owner's thread in the job's done().
 * Meanwhile every command from another thread fails at once with -EBUSY
 * and qmp_process_input() reads nothing there (events wait in the socket
 * for the owner); qmp_close() must wait for the job.
 */
void qmp_lend(struct qmp *q, bool lent);
void qmp_borrow(struct qmp *q);

/* "Class: description" of the last QMP error reply, or "" */
const char *qmp_last_error(const struct qmp *q);

/*
 * Reads whatever is available without blocking and queues events.  Returns
 * 0 (also when nothing was there), or a negative errno when the connection
 * is unusable.
 */
int qmp_process_input(struct qmp *q);
/* Waits up to timeout_ms for at least one event to be queued. */
int qmp_wait_event(struct qmp *q, int timeout_ms);
/* Pops the oldest queued event (new reference); -EAGAIN when none. */
int qmp_next_event(struct qmp *q, struct json_object **ret_event);
size_t qmp_events_queued(const struct qmp *q);
uint64_t qmp_events_dropped(const struct qmp *q);

/*
 * Parses one line received from QEMU; exposed for tests.  Returns a new
 * reference to a JSON object, or -EPROTO if the line is not one.
 */
int qmp_parse_line(const char *line, size_t len, struct json_object **ret_obj);

#endif /* VDF_QMP_H */
