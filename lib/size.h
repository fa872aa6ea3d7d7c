/* SPDX-License-Identifier: GPL-2.0 */
/*
 * size.h - byte sizes as people write them (prefix size_).
 *
 * "4096", "512K", "256M", "2G", "1T" (binary multiples; an optional "iB"
 * or "B" after the letter is accepted, case-insensitive).  No fractions,
 * no signs, no spaces.
 */
#ifndef VDF_SIZE_H
#define VDF_SIZE_H

#include <stddef.h>
#include <stdint.h>

#define SIZE_BLOCK	(2ull << 20)	/* granule of every guest RAM size */

/*
 * Parses s into *ret_bytes.  -EINVAL: empty, not a number, unknown suffix;
 * -ERANGE: does not fit 64 bits.
 */
int size_parse(const char *s, uint64_t *ret_bytes);

/* size_parse(), and the result must be a multiple of SIZE_BLOCK (-EDOM). */
int size_parse_blocks(const char *s, uint64_t *ret_bytes);

/* "1.5 GiB", "512 MiB", "4096 B" into buf; returns buf. */
const char *size_format(uint64_t bytes, char *buf, size_t bufsz);

#endif /* VDF_SIZE_H */
