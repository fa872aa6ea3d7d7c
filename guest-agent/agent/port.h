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
 * Writes go through an outbuf (lib/outbuf.h): outbuf_drain() waits for
 * room and says -EPIPE when the host closed the port (POLLHUP).
 */

#endif /* AGENT_PORT_H */
