/* SPDX-License-Identifier: GPL-2.0 */
/*
 * config.h - vmdefragd's configuration: config file and --vm specs
 * (prefix config_).
 *
 * Every parse error is returned as a negative errno plus one line of text
 * in the caller's buffer that names where the error is ("FILE:LINE: ..."
 * or "--vm 'SPEC': ...") so the daemon can print it and exit.
 */
#ifndef VDF_CONFIG_H
#define VDF_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "policy.h"

#define CONFIG_MAX_VMS		256
#define CONFIG_NAME_MAX		64	/* VM names: [A-Za-z0-9_.-], 1..63 */
#define CONFIG_PATH_MAX		108	/* sun_path */
#define CONFIG_ERR_MAX		512

#define CONFIG_DEFAULT_SOCKET	"/run/vmdefragd.sock"
/* read when vmdefragd has no --config and it exists */
#define CONFIG_DEFAULT_PATH	"/etc/vmdefrag/vmdefragd.conf"
#define CONFIG_DEFAULT_MODE	0660
/* where the daemon keeps what outlives it: per-VM policy mode, counters, history */
#define CONFIG_DEFAULT_STATE_DIR	"/var/lib/vmdefrag"
#define CONFIG_DEFAULT_TEXTFILE_MS	15000

/* Where the metrics listener listens (metrics_listen): a unix socket path,
 * or a loopback TCP address and port. */
enum config_listen_kind {
	CONFIG_LISTEN_NONE,
	CONFIG_LISTEN_UNIX,
	CONFIG_LISTEN_TCP,
};

struct config_listen {
	enum config_listen_kind kind;
	char path[CONFIG_PATH_MAX];	/* UNIX */
	int family;			/* TCP: AF_INET or AF_INET6 */
	uint8_t addr[16];		/* TCP: network order, 4 or 16 bytes */
	uint16_t port;			/* TCP: 1..65535 */
	char spec[160];			/* as written, for logs */
};
#define CONFIG_DEFAULT_CLIENTS_PER_UID	8
#define CONFIG_CLIENTS_PER_UID_MAX	32	/* CONTROL_MAX_CLIENTS */
#define CONFIG_DEFAULT_IDLE_MS		60000

struct config_vm {
	char name[CONFIG_NAME_MAX];
	char qmp[CONFIG_PATH_MAX];
	char channel[CONFIG_PATH_MAX];
	uint64_t floor_bytes;		/* guest RAM never taken; 2 MiB multiple */
	uint64_t max_reclaim_bytes;	/* most RAM taken at once; 0: no limit */
	uint32_t frames_per_sec;	/* guest frames allowed per second */
	uint32_t events_per_sec;	/* guest EVT_* frames allowed per second */
	uint32_t request_timeout_ms;	/* a request without answer drops */
	unsigned int qmp_line;		/* where qmp / channel were set in the */
	unsigned int channel_line;	/* file (0: a --vm spec), for errors */
	uint32_t evict;			/* enum vmdefrag_evict: reclaims'
					 * default eviction policy */
	/* automatic densification: policy, policy_weight, policy_headroom,
	 * policy_reclaim_rate, policy_calm (floor_bytes is the floor above) */
	struct policy_params policy;
};

struct config {
	char file[512];			/* the file read, for errors ("" none) */
	char socket[CONFIG_PATH_MAX];
	unsigned int socket_mode;	/* permission bits of the socket */
	bool socket_group_set;
	gid_t socket_group;		/* the admin group: every command */
	char socket_group_name[64];
	bool socket_read_group_set;
	gid_t socket_read_group;	/* read-only commands (status, scan) */
	char socket_read_group_name[64];
	uint32_t socket_clients_per_uid;	/* connections one uid may hold */
	uint32_t socket_idle_timeout_ms;	/* a client silent this long is closed */
	int log_level;			/* LOG_ERR .. LOG_DEBUG */
	uint32_t reconnect_min_ms;	/* first retry after a drop */
	uint32_t reconnect_max_ms;	/* backoff doubles up to this */
	uint32_t collapse_cpu_percent;	/* after a migration in: 0 (off) .. 100 */
	char state_dir[256];		/* persisted state; "" keeps none */
	struct config_listen metrics_listen;	/* NONE: no listener */
	char metrics_textfile[256];	/* "" no textfile */
	uint32_t metrics_textfile_interval_ms;
	size_t nvms;
	struct config_vm vms[CONFIG_MAX_VMS];

	/* libvirt mode: --libvirt [URI] or a [libvirt] section */
	bool libvirt;
	char libvirt_uri[256];		/* "" = the default, qemu:///system */
	struct config_vm libvirt_defaults;	/* limits of discovered domains */
};

/* Defaults: socket CONFIG_DEFAULT_SOCKET 0660 root, info, no VMs. */
void config_init(struct config *c);
void config_vm_init(struct config_vm *vm);

/*
 * Parses an INI-style config file into c (on top of what is there).  On
 * error, err gets "PATH:LINE: message" (or "PATH: message").
 */
int config_parse_file(struct config *c, const char *path, char *err, size_t errsz);
/* Same on text already read; `origin` names it in messages. */
int config_parse_text(struct config *c, const char *text, const char *origin,
		      char *err, size_t errsz);

/*
 * Parses "NAME,qmp=PATH,channel=PATH[,floor=SIZE][,max_reclaim=SIZE]
 * [,frames_per_sec=N][,events_per_sec=N][,request_timeout_ms=N]".
 * Fields not given keep their value in *vm (so a --vm can override a
 * [vm NAME] section); qmp and channel must be set after the merge.
 */
int config_parse_vm_spec(const char *spec, struct config_vm *vm, char *err,
			 size_t errsz);

/* Merges a --vm spec into c: replaces fields of the VM of that name or adds it. */
int config_add_vm_spec(struct config *c, const char *spec, char *err, size_t errsz);

/*
 * Final checks: every VM has qmp and channel, no two VMs (nor one VM's qmp
 * and channel) share a socket path; errors name FILE:LINE where the path
 * was set, or the --vm spec.
 */
int config_validate(const struct config *c, char *err, size_t errsz);

struct config_vm *config_find_vm(struct config *c, const char *name);

/*
 * Parses a metrics_listen value: "unix:/PATH" or "tcp:ADDR:PORT" with ADDR
 * a numeric loopback address (127.0.0.0/8, or [::1]).  -EINVAL with one
 * line in msg.
 */
int config_parse_listen(const char *v, struct config_listen *ret_l, char *msg,
			size_t msgsz);

/* Is name usable as a VM name ([A-Za-z0-9_.-], 1..CONFIG_NAME_MAX-1)? */
bool config_vm_name_ok(const char *name);

/*
 * A reload: copies into cur what a running daemon can change at once from
 * next (log_level, reconnect_*, collapse_cpu_percent,
 * socket_clients_per_uid, socket_idle_timeout_ms, [libvirt]'s VM
 * limits, and each VM's floor, max_reclaim, frames_per_sec,
 * events_per_sec, request_timeout_ms) and keeps the rest as it is, calling
 * note() once per difference that only a restart applies, with a sentence
 * such as "socket changed: needs a restart".  Returns how many such
 * differences there were.
 */
typedef void (*config_note_fn)(const char *sentence, void *userdata);
int config_reload(struct config *cur, const struct config *next,
		  config_note_fn note, void *userdata);

/* Sets the libvirt URI ("" for the default); -ENAMETOOLONG if it does not fit. */
int config_set_libvirt(struct config *c, const char *uri);

#endif /* VDF_CONFIG_H */
