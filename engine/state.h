/*
 * state.h -- keyed state owned by the engine: opaque bytes per
 * (state id, key). An entry is created the first time a key is seen and
 * stays (with present = false) until a reply gives it a value.
 *
 * The entry is a hot-path record read by the dataflow, so its struct is
 * public; the table that holds entries is private to state.c.
 */
#ifndef WL_STATE_H
#define WL_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct wl_state_entry wl_state_entry;
struct wl_state_entry {
	wl_state_entry *next;  /* hash chain; owned by the table */
	uint64_t hash;
	uint64_t locked_by;    /* batch id holding the key in flight, 0 = free */
	uint32_t state_id;
	uint32_t klen;
	uint32_t vlen;
	bool present;          /* false: the key has no state yet */
	bool dirty;            /* set since the last wl_state_take_dirty */
	uint8_t *value;        /* vlen bytes, owned by the entry */
	wl_state_entry *mark;  /* while locked: next key of the same batch */
	/* Events of this key that came while it was locked, oldest first:
	 * they go before any later event of the key. Owned by the dataflow
	 * (flow.c), which frees them; the entry only links them. */
	struct wl_event *wait_head, *wait_tail;
	wl_state_entry *ready_next; /* on its step instance's ready list */
	bool on_ready;
	uint8_t key[];
};

typedef struct wl_state wl_state;

/* Creates an empty store in *out; free with wl_state_free. */
wl_err wl_state_new(wl_state **out);

/* Frees the store and every entry; accepts NULL. */
void wl_state_free(wl_state *s);

/* Finds the entry of (state_id, key), creating an empty one (present =
 * false) when `create` is true. Returns NULL when absent and not created,
 * or out of memory. The store keeps ownership of the entry; the pointer
 * stays valid until wl_state_free. The empty key (klen 0) is a key like
 * any other; `key` may then be NULL (as an event's key is). */
wl_state_entry *wl_state_get(wl_state *s, uint32_t state_id, const void *key,
    uint32_t klen, bool create);

/* Replaces the value of `e` by a copy of `value` (present = true), or
 * clears it (present = false, value ignored). */
wl_err wl_state_set(wl_state *s, wl_state_entry *e, const void *value,
    uint32_t vlen, bool present);

/* Calls `fn` for every entry of `state_id` that wl_state_set changed
 * since the last call (any state id) and forgets them all; `all` calls it
 * for every entry of `state_id` with a value instead. The dirty set is
 * what an incremental checkpoint writes. */
typedef void (*wl_state_fn)(void *arg, const wl_state_entry *e);
void wl_state_each(wl_state *s, uint32_t state_id, bool all, wl_state_fn fn,
    void *arg);
/* Forgets the dirty set (after the last wl_state_each of a checkpoint). */
void wl_state_clear_dirty(wl_state *s);
/* Entries changed since wl_state_clear_dirty. */
size_t wl_state_dirty(const wl_state *s);

/* Number of entries and bytes of keys plus values held. */
size_t wl_state_count(const wl_state *s);
size_t wl_state_bytes(const wl_state *s);

#endif
