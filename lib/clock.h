/* SPDX-License-Identifier: GPL-2.0 */
/*
 * clock.h - the one clock deadlines are measured on (prefix clock_).
 */
#ifndef VDF_CLOCK_H
#define VDF_CLOCK_H

#include <stdint.h>

/* CLOCK_MONOTONIC in milliseconds: never jumps with the wall clock. */
uint64_t clock_now_ms(void);

#endif /* VDF_CLOCK_H */
