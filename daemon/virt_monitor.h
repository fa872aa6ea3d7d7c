/* SPDX-License-Identifier: GPL-2.0 */
/*
 * virt_monitor.h - a qmp whose transport is libvirt's monitor command on
 * one domain, each command bounded by the caller's timeout (prefix
 * virt_monitor_).
 *
 * libvirt has no timeout for virDomainQemuMonitorCommand() (nor for
 * ...WithFiles(); its flags only choose HMP, and only the guest-agent
 * command takes a timeout): libvirtd waits for the domain's job, then for
 * QEMU's answer, as long as they take.  So each command runs on a
 * short-lived thread while the caller waits at most timeout_ms; virt_monitor.c
 * says what happens to a command that outlives it.
 */
#ifndef VDF_VIRT_MONITOR_H
#define VDF_VIRT_MONITOR_H

#include <libvirt/libvirt.h>

struct qmp;

/*
 * A qmp on dom's monitor.  On success it owns the caller's reference to
 * dom (qmp_close() drops it); on failure dom stays the caller's.
 */
int virt_monitor_open(virDomainPtr dom, struct qmp **ret_qmp);

/*
 * For tests: the call a command's thread makes, in place of
 * virDomainQemuMonitorCommand() (NULL restores it).  Same contract: 0 and
 * a malloc'ed *ret_reply, or -1 with libvirt's error set.
 */
typedef int (*virt_monitor_call_fn)(virDomainPtr dom, const char *cmd,
				    char **ret_reply, unsigned int flags);
void virt_monitor_set_call(virt_monitor_call_fn fn);

#endif /* VDF_VIRT_MONITOR_H */
