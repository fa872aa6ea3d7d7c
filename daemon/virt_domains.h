/* SPDX-License-Identifier: GPL-2.0 */
/*
 * virt_domains.h - vmdefragd's libvirt mode: running domains become VMs
 * (prefix virt_domains_).
 */
#ifndef VDF_VIRT_DOMAINS_H
#define VDF_VIRT_DOMAINS_H

#include "config.h"
#include "ctl_proto.h"

struct loop;
struct vm_list;
struct virt_domains;

/*
 * Follows the domains of cfg->libvirt_uri; VMs it creates are added to vms
 * (which must outlive it) and never removed.
 */
int virt_domains_new(struct loop *loop, const struct config *cfg,
		     struct vm_list *vms, struct virt_domains **ret_domains);
/* Connects (retrying on its own from then on) and picks up running domains. */
void virt_domains_start(struct virt_domains *d);
/*
 * The libvirt hook's notify (a control_notify_fn): never calls libvirt;
 * "started" schedules a re-read of the domain, "stopped"/"release" detach.
 */
void virt_domains_notify(void *d, const char *domain, enum ctl_notify_event event);
void virt_domains_free(struct virt_domains *d);

#endif /* VDF_VIRT_DOMAINS_H */
