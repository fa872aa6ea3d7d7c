// SPDX-License-Identifier: GPL-2.0
/*
 * clock.c - milliseconds on CLOCK_MONOTONIC.
 *
 * Timers, retry backoffs, rate-limit windows and write deadlines, in the
 * daemon and in the agent, all count on this clock, so a wall-clock step
 * (NTP, a restored VM) never fires or stalls any of them.
 */
#include <time.h>

#include "clock.h"

uint64_t clock_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}
