// SPDX-License-Identifier: GPL-2.0
/*
 * test_vm_layout.c - RAM layout discovery against real QEMU processes.
 *
 * A table of VM configurations (memfd, memfd split around the PCI hole,
 * two equal NUMA memdevs, memfd plus a tmpfs-file DIMM, private memfd,
 * legacy anonymous RAM) is started one at a time; the discovered layout is
 * compared with what was configured, and every shared range is proven
 * end to end: a marker written through the discovered backing fd at the
 * translated offset must be what QEMU itself reads at that guest-physical
 * address (HMP "xp").  Parser tests run on captured and malformed text.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <sys/statfs.h>
#include <linux/magic.h>

#include "log.h"
#include "qemu_fixture.h"
#include "vm_layout.h"

#define MiB (1ull << 20)
#define GiB (1ull << 30)

struct exp_range {
	uint64_t gpa, len, file_offset;
	const char *name;
	enum vm_backing_kind kind;
};

struct layout_case {
	const char *name;
	const char *args[24];
	size_t nranges;
	struct exp_range ranges[6];
	uint64_t ram_bytes;
	bool needs_shm;		/* /dev/shm must be tmpfs */
};

static const struct layout_case layout_cases[] = {
	{
		.name = "memfd 512M",
		.args = { "-machine", "q35,accel=tcg,memory-backend=ram0", "-m", "512M",
			  "-object", "memory-backend-memfd,id=ram0,size=512M,share=on", NULL },
		.nranges = 2,
		.ranges = {
			{ 0, 0xc0000, 0, "ram0", VM_BACKING_MEMFD },
			{ 0x100000, 512 * MiB - 0x100000, 0x100000, "ram0", VM_BACKING_MEMFD },
		},
		.ram_bytes = 512 * MiB - 0x40000,
	},
	{
		.name = "memfd 4G split around the PCI hole",
		.args = { "-machine", "q35,accel=tcg,memory-backend=ram0", "-m", "4G",
			  "-object", "memory-backend-memfd,id=ram0,size=4G,share=on", NULL },
		.nranges = 3,
		.ranges = {
			{ 0, 0xc0000, 0, "ram0", VM_BACKING_MEMFD },
			{ 0x100000, 2 * GiB - 0x100000, 0x100000, "ram0", VM_BACKING_MEMFD },
			{ 4 * GiB, 2 * GiB, 2 * GiB, "ram0", VM_BACKING_MEMFD },
		},
		.ram_bytes = 4 * GiB - 0x40000,
	},
	{
		.name = "two equal NUMA memdevs",
		.args = { "-machine", "q35,accel=tcg", "-m", "256M",
			  "-object", "memory-backend-memfd,id=m0,size=128M,share=on",
			  "-object", "memory-backend-memfd,id=m1,size=128M,share=on",
			  "-numa", "node,memdev=m0", "-numa", "node,memdev=m1", NULL },
		.nranges = 3,
		.ranges = {
			{ 0, 0xc0000, 0, "m0", VM_BACKING_MEMFD },
			{ 0x100000, 127 * MiB, 0x100000, "m0", VM_BACKING_MEMFD },
			{ 128 * MiB, 128 * MiB, 0, "m1", VM_BACKING_MEMFD },
		},
		.ram_bytes = 256 * MiB - 0x40000,
	},
	{
		.name = "memfd plus tmpfs file DIMM",
		.args = { "-machine", "q35,accel=tcg,memory-backend=ram0", "-m", "128M,slots=2,maxmem=1G",
			  "-object", "memory-backend-memfd,id=ram0,size=128M,share=on",
			  "-object", "memory-backend-file,id=f0,size=64M,share=on,mem-path=/dev/shm",
			  "-device", "pc-dimm,memdev=f0,id=dimm0", NULL },
		.nranges = 3,
		.ranges = {
			{ 0, 0xc0000, 0, "ram0", VM_BACKING_MEMFD },
			{ 0x100000, 127 * MiB, 0x100000, "ram0", VM_BACKING_MEMFD },
			/* DIMMs start at the first GiB boundary above RAM (4G on q35) */
			{ 4 * GiB, 64 * MiB, 0, "f0", VM_BACKING_FILE },
		},
		.ram_bytes = 192 * MiB - 0x40000,
		.needs_shm = true,
	},
	{
		.name = "private memfd is anonymous",
		.args = { "-machine", "q35,accel=tcg,memory-backend=ram0", "-m", "128M",
			  "-object", "memory-backend-memfd,id=ram0,size=128M,share=off", NULL },
		.nranges = 2,
		.ranges = {
			{ 0, 0xc0000, 0, "ram0", VM_BACKING_ANONYMOUS },
			{ 0x100000, 127 * MiB, 0x100000, "ram0", VM_BACKING_ANONYMOUS },
		},
		.ram_bytes = 128 * MiB - 0x40000,
	},
	{
		.name = "legacy -m is anonymous pc.ram",
		.args = { "-machine", "q35,accel=tcg", "-m", "128M", NULL },
		.nranges = 2,
		.ranges = {
			{ 0, 0xc0000, 0, "pc.ram", VM_BACKING_ANONYMOUS },
			{ 0x100000, 127 * MiB, 0x100000, "pc.ram", VM_BACKING_ANONYMOUS },
		},
		.ram_bytes = 128 * MiB - 0x40000,
	},
};

/* Marker through the backing fd at the translated offset == QEMU's view. */
static void check_marker(struct qemu_vm *vm, const struct vm_layout *l,
			 uint64_t gpa)
{
	const struct vm_ram_range *rg = NULL;
	uint64_t off = 0, marker = 0x5644460000000000ull ^ gpa, zero = 0;
	int fd;

	assert_int_equal(vm_layout_translate(l, gpa, 8, &rg, &off), 0);
	fd = l->backings[rg->backing].fd;
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, &marker, 8, (off_t)off), 8);
	assert_true(qemu_read_gpa(vm->qmp, gpa) == marker);
	assert_int_equal(pwrite(fd, &zero, 8, (off_t)off), 8);
	assert_true(qemu_read_gpa(vm->qmp, gpa) == 0);
}

static bool have_tmpfs_shm(void)
{
	struct statfs s;

	return statfs("/dev/shm", &s) == 0 && s.f_type == TMPFS_MAGIC;
}

static void run_layout_case(const struct layout_case *c)
{
	struct qemu_vm vm;
	struct vm_layout *l = NULL;
	int r;

	fprintf(stderr, "# case: %s\n", c->name);
	r = qemu_vm_start(&vm, c->args);
	if (r < 0)
		fail_msg("cannot start qemu for %s: %s", c->name, strerror(-r));
	r = vm_layout_discover(vm.qmp, 0, &l);
	if (r < 0) {
		qemu_vm_stop(&vm);
		fail_msg("discover %s: %s", c->name, strerror(-r));
	}
	assert_int_equal(l->pid, vm.pid);
	assert_int_equal(l->nranges, c->nranges);
	assert_true(vm_layout_ram_bytes(l) == c->ram_bytes);
	for (size_t i = 0; i < c->nranges; i++) {
		const struct vm_ram_range *rg = &l->ranges[i];
		const struct exp_range *e = &c->ranges[i];
		const struct vm_backing *b = &l->backings[rg->backing];
		struct stat st;

		assert_true(rg->gpa == e->gpa);
		assert_true(rg->len == e->len);
		assert_true(rg->file_offset == e->file_offset);
		assert_string_equal(b->name, e->name);
		assert_int_equal(b->kind, e->kind);
		assert_int_equal(b->page_size, 4096);
		if (e->kind == VM_BACKING_ANONYMOUS) {
			assert_int_equal(b->fd, -1);
			continue;
		}
		/* the opened fd is the very file QEMU maps */
		assert_true(b->shared);
		assert_int_equal(fstat(b->fd, &st), 0);
		assert_true(st.st_ino == b->ino && st.st_dev == b->dev);
		assert_true(b->file_size == b->size);
		check_marker(&vm, l, rg->gpa);
		check_marker(&vm, l, rg->gpa + rg->len - 8);
		check_marker(&vm, l, rg->gpa + rg->len / 2);
	}
	/* one backing per memdev, even when it has several ranges */
	for (size_t i = 0; i < l->nbackings; i++)
		for (size_t j = i + 1; j < l->nbackings; j++)
			assert_string_not_equal(l->backings[i].name, l->backings[j].name);
	vm_layout_free(l);
	qemu_vm_stop(&vm);
}

static void test_discover_table(void **state)
{
	if (!fixture_have_qemu())
		skip();
	for (size_t i = 0; i < sizeof(layout_cases) / sizeof(layout_cases[0]); i++) {
		if (layout_cases[i].needs_shm && !have_tmpfs_shm()) {
			fprintf(stderr, "# skip %s: /dev/shm is not tmpfs\n",
				layout_cases[i].name);
			continue;
		}
		run_layout_case(&layout_cases[i]);
	}
}

/* ---- translation, on the 4G layout built by hand ---- */

static struct vm_ram_range split_ranges[] = {
	{ 0, 0xc0000, 0, 0, 0, 0 },
	{ 0x100000, 2 * GiB - 0x100000, 0x100000, 0x100000, 0, 0 },
	{ 4 * GiB, 2 * GiB, 2 * GiB, 2 * GiB, 0, 0 },
};

struct translate_case {
	uint64_t gpa, len;
	int expect;
	uint64_t offset;
};

static const struct translate_case translate_cases[] = {
	{ 0, 4096, 0, 0 },
	{ 0x200000, 2 * MiB, 0, 0x200000 },
	{ 2 * GiB - 2 * MiB, 2 * MiB, 0, 2 * GiB - 2 * MiB },
	{ 4 * GiB, 2 * MiB, 0, 2 * GiB },
	{ 6 * GiB - 2 * MiB, 2 * MiB, 0, 4 * GiB - 2 * MiB },
	{ 0xbf000, 0x1000, 0, 0xbf000 },
	{ 0xbf000, 0x2000, -ERANGE, 0 },		/* into the ROM hole */
	{ 0xc0000, 0x1000, -ERANGE, 0 },		/* ROM */
	{ 2 * GiB - 2 * MiB, 4 * MiB, -ERANGE, 0 },	/* into the PCI hole */
	{ 3 * GiB, 2 * MiB, -ERANGE, 0 },		/* PCI hole */
	{ 4 * GiB - 2 * MiB, 4 * MiB, -ERANGE, 0 },	/* hole into high RAM */
	{ 6 * GiB - 2 * MiB, 4 * MiB, -ERANGE, 0 },	/* past the end */
	{ 6 * GiB, 2 * MiB, -ERANGE, 0 },
	{ 0x200000, 0, -ERANGE, 0 },			/* empty */
	{ UINT64_MAX - 4095, 8192, -ERANGE, 0 },	/* wraps */
	{ 0x100000, UINT64_MAX, -ERANGE, 0 },
	{ 0, 2 * GiB, -ERANGE, 0 },			/* spans two ranges */
};

static void test_translate_table(void **state)
{
	struct vm_layout l = { .nranges = 3, .ranges = split_ranges };

	for (size_t i = 0; i < sizeof(translate_cases) / sizeof(translate_cases[0]); i++) {
		const struct translate_case *c = &translate_cases[i];
		const struct vm_ram_range *rg = (void *)0x1;
		uint64_t off = 0xdead;

		assert_int_equal(vm_layout_translate(&l, c->gpa, c->len, &rg, &off),
				 c->expect);
		if (c->expect == 0) {
			assert_true(off == c->offset);
			assert_true(rg != (void *)0x1);
		} else {
			assert_true(off == 0xdead);	/* untouched */
			assert_true(rg == (void *)0x1);
		}
	}
	l.nranges = 0;
	assert_int_equal(vm_layout_translate(&l, 0, 1, NULL, NULL), -ERANGE);
}

/* A layout rediscovered after a QMP event: what counts as a change. */
static void test_layout_equal(void **state)
{
	struct vm_backing ba[2] = { { .name = "ram0", .size = 4 * GiB, .fd = 3 },
				    { .name = "dimm0", .size = GiB, .fd = 4 } };
	struct vm_backing bb[2] = { { .name = "ram0", .size = 4 * GiB, .fd = 7 },
				    { .name = "dimm0", .size = GiB, .fd = 8 } };
	struct vm_ram_range ra[4], rb[4];
	struct vm_layout a = { .nranges = 3, .ranges = ra, .nbackings = 1, .backings = ba };
	struct vm_layout b = { .nranges = 3, .ranges = rb, .nbackings = 1, .backings = bb };

	memcpy(ra, split_ranges, sizeof(split_ranges));
	memcpy(rb, split_ranges, sizeof(split_ranges));
	assert_true(vm_layout_equal(&a, &b));		/* other fds, same RAM */
	/* a DIMM plugged: one more range in one more backing */
	rb[3] = (struct vm_ram_range){ 8 * GiB, GiB, 0, 0, 0x7f0000000000, 1 };
	b.nranges = 4;
	b.nbackings = 2;
	assert_false(vm_layout_equal(&a, &b));
	ra[3] = rb[3];
	a.nranges = 4;
	a.nbackings = 2;
	assert_true(vm_layout_equal(&a, &b));
	/* virtio-mem style: the same ranges, a backing grown */
	bb[1].size = 2 * GiB;
	assert_false(vm_layout_equal(&a, &b));
	bb[1].size = GiB;
	/* the same place, another memdev */
	snprintf(bb[1].name, sizeof(bb[1].name), "dimm1");
	assert_false(vm_layout_equal(&a, &b));
	snprintf(bb[1].name, sizeof(bb[1].name), "dimm0");
	rb[2].hva = 0x1000;				/* QEMU mapped it elsewhere */
	assert_false(vm_layout_equal(&a, &b));
}

/* ---- parsers ---- */

static const char mtree_sample[] =
	"FlatView #0\n"
	" AS \"mch\", root: bus master container\n"
	" Root memory region: (none)\n"
	"  No rendered FlatView\n"
	"\n"
	"FlatView #1\n"
	" AS \"cpu-smm-0\", root: memory\n"
	" Root memory region: memory\n"
	"  0000000000000000-00000000000bffff (prio 0, ram): ram0\n"
	"  00000000000c0000-00000000000dffff (prio 1, rom): pc.rom\n"
	"\n"
	"FlatView #2\n"
	" AS \"memory\", root: system\n"
	" AS \"cpu-memory-0\", root: system\n"
	" Root memory region: system\n"
	"  0000000000000000-00000000000bffff (prio 0, ram): ram0\n"
	"  00000000000c0000-00000000000dffff (prio 1, rom): pc.rom\n"
	"  00000000000e0000-00000000000fffff (prio 0, rom): pc.bios @0000000000020000\n"
	"  0000000000100000-000000007fffffff (prio 0, ram): ram0 @0000000000100000\n"
	"  00000000fec00000-00000000fec00fff (prio 0, i/o): ioapic\n"
	"  0000000100000000-000000017fffffff (prio 0, ram): ram0 @0000000080000000\n"
	"  0000000180000000-0000000183ffffff (prio 0, ram): my dimm @0000000000000000\n"
	"\n"
	"FlatView #3\n"
	" AS \"I/O\", root: io\n"
	" Root memory region: io\n"
	"  0000000000000000-0000000000000007 (prio 0, i/o): dma-chan\n";

static void test_parse_mtree(void **state)
{
	struct vm_mtree_entry *e = NULL;
	size_t n = 0;

	assert_int_equal(vm_layout_parse_mtree(mtree_sample, &e, &n), 0);
	assert_int_equal(n, 4);
	assert_true(e[0].gpa == 0 && e[0].len == 0xc0000 && e[0].region_offset == 0);
	assert_string_equal(e[0].name, "ram0");
	assert_true(e[1].gpa == 0x100000 && e[1].len == 0x7ff00000 &&
		    e[1].region_offset == 0x100000);
	assert_true(e[2].gpa == 4 * GiB && e[2].len == 2 * GiB &&
		    e[2].region_offset == 2 * GiB);
	assert_string_equal(e[3].name, "my dimm");
	free(e);
}

struct bad_mtree {
	const char *name;
	const char *text;
	int expect;
	size_t n;
};

#define MT_HEAD "FlatView #0\n AS \"memory\", root: system\n Root memory region: system\n"

static const struct bad_mtree bad_mtrees[] = {
	{ "empty", "", -EPROTO, 0 },
	{ "no memory view", "FlatView #0\n AS \"I/O\", root: io\n Root memory region: io\n", -EPROTO, 0 },
	{ "no ram", MT_HEAD "  0000000000000000-0000000000000fff (prio 0, i/o): x\n", 0, 0 },
	{ "end before start", MT_HEAD "  0000000000002000-0000000000000fff (prio 0, ram): x\n", -EPROTO, 0 },
	{ "bad hex", MT_HEAD "  00000000000g0000-0000000000000fff (prio 0, ram): x\n", -EPROTO, 0 },
	{ "17 digits", MT_HEAD "  00000000000000000-0000000000000fff (prio 0, ram): x\n", -EPROTO, 0 },
	{ "no name", MT_HEAD "  0000000000000000-0000000000000fff (prio 0, ram): \n", -EPROTO, 0 },
	{ "missing prio", MT_HEAD "  0000000000000000-0000000000000fff ram: x\n", -EPROTO, 0 },
	{ "whole space", MT_HEAD "  0000000000000000-ffffffffffffffff (prio 0, ram): x\n", -EPROTO, 0 },
	{ "offset overflow", MT_HEAD "  0000000000000000-0000000000000fff (prio 0, ram): x @fffffffffffff800\n", -EPROTO, 0 },
	{ "two memory views", MT_HEAD "\nFlatView #1\n AS \"memory\", root: system\n", -EPROTO, 0 },
	{ "name too long", MT_HEAD "  0000000000000000-0000000000000fff (prio 0, ram): "
	  "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n",
	  -EPROTO, 0 },
	{ "crlf", MT_HEAD "  0000000000000000-0000000000000fff (prio 0, ram): x\r\n", 0, 1 },
	{ "no trailing newline", MT_HEAD "  0000000000000000-0000000000000fff (prio 0, ram): x", 0, 1 },
};

static void test_parse_mtree_odd(void **state)
{
	for (size_t i = 0; i < sizeof(bad_mtrees) / sizeof(bad_mtrees[0]); i++) {
		struct vm_mtree_entry *e = (void *)0x1;
		size_t n = 77;
		int r;

		fprintf(stderr, "# case: %s\n", bad_mtrees[i].name);
		r = vm_layout_parse_mtree(bad_mtrees[i].text, &e, &n);
		assert_int_equal(r, bad_mtrees[i].expect);
		if (r == 0) {
			assert_int_equal(n, bad_mtrees[i].n);
			if (n)
				assert_string_equal(e[0].name, "x");
			free(e);
		} else {
			assert_true(e == (void *)0x1 && n == 77);
		}
	}
}

static void test_parse_gpa2hva(void **state)
{
	uint64_t hva = 0;

	assert_int_equal(vm_layout_parse_gpa2hva(
		"Host virtual address for 0x0 (ram0) is 0x7f4b6bfff000\r\n", "ram0", &hva), 0);
	assert_true(hva == 0x7f4b6bfff000ull);
	assert_int_equal(vm_layout_parse_gpa2hva(
		"Host virtual address for 0x0 (ram0) is 0x7f4b6bfff000\r\n", "ram1", &hva), -EPROTO);
	assert_int_equal(vm_layout_parse_gpa2hva("Memory at address 0xfec00000 is not RAM\r\n",
						 NULL, &hva), -ENOENT);
	assert_int_equal(vm_layout_parse_gpa2hva(
		"Host virtual address for 0x0 (ram0) is 0x7f4b6bfff000 junk", NULL, &hva), -EPROTO);
	assert_int_equal(vm_layout_parse_gpa2hva(
		"Host virtual address for 0x0 (ram0) is 0x", NULL, &hva), -EPROTO);
	assert_int_equal(vm_layout_parse_gpa2hva(
		"Host virtual address for 0x0 (ram0) is 0x11112222333344445", NULL, &hva), -EPROTO);
	assert_true(hva == 0x7f4b6bfff000ull);
}

static const char maps_sample[] =
	"55d4c8a00000-55d4c8b00000 r-xp 00000000 fe:01 1234                       /usr/bin/qemu-system-x86_64\n"
	"7f4b67ffe000-7f4b6bffe000 rw-s 00000000 00:01 1048                       /memfd:memory-backend-memfd (deleted)\n"
	"7f4b6bfff000-7f4c6bfff000 rw-s 10000000 00:01 1047                       /memfd:memory-backend-memfd (deleted)\n"
	"7f4c6c000000-7f4c7c000000 rw-p 00000000 00:00 0 \n"
	"7ffd1000000-7ffd1021000 rw-p 00000000 00:00 0                          [stack]\n";

static void test_parse_maps(void **state)
{
	struct vm_maps_entry e;

	assert_int_equal(vm_layout_find_mapping(maps_sample, 0x7f4b6bfff000ull + 4096, 4096, &e), 0);
	assert_true(e.start == 0x7f4b6bfff000ull && e.offset == 0x10000000 && e.shared);
	assert_true(e.inode == 1047 && e.dev_major == 0 && e.dev_minor == 1);
	assert_string_equal(e.path, "/memfd:memory-backend-memfd (deleted)");
	assert_int_equal(vm_layout_find_mapping(maps_sample, 0x7f4c6c000000ull, 4096, &e), 0);
	assert_false(e.shared);
	assert_string_equal(e.path, "");
	/* straddling the end of a mapping */
	assert_int_equal(vm_layout_find_mapping(maps_sample, 0x7f4b6bffe000ull - 4096, 8192, &e), -ERANGE);
	assert_int_equal(vm_layout_find_mapping(maps_sample, 0x1000, 4096, &e), -ENOENT);
	assert_int_equal(vm_layout_find_mapping(maps_sample, 0x1000, 0, &e), -ERANGE);
	assert_int_equal(vm_layout_parse_maps_line("zz-10 rw-s 0 00:01 1 /x", 23, &e), -EPROTO);
	assert_int_equal(vm_layout_parse_maps_line("20-10 rw-s 0 00:01 1 /x", 23, &e), -EPROTO);
	assert_int_equal(vm_layout_parse_maps_line("10-20 rw-x 0 00:01 1 /x", 23, &e), -EPROTO);
	assert_int_equal(vm_layout_parse_maps_line("10-20 rw-s 0 00:01 x /x", 23, &e), -EPROTO);
	assert_int_equal(vm_layout_parse_maps_line("10-20 rw-s 0 0001 1 /x", 22, &e), -EPROTO);
	assert_int_equal(vm_layout_parse_maps_line("10-20 rw-s", 10, &e), -EPROTO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_mtree),
		cmocka_unit_test(test_parse_mtree_odd),
		cmocka_unit_test(test_parse_gpa2hva),
		cmocka_unit_test(test_parse_maps),
		cmocka_unit_test(test_translate_table),
		cmocka_unit_test(test_layout_equal),
		cmocka_unit_test(test_discover_table),
	};

	log_set_max_level(LOG_WARNING);
	if (!fixture_have_qemu())
		fprintf(stderr, "# " FIXTURE_QEMU " not installed: discovery test skips\n");
	return cmocka_run_group_tests_name("vm_layout", tests, NULL, NULL);
}
