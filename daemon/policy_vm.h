/* SPDX-License-Identifier: GPL-2.0 */
/*
 * policy_vm.h - one VM's automatic densification at run time (prefix
 * policy_vm_): the guest's signals and misses, the engine's tick, its
 * decisions carried out through the VM's hooks, and the mode persisted in
 * the daemon's state_dir.
 */
#ifndef VDF_POLICY_VM_H
#define VDF_POLICY_VM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h"

struct loop;
struct policy_vm;

/* What the policy asks of its VM (vm.c); the mechanism's entry points. */
struct policy_vm_hooks {
	/* The mechanism's view; *ret_op_id: the running operation's id (0). */
	void (*view)(void *vm, struct policy_view *ret, uint32_t *ret_op_id);
	/* Starts a reclaim (or a return): 0 and its id, or -errno and err. */
	int (*start)(void *vm, bool is_return, uint64_t bytes, char *err,
		     size_t errsz, uint32_t *ret_id);
	/* Stops the running operation `id` (a reclaim the policy started). */
	void (*stop)(void *vm, uint32_t id);
};

/* One decision as status shows it. */
struct policy_decision_info {
	bool known;
	uint64_t age_ms;
	enum policy_action action;
	uint64_t bytes;
	int error;			/* the action failed to start: -errno */
	char reason[POLICY_REASON_MAX + 160];
};

struct policy_status {
	bool known;			/* the VM has a policy (always, in vmdefragd) */
	enum policy_mode mode;
	uint32_t weight;
	uint64_t headroom_bytes;	/* 0: no signals yet */
	uint64_t misses;		/* guest pressure releases under auto */
	uint64_t reclaims, returns;	/* operations the policy started */
	enum policy_host_level host_level;
	bool state_saved;		/* the mode is in state_dir */
	struct policy_decision_info last;	/* the latest evaluation */
	struct policy_decision_info last_action;	/* the latest non-"none" */
	bool have_signals;
	uint64_t signals_age_ms;
	struct proto_meminfo signals;
};

/*
 * A VM's policy: params from its config; the mode persisted in
 * state_dir/NAME.policy (if any, and valid) wins over params->mode.  The
 * engine ticks every VM's policy from one timer on loop.
 */
int policy_vm_new(struct loop *loop, const char *vm_name, const char *state_dir,
		  const struct policy_params *params,
		  const struct policy_vm_hooks *hooks, void *vm,
		  struct policy_vm **ret_pv);
void policy_vm_free(struct policy_vm *pv);

/*
 * A config reload: the new settings; the mode changes (and is persisted)
 * only if the config's mode changed (mode_changed).
 */
void policy_vm_set_params(struct policy_vm *pv, const struct policy_params *params,
			  bool mode_changed);
/* vmdefragctl policy: set and persist the mode; -errno with err on failure. */
int policy_vm_set_mode(struct policy_vm *pv, enum policy_mode mode, char *err,
		       size_t errsz);

/* The guest's validated EVT_MEMINFO. */
void policy_vm_signals(struct policy_vm *pv, const struct proto_meminfo *mi);
/*
 * The guest released blocks (EVT_RELEASED frame, reason, last of its run);
 * true if that counted as a policy miss.
 */
bool policy_vm_released(struct policy_vm *pv, uint32_t reason, bool last);

void policy_vm_get_status(const struct policy_vm *pv, struct policy_status *ret);

/* The state file's path for a VM (exposed for tests); -ENAMETOOLONG. */
int policy_vm_state_path(const char *state_dir, const char *vm_name, char *buf,
			 size_t size);
/*
 * Parses a state file's text: 0 and *ret_mode, or -EINVAL if it is not
 * exactly what policy_vm_set_mode() writes.
 */
int policy_vm_state_parse(const char *text, enum policy_mode *ret_mode);

#endif /* VDF_POLICY_VM_H */
