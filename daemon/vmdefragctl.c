// SPDX-License-Identifier: GPL-2.0
/*
 * vmdefragctl.c - command line client of vmdefragd's control socket: the
 * program's entry point, its arguments and its commands' flow.
 *
 * One request, one response (ctl_proto.h), printed human-readable
 * (ctl_render.c) or, with --json, as the daemon's JSON object.  Every
 * failure is one line on stderr and a distinct exit status (ctl_exit.h,
 * enum ctl_exit, listed in --help), so scripts can tell "daemon not
 * running" from "no such VM" from "guest not ready".  The help texts
 * (--help, help [CMD], CMD --help) are ctl_help.c's.  Strings that came
 * from a guest (slab cache names) are quoted with log_quote() before they
 * reach the terminal.
 *
 * reclaim / return start an operation in the daemon and print its id; with
 * --wait the client polls the operation ("op") every CTL_POLL_MS and
 * exits 0 only if the whole size was moved, else 1 with the daemon's
 * reason.  Progress: on a terminal one line rewritten with \r, with the
 * rate so far and the time left at that rate (ctl_progress()); into a
 * pipe or a file one line per phase -- the start, each round the guest
 * answered (the op's "rounds" grew), the end -- so a log shows the steps
 * without a line per poll.
 *
 * Every call to the daemon is bounded: --timeout SECONDS, or a default per
 * command (ctl_client.h); past it the call fails with CTL_EXIT_TIMEOUT.
 * With --wait, --timeout bounds the whole wait (the operation goes on in
 * the daemon) and each poll keeps the default.  With --json a failure is
 * also a JSON object on stdout (ctl_exit.h), so a script reading stdout
 * always gets one object.
 *
 * Two commands serve the libvirt integration.  notify is what the libvirt
 * qemu hook runs: one request with a short deadline (CTL_NOTIFY_TIMEOUT_MS
 * for connect and answer), so a wedged daemon cannot hold libvirtd up.
 * check-domain never talks to vmdefragd (ctl_check_domain.c); libvirt's
 * client library has no deadline of its own, so its --timeout is a
 * watchdog (ctl_watchdog()) that ends the process with the timeout's
 * line and exit status.
 *
 * The layers: ctl_client.c is the transport (socket, timeouts, the peer's
 * errors), ctl_render.c the human output, ctl_check_domain.c the libvirt
 * command; this file parses the command line and drives them.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cleanup.h"
#include "clock.h"
#include "ctl_check_domain.h"
#include "ctl_client.h"
#include "ctl_exit.h"
#include "ctl_help.h"
#include "ctl_map_svg.h"
#include "ctl_proto.h"
#include "ctl_render.h"
#include "log.h"
#include "size.h"
#include "version.h"

#define CTL_POLL_MS	250	/* --wait: progress polling interval */
#define CTL_POLL_MIN_ANSWER_MS	1000	/* --wait --timeout: a poll's least wait */
#define CTL_NOTIFY_TIMEOUT_MS	2000	/* notify: connect + answer */

/* map: where to draw it */
static const char *ctl_map_svg_path;
static const char *ctl_map_png_path;

static const char *pos0_name(enum ctl_cmd cmd)
{
	return cmd == CTL_CMD_RECLAIM ? "reclaim" : "return";
}

/* --timeout SECONDS (> 0, decimals allowed) into ms; -1 if it is not one. */
static int ctl_parse_timeout(const char *s)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (!*s || *end || errno || !(v > 0) || v > 1e6)
		return -1;
	return v * 1000 < 1 ? 1 : (int)(v * 1000);
}

static int ctl_bad_timeout(const char *s)
{
	return ctl_exit_fail(CTL_EXIT_USAGE, "--timeout '%s': not a number of "
			     "seconds above 0 (e.g. 5 or 0.5)", s);
}

/* The --timeout given, in ms, or 0 for the command's default. */
static int ctl_timeout_ms;

/* ctl_watchdog()'s last words, composed before the alarm can ring. */
static char ctl_watchdog_line[512];
static char ctl_watchdog_json[640];

static void ctl_watchdog_ring(int sig)
{
	(void)sig;
	if (ctl_watchdog_json[0])
		(void)!write(STDOUT_FILENO, ctl_watchdog_json, strlen(ctl_watchdog_json));
	(void)!write(STDERR_FILENO, ctl_watchdog_line, strlen(ctl_watchdog_line));
	_exit(CTL_EXIT_TIMEOUT);
}

/* Ends the process with exit status 7 if it still runs after ms. */
static void ctl_watchdog(int ms, const char *what, bool json)
{
	struct itimerval it = { .it_value = { ms / 1000, (ms % 1000) * 1000 } };
	char secs[32];

	ctl_client_seconds(ms, secs, sizeof(secs));
	snprintf(ctl_watchdog_line, sizeof(ctl_watchdog_line), "vmdefragctl: %s did "
		 "not answer in %s (--timeout)\n", what, secs);
	if (json)
		snprintf(ctl_watchdog_json, sizeof(ctl_watchdog_json),
			 "{\"schema\":%d,\"ok\":false,\"error\":\"timeout\",\"message\":\"%s did "
			 "not answer in %s (--timeout)\",\"exit_code\":%d}\n",
			 CTL_JSON_SCHEMA, what, secs, CTL_EXIT_TIMEOUT);
	signal(SIGALRM, ctl_watchdog_ring);
	setitimer(ITIMER_REAL, &it, NULL);
}

/*
 * check-domain's arguments without --timeout S / --timeout=S (taken into
 * ctl_timeout_ms); 0 or the exit status.  argv is changed in place.
 */
static int ctl_take_timeout(int *argc, char **argv)
{
	int n = 0;

	for (int i = 0; i < *argc; i++) {
		const char *v = NULL;

		if (strcmp(argv[i], "--timeout") == 0) {
			if (i + 1 >= *argc)
				return ctl_exit_fail(CTL_EXIT_USAGE, "option '--timeout' "
						     "needs an argument (see --help)");
			v = argv[++i];
		} else if (strncmp(argv[i], "--timeout=", 10) == 0) {
			v = argv[i] + 10;
		} else {
			argv[n++] = argv[i];
			continue;
		}
		ctl_timeout_ms = ctl_parse_timeout(v);
		if (ctl_timeout_ms < 0)
			return ctl_bad_timeout(v);
	}
	*argc = n;
	return 0;
}

/* ", 42.0 MiB/s, about 7 s left" from an op's bytes and time so far. */
static void ctl_progress(struct json_object *op, char *buf, size_t sz)
{
	uint64_t done = ctl_client_u64(op, "done_bytes");
	uint64_t target = ctl_client_u64(op, "target_bytes");
	uint64_t ms = ctl_client_u64(op, "elapsed_ms");
	double rate, left;

	buf[0] = '\0';
	if (!done || !ms)
		return;
	rate = (double)done / ((double)ms / 1000.0);
	left = target > done ? (double)(target - done) / rate : 0;
	snprintf(buf, sz, ", %.1f MiB/s, about %.0f s left", rate / (1 << 20),
		 left);
}

/*
 * --wait: poll the operation until it ends or --timeout passes; the exit
 * status.
 */
static int ctl_wait_op(const char *path, const char *vm, uint32_t id, bool json,
		       uint64_t start_ms)
{
	struct ctl_request req = { .cmd = CTL_CMD_OP, .id = id };
	bool tty = isatty(STDOUT_FILENO) && !json;
	struct json_object *op;
	uint64_t rounds_shown = UINT64_MAX;
	char line[256], rate[64];
	int r;

	snprintf(req.vm, sizeof(req.vm), "%s", vm);
	for (;;) {
		_cleanup_(ctl_client_json_putp) struct json_object *resp = NULL;
		_cleanup_free_ char *text = NULL;
		struct timespec ts = { 0, CTL_POLL_MS * 1000000L };
		const char *state;

		/*
		 * each poll: the default, or what is left of --timeout (at
		 * least CTL_POLL_MIN_ANSWER_MS: the poll just after the
		 * deadline still gets its answer)
		 */
		if (ctl_timeout_ms) {
			uint64_t end = start_ms + (uint64_t)ctl_timeout_ms;
			uint64_t now = clock_now_ms();
			uint64_t left = end > now ? end - now : 0;

			if (left < CTL_POLL_MIN_ANSWER_MS)
				left = CTL_POLL_MIN_ANSWER_MS;
			ctl_client_set_timeout_ms(left < CTL_CLIENT_TIMEOUT_MS ?
						  (int)left : CTL_CLIENT_TIMEOUT_MS);
		}
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
			bool done = strcmp(state, "done") == 0;

			/* with --json, a failure is its error object alone */
			if (json && done)
				printf("%s\n", text);
			else if (!json)
				printf("%s%s\n", tty ? "\r\033[K" : "", line);
			if (!json && note)
				printf("warning: re-backed as '%s': %s\n",
				       ctl_client_str(op, "reback"), note);
			if (done)
				return CTL_EXIT_OK;
			fflush(stdout);
			return ctl_exit_fail_as(CTL_EXIT_FAILED, state, "operation", op,
						"%s %s: %s", ctl_client_str(op, "kind"),
						state, ctl_client_str(op, "reason") ?:
						"no reason given");
		}
		if (tty) {
			ctl_progress(op, rate, sizeof(rate));
			printf("\r\033[K%s%s", line, rate);
			fflush(stdout);
		} else if (!json && ctl_client_u64(op, "rounds") != rounds_shown) {
			rounds_shown = ctl_client_u64(op, "rounds");
			printf("%s\n", line);
			fflush(stdout);
		}
		if (ctl_timeout_ms &&
		    clock_now_ms() >= start_ms + (uint64_t)ctl_timeout_ms) {
			char secs[32];

			if (tty)
				printf("\n");
			fflush(stdout);
			return ctl_exit_fail_as(CTL_EXIT_TIMEOUT, NULL, "operation", op,
						"%s #%u on %s still running after %s "
						"(--timeout); it goes on: vmdefragctl "
						"status %s", ctl_client_str(op, "kind"),
						id, vm, ctl_client_seconds(ctl_timeout_ms,
						secs, sizeof(secs)), vm);
		}
		/* not past the deadline: the last poll comes just after it */
		if (ctl_timeout_ms) {
			uint64_t end = start_ms + (uint64_t)ctl_timeout_ms;
			uint64_t left = end - clock_now_ms();

			if (left < CTL_POLL_MS)
				ts.tv_nsec = (long)(left + 1) * 1000000L;
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
				     "started, stopped, release or migrate)", argv[2]);
	strcpy(req.vm, argv[1]);
	if (!ctl_timeout_ms)
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
		if (strcmp(argv[i], "--json") == 0) {
			*json = true;
		} else if (strncmp(argv[i], "--evict=", 8) == 0) {
			req.evict = proto_evict_from_name(argv[i] + 8);
			if (req.evict < 0)
				return ctl_exit_fail(CTL_EXIT_USAGE, "bad --evict '%s' (movable, "
						     "evict-slab or evict)", argv[i] + 8);
		} else if (strcmp(argv[i], "--wait") == 0) {
			*wait = true;
		} else if ((strncmp(argv[i], "--svg", 5) == 0 ||
			    strncmp(argv[i], "--png", 5) == 0) &&
			   (argv[i][5] == '=' || argv[i][5] == '\0')) {
			bool svg = argv[i][2] == 's';
			const char *v = argv[i][5] == '=' ? argv[i] + 6 :
					i + 1 < argc ? argv[++i] : NULL;

			if (!v || !*v)
				return ctl_exit_fail(CTL_EXIT_USAGE, "option '--%s' needs "
						     "a FILE (see --help)", svg ? "svg" : "png");
			if (svg)
				ctl_map_svg_path = v;
			else
				ctl_map_png_path = v;
		} else if (strcmp(argv[i], "--timeout") == 0 ||
			   strncmp(argv[i], "--timeout=", 10) == 0) {
			const char *v = argv[i][9] == '=' ? argv[i] + 10 : argv[++i];

			if (!v)
				return ctl_exit_fail(CTL_EXIT_USAGE, "option '--timeout' "
						     "needs an argument (see --help)");
			ctl_timeout_ms = ctl_parse_timeout(v);
			if (ctl_timeout_ms < 0)
				return ctl_bad_timeout(v);
		} else if (argv[i][0] == '-' && argv[i][1]) {
			return ctl_exit_fail(CTL_EXIT_USAGE, "unknown option '%s' "
					     "(see --help)", argv[i]);
		} else if (npos < 3) {
			pos[npos++] = argv[i];
		} else {
			return ctl_exit_fail(CTL_EXIT_USAGE, "too many arguments "
					     "(see --help)");
		}
	}
	if (npos == 0)
		return ctl_exit_fail(CTL_EXIT_USAGE, "no command given (status or "
				     "scan; see --help)");
	if (strcmp(pos[0], "status") == 0) {
		req.cmd = CTL_CMD_STATUS;
		if (npos > 2)
			return ctl_exit_fail(CTL_EXIT_USAGE, "status takes at most "
					     "one VM");
	} else if (strcmp(pos[0], "metrics") == 0) {
		req.cmd = CTL_CMD_METRICS;
		if (npos > 1)
			return ctl_exit_fail(CTL_EXIT_USAGE, "metrics takes no "
					     "arguments (every VM's series)");
	} else if (strcmp(pos[0], "history") == 0) {
		req.cmd = CTL_CMD_HISTORY;
		if (npos > 2)
			return ctl_exit_fail(CTL_EXIT_USAGE, "history takes at most "
					     "one VM");
	} else if (strcmp(pos[0], "map") == 0) {
		req.cmd = CTL_CMD_MAP;
		if (npos != 2)
			return ctl_exit_fail(CTL_EXIT_USAGE, "map takes exactly one VM");
	} else if (strcmp(pos[0], "scan") == 0) {
		req.cmd = CTL_CMD_SCAN;
		if (npos != 2)
			return ctl_exit_fail(CTL_EXIT_USAGE, "scan takes exactly one VM");
	} else if (strcmp(pos[0], "cancel") == 0) {
		req.cmd = CTL_CMD_CANCEL;
		if (npos < 2)
			return ctl_exit_fail(CTL_EXIT_USAGE, "cancel takes a VM and "
					     "optionally an operation id");
		if (npos == 3) {
			char *end;
			unsigned long long id;

			errno = 0;
			id = strtoull(pos[2], &end, 10);
			if (!isdigit((unsigned char)pos[2][0]) || *end || errno ||
			    id == 0 || id > UINT32_MAX)
				return ctl_exit_fail(CTL_EXIT_USAGE, "bad operation id "
						     "'%s' (the number after '#')",
						     pos[2]);
			req.id = (uint32_t)id;
		}
	} else if (strcmp(pos[0], "policy") == 0) {
		req.cmd = CTL_CMD_POLICY;
		if (npos != 3)
			return ctl_exit_fail(CTL_EXIT_USAGE, "policy takes a VM and a "
					     "mode (e.g. policy vm1 auto)");
		if (policy_mode_from_name(pos[2], &req.mode) < 0)
			return ctl_exit_fail(CTL_EXIT_USAGE, "unknown policy '%s' "
					     "(auto or manual)", pos[2]);
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
				     "scan, reclaim, return, cancel, policy, "
				     "history, metrics, map, notify or "
				     "check-domain; see --help)", pos[0]);
	}
	if (*wait && req.cmd != CTL_CMD_RECLAIM && req.cmd != CTL_CMD_RETURN)
		return ctl_exit_fail(CTL_EXIT_USAGE, "--wait goes with reclaim or "
				     "return");
	if (req.evict >= 0 && req.cmd != CTL_CMD_RECLAIM)
		return ctl_exit_fail(CTL_EXIT_USAGE, "--evict goes with reclaim");
	if ((ctl_map_svg_path || ctl_map_png_path) && req.cmd != CTL_CMD_MAP)
		return ctl_exit_fail(CTL_EXIT_USAGE, "--svg and --png go with map");
	if (npos >= 2) {
		if (!pos[1][0] || strlen(pos[1]) >= sizeof(req.vm))
			return ctl_exit_fail(CTL_EXIT_USAGE, "bad VM name '%s'", pos[1]);
		strcpy(req.vm, pos[1]);
	}
	*ret_req = req;
	return 0;
}

/* rsvg-convert SVG to PNG; 0 or the exit status. */
static int ctl_map_png(const char *svg, const char *png)
{
	char *argv[] = { "rsvg-convert", "--format", "png", "--output", (char *)png,
			 (char *)svg, NULL };
	extern char **environ;
	pid_t pid;
	int r, status;

	r = posix_spawnp(&pid, "rsvg-convert", NULL, NULL, argv, environ);
	if (r)
		return ctl_exit_fail(CTL_EXIT_FAILED, "--png: cannot run rsvg-convert "
				     "(Debian package librsvg2-bin): %s", strerror(r));
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return ctl_exit_fail(CTL_EXIT_FAILED, "--png: %s", strerror(errno));
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return ctl_exit_fail(CTL_EXIT_FAILED, "--png: rsvg-convert failed on "
				     "'%s'", svg);
	return 0;
}

/*
 * map: draws the answer (--svg FILE, and --png FILE through a temporary
 * SVG when no --svg is given), then prints the totals, or the answer with
 * --json.
 */
static int ctl_map(struct json_object *map, const char *json_answer)
{
	char tmp[] = "/tmp/vmdefragctl-map-XXXXXX.svg";
	const char *svg = ctl_map_svg_path;
	struct ctl_map_totals t = { 0 };
	FILE *f;
	int r, fd = -1;

	if (!svg && ctl_map_png_path) {
		fd = mkstemps(tmp, 4);
		if (fd < 0)
			return ctl_exit_fail(CTL_EXIT_FAILED, "--png: cannot create a "
					     "temporary file: %s", strerror(errno));
		svg = tmp;
	}
	f = fd >= 0 ? fdopen(fd, "w") : fopen(svg ? svg : "/dev/null", "w");
	if (!f)
		return ctl_exit_fail(CTL_EXIT_FAILED, "cannot write '%s': %s",
				     svg, strerror(errno));
	r = ctl_map_svg(map, f, &t);
	if (fclose(f) != 0 && r == 0)
		r = -errno;
	if (r < 0) {
		if (fd >= 0)
			unlink(tmp);
		return ctl_exit_fail(CTL_EXIT_FAILED, r == -EBADMSG ? "the daemon's "
				     "map answer is malformed" : "cannot write '%s': %s",
				     svg, strerror(-r));
	}
	if (ctl_map_png_path) {
		r = ctl_map_png(svg, ctl_map_png_path);
		if (fd >= 0)
			unlink(tmp);
		if (r)
			return r;
	}
	if (json_answer) {
		printf("%s\n", json_answer);
		return 0;
	}
	printf("%s: %" PRIu64 " blocks of 2 MiB\n", ctl_client_str(map, "vm") ?: "?",
	       t.blocks);
	for (int k = 0; k < CTL_MAP_NKINDS; k++)
		printf("  %-10s %8" PRIu64 "\n", ctl_map_kind_name(k), t.kind[k]);
	if (json_object_get_boolean(ctl_client_get(map, "huge_known")))
		printf("  %-10s %8" PRIu64 " (huge-mapped on the host)\n", "huge", t.huge);
	if (ctl_map_svg_path)
		printf("drawn to %s\n", ctl_map_svg_path);
	if (ctl_map_png_path)
		printf("drawn to %s\n", ctl_map_png_path);
	return 0;
}

/*
 * `help [CMD]`, or a known command with -h/--help among its arguments:
 * prints the help and returns the exit status; -1 when neither.
 */
static int ctl_maybe_help(int argc, char **argv)
{
	if (argc == 0)
		return -1;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") != 0 && strcmp(argv[i], "-h") != 0)
			continue;
		if (ctl_help_command(argv[0]) < 0)
			return ctl_exit_fail(CTL_EXIT_USAGE, "unknown command '%s' "
					     "(see --help)", argv[0]);
		return 0;
	}
	if (strcmp(argv[0], "help") == 0) {
		if (argc > 2)
			return ctl_exit_fail(CTL_EXIT_USAGE, "help takes at most one "
					     "command");
		if (argc == 1) {
			ctl_help_usage(stdout);
			return 0;
		}
		if (ctl_help_command(argv[1]) < 0)
			return ctl_exit_fail(CTL_EXIT_USAGE, "no command '%s' (see "
					     "--help)", argv[1]);
		return 0;
	}
	return -1;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "timeout", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 }
	};
	_cleanup_(ctl_client_json_putp) struct json_object *resp = NULL;
	_cleanup_free_ char *answer = NULL;
	const char *socket_path = CTL_DEFAULT_SOCKET;
	struct ctl_request req = { 0 };
	bool json = false, wait = false;
	uint64_t start_ms = clock_now_ms();
	int c, r;

	log_setup("vmdefragctl");
	/* --json anywhere: even an error in the arguments before it is JSON */
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--json") == 0)
			ctl_exit_set_json(true);
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+:hV", opts, NULL)) != -1) {
		switch (c) {
		case 's': socket_path = optarg; break;
		case 'j': json = true; break;
		case 't':
			ctl_timeout_ms = ctl_parse_timeout(optarg);
			if (ctl_timeout_ms < 0)
				return ctl_bad_timeout(optarg);
			break;
		case 'h': ctl_help_usage(stdout); return 0;
		case 'V': version_print("vmdefragctl"); return 0;
		case ':':
			return ctl_exit_fail(CTL_EXIT_USAGE, "option '%s' needs an "
					     "argument (see --help)", argv[optind - 1]);
		default:
			return ctl_exit_fail(CTL_EXIT_USAGE, "unknown option '%s' (see "
					     "--help)", argv[optind - 1]);
		}
	}
	if (ctl_timeout_ms)
		ctl_client_set_timeout_ms(ctl_timeout_ms);
	r = ctl_maybe_help(argc - optind, argv + optind);
	if (r >= 0)
		return r;
	if (optind < argc && strcmp(argv[optind], "notify") == 0)
		return ctl_notify(socket_path, argc - optind, argv + optind);
	if (optind < argc && strcmp(argv[optind], "check-domain") == 0) {
		int n = argc - optind;

		r = ctl_take_timeout(&n, argv + optind);
		if (r)
			return r;
		for (int i = optind; i < optind + n; i++)
			if (strcmp(argv[i], "--json") == 0)
				json = true;
		ctl_watchdog(ctl_timeout_ms ? ctl_timeout_ms : CTL_CLIENT_TIMEOUT_MS,
			     "libvirt", json);
		return ctl_check_domain_main(n, argv + optind, json);
	}
	r = ctl_parse_command(argc - optind, argv + optind, &req, &json, &wait);
	if (r)
		return r;
	if (ctl_timeout_ms)
		ctl_client_set_timeout_ms(ctl_timeout_ms);
	else if (req.cmd == CTL_CMD_SCAN || req.cmd == CTL_CMD_MAP)
		ctl_client_set_timeout_ms(CTL_CLIENT_SCAN_TIMEOUT_MS);
	r = ctl_client_call(socket_path, &req, &resp, &answer);
	if (r)
		return r;
	if (req.cmd == CTL_CMD_RECLAIM || req.cmd == CTL_CMD_RETURN) {
		struct json_object *op = ctl_client_get(resp, "operation");
		uint32_t id = (uint32_t)ctl_client_u64(op, "id");
		char b[32];

		if (wait)
			return ctl_wait_op(socket_path, req.vm, id, json, start_ms);
		if (json)
			printf("%s\n", answer);
		else
			printf("%s #%u started on %s: %s (follow with: "
			       "vmdefragctl status %s)\n", pos0_name(req.cmd), id,
			       req.vm, size_format(req.bytes, b, sizeof(b)), req.vm);
		return 0;
	}
	if (req.cmd == CTL_CMD_MAP)
		return ctl_map(ctl_client_get(resp, "map"), json ? answer : NULL);
	if (json) {
		printf("%s\n", answer);
	} else if (req.cmd == CTL_CMD_CANCEL) {
		char line[256];

		ctl_render_op_line(ctl_client_get(resp, "operation"), line, sizeof(line));
		printf("%s\n", line);
	} else if (req.cmd == CTL_CMD_POLICY) {
		struct json_object *p = ctl_client_get(resp, "policy");

		printf("%s: policy %s\n", ctl_client_str(p, "vm"),
		       ctl_client_str(p, "mode"));
	} else if (req.cmd == CTL_CMD_METRICS) {
		fputs(ctl_client_str(resp, "metrics") ?: "", stdout);
	} else if (req.cmd == CTL_CMD_HISTORY) {
		ctl_render_history(ctl_client_get(resp, "history"));
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
