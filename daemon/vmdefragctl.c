// SPDX-License-Identifier: GPL-2.0
/*
 * vmdefragctl.c - command line client of vmdefragd's control socket: the
 * program's entry point, its arguments and its commands' flow.
 *
 * One request, one response (ctl_proto.h), printed human-readable
 * (ctl_render.c) or, with --json, as the daemon's JSON object.  Every
 * failure is one line on stderr and a distinct exit status (ctl_exit.h,
 * enum ctl_exit, listed in --help), so scripts can tell "daemon not
 * running" from "no such VM" from "guest not ready".  Strings that came
 * from a guest (slab cache names) are quoted with log_quote() before they
 * reach the terminal.
 *
 * reclaim / return start an operation in the daemon and print its id; with
 * --wait the client polls the operation ("op") every CTL_POLL_MS, shows a
 * progress line on a terminal (rewritten with \r), and exits 0 only if
 * the whole size was moved, else 1 with the daemon's reason.
 *
 * Two commands serve the libvirt integration.  notify is what the libvirt
 * qemu hook runs: one request with a short deadline (CTL_NOTIFY_TIMEOUT_MS
 * for connect and answer), so a wedged daemon cannot hold libvirtd up.
 * check-domain never talks to vmdefragd (ctl_check_domain.c).
 *
 * The layers: ctl_client.c is the transport (socket, timeouts, the peer's
 * errors), ctl_render.c the human output, ctl_check_domain.c the libvirt
 * command; this file parses the command line and drives them.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cleanup.h"
#include "ctl_check_domain.h"
#include "ctl_client.h"
#include "ctl_exit.h"
#include "ctl_proto.h"
#include "ctl_render.h"
#include "size.h"

#define CTL_POLL_MS	250	/* --wait: progress polling interval */
#define CTL_NOTIFY_TIMEOUT_MS	2000	/* notify: connect + answer */

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
"                   [--evict=movable|evict-slab|evict]\n"
"       vmdefragctl [--socket PATH] return VM SIZE [--wait] [--json]\n"
"       vmdefragctl [--socket PATH] notify DOMAIN EVENT\n"
"       vmdefragctl check-domain NAME [--connect URI]\n"
"       vmdefragctl check-domain --xml FILE\n"
"\n"
"  status [VM]   per VM: backend, RAM, host backing and huge-page-mapped\n"
"                bytes, host shmem THP policy, guest session, and the\n"
"                guest's last reported free/captured/unmovable memory\n"
"  scan VM       ask the guest for its 2 MiB block picture: block classes,\n"
"                vacate cost, unmovable causes, top slab caches, and the\n"
"                census of slab eviction (cost of each class)\n"
"  reclaim VM SIZE  take SIZE of the VM's RAM backing back from the guest:\n"
"                the guest empties 2 MiB blocks its backing holds, the\n"
"                daemon punches them (SIZE: K/M/G suffix, 2 MiB multiple);\n"
"                hint backend (anonymous RAM, free page reporting): the\n"
"                guest compacts blocks, what came back is the measured\n"
"                fall of QEMU's RssAnon.  --evict: what the guest may drop\n"
"                to empty blocks that only reclaimable slab pins: movable\n"
"                (nothing), evict-slab (unused dentries and inodes without\n"
"                page cache), evict (also clean page cache); default: the\n"
"                VM's \"evict\" config key, else movable\n"
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

/* --wait: poll the operation until it ends; the exit status. */
static int ctl_wait_op(const char *path, const char *vm, uint32_t id, bool json)
{
	struct ctl_request req = { .cmd = CTL_CMD_OP, .id = id };
	bool tty = isatty(STDOUT_FILENO) && !json;
	struct json_object *op;
	char line[256];
	int r;

	snprintf(req.vm, sizeof(req.vm), "%s", vm);
	for (;;) {
		_cleanup_(ctl_client_json_putp) struct json_object *resp = NULL;
		_cleanup_free_ char *text = NULL;
		struct timespec ts = { 0, CTL_POLL_MS * 1000000L };
		const char *state;

		r = ctl_client_call(path, &req, &resp, &text);
		if (r) {
			if (tty)
				printf("\n");
			return r;
		}
		op = ctl_client_get(resp, "operation");
		state = ctl_client_str(op, "state") ?: "?";
		ctl_render_op_line(op, line, sizeof(line));
		if (strcmp(state, "running") != 0) {
			const char *note = ctl_client_str(op, "reback_note");

			if (json)
				printf("%s\n", text);
			else
				printf("%s%s\n", tty ? "\r\033[K" : "", line);
			if (!json && note)
				printf("warning: re-backed as '%s': %s\n",
				       ctl_client_str(op, "reback"), note);
			if (strcmp(state, "done") == 0)
				return CTL_EXIT_OK;
			return ctl_exit_fail(CTL_EXIT_FAILED, "%s %s: %s",
					     ctl_client_str(op, "kind"), state,
					     ctl_client_str(op, "reason") ?:
					     "no reason given");
		}
		if (tty) {
			printf("\r\033[K%s", line);
			fflush(stdout);
		}
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
			return ctl_exit_fail(CTL_EXIT_USAGE, "unknown option '%s' "
					     "for notify (see --help)", argv[i]);
	if (argc != 3)
		return ctl_exit_fail(CTL_EXIT_USAGE, "notify takes a domain and an event "
				     "(e.g. notify vm1 started)");
	if (!argv[1][0] || strlen(argv[1]) >= sizeof(req.vm))
		return ctl_exit_fail(CTL_EXIT_USAGE, "bad domain name '%s'", argv[1]);
	if (ctl_proto_notify_from_name(argv[2], &req.event) < 0)
		return ctl_exit_fail(CTL_EXIT_USAGE, "unknown event '%s' (prepare, "
				     "started, stopped or release)", argv[2]);
	strcpy(req.vm, argv[1]);
	ctl_client_set_timeout_ms(CTL_NOTIFY_TIMEOUT_MS);
	r = ctl_client_call(path, &req, &resp, NULL);
	if (r)
		return r;
	json_object_put(resp);
	return 0;
}

/*
 * The daemon commands (status, scan, reclaim, return): the command, its
 * operands, and --json / --wait anywhere after it, into *ret_req.  0 or
 * the exit status (the error printed).
 */
static int ctl_parse_command(int argc, char **argv, struct ctl_request *ret_req,
			     bool *json, bool *wait)
{
	struct ctl_request req = { .evict = -1 };
	const char *pos[3];
	int npos = 0, r;

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			*json = true;
		else if (strncmp(argv[i], "--evict=", 8) == 0 &&
			 (req.evict = proto_evict_from_name(argv[i] + 8)) < 0)
			return ctl_exit_fail(CTL_EXIT_USAGE, "bad --evict '%s' (movable, "
					     "evict-slab or evict)", argv[i] + 8);
		else if (strncmp(argv[i], "--evict=", 8) == 0)
			continue;
		else if (strcmp(argv[i], "--wait") == 0)
			*wait = true;
		else if (argv[i][0] == '-' && argv[i][1])
			return ctl_exit_fail(CTL_EXIT_USAGE, "unknown option '%s' "
					     "(see --help)", argv[i]);
		else if (npos < 3)
			pos[npos++] = argv[i];
		else
			return ctl_exit_fail(CTL_EXIT_USAGE, "too many arguments "
					     "(see --help)");
	}
	if (npos == 0)
		return ctl_exit_fail(CTL_EXIT_USAGE, "no command given (status or "
				     "scan; see --help)");
	if (strcmp(pos[0], "status") == 0) {
		req.cmd = CTL_CMD_STATUS;
		if (npos > 2)
			return ctl_exit_fail(CTL_EXIT_USAGE, "status takes at most "
					     "one VM");
	} else if (strcmp(pos[0], "scan") == 0) {
		req.cmd = CTL_CMD_SCAN;
		if (npos != 2)
			return ctl_exit_fail(CTL_EXIT_USAGE, "scan takes exactly one VM");
	} else if (strcmp(pos[0], "reclaim") == 0 || strcmp(pos[0], "return") == 0) {
		req.cmd = pos[0][2] == 'c' ? CTL_CMD_RECLAIM : CTL_CMD_RETURN;
		if (npos != 3)
			return ctl_exit_fail(CTL_EXIT_USAGE, "%s takes a VM and a SIZE "
					     "(e.g. %s vm1 512M)", pos[0], pos[0]);
		r = size_parse_blocks(pos[2], &req.bytes);
		if (r == -EDOM)
			return ctl_exit_fail(CTL_EXIT_USAGE, "size '%s' is not a "
					     "multiple of 2 MiB", pos[2]);
		if (r < 0 || req.bytes == 0)
			return ctl_exit_fail(CTL_EXIT_USAGE, "bad size '%s' (a number "
					     "with an optional K, M or G suffix)",
					     pos[2]);
	} else {
		return ctl_exit_fail(CTL_EXIT_USAGE, "unknown command '%s' (status, "
				     "scan, reclaim, return, notify or "
				     "check-domain; see --help)", pos[0]);
	}
	if (*wait && req.cmd != CTL_CMD_RECLAIM && req.cmd != CTL_CMD_RETURN)
		return ctl_exit_fail(CTL_EXIT_USAGE, "--wait goes with reclaim or "
				     "return");
	if (req.evict >= 0 && req.cmd != CTL_CMD_RECLAIM)
		return ctl_exit_fail(CTL_EXIT_USAGE, "--evict goes with reclaim");
	if (npos >= 2) {
		if (!pos[1][0] || strlen(pos[1]) >= sizeof(req.vm))
			return ctl_exit_fail(CTL_EXIT_USAGE, "bad VM name '%s'", pos[1]);
		strcpy(req.vm, pos[1]);
	}
	*ret_req = req;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	_cleanup_(ctl_client_json_putp) struct json_object *resp = NULL;
	_cleanup_free_ char *answer = NULL;
	const char *socket_path = CTL_DEFAULT_SOCKET;
	struct ctl_request req = { 0 };
	bool json = false, wait = false;
	int c, r;

	opterr = 0;
	while ((c = getopt_long(argc, argv, "+:", opts, NULL)) != -1) {
		switch (c) {
		case 's': socket_path = optarg; break;
		case 'j': json = true; break;
		case 'h': usage(stdout); return 0;
		case ':':
			return ctl_exit_fail(CTL_EXIT_USAGE, "option '%s' needs an "
					     "argument (see --help)", argv[optind - 1]);
		default:
			return ctl_exit_fail(CTL_EXIT_USAGE, "unknown option '%s' (see "
					     "--help)", argv[optind - 1]);
		}
	}
	if (optind < argc && strcmp(argv[optind], "notify") == 0)
		return ctl_notify(socket_path, argc - optind, argv + optind);
	if (optind < argc && strcmp(argv[optind], "check-domain") == 0)
		return ctl_check_domain_main(argc - optind, argv + optind, json);
	r = ctl_parse_command(argc - optind, argv + optind, &req, &json, &wait);
	if (r)
		return r;
	r = ctl_client_call(socket_path, &req, &resp, &answer);
	if (r)
		return r;
	if (req.cmd == CTL_CMD_RECLAIM || req.cmd == CTL_CMD_RETURN) {
		struct json_object *op = ctl_client_get(resp, "operation");
		uint32_t id = (uint32_t)ctl_client_u64(op, "id");
		char b[32];

		if (wait)
			return ctl_wait_op(socket_path, req.vm, id, json);
		if (json)
			printf("%s\n", answer);
		else
			printf("%s #%u started on %s: %s (follow with: "
			       "vmdefragctl status %s)\n", pos0_name(req.cmd), id,
			       req.vm, size_format(req.bytes, b, sizeof(b)), req.vm);
		return 0;
	}
	if (json) {
		printf("%s\n", answer);
	} else if (req.cmd == CTL_CMD_STATUS) {
		struct json_object *vms = ctl_client_get(resp, "vms");

		for (size_t i = 0; vms && i < json_object_array_length(vms); i++) {
			if (i)
				printf("\n");
			ctl_render_status_vm(json_object_array_get_idx(vms, i));
		}
	} else {
		ctl_render_scan(ctl_client_get(resp, "scan"));
	}
	return 0;
}
