// SPDX-License-Identifier: GPL-2.0
/*
 * test_config.c - vmdefragd configuration (daemon/config.c), table-driven.
 *
 * Good files are parsed and every resulting field compared; each kind of
 * bad line must be refused with its errno and a message that starts with
 * "FILE:LINE: " and says what was wrong.  --vm specs are checked the same
 * way, including a spec overriding one field of a [vm NAME] section.  The
 * last case writes a real file and reads it with config_parse_file().
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "config.h"

#define MiB (1ull << 20)
#define GiB (1ull << 30)

static void test_config_libvirt(void **state)
{
	static const char text[] =
		"[libvirt]\n"
		"uri = qemu:///session\n"
		"floor = 256M\n"
		"max_reclaim = 1G\n";
	char err[CONFIG_ERR_MAX] = "";
	struct config c;

	config_init(&c);
	assert_false(c.libvirt);
	assert_int_equal(config_parse_text(&c, text, "l.conf", err, sizeof(err)), 0);
	assert_true(c.libvirt);
	assert_string_equal(c.libvirt_uri, "qemu:///session");
	assert_int_equal(c.libvirt_defaults.floor_bytes, 256 * MiB);
	assert_int_equal(c.libvirt_defaults.max_reclaim_bytes, GiB);
	assert_int_equal(c.nvms, 0);
	assert_int_equal(config_validate(&c, err, sizeof(err)), 0);
	assert_true(config_vm_name_ok("dom-1.a_b"));
	assert_false(config_vm_name_ok("dom 1"));
	assert_false(config_vm_name_ok(""));
}

static void test_config_good(void **state)
{
	static const char text[] =
		"# vmdefragd test config\n"
		"\n"
		"[daemon]\n"
		"socket = /tmp/vdf.sock   # trailing comment\n"
		"  socket_mode=0600\n"
		"socket_group = 0\n"
		"log_level = debug\n"
		"reconnect_min_ms = 100\n"
		"reconnect_max_ms = 2000\n"
		"collapse_cpu_percent = 10\n"
		"; another comment\n"
		"[vm web-1]\n"
		"qmp = /run/qemu/web-1.qmp\n"
		"channel = /run/qemu/web#1.vdf\n"
		"floor = 512M\n"
		"max_reclaim = 2G\n"
		"frames_per_sec = 50\n"
		"events_per_sec = 10\n"
		"request_timeout_ms = 1000\n"
		"[ vm db.2 ]\n"
		"qmp=/q\n"
		"channel=/c";
	char err[CONFIG_ERR_MAX] = "";
	struct config c;

	config_init(&c);
	assert_int_equal(config_parse_text(&c, text, "t.conf", err, sizeof(err)), 0);
	assert_string_equal(c.socket, "/tmp/vdf.sock");
	assert_int_equal(c.socket_mode, 0600);
	assert_true(c.socket_group_set);
	assert_int_equal(c.socket_group, 0);
	assert_int_equal(c.log_level, LOG_DEBUG);
	assert_int_equal(c.reconnect_min_ms, 100);
	assert_int_equal(c.reconnect_max_ms, 2000);
	assert_int_equal(c.collapse_cpu_percent, 10);
	assert_int_equal(c.nvms, 2);
	assert_string_equal(c.vms[0].name, "web-1");
	assert_string_equal(c.vms[0].qmp, "/run/qemu/web-1.qmp");
	assert_string_equal(c.vms[0].channel, "/run/qemu/web#1.vdf");
	assert_int_equal(c.vms[0].floor_bytes, 512 * MiB);
	assert_int_equal(c.vms[0].max_reclaim_bytes, 2 * GiB);
	assert_int_equal(c.vms[0].frames_per_sec, 50);
	assert_int_equal(c.vms[0].events_per_sec, 10);
	assert_int_equal(c.vms[0].request_timeout_ms, 1000);
	assert_string_equal(c.vms[1].name, "db.2");
	assert_string_equal(c.vms[1].channel, "/c");
	assert_int_equal(c.vms[1].floor_bytes, 0);
	assert_int_equal(c.vms[1].frames_per_sec, 500);	/* default */
	assert_int_equal(config_validate(&c, err, sizeof(err)), 0);

	/* defaults of an empty file */
	config_init(&c);
	assert_int_equal(config_parse_text(&c, "", "e.conf", err, sizeof(err)), 0);
	assert_string_equal(c.socket, CONFIG_DEFAULT_SOCKET);
	assert_int_equal(c.socket_mode, 0660);
	assert_false(c.socket_group_set);
	assert_false(c.socket_read_group_set);
	assert_int_equal(c.socket_clients_per_uid, CONFIG_DEFAULT_CLIENTS_PER_UID);
	assert_int_equal(c.socket_idle_timeout_ms, CONFIG_DEFAULT_IDLE_MS);
	assert_int_equal(c.nvms, 0);
}

/* The control socket's read group, per-uid cap and idle timeout. */
static void test_config_socket_access(void **state)
{
	char err[CONFIG_ERR_MAX] = "";
	struct config c, next;

	config_init(&c);
	assert_int_equal(config_parse_text(&c, "[daemon]\nsocket_mode = 0666\n"
					   "socket_group = 0\nsocket_read_group = 65534\n"
					   "socket_clients_per_uid = 2\n"
					   "socket_idle_timeout_ms = 500\n", "a.conf", err,
					   sizeof(err)), 0);
	assert_true(c.socket_read_group_set);
	assert_int_equal(c.socket_read_group, 65534);
	assert_string_equal(c.socket_read_group_name, "65534");
	assert_int_equal(c.socket_group, 0);
	assert_int_equal(c.socket_clients_per_uid, 2);
	assert_int_equal(c.socket_idle_timeout_ms, 500);
	assert_int_equal(config_validate(&c, err, sizeof(err)), 0);

	/* the cap and the timeout apply at once; the read group at a restart */
	config_init(&next);
	assert_int_equal(config_parse_text(&next, "[daemon]\nsocket_mode = 0666\n"
					   "socket_group = 0\nsocket_clients_per_uid = 3\n"
					   "socket_idle_timeout_ms = 900\n", "b.conf", err,
					   sizeof(err)), 0);
	assert_int_equal(config_reload(&c, &next, NULL, NULL), 1);
	assert_int_equal(c.socket_clients_per_uid, 3);
	assert_int_equal(c.socket_idle_timeout_ms, 900);
	assert_true(c.socket_read_group_set);

	/* read-group members connect through the "other" bits of the file */
	config_init(&c);
	assert_int_equal(config_parse_text(&c, "[daemon]\nsocket_read_group = 65534\n",
					   "a.conf", err, sizeof(err)), 0);
	assert_int_equal(config_validate(&c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "socket_read_group '65534' needs socket_mode to let "
			    "others connect (e.g. 0666): the daemon checks each "
			    "client's groups");
}

struct bad_case {
	const char *text;
	int ret;
	const char *msg;	/* full expected message */
};

static const struct bad_case bad_cases[] = {
	{ "socket = /x\n", -EINVAL, "b.conf:1: 'socket' outside a section" },
	{ "[daemon]\nsocket /x\n", -EINVAL,
	  "b.conf:2: expected 'key = value' or a [section]" },
	{ "[daemon\n", -EINVAL, "b.conf:1: section header without ']'" },
	{ "[demon]\n", -EINVAL,
	  "b.conf:1: unknown section [demon] (want [daemon], [libvirt] or [vm NAME])" },
	{ "[vm]\n", -EINVAL,
	  "b.conf:1: unknown section [vm] (want [daemon], [libvirt] or [vm NAME])" },
	{ "[libvirt]\nchannel = /c\n", -EINVAL,
	  "b.conf:2: 'channel' comes from each domain's XML, not from [libvirt]" },
	{ "[libvirt]\nfloor = 3M\n", -EDOM,
	  "b.conf:2: size '3M' is not a multiple of 2 MiB" },
	{ "[vm a/b]\n", -EINVAL,
	  "b.conf:1: bad VM name 'a/b' (1-63 of A-Z a-z 0-9 _ - .)" },
	{ "[vm a]\nqmp=/q\n[vm a]\n", -EEXIST, "b.conf:3: second [vm a] section" },
	{ "[daemon]\nsokcet = /x\n", -ENOENT,
	  "b.conf:2: unknown key 'sokcet' in [daemon]" },
	{ "[vm a]\nfloor_bytes = 1G\n", -ENOENT,
	  "b.conf:2: unknown key 'floor_bytes' for a VM" },
	{ "[daemon]\nsocket = relative.sock\n", -EINVAL,
	  "b.conf:2: must be an absolute path" },
	{ "[daemon]\nsocket =\n", -EINVAL, "b.conf:2: empty value for 'socket'" },
	{ "[daemon]\n = 3\n", -EINVAL, "b.conf:2: empty key" },
	{ "[daemon]\nsocket_mode = 0999\n", -EINVAL,
	  "b.conf:2: socket_mode '0999' is not an octal mode 0600..0777 with owner rw" },
	{ "[daemon]\nsocket_mode = 0440\n", -EINVAL,
	  "b.conf:2: socket_mode '0440' is not an octal mode 0600..0777 with owner rw" },
	{ "[daemon]\nsocket_group = no-such-group-vdf\n", -ENOENT,
	  "b.conf:2: no group named 'no-such-group-vdf'" },
	{ "[daemon]\nsocket_read_group = no-such-group-vdf\n", -ENOENT,
	  "b.conf:2: no group named 'no-such-group-vdf'" },
	{ "[daemon]\nsocket_clients_per_uid = 0\n", -ERANGE,
	  "b.conf:2: socket_clients_per_uid '0' is not in 1..32" },
	{ "[daemon]\nsocket_clients_per_uid = 33\n", -ERANGE,
	  "b.conf:2: socket_clients_per_uid '33' is not in 1..32" },
	{ "[daemon]\nsocket_idle_timeout_ms = 10\n", -ERANGE,
	  "b.conf:2: socket_idle_timeout_ms '10' is not in 100..3600000" },
	{ "[daemon]\nlog_level = loud\n", -EINVAL,
	  "b.conf:2: log_level 'loud' is not one of err, warning, notice, info, debug" },
	{ "[daemon]\nreconnect_min_ms = 5\n", -ERANGE,
	  "b.conf:2: reconnect_min_ms '5' is not in 10..3600000" },
	{ "[daemon]\n\ncollapse_cpu_percent = 101\n", -ERANGE,
	  "b.conf:3: collapse_cpu_percent '101' is not in 0..100" },
	{ "[daemon]\ncollapse_cpu_percent = half\n", -EINVAL,
	  "b.conf:2: collapse_cpu_percent 'half' is not a number" },
	{ "[vm a]\n\n\nfloor = 3M\n", -EDOM,
	  "b.conf:4: size '3M' is not a multiple of 2 MiB" },
	{ "[vm a]\nfloor = lots\n", -EINVAL,
	  "b.conf:2: 'lots' is not a size (like 512M, 2G)" },
	{ "[vm a]\nmax_reclaim = 99999999999T\n", -ERANGE,
	  "b.conf:2: size '99999999999T' is too large" },
	{ "[vm a]\nframes_per_sec = 0\n", -ERANGE,
	  "b.conf:2: frames_per_sec '0' is not in 1..100000" },
	{ "[vm a]\nevents_per_sec = many\n", -EINVAL,
	  "b.conf:2: events_per_sec 'many' is not a number" },
	/* a key given twice in one section */
	{ "[daemon]\nlog_level = info\n# again\nlog_level = debug\n", -EEXIST,
	  "b.conf:4: 'log_level' is set twice in [daemon] (first on line 2)" },
	{ "[vm a]\nqmp = /q\nfloor = 2M\nfloor = 4M\n", -EEXIST,
	  "b.conf:4: 'floor' is set twice in [vm a] (first on line 3)" },
	{ "[libvirt]\nuri = qemu:///system\nuri = qemu:///session\n", -EEXIST,
	  "b.conf:3: 'uri' is set twice in [libvirt] (first on line 2)" },
};

static void test_config_bad_lines(void **state)
{
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		char err[CONFIG_ERR_MAX] = "";
		struct config c;
		int r;

		config_init(&c);
		r = config_parse_text(&c, bad_cases[i].text, "b.conf", err, sizeof(err));
		if (r != bad_cases[i].ret || strcmp(err, bad_cases[i].msg) != 0)
			fail_msg("case %zu: got %d \"%s\", want %d \"%s\"", i, r, err,
				 bad_cases[i].ret, bad_cases[i].msg);
	}
}

static void test_config_validate(void **state)
{
	char err[CONFIG_ERR_MAX];
	struct config c;

	config_init(&c);
	assert_int_equal(config_parse_text(&c, "[vm a]\nqmp=/q\n", "v", err,
					   sizeof(err)), 0);
	assert_int_equal(config_validate(&c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "VM 'a': no channel=PATH given");

	config_init(&c);
	assert_int_equal(config_parse_text(&c, "[daemon]\nreconnect_min_ms=500\n"
					   "reconnect_max_ms=100\n", "v", err,
					   sizeof(err)), 0);
	assert_int_equal(config_validate(&c, err, sizeof(err)), -EINVAL);

	/* a key again in a later section of the same name is an override */
	config_init(&c);
	assert_int_equal(config_parse_text(&c, "[daemon]\nlog_level = info\n"
					   "[vm a]\nqmp=/q\nchannel=/c\n[daemon]\n"
					   "log_level = debug\n", "v", err,
					   sizeof(err)), 0);
	assert_int_equal(c.log_level, LOG_DEBUG);
}

/* Two VMs (or one VM's qmp and channel) naming the same socket. */
struct clash_case {
	const char *text;
	const char *spec;	/* a --vm on top, or NULL */
	const char *msg;
};

static const struct clash_case clash_cases[] = {
	{ "[vm a]\nqmp = /q\nchannel = /c\n\n[vm b]\nqmp = /q\nchannel = /d\n",
	  NULL, "s.conf:6: qmp '/q' is already the qmp socket of VM 'a'; "
	  "each VM needs its own sockets" },
	{ "[vm a]\nqmp = /q\nchannel = /c\n[vm b]\nchannel = /c\nqmp = /r\n",
	  NULL, "s.conf:5: channel '/c' is already the channel socket of VM 'a'; "
	  "each VM needs its own sockets" },
	{ "[vm a]\nqmp = /q\nchannel = /c\n[vm b]\nqmp = /c\nchannel = /d\n",
	  NULL, "s.conf:5: qmp '/c' is already the channel socket of VM 'a'; "
	  "each VM needs its own sockets" },
	{ "[vm a]\nqmp = /q\nchannel = /q\n", NULL,
	  "s.conf:3: channel '/q' is also its qmp socket" },
	{ "[vm a]\nqmp = /q\nchannel = /c\n", "b,qmp=/x,channel=/c",
	  "--vm 'b': channel '/c' is already the channel socket of VM 'a'; "
	  "each VM needs its own sockets" },
};

static void test_config_socket_clash(void **state)
{
	for (size_t i = 0; i < sizeof(clash_cases) / sizeof(clash_cases[0]); i++) {
		const struct clash_case *t = &clash_cases[i];
		char err[CONFIG_ERR_MAX] = "";
		struct config c;
		int r;

		config_init(&c);
		assert_int_equal(config_parse_text(&c, t->text, "s.conf", err,
						   sizeof(err)), 0);
		if (t->spec)
			assert_int_equal(config_add_vm_spec(&c, t->spec, err,
							    sizeof(err)), 0);
		r = config_validate(&c, err, sizeof(err));
		if (r != -EEXIST || strcmp(err, t->msg) != 0)
			fail_msg("case %zu: got %d \"%s\", want \"%s\"", i, r, err,
				 t->msg);
	}
}

struct notes {
	int n;
	char text[8][CONFIG_ERR_MAX];
};

static void note_sink(const char *sentence, void *userdata)
{
	struct notes *no = userdata;

	if (no->n < 8)
		snprintf(no->text[no->n], sizeof(no->text[0]), "%s", sentence);
	no->n++;
}

static void test_config_reload(void **state)
{
	char err[CONFIG_ERR_MAX];
	struct config cur, next;
	struct notes no = { 0 };

	config_init(&cur);
	assert_int_equal(config_parse_text(&cur, "[daemon]\nlog_level = info\n"
					   "collapse_cpu_percent = 25\n[vm a]\n"
					   "qmp=/q\nchannel=/c\nfloor=64M\n[vm gone]\n"
					   "qmp=/q2\nchannel=/c2\n", "r", err,
					   sizeof(err)), 0);
	config_init(&next);
	assert_int_equal(config_parse_text(&next, "[daemon]\nlog_level = debug\n"
					   "collapse_cpu_percent = 5\nsocket_mode = 0600\n"
					   "reconnect_min_ms = 100\n[vm a]\nqmp=/q\n"
					   "channel=/c-new\nfloor=128M\nmax_reclaim=1G\n"
					   "request_timeout_ms=2000\n[vm new]\nqmp=/q3\n"
					   "channel=/c3\n[libvirt]\nfloor=32M\n", "r", err,
					   sizeof(err)), 0);
	assert_int_equal(config_reload(&cur, &next, note_sink, &no), 5);
	assert_int_equal(no.n, 5);
	assert_string_equal(no.text[0],
			    "socket_mode changed (0660 -> 0600): needs a restart");
	assert_string_equal(no.text[1], "libvirt mode turned on: needs a restart");
	assert_string_equal(no.text[2], "VM 'a' channel changed: needs a restart");
	assert_string_equal(no.text[3], "VM 'gone' removed: needs a restart");
	assert_string_equal(no.text[4], "VM 'new' added: needs a restart");
	/* live: taken */
	assert_int_equal(cur.log_level, LOG_DEBUG);
	assert_int_equal(cur.collapse_cpu_percent, 5);
	assert_int_equal(cur.reconnect_min_ms, 100);
	assert_int_equal(cur.vms[0].floor_bytes, 128 * MiB);
	assert_int_equal(cur.vms[0].max_reclaim_bytes, GiB);
	assert_int_equal(cur.vms[0].request_timeout_ms, 2000);
	assert_int_equal(cur.libvirt_defaults.floor_bytes, 32 * MiB);
	/* restart-only: kept */
	assert_int_equal(cur.socket_mode, 0660);
	assert_false(cur.libvirt);
	assert_string_equal(cur.vms[0].channel, "/c");
	assert_int_equal(cur.nvms, 2);
	assert_string_equal(cur.vms[1].name, "gone");

	/* the same config again: nothing to say */
	no.n = 0;
	next = cur;
	assert_int_equal(config_reload(&cur, &next, note_sink, &no), 0);
	assert_int_equal(no.n, 0);
}

struct spec_case {
	const char *spec;
	int ret;
	const char *msg;
};

static const struct spec_case bad_specs[] = {
	{ "", -EINVAL, "--vm '': bad VM name (1-63 of A-Z a-z 0-9 _ - .)" },
	{ ",qmp=/q", -EINVAL, "--vm ',qmp=/q': bad VM name (1-63 of A-Z a-z 0-9 _ - .)" },
	{ "a b,qmp=/q", -EINVAL,
	  "--vm 'a b,qmp=/q': bad VM name (1-63 of A-Z a-z 0-9 _ - .)" },
	{ "a,qmp", -EINVAL, "--vm 'a,qmp': 'qmp' is not key=value" },
	{ "a,qmp=", -EINVAL, "--vm 'a,qmp=': 'qmp=' is not key=value" },
	{ "a,=x", -EINVAL, "--vm 'a,=x': '=x' is not key=value" },
	{ "a,qmp=rel", -EINVAL, "--vm 'a,qmp=rel': must be an absolute path" },
	{ "a,colour=red", -ENOENT, "--vm 'a,colour=red': unknown key 'colour' for a VM" },
	{ "a,qmp=/q,channel=/c,floor=1M", -EDOM,
	  "--vm 'a,qmp=/q,channel=/c,floor=1M': size '1M' is not a multiple of 2 MiB" },
	{ "a,floor=2Q", -EINVAL, "--vm 'a,floor=2Q': '2Q' is not a size (like 512M, 2G)" },
	{ "a,floor=20000000000000000000", -ERANGE,
	  "--vm 'a,floor=20000000000000000000': size '20000000000000000000' is too large" },
};

static void test_config_vm_specs(void **state)
{
	char err[CONFIG_ERR_MAX] = "";
	struct config_vm vm;
	struct config c;

	config_vm_init(&vm);
	assert_int_equal(config_parse_vm_spec("A,qmp=/run/a.qmp,channel=/run/a.sock,"
					      "floor=1G,events_per_sec=7", &vm,
					      err, sizeof(err)), 0);
	assert_string_equal(vm.name, "A");
	assert_string_equal(vm.qmp, "/run/a.qmp");
	assert_string_equal(vm.channel, "/run/a.sock");
	assert_int_equal(vm.floor_bytes, GiB);
	assert_int_equal(vm.events_per_sec, 7);

	for (size_t i = 0; i < sizeof(bad_specs) / sizeof(bad_specs[0]); i++) {
		struct config_vm before;
		int r;

		config_vm_init(&vm);
		before = vm;
		r = config_parse_vm_spec(bad_specs[i].spec, &vm, err, sizeof(err));
		if (r != bad_specs[i].ret || strcmp(err, bad_specs[i].msg) != 0)
			fail_msg("spec %zu: got %d \"%s\", want %d \"%s\"", i, r, err,
				 bad_specs[i].ret, bad_specs[i].msg);
		assert_memory_equal(&vm, &before, sizeof(vm));	/* untouched */
	}

	/* a spec overrides the fields it names of the file's section */
	config_init(&c);
	assert_int_equal(config_parse_text(&c, "[vm a]\nqmp=/q\nchannel=/c\n"
					   "floor=64M\n", "f", err, sizeof(err)), 0);
	assert_int_equal(config_add_vm_spec(&c, "a,channel=/c2", err, sizeof(err)), 0);
	assert_int_equal(config_add_vm_spec(&c, "b,qmp=/qb,channel=/cb", err,
					    sizeof(err)), 0);
	assert_int_equal(c.nvms, 2);
	assert_string_equal(c.vms[0].qmp, "/q");
	assert_string_equal(c.vms[0].channel, "/c2");
	assert_int_equal(c.vms[0].floor_bytes, 64 * MiB);
	assert_string_equal(config_find_vm(&c, "b")->qmp, "/qb");
	assert_null(config_find_vm(&c, "c"));
	assert_int_equal(config_validate(&c, err, sizeof(err)), 0);
}

static void test_config_file(void **state)
{
	char path[] = "/tmp/vdf-config-XXXXXX", err[CONFIG_ERR_MAX], want[128];
	struct config c;
	int fd = mkstemp(path);
	FILE *f;

	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	fputs("[daemon]\nlog_level = warning\n[vm x]\nqmp = /q\nchannel = /c\n"
	      "max_reclaim = 5M\n", f);
	fclose(f);
	config_init(&c);
	assert_int_equal(config_parse_file(&c, path, err, sizeof(err)), -EDOM);
	snprintf(want, sizeof(want), "%s:6: size '5M' is not a multiple of 2 MiB", path);
	assert_string_equal(err, want);
	unlink(path);

	config_init(&c);
	assert_int_equal(config_parse_file(&c, path, err, sizeof(err)), -ENOENT);
	snprintf(want, sizeof(want), "%s: cannot read: No such file or directory", path);
	assert_string_equal(err, want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config_good),
		cmocka_unit_test(test_config_libvirt),
		cmocka_unit_test(test_config_bad_lines),
		cmocka_unit_test(test_config_validate),
		cmocka_unit_test(test_config_socket_access),
		cmocka_unit_test(test_config_socket_clash),
		cmocka_unit_test(test_config_reload),
		cmocka_unit_test(test_config_vm_specs),
		cmocka_unit_test(test_config_file),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
