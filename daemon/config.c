// SPDX-License-Identifier: GPL-2.0
/*
 * config.c - vmdefragd's configuration file and --vm specs.
 *
 * The file is INI-style, read top to bottom in one pass:
 *
 *	# comment             (also "; comment", and " # comment" after a value)
 *	[daemon]              socket, socket_mode, socket_group,
 *	                      socket_read_group, socket_clients_per_uid,
 *	                      socket_idle_timeout_ms, log_level,
 *	                      reconnect_min_ms, reconnect_max_ms,
 *	                      collapse_cpu_percent, state_dir,
 *	                      metrics_listen, metrics_textfile,
 *	                      metrics_textfile_interval_ms
 *	[vm NAME]             qmp, channel, floor, max_reclaim, frames_per_sec,
 *	                      events_per_sec, request_timeout_ms, evict,
 *	                      policy, policy_weight, policy_headroom,
 *	                      policy_reclaim_rate, policy_calm,
 *	                      policy_cpu_percent
 *	[libvirt]             turns libvirt mode on; uri, and floor,
 *	                      max_reclaim, frames_per_sec, events_per_sec,
 *	                      request_timeout_ms, evict, policy* for every
 *	                      discovered domain
 *
 * The parser is a two-state machine: before any section header a key is an
 * error; after one, keys go to that section.  A [vm NAME] section seen
 * twice is an error (one place per setting), and so is a key given twice
 * in one section (a later [daemon] or [libvirt] section may set a key of
 * an earlier one again: that is how an appended override reads).  Two VMs
 * that name the same QMP or channel socket are rejected at the line that
 * names it the second time.  --vm specs on the command
 * line use the same per-VM setters (config_vm_set()), so a key means the
 * same thing in both places; a spec for a VM named in the file overrides
 * only the fields it gives.  Every error is one line naming the file and
 * line (or the spec) and what was wrong; nothing here logs.
 */
#include <ctype.h>
#include <errno.h>
#include <arpa/inet.h>
#include <grp.h>
#include <sys/socket.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "config.h"
#include "hostmem.h"
#include "vmdefrag/proto.h"
#include "log.h"
#include "size.h"

#define CONFIG_FILE_MAX		(1u << 20)
#define CONFIG_DEFAULT_FPS	500
#define CONFIG_DEFAULT_EPS	100
#define CONFIG_DEFAULT_TIMEOUT	60000
#define CONFIG_RATE_MAX		100000
#define CONFIG_MS_MAX		3600000

void config_vm_init(struct config_vm *vm)
{
	memset(vm, 0, sizeof(*vm));
	vm->frames_per_sec = CONFIG_DEFAULT_FPS;
	vm->events_per_sec = CONFIG_DEFAULT_EPS;
	vm->request_timeout_ms = CONFIG_DEFAULT_TIMEOUT;
	policy_params_init(&vm->policy);
}

void config_init(struct config *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->socket, sizeof(c->socket), "%s", CONFIG_DEFAULT_SOCKET);
	c->socket_mode = CONFIG_DEFAULT_MODE;
	c->socket_clients_per_uid = CONFIG_DEFAULT_CLIENTS_PER_UID;
	c->socket_idle_timeout_ms = CONFIG_DEFAULT_IDLE_MS;
	c->log_level = LOG_INFO;
	c->reconnect_min_ms = 500;
	c->reconnect_max_ms = 30000;
	c->collapse_cpu_percent = 25;
	snprintf(c->state_dir, sizeof(c->state_dir), "%s", CONFIG_DEFAULT_STATE_DIR);
	c->metrics_textfile_interval_ms = CONFIG_DEFAULT_TEXTFILE_MS;
	config_vm_init(&c->libvirt_defaults);
}

int config_set_libvirt(struct config *c, const char *uri)
{
	if (strlen(uri) >= sizeof(c->libvirt_uri))
		return -ENAMETOOLONG;
	strcpy(c->libvirt_uri, uri);
	c->libvirt = true;
	return 0;
}

static int config_fail(char *err, size_t errsz, int r, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int config_fail(char *err, size_t errsz, int r, const char *fmt, ...)
{
	va_list ap;

	if (err && errsz) {
		va_start(ap, fmt);
		vsnprintf(err, errsz, fmt, ap);
		va_end(ap);
	}
	return r;
}

static bool config_name_valid(const char *name, size_t len)
{
	if (len == 0 || len >= CONFIG_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)name[i];

		if (!isalnum(ch) && ch != '_' && ch != '-' && ch != '.')
			return false;
	}
	return true;
}

static int config_parse_u32(const char *v, uint32_t min, uint32_t max,
			    uint32_t *ret)
{
	unsigned long long x;
	char *end;

	if (!isdigit((unsigned char)*v))
		return -EINVAL;
	errno = 0;
	x = strtoull(v, &end, 10);
	if (*end)
		return -EINVAL;
	if (errno == ERANGE || x < min || x > max)
		return -ERANGE;
	*ret = (uint32_t)x;
	return 0;
}

static int config_path(const char *v, char *dst, size_t dstsz, char *msg,
		       size_t msgsz)
{
	if (*v != '/')
		return config_fail(msg, msgsz, -EINVAL, "must be an absolute path");
	if (strlen(v) >= dstsz)
		return config_fail(msg, msgsz, -ENAMETOOLONG,
				   "path longer than %zu bytes", dstsz - 1);
	strcpy(dst, v);
	return 0;
}

static int config_size(const char *v, uint64_t *dst, char *msg, size_t msgsz)
{
	int r = size_parse_blocks(v, dst);

	switch (r) {
	case 0:
		return 0;
	case -ERANGE:
		return config_fail(msg, msgsz, r, "size '%s' is too large", v);
	case -EDOM:
		return config_fail(msg, msgsz, r,
				   "size '%s' is not a multiple of 2 MiB", v);
	default:
		return config_fail(msg, msgsz, r,
				   "'%s' is not a size (like 512M, 2G)", v);
	}
}

static int config_u32(const char *key, const char *v, uint32_t min, uint32_t max,
		      uint32_t *dst, char *msg, size_t msgsz)
{
	int r = config_parse_u32(v, min, max, dst);

	if (r == -ERANGE)
		return config_fail(msg, msgsz, r, "%s '%s' is not in %u..%u",
				   key, v, min, max);
	if (r < 0)
		return config_fail(msg, msgsz, r, "%s '%s' is not a number", key, v);
	return 0;
}

/* One per-VM setting; msg gets the reason without the location. */
static int config_vm_set(struct config_vm *vm, const char *key, const char *v,
			 char *msg, size_t msgsz)
{
	if (strcmp(key, "qmp") == 0)
		return config_path(v, vm->qmp, sizeof(vm->qmp), msg, msgsz);
	if (strcmp(key, "channel") == 0)
		return config_path(v, vm->channel, sizeof(vm->channel), msg, msgsz);
	if (strcmp(key, "floor") == 0)
		return config_size(v, &vm->floor_bytes, msg, msgsz);
	if (strcmp(key, "max_reclaim") == 0)
		return config_size(v, &vm->max_reclaim_bytes, msg, msgsz);
	if (strcmp(key, "frames_per_sec") == 0)
		return config_u32(key, v, 1, CONFIG_RATE_MAX, &vm->frames_per_sec,
				  msg, msgsz);
	if (strcmp(key, "events_per_sec") == 0)
		return config_u32(key, v, 1, CONFIG_RATE_MAX, &vm->events_per_sec,
				  msg, msgsz);
	if (strcmp(key, "request_timeout_ms") == 0)
		return config_u32(key, v, 100, CONFIG_MS_MAX,
				  &vm->request_timeout_ms, msg, msgsz);
	if (strcmp(key, "evict") == 0) {
		int e = proto_evict_from_name(v);

		if (e < 0)
			return config_fail(msg, msgsz, -EINVAL, "evict is one of "
					   "movable, evict-slab, evict (not '%s')", v);
		vm->evict = (uint32_t)e;
		return 0;
	}
	if (strcmp(key, "policy") == 0) {
		if (policy_mode_from_name(v, &vm->policy.mode) < 0)
			return config_fail(msg, msgsz, -EINVAL, "policy is manual or "
					   "auto (not '%s')", v);
		return 0;
	}
	if (strcmp(key, "policy_weight") == 0)
		return config_u32(key, v, 1, POLICY_WEIGHT_MAX, &vm->policy.weight,
				  msg, msgsz);
	if (strcmp(key, "policy_headroom") == 0)
		return config_size(v, &vm->policy.headroom_bytes, msg, msgsz);
	if (strcmp(key, "policy_reclaim_rate") == 0)
		return config_u32(key, v, 1, POLICY_RATE_MAX,
				  &vm->policy.reclaim_rate_mib, msg, msgsz);
	if (strcmp(key, "policy_calm") == 0)
		return config_u32(key, v, 0, POLICY_CALM_MAX, &vm->policy.calm_s,
				  msg, msgsz);
	if (strcmp(key, "policy_cpu_percent") == 0)
		return config_u32(key, v, 1, 100, &vm->policy.cpu_percent, msg, msgsz);
	return config_fail(msg, msgsz, -ENOENT, "unknown key '%s' for a VM", key);
}

/* A group by name or number into *ret_gid and its name (64 bytes). */
static int config_group(const char *v, gid_t *ret_gid, bool *ret_set, char *ret_name,
			char *msg, size_t msgsz)
{
	struct group gr, *res = NULL;
	char buf[4096];
	uint32_t gid;

	if (strlen(v) >= sizeof(((struct config *)0)->socket_group_name))
		return config_fail(msg, msgsz, -ENAMETOOLONG, "group name too long");
	if (config_parse_u32(v, 0, UINT32_MAX - 1, &gid) == 0) {
		*ret_gid = (gid_t)gid;
	} else {
		if (getgrnam_r(v, &gr, buf, sizeof(buf), &res) != 0 || !res)
			return config_fail(msg, msgsz, -ENOENT, "no group named '%s'", v);
		*ret_gid = res->gr_gid;
	}
	*ret_set = true;
	strcpy(ret_name, v);
	return 0;
}

static int config_daemon_set(struct config *c, const char *key, const char *v,
			     char *msg, size_t msgsz)
{
	if (strcmp(key, "socket") == 0)
		return config_path(v, c->socket, sizeof(c->socket), msg, msgsz);
	if (strcmp(key, "socket_mode") == 0) {
		char *end;
		unsigned long m;

		errno = 0;
		m = strtoul(v, &end, 8);
		if (!*v || *end || errno || m > 0777 || (m & 0600) != 0600)
			return config_fail(msg, msgsz, -EINVAL,
					   "socket_mode '%s' is not an octal mode "
					   "0600..0777 with owner rw", v);
		c->socket_mode = (unsigned int)m;
		return 0;
	}
	if (strcmp(key, "socket_group") == 0)
		return config_group(v, &c->socket_group, &c->socket_group_set,
				    c->socket_group_name, msg, msgsz);
	if (strcmp(key, "socket_read_group") == 0)
		return config_group(v, &c->socket_read_group, &c->socket_read_group_set,
				    c->socket_read_group_name, msg, msgsz);
	if (strcmp(key, "socket_clients_per_uid") == 0)
		return config_u32(key, v, 1, CONFIG_CLIENTS_PER_UID_MAX,
				  &c->socket_clients_per_uid, msg, msgsz);
	if (strcmp(key, "socket_idle_timeout_ms") == 0)
		return config_u32(key, v, 100, CONFIG_MS_MAX, &c->socket_idle_timeout_ms,
				  msg, msgsz);
	if (strcmp(key, "log_level") == 0) {
		if (log_level_from_string(v, &c->log_level) < 0)
			return config_fail(msg, msgsz, -EINVAL,
					   "log_level '%s' is not one of err, "
					   "warning, notice, info, debug", v);
		return 0;
	}
	if (strcmp(key, "reconnect_min_ms") == 0)
		return config_u32(key, v, 10, CONFIG_MS_MAX, &c->reconnect_min_ms,
				  msg, msgsz);
	if (strcmp(key, "reconnect_max_ms") == 0)
		return config_u32(key, v, 10, CONFIG_MS_MAX, &c->reconnect_max_ms,
				  msg, msgsz);
	if (strcmp(key, "collapse_cpu_percent") == 0)
		return config_u32(key, v, 0, 100, &c->collapse_cpu_percent, msg, msgsz);
	if (strcmp(key, "state_dir") == 0)
		return config_path(v, c->state_dir, sizeof(c->state_dir), msg, msgsz);
	if (strcmp(key, "metrics_listen") == 0)
		return config_parse_listen(v, &c->metrics_listen, msg, msgsz);
	if (strcmp(key, "metrics_textfile") == 0)
		return config_path(v, c->metrics_textfile, sizeof(c->metrics_textfile),
				   msg, msgsz);
	if (strcmp(key, "metrics_textfile_interval_ms") == 0)
		return config_u32(key, v, 1000, CONFIG_MS_MAX,
				  &c->metrics_textfile_interval_ms, msg, msgsz);
	return config_fail(msg, msgsz, -ENOENT, "unknown key '%s' in [daemon]", key);
}

int config_parse_listen(const char *v, struct config_listen *ret_l, char *msg,
			size_t msgsz)
{
	struct config_listen l = { 0 };
	char host[64];
	const char *port;
	uint32_t p;

	if (strlen(v) >= sizeof(l.spec))
		return config_fail(msg, msgsz, -ENAMETOOLONG,
				   "metrics_listen '%.40s...' is too long", v);
	snprintf(l.spec, sizeof(l.spec), "%s", v);
	if (strncmp(v, "unix:", 5) == 0) {
		l.kind = CONFIG_LISTEN_UNIX;
		if (v[5] != '/' || strlen(v + 5) >= sizeof(l.path))
			return config_fail(msg, msgsz, -EINVAL, "metrics_listen '%s': "
					   "unix: needs an absolute path shorter "
					   "than %zu bytes", v, sizeof(l.path));
		strcpy(l.path, v + 5);
		*ret_l = l;
		return 0;
	}
	if (strncmp(v, "tcp:", 4) != 0)
		return config_fail(msg, msgsz, -EINVAL, "metrics_listen '%s' is not "
				   "unix:/PATH or tcp:ADDRESS:PORT", v);
	v += 4;
	if (*v == '[') {
		const char *close = strchr(v, ']');

		if (!close || close[1] != ':' || (size_t)(close - v - 1) >= sizeof(host))
			return config_fail(msg, msgsz, -EINVAL, "metrics_listen "
					   "'tcp:%s': write IPv6 as [ADDRESS]:PORT", v);
		memcpy(host, v + 1, (size_t)(close - v - 1));
		host[close - v - 1] = '\0';
		port = close + 2;
		l.family = AF_INET6;
	} else {
		const char *colon = strrchr(v, ':');

		if (!colon || (size_t)(colon - v) >= sizeof(host))
			return config_fail(msg, msgsz, -EINVAL, "metrics_listen "
					   "'tcp:%s' is not tcp:ADDRESS:PORT", v);
		memcpy(host, v, (size_t)(colon - v));
		host[colon - v] = '\0';
		port = colon + 1;
		l.family = AF_INET;
	}
	if (inet_pton(l.family, host, l.addr) != 1)
		return config_fail(msg, msgsz, -EINVAL, "metrics_listen 'tcp:%s': "
				   "'%s' is not a numeric IP%s address", v, host,
				   l.family == AF_INET6 ? "v6" : "v4");
	if (config_parse_u32(port, 1, 65535, &p) < 0)
		return config_fail(msg, msgsz, -EINVAL, "metrics_listen 'tcp:%s': "
				   "port '%s' is not 1..65535", v, port);
	l.port = (uint16_t)p;
	if ((l.family == AF_INET && l.addr[0] != 127) ||
	    (l.family == AF_INET6 && !IN6_IS_ADDR_LOOPBACK((struct in6_addr *)l.addr)))
		return config_fail(msg, msgsz, -EINVAL, "metrics_listen 'tcp:%s': "
				   "only a loopback address (127.0.0.0/8 or [::1]) may "
				   "serve metrics", v);
	l.kind = CONFIG_LISTEN_TCP;
	*ret_l = l;
	return 0;
}

struct config_vm *config_find_vm(struct config *c, const char *name)
{
	for (size_t i = 0; i < c->nvms; i++)
		if (strcmp(c->vms[i].name, name) == 0)
			return &c->vms[i];
	return NULL;
}

static char *config_trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/* Removes a " # comment" / " ; comment" tail (the marker after a blank). */
static void config_strip_comment(char *s)
{
	for (char *p = s; *p; p++) {
		if ((*p == '#' || *p == ';') && (p == s || isspace((unsigned char)p[-1]))) {
			*p = '\0';
			return;
		}
	}
}

/* Remembers where a VM's socket paths were set (0: by a --vm spec). */
static void config_vm_note_line(struct config_vm *vm, const char *key,
				unsigned int line)
{
	if (strcmp(key, "qmp") == 0)
		vm->qmp_line = line;
	else if (strcmp(key, "channel") == 0)
		vm->channel_line = line;
}

enum config_section {
	CONFIG_SEC_NONE,
	CONFIG_SEC_DAEMON,
	CONFIG_SEC_VM,
	CONFIG_SEC_LIBVIRT,
};

bool config_vm_name_ok(const char *name)
{
	return config_name_valid(name, strlen(name));
}

static int config_libvirt_set(struct config *c, const char *key, const char *v,
			      char *msg, size_t msgsz)
{
	if (strcmp(key, "uri") == 0)
		return config_set_libvirt(c, v) < 0 ?
		       config_fail(msg, msgsz, -ENAMETOOLONG, "uri too long") : 0;
	if (strcmp(key, "qmp") == 0 || strcmp(key, "channel") == 0)
		return config_fail(msg, msgsz, -EINVAL, "'%s' comes from each "
				   "domain's XML, not from [libvirt]", key);
	return config_vm_set(&c->libvirt_defaults, key, v, msg, msgsz);
}

static int config_section_header(struct config *c, char *line,
				 enum config_section *sec, struct config_vm **vm,
				 char *msg, size_t msgsz)
{
	size_t len = strlen(line);
	char *inner, *name;

	if (line[len - 1] != ']')
		return config_fail(msg, msgsz, -EINVAL, "section header without ']'");
	line[len - 1] = '\0';
	inner = config_trim(line + 1);
	if (strcmp(inner, "daemon") == 0) {
		*sec = CONFIG_SEC_DAEMON;
		return 0;
	}
	if (strcmp(inner, "libvirt") == 0) {
		*sec = CONFIG_SEC_LIBVIRT;
		c->libvirt = true;
		return 0;
	}
	if (strncmp(inner, "vm", 2) != 0 || !isspace((unsigned char)inner[2]))
		return config_fail(msg, msgsz, -EINVAL,
				   "unknown section [%s] (want [daemon], [libvirt] or [vm NAME])",
				   inner);
	name = config_trim(inner + 2);
	if (!config_name_valid(name, strlen(name)))
		return config_fail(msg, msgsz, -EINVAL,
				   "bad VM name '%s' (1-%d of A-Z a-z 0-9 _ - .)",
				   name, CONFIG_NAME_MAX - 1);
	if (config_find_vm(c, name))
		return config_fail(msg, msgsz, -EEXIST, "second [vm %s] section", name);
	if (c->nvms >= CONFIG_MAX_VMS)
		return config_fail(msg, msgsz, -E2BIG, "more than %d VMs",
				   CONFIG_MAX_VMS);
	*vm = &c->vms[c->nvms++];
	config_vm_init(*vm);
	strcpy((*vm)->name, name);
	*sec = CONFIG_SEC_VM;
	return 0;
}

/* The keys set in the current section, to reject one given twice there. */
#define CONFIG_SEEN_MAX	32
struct config_seen {
	size_t n;
	struct {
		char key[32];
		unsigned int line;
	} k[CONFIG_SEEN_MAX];
};

/* Records key at line; on a repeat, msg says where it was first. */
static int config_seen_add(struct config_seen *seen, const char *key,
			   unsigned int line, const char *section, char *msg,
			   size_t msgsz)
{
	for (size_t i = 0; i < seen->n; i++)
		if (strcmp(seen->k[i].key, key) == 0)
			return config_fail(msg, msgsz, -EEXIST, "'%s' is set twice "
					   "in [%s] (first on line %u)", key,
					   section, seen->k[i].line);
	if (seen->n < CONFIG_SEEN_MAX && strlen(key) < sizeof(seen->k[0].key)) {
		strcpy(seen->k[seen->n].key, key);
		seen->k[seen->n++].line = line;
	}
	return 0;
}

int config_parse_text(struct config *c, const char *text, const char *origin,
		      char *err, size_t errsz)
{
	enum config_section sec = CONFIG_SEC_NONE;
	struct config_vm *vm = NULL;
	struct config_seen seen = { 0 };
	char section[CONFIG_NAME_MAX + 8] = "";
	char msg[CONFIG_ERR_MAX];
	const char *p = text;
	unsigned int lineno = 0;
	int r = 0;

	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		char *buf, *line, *eq, *key, *val;

		lineno++;
		buf = strndup(p, len);
		if (!buf)
			return config_fail(err, errsz, -ENOMEM, "%s: out of memory", origin);
		p += len + (nl ? 1 : 0);
		if (memchr(buf, '\0', len) || strlen(buf) != len) {
			free(buf);
			return config_fail(err, errsz, -EINVAL, "%s:%u: NUL byte in line",
					   origin, lineno);
		}
		line = config_trim(buf);
		if (*line == '#' || *line == ';' || *line == '\0') {
			free(buf);
			continue;
		}
		config_strip_comment(line);
		line = config_trim(line);
		if (*line == '[') {
			r = config_section_header(c, line, &sec, &vm, msg, sizeof(msg));
			seen.n = 0;
			if (r == 0 && sec == CONFIG_SEC_VM)
				snprintf(section, sizeof(section), "vm %s", vm->name);
			else if (r == 0)
				snprintf(section, sizeof(section), "%s",
					 sec == CONFIG_SEC_DAEMON ? "daemon" : "libvirt");
		} else if (!(eq = strchr(line, '='))) {
			r = config_fail(msg, sizeof(msg), -EINVAL,
					"expected 'key = value' or a [section]");
		} else {
			*eq = '\0';
			key = config_trim(line);
			val = config_trim(eq + 1);
			if (!*key)
				r = config_fail(msg, sizeof(msg), -EINVAL, "empty key");
			else if (!*val)
				r = config_fail(msg, sizeof(msg), -EINVAL,
						"empty value for '%s'", key);
			else if (sec == CONFIG_SEC_NONE)
				r = config_fail(msg, sizeof(msg), -EINVAL,
						"'%s' outside a section", key);
			else if ((r = config_seen_add(&seen, key, lineno, section,
						      msg, sizeof(msg))) < 0)
				;
			else if (sec == CONFIG_SEC_DAEMON)
				r = config_daemon_set(c, key, val, msg, sizeof(msg));
			else if (sec == CONFIG_SEC_LIBVIRT)
				r = config_libvirt_set(c, key, val, msg, sizeof(msg));
			else if ((r = config_vm_set(vm, key, val, msg, sizeof(msg))) == 0)
				config_vm_note_line(vm, key, lineno);
		}
		free(buf);
		if (r < 0)
			return config_fail(err, errsz, r, "%s:%u: %s", origin, lineno, msg);
	}
	snprintf(c->file, sizeof(c->file), "%s", origin);
	return 0;
}

int config_parse_file(struct config *c, const char *path, char *err, size_t errsz)
{
	char *text;
	size_t len;
	int r;

	r = hostmem_read_text(path, CONFIG_FILE_MAX, &text, &len);
	if (r < 0)
		return config_fail(err, errsz, r, "%s: cannot read: %s", path,
				   strerror(-r));
	if (strlen(text) != len)
		r = config_fail(err, errsz, -EINVAL, "%s: NUL byte in file", path);
	else
		r = config_parse_text(c, text, path, err, errsz);
	free(text);
	return r;
}

int config_parse_vm_spec(const char *spec, struct config_vm *vm, char *err,
			 size_t errsz)
{
	char msg[CONFIG_ERR_MAX];
	struct config_vm tmp = *vm;
	const char *comma = strchr(spec, ',');
	size_t nlen = comma ? (size_t)(comma - spec) : strlen(spec);
	char *copy, *field, *save = NULL;
	int r = 0;

	if (!config_name_valid(spec, nlen))
		return config_fail(err, errsz, -EINVAL,
				   "--vm '%s': bad VM name (1-%d of A-Z a-z 0-9 _ - .)",
				   spec, CONFIG_NAME_MAX - 1);
	memcpy(tmp.name, spec, nlen);
	tmp.name[nlen] = '\0';
	copy = strdup(comma ? comma + 1 : "");
	if (!copy)
		return config_fail(err, errsz, -ENOMEM, "out of memory");
	for (field = strtok_r(copy, ",", &save); field;
	     field = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(field, '=');

		if (!eq || eq == field || !eq[1]) {
			r = config_fail(msg, sizeof(msg), -EINVAL,
					"'%s' is not key=value", field);
			break;
		}
		*eq = '\0';
		r = config_vm_set(&tmp, field, eq + 1, msg, sizeof(msg));
		if (r < 0)
			break;
		config_vm_note_line(&tmp, field, 0);
	}
	free(copy);
	if (r < 0)
		return config_fail(err, errsz, r, "--vm '%s': %s", spec, msg);
	*vm = tmp;
	return 0;
}

int config_add_vm_spec(struct config *c, const char *spec, char *err, size_t errsz)
{
	const char *comma = strchr(spec, ',');
	size_t nlen = comma ? (size_t)(comma - spec) : strlen(spec);
	struct config_vm vm, *existing = NULL;
	int r;

	config_vm_init(&vm);
	for (size_t i = 0; i < c->nvms; i++) {
		if (strlen(c->vms[i].name) == nlen &&
		    strncmp(c->vms[i].name, spec, nlen) == 0) {
			existing = &c->vms[i];
			vm = *existing;
		}
	}
	r = config_parse_vm_spec(spec, &vm, err, errsz);
	if (r < 0)
		return r;
	if (existing) {
		*existing = vm;
		return 0;
	}
	if (c->nvms >= CONFIG_MAX_VMS)
		return config_fail(err, errsz, -E2BIG, "--vm '%s': more than %d VMs",
				   spec, CONFIG_MAX_VMS);
	c->vms[c->nvms++] = vm;
	return 0;
}

/* One socket path of a VM, and where it was set. */
struct config_sock {
	const struct config_vm *vm;
	const char *key;		/* "qmp" or "channel" */
	const char *path;
	unsigned int line;
};

/* The error for b naming the same socket as a (a came first). */
static int config_sock_clash(const struct config *c, const struct config_sock *a,
			     const struct config_sock *b, char *err, size_t errsz)
{
	char what[CONFIG_ERR_MAX];

	if (a->vm == b->vm)
		snprintf(what, sizeof(what), "%s '%s' is also its %s socket",
			 b->key, b->path, a->key);
	else
		snprintf(what, sizeof(what), "%s '%s' is already the %s socket of "
			 "VM '%s'; each VM needs its own sockets", b->key, b->path,
			 a->key, a->vm->name);
	if (b->line && c->file[0])
		return config_fail(err, errsz, -EEXIST, "%s:%u: %s", c->file,
				   b->line, what);
	return config_fail(err, errsz, -EEXIST, "--vm '%s': %s", b->vm->name, what);
}

static int config_check_sockets(const struct config *c, char *err, size_t errsz)
{
	struct config_sock s[2 * CONFIG_MAX_VMS];
	size_t n = 0;

	for (size_t i = 0; i < c->nvms; i++) {
		const struct config_vm *vm = &c->vms[i];

		s[n++] = (struct config_sock) { vm, "qmp", vm->qmp, vm->qmp_line };
		s[n++] = (struct config_sock) { vm, "channel", vm->channel,
						vm->channel_line };
	}
	for (size_t j = 1; j < n; j++) {
		for (size_t i = 0; i < j; i++) {
			const struct config_sock *a = &s[i], *b = &s[j];

			if (strcmp(a->path, b->path) != 0)
				continue;
			/* report at the later line of the file */
			if (a->line > b->line && b->line) {
				const struct config_sock *t = a;

				a = b;
				b = t;
			}
			return config_sock_clash(c, a, b, err, errsz);
		}
	}
	return 0;
}

int config_validate(const struct config *c, char *err, size_t errsz)
{
	/* the file's group is socket_group: a read-group member connects
	 * through the "other" bits, then the daemon checks its groups */
	if (c->socket_read_group_set && !(c->socket_mode & 0002))
		return config_fail(err, errsz, -EINVAL,
				   "socket_read_group '%s' needs socket_mode to let "
				   "others connect (e.g. 0666): the daemon checks each "
				   "client's groups", c->socket_read_group_name);
	if (c->reconnect_min_ms > c->reconnect_max_ms)
		return config_fail(err, errsz, -EINVAL,
				   "reconnect_min_ms %u is above reconnect_max_ms %u",
				   c->reconnect_min_ms, c->reconnect_max_ms);
	for (size_t i = 0; i < c->nvms; i++) {
		const struct config_vm *vm = &c->vms[i];

		if (!vm->qmp[0])
			return config_fail(err, errsz, -EINVAL,
					   "VM '%s': no qmp=PATH given", vm->name);
		if (!vm->channel[0])
			return config_fail(err, errsz, -EINVAL,
					   "VM '%s': no channel=PATH given", vm->name);
		if (vm->max_reclaim_bytes && vm->floor_bytes >= UINT64_MAX - vm->max_reclaim_bytes)
			return config_fail(err, errsz, -ERANGE,
					   "VM '%s': floor + max_reclaim overflow", vm->name);
	}
	return config_check_sockets(c, err, errsz);
}

static void config_note(config_note_fn note, void *userdata, int *count,
			const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void config_note(config_note_fn note, void *userdata, int *count,
			const char *fmt, ...)
{
	char line[CONFIG_ERR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	(*count)++;
	if (note)
		note(line, userdata);
}

/* The per-VM limits a running VM takes at once. */
static void config_vm_copy_live(struct config_vm *dst, const struct config_vm *src)
{
	dst->floor_bytes = src->floor_bytes;
	dst->max_reclaim_bytes = src->max_reclaim_bytes;
	dst->frames_per_sec = src->frames_per_sec;
	dst->events_per_sec = src->events_per_sec;
	dst->request_timeout_ms = src->request_timeout_ms;
	dst->evict = src->evict;
	dst->policy = src->policy;
}

int config_reload(struct config *cur, const struct config *next,
		  config_note_fn note, void *userdata)
{
	int n = 0;

	if (strcmp(cur->socket, next->socket) != 0)
		config_note(note, userdata, &n, "socket changed (%s -> %s): needs "
			    "a restart", cur->socket, next->socket);
	if (cur->socket_mode != next->socket_mode)
		config_note(note, userdata, &n, "socket_mode changed (%04o -> "
			    "%04o): needs a restart", cur->socket_mode,
			    next->socket_mode);
	if (cur->socket_group_set != next->socket_group_set ||
	    (cur->socket_group_set && cur->socket_group != next->socket_group))
		config_note(note, userdata, &n, "socket_group changed: needs a "
			    "restart");
	if (strcmp(cur->state_dir, next->state_dir) != 0)
		config_note(note, userdata, &n, "state_dir changed: needs a restart");
	if (cur->socket_read_group_set != next->socket_read_group_set ||
	    (cur->socket_read_group_set &&
	     cur->socket_read_group != next->socket_read_group))
		config_note(note, userdata, &n, "socket_read_group changed: needs a "
			    "restart");
	if (cur->libvirt != next->libvirt)
		config_note(note, userdata, &n, "libvirt mode turned %s: needs a "
			    "restart", next->libvirt ? "on" : "off");
	else if (strcmp(cur->libvirt_uri, next->libvirt_uri) != 0)
		config_note(note, userdata, &n, "libvirt uri changed: needs a "
			    "restart");
	for (size_t i = 0; i < cur->nvms; i++) {
		struct config_vm *vm = &cur->vms[i];
		const struct config_vm *nv = NULL;

		for (size_t j = 0; j < next->nvms; j++)
			if (strcmp(next->vms[j].name, vm->name) == 0)
				nv = &next->vms[j];
		if (!nv) {
			config_note(note, userdata, &n, "VM '%s' removed: needs a "
				    "restart", vm->name);
			continue;
		}
		if (strcmp(vm->qmp, nv->qmp) != 0)
			config_note(note, userdata, &n, "VM '%s' qmp changed: needs "
				    "a restart", vm->name);
		if (strcmp(vm->channel, nv->channel) != 0)
			config_note(note, userdata, &n, "VM '%s' channel changed: "
				    "needs a restart", vm->name);
		config_vm_copy_live(vm, nv);
	}
	for (size_t j = 0; j < next->nvms; j++) {
		bool known = false;

		for (size_t i = 0; i < cur->nvms; i++)
			if (strcmp(next->vms[j].name, cur->vms[i].name) == 0)
				known = true;
		if (!known)
			config_note(note, userdata, &n, "VM '%s' added: needs a "
				    "restart", next->vms[j].name);
	}
	cur->log_level = next->log_level;
	cur->reconnect_min_ms = next->reconnect_min_ms;
	cur->reconnect_max_ms = next->reconnect_max_ms;
	cur->collapse_cpu_percent = next->collapse_cpu_percent;
	if (strcmp(cur->metrics_listen.spec, next->metrics_listen.spec) != 0)
		config_note(note, userdata, &n, "metrics_listen changed: needs a "
			    "restart");
	if (strcmp(cur->metrics_textfile, next->metrics_textfile) != 0)
		config_note(note, userdata, &n, "metrics_textfile changed: needs a "
			    "restart");
	cur->metrics_textfile_interval_ms = next->metrics_textfile_interval_ms;
	cur->socket_clients_per_uid = next->socket_clients_per_uid;
	cur->socket_idle_timeout_ms = next->socket_idle_timeout_ms;
	config_vm_copy_live(&cur->libvirt_defaults, &next->libvirt_defaults);
	return n;
}
