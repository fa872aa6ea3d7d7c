// SPDX-License-Identifier: GPL-2.0
/*
 * hint.c - the host-side facts of the hint backend.
 *
 * The hint backend reclaims anonymous guest RAM without touching it: the
 * guest module empties fragmented 2 MiB blocks and frees them as order-9
 * buddies (REQ_CAPTURE, compact mode), the guest kernel's free page
 * reporting tells QEMU's virtio-balloon about them, and QEMU discards
 * them.  Two things here decide whether and how much that worked, both
 * from the host, never from the guest:
 *
 *   probe   QEMU's QOM tree: user-created devices live under
 *           /machine/peripheral (with an id) and /machine/peripheral-anon
 *           (without).  A child of type child<virtio-balloon-*> is the
 *           balloon (QEMU allows one); its bool property
 *           free-page-reporting is read on the device itself (QEMU 7.2's
 *           virtio-balloon-pci aliases it) or else on its virtio-backend
 *           child.  Without it on, nothing hands anonymous RAM back.
 *
 *   settle  QEMU's RssAnon, sampled by the caller: reporting runs in
 *           passes two seconds apart, each taking a part of every free
 *           list, so the value falls in steps.  The state machine is
 *             FALLING --no new low for quiet_ms--> QUIET
 *             FALLING --cap_ms since begin------> CAPPED
 *           A new low must beat the old one by HINT_SETTLE_NOISE: QEMU's
 *           own allocations (TCG code, I/O buffers) wobble it a little.
 *
 * Pure but for the QMP calls of the probe; no state between calls.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "hint.h"
#include "qmp.h"

bool hint_qom_type_is_balloon(const char *type)
{
	static const char prefix[] = "child<virtio-balloon";

	return type && strncmp(type, prefix, sizeof(prefix) - 1) == 0;
}

/* qom-get path.property as a bool: 0, -ENOENT if absent, or -errno. */
static int hint_qom_get_bool(struct qmp *q, const char *path, const char *prop,
			     int timeout_ms, bool *ret_value)
{
	struct json_object *args = json_object_new_object(), *v = NULL;
	int r;

	if (!args)
		return -ENOMEM;
	json_object_object_add(args, "path", json_object_new_string(path));
	json_object_object_add(args, "property", json_object_new_string(prop));
	r = qmp_execute(q, "qom-get", args, timeout_ms, &v);
	json_object_put(args);
	if (r == -EIO)
		return -ENOENT;		/* QMP error: no such path or property */
	if (r < 0)
		return r;
	if (!json_object_is_type(v, json_type_boolean)) {
		json_object_put(v);
		return -EPROTO;
	}
	*ret_value = json_object_get_boolean(v);
	json_object_put(v);
	return 0;
}

/* Finds a balloon child in one container: 1 and its name, 0, or -errno. */
static int hint_find_in(struct qmp *q, const char *container, int timeout_ms,
			char *name, size_t namesz)
{
	struct json_object *args = json_object_new_object(), *list = NULL;
	int r, found = 0;

	if (!args)
		return -ENOMEM;
	json_object_object_add(args, "path", json_object_new_string(container));
	r = qmp_execute(q, "qom-list", args, timeout_ms, &list);
	json_object_put(args);
	if (r == -EIO)
		return 0;		/* no such container: no device there */
	if (r < 0)
		return r;
	if (!json_object_is_type(list, json_type_array)) {
		json_object_put(list);
		return -EPROTO;
	}
	for (size_t i = 0; i < json_object_array_length(list) && !found; i++) {
		struct json_object *e = json_object_array_get_idx(list, i), *n, *t;

		if (!json_object_object_get_ex(e, "name", &n) ||
		    !json_object_object_get_ex(e, "type", &t))
			continue;
		if (!hint_qom_type_is_balloon(json_object_get_string(t)))
			continue;
		snprintf(name, namesz, "%s", json_object_get_string(n));
		found = 1;
	}
	json_object_put(list);
	return found;
}

int hint_probe_balloon(struct qmp *q, int timeout_ms, struct hint_balloon *ret_balloon)
{
	static const char *const containers[] = {
		HINT_QOM_PERIPHERAL, HINT_QOM_PERIPHERAL_ANON,
	};
	struct hint_balloon b = { 0 };
	char name[96], backend[200];
	int r;

	for (size_t i = 0; i < sizeof(containers) / sizeof(containers[0]); i++) {
		r = hint_find_in(q, containers[i], timeout_ms, name, sizeof(name));
		if (r < 0)
			return r;
		if (r == 0)
			continue;
		b.found = true;
		snprintf(b.path, sizeof(b.path), "%s/%s", containers[i], name);
		r = hint_qom_get_bool(q, b.path, "free-page-reporting", timeout_ms,
				      &b.fpr);
		if (r == -ENOENT) {
			snprintf(backend, sizeof(backend), "%s/virtio-backend", b.path);
			r = hint_qom_get_bool(q, backend, "free-page-reporting",
					      timeout_ms, &b.fpr);
		}
		if (r == -ENOENT) {
			b.fpr = false;	/* a QEMU without the property */
			r = 0;
		}
		if (r < 0)
			return r;
		break;
	}
	*ret_balloon = b;
	return 0;
}

void hint_settle_begin(struct hint_settle *s, uint64_t now_ms, uint64_t rss,
		       uint32_t quiet_ms, uint32_t cap_ms)
{
	s->begin_ms = now_ms;
	s->low_ms = now_ms;
	s->low = rss;
	s->last = rss;
	s->quiet_ms = quiet_ms;
	s->cap_ms = cap_ms;
}

enum hint_settle_state hint_settle_feed(struct hint_settle *s, uint64_t now_ms,
					uint64_t rss)
{
	s->last = rss;
	if (rss + HINT_SETTLE_NOISE < s->low) {
		s->low = rss;
		s->low_ms = now_ms;
	}
	if (now_ms - s->begin_ms >= s->cap_ms)
		return HINT_SETTLE_CAPPED;
	if (now_ms - s->low_ms >= s->quiet_ms)
		return HINT_SETTLE_QUIET;
	return HINT_SETTLE_FALLING;
}
