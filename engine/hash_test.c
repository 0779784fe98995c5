/* hash_test.c -- the key hash is part of the cluster contract: these
 * vectors must never change (the SDKs test the same ones). */
#include <string.h>

#include "hash.h"
#include "tap.h"

int
main(void)
{
	static const struct {
		const char *key;
		unsigned long long hash;
		unsigned partition_1024;
	} cases[] = {
		{ "", 0xcbf29ce484222325ULL, 0xcbf29ce484222325ULL % 1024 },
		{ "a", 0xaf63dc4c8601ec8cULL, 0xaf63dc4c8601ec8cULL % 1024 },
		{ "foobar", 0x85944171f73967e8ULL, 0x85944171f73967e8ULL % 1024 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *k = cases[i].key;
		TAP_OK(wl_hash(k, strlen(k)) == cases[i].hash,
		    "FNV-1a 64 of '%s'", k);
		TAP_OK(wl_hash_partition(k, strlen(k), 1024) ==
		    cases[i].partition_1024, "partition of '%s' among 1024", k);
	}
	/* Unkeyed routing hashes the stream id as 4 little-endian bytes
	 * (flow.c route(); protocol/README.md lists the same vectors). */
	{
		static const struct {
			unsigned char le[4];
			unsigned long long hash;
			unsigned partition_1024;
		} streams[] = {
			{ { 0x01, 0, 0, 0 }, 0xad2aca7747985764ULL, 868 },
			{ { 0x02, 0, 0, 0 }, 0x8d1ace904a398d17ULL, 279 },
			{ { 0, 0, 0x10, 0 }, 0x4d5bd67f9dfc4685ULL, 645 },
		};
		for (size_t i = 0; i < sizeof(streams) / sizeof(streams[0]);
		    i++) {
			TAP_OK(wl_hash(streams[i].le, 4) == streams[i].hash,
			    "FNV-1a 64 of stream id vector %zu", i);
			TAP_OK(wl_hash_partition(streams[i].le, 4, 1024) ==
			    streams[i].partition_1024,
			    "partition of stream id vector %zu among 1024", i);
		}
	}
	/* Symbols spread: 350 keys over 4 partitions leave none empty. */
	{
		unsigned counts[4] = { 0 };
		char sym[8];
		for (int i = 0; i < 350; i++) {
			int n = snprintf(sym, sizeof(sym), "S%03d", i);
			counts[wl_hash_partition(sym, (size_t)n, 4)]++;
		}
		TAP_OK(counts[0] > 50 && counts[1] > 50 && counts[2] > 50 &&
		    counts[3] > 50, "350 keys spread over 4 partitions "
		    "(%u %u %u %u)", counts[0], counts[1], counts[2], counts[3]);
	}
	return TAP_DONE();
}
