// SPDX-License-Identifier: GPL-2.0
/*
 * vmdefragd.c - the host daemon's entry point.
 *
 * Startup is strictly ordered, and every failure before the loop runs is
 * one line on stderr and exit status 2 (bad input) or 1 (environment):
 *   1. command line; 2. config file (--config), then the command line's
 *   --socket / --log-level / --vm on top of it; 3. validation; 4. the
 *   event loop, signals (SIGTERM/SIGINT end the loop), one struct vm per
 *   configured VM; 5. the control socket; 6. each VM attaches to QEMU and
 *   its guest channel, retrying on its own from then on; 7. in libvirt
 *   mode (--libvirt [URI] or a [libvirt] section), the connection to
 *   libvirtd, which adds a VM per running domain that has the vmdefrag
 *   channel and follows their lifecycle (virt_domains.c).  Then zero VMs
 *   at start is fine; VMs are only ever added, and a --vm wins over a
 *   domain of the same name.
 * After that nothing is fatal: a VM that misbehaves is logged and retried,
 * never a reason to exit.  Shutdown closes the control socket first (so no
 * client waits on a VM being freed), then libvirt (its event thread), then
 * the VMs.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <syslog.h>
#include <unistd.h>

#include "config.h"
#include "control.h"
#include "log.h"
#include "loop.h"
#include "virt_conn.h"
#include "virt_domains.h"
#include "version.h"
#include "vm.h"

#define EXIT_USAGE 2

static void usage(FILE *f)
{
	fprintf(f,
"Usage: vmdefragd [--foreground] [--config FILE] [--socket PATH]\n"
"                 [--log-level LEVEL] [--libvirt[=URI]]\n"
"                 [--vm NAME,qmp=PATH,channel=PATH[,...] ...]\n"
"\n"
"Host daemon of vmdefrag: attaches to each VM's QEMU monitor and vmdefrag\n"
"guest channel and serves vmdefragctl on a unix socket.\n"
"\n"
"  --foreground       stay in the foreground, log to stderr (else: detach,\n"
"                     log to syslog)\n"
"  --config FILE      INI config file (see configs/vmdefragd.conf); the\n"
"                     options below override it\n"
"  --socket PATH      control socket (default %s)\n"
"  --log-level LEVEL  err, warning, notice, info (default), debug\n"
"  --vm SPEC          NAME,qmp=PATH,channel=PATH and optionally floor=SIZE,\n"
"                     max_reclaim=SIZE (multiples of 2M), frames_per_sec=N,\n"
"                     events_per_sec=N, request_timeout_ms=N; repeat per VM;\n"
"                     a VM named in the config file gets the given fields\n"
"  --libvirt [URI]    also manage libvirt's running domains (default URI\n"
"                     %s): each domain with the org.vmdefrag.0\n"
"                     channel becomes a VM named after the domain, followed\n"
"                     across stop/start, libvirtd restarts and migration;\n"
"                     QMP goes through libvirt.  A --vm of the same name wins\n"
"  -h, --help         this text\n"
"  -V, --version      print the version and exit\n"
"\n"
"Exit status: 0 stopped by SIGTERM/SIGINT, 1 could not start, 2 bad\n"
"arguments or config.\n", CONFIG_DEFAULT_SOCKET, VIRT_CONN_DEFAULT_URI);
}

static void syslog_sink(int level, const char *msg, void *userdata)
{
	syslog(level, "%s", msg);
}

static void on_signal(struct loop_io *io, uint32_t events)
{
	struct signalfd_siginfo si;
	struct loop *loop = io->userdata;

	if (read(io->fd, &si, sizeof(si)) != sizeof(si))
		return;
	log_info("signal %u received, exiting", si.ssi_signo);
	loop_quit(loop, 0);
}

struct args {
	bool foreground;
	const char *config;
	const char *socket;
	const char *log_level;
	const char **vm_specs;
	size_t nvm_specs;
	bool libvirt;
	const char *libvirt_uri;	/* NULL: the config's or the default */
};

static int parse_args(int argc, char **argv, struct args *a)
{
	static const struct option opts[] = {
		{ "foreground", no_argument, NULL, 'f' },
		{ "config", required_argument, NULL, 'c' },
		{ "socket", required_argument, NULL, 's' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "vm", required_argument, NULL, 'v' },
		{ "libvirt", optional_argument, NULL, 'L' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 }
	};
	int c;

	a->vm_specs = calloc((size_t)argc, sizeof(*a->vm_specs));
	if (!a->vm_specs)
		return -ENOMEM;
	opterr = 0;
	/* "+": no permutation, so "--libvirt URI" can take the next word */
	while ((c = getopt_long(argc, argv, "+:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'f': a->foreground = true; break;
		case 'c': a->config = optarg; break;
		case 's': a->socket = optarg; break;
		case 'l': a->log_level = optarg; break;
		case 'v': a->vm_specs[a->nvm_specs++] = optarg; break;
		case 'L':
			a->libvirt = true;
			a->libvirt_uri = optarg;
			if (!optarg && optind < argc && argv[optind][0] != '-')
				a->libvirt_uri = argv[optind++];
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case 'V':
			version_print("vmdefragd");
			exit(0);
		case ':':
			fprintf(stderr, "vmdefragd: option '%s' needs an argument "
				"(see --help)\n", argv[optind - 1]);
			return -EINVAL;
		default:
			fprintf(stderr, "vmdefragd: unknown option '%s' (see --help)\n",
				argv[optind - 1]);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "vmdefragd: unexpected argument '%s' (see --help)\n",
			argv[optind]);
		return -EINVAL;
	}
	return 0;
}

/* Builds the configuration; prints one line and returns < 0 on error. */
static int build_config(const struct args *a, struct config *cfg)
{
	char err[CONFIG_ERR_MAX];

	config_init(cfg);
	if (a->config && config_parse_file(cfg, a->config, err, sizeof(err)) < 0)
		goto out_err;
	if (a->socket) {
		if (a->socket[0] != '/' || strlen(a->socket) >= sizeof(cfg->socket)) {
			snprintf(err, sizeof(err), "--socket '%s': must be an absolute "
				 "path shorter than %zu bytes", a->socket,
				 sizeof(cfg->socket));
			goto out_err;
		}
		strcpy(cfg->socket, a->socket);
	}
	if (a->log_level && log_level_from_string(a->log_level, &cfg->log_level) < 0) {
		snprintf(err, sizeof(err), "--log-level '%s': not one of err, warning, "
			 "notice, info, debug", a->log_level);
		goto out_err;
	}
	for (size_t i = 0; i < a->nvm_specs; i++)
		if (config_add_vm_spec(cfg, a->vm_specs[i], err, sizeof(err)) < 0)
			goto out_err;
	if (a->libvirt) {
		const char *uri = a->libvirt_uri ? a->libvirt_uri : cfg->libvirt_uri;

		if (!*uri && a->libvirt_uri) {
			snprintf(err, sizeof(err), "--libvirt=: empty URI");
			goto out_err;
		}
		if (config_set_libvirt(cfg, uri) < 0) {
			snprintf(err, sizeof(err), "--libvirt '%s': URI too long", uri);
			goto out_err;
		}
	}
	if (config_validate(cfg, err, sizeof(err)) < 0)
		goto out_err;
	if (cfg->nvms == 0 && !cfg->libvirt) {
		snprintf(err, sizeof(err), "no VM given (--vm, a [vm NAME] section, "
			 "or --libvirt)");
		goto out_err;
	}
	return 0;

out_err:
	fprintf(stderr, "vmdefragd: %s\n", err);
	return -EINVAL;
}

static int setup_signals(struct loop *loop, struct loop_io *io)
{
	sigset_t mask;
	int fd;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
		return -errno;
	fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	loop_io_init(io, on_signal, loop);
	return loop_io_add(loop, io, fd, EPOLLIN);
}

int main(int argc, char **argv)
{
	struct args a = { 0 };
	struct config *cfg;
	struct control *ctl = NULL;
	struct loop *loop = NULL;
	struct loop_io sig_io;
	struct virt_domains *virt = NULL;
	struct vm_list vms = { 0 };
	int r, ret = 1;

	if (parse_args(argc, argv, &a) < 0)
		return EXIT_USAGE;
	cfg = malloc(sizeof(*cfg));
	if (!cfg)
		return 1;
	if (build_config(&a, cfg) < 0)
		return EXIT_USAGE;
	log_set_max_level(cfg->log_level);
	if (!a.foreground) {
		if (daemon(0, 0) < 0) {
			fprintf(stderr, "vmdefragd: cannot detach: %s\n", strerror(errno));
			return 1;
		}
		openlog("vmdefragd", LOG_PID, LOG_DAEMON);
		log_set_sink(syslog_sink, NULL);
	}

	r = loop_new(&loop);
	if (r < 0) {
		log_error_errno(r, "cannot create the event loop: %m");
		goto out_free;
	}
	r = setup_signals(loop, &sig_io);
	if (r < 0) {
		log_error_errno(r, "cannot set up signals: %m");
		goto out_free;
	}
	for (size_t i = 0; i < cfg->nvms; i++) {
		struct vm *vm;

		r = vm_new(loop, cfg, &cfg->vms[i], &vm);
		if (r == 0 && (r = vm_list_add(&vms, vm)) < 0)
			vm_free(vm);
		if (r < 0) {
			log_error_errno(r, "VM '%s': %m", cfg->vms[i].name);
			goto out_free;
		}
	}
	if (cfg->libvirt) {
		r = virt_domains_new(loop, cfg, &vms, &virt);
		if (r < 0) {
			log_error_errno(r, "libvirt: cannot start: %m");
			goto out_free;
		}
	}
	r = control_new(loop, cfg, &vms, &ctl);
	if (r < 0) {
		if (r == -EADDRINUSE)
			log_error("control socket %s: another vmdefragd is listening "
				  "there", cfg->socket);
		else
			log_error_errno(r, "control socket %s: %m", cfg->socket);
		goto out_free;
	}
	log_info("listening on %s, %zu VM(s)%s%s", cfg->socket, vms.n,
		 cfg->libvirt ? ", libvirt " : "",
		 cfg->libvirt ? (cfg->libvirt_uri[0] ? cfg->libvirt_uri :
				 VIRT_CONN_DEFAULT_URI) : "");
	for (size_t i = 0; i < vms.n; i++)
		vm_start(vms.v[i]);
	if (virt) {
		control_set_notify(ctl, virt_domains_notify, virt);
		virt_domains_start(virt);
	}
	r = loop_run(loop);
	ret = r < 0 ? 1 : r;
	if (r < 0)
		log_error_errno(r, "event loop failed: %m");

out_free:
	control_free(ctl);
	virt_domains_free(virt);
	vm_list_free(&vms);
	loop_free(loop);
	free(a.vm_specs);
	free(cfg);
	return ret;
}
