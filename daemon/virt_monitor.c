// SPDX-License-Identifier: GPL-2.0
/*
 * virt_monitor.c - libvirt's monitor command with a deadline: the custom
 * qmp transport of a libvirt domain.
 *
 * libvirt offers no timeout for a monitor command, and libvirtd may hold
 * one for as long as the domain's job or QEMU takes (its own job wait is
 * 30 s; QEMU's answer has no bound at all).  The daemon's loop must not
 * wait that long, so each command runs on a thread of its own, detached,
 * and the loop thread waits for it at most timeout_ms (the qmp's timeout,
 * QMP_DEFAULT_TIMEOUT_MS unless the caller says otherwise).  This bounds
 * the wait; it does not move the work off the loop.
 *
 * A command past its deadline returns -ETIMEDOUT and is left to finish on
 * its thread: libvirt cannot cancel it.  Until it has finished, every
 * later command on the same domain fails at once with -ETIMEDOUT instead
 * of queuing behind it in libvirtd (it would wait for the same job), so a
 * hung QEMU or libvirtd costs the loop one timeout, then nothing, until
 * it answers.  Its late reply is dropped.
 *
 * Sharing: a call is reference counted between its thread and the
 * transport (two references; the transport keeps its one while the call
 * is late).  The thread holds its own reference to the domain (and so to
 * the connection), so qmp_close() may free the transport while a late
 * call still runs.  libvirt's API is thread-safe, and its errors are per
 * thread, so the thread copies its error text for the loop thread.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libvirt/libvirt-qemu.h>
#include <libvirt/virterror.h>

#include "log.h"
#include "qmp.h"
#include "virt_conn.h"
#include "virt_monitor.h"

struct virt_monitor_call {
	pthread_mutex_t lock;
	pthread_cond_t cond;		/* signalled when done */
	int refs;			/* thread + transport */
	bool done;
	virDomainPtr dom;		/* the thread's reference */
	char *cmd;
	char *reply;			/* malloc'ed by libvirt */
	int r;				/* 0 or negative errno */
	char err[256];			/* libvirt's message when r < 0 */
};

struct virt_monitor {
	virDomainPtr dom;
	struct virt_monitor_call *late;	/* timed out, may still run */
};

static virt_monitor_call_fn virt_monitor_call_impl = virDomainQemuMonitorCommand;

void virt_monitor_set_call(virt_monitor_call_fn fn)
{
	virt_monitor_call_impl = fn ? fn : virDomainQemuMonitorCommand;
}

static void virt_monitor_call_put(struct virt_monitor_call *c)
{
	bool last;

	pthread_mutex_lock(&c->lock);
	last = --c->refs == 0;
	pthread_mutex_unlock(&c->lock);
	if (!last)
		return;
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	free(c->reply);
	free(c->cmd);
	free(c);
}

static void *virt_monitor_thread(void *arg)
{
	struct virt_monitor_call *c = arg;
	char *reply = NULL;
	int r = 0;

	if (virt_monitor_call_impl(c->dom, c->cmd, &reply,
				   VIR_DOMAIN_QEMU_MONITOR_COMMAND_DEFAULT) < 0) {
		r = virt_conn_last_errno();
		snprintf(c->err, sizeof(c->err), "%s", virt_conn_last_error());
		free(reply);
		reply = NULL;
	}
	virDomainFree(c->dom);
	pthread_mutex_lock(&c->lock);
	c->reply = reply;
	c->r = r;
	c->done = true;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->lock);
	virt_monitor_call_put(c);
	return NULL;
}

/* Is the late command still running?  Forgets it once it is not. */
static bool virt_monitor_busy(struct virt_monitor *m)
{
	bool done;

	if (!m->late)
		return false;
	pthread_mutex_lock(&m->late->lock);
	done = m->late->done;
	pthread_mutex_unlock(&m->late->lock);
	if (!done)
		return true;
	virt_monitor_call_put(m->late);
	m->late = NULL;
	return false;
}

static int virt_monitor_call_new(virDomainPtr dom, const char *command,
				 struct virt_monitor_call **ret_call)
{
	struct virt_monitor_call *c = calloc(1, sizeof(*c));
	pthread_condattr_t ca;

	if (!c)
		return -ENOMEM;
	c->cmd = strdup(command);
	if (!c->cmd) {
		free(c);
		return -ENOMEM;
	}
	pthread_mutex_init(&c->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->cond, &ca);
	pthread_condattr_destroy(&ca);
	c->refs = 2;
	if (virDomainRef(dom) < 0) {
		c->refs = 1;
		virt_monitor_call_put(c);
		return -ENOMEM;
	}
	c->dom = dom;
	*ret_call = c;
	return 0;
}

static int virt_monitor_execute(void *ctx, const char *command, int timeout_ms,
				char **ret_reply)
{
	struct virt_monitor *m = ctx;
	struct virt_monitor_call *c;
	struct timespec deadline;
	pthread_attr_t attr;
	pthread_t tid;
	int r;

	if (virt_monitor_busy(m)) {
		log_debug("libvirt: an earlier monitor command is still running; "
			  "not sending another");
		return -ETIMEDOUT;
	}
	r = virt_monitor_call_new(m->dom, command, &c);
	if (r < 0)
		return r;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	r = -pthread_create(&tid, &attr, virt_monitor_thread, c);
	pthread_attr_destroy(&attr);
	if (r < 0) {
		virDomainFree(c->dom);
		c->refs = 1;
		virt_monitor_call_put(c);
		return r;
	}

	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += timeout_ms / 1000;
	deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&c->lock);
	while (!c->done &&
	       pthread_cond_timedwait(&c->cond, &c->lock, &deadline) != ETIMEDOUT)
		;
	if (!c->done) {
		pthread_mutex_unlock(&c->lock);
		m->late = c;		/* keeps the transport's reference */
		log_warning("libvirt: no answer to a monitor command within %d ms; "
			    "further commands fail until it returns", timeout_ms);
		return -ETIMEDOUT;
	}
	r = c->r;
	*ret_reply = c->reply;
	c->reply = NULL;
	pthread_mutex_unlock(&c->lock);
	if (r < 0)
		log_debug("libvirt: monitor command failed: %s", c->err);
	virt_monitor_call_put(c);
	/* the domain stopped or the connection is gone: for good */
	if (r == -ENOENT || r == -ESRCH)
		return -ECONNRESET;
	if (r < 0)
		return r;
	return *ret_reply ? 0 : -EPROTO;
}

static void virt_monitor_close(void *ctx)
{
	struct virt_monitor *m = ctx;

	if (m->late)
		virt_monitor_call_put(m->late);
	virDomainFree(m->dom);
	free(m);
}

static const struct qmp_transport virt_monitor_transport = {
	.execute = virt_monitor_execute,
	.close = virt_monitor_close,
};

int virt_monitor_open(virDomainPtr dom, struct qmp **ret_qmp)
{
	struct virt_monitor *m = calloc(1, sizeof(*m));
	int r;

	if (!m)
		return -ENOMEM;
	m->dom = dom;
	r = qmp_open_custom(&virt_monitor_transport, m, ret_qmp);
	if (r < 0)
		free(m);	/* dom stays the caller's */
	return r;
}
