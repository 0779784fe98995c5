/*
 * hash.c -- FNV-1a. Chosen because it is trivial to reimplement bit for bit
 * in every SDK language and is good enough on short keys (symbols, words);
 * partitions are many (default 1024) so a little bias does not matter.
 */
#include "hash.h"

uint64_t
wl_hash(const void *p, size_t len)
{
	const unsigned char *b = p;
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < len; i++) {
		h ^= b[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

uint32_t
wl_hash_partition(const void *key, size_t len, uint32_t partitions)
{
	return (uint32_t)(wl_hash(key, len) % partitions);
}
