// SPDX-License-Identifier: GPL-2.0
/*
 * ctl_help.c - what `vmdefragctl --help`, `vmdefragctl help [CMD]` and
 * `vmdefragctl CMD --help` print.
 *
 * One table, one entry per command: its synopsis lines and what it does.
 * The usage prints every synopsis, then the options and exit statuses;
 * a command's help prints its own entry.  The man page vmdefragctl(1)
 * (man/vmdefragctl.1.scd) says the same at length; a command added here
 * goes there too, and to the bash completion (configs/bash-completion).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ctl_client.h"
#include "ctl_help.h"
#include "ctl_proto.h"

struct ctl_help_cmd {
	const char *name;
	const char *synopsis;	/* lines, each without "vmdefragctl " */
	const char *summary;	/* one line for the usage's list */
	const char *text;
};

static const struct ctl_help_cmd ctl_help_cmds[] = {
	{ "status", "[--socket PATH] [--timeout S] status [VM] [--json]",
	  "what each VM has, backs and reports",
"Per VM: backend, RAM, host backing and huge-page-mapped bytes, host shmem\n"
"THP policy, guest session, the guest's last reported free, captured\n"
"and unmovable memory, and the densification policy: its mode, headroom,\n"
"misses, last decision with its reason and the guest's memory signals.\n"
"Without VM, every VM the daemon manages.\n" },
	{ "scan", "[--socket PATH] [--timeout S] scan VM [--json]",
	  "the guest's 2 MiB block picture",
"Ask the guest for its 2 MiB block picture: block classes, vacate cost,\n"
"unmovable causes, top slab caches, and the census of blocks that only\n"
"reclaimable slab pins, with what evicting them would cost.\n" },
	{ "reclaim", "[--socket PATH] [--timeout S] reclaim VM SIZE [--wait] [--json]\n"
		     "[--evict=movable|evict-slab|evict]",
	  "take SIZE of a VM's memory back from its guest",
"Take SIZE of the VM's RAM backing back from the guest: the guest empties\n"
"2 MiB blocks its backing holds, the daemon punches them (SIZE: K/M/G\n"
"suffix, 2 MiB multiple).  Hint backend (anonymous RAM, free page\n"
"reporting): the guest compacts blocks, what came back is the measured\n"
"fall of QEMU's RssAnon; only free memory in partly used blocks can come\n"
"back (reporting returned the wholly free ones).  Prints the operation's\n"
"id; with --wait, waits for it showing progress and exits 0 only when the\n"
"whole SIZE was moved.\n"
"  --evict=POLICY  what the guest may drop to empty blocks that only\n"
"                 reclaimable slab pins: movable (nothing), evict-slab\n"
"                 (unused dentries and inodes without page cache, idle\n"
"                 buffer heads of clean pages), evict (also clean page\n"
"                 cache).  Default: the VM's \"evict\" config key, else\n"
"                 movable.\n" },
	{ "return", "[--socket PATH] [--timeout S] return VM SIZE [--wait] [--json]",
	  "give SIZE of reclaimed memory back",
"Give SIZE of reclaimed memory back, re-backed with 2 MiB folios where the\n"
"host allows it (not on the hint backend: the guest keeps its blocks).\n"
"--wait as for reclaim.\n" },
	{ "cancel", "[--socket PATH] [--timeout S] cancel VM [ID] [--json]",
	  "stop a VM's running reclaim or return",
"Stop the VM's running reclaim or return (operation ID, if given): the\n"
"guest's request in flight completes and what was moved stays moved,\n"
"nothing is left half-punched.  A --wait following the operation exits 1.\n" },
	{ "policy", "[--socket PATH] [--timeout S] policy VM auto|manual [--json]",
	  "let the daemon keep a VM dense by itself, or not",
"Set the VM's densification policy, kept across daemon restarts (in the\n"
"daemon's state_dir).  auto: the daemon reclaims what the guest keeps free\n"
"above its headroom (floor + a margin sized from its allocation rate), in\n"
"steps at a bounded rate once the guest is calm, and returns memory at\n"
"once when the guest's free memory nears its watermarks or its memory\n"
"pressure rises.  manual: only vmdefragctl reclaim/return move memory.\n"
"status shows the policy's last decision and its reason.\n" },
	{ "history", "[--socket PATH] [--timeout S] history [VM] [--json]",
	  "the last operations: when, what, how much, who asked",
"The last operations of each VM (64 per VM, kept across daemon restarts in\n"
"the daemon's state_dir), oldest first: start time, VM, id, kind (reclaim,\n"
"return, reconcile), who asked (user: a control request such as this\n"
"command; policy: the daemon's policy; daemon: its own bookkeeping),\n"
"bytes asked and done, seconds, result and rate.  Without VM, every VM.\n" },
	{ "metrics", "[--socket PATH] [--timeout S] metrics",
	  "every VM's Prometheus metrics (text format 0.0.4)",
"Print every VM's metrics in the Prometheus text exposition format 0.0.4:\n"
"counters that survive daemon restarts (vmdefrag_*_total) and gauges of\n"
"what the host backs and the guest reports.  The same text the\n"
"metrics_listen endpoint and the metrics_textfile hold (vmdefragd.conf(5));\n"
"the series are listed in vmdefragctl(1), METRICS.\n" },
	{ "map", "[--socket PATH] [--timeout S] map VM [--svg FILE] [--png FILE] [--json]",
	  "draw the guest's 2 MiB blocks and what the host did with them",
"Scan the guest afresh, block by block, add the host's view, and print\n"
"how many 2 MiB blocks are of each kind: reclaimed on the host, captured,\n"
"free, movable only, pinned by slab, pinned by other unmovable memory,\n"
"reserved or not RAM, and huge-mapped on the host.\n"
"  --svg FILE  draw them as a grid, one square per block (its slab cache\n"
"              named on hover), with a legend and the totals\n"
"  --png FILE  the same picture as PNG (needs rsvg-convert, Debian package\n"
"              librsvg2-bin)\n" },
	{ "notify", "[--socket PATH] [--timeout S] notify DOMAIN EVENT",
	  "what the libvirt hook runs: a domain's lifecycle event",
"Tell vmdefragd a libvirt domain was prepared, started, stopped, released\n"
"or is arriving by live migration (EVENT: prepare, started, stopped,\n"
"release, migrate).  What the libvirt hook runs; gives up after 2 s and\n"
"prints nothing when the daemon took it.\n" },
	{ "check-domain", "check-domain NAME [--connect URI] [--timeout S] [--json]\n"
			  "check-domain --xml FILE [--json]",
	  "what a libvirt domain lacks for vmdefrag (no daemon needed)",
"Read libvirt domain NAME's XML (live when running), or FILE (- for\n"
"stdin), and say what it lacks for vmdefrag, in plain words.  Exit 0 only\n"
"when it lacks nothing.  Does not need vmdefragd.\n"
"  --connect URI  libvirt URI (default: libvirt's default)\n"
"  --timeout S    give up on libvirt after S seconds (default 30)\n"
"Exit status: 0 nothing lacks, 1 something lacks, 2 bad arguments or an\n"
"unreadable XML file, 3 libvirt unreachable, 4 permission denied, 5 no\n"
"such domain.\n" },
	{ "help", "help [COMMAND]",
	  "the usage, or one command's help",
"Print the usage, or one command's help (the same as COMMAND --help).\n" },
};

#define CTL_HELP_NCMDS (sizeof(ctl_help_cmds) / sizeof(ctl_help_cmds[0]))

static const struct ctl_help_cmd *ctl_help_find(const char *name)
{
	for (size_t i = 0; i < CTL_HELP_NCMDS; i++)
		if (strcmp(ctl_help_cmds[i].name, name) == 0)
			return &ctl_help_cmds[i];
	return NULL;
}

/* Each synopsis line of c, prefixed; the first with lead, the rest aligned. */
static void ctl_help_synopsis(FILE *f, const struct ctl_help_cmd *c,
			      const char *lead)
{
	const char *s = c->synopsis;

	while (*s) {
		size_t n = strcspn(s, "\n");

		fprintf(f, "%s%.*s\n", lead, (int)n, s);
		lead = "       vmdefragctl ";
		s += n + (s[n] == '\n');
	}
}

void ctl_help_usage(FILE *f)
{
	for (size_t i = 0; i < CTL_HELP_NCMDS; i++)
		ctl_help_synopsis(f, &ctl_help_cmds[i],
				  i ? "       vmdefragctl " : "Usage: vmdefragctl ");
	fprintf(f,
"       vmdefragctl -h|--help | -V|--version\n"
"\n"
"Client of vmdefragd, vmdefrag's host daemon.  Commands:\n");
	for (size_t i = 0; i < CTL_HELP_NCMDS; i++)
		fprintf(f, "  %-13s %s\n", ctl_help_cmds[i].name,
			ctl_help_cmds[i].summary);
	fprintf(f,
"(the rest of each: vmdefragctl help COMMAND, or man vmdefragctl)\n"
"\n"
"Options:\n"
"  --socket PATH  vmdefragd's control socket (default %s)\n"
"  --timeout S    give up on the daemon after S seconds (decimals allowed):\n"
"                 connecting and its answer, exit status 7.  Default: %d s,\n"
"                 %d s for scan and map, 2 s for notify; with --wait, S\n"
"                 bounds the whole wait (default: none; the operation\n"
"                 goes on)\n"
"  --json         print the daemon's JSON answer; a failure is also printed\n"
"                 on stdout, as {\"ok\": false, \"error\": CODE, \"message\":\n"
"                 TEXT, \"exit_code\": N}\n"
"  --wait         reclaim/return: wait for the operation, showing progress;\n"
"                 exit 0 only when the whole SIZE was moved\n"
"  -h, --help     this text (after a command: that command's help)\n"
"  -V, --version  print the version and exit\n"
"\n"
"Exit status:\n"
"  0  success\n"
"  1  the daemon or the guest failed the request\n"
"  2  bad arguments\n"
"  3  the daemon is not running (no socket, or nobody listening)\n"
"  4  permission denied on the control socket\n"
"  5  unknown VM\n"
"  6  the VM's guest session is not ready (no agent answering)\n"
"  7  the daemon did not answer within --timeout\n"
"(check-domain has its own: vmdefragctl help check-domain)\n",
		CTL_DEFAULT_SOCKET, CTL_CLIENT_TIMEOUT_MS / 1000,
		CTL_CLIENT_SCAN_TIMEOUT_MS / 1000);
}

int ctl_help_command(const char *name)
{
	const struct ctl_help_cmd *c = ctl_help_find(name);

	if (!c)
		return -ENOENT;
	ctl_help_synopsis(stdout, c, "Usage: vmdefragctl ");
	printf("\n%s", c->text);
	return 0;
}
