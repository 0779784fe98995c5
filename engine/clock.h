/*
 * clock.h -- the clock every duration in the engine is measured on:
 * seconds of CLOCK_MONOTONIC.
 *
 * Not libev's ev_now(): the loop's time follows the wall clock, which NTP,
 * an operator or a resumed virtual machine may step. Set back an hour, it
 * kept a hung runner from looking hung for that hour; set forward, it made
 * every batch in flight look late at once. Timers are not affected (libev
 * runs them on the monotonic clock); only times the engine stores and
 * subtracts are, and they all come from here.
 */
#ifndef WL_CLOCK_H
#define WL_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Seconds since an arbitrary point (the machine's boot): always > 0. For
 * durations and deadlines. */
static inline double
wl_clock_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The same clock in nanoseconds: what every latency (ingest times, the
 * histograms, the bench tools' stamps) is measured in. */
static inline uint64_t
wl_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#endif
