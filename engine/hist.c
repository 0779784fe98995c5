/*
 * hist.c -- reading the log-linear histogram back (see hist.h).
 */
#include "hist.h"

#include <string.h>

void
wl_hist_init(wl_hist *h)
{
	memset(h, 0, sizeof(*h));
}

uint64_t
wl_hist_bucket_low(unsigned i)
{
	unsigned b = i / WL_HIST_SUB, s = i % WL_HIST_SUB;

	if (b == 0)
		return s;
	return (uint64_t)(WL_HIST_SUB + s) << (b - 1);
}

uint64_t
wl_hist_bucket_high(unsigned i)
{
	unsigned b = i / WL_HIST_SUB;

	if (b == 0)
		return i;
	/* The top bucket ends at UINT64_MAX; computing its end + 1 would
	 * overflow, hence low + width - 1. */
	return wl_hist_bucket_low(i) + ((uint64_t)1 << (b - 1)) - 1;
}

uint64_t
wl_hist_percentile(const wl_hist *h, double p)
{
	uint64_t rank, seen = 0;

	if (h->count == 0)
		return 0;
	if (p <= 0)
		return h->min;
	if (p >= 100)
		return h->max;
	/* The sample of rank ceil(p% of count), 1-based: p50 of 1..4 is 2. */
	rank = (uint64_t)((p / 100.0) * (double)h->count);
	if ((double)rank < (p / 100.0) * (double)h->count)
		rank++;
	if (rank == 0)
		rank = 1;
	for (unsigned i = 0; i < WL_HIST_NBUCKETS; i++) {
		seen += h->n[i];
		if (seen >= rank) {
			uint64_t v = wl_hist_bucket_high(i);
			return v > h->max ? h->max : v < h->min ? h->min : v;
		}
	}
	return h->max;
}

uint64_t
wl_hist_pow2_bin(uint64_t v)
{
	uint64_t b = 1;

	if (v > ((uint64_t)1 << 63))
		return UINT64_MAX;
	while (b < v)
		b <<= 1;
	return b;
}

void
wl_hist_merge(wl_hist *dst, const wl_hist *src)
{
	if (src->count == 0)
		return;
	if (dst->count == 0 || src->min < dst->min)
		dst->min = src->min;
	if (src->max > dst->max)
		dst->max = src->max;
	dst->count += src->count;
	dst->sum += src->sum;
	for (unsigned i = 0; i < WL_HIST_NBUCKETS; i++)
		dst->n[i] += src->n[i];
}

void
wl_hist_print_us(const wl_hist *h, FILE *out, const char *prefix)
{
	static const struct { const char *name; double p; } pct[] = {
		{ "p50", 50 }, { "p90", 90 }, { "p99", 99 }, { "p99.9", 99.9 },
		{ "p99.99", 99.99 },
	};

	fprintf(out, "%s samples=%llu mean_us=%.1f", prefix,
	    (unsigned long long)h->count,
	    h->count ? h->sum / (double)h->count / 1000.0 : 0.0);
	for (size_t i = 0; i < sizeof(pct) / sizeof(pct[0]); i++) {
		uint64_t v = wl_hist_percentile(h, pct[i].p);
		fprintf(out, " %s_us=%.1f %s_bin_us=%.1f", pct[i].name, v / 1000.0,
		    pct[i].name, wl_hist_pow2_bin(v) / 1000.0);
	}
	fprintf(out, " max_us=%.1f\n", h->max / 1000.0);
}
