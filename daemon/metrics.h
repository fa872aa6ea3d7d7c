/* SPDX-License-Identifier: GPL-2.0 */
/*
 * metrics.h - the daemon's Prometheus metrics in the text exposition
 * format 0.0.4 (prefix metrics_): what vmdefragctl metrics prints, the
 * metrics listener serves and the textfile holds.
 */
#ifndef VDF_METRICS_H
#define VDF_METRICS_H

#include <stddef.h>

#include "ctl_proto.h"

struct vm_list;

#define METRICS_CONTENT_TYPE	"text/plain; version=0.0.4; charset=utf-8"

/*
 * Renders the series of n VMs' statuses (ctl_vm_status, counters
 * included) into a malloc'ed NUL-terminated text.  -ENOMEM.
 */
int metrics_render(const struct ctl_vm_status *st, size_t n, char **ret_text,
		   size_t *ret_len);
/* metrics_render() of every VM's fresh status (vm_get_status()). */
int metrics_render_vms(const struct vm_list *vms, char **ret_text, size_t *ret_len);

#endif /* VDF_METRICS_H */
