// SPDX-License-Identifier: GPL-2.0
/*
 * vmdefragctl.c - command line client of vmdefragd's control socket.
 *
 * One request, one response (ctl_proto.h), printed human-readable or, with
 * --json, as the daemon's JSON object.  Every failure is one line on
 * stderr and a distinct exit status (enum ctl_exit, listed in --help), so
 * scripts can tell "daemon not running" from "no such VM" from "guest not
 * ready".  Strings that came from a guest (slab cache names) are quoted
 * with log_quote() before they reach the terminal.
 *
 * reclaim / return start an operation in the daemon and print its id; with
 * --wait the client polls the operation ("op") every CTL_POLL_MS, shows a
 * progress line on a terminal (rewritten with \r), and exits 0 only if
 * the whole size was moved, else 1 with the daemon's reason.
 *
 * Two commands serve the libvirt integration.  notify is what the libvirt
 * qemu hook runs: one request with a short deadline (CTL_NOTIFY_TIMEOUT_MS
 * for connect and answer), so a wedged daemon cannot hold libvirtd up.
 * check-domain never talks to vmdefragd: it reads a domain's XML from
 * libvirt (read-only connection; live XML when running) or from a file,
 * and prints what the domain lacks (domain_xml.c), exit 0 only if nothing.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <json-c/json.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <libxml/xmlerror.h>

#include "ctl_proto.h"
#include "domain_xml.h"
#include "log.h"
#include "size.h"
#include "virt_conn.h"

#define CTL_TIMEOUT_MS	300000	/* a scan of a big guest under TCG is slow */
#define CTL_POLL_MS	250	/* --wait: progress polling interval */
#define CTL_NOTIFY_TIMEOUT_MS	2000	/* notify: connect + answer */

/* How long ctl_transact() waits to connect and for the answer. */
static int ctl_timeout_ms = CTL_TIMEOUT_MS;

static const char *pos0_name(enum ctl_cmd cmd)
{
	return cmd == CTL_CMD_RECLAIM ? "reclaim" : "return";
}

static void usage(FILE *f)
{
	fprintf(f,
"Usage: vmdefragctl [--socket PATH] status [VM] [--json]\n"
"       vmdefragctl [--socket PATH] scan VM [--json]\n"
"       vmdefragctl [--socket PATH] reclaim VM SIZE [--wait] [--json]\n"
"       vmdefragctl [--socket PATH] return VM SIZE [--wait] [--json]\n"
"       vmdefragctl [--socket PATH] notify DOMAIN EVENT\n"
"       vmdefragctl check-domain NAME [--connect URI]\n"
"       vmdefragctl check-domain --xml FILE\n"
"\n"
"  status [VM]   per VM: backend, RAM, host backing and huge-page-mapped\n"
"                bytes, host shmem THP policy, guest session, and the\n"
"                guest's last reported free/captured/unmovable memory\n"
"  scan VM       ask the guest for its 2 MiB block picture: block classes,\n"
"                vacate cost, unmovable causes, top slab caches\n"
"  reclaim VM SIZE  take SIZE of the VM's RAM backing back from the guest:\n"
"                the guest empties 2 MiB blocks its backing holds, the\n"
"                daemon punches them (SIZE: K/M/G suffix, 2 MiB multiple);\n"
"                hint backend (anonymous RAM, free page reporting): the\n"
"                guest compacts blocks, what came back is the measured\n"
"                fall of QEMU's RssAnon\n"
"  return VM SIZE   give SIZE of reclaimed memory back, re-backed with\n"
"                2 MiB folios where the host allows it (not on the hint\n"
"                backend: the guest keeps its blocks)\n"
"  notify DOMAIN EVENT  tell vmdefragd a libvirt domain was prepared,\n"
"                started, stopped or released (EVENT: prepare, started,\n"
"                stopped, release); what the libvirt hook runs, gives up\n"
"                after %d s\n"
"  check-domain NAME  read libvirt domain NAME's XML (live when running)\n"
"                and say what it lacks for vmdefrag, in plain words; exit 0\n"
"                only when it lacks nothing.  Does not need vmdefragd.\n"
"  --connect URI libvirt URI for check-domain (default: libvirt's default)\n"
"  --xml FILE    check-domain on a domain XML file instead (- = stdin)\n"
"  --wait        wait for the operation, showing progress; exit 0 only when\n"
"                the whole SIZE was moved\n"
"  --socket PATH vmdefragd's control socket (default %s)\n"
"  --json        print the daemon's JSON answer\n"
"\n"
"Exit status:\n"
"  0  success\n"
"  1  the daemon or the guest failed the request\n"
"  2  bad arguments\n"
"  3  the daemon is not running (no socket, or nobody listening)\n"
"  4  permission denied on the control socket\n"
"  5  unknown VM\n"
"  6  the VM's guest session is not ready (no agent answering)\n"
"check-domain: 0 nothing lacks, 1 something lacks, 2 bad arguments or an\n"
"unreadable XML file, 3 libvirt unreachable, 4 permission denied,\n"
"5 no such domain\n",
		CTL_NOTIFY_TIMEOUT_MS / 1000, CTL_DEFAULT_SOCKET);
}

static int die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int die(int code, const char *fmt, ...)
{
	va_list ap;

	fputs("vmdefragctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return code;
}

/* Sends line, reads one response line into *ret (malloc'ed). */
static int ctl_transact(const char *path, const char *line, char **ret)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len = 0, cap = 0;
	char *buf = NULL;
	int fd, e, send_errno;

	if (strlen(path) >= sizeof(sa.sun_path))
		return die(CTL_EXIT_USAGE, "socket path '%s' is too long", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return die(CTL_EXIT_FAILED, "socket: %s", strerror(errno));
	strcpy(sa.sun_path, path);
	/* a unix connect() blocks while the listener's backlog is full */
	{
		struct timeval tv = { ctl_timeout_ms / 1000,
				      (ctl_timeout_ms % 1000) * 1000 };

		(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		e = errno;
		close(fd);
		if (e == EAGAIN || e == EINPROGRESS)
			return die(CTL_EXIT_FAILED, "vmdefragd did not accept the "
				   "connection in %d ms", ctl_timeout_ms);
		if (e == ENOENT || e == ECONNREFUSED || e == ENOTDIR)
			return die(CTL_EXIT_NO_DAEMON, "vmdefragd is not running "
				   "(%s: %s)", path, strerror(e));
		if (e == EACCES || e == EPERM)
			return die(CTL_EXIT_PERMISSION, "permission denied on %s "
				   "(need root or the daemon's socket group)", path);
		return die(CTL_EXIT_FAILED, "cannot connect to %s: %s", path,
			   strerror(e));
	}
	/*
	 * A daemon that refuses us (permission) writes why and closes without
	 * reading our request, so the send may fail with EPIPE while that
	 * answer waits in our receive queue: read it before giving up.
	 */
	send_errno = 0;
	if (send(fd, line, strlen(line), MSG_NOSIGNAL) != (ssize_t)strlen(line)) {
		send_errno = errno;
		if (send_errno != EPIPE && send_errno != ECONNRESET) {
			close(fd);
			return die(CTL_EXIT_FAILED, "cannot send to vmdefragd: %s",
				   strerror(send_errno));
		}
	}
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (len + 4096 > cap) {
			char *nb;

			cap = cap ? cap * 2 : 65536;
			if (cap > CTL_RESPONSE_MAX + 4096) {
				free(buf);
				close(fd);
				return die(CTL_EXIT_FAILED, "response from vmdefragd too long");
			}
			nb = realloc(buf, cap);
			if (!nb) {
				free(buf);
				close(fd);
				return die(CTL_EXIT_FAILED, "out of memory");
			}
			buf = nb;
		}
		if (poll(&p, 1, ctl_timeout_ms) == 0) {
			free(buf);
			close(fd);
			return die(CTL_EXIT_FAILED, "vmdefragd did not answer in %d ms",
				   ctl_timeout_ms);
		}
		n = recv(fd, buf + len, cap - len - 1, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			free(buf);
			close(fd);
			if (send_errno)
				return die(CTL_EXIT_FAILED, "cannot send to vmdefragd: %s",
					   strerror(send_errno));
			return die(CTL_EXIT_FAILED, "vmdefragd closed the connection "
				   "without an answer");
		}
		len += (size_t)n;
		buf[len] = '\0';
		if (memchr(buf, '\n', len))
			break;
	}
	close(fd);
	*strchr(buf, '\n') = '\0';
	*ret = buf;
	return 0;
}

static uint64_t jget_u64(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) && v ? json_object_get_uint64(v) : 0;
}

static bool jhas(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) && v;
}

static const char *jget_str(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !v)
		return NULL;
	return json_object_get_string(v);
}

static struct json_object *jget(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static const char *fmt_size(uint64_t v, char *buf, size_t sz)
{
	return size_format(v, buf, sz);
}

static void print_memory(struct json_object *vm);
static void print_migration(struct json_object *vm);

static void print_status_vm(struct json_object *vm)
{
	struct json_object *q = jget(vm, "qmp"), *s = jget(vm, "session");
	struct json_object *g = jget(vm, "guest"), *feat;
	char b1[32], b2[32], qb[200];
	const char *note;

	printf("%s\n", jget_str(vm, "name"));
	if (q && json_object_get_boolean(jget(q, "connected")))
		printf("  qemu:            pid %" PRIu64 "\n", jget_u64(q, "pid"));
	else
		printf("  qemu:            not attached (%s)\n",
		       q && jget_str(q, "error") ? jget_str(q, "error") : "?");
	note = jget_str(vm, "backend_note");
	if (strcmp(jget_str(vm, "backend") ?: "", "none") == 0)
		printf("  backend:         none, reclaim impossible (%s)\n", note ?: "");
	else if (note)
		printf("  backend:         %s (%s)\n", jget_str(vm, "backend"), note);
	else
		printf("  backend:         %s\n", jget_str(vm, "backend"));
	printf("  ram:             %s\n", fmt_size(jget_u64(vm, "ram_bytes"), b1, sizeof(b1)));
	if (jhas(vm, "rss_anon_bytes"))
		printf("  qemu RssAnon:    %s\n",
		       fmt_size(jget_u64(vm, "rss_anon_bytes"), b1, sizeof(b1)));
	if (jhas(vm, "backing_bytes"))
		printf("  host backing:    %s\n",
		       fmt_size(jget_u64(vm, "backing_bytes"), b1, sizeof(b1)));
	else
		printf("  host backing:    n/a\n");
	if (jhas(vm, "huge_mapped_bytes"))
		printf("  huge-mapped:     %s\n",
		       fmt_size(jget_u64(vm, "huge_mapped_bytes"), b1, sizeof(b1)));
	printf("  shmem_enabled:   %s\n", jget_str(vm, "shmem_enabled") ?: "unknown");
	if (json_object_get_boolean(jget(vm, "reback_huge")))
		printf("  re-back huge:    yes (2 MiB folios)\n");
	else
		printf("  re-back huge:    no (%s)\n", jget_str(vm, "reback_note") ?: "not attached");
	printf("  guest session:   %s", jget_str(s, "state"));
	if (strcmp(jget_str(s, "state") ?: "", "ready") == 0) {
		printf(", protocol v%" PRIu64 ", features:", jget_u64(s, "version"));
		feat = jget(s, "features");
		if (!feat || json_object_array_length(feat) == 0)
			printf(" none");
		for (size_t i = 0; feat && i < json_object_array_length(feat); i++)
			printf(" %s", json_object_get_string(json_object_array_get_idx(feat, i)));
	}
	printf(" (connects %" PRIu64 ", drops %" PRIu64 ")\n", jget_u64(s, "connects"),
	       jget_u64(s, "drops"));
	if (jget_str(s, "last_drop"))
		printf("  last drop:       %s\n",
		       log_quote_str(jget_str(s, "last_drop"), qb, sizeof(qb)));
	if (g) {
		if (jhas(g, "scan_age_ms")) {
			printf("  guest free:      %s (%s in whole 2 MiB blocks)\n",
			       fmt_size(jget_u64(g, "free_bytes"), b1, sizeof(b1)),
			       fmt_size(jget_u64(g, "free_block_bytes"), b2, sizeof(b2)));
			printf("  unmovable:       %" PRIu64 " blocks\n",
			       jget_u64(g, "unmovable_blocks"));
		}
		printf("  captured:        %s\n",
		       fmt_size(jget_u64(g, "captured_bytes"), b1, sizeof(b1)));
		if (jhas(g, "scan_age_ms"))
			printf("  last scan:       %.1f s ago\n",
			       (double)jget_u64(g, "scan_age_ms") / 1000.0);
	} else {
		printf("  guest report:    none yet (run: vmdefragctl scan %s)\n",
		       jget_str(vm, "name"));
	}
	print_memory(vm);
	print_migration(vm);
}

/* One line, only when a migration was seen: which path, what it cost. */
static void print_migration(struct json_object *vm)
{
	struct json_object *m = jget(vm, "migration"), *c;
	const char *state = m ? jget_str(m, "state") : NULL;
	char b1[32], b2[32], b3[32];

	if (!state || (strcmp(state, "none") == 0 && !jget_str(m, "last_outcome")))
		return;
	if (strcmp(state, "outgoing") == 0)
		printf("  migration:       outgoing (QEMU: %s), no operation starts "
		       "until it ends\n", jget_str(m, "qemu_status") ?: "?");
	else if (strcmp(state, "migrated-away") == 0)
		printf("  migration:       migrated away (the guest runs on the "
		       "destination)\n");
	else if (strcmp(state, "incoming") == 0)
		printf("  migration:       incoming migration (QEMU: %s), the guest "
		       "session waits for it\n", jget_str(m, "qemu_status") ?: "waiting");
	else if (strcmp(state, "none") == 0)
		printf("  migration:       none running (last: %s)\n",
		       jget_str(m, "last_outcome"));
	if (strcmp(state, "migrated-in") != 0)
		return;
	c = jget(m, "collapse");
	printf("  migration:       migrated in (stock QEMU path): ");
	if (json_object_get_boolean(jget(m, "reconciled")))
		printf("reconciled %s captured, %s punched", fmt_size(
		       jget_u64(m, "reconcile_listed_bytes"), b1, sizeof(b1)),
		       fmt_size(jget_u64(m, "reconcile_punched_bytes"), b2, sizeof(b2)));
	else
		printf("not reconciled yet");
	if (c)
		printf("; collapse %s: %s of %s to 2 MiB pages in %.1f ms cpu "
		       "(%" PRIu64 "%% budget)%s%s\n", jget_str(c, "state"),
		       fmt_size(jget_u64(c, "collapsed_bytes"), b1, sizeof(b1)),
		       fmt_size(jget_u64(c, "candidate_bytes"), b2, sizeof(b2)),
		       (double)jget_u64(c, "cpu_ns") / 1e6, jget_u64(c, "cpu_percent"),
		       jget_u64(c, "folio_only_bytes") ? ", folios only (QEMU maps "
		       "it 4 KiB-aligned): " : "",
		       jget_u64(c, "folio_only_bytes") ? fmt_size(jget_u64(c,
		       "folio_only_bytes"), b3, sizeof(b3)) : "");
	else
		printf("\n");
	if (c && jget_str(c, "note"))
		printf("  collapse note:   %s\n", jget_str(c, "note"));
}

static void print_memory(struct json_object *vm)
{
	struct json_object *m = jget(vm, "memory"), *op = jget(vm, "operation");
	char b1[32], b2[32], b3[32];

	if (m && strcmp(jget_str(vm, "backend") ?: "", "hint") == 0) {
		printf("  hint returned:   %s (QEMU RssAnon drops of hint reclaims, "
		       "measured)\n",
		       fmt_size(jget_u64(m, "hint_returned_bytes"), b1, sizeof(b1)));
	} else if (m) {
		printf("  reclaimed:       %s (captured %s, pending ACK %s)%s\n",
		       fmt_size(jget_u64(m, "reclaimed_bytes"), b1, sizeof(b1)),
		       fmt_size(jget_u64(m, "captured_bytes"), b2, sizeof(b2)),
		       fmt_size(jget_u64(m, "pending_bytes"), b3, sizeof(b3)),
		       json_object_get_boolean(jget(m, "reconciled")) ? "" :
		       " [not reconciled yet]");
		printf("  returned:        %s (guest took back %s itself)\n",
		       fmt_size(jget_u64(m, "returned_bytes"), b1, sizeof(b1)),
		       fmt_size(jget_u64(m, "guest_released_bytes"), b2, sizeof(b2)));
	}
	if (op) {
		printf("  last operation:  %s #%" PRIu64 " %s, %s of %s",
		       jget_str(op, "kind"), jget_u64(op, "id"), jget_str(op, "state"),
		       fmt_size(jget_u64(op, "done_bytes"), b1, sizeof(b1)),
		       fmt_size(jget_u64(op, "target_bytes"), b2, sizeof(b2)));
		if (jget_str(op, "reason"))
			printf(": %s", jget_str(op, "reason"));
		printf("\n");
		if (jget_str(op, "reback_note"))
			printf("  re-back:         %s (%s)\n", jget_str(op, "reback"),
			       jget_str(op, "reback_note"));
	}
}

static void print_hist(struct json_object *scan, const char *key, const char *label,
		       const char *title)
{
	struct json_object *a = jget(scan, key);
	uint64_t total = 0;

	printf("%s\n", title);
	for (size_t i = 0; a && i < json_object_array_length(a); i++)
		total += jget_u64(json_object_array_get_idx(a, i), "blocks");
	for (size_t i = 0; a && i < json_object_array_length(a); i++) {
		struct json_object *e = json_object_array_get_idx(a, i);
		uint64_t n = jget_u64(e, "blocks");
		char lab[48];

		if (label)
			snprintf(lab, sizeof(lab), "%s", jget_str(e, label));
		else if (i == 0)
			snprintf(lab, sizeof(lab), "%s%" PRIu64 " pages",
				 jget_u64(e, "max_pages") ? "<= " : "", jget_u64(e, "max_pages"));
		else
			snprintf(lab, sizeof(lab), "%" PRIu64 "-%" PRIu64 " pages",
				 jget_u64(json_object_array_get_idx(a, i - 1), "max_pages") + 1,
				 jget_u64(e, "max_pages"));
		printf("  %-16s %8" PRIu64 " blocks %6.1f%%\n", lab, n,
		       total ? 100.0 * (double)n / (double)total : 0.0);
	}
}

static void print_scan(struct json_object *scan)
{
	struct json_object *slabs = jget(scan, "slabs");
	char b1[32], b2[32];

	printf("%s: %s scanned, %s free (%s in whole 2 MiB blocks)\n",
	       jget_str(scan, "vm"),
	       fmt_size(jget_u64(scan, "total_bytes"), b1, sizeof(b1)),
	       fmt_size(jget_u64(scan, "free_bytes"), b2, sizeof(b2)),
	       fmt_size(jget_u64(scan, "free_block_bytes"), (char[32]){0}, 32));
	printf("  capturable %s, captured %s, available %s, scan took %.1f ms\n",
	       fmt_size(jget_u64(scan, "capturable_bytes"), b1, sizeof(b1)),
	       fmt_size(jget_u64(scan, "captured_bytes"), b2, sizeof(b2)),
	       fmt_size(jget_u64(scan, "available_bytes"), (char[32]){0}, 32),
	       (double)jget_u64(scan, "scan_ns") / 1e6);
	print_hist(scan, "classes", "class", "block classes:");
	print_hist(scan, "cost", NULL, "vacate cost of movable blocks (pages to migrate):");
	print_hist(scan, "unmovable", "cause", "unmovable blocks by cause:");
	printf("top slab caches in unmovable blocks:\n");
	if (!slabs || json_object_array_length(slabs) == 0)
		printf("  (none)\n");
	for (size_t i = 0; slabs && i < json_object_array_length(slabs) && i < 10; i++) {
		struct json_object *e = json_object_array_get_idx(slabs, i);
		char q[80];

		printf("  %-34s %8" PRIu64 " pages %6" PRIu64 " blocks\n",
		       log_quote_str(jget_str(e, "name"), q, sizeof(q)),
		       jget_u64(e, "pages"), jget_u64(e, "blocks"));
	}
}

/* Sends one request, parses the answer: 0 and *ret_resp, or an exit code
 * (the error already printed). */
static int ctl_call(const char *path, const struct ctl_request *req,
		    struct json_object **ret_resp, char **ret_text)
{
	struct json_object *resp, *v;
	char *line, *answer = NULL;
	int r;

	if (ctl_proto_format_request(req, &line) < 0)
		return die(CTL_EXIT_FAILED, "out of memory");
	r = ctl_transact(path, line, &answer);
	free(line);
	if (r)
		return r;
	resp = json_tokener_parse(answer);
	if (!resp || !json_object_is_type(resp, json_type_object) ||
	    !json_object_object_get_ex(resp, "ok", &v)) {
		json_object_put(resp);
		free(answer);
		return die(CTL_EXIT_FAILED, "vmdefragd sent an answer that is not "
			   "a response object");
	}
	if (!json_object_get_boolean(v)) {
		r = die(ctl_proto_exit_code(jget_str(resp, "error")), "%s",
			jget_str(resp, "message") ?: "failed");
		json_object_put(resp);
		free(answer);
		return r;
	}
	*ret_resp = resp;
	if (ret_text)
		*ret_text = answer;
	else
		free(answer);
	return 0;
}

static void op_line(struct json_object *op, char *buf, size_t sz)
{
	char b1[32], b2[32], b3[32];
	int n;

	n = snprintf(buf, sz, "%s #%" PRIu64 " on %s: %s of %s (%s, %.1f s)",
		     jget_str(op, "kind"), jget_u64(op, "id"), jget_str(op, "vm"),
		     fmt_size(jget_u64(op, "done_bytes"), b1, sizeof(b1)),
		     fmt_size(jget_u64(op, "target_bytes"), b2, sizeof(b2)),
		     jget_str(op, "state"), (double)jget_u64(op, "elapsed_ms") / 1000.0);
	/* shared: say so when the net drop is not the daemon's punches alone */
	if (jget(op, "punched_bytes") && n > 0 && (size_t)n < sz &&
	    jget_u64(op, "punched_bytes") + (2u << 20) < jget_u64(op, "done_bytes"))
		snprintf(buf + n, sz - n, "; vmdefrag punched %s, the rest of the "
			 "backing's drop came from the guest meanwhile (free page "
			 "reporting)",
			 fmt_size(jget_u64(op, "punched_bytes"), b3, sizeof(b3)));
	/* hint: what came back is measured; what the guest did is beside it */
	if (jget_str(op, "backend") && n > 0 && (size_t)n < sz)
		snprintf(buf + n, sz - n, "; guest compacted %s, returned = QEMU "
			 "RssAnon drop",
			 fmt_size(jget_u64(op, "compacted_bytes"), b3, sizeof(b3)));
}

/* --wait: poll the operation until it ends; the exit status. */
static int ctl_wait_op(const char *path, const char *vm, uint32_t id, bool json)
{
	struct ctl_request req = { .cmd = CTL_CMD_OP, .id = id };
	bool tty = isatty(STDOUT_FILENO) && !json;
	struct json_object *resp, *op;
	char line[256], *text;
	int r;

	snprintf(req.vm, sizeof(req.vm), "%s", vm);
	for (;;) {
		struct timespec ts = { 0, CTL_POLL_MS * 1000000L };
		const char *state;

		r = ctl_call(path, &req, &resp, &text);
		if (r) {
			if (tty)
				printf("\n");
			return r;
		}
		op = jget(resp, "operation");
		state = jget_str(op, "state") ?: "?";
		op_line(op, line, sizeof(line));
		if (strcmp(state, "running") != 0) {
			const char *note = jget_str(op, "reback_note");

			if (json)
				printf("%s\n", text);
			else
				printf("%s%s\n", tty ? "\r\033[K" : "", line);
			if (!json && note)
				printf("warning: re-backed as '%s': %s\n",
				       jget_str(op, "reback"), note);
			r = strcmp(state, "done") == 0 ? CTL_EXIT_OK :
			    die(CTL_EXIT_FAILED, "%s %s: %s", jget_str(op, "kind"),
				state, jget_str(op, "reason") ?: "no reason given");
			json_object_put(resp);
			free(text);
			return r;
		}
		if (tty) {
			printf("\r\033[K%s", line);
			fflush(stdout);
		}
		json_object_put(resp);
		free(text);
		nanosleep(&ts, NULL);
	}
}

/*
 * notify DOMAIN EVENT (argv[0] is "notify"): one request under a short
 * deadline; prints nothing when the daemon took it.
 */
static int ctl_notify(const char *path, int argc, char **argv)
{
	struct ctl_request req = { .cmd = CTL_CMD_NOTIFY };
	struct json_object *resp;
	int r;

	for (int i = 1; i < argc; i++)
		if (argv[i][0] == '-' && argv[i][1])
			return die(CTL_EXIT_USAGE, "unknown option '%s' for notify "
				   "(see --help)", argv[i]);
	if (argc != 3)
		return die(CTL_EXIT_USAGE, "notify takes a domain and an event "
			   "(e.g. notify vm1 started)");
	if (!argv[1][0] || strlen(argv[1]) >= sizeof(req.vm))
		return die(CTL_EXIT_USAGE, "bad domain name '%s'", argv[1]);
	if (ctl_proto_notify_from_name(argv[2], &req.event) < 0)
		return die(CTL_EXIT_USAGE, "unknown event '%s' (prepare, started, "
			   "stopped or release)", argv[2]);
	strcpy(req.vm, argv[1]);
	ctl_timeout_ms = CTL_NOTIFY_TIMEOUT_MS;
	r = ctl_call(path, &req, &resp, NULL);
	if (r)
		return r;
	json_object_put(resp);
	return 0;
}

/* Reads a whole file (or stdin for "-"), at most DOMAIN_XML_MAX + 1 bytes. */
static int ctl_read_xml_file(const char *path, char **ret_buf, size_t *ret_len)
{
	size_t cap = (size_t)DOMAIN_XML_MAX + 2, len = 0;
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "re");
	char *buf;
	size_t n;

	if (!f)
		return die(CTL_EXIT_USAGE, "cannot open '%s': %s", path, strerror(errno));
	buf = malloc(cap);
	if (!buf) {
		if (f != stdin)
			fclose(f);
		return die(CTL_EXIT_FAILED, "out of memory");
	}
	while (len < cap - 1 && (n = fread(buf + len, 1, cap - 1 - len, f)) > 0)
		len += n;
	if (ferror(f)) {
		free(buf);
		if (f != stdin)
			fclose(f);
		return die(CTL_EXIT_USAGE, "cannot read '%s'", path);
	}
	if (f != stdin)
		fclose(f);
	buf[len] = '\0';
	*ret_buf = buf;
	*ret_len = len;
	return 0;
}

static void ctl_virt_quiet(void *opaque, virErrorPtr err)
{
}

/* libxml2's default handler prints to stderr (libvirt's test driver parses
 * in-process); the libvirt error we report says it in one line. */
static void ctl_xml_quiet(void *ctx, const char *msg, ...)
{
}

/*
 * The XML of libvirt domain `name` (live if it runs, else its definition),
 * through a read-only connection; *ret_xml is malloc'ed.  Returns 0 or an
 * exit status (the error printed).
 */
static int ctl_libvirt_xml(const char *uri, const char *name, char **ret_xml)
{
	virConnectPtr conn;
	virDomainPtr dom;
	virErrorPtr e;
	char *xml;
	int code;

	virSetErrorFunc(NULL, ctl_virt_quiet);
	xmlSetGenericErrorFunc(NULL, ctl_xml_quiet);
	conn = virConnectOpenReadOnly(uri);
	if (!conn) {
		e = virGetLastError();
		code = e && (e->code == VIR_ERR_AUTH_FAILED ||
			     e->code == VIR_ERR_AUTH_CANCELLED ||
			     e->code == VIR_ERR_OPERATION_DENIED ||
			     (e->code == VIR_ERR_SYSTEM_ERROR &&
			      (e->int1 == EACCES || e->int1 == EPERM))) ?
		       CTL_EXIT_PERMISSION : CTL_EXIT_NO_DAEMON;
		return die(code, "cannot reach libvirt%s%s: %s", uri ? " at " : "",
			   uri ?: "", virt_conn_last_error());
	}
	dom = virDomainLookupByName(conn, name);
	if (!dom) {
		e = virGetLastError();
		if (e && e->code == VIR_ERR_NO_DOMAIN)
			code = die(CTL_EXIT_UNKNOWN_VM, "libvirt has no domain named '%s'",
				   name);
		else
			code = die(CTL_EXIT_FAILED, "cannot look up domain '%s': %s",
				   name, virt_conn_last_error());
		virConnectClose(conn);
		return code;
	}
	xml = virDomainGetXMLDesc(dom, 0);
	if (!xml)
		code = die(CTL_EXIT_FAILED, "cannot read the XML of domain '%s': %s",
			   name, virt_conn_last_error());
	else
		code = 0;
	virDomainFree(dom);
	virConnectClose(conn);
	if (code == 0)
		*ret_xml = xml;
	return code;
}

static const char *ctl_blocks_name(enum domain_xml_blocks b, bool json)
{
	switch (b) {
	case DOMAIN_XML_BLOCKS_ALL:
		return json ? "all" : "needed for anything";
	case DOMAIN_XML_BLOCKS_SHARED:
		return json ? "shared" : "needed for the shared backend";
	default:
		return json ? "hint" : "needed for the hint backend";
	}
}

/* The name as typed when it is plain, else quoted. */
static const char *ctl_plain_name(const char *name, char *buf, size_t sz)
{
	if (name[0] && strspn(name, "abcdefghijklmnopqrstuvwxyz"
			      "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:+-") ==
	    strlen(name) && strlen(name) < sz) {
		strcpy(buf, name);
		return buf;
	}
	return log_quote_str(name, buf, sz);
}

/* Prints what the domain in xml lacks; the exit status (0: nothing). */
static int ctl_check_report(const char *label, const char *xml, size_t len,
			    bool from_file, bool json)
{
	struct domain_xml_lack lacks[DOMAIN_XML_LACKS_MAX];
	struct domain_xml d;
	char err[256], q[300];
	size_t n;

	if (domain_xml_parse(xml, len, &d, err, sizeof(err)) < 0)
		return die(from_file ? CTL_EXIT_USAGE : CTL_EXIT_FAILED, "%s: %s",
			   label, err);
	n = domain_xml_lacks(&d, lacks, DOMAIN_XML_LACKS_MAX);
	if (json) {
		struct json_object *o = json_object_new_object();
		struct json_object *a = json_object_new_array();

		json_object_object_add(o, "domain", json_object_new_string(d.name));
		json_object_object_add(o, "ok", json_object_new_boolean(n == 0));
		json_object_object_add(o, "verdict",
				       json_object_new_string(domain_xml_verdict(&d)));
		json_object_object_add(o, "channel_path",
				       json_object_new_string(d.channel_path));
		for (size_t i = 0; i < n; i++) {
			struct json_object *l = json_object_new_object();

			json_object_object_add(l, "blocks", json_object_new_string(
				ctl_blocks_name(lacks[i].blocks, true)));
			json_object_object_add(l, "text",
					       json_object_new_string(lacks[i].text));
			json_object_array_add(a, l);
		}
		json_object_object_add(o, "lacks", a);
		printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
		json_object_put(o);
		return n ? CTL_EXIT_FAILED : CTL_EXIT_OK;
	}
	ctl_plain_name(d.name, q, sizeof(q));
	if (n == 0) {
		printf("domain %s has everything vmdefrag needs\n", q);
		return CTL_EXIT_OK;
	}
	printf("domain %s lacks what vmdefrag needs:\n", q);
	for (size_t i = 0; i < n; i++)
		printf("  %s: %s\n", ctl_blocks_name(lacks[i].blocks, false),
		       lacks[i].text);
	printf("%s\n", domain_xml_verdict(&d));
	return CTL_EXIT_FAILED;
}

/* check-domain NAME [--connect URI] | check-domain --xml FILE */
static int ctl_check_domain(int argc, char **argv, bool json)
{
	const char *name = NULL, *uri = NULL, *file = NULL;
	char *xml = NULL;
	size_t len = 0;
	int r;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--connect") == 0 || strcmp(argv[i], "--xml") == 0) {
			if (i + 1 >= argc)
				return die(CTL_EXIT_USAGE, "option '%s' needs an argument "
					   "(see --help)", argv[i]);
			if (argv[i][2] == 'c')
				uri = argv[++i];
			else
				file = argv[++i];
		} else if (strcmp(argv[i], "--json") == 0) {
			json = true;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			return die(CTL_EXIT_USAGE, "unknown option '%s' for check-domain "
				   "(see --help)", argv[i]);
		} else if (!name) {
			name = argv[i];
		} else {
			return die(CTL_EXIT_USAGE, "check-domain takes one domain name");
		}
	}
	if (file && (name || uri))
		return die(CTL_EXIT_USAGE, "check-domain takes a domain NAME or "
			   "--xml FILE, not both");
	if (!file && (!name || !name[0]))
		return die(CTL_EXIT_USAGE, "check-domain needs a domain name or "
			   "--xml FILE (see --help)");
	if (file) {
		r = ctl_read_xml_file(file, &xml, &len);
		if (r)
			return r;
		r = ctl_check_report(file, xml, len, true, json);
	} else {
		r = ctl_libvirt_xml(uri, name, &xml);
		if (r)
			return r;
		r = ctl_check_report(name, xml, strlen(xml), false, json);
	}
	free(xml);
	return r;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	const char *socket_path = CTL_DEFAULT_SOCKET;
	struct ctl_request req = { 0 };
	struct json_object *resp;
	char *answer = NULL;
	bool json = false, wait = false;
	int c, r;

	opterr = 0;
	while ((c = getopt_long(argc, argv, "+:", opts, NULL)) != -1) {
		switch (c) {
		case 's': socket_path = optarg; break;
		case 'j': json = true; break;
		case 'h': usage(stdout); return 0;
		case ':':
			return die(CTL_EXIT_USAGE, "option '%s' needs an argument "
				   "(see --help)", argv[optind - 1]);
		default:
			return die(CTL_EXIT_USAGE, "unknown option '%s' (see --help)",
				   argv[optind - 1]);
		}
	}
	if (optind < argc && strcmp(argv[optind], "notify") == 0)
		return ctl_notify(socket_path, argc - optind, argv + optind);
	if (optind < argc && strcmp(argv[optind], "check-domain") == 0)
		return ctl_check_domain(argc - optind, argv + optind, json);
	/* the command, its operand, and --json anywhere after it */
	{
		const char *pos[3];
		int npos = 0;

		for (int i = optind; i < argc; i++) {
			if (strcmp(argv[i], "--json") == 0)
				json = true;
			else if (strcmp(argv[i], "--wait") == 0)
				wait = true;
			else if (argv[i][0] == '-' && argv[i][1])
				return die(CTL_EXIT_USAGE, "unknown option '%s' (see --help)",
					   argv[i]);
			else if (npos < 3)
				pos[npos++] = argv[i];
			else
				return die(CTL_EXIT_USAGE, "too many arguments (see --help)");
		}
		if (npos == 0)
			return die(CTL_EXIT_USAGE, "no command given (status or scan; "
				   "see --help)");
		if (strcmp(pos[0], "status") == 0) {
			req.cmd = CTL_CMD_STATUS;
			if (npos > 2)
				return die(CTL_EXIT_USAGE, "status takes at most one VM");
		} else if (strcmp(pos[0], "scan") == 0) {
			req.cmd = CTL_CMD_SCAN;
			if (npos != 2)
				return die(CTL_EXIT_USAGE, "scan takes exactly one VM");
		} else if (strcmp(pos[0], "reclaim") == 0 ||
			   strcmp(pos[0], "return") == 0) {
			req.cmd = pos[0][2] == 'c' ? CTL_CMD_RECLAIM : CTL_CMD_RETURN;
			if (npos != 3)
				return die(CTL_EXIT_USAGE, "%s takes a VM and a SIZE "
					   "(e.g. %s vm1 512M)", pos[0], pos[0]);
			r = size_parse_blocks(pos[2], &req.bytes);
			if (r == -EDOM)
				return die(CTL_EXIT_USAGE, "size '%s' is not a multiple "
					   "of 2 MiB", pos[2]);
			if (r < 0 || req.bytes == 0)
				return die(CTL_EXIT_USAGE, "bad size '%s' (a number with "
					   "an optional K, M or G suffix)", pos[2]);
		} else {
			return die(CTL_EXIT_USAGE, "unknown command '%s' (status, "
				   "scan, reclaim, return, notify or check-domain; see --help)", pos[0]);
		}
		if (wait && req.cmd != CTL_CMD_RECLAIM && req.cmd != CTL_CMD_RETURN)
			return die(CTL_EXIT_USAGE, "--wait goes with reclaim or return");
		if (npos >= 2) {
			if (!pos[1][0] || strlen(pos[1]) >= sizeof(req.vm))
				return die(CTL_EXIT_USAGE, "bad VM name '%s'", pos[1]);
			strcpy(req.vm, pos[1]);
		}
	}
	r = ctl_call(socket_path, &req, &resp, &answer);
	if (r)
		return r;
	if (req.cmd == CTL_CMD_RECLAIM || req.cmd == CTL_CMD_RETURN) {
		struct json_object *op = jget(resp, "operation");
		uint32_t id = (uint32_t)jget_u64(op, "id");
		char b[32];

		if (!wait) {
			if (json)
				printf("%s\n", answer);
			else
				printf("%s #%u started on %s: %s (follow with: "
				       "vmdefragctl status %s)\n", pos0_name(req.cmd), id,
				       req.vm, fmt_size(req.bytes, b, sizeof(b)), req.vm);
			r = 0;
		} else {
			r = ctl_wait_op(socket_path, req.vm, id, json);
		}
		json_object_put(resp);
		free(answer);
		return r;
	}
	if (json) {
		printf("%s\n", answer);
	} else if (req.cmd == CTL_CMD_STATUS) {
		struct json_object *vms = jget(resp, "vms");

		for (size_t i = 0; vms && i < json_object_array_length(vms); i++) {
			if (i)
				printf("\n");
			print_status_vm(json_object_array_get_idx(vms, i));
		}
	} else {
		print_scan(jget(resp, "scan"));
	}
	json_object_put(resp);
	free(answer);
	return 0;
}
