/*
 * hist.h -- a log-linear latency histogram in fixed memory.
 *
 * Values (nanoseconds, or any unsigned count) fall into buckets of 32
 * sub-buckets per power of two: below 32 every value has its own bucket,
 * above it a bucket spans 1/32 of its power of two, so a percentile read
 * back is at most ~3% above the true value. Recording is a few
 * instructions and never allocates, so it can sit on the hot path; the
 * struct is about 15 KiB whatever the number of samples.
 *
 * Used by the engine (its "ingest to done" latency per source) and by the
 * benchmark tools in bench/ (end-to-end latency), so both report the same
 * way: the percentile's value next to the power-of-two bin holding it, as
 * Wallaroo's own latency table did.
 */
#ifndef WL_HIST_H
#define WL_HIST_H

#include <stdint.h>
#include <stdio.h>

/* wl_mono_ns(): the clock every latency recorded here is in. */
#include "clock.h"

#define WL_HIST_SUB_BITS 5
#define WL_HIST_SUB (1u << WL_HIST_SUB_BITS)
#define WL_HIST_NBUCKETS ((64 - WL_HIST_SUB_BITS + 1) * WL_HIST_SUB)

typedef struct {
	uint64_t count;
	uint64_t min, max;
	double sum;
	uint64_t n[WL_HIST_NBUCKETS];
} wl_hist;

/* Empties `h` (all counts 0). */
void wl_hist_init(wl_hist *h);

/* The bucket a value falls in. */
static inline unsigned
wl_hist_index(uint64_t v)
{
	unsigned e;

	if (v < WL_HIST_SUB)
		return (unsigned)v;
	e = 63u - (unsigned)__builtin_clzll(v); /* floor(log2 v) >= SUB_BITS */
	return (e - WL_HIST_SUB_BITS + 1) * WL_HIST_SUB +
	    (unsigned)(v >> (e - WL_HIST_SUB_BITS)) - WL_HIST_SUB;
}

/* Counts `n` samples of value `v`. */
static inline void
wl_hist_record_n(wl_hist *h, uint64_t v, uint64_t n)
{
	if (n == 0)
		return;
	if (h->count == 0 || v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
	h->count += n;
	h->sum += (double)v * (double)n;
	h->n[wl_hist_index(v)] += n;
}

static inline void
wl_hist_record(wl_hist *h, uint64_t v)
{
	wl_hist_record_n(h, v, 1);
}

/* The lowest and highest value bucket `i` holds. */
uint64_t wl_hist_bucket_low(unsigned i);
uint64_t wl_hist_bucket_high(unsigned i);

/* The value at percentile `p` (0..100): the highest value of the bucket
 * holding the sample of that rank, capped at the recorded maximum. 0 when
 * the histogram is empty. */
uint64_t wl_hist_percentile(const wl_hist *h, double p);

/* The smallest power of two >= v (1 for 0): the bin Wallaroo's latency
 * table would put v in. */
uint64_t wl_hist_pow2_bin(uint64_t v);

/* Adds every sample of `src` to `dst`. */
void wl_hist_merge(wl_hist *dst, const wl_hist *src);

/* Writes one line, "<prefix> samples=N mean_us=.. p50_us=.. p50_bin_us=..
 * ... p99.99_us=.. p99.99_bin_us=.. max_us=..", for values recorded in
 * nanoseconds (percentiles 50, 90, 99, 99.9, 99.99). */
void wl_hist_print_us(const wl_hist *h, FILE *out, const char *prefix);

#endif
