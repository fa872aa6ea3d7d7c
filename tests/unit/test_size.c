// SPDX-License-Identifier: GPL-2.0
/*
 * test_size.c - size parsing and printing (lib/size.c), table-driven:
 * every accepted spelling with its value, every refused one with the errno
 * the daemon turns into its error message (syntax, overflow, not whole
 * 2 MiB blocks).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "size.h"

struct size_case {
	const char *in;
	int ret;		/* of size_parse */
	uint64_t bytes;
	int blocks_ret;		/* of size_parse_blocks */
};

static const struct size_case size_cases[] = {
	{ "0", 0, 0, 0 },
	{ "4096", 0, 4096, -EDOM },
	{ "2097152", 0, 2ull << 20, 0 },
	{ "1K", 0, 1024, -EDOM },
	{ "512k", 0, 512ull << 10, -EDOM },
	{ "2M", 0, 2ull << 20, 0 },
	{ "3M", 0, 3ull << 20, -EDOM },
	{ "256M", 0, 256ull << 20, 0 },
	{ "256MiB", 0, 256ull << 20, 0 },
	{ "256mb", 0, 256ull << 20, 0 },
	{ "2G", 0, 2ull << 30, 0 },
	{ "1T", 0, 1ull << 40, 0 },
	{ "100B", 0, 100, -EDOM },
	{ "16777215T", 0, 16777215ull << 40, 0 },
	{ "18446744073709551615", 0, UINT64_MAX, -EDOM },
	{ "18446744073709551616", -ERANGE, 0, -ERANGE },
	{ "16777216T", -ERANGE, 0, -ERANGE },
	{ "99999999999999999999G", -ERANGE, 0, -ERANGE },
	{ "17179869184G", -ERANGE, 0, -ERANGE },
	{ "", -EINVAL, 0, -EINVAL },
	{ "M", -EINVAL, 0, -EINVAL },
	{ "-2M", -EINVAL, 0, -EINVAL },
	{ " 2M", -EINVAL, 0, -EINVAL },
	{ "2M ", -EINVAL, 0, -EINVAL },
	{ "1.5G", -EINVAL, 0, -EINVAL },
	{ "2X", -EINVAL, 0, -EINVAL },
	{ "2iB", -EINVAL, 0, -EINVAL },
	{ "2MM", -EINVAL, 0, -EINVAL },
	{ "0x100", -EINVAL, 0, -EINVAL },
};

static void test_size_parse_table(void **state)
{
	for (size_t i = 0; i < sizeof(size_cases) / sizeof(size_cases[0]); i++) {
		const struct size_case *c = &size_cases[i];
		uint64_t v = 0xdeadbeef, vb = 0xdeadbeef;
		int r = size_parse(c->in, &v);
		int rb = size_parse_blocks(c->in, &vb);

		if (r != c->ret || rb != c->blocks_ret)
			fail_msg("'%s': size_parse %d (want %d), blocks %d (want %d)",
				 c->in, r, c->ret, rb, c->blocks_ret);
		if (r == 0)
			assert_int_equal(v, c->bytes);
		else
			assert_int_equal(v, 0xdeadbeef);	/* untouched */
		if (rb == 0)
			assert_int_equal(vb, c->bytes);
		else
			assert_int_equal(vb, 0xdeadbeef);
	}
	assert_int_equal(size_parse(NULL, &(uint64_t){0}), -EINVAL);
}

static void test_size_format(void **state)
{
	static const struct { uint64_t v; const char *s; } cases[] = {
		{ 0, "0 B" }, { 1023, "1023 B" }, { 1024, "1 KiB" },
		{ 2ull << 20, "2 MiB" }, { 3ull << 29, "1.5 GiB" },
		{ 256ull << 20, "256 MiB" }, { UINT64_MAX, "16.0 EiB" },
	};
	char buf[32];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_string_equal(size_format(cases[i].v, buf, sizeof(buf)), cases[i].s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_size_parse_table),
		cmocka_unit_test(test_size_format),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
