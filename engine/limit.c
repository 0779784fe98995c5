/*
 * limit.c -- the table of topology limits, and access to their fields.
 */
#include "limit.h"

#include <string.h>

#define LIMIT(k, lo, hi, def) \
	{ #k, offsetof(wl_limits, k), sizeof(((wl_limits *) 0)->k) == 8, \
	    lo, hi, def }

static const wl_limit_spec limit_specs[] = {
	LIMIT(batch_max_events, 1, UINT32_MAX, 1024),
	LIMIT(batch_max_bytes, 1, UINT32_MAX, 1048576),
	LIMIT(inflight_batches, 1, UINT32_MAX, 4),
	LIMIT(queue_max_bytes, 1, UINT64_MAX, 1048576),
	LIMIT(message_max_bytes, 1024, 1073741824, 16777216),
	LIMIT(heartbeat_ms, 1, UINT32_MAX, 1000),
	LIMIT(heartbeat_timeout_ms, 1, UINT32_MAX, 5000),
	LIMIT(batch_deadline_ms, 1, UINT32_MAX, 30000),
	LIMIT(restart_backoff_ms, 1, UINT32_MAX, 100),
	LIMIT(restart_backoff_max_ms, 1, UINT32_MAX, 5000),
	LIMIT(source_credits, 1, UINT32_MAX, 4096),
};

#define NLIMITS (sizeof(limit_specs) / sizeof(limit_specs[0]))

const wl_limit_spec *
wl_limit_at(size_t i)
{
	return (i < NLIMITS ? &limit_specs[i] : NULL);
}

const wl_limit_spec *
wl_limit_find(const char *key)
{
	for (size_t i = 0; i < NLIMITS; i++) {
		if (strcmp(key, limit_specs[i].key) == 0) {
			return (&limit_specs[i]);
		}
	}
	return (NULL);
}

void
wl_limit_defaults(wl_limits *l)
{
	for (size_t i = 0; i < NLIMITS; i++) {
		wl_limit_set(l, &limit_specs[i], limit_specs[i].def);
	}
}

uint64_t
wl_limit_get(const wl_limits *l, const wl_limit_spec *ls)
{
	const char *p = (const char *) l + ls->off;

	if (ls->wide) {
		return (*(const uint64_t *) (const void *) p);
	}
	return (*(const uint32_t *) (const void *) p);
}

void
wl_limit_set(wl_limits *l, const wl_limit_spec *ls, uint64_t v)
{
	char *p = (char *) l + ls->off;

	if (ls->wide) {
		*(uint64_t *) (void *) p = v;
	} else {
		*(uint32_t *) (void *) p = (uint32_t) v;
	}
}
