/* SPDX-License-Identifier: GPL-2.0 */
/*
 * control.h - vmdefragd's control socket server (prefix control_).
 */
#ifndef VDF_CONTROL_H
#define VDF_CONTROL_H

#include <stddef.h>

#include "config.h"
#include "ctl_proto.h"

struct loop;
struct vm;
struct vm_list;
struct control;

/*
 * Called for every valid notify request (the libvirt hook), on the loop;
 * must not block.  domain is the request's "vm" (any name).
 */
typedef void (*control_notify_fn)(void *userdata, const char *domain,
				  enum ctl_notify_event event);

#define CONTROL_MAX_CLIENTS	32

/*
 * Creates, binds and listens on cfg->socket (mode cfg->socket_mode, group
 * cfg->socket_group if set).  A stale socket (nobody listening) is
 * replaced; -EADDRINUSE if a daemon listens there, -EEXIST if the path is
 * not a socket.  vms must outlive the server; VMs may be added to it while
 * the server runs (libvirt mode), never removed.
 */
int control_new(struct loop *loop, const struct config *cfg,
		const struct vm_list *vms, struct control **ret_control);
/* Where notify requests go; without one they are logged at debug level. */
void control_set_notify(struct control *c, control_notify_fn fn, void *userdata);
/* Closes every client and the socket, and removes the socket file. */
void control_free(struct control *c);

#endif /* VDF_CONTROL_H */
