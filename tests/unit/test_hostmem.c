// SPDX-License-Identifier: GPL-2.0
/*
 * test_hostmem.c - host memory measurement on captured samples, on odd
 * text, and on live processes: this test process (known allocations) and a
 * real paused QEMU whose guest RAM mapping is faulted in page by page
 * through HMP xp.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "hostmem.h"
#include "log.h"
#include "qemu_fixture.h"
#include "vm_layout.h"

#define MiB (1ull << 20)

static const char status_sample[] =
	"Name:\tqemu-system-x86\n"
	"Umask:\t0022\n"
	"State:\tS (sleeping)\n"
	"VmPeak:\t 5521876 kB\n"
	"VmRSS:\t   75912 kB\n"
	"RssAnon:\t   31204 kB\n"
	"RssFile:\t   40612 kB\n"
	"RssShmem:\t    4096 kB\n"
	"VmData:\t  290592 kB\n"
	"Threads:\t4\n";

struct status_case {
	const char *name;
	const char *text;
	int expect;
};

static const struct status_case status_cases[] = {
	{ "missing RssShmem", "VmRSS:\t1 kB\nRssAnon:\t1 kB\nRssFile:\t0 kB\n", -ENODATA },
	{ "kernel thread", "Name:\tkthreadd\nState:\tS\n", -ENODATA },
	{ "empty", "", -ENODATA },
	{ "not a number", "VmRSS:\tx kB\nRssAnon:\t1 kB\nRssFile:\t0 kB\nRssShmem:\t0 kB\n", -EPROTO },
	{ "no unit", "VmRSS:\t1\nRssAnon:\t1 kB\nRssFile:\t0 kB\nRssShmem:\t0 kB\n", -EPROTO },
	{ "wrong unit", "VmRSS:\t1 MB\nRssAnon:\t1 kB\nRssFile:\t0 kB\nRssShmem:\t0 kB\n", -EPROTO },
	{ "overflow", "VmRSS:\t99999999999999999999 kB\nRssAnon:\t1 kB\nRssFile:\t0 kB\nRssShmem:\t0 kB\n", -EPROTO },
	{ "times 1024 overflows", "VmRSS:\t18014398509481984 kB\nRssAnon:\t1 kB\nRssFile:\t0 kB\nRssShmem:\t0 kB\n", -EPROTO },
	{ "duplicate", "VmRSS:\t1 kB\nVmRSS:\t1 kB\nRssAnon:\t1 kB\nRssFile:\t0 kB\nRssShmem:\t0 kB\n", -EPROTO },
	{ "prefix is not a key", "VmRSSX:\t1 kB\nRssAnon:\t1 kB\nRssFile:\t0 kB\nRssShmem:\t0 kB\n", -ENODATA },
	{ "no trailing newline", "VmRSS:\t1 kB\nRssAnon:\t1 kB\nRssFile:\t0 kB\nRssShmem:\t0 kB", 0 },
};

static void test_parse_status(void **state)
{
	struct hostmem_status s;

	assert_int_equal(hostmem_parse_status(status_sample, &s), 0);
	assert_true(s.vm_rss == 75912 * 1024ull);
	assert_true(s.rss_anon == 31204 * 1024ull);
	assert_true(s.rss_file == 40612 * 1024ull);
	assert_true(s.rss_shmem == 4096 * 1024ull);
	for (size_t i = 0; i < sizeof(status_cases) / sizeof(status_cases[0]); i++) {
		struct hostmem_status t = { .vm_rss = 0xdead };
		int r;

		fprintf(stderr, "# case: %s\n", status_cases[i].name);
		r = hostmem_parse_status(status_cases[i].text, &t);
		assert_int_equal(r, status_cases[i].expect);
		if (r < 0)
			assert_true(t.vm_rss == 0xdead);
	}
}

/* RssAnon of this process grows by what it touches. */
static void test_live_status_self(void **state)
{
	struct hostmem_status a, b;
	size_t len = 64 * MiB;
	uint8_t *p;

	assert_int_equal(hostmem_read_status(getpid(), &a), 0);
	assert_true(a.vm_rss == a.rss_anon + a.rss_file + a.rss_shmem);
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(p != MAP_FAILED);
	madvise(p, len, MADV_NOHUGEPAGE);
	memset(p, 0x5a, len);
	assert_int_equal(hostmem_read_status(getpid(), &b), 0);
	assert_true(b.rss_anon >= a.rss_anon + len - 4 * MiB);
	munmap(p, len);
	assert_int_equal(hostmem_read_status(-5, &b), -ENOENT);
}

static const char smaps_sample[] =
	"7f4b67ffe000-7f4b6bffe000 rw-s 00000000 00:01 1048                       /memfd:memory-backend-memfd (deleted)\n"
	"Size:              65536 kB\n"
	"KernelPageSize:        4 kB\n"
	"Rss:                8192 kB\n"
	"AnonHugePages:         0 kB\n"
	"ShmemPmdMapped:     6144 kB\n"
	"FilePmdMapped:         0 kB\n"
	"Shared_Hugetlb:        0 kB\n"
	"Private_Hugetlb:       0 kB\n"
	"THPeligible:    1\n"
	"VmFlags: rd wr sh mr mw me ms sd hg\n"
	"7f4b6c000000-7f4b70000000 rw-p 00000000 00:00 0 \n"
	"Size:              65536 kB\n"
	"Rss:               65536 kB\n"
	"AnonHugePages:     63488 kB\n"
	"ShmemPmdMapped:        0 kB\n"
	"VmFlags: rd wr mr mw me ac\n"
	"ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]\n"
	"Size:                  4 kB\n"
	"Rss:                   0 kB\n";

struct smaps_case {
	const char *name;
	struct hostmem_vrange ranges[2];
	size_t nranges;
	unsigned int nmappings;
	uint64_t rss_kb, huge_kb;
};

static const struct smaps_case smaps_cases[] = {
	{ "all", { { 0, 0 } }, 0, 3, 8192 + 65536, 6144 + 63488 },
	{ "memfd only", { { 0x7f4b67ffe000ull, 4096 } }, 1, 1, 8192, 6144 },
	{ "anon only (end of range)", { { 0x7f4b6ffff000ull, 4096 } }, 1, 1, 65536, 63488 },
	{ "both", { { 0x7f4b67ffe000ull, 1 }, { 0x7f4b6c000000ull, 1 } }, 2, 2, 73728, 69632 },
	{ "gap between", { { 0x7f4b6bffe000ull, 0x2000 } }, 1, 0, 0, 0 },
	{ "nothing", { { 0x1000, 0x1000 } }, 1, 0, 0, 0 },
};

static void test_parse_smaps(void **state)
{
	for (size_t i = 0; i < sizeof(smaps_cases) / sizeof(smaps_cases[0]); i++) {
		const struct smaps_case *c = &smaps_cases[i];
		struct hostmem_smaps s;

		fprintf(stderr, "# case: %s\n", c->name);
		assert_int_equal(hostmem_parse_smaps(smaps_sample, c->ranges, c->nranges, &s), 0);
		assert_int_equal(s.nmappings, c->nmappings);
		assert_true(s.rss == c->rss_kb * 1024);
		assert_true(hostmem_smaps_huge_bytes(&s) == c->huge_kb * 1024);
	}
}

static const char *const bad_smaps[] = {
	"Rss: 4 kB\n",					/* field before any header */
	"garbage\n",
	"1000-2000 rw-p 0 00:00 0\nRss: x kB\n",
	"1000-2000 rw-p 0 00:00 0\nRss: 4\n",
	"2000-1000 rw-p 0 00:00 0\n",			/* end before start */
	"1000-2000 rw-p 0 00:00 0\nno colon here\n",
};

static void test_parse_smaps_odd(void **state)
{
	struct hostmem_smaps s = { .rss = 0xdead };

	for (size_t i = 0; i < sizeof(bad_smaps) / sizeof(bad_smaps[0]); i++)
		assert_int_equal(hostmem_parse_smaps(bad_smaps[i], NULL, 0, &s), -EPROTO);
	assert_true(s.rss == 0xdead);
	/* blank lines are tolerated */
	assert_int_equal(hostmem_parse_smaps("1000-2000 rw-p 0 00:00 0\nRss: 4 kB\n\n", NULL, 0, &s), 0);
	assert_true(s.rss == 4096);
	assert_int_equal(hostmem_parse_smaps("", NULL, 0, &s), 0);
	assert_true(s.rss == 0 && s.nmappings == 0);
}

struct thp_case {
	const char *text;
	int expect;
	enum hostmem_shmem_thp mode;
};

static const struct thp_case shmem_cases[] = {
	{ "always within_size advise [never] deny force\n", 0, HOSTMEM_SHMEM_NEVER },
	{ "[always] within_size advise never deny force", 0, HOSTMEM_SHMEM_ALWAYS },
	{ "always [within_size] advise never deny force\n", 0, HOSTMEM_SHMEM_WITHIN_SIZE },
	{ "always within_size [advise] never deny force\n", 0, HOSTMEM_SHMEM_ADVISE },
	{ "always within_size advise never [deny] force\n", 0, HOSTMEM_SHMEM_DENY },
	{ "always within_size advise never deny [force]\n", 0, HOSTMEM_SHMEM_FORCE },
	{ "always within_size advise never deny force\n", -EPROTO, 0 },
	{ "[always] [never]\n", -EPROTO, 0 },
	{ "always [sometimes] never\n", -EPROTO, 0 },
	{ "[never\n", -EPROTO, 0 },
	{ "[]\n", -EPROTO, 0 },
	{ "", -EPROTO, 0 },
};

static void test_parse_thp(void **state)
{
	enum hostmem_thp t = HOSTMEM_THP_NEVER;

	for (size_t i = 0; i < sizeof(shmem_cases) / sizeof(shmem_cases[0]); i++) {
		enum hostmem_shmem_thp m = (enum hostmem_shmem_thp)99;

		assert_int_equal(hostmem_parse_shmem_thp(shmem_cases[i].text, &m),
				 shmem_cases[i].expect);
		if (shmem_cases[i].expect == 0)
			assert_int_equal(m, shmem_cases[i].mode);
		else
			assert_int_equal(m, 99);
	}
	assert_true(hostmem_shmem_thp_allows_huge(HOSTMEM_SHMEM_ADVISE));
	assert_true(hostmem_shmem_thp_allows_huge(HOSTMEM_SHMEM_FORCE));
	assert_false(hostmem_shmem_thp_allows_huge(HOSTMEM_SHMEM_NEVER));
	assert_false(hostmem_shmem_thp_allows_huge(HOSTMEM_SHMEM_DENY));
	assert_int_equal(hostmem_parse_thp("always [madvise] never\n", &t), 0);
	assert_int_equal(t, HOSTMEM_THP_MADVISE);
	assert_int_equal(hostmem_parse_thp("[always] madvise never\n", &t), 0);
	assert_int_equal(t, HOSTMEM_THP_ALWAYS);
	assert_int_equal(hostmem_parse_thp("always madvise [advise]\n", &t), -EPROTO);
	assert_int_equal(t, HOSTMEM_THP_ALWAYS);
}

static void test_live_thp(void **state)
{
	enum hostmem_shmem_thp m;
	enum hostmem_thp t;

	if (access(HOSTMEM_SHMEM_ENABLED_PATH, R_OK) != 0) {
		fprintf(stderr, "# skip: no %s (kernel without THP)\n", HOSTMEM_SHMEM_ENABLED_PATH);
		skip();
	}
	assert_int_equal(hostmem_read_shmem_thp(&m), 0);
	assert_int_equal(hostmem_read_thp(&t), 0);
}

/* Backing measurements on a memfd with pages at known places. */
static void test_backing_measures(void **state)
{
	uint64_t bytes = 1;
	int fd = memfd_create("vdf-test", MFD_CLOEXEC);
	char page[4096];

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 16 * MiB), 0);
	assert_int_equal(hostmem_backing_allocated(fd, &bytes), 0);
	assert_true(bytes == 0);
	assert_int_equal(hostmem_backing_data_bytes(fd, 0, 16 * MiB, &bytes), 0);
	assert_true(bytes == 0);
	memset(page, 7, sizeof(page));
	assert_int_equal(pwrite(fd, page, 4096, 0), 4096);
	assert_int_equal(pwrite(fd, page, 4096, 5 * MiB + 8192), 4096);
	assert_int_equal(pwrite(fd, page, 4096, 5 * MiB + 12288), 4096);
	assert_int_equal(pwrite(fd, page, 4096, 16 * MiB - 4096), 4096);
	assert_int_equal(hostmem_backing_allocated(fd, &bytes), 0);
	assert_true(bytes == 4 * 4096);
	assert_int_equal(hostmem_backing_data_bytes(fd, 0, 16 * MiB, &bytes), 0);
	assert_true(bytes == 4 * 4096);
	assert_int_equal(hostmem_backing_data_bytes(fd, 5 * MiB, MiB, &bytes), 0);
	assert_true(bytes == 2 * 4096);
	/* range starting inside data, ending inside data */
	assert_int_equal(hostmem_backing_data_bytes(fd, 5 * MiB + 10240, 4096, &bytes), 0);
	assert_true(bytes == 4096);
	/* beyond EOF: nothing */
	assert_int_equal(hostmem_backing_data_bytes(fd, 32 * MiB, MiB, &bytes), 0);
	assert_true(bytes == 0);
	assert_int_equal(hostmem_backing_data_bytes(fd, UINT64_MAX, 2, &bytes), -ERANGE);
	close(fd);
	assert_int_equal(hostmem_backing_allocated(fd, &bytes), -EBADF);
}

/* smaps of a real QEMU's guest RAM mapping, faulted in page by page. */
static void test_live_qemu_smaps(void **state)
{
	static const char *const args[] = {
		"-machine", "q35,accel=tcg,memory-backend=ram0", "-m", "256M",
		"-object", "memory-backend-memfd,id=ram0,size=256M,share=on", NULL,
	};
	struct qemu_vm vm;
	struct vm_layout *l = NULL;
	struct hostmem_smaps a, b;
	struct hostmem_status st;
	struct hostmem_vrange vr;
	uint64_t alloc0, alloc1;
	int r;

	if (!fixture_have_qemu()) {
		fprintf(stderr, "# skip: " FIXTURE_QEMU " not installed\n");
		skip();
	}
	r = qemu_vm_start(&vm, args);
	if (r < 0)
		fail_msg("qemu: %s", strerror(-r));
	r = vm_layout_discover(vm.qmp, vm.pid, &l);
	if (r < 0) {
		qemu_vm_stop(&vm);
		fail_msg("layout: %s", strerror(-r));
	}
	vr.start = l->backings[0].hva;
	vr.len = l->backings[0].size;
	assert_int_equal(hostmem_read_smaps(vm.pid, &vr, 1, &a), 0);
	assert_int_equal(a.nmappings, 1);
	assert_int_equal(hostmem_backing_allocated(l->backings[0].fd, &alloc0), 0);
	for (int i = 0; i < 10; i++) {
		char cmd[64], *out = NULL;

		snprintf(cmd, sizeof(cmd), "xp /1xg 0x%llx", 100 * MiB + i * 8192ull);
		assert_int_equal(qmp_hmp(vm.qmp, cmd, 5000, &out), 0);
		free(out);
	}
	assert_int_equal(hostmem_read_smaps(vm.pid, &vr, 1, &b), 0);
	assert_true(b.rss - a.rss == 10 * 4096);
	assert_int_equal(hostmem_backing_allocated(l->backings[0].fd, &alloc1), 0);
	assert_true(alloc1 - alloc0 == 10 * 4096);
	assert_int_equal(hostmem_read_status(vm.pid, &st), 0);
	assert_true(st.rss_shmem >= 10 * 4096);
	vm_layout_free(l);
	qemu_vm_stop(&vm);
}

/* huge pages of a shared mapping in this process show as ShmemPmdMapped */
static void test_live_smaps_huge(void **state)
{
	size_t len = 4 * MiB, rl = len + 2 * MiB;
	struct hostmem_smaps s, none;
	struct hostmem_vrange vr;
	uint8_t *resv, *a;
	int fd, r;

	if (access(HOSTMEM_SHMEM_ENABLED_PATH, W_OK) != 0) {
		fprintf(stderr, "# skip: %s not writable\n", HOSTMEM_SHMEM_ENABLED_PATH);
		skip();
	}
	fd = memfd_create("vdf-test-huge", MFD_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, len), 0);
	resv = mmap(NULL, rl, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(resv != MAP_FAILED);
	a = (uint8_t *)(((uintptr_t)resv + 2 * MiB - 1) & ~(uintptr_t)(2 * MiB - 1));
	assert_true(mmap(a, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == a);
	r = fixture_sysfs_set(HOSTMEM_SHMEM_ENABLED_PATH, "advise");
	if (r < 0)
		fail_msg("set shmem_enabled: %s", strerror(-r));
	madvise(a, len, MADV_HUGEPAGE);
	memset(a, 1, len);
	assert_int_equal(fixture_sysfs_restore(), 0);
	vr.start = (uintptr_t)a;
	vr.len = len;
	assert_int_equal(hostmem_read_smaps(getpid(), &vr, 1, &s), 0);
	assert_int_equal(s.nmappings, 1);
	assert_true(s.shmem_pmd == len);
	assert_true(hostmem_smaps_huge_bytes(&s) == len);
	vr.start = (uintptr_t)resv;	/* the PROT_NONE head only */
	vr.len = a - resv;
	if (vr.len) {
		assert_int_equal(hostmem_read_smaps(getpid(), &vr, 1, &none), 0);
		assert_true(none.shmem_pmd == 0);
	}
	munmap(resv, rl);
	close(fd);
}

/* mountinfo as a host shows it: a huge tmpfs, a plain one, a disk fs */
static const char mountinfo_sample[] =
	"22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
	"25 22 0:21 / /dev/shm rw,nosuid,nodev shared:4 - tmpfs tmpfs rw,inode64\n"
	"90 22 0:45 / /srv/vmram rw,relatime shared:50 - tmpfs vmram "
	"rw,size=8388608k,huge=within_size,inode64\n"
	"91 22 0:46 / /srv/adv rw,relatime - tmpfs t rw,huge=advise\n"
	"92 22 0:47 / /srv/odd rw,relatime - tmpfs t rw,huge=sometimes\n"
	"93 22 0:48 / /srv/notmpfs rw,relatime - ext4 /dev/vdb huge=always\n"
	"94 22 0:49 / /srv/last rw - tmpfs t huge=always";

static void test_parse_tmpfs_huge(void **state)
{
	static const struct {
		unsigned int major, minor;
		int expect;
		enum hostmem_shmem_thp mode;
	} cases[] = {
		{ 0, 45, 0, HOSTMEM_SHMEM_WITHIN_SIZE },
		{ 0, 21, 0, HOSTMEM_SHMEM_NEVER },	/* no huge=: tmpfs default */
		{ 0, 46, 0, HOSTMEM_SHMEM_ADVISE },
		{ 0, 47, -EPROTO, 0 },			/* unknown value */
		{ 0, 48, -ENOENT, 0 },			/* not a tmpfs */
		{ 0, 49, 0, HOSTMEM_SHMEM_ALWAYS },	/* last line, no newline */
		{ 254, 1, -ENOENT, 0 },
		{ 0, 99, -ENOENT, 0 },			/* not listed */
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		enum hostmem_shmem_thp mode = HOSTMEM_SHMEM_DENY;
		int r = hostmem_parse_tmpfs_huge(mountinfo_sample,
						 makedev(cases[i].major, cases[i].minor),
						 &mode);

		assert_int_equal(r, cases[i].expect);
		if (r == 0)
			assert_int_equal(mode, cases[i].mode);
		else
			assert_int_equal(mode, HOSTMEM_SHMEM_DENY);	/* untouched */
	}
	{
		enum hostmem_shmem_thp mode;

		assert_int_equal(hostmem_parse_tmpfs_huge("", makedev(0, 45), &mode),
				 -ENOENT);
		assert_int_equal(hostmem_parse_tmpfs_huge("garbage\n\n - tmpfs",
							  makedev(0, 45), &mode),
				 -ENOENT);
	}
}

/* A real tmpfs mounted with each huge= value, read back through an fd. */
static void test_live_tmpfs_huge(void **state)
{
	static const struct {
		const char *opt;
		enum hostmem_shmem_thp mode;
	} cases[] = {
		{ "huge=within_size", HOSTMEM_SHMEM_WITHIN_SIZE },
		{ "huge=advise", HOSTMEM_SHMEM_ADVISE },
		{ "size=4m", HOSTMEM_SHMEM_NEVER },
	};
	char dir[] = "/tmp/vdf-tmpfs-XXXXXX", path[64];
	enum hostmem_shmem_thp sys, mode;
	int fd;

	if (hostmem_read_shmem_thp(&sys) == 0 &&
	    (sys == HOSTMEM_SHMEM_DENY || sys == HOSTMEM_SHMEM_FORCE)) {
		fprintf(stderr, "# skip: shmem_enabled overrides every mount\n");
		skip();
	}
	assert_non_null(mkdtemp(dir));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (mount("tmpfs", dir, "tmpfs", 0, cases[i].opt) < 0) {
			int e = errno;

			rmdir(dir);
			if (e == EPERM) {
				fprintf(stderr, "# skip: cannot mount tmpfs\n");
				skip();
			}
			fail_msg("mount tmpfs %s: %s", cases[i].opt, strerror(e));
		}
		snprintf(path, sizeof(path), "%s/f", dir);
		fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		assert_true(fd >= 0);
		assert_int_equal(hostmem_tmpfs_huge(fd, &mode), 0);
		assert_int_equal(mode, cases[i].mode);
		close(fd);
		assert_int_equal(umount(dir), 0);
	}
	rmdir(dir);
	fd = memfd_create("vdf-not-a-mount", MFD_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(hostmem_tmpfs_huge(fd, &mode), -ENOENT);
	close(fd);
}

static int teardown_group(void **state)
{
	fixture_sysfs_restore();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_status),
		cmocka_unit_test(test_live_status_self),
		cmocka_unit_test(test_parse_smaps),
		cmocka_unit_test(test_parse_smaps_odd),
		cmocka_unit_test(test_parse_thp),
		cmocka_unit_test(test_live_thp),
		cmocka_unit_test(test_backing_measures),
		cmocka_unit_test(test_live_qemu_smaps),
		cmocka_unit_test(test_live_smaps_huge),
		cmocka_unit_test(test_parse_tmpfs_huge),
		cmocka_unit_test(test_live_tmpfs_huge),
	};

	log_set_max_level(LOG_WARNING);
	return cmocka_run_group_tests_name("hostmem", tests, NULL, teardown_group);
}
