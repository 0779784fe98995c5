/*
 * limit.h -- the limits a topology may set (batch sizes, queue bytes,
 * timeouts), as one table that drives parsing, checking and printing:
 * a new limit is one line in limit.c plus its field in wl_limits.
 *
 * The table is static and read-only, so its entries are declared here.
 */
#ifndef WL_LIMIT_H
#define WL_LIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "topology.h"

typedef struct {
	const char *key;  /* the name under `limits:`, as in wl_limits */
	size_t off;       /* where the field lives in wl_limits */
	bool wide;        /* the field is a uint64_t rather than a uint32_t */
	uint64_t lo;      /* smallest accepted value */
	uint64_t hi;      /* largest accepted value */
	uint64_t def;     /* the value when the file does not say */
} wl_limit_spec;

/* The i-th limit, in the order they are printed, or NULL past the last.
 * The entry is static. */
const wl_limit_spec *wl_limit_at(size_t i);

/* The limit called `key`, or NULL. The entry is static. */
const wl_limit_spec *wl_limit_find(const char *key);

/* Sets every limit of `l` to its default. */
void wl_limit_defaults(wl_limits *l);

/* The value of limit `ls` in `l`. */
uint64_t wl_limit_get(const wl_limits *l, const wl_limit_spec *ls);

/* Sets limit `ls` of `l` to `v`, which the caller has checked against
 * ls->lo and ls->hi. */
void wl_limit_set(wl_limits *l, const wl_limit_spec *ls, uint64_t v);

#endif
