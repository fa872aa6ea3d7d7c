/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Seeded, reproducible pseudo-random numbers for the guest workloads
 * (splitmix64): the same seed gives the same fragmentation and the same
 * memcheck pattern on every kernel and every run.
 */
#ifndef VDF_TEST_PRNG_H
#define VDF_TEST_PRNG_H

#include <stdint.h>

static inline uint64_t prng_mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

struct prng {
	uint64_t state;
};

static inline uint64_t prng_next(struct prng *p)
{
	p->state += 0x9e3779b97f4a7c15ULL;
	return prng_mix(p->state);
}

/* Uniform in [0, n), n > 0. */
static inline uint64_t prng_below(struct prng *p, uint64_t n)
{
	return prng_next(p) % n;
}

#endif
