/* SPDX-License-Identifier: GPL-2.0 */
/*
 * metrics_server.h - where the daemon publishes its metrics by itself
 * (prefix metrics_server_): an HTTP/1.0 "GET /metrics" listener on a unix
 * socket or a loopback TCP port (metrics_listen) and a textfile for
 * node_exporter rewritten every few seconds (metrics_textfile).
 */
#ifndef VDF_METRICS_SERVER_H
#define VDF_METRICS_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct loop;
struct metrics_server;

#define METRICS_SERVER_MAX_CLIENTS	8
#define METRICS_SERVER_REQUEST_MAX	4096	/* bytes of request and headers */
#define METRICS_SERVER_IDLE_MS		5000	/* a client silent this long is closed */
#define METRICS_SERVER_OUT_MAX		(8u << 20)

/* Renders the current metrics (metrics_render_vms()); malloc'ed text. */
typedef int (*metrics_server_render_fn)(void *userdata, char **ret_text,
					size_t *ret_len);

/*
 * Starts what cfg asks for: the listener (cfg->metrics_listen; a unix
 * socket gets the control socket's mode and group) and the textfile timer
 * (cfg->metrics_textfile, first written at once).  Nothing if neither is
 * set: *ret_s is NULL then.  Negative errno if the listener cannot listen
 * (the caller reports it with cfg->metrics_listen.spec).
 */
int metrics_server_new(struct loop *loop, const struct config *cfg,
		       metrics_server_render_fn render, void *userdata,
		       struct metrics_server **ret_s);
/* A reload: the textfile's new interval. */
void metrics_server_set_interval(struct metrics_server *s, uint32_t interval_ms);
/* Closes clients and the listener (removing a unix socket), stops the timer. */
void metrics_server_free(struct metrics_server *s);

#endif /* VDF_METRICS_SERVER_H */
