/*
 * hist_test.c -- the latency histogram: bucket bounds, percentiles against
 * exact ones, merging, and the printed line.
 */
#include <stdlib.h>
#include <string.h>

#include "hist.h"
#include "tap.h"

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

int
main(void)
{
	static wl_hist h, g;
	int ok;

	/* Every value lands in a bucket whose bounds hold it, and buckets
	 * tile the line without gaps. */
	ok = 1;
	for (uint64_t v = 0; v < 200000; v += (v < 5000 ? 1 : 37)) {
		unsigned i = wl_hist_index(v);
		if (i >= WL_HIST_NBUCKETS || v < wl_hist_bucket_low(i) ||
		    v > wl_hist_bucket_high(i))
			ok = 0;
	}
	for (unsigned i = 0; i + 1 < WL_HIST_NBUCKETS; i++)
		if (wl_hist_bucket_high(i) + 1 != wl_hist_bucket_low(i + 1))
			ok = 0;
	TAP_OK(ok, "buckets hold their values and tile without gaps");
	TAP_OK(wl_hist_index(UINT64_MAX) == WL_HIST_NBUCKETS - 1 &&
	    wl_hist_bucket_high(WL_HIST_NBUCKETS - 1) == UINT64_MAX,
	    "the largest value has the last bucket");
	ok = 1;
	for (unsigned i = WL_HIST_SUB; i < WL_HIST_NBUCKETS; i++) {
		double lo = (double)wl_hist_bucket_low(i);
		double hi = (double)wl_hist_bucket_high(i);
		if ((hi - lo) / lo > 1.0 / WL_HIST_SUB + 1e-12)
			ok = 0;
	}
	TAP_OK(ok, "a bucket is at most 1/32 of its value wide");

	wl_hist_init(&h);
	TAP_OK(wl_hist_percentile(&h, 50) == 0 && h.count == 0,
	    "empty: every percentile is 0");

	/* Against exact percentiles of a skewed sample. */
	enum { N = 100000 };
	uint64_t *v = malloc(N * sizeof(*v));
	uint64_t x = 88172645463325252ull;
	for (int i = 0; i < N; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		/* mostly tens of microseconds, a tail into milliseconds */
		v[i] = 10000 + x % 40000 + (i % 1000 == 0 ? x % 5000000 : 0);
		wl_hist_record(&h, v[i]);
	}
	qsort(v, N, sizeof(*v), cmp_u64);
	ok = 1;
	const double ps[] = { 50, 90, 99, 99.9, 99.99 };
	for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
		size_t rank = (size_t)(ps[i] / 100.0 * N + 0.999999);
		uint64_t exact = v[rank - 1], got = wl_hist_percentile(&h, ps[i]);
		if (got < exact || (double)got > exact * (1 + 1.0 / WL_HIST_SUB)) {
			printf("# p%g: exact %llu, histogram %llu\n", ps[i],
			    (unsigned long long)exact, (unsigned long long)got);
			ok = 0;
		}
	}
	TAP_OK(ok, "percentiles are within 1/32 above the exact ones");
	TAP_OK(h.count == N && h.min == v[0] && h.max == v[N - 1] &&
	    wl_hist_percentile(&h, 100) == v[N - 1] &&
	    wl_hist_percentile(&h, 0) == v[0], "count, min and max are exact");

	wl_hist_init(&g);
	wl_hist_record_n(&g, 7, 3);
	TAP_OK(wl_hist_percentile(&g, 50) == 7 && g.count == 3,
	    "small values are exact");
	wl_hist_merge(&g, &h);
	TAP_OK(g.count == N + 3 && g.min == 7 && g.max == v[N - 1],
	    "merge adds counts and keeps min and max");

	TAP_OK(wl_hist_pow2_bin(0) == 1 && wl_hist_pow2_bin(1) == 1 &&
	    wl_hist_pow2_bin(65) == 128 && wl_hist_pow2_bin(65536) == 65536 &&
	    wl_hist_pow2_bin(65537) == 131072, "power-of-two bins");

	char buf[1024];
	FILE *f = fmemopen(buf, sizeof(buf), "w");
	wl_hist_init(&g);
	wl_hist_record_n(&g, 50000, 10); /* 50 us */
	wl_hist_print_us(&g, f, "LAT");
	fclose(f);
	TAP_OK(strncmp(buf, "LAT samples=10 mean_us=50.0 p50_us=50.", 38) == 0 &&
	    strstr(buf, "p50_bin_us=65.5") != NULL &&
	    strstr(buf, "p99.99_us=50.") != NULL && strstr(buf, "max_us=50.0\n"),
	    "printed line: %s", buf);
	free(v);
	return TAP_DONE();
}
