/*
 * hash.h -- the key hash that picks a partition.
 *
 * This function is part of the cluster contract: every worker must map a
 * key to the same partition, so it is specified in docs/design.md (64-bit
 * FNV-1a) and must never change within a protocol major version.
 */
#ifndef WL_HASH_H
#define WL_HASH_H

#include <stddef.h>
#include <stdint.h>

/* 64-bit FNV-1a of `len` bytes at `p`. */
uint64_t wl_hash(const void *p, size_t len);

/* The partition of a key: wl_hash(key) mod `partitions` (> 0). */
uint32_t wl_hash_partition(const void *key, size_t len, uint32_t partitions);

#endif
