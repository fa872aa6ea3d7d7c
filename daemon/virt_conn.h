/* SPDX-License-Identifier: GPL-2.0 */
/*
 * virt_conn.h - vmdefragd's one connection to libvirtd (prefix virt_conn_).
 *
 * Owns the libvirt event thread, the connection (open, keepalive, close
 * callback, reconnect with backoff) and the domain lifecycle event
 * subscription.  Everything it reports reaches its user on the daemon's
 * loop thread through the hooks; libvirt calls made by the user with
 * virt_conn_get() are synchronous, from the loop thread.
 */
#ifndef VDF_VIRT_CONN_H
#define VDF_VIRT_CONN_H

#include <stdint.h>

#include <libvirt/libvirt.h>

struct loop;
struct virt_conn;

#define VIRT_CONN_DEFAULT_URI	"qemu:///system"
#define VIRT_CONN_NAME_MAX	256
/*
 * domain_event()'s pseudo event for libvirt's migration-iteration event
 * (an outgoing migration's pass; detail is the pass number).  Not one of
 * libvirt's VIR_DOMAIN_EVENT_* values, which are all >= 0.
 */
#define VIRT_CONN_EVENT_MIGRATING	(-1)
/*
 * domain_event()'s pseudo event for libvirt's device-added, device-removed
 * and memory-device-size-change events: the domain's RAM may have changed
 * (memory hot-plug).  detail is 0.
 */
#define VIRT_CONN_EVENT_DEVICE		(-2)

/* All called on the loop thread. */
struct virt_conn_hooks {
	/* Connected (again): conn is valid until disconnected() returns. */
	void (*connected)(void *userdata, virConnectPtr conn);
	/* The connection is gone (libvirtd stopped or restarted). */
	void (*disconnected)(void *userdata);
	/*
	 * A lifecycle event of domain `name` (VIR_DOMAIN_EVENT_* and its
	 * detail, or VIRT_CONN_EVENT_MIGRATING / _DEVICE); resync: events were lost,
	 * re-list every domain.
	 */
	void (*domain_event)(void *userdata, const char *name, int event,
			     int detail);
	void (*resync)(void *userdata);
};

/*
 * Starts libvirt's event thread (once per process) and returns a
 * connection that is not open yet; virt_conn_start() opens it.
 */
int virt_conn_new(struct loop *loop, const char *uri, uint32_t retry_min_ms,
		  uint32_t retry_max_ms, const struct virt_conn_hooks *hooks,
		  void *userdata, struct virt_conn **ret_conn);
/* Opens now, or arms the retry timer (the first failure is logged). */
void virt_conn_start(struct virt_conn *c);
/* The open connection, or NULL. */
virConnectPtr virt_conn_get(const struct virt_conn *c);
const char *virt_conn_uri(const struct virt_conn *c);
/* A negative errno for the last libvirt error (for messages, its text). */
int virt_conn_last_errno(void);
const char *virt_conn_last_error(void);
/* Closes the connection and stops the event thread. */
void virt_conn_free(struct virt_conn *c);

#endif /* VDF_VIRT_CONN_H */
