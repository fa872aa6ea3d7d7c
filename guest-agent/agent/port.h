/* SPDX-License-Identifier: GPL-2.0 */
#ifndef AGENT_PORT_H
#define AGENT_PORT_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Find the character device of the virtio-serial port called `name`:
 * /dev/virtio-ports/<name> (udev's link), else the /sys/class/virtio-ports
 * entry whose name matches, as /dev/<vportNpM> (created from its dev
 * numbers if nothing made the node).  -ENOENT if no such port exists.
 */
int agent_port_find(const char *name, char *ret_path, size_t size);

/* Open the port read-write, non-blocking; the fd in *ret_fd. */
int agent_port_open(const char *path, int *ret_fd);

/* Whether the host side has the port open now (no POLLHUP). */
bool agent_port_host_connected(int fd);

/*
 * Write all of buf, waiting up to timeout_ms for room.  -EPIPE if the host
 * went away, -ETIMEDOUT if it stopped reading.
 */
int agent_port_write(int fd, const void *buf, size_t len, int timeout_ms);

#endif /* AGENT_PORT_H */
