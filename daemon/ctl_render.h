/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ctl_render.h - vmdefragctl's human-readable output (prefix ctl_render_)
 * of the daemon's answers; their keys are ctl_proto.c's.
 */
#ifndef VDF_CTL_RENDER_H
#define VDF_CTL_RENDER_H

#include <stddef.h>

#include <json-c/json.h>

/* One VMSTATUS object of a status answer: several lines. */
void ctl_render_status_vm(struct json_object *vm);

/* A SCAN object: totals, histograms, top slab caches. */
void ctl_render_scan(struct json_object *scan);

/* An OP object as one line (no newline) in buf: the --wait progress line. */
/* history: one line per operation, oldest first, under a header. */
void ctl_render_history(struct json_object *history);

void ctl_render_op_line(struct json_object *op, char *buf, size_t sz);

#endif /* VDF_CTL_RENDER_H */
