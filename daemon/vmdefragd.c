// SPDX-License-Identifier: GPL-2.0
/*
 * vmdefragd.c - the host daemon's entry point.
 *
 * Startup is strictly ordered, and every failure before the loop runs is
 * one line on stderr and exit status 2 (bad input) or 1 (environment):
 *   1. command line; 2. config file (--config FILE; without it
 *   CONFIG_DEFAULT_PATH, or $VMDEFRAGD_CONFIG, when that file exists),
 *   then the command line's --socket / --log-level / --vm on top of it;
 *   3. validation; 4. without --foreground, the detach (below); 5. the
 *   event loop, signals, one struct vm per configured VM; 6. in libvirt
 *   mode (--libvirt [URI] or a [libvirt] section), the connection to
 *   libvirtd, which adds a VM per running domain that has the vmdefrag
 *   channel and follows their lifecycle (virt_domains.c); 7. the control
 *   socket; 8. each VM attaches to QEMU and its guest channel, retrying on
 *   its own from then on.  Zero VMs at start is fine in libvirt mode; VMs
 *   are only ever added, and a --vm wins over a domain of the same name.
 *
 * Detaching: the process forks at step 4 and the parent waits on a pipe.
 * The child starts a session, does steps 5..8 with stderr still on the
 * caller's terminal, and only once the control socket is bound moves its
 * stdio to /dev/null and writes one byte: the parent exits 0.  If the
 * child fails first (socket in use, libvirt unusable) its one-line error
 * is already on the terminal and the parent exits with the child's status.
 *
 * Signals (a signalfd in the loop): SIGTERM/SIGINT end the loop; SIGHUP
 * reloads the configuration (daemon_reload()): the same sources again,
 * applied with config_reload() -- log level, reconnect backoff,
 * collapse_cpu_percent and every VM's limits take effect at once, each
 * other difference is one warning "X changed: needs a restart", and a
 * config that does not parse leaves everything as it was, logged with its
 * FILE:LINE error.
 *
 * After startup nothing is fatal: a VM that misbehaves is logged and
 * retried, never a reason to exit.  Shutdown closes the control socket
 * first (so no client waits on a VM being freed), then libvirt (its event
 * thread), then the VMs.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include "config.h"
#include "control.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "metrics_server.h"
#include "virt_conn.h"
#include "virt_domains.h"
#include "version.h"
#include "vm.h"
#include "worker.h"

/*
 * Threads for the slow work of every VM (worker.c): punching and
 * re-backing, and monitor commands (attach, layout rediscovery).  Each
 * VM's jobs of a kind run one at a time, so these bound how many VMs'
 * slow work overlaps, not any one VM's.  Monitors apart: a hung QEMU holds
 * a monitor thread for its command timeout; with more hung at once than
 * DAEMON_MONITOR_WORKERS, the others' monitor work waits, never a punch.
 */
#define DAEMON_BACKING_WORKERS	2
#define DAEMON_MONITOR_WORKERS	4

#define EXIT_USAGE 2

static void usage(FILE *f)
{
	fprintf(f,
"Usage: vmdefragd [--foreground] [--config FILE] [--socket PATH]\n"
"                 [--state-dir DIR] [--log-level LEVEL] [--libvirt[=URI]]\n"
"                 [--vm NAME,qmp=PATH,channel=PATH[,...] ...]\n"
"\n"
"Host daemon of vmdefrag: attaches to each VM's QEMU monitor and vmdefrag\n"
"guest channel and serves vmdefragctl on a unix socket.\n"
"\n"
"  --foreground       stay in the foreground, log to stderr (else: detach,\n"
"                     log to syslog)\n"
"  --config FILE      INI config file (see configs/vmdefragd.conf); the\n"
"                     options below override it.  Default: %s\n"
"                     when it exists ($VMDEFRAGD_CONFIG names another)\n"
"  --socket PATH      control socket (default %s)\n"
"  --state-dir DIR    where what outlives the daemon is kept: each VM's\n"
"                     policy mode, counters and history (default %s)\n"
"  --log-level LEVEL  err, warning, notice, info (default), debug\n"
"  --vm SPEC          NAME,qmp=PATH,channel=PATH and optionally floor=SIZE,\n"
"                     max_reclaim=SIZE (multiples of 2M), frames_per_sec=N,\n"
"                     events_per_sec=N, request_timeout_ms=N, policy=MODE\n"
"                     and the other per-VM config keys; repeat per VM;\n"
"                     a VM named in the config file gets the given fields\n"
"  --libvirt [URI]    also manage libvirt's running domains (default URI\n"
"                     %s): each domain with the org.vmdefrag.0\n"
"                     channel becomes a VM named after the domain, followed\n"
"                     across stop/start, libvirtd restarts and migration;\n"
"                     QMP goes through libvirt.  A --vm of the same name wins\n"
"  -h, --help         this text\n"
"  -V, --version      print the version and exit\n"
"\n"
"Signals: SIGTERM/SIGINT stop the daemon; SIGHUP reloads the config file\n"
"(what cannot change while running is logged as needing a restart).\n"
"\n"
"Exit status: 0 stopped by SIGTERM/SIGINT, 1 could not start, 2 bad\n"
"arguments or config.\n", CONFIG_DEFAULT_PATH, CONFIG_DEFAULT_SOCKET,
		CONFIG_DEFAULT_STATE_DIR, VIRT_CONN_DEFAULT_URI);
}

/* Set while a detached daemon starts: its errors also go to the terminal. */
static bool syslog_sink_startup;

static void syslog_sink(int level, const char *msg, void *userdata)
{
	syslog(level, "%s", msg);
	if (syslog_sink_startup && level <= LOG_ERR)
		fprintf(stderr, "%s: %s\n", log_get_ident(), msg);
}

struct args {
	bool foreground;
	const char *config;
	const char *socket;
	const char *state_dir;
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
		{ "state-dir", required_argument, NULL, 'S' },
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
		case 'S': a->state_dir = optarg; break;
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

/*
 * The config file to read: --config FILE, else the default path (or
 * $VMDEFRAGD_CONFIG) if that file exists, else none (NULL).
 */
static const char *config_path(const struct args *a)
{
	const char *p = a->config;

	if (p)
		return p;
	p = getenv("VMDEFRAGD_CONFIG");
	if (!p || !*p)
		p = CONFIG_DEFAULT_PATH;
	return access(p, F_OK) == 0 ? p : NULL;
}

/*
 * Builds the configuration from the file and the command line; on error
 * err gets one line (FILE:LINE: ... for the file) and < 0 is returned.
 */
static int build_config(const struct args *a, struct config *cfg, char *err,
			size_t errsz)
{
	const char *path = config_path(a);

	config_init(cfg);
	if (path && config_parse_file(cfg, path, err, errsz) < 0)
		return -EINVAL;
	if (a->socket) {
		if (a->socket[0] != '/' || strlen(a->socket) >= sizeof(cfg->socket)) {
			snprintf(err, errsz, "--socket '%s': must be an absolute "
				 "path shorter than %zu bytes", a->socket,
				 sizeof(cfg->socket));
			goto out_err;
		}
		strcpy(cfg->socket, a->socket);
	}
	if (a->state_dir) {
		if (a->state_dir[0] != '/' ||
		    strlen(a->state_dir) >= sizeof(cfg->state_dir)) {
			snprintf(err, errsz, "--state-dir '%s': must be an absolute "
				 "path shorter than %zu bytes", a->state_dir,
				 sizeof(cfg->state_dir));
			goto out_err;
		}
		strcpy(cfg->state_dir, a->state_dir);
	}
	if (a->log_level && log_level_from_string(a->log_level, &cfg->log_level) < 0) {
		snprintf(err, errsz, "--log-level '%s': not one of err, warning, "
			 "notice, info, debug", a->log_level);
		goto out_err;
	}
	for (size_t i = 0; i < a->nvm_specs; i++)
		if (config_add_vm_spec(cfg, a->vm_specs[i], err, errsz) < 0)
			goto out_err;
	if (a->libvirt) {
		const char *uri = a->libvirt_uri ? a->libvirt_uri : cfg->libvirt_uri;

		if (!*uri && a->libvirt_uri) {
			snprintf(err, errsz, "--libvirt=: empty URI");
			goto out_err;
		}
		if (config_set_libvirt(cfg, uri) < 0) {
			snprintf(err, errsz, "--libvirt '%s': URI too long", uri);
			goto out_err;
		}
	}
	if (config_validate(cfg, err, errsz) < 0)
		goto out_err;
	if (cfg->nvms == 0 && !cfg->libvirt) {
		snprintf(err, errsz, "no VM given (--vm, a [vm NAME] section, "
			 "or --libvirt)");
		goto out_err;
	}
	return 0;

out_err:
	return -EINVAL;
}

/* What a running daemon is made of; the signal handler reaches it. */
struct daemon {
	struct args a;
	struct config *cfg;
	struct loop *loop;
	struct vm_list vms;
	struct virt_domains *virt;
	struct metrics_server *metrics;	/* NULL without listener and textfile */
};

static int daemon_render_metrics(void *userdata, char **ret_text, size_t *ret_len)
{
	struct daemon *d = userdata;

	return metrics_render_vms(&d->vms, ret_text, ret_len);
}

static void daemon_note_restart(const char *sentence, void *userdata)
{
	log_warning("%s", sentence);
}

/* SIGHUP: read the configuration again and apply what can change live. */
static void daemon_reload(struct daemon *d)
{
	char err[CONFIG_ERR_MAX];
	struct config *next;
	const char *path = config_path(&d->a);
	int n;

	next = malloc(sizeof(*next));
	if (!next) {
		log_error("configuration not reloaded: out of memory");
		return;
	}
	if (build_config(&d->a, next, err, sizeof(err)) < 0) {
		log_error("configuration not reloaded, the previous one stays in "
			  "use: %s", err);
		free(next);
		return;
	}
	n = config_reload(d->cfg, next, daemon_note_restart, NULL);
	free(next);
	log_set_max_level(d->cfg->log_level);
	metrics_server_set_interval(d->metrics, d->cfg->metrics_textfile_interval_ms);
	for (size_t i = 0; i < d->vms.n; i++) {
		struct vm *vm = d->vms.v[i];
		const struct config_vm *conf = vm_is_libvirt(vm) ?
			&d->cfg->libvirt_defaults : config_find_vm(d->cfg, vm_name(vm));

		if (conf)
			vm_apply_config(vm, d->cfg, conf);
	}
	log_notice("configuration reloaded from %s (log level %s, %zu VM(s))%s",
		   path ? path : "the command line alone",
		   log_level_name(d->cfg->log_level), d->vms.n,
		   n ? "; the changes above need a restart" : "");
}

static void on_signal(struct loop_io *io, uint32_t events)
{
	struct signalfd_siginfo si;
	struct daemon *d = io->userdata;

	if (read(io->fd, &si, sizeof(si)) != sizeof(si))
		return;
	if (si.ssi_signo == SIGHUP) {
		log_info("SIGHUP received, reloading the configuration");
		daemon_reload(d);
		return;
	}
	log_info("%s received, exiting", si.ssi_signo == SIGINT ? "SIGINT" :
		 "SIGTERM");
	loop_quit(d->loop, 0);
}

/*
 * Without --foreground: forks; the parent waits until the child says it
 * serves (one byte on the pipe: exit 0) or dies (exit with its status)
 * and never returns.  The child returns the pipe's write end in
 * *ret_ready_fd, in a session of its own, at /.
 */
static int daemon_fork(int *ret_ready_fd)
{
	int p[2], status;
	pid_t pid;
	char c;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return -errno;
	}
	if (pid > 0) {
		ssize_t n;

		close(p[1]);
		do
			n = read(p[0], &c, 1);
		while (n < 0 && errno == EINTR);
		if (n == 1)
			_exit(0);
		if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status))
			_exit(1);
		_exit(WEXITSTATUS(status));
	}
	close(p[0]);
	if (setsid() < 0 || chdir("/") < 0) {
		close(p[1]);
		return -errno;
	}
	*ret_ready_fd = p[1];
	return 0;
}

/* The detached daemon serves: stdio to /dev/null, release the parent. */
static int daemon_ready(int ready_fd)
{
	int fd = open("/dev/null", O_RDWR | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (dup2(fd, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0) {
		close(fd);
		return -errno;
	}
	close(fd);
	syslog_sink_startup = false;
	/* a parent that is gone already (its terminal closed) changes nothing */
	(void)!write(ready_fd, "", 1);
	close(ready_fd);
	return 0;
}

static int setup_signals(struct daemon *d, struct loop_io *io)
{
	sigset_t mask;
	int fd;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
		return -errno;
	fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	loop_io_init(io, on_signal, d);
	return loop_io_add(d->loop, io, fd, EPOLLIN);
}

int main(int argc, char **argv)
{
	struct daemon d = { 0 };
	struct args a = { 0 };
	char err[CONFIG_ERR_MAX], *config_abs = NULL;
	struct control *ctl = NULL;
	struct worker_pool *workers[WORKER_NCLASSES] = { NULL };
	struct loop_io sig_io;
	int r, ready_fd = -1, ret = 1;

	if (parse_args(argc, argv, &a) < 0)
		return EXIT_USAGE;
	log_setup("vmdefragd");
	/* a reload reads it again, after a detached daemon went to / */
	if (a.config && a.config[0] != '/' && (config_abs = realpath(a.config, NULL)))
		a.config = config_abs;
	d.a = a;
	d.cfg = malloc(sizeof(*d.cfg));
	if (!d.cfg)
		return 1;
	if (build_config(&a, d.cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "vmdefragd: %s\n", err);
		free(d.cfg);
		free(a.vm_specs);
		free(config_abs);
		return EXIT_USAGE;
	}
	log_set_max_level(d.cfg->log_level);
	if (!a.foreground) {
		r = daemon_fork(&ready_fd);
		if (r < 0) {
			fprintf(stderr, "vmdefragd: cannot detach: %s\n", strerror(-r));
			goto out_free;
		}
		openlog("vmdefragd", LOG_PID, LOG_DAEMON);
		syslog_sink_startup = true;
		log_set_sink(syslog_sink, NULL);
	}

	r = loop_new(&d.loop);
	if (r < 0) {
		log_error_errno(r, "cannot create the event loop: %m");
		goto out_free;
	}
	r = setup_signals(&d, &sig_io);
	if (r < 0) {
		log_error_errno(r, "cannot set up signal handling: %m");
		goto out_free;
	}
	/*
	 * One malloc arena for every thread: a worker's allocations (a
	 * re-back reads /proc/self/smaps into a buffer of a few hundred KiB)
	 * would otherwise each keep a per-thread arena's worth of freed
	 * memory resident; the workers allocate little and rarely, so they
	 * lose nothing by sharing the loop's.
	 */
	(void)mallopt(M_ARENA_MAX, 1);
	/* before any VM: each makes its worker queues from them */
	r = worker_pool_new(d.loop, DAEMON_BACKING_WORKERS, &workers[WORKER_BACKING]);
	if (r == 0)
		r = worker_pool_new(d.loop, DAEMON_MONITOR_WORKERS,
				    &workers[WORKER_MONITOR]);
	if (r < 0) {
		log_error_errno(r, "cannot start the worker threads: %m");
		goto out_free;
	}
	for (int c = 0; c < WORKER_NCLASSES; c++)
		worker_pool_set_default(c, workers[c]);
	for (size_t i = 0; i < d.cfg->nvms; i++) {
		struct vm *vm;

		r = vm_new(d.loop, d.cfg, &d.cfg->vms[i], &vm);
		if (r == 0 && (r = vm_list_add(&d.vms, vm)) < 0)
			vm_free(vm);
		if (r < 0) {
			log_error_errno(r, "VM '%s': %m", d.cfg->vms[i].name);
			goto out_free;
		}
	}
	if (d.cfg->libvirt) {
		r = virt_domains_new(d.loop, d.cfg, &d.vms, &d.virt);
		if (r < 0) {
			log_error_errno(r, "libvirt: cannot start: %m");
			goto out_free;
		}
	}
	r = control_new(d.loop, d.cfg, &d.vms, &ctl);
	if (r < 0) {
		if (r == -EADDRINUSE)
			log_error("control socket %s: another vmdefragd is listening "
				  "there", d.cfg->socket);
		else
			log_error_errno(r, "control socket %s: %m", d.cfg->socket);
		goto out_free;
	}
	r = metrics_server_new(d.loop, d.cfg, daemon_render_metrics, &d, &d.metrics);
	if (r < 0) {
		if (r == -EADDRINUSE)
			log_error("metrics_listen %s: another process listens there",
				  d.cfg->metrics_listen.spec);
		else
			log_error_errno(r, "metrics_listen %s: %m",
					d.cfg->metrics_listen.spec);
		goto out_free;
	}
	log_info("listening on %s, %zu VM(s)%s%s", d.cfg->socket, d.vms.n,
		 d.cfg->libvirt ? ", libvirt " : "",
		 d.cfg->libvirt ? (d.cfg->libvirt_uri[0] ? d.cfg->libvirt_uri :
				   VIRT_CONN_DEFAULT_URI) : "");
	if (ready_fd >= 0) {
		r = daemon_ready(ready_fd);
		ready_fd = -1;
		if (r < 0) {
			log_error_errno(r, "cannot detach: %m");
			goto out_free;
		}
	}
	for (size_t i = 0; i < d.vms.n; i++)
		vm_start(d.vms.v[i]);
	if (d.virt) {
		control_set_notify(ctl, virt_domains_notify, d.virt);
		virt_domains_start(d.virt);
	}
	r = loop_run(d.loop);
	ret = r < 0 ? 1 : r;
	if (r < 0)
		log_error_errno(r, "event loop failed: %m");

out_free:
	metrics_server_free(d.metrics);
	control_free(ctl);
	virt_domains_free(d.virt);
	vm_list_free(&d.vms);
	for (int c = 0; c < WORKER_NCLASSES; c++)
		worker_pool_free(workers[c]);	/* after every VM's queues */
	loop_free(d.loop);
	free(a.vm_specs);
	free(config_abs);
	free(d.cfg);
	return ret;
}
