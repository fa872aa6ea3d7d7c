/* SPDX-License-Identifier: GPL-2.0 */
/*
 * control.h - vmdefragd's control socket server (prefix control_).
 */
#ifndef VDF_CONTROL_H
#define VDF_CONTROL_H

#include <stddef.h>

#include "config.h"

struct loop;
struct vm;
struct control;

#define CONTROL_MAX_CLIENTS	32

/*
 * Creates, binds and listens on cfg->socket (mode cfg->socket_mode, group
 * cfg->socket_group if set).  A stale socket (nobody listening) is
 * replaced; -EADDRINUSE if a daemon listens there, -EEXIST if the path is
 * not a socket.  vms must outlive the server.
 */
int control_new(struct loop *loop, const struct config *cfg, struct vm **vms,
		size_t nvms, struct control **ret_control);
/* Closes every client and the socket, and removes the socket file. */
void control_free(struct control *c);

#endif /* VDF_CONTROL_H */
