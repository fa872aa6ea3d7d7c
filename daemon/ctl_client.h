/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ctl_client.h - vmdefragctl's side of the control socket (prefix
 * ctl_client_): send one request to vmdefragd, get its answer as a JSON
 * object, and read fields out of that answer.
 *
 * Every failure (no daemon, permission, timeout, a peer that breaks the
 * format, or the daemon's own {"ok": false}) is printed as one line
 * (ctl_exit.h) and returned as the CLI's exit status.
 */
#ifndef VDF_CTL_CLIENT_H
#define VDF_CTL_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "cleanup.h"
#include "ctl_proto.h"

/*
 * How long one call waits to connect and for the answer, unless --timeout
 * says otherwise.  The daemon answers at once but for a scan, which waits
 * for the guest up to its request_timeout_ms (60 s by default).
 */
#define CTL_CLIENT_TIMEOUT_MS		30000
#define CTL_CLIENT_SCAN_TIMEOUT_MS	120000

/* How long later calls wait to connect and for the answer. */
void ctl_client_set_timeout_ms(int timeout_ms);
int ctl_client_get_timeout_ms(void);
/* ms as "2 s" or "1.5 s", in buf. */
const char *ctl_client_seconds(int ms, char *buf, size_t bufsz);

/*
 * Sends req to the daemon at path and parses its answer: 0 with
 * *ret_resp (put it) and, if ret_text, the answer's line (free it), or an
 * exit status, the error printed.
 */
int ctl_client_call(const char *path, const struct ctl_request *req,
		    struct json_object **ret_resp, char **ret_text);

/* For _cleanup_(ctl_client_json_putp) struct json_object *resp = NULL; */
CLEANUP_DEFINE(ctl_client_json_putp, struct json_object *, json_object_put)

/* Fields of an answer: absent or null reads as 0 / NULL / false. */
struct json_object *ctl_client_get(struct json_object *o, const char *key);
bool ctl_client_has(struct json_object *o, const char *key);
uint64_t ctl_client_u64(struct json_object *o, const char *key);
const char *ctl_client_str(struct json_object *o, const char *key);

#endif /* VDF_CTL_CLIENT_H */
