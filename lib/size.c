// SPDX-License-Identifier: GPL-2.0
/*
 * size.c - parsing and printing of byte sizes.
 *
 * Sizes reach the daemon from its config file, from --vm specs and from
 * vmdefragctl's arguments.  A size is a decimal integer followed by an
 * optional binary multiplier letter (K, M, G, T, either case) and an
 * optional "B" or "iB".  Anything else is refused rather than guessed at:
 * "1.5G", "-2M", " 2M", "2MB junk" and "0x100" are all -EINVAL, and a value
 * whose bytes do not fit 64 bits is -ERANGE.  Guest RAM is handled in
 * 2 MiB blocks, so most sizes must be whole blocks: size_parse_blocks()
 * says -EDOM when one is not.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "size.h"

static int size_shift(const char *suffix, unsigned int *ret_shift)
{
	static const char letters[] = "KMGT";
	const char *p;
	unsigned int shift = 0;

	if (*suffix == '\0') {
		*ret_shift = 0;
		return 0;
	}
	p = strchr(letters, toupper((unsigned char)*suffix));
	if (p && *suffix) {
		shift = 10 * (unsigned int)(p - letters + 1);
		suffix++;
	}
	if (*suffix == '\0' || strcasecmp(suffix, "B") == 0 ||
	    (shift && strcasecmp(suffix, "iB") == 0)) {
		*ret_shift = shift;
		return 0;
	}
	return -EINVAL;
}

int size_parse(const char *s, uint64_t *ret_bytes)
{
	uint64_t v = 0;
	unsigned int shift;
	const char *p = s;
	int r;

	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	for (; isdigit((unsigned char)*p); p++) {
		unsigned int d = (unsigned int)(*p - '0');

		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	r = size_shift(p, &shift);
	if (r < 0)
		return r;
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*ret_bytes = v << shift;
	return 0;
}

int size_parse_blocks(const char *s, uint64_t *ret_bytes)
{
	uint64_t v;
	int r;

	r = size_parse(s, &v);
	if (r < 0)
		return r;
	if (v % SIZE_BLOCK)
		return -EDOM;
	*ret_bytes = v;
	return 0;
}

const char *size_format(uint64_t bytes, char *buf, size_t bufsz)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
	unsigned int u = 0;
	uint64_t scale = 1;

	while (u + 1 < sizeof(units) / sizeof(units[0]) && bytes / scale >= 1024) {
		scale <<= 10;
		u++;
	}
	if (u == 0 || bytes % scale == 0)
		snprintf(buf, bufsz, "%" PRIu64 " %s", bytes / scale, units[u]);
	else
		snprintf(buf, bufsz, "%.1f %s", (double)bytes / (double)scale, units[u]);
	return buf;
}
