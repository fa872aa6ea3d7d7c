// SPDX-License-Identifier: GPL-2.0
/*
 * policy_vm.c - automatic densification at run time: one struct policy_vm
 * per VM, ticked together.
 *
 * Inputs, kept here as they arrive (all validated by session.c first):
 * the guest's EVT_MEMINFO (policy_vm_signals()) and its pressure releases
 * (policy_vm_released(): EVT_RELEASED with reason shrinker or oom, counted
 * as misses while the mode is auto: the guest had to take memory back
 * before the policy returned it).
 *
 * The tick (POLICY_VM_TICK_MS, one timer for every VM): samples the host's
 * PSI memory pressure and MemAvailable once, orders the VMs by weight
 * (highest first, so under host pressure the heaviest VMs start their
 * reclaims first), and for each asks the engine (policy.c) for a decision
 * on the mechanism's view (hooks->view).  A reclaim or return is started
 * through hooks->start -- vm_start_op(), the same entry point a person's
 * vmdefragctl uses -- and a stop through hooks->stop, only for a reclaim
 * the policy itself started.  Every decision whose action or reason
 * changed is logged at debug, with its reason.
 *
 * Persistence: `vmdefragctl policy VM MODE` writes STATE_DIR/NAME.policy
 * ("vmdefrag-policy 1\nmode=auto\n") through a temporary file, fsync and
 * rename, so a crash leaves the old file or the new one.  At start the
 * file, when present, wins over the config's policy key (it is the later
 * choice); a file that is not exactly that is one warning and "manual".
 * A reload that changes the config's policy key applies it and rewrites
 * the file.
 *
 * Single-threaded, on the loop's thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "file.h"
#include "log.h"
#include "loop.h"
#include "policy_vm.h"

#define POLICY_VM_TICK_MS	500
#define POLICY_VM_STATE_MAGIC	"vmdefrag-policy 1\n"
#define POLICY_VM_STATE_MAX	128

struct policy_vm {
	char name[64];
	char state_path[512];		/* "" without a state_dir */
	struct policy_params params;
	struct policy_state st;
	struct policy_signals sig;
	const struct policy_vm_hooks *hooks;
	void *vm;
	uint64_t misses;
	uint64_t reclaims, returns;
	uint32_t op_id;			/* the last operation it started */
	bool state_saved;
	uint64_t headroom_bytes;
	struct policy_decision last;
	uint64_t last_ms;
	int last_error;
	struct policy_decision last_action;
	uint64_t last_action_ms;
	int last_action_error;
	char last_error_text[128];
};

/* Every VM's policy and the one timer that ticks them. */
static struct {
	struct loop *loop;
	struct loop_timer tick;
	struct policy_vm **v;
	size_t n, cap;
	struct policy_host host;
} policy_vms;

/* ---- persistence ------------------------------------------------------ */

int policy_vm_state_path(const char *state_dir, const char *vm_name, char *buf,
			 size_t size)
{
	int n = snprintf(buf, size, "%s/%s.policy", state_dir, vm_name);

	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

int policy_vm_state_parse(const char *text, enum policy_mode *ret_mode)
{
	size_t m = strlen(POLICY_VM_STATE_MAGIC), n;
	char mode[16];

	if (strncmp(text, POLICY_VM_STATE_MAGIC, m) != 0)
		return -EINVAL;
	text += m;
	if (strncmp(text, "mode=", 5) != 0)
		return -EINVAL;
	text += 5;
	n = strcspn(text, "\n");
	/* exactly one line, ended by its newline, then nothing */
	if (n == 0 || n >= sizeof(mode) || text[n] != '\n' || text[n + 1] != '\0')
		return -EINVAL;
	memcpy(mode, text, n);
	mode[n] = '\0';
	return policy_mode_from_name(mode, ret_mode);
}

/* Loads the persisted mode, if any: 1 loaded, 0 none, <0 bad (warned). */
static int policy_vm_load(struct policy_vm *pv)
{
	char text[POLICY_VM_STATE_MAX], q[128];
	enum policy_mode mode;
	int r;

	if (!pv->state_path[0])
		return 0;
	r = file_read_short(pv->state_path, text, sizeof(text));
	if (r == -ENOENT)
		return 0;
	if (r >= 0)
		r = policy_vm_state_parse(text, &mode);
	if (r < 0) {
		log_warning_errno(r, "VM '%s': policy state %s unreadable or "
				  "invalid (%m), policy manual",
				  pv->name, log_quote_str(pv->state_path, q, sizeof(q)));
		pv->params.mode = POLICY_MANUAL;
		return r;
	}
	pv->params.mode = mode;
	pv->state_saved = true;
	log_info("VM '%s': policy %s (from %s)", pv->name, policy_mode_name(mode),
		 pv->state_path);
	return 1;
}

/* Writes the mode through a temporary file and a rename (file_replace()). */
static int policy_vm_save(struct policy_vm *pv, enum policy_mode mode)
{
	char dir[sizeof(pv->state_path)], text[POLICY_VM_STATE_MAX];
	char *slash;
	int len;

	if (!pv->state_path[0])
		return -ENOENT;
	len = snprintf(text, sizeof(text), "%smode=%s\n", POLICY_VM_STATE_MAGIC,
		       policy_mode_name(mode));
	/* the directory itself, one level (its parent must exist) */
	snprintf(dir, sizeof(dir), "%s", pv->state_path);
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		if (mkdir(dir, 0755) < 0 && errno != EEXIST)
			return -errno;
	}
	return file_replace(pv->state_path, text, (size_t)len, 0644);
}

/* ---- the host --------------------------------------------------------- */

static void policy_vm_read_host(struct policy_host *h)
{
	char buf[4096];
	double avg;
	char *p;

	memset(h, 0, sizeof(*h));
	if (file_read_short("/proc/pressure/memory", buf, sizeof(buf)) >= 0 &&
	    sscanf(buf, "some avg10=%lf", &avg) == 1 && avg >= 0) {
		h->psi_known = true;
		h->psi_some_avg10 = avg * 100 > 10000 ? 10000 : (uint32_t)(avg * 100);
	}
	if (file_read_short("/proc/meminfo", buf, sizeof(buf)) >= 0) {
		unsigned long long kb;

		if ((p = strstr(buf, "MemTotal:")) && sscanf(p + 9, "%llu", &kb) == 1)
			h->total_bytes = (uint64_t)kb << 10;
		if ((p = strstr(buf, "MemAvailable:")) && sscanf(p + 13, "%llu", &kb) == 1)
			h->available_bytes = (uint64_t)kb << 10;
		else
			h->total_bytes = 0;
	}
	policy_host_classify(h);
}

/* ---- the tick --------------------------------------------------------- */

static void policy_vm_log(struct policy_vm *pv, const struct policy_decision *d,
			  int error, const char *err)
{
	if (d->action == POLICY_ACT_NONE && pv->last.action == POLICY_ACT_NONE &&
	    strcmp(d->reason, pv->last.reason) == 0)
		return;
	if (d->action == POLICY_ACT_NONE)
		log_debug("VM '%s': policy: nothing to do: %s", pv->name, d->reason);
	else if (error)
		log_debug("VM '%s': policy: %s %" PRIu64 " MiB: %s; could not "
			  "start: %s", pv->name, policy_action_name(d->action),
			  d->bytes >> 20, d->reason, err);
	else
		log_debug("VM '%s': policy: %s %" PRIu64 " MiB: %s", pv->name,
			  policy_action_name(d->action), d->bytes >> 20, d->reason);
}

static void policy_vm_tick_one(struct policy_vm *pv, uint64_t now)
{
	struct policy_decision d;
	struct policy_view v;
	uint32_t op_id = 0, id = 0;
	char err[256] = "";
	int r = 0;

	memset(&v, 0, sizeof(v));
	pv->hooks->view(pv->vm, &v, &op_id);
	/* only a reclaim the policy started is the policy's to stop */
	v.op_is_reclaim = v.op_is_reclaim && op_id && op_id == pv->op_id;
	v.misses = pv->misses;
	policy_decide(&pv->params, &pv->st, &pv->sig, &v, &policy_vms.host, now, &d);
	pv->headroom_bytes = d.headroom_bytes;
	switch (d.action) {
	case POLICY_ACT_RECLAIM:
	case POLICY_ACT_RETURN:
		r = pv->hooks->start(pv->vm, d.action == POLICY_ACT_RETURN, d.bytes,
				     err, sizeof(err), &id);
		if (r < 0) {
			policy_failed(&pv->st, &d, now);
		} else {
			pv->op_id = id;
			if (d.action == POLICY_ACT_RETURN)
				pv->returns++;
			else
				pv->reclaims++;
		}
		break;
	case POLICY_ACT_STOP:
		pv->hooks->stop(pv->vm, pv->op_id);
		break;
	default:
		break;
	}
	policy_vm_log(pv, &d, r, err);
	pv->last = d;
	pv->last_ms = now;
	pv->last_error = r;
	if (d.action != POLICY_ACT_NONE) {
		pv->last_action = d;
		pv->last_action_ms = now;
		pv->last_action_error = r;
		snprintf(pv->last_error_text, sizeof(pv->last_error_text), "%s", err);
	}
}

static int policy_vm_cmp(const void *a, const void *b)
{
	const struct policy_vm *x = *(struct policy_vm *const *)a;
	const struct policy_vm *y = *(struct policy_vm *const *)b;

	return x->params.weight < y->params.weight ? 1 :
	       x->params.weight > y->params.weight ? -1 : 0;
}

static void policy_vm_tick(struct loop_timer *t)
{
	uint64_t now = loop_now_ms();
	struct policy_vm **order;
	enum policy_host_level was = policy_vms.host.level;

	loop_timer_arm(policy_vms.loop, t, POLICY_VM_TICK_MS);
	policy_vm_read_host(&policy_vms.host);
	if (policy_vms.host.level != was)
		log_debug("policy: host memory %s (PSI some %u.%02u %%, %" PRIu64
			  " MiB available)",
			  policy_vms.host.level == POLICY_HOST_HIGH ? "under high pressure" :
			  policy_vms.host.level == POLICY_HOST_MODERATE ? "under pressure" :
			  "relaxed", policy_vms.host.psi_some_avg10 / 100,
			  policy_vms.host.psi_some_avg10 % 100,
			  policy_vms.host.available_bytes >> 20);
	/* a copy: a hook may not add or free a VM, but stay safe */
	order = malloc(policy_vms.n * sizeof(*order));
	if (!order)
		return;
	memcpy(order, policy_vms.v, policy_vms.n * sizeof(*order));
	qsort(order, policy_vms.n, sizeof(*order), policy_vm_cmp);
	for (size_t i = 0; i < policy_vms.n; i++)
		policy_vm_tick_one(order[i], now);
	free(order);
}

/* ---- inputs ----------------------------------------------------------- */

void policy_vm_signals(struct policy_vm *pv, const struct proto_meminfo *mi)
{
	pv->sig.have = true;
	pv->sig.at_ms = loop_now_ms();
	pv->sig.mi = *mi;
	/* an urgent report should not wait for the next tick */
	if ((mi->flags & PROTO_MEMINFO_F_URGENT) && pv->params.mode == POLICY_AUTO)
		policy_vm_tick_one(pv, pv->sig.at_ms);
}

bool policy_vm_released(struct policy_vm *pv, uint32_t reason, bool last)
{
	if (!last || pv->params.mode != POLICY_AUTO)
		return false;
	if (reason != VMDEFRAG_RELEASE_SHRINKER && reason != VMDEFRAG_RELEASE_OOM)
		return false;
	pv->misses++;
	log_debug("VM '%s': policy miss #%" PRIu64 ": the guest released memory "
		  "under %s", pv->name, pv->misses,
		  reason == VMDEFRAG_RELEASE_OOM ? "OOM" : "pressure");
	return true;
}

/* ---- settings --------------------------------------------------------- */

void policy_vm_set_params(struct policy_vm *pv, const struct policy_params *params,
			  bool mode_changed)
{
	enum policy_mode mode = pv->params.mode;
	int r;

	pv->params = *params;
	if (!mode_changed) {
		pv->params.mode = mode;
		return;
	}
	if (mode != params->mode)
		log_info("VM '%s': policy %s (config)", pv->name,
			 policy_mode_name(params->mode));
	if (pv->state_path[0]) {
		r = policy_vm_save(pv, params->mode);
		pv->state_saved = r == 0;
		if (r < 0)
			log_warning_errno(r, "VM '%s': cannot save the policy to %s: "
					  "%m, ignoring", pv->name, pv->state_path);
	}
}

int policy_vm_set_mode(struct policy_vm *pv, enum policy_mode mode, char *err,
		       size_t errsz)
{
	int r;

	if (!pv->state_path[0]) {
		snprintf(err, errsz, "no state_dir to keep the policy in");
		return -ENOENT;
	}
	r = policy_vm_save(pv, mode);
	if (r < 0) {
		snprintf(err, errsz, "cannot save the policy to %s: %s",
			 pv->state_path, strerror(-r));
		return r;
	}
	pv->state_saved = true;
	if (pv->params.mode != mode) {
		log_info("VM '%s': policy %s (vmdefragctl)", pv->name,
			 policy_mode_name(mode));
		/* a new mode starts from a clean slate: no stale hysteresis */
		memset(&pv->st, 0, sizeof(pv->st));
		pv->st.misses_seen = pv->misses;
	}
	pv->params.mode = mode;
	return 0;
}

void policy_vm_get_status(const struct policy_vm *pv, struct policy_status *ret)
{
	uint64_t now = loop_now_ms();

	memset(ret, 0, sizeof(*ret));
	ret->known = true;
	ret->mode = pv->params.mode;
	ret->weight = pv->params.weight;
	ret->headroom_bytes = pv->headroom_bytes;
	ret->misses = pv->misses;
	ret->reclaims = pv->reclaims;
	ret->returns = pv->returns;
	ret->host_level = policy_vms.host.level;
	ret->state_saved = pv->state_saved;
	if (pv->last_ms) {
		ret->last.known = true;
		ret->last.age_ms = now - pv->last_ms;
		ret->last.action = pv->last.action;
		ret->last.bytes = pv->last.bytes;
		ret->last.error = pv->last_error;
		snprintf(ret->last.reason, sizeof(ret->last.reason), "%s",
			 pv->last.reason);
	}
	if (pv->last_action_ms) {
		ret->last_action.known = true;
		ret->last_action.age_ms = now - pv->last_action_ms;
		ret->last_action.action = pv->last_action.action;
		ret->last_action.bytes = pv->last_action.bytes;
		ret->last_action.error = pv->last_action_error;
		snprintf(ret->last_action.reason, sizeof(ret->last_action.reason),
			 "%s%s%s", pv->last_action.reason,
			 pv->last_action_error ? "; could not start: " : "",
			 pv->last_action_error ? pv->last_error_text : "");
	}
	ret->have_signals = pv->sig.have;
	ret->signals_age_ms = pv->sig.have ? now - pv->sig.at_ms : 0;
	ret->signals = pv->sig.mi;
}

/* ---- lifetime --------------------------------------------------------- */

int policy_vm_new(struct loop *loop, const char *vm_name, const char *state_dir,
		  const struct policy_params *params,
		  const struct policy_vm_hooks *hooks, void *vm,
		  struct policy_vm **ret_pv)
{
	struct policy_vm *pv;

	if (policy_vms.n == policy_vms.cap) {
		size_t cap = policy_vms.cap ? 2 * policy_vms.cap : 8;
		struct policy_vm **v = realloc(policy_vms.v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		policy_vms.v = v;
		policy_vms.cap = cap;
	}
	pv = calloc(1, sizeof(*pv));
	if (!pv)
		return -ENOMEM;
	snprintf(pv->name, sizeof(pv->name), "%s", vm_name);
	if (state_dir && state_dir[0] &&
	    policy_vm_state_path(state_dir, vm_name, pv->state_path,
				 sizeof(pv->state_path)) < 0)
		pv->state_path[0] = '\0';
	pv->params = *params;
	pv->hooks = hooks;
	pv->vm = vm;
	(void)policy_vm_load(pv);
	if (!policy_vms.loop) {
		policy_vms.loop = loop;
		loop_timer_init(&policy_vms.tick, policy_vm_tick, NULL);
		policy_host_classify(&policy_vms.host);
	}
	if (policy_vms.n == 0)
		loop_timer_arm(loop, &policy_vms.tick, POLICY_VM_TICK_MS);
	policy_vms.v[policy_vms.n++] = pv;
	*ret_pv = pv;
	return 0;
}

void policy_vm_free(struct policy_vm *pv)
{
	if (!pv)
		return;
	for (size_t i = 0; i < policy_vms.n; i++) {
		if (policy_vms.v[i] == pv) {
			policy_vms.v[i] = policy_vms.v[--policy_vms.n];
			break;
		}
	}
	if (policy_vms.n == 0 && policy_vms.loop) {
		loop_timer_disarm(policy_vms.loop, &policy_vms.tick);
		free(policy_vms.v);
		policy_vms.v = NULL;
		policy_vms.cap = 0;
		policy_vms.loop = NULL;
	}
	free(pv);
}
