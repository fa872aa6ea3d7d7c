/* SPDX-License-Identifier: GPL-2.0 */
/*
 * main.c - vmdefrag-agent: the guest's relay between the host daemon
 * (virtio-serial port org.vmdefrag.0) and vmdefrag.ko (generic netlink).
 *
 * Startup: parse flags, find the port (waiting for it to appear), open it,
 * then hand it to the relay (relay.c), which connects to the module and
 * keeps retrying while the module is not loaded.  The main loop polls
 * three fds - a signalfd for SIGTERM/SIGINT, the module's event socket and
 * the port - and calls the relay's handlers and its timer tick.  SIGTERM or
 * SIGINT end the loop and the agent exits 0.
 *
 * Exit codes: 0 on a signal, 1 on a fatal error, 2 on bad usage.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "log.h"
#include "port.h"
#include "relay.h"
#include "version.h"
#include "vmdefrag/proto.h"

#define AGENT_PORT_RETRY_S 1

struct agent_opts {
	const char *port;		/* --port, or NULL to discover */
	unsigned int stats_interval_s;
	unsigned int meminfo_interval_ms;
};

static void agent_usage(FILE *f)
{
	fprintf(f,
		"Usage: vmdefrag-agent [--port PATH] [--stats-interval SEC]\n"
		"                      [--meminfo-interval MS] [--verbose]\n"
		"Relay between the host's vmdefragd (virtio-serial port %s)\n"
		"and the vmdefrag kernel module (generic netlink).\n"
		"\n"
		"  --port PATH           port device (default: found by name)\n"
		"  --stats-interval SEC  send module statistics every SEC seconds\n"
		"                        (default 30, 0 disables)\n"
		"  --meminfo-interval MS send the guest's memory signals every MS\n"
		"                        milliseconds, and at once when one crosses\n"
		"                        a threshold (default 2000, 0 disables;\n"
		"                        only to a host speaking protocol version 3)\n"
		"  -v, --verbose         log debug messages\n"
		"  -h, --help            show this help\n"
		"  -V, --version         print the version and exit\n",
		PROTO_PORT_NAME);
}

/*
 * 0, 1 for --help, 2 for --version (both: exit 0), or -EINVAL after
 * printing one line.
 */
static int agent_parse_args(int argc, char **argv, struct agent_opts *ret_opts)
{
	static const struct option longopts[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "stats-interval", required_argument, NULL, 's' },
		{ "meminfo-interval", required_argument, NULL, 'm' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	struct agent_opts o = { .stats_interval_s = 30, .meminfo_interval_ms = 2000 };
	char *end;
	long v;
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":vhV", longopts, NULL)) != -1) {
		switch (c) {
		case 'p':
			if (!*optarg) {
				fprintf(stderr, "vmdefrag-agent: --port needs a path (see --help)\n");
				return -EINVAL;
			}
			o.port = optarg;
			break;
		case 's':
			errno = 0;
			v = strtol(optarg, &end, 10);
			if (errno || *end || end == optarg || v < 0 || v > 86400) {
				fprintf(stderr, "vmdefrag-agent: --stats-interval \"%s\": "
					"expected seconds 0..86400\n", optarg);
				return -EINVAL;
			}
			o.stats_interval_s = (unsigned int)v;
			break;
		case 'm':
			errno = 0;
			v = strtol(optarg, &end, 10);
			if (errno || *end || end == optarg || v < 0 ||
			    v > PROTO_MEMINFO_INTERVAL_MAX) {
				fprintf(stderr, "vmdefrag-agent: --meminfo-interval \"%s\": "
					"expected milliseconds 0..%u\n", optarg,
					PROTO_MEMINFO_INTERVAL_MAX);
				return -EINVAL;
			}
			o.meminfo_interval_ms = (unsigned int)v;
			break;
		case 'v':
			log_set_max_level(LOG_DEBUG);
			break;
		case 'h':
			return 1;
		case 'V':
			return 2;
		case ':':
			fprintf(stderr, "vmdefrag-agent: option \"%s\" needs a value (see --help)\n",
				argv[optind - 1]);
			return -EINVAL;
		default:
			fprintf(stderr, "vmdefrag-agent: unknown option \"%s\" (see --help)\n",
				argv[optind - 1]);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "vmdefrag-agent: unexpected argument \"%s\" (see --help)\n",
			argv[optind]);
		return -EINVAL;
	}
	*ret_opts = o;
	return 0;
}

/* 1 if SIGTERM/SIGINT is pending on sfd (logged), 0 otherwise. */
static int agent_signal_pending(int sfd, int timeout_ms)
{
	struct pollfd p = { .fd = sfd, .events = POLLIN };
	struct signalfd_siginfo si;

	if (poll(&p, 1, timeout_ms) <= 0)
		return 0;
	if (read(sfd, &si, sizeof(si)) != sizeof(si))
		return 0;
	log_info("received %s, exiting", strsignal((int)si.ssi_signo));
	return 1;
}

/* Find and open the port, waiting for it to appear; 1 if signalled. */
static int agent_open_port(const struct agent_opts *o, int sfd, int *ret_fd)
{
	char path[PATH_MAX];
	bool logged = false;
	int r;

	for (;;) {
		if (o->port) {
			snprintf(path, sizeof(path), "%s", o->port);
			r = access(path, F_OK) < 0 ? -errno : 0;
		} else {
			r = agent_port_find(PROTO_PORT_NAME, path, sizeof(path));
		}
		if (r == 0) {
			r = agent_port_open(path, ret_fd);
			if (r < 0)
				return log_error_errno(r,
						       "cannot open port \"%s\": %m", path);
			log_info("opened port \"%s\"", path);
			return 0;
		}
		if (r != -ENOENT)
			return log_error_errno(r, "looking for port \"%s\": %m",
					       o->port ? o->port : PROTO_PORT_NAME);
		if (!logged)
			log_warning("port \"%s\" not found, waiting for it",
				 o->port ? o->port : PROTO_PORT_NAME);
		logged = true;
		if (agent_signal_pending(sfd, AGENT_PORT_RETRY_S * 1000))
			return 1;
	}
}

static int agent_loop(struct agent_relay *relay, int sfd)
{
	for (;;) {
		struct pollfd p[3] = {
			{ .fd = sfd, .events = POLLIN },
			{ .fd = agent_relay_nl_fd(relay), .events = POLLIN },
			{ .fd = agent_relay_port_fd(relay), .events = POLLIN },
		};
		int n = poll(p, 3, agent_relay_timeout_ms(relay));

		if (n < 0 && errno != EINTR)
			return log_error_errno(-errno, "cannot wait for the port and "
					       "the module: %m");
		if (n > 0 && p[0].revents && agent_signal_pending(sfd, 0))
			return 0;
		if (n > 0 && p[1].fd >= 0 && p[1].revents)
			agent_relay_nl_ready(relay);
		if (n > 0 && p[2].fd >= 0 && p[2].revents)
			agent_relay_port_ready(relay, p[2].revents);
		agent_relay_tick(relay);
	}
}

int main(int argc, char **argv)
{
	struct agent_relay *relay = NULL;
	struct agent_opts opts;
	sigset_t mask;
	int r, sfd, port_fd = -1;

	log_setup("vmdefrag-agent");
	r = agent_parse_args(argc, argv, &opts);
	if (r == 1) {
		agent_usage(stdout);
		return 0;
	}
	if (r == 2) {
		version_print("vmdefrag-agent");
		return 0;
	}
	if (r < 0)
		return 2;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
		return 1;
	sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	if (sfd < 0) {
		log_error_errno(-errno, "cannot set up signal handling: %m");
		return 1;
	}

	r = agent_open_port(&opts, sfd, &port_fd);
	if (r != 0)
		goto out_close_sfd;
	r = agent_relay_new(port_fd, opts.stats_interval_s,
			    opts.meminfo_interval_ms, &relay);
	if (r < 0) {
		log_error_errno(r, "cannot start relaying: %m");
		close(port_fd);
		goto out_close_sfd;
	}
	r = agent_loop(relay, sfd);
	agent_relay_free(relay);

out_close_sfd:
	close(sfd);
	return r < 0 ? 1 : 0;
}
