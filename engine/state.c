/*
 * state.c -- a chained hash table of state entries. Keys are dynamic and
 * unbounded in number (word count sees a new key per new word), so the
 * table doubles when the load factor passes 1.
 */
#include "state.h"

#include <stdlib.h>
#include <string.h>

#include "hash.h"

struct wl_state {
	wl_state_entry **buckets;
	size_t nbuckets;   /* a power of two */
	size_t count;
	size_t bytes;
	/* Entries changed since the last checkpoint, each once (dirty flag). */
	wl_state_entry **dirty;
	size_t ndirty, capdirty;
};

wl_err
wl_state_new(wl_state **out)
{
	wl_state *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return WL_ERR_NOMEM;
	s->nbuckets = 1024;
	s->buckets = calloc(s->nbuckets, sizeof(*s->buckets));
	if (s->buckets == NULL) {
		free(s);
		return WL_ERR_NOMEM;
	}
	*out = s;
	return WL_OK;
}

void
wl_state_free(wl_state *s)
{
	if (s == NULL)
		return;
	for (size_t i = 0; i < s->nbuckets; i++) {
		wl_state_entry *e = s->buckets[i];
		while (e) {
			wl_state_entry *n = e->next;
			free(e->value);
			free(e);
			e = n;
		}
	}
	free(s->buckets);
	free(s->dirty);
	free(s);
}

static uint64_t
entry_hash(uint32_t state_id, const void *key, uint32_t klen)
{
	/* Mix the state id in so two states with the same keys spread. */
	return wl_hash(key, klen) ^ ((uint64_t)state_id * 0x9e3779b97f4a7c15ULL);
}

static void
grow(wl_state *s)
{
	size_t n = s->nbuckets * 2;
	wl_state_entry **b = calloc(n, sizeof(*b));

	if (b == NULL)
		return; /* a longer chain is slower, not wrong */
	for (size_t i = 0; i < s->nbuckets; i++) {
		wl_state_entry *e = s->buckets[i];
		while (e) {
			wl_state_entry *next = e->next;
			size_t j = e->hash & (n - 1);
			e->next = b[j];
			b[j] = e;
			e = next;
		}
	}
	free(s->buckets);
	s->buckets = b;
	s->nbuckets = n;
}

wl_state_entry *
wl_state_get(wl_state *s, uint32_t state_id, const void *key, uint32_t klen,
    bool create)
{
	uint64_t h = entry_hash(state_id, key, klen);
	size_t i = h & (s->nbuckets - 1);
	wl_state_entry *e;

	for (e = s->buckets[i]; e; e = e->next) {
		if (e->hash == h && e->state_id == state_id &&
		    e->klen == klen && (klen == 0 || memcmp(e->key, key, klen) == 0))
			return e;
	}
	if (!create)
		return NULL;
	e = calloc(1, sizeof(*e) + klen);
	if (e == NULL)
		return NULL;
	e->hash = h;
	e->state_id = state_id;
	e->klen = klen;
	if (klen > 0)  /* an empty key may come as NULL: memcpy must not see it */
		memcpy(e->key, key, klen);
	e->next = s->buckets[i];
	s->buckets[i] = e;
	s->count++;
	s->bytes += klen;
	if (s->count > s->nbuckets)
		grow(s);
	return e;
}

wl_err
wl_state_set(wl_state *s, wl_state_entry *e, const void *value, uint32_t vlen,
    bool present)
{
	uint8_t *v = NULL;

	/* Room in the dirty list first, so that a failure changes nothing. */
	if (!e->dirty && s->ndirty == s->capdirty) {
		size_t nc = s->capdirty ? s->capdirty * 2 : 1024;
		wl_state_entry **nd = realloc(s->dirty, nc * sizeof(*nd));
		if (nd == NULL)
			return WL_ERR_NOMEM;
		s->dirty = nd;
		s->capdirty = nc;
	}
	if (present && e->present && vlen > 0 && vlen == e->vlen) {
		/* Most states keep their size from one event to the next:
		 * overwrite in place rather than a malloc and a free per key
		 * per batch. Checkpoints copy values when they take them, so
		 * nothing else holds this buffer. */
		memcpy(e->value, value, vlen);
	} else {
		if (present && vlen > 0) {
			v = malloc(vlen);
			if (v == NULL)
				return WL_ERR_NOMEM;
			memcpy(v, value, vlen);
		}
		s->bytes -= e->vlen;
		free(e->value);
		e->value = v;
		e->vlen = present ? vlen : 0;
		e->present = present;
		s->bytes += e->vlen;
	}
	if (!e->dirty) {
		s->dirty[s->ndirty++] = e;
		e->dirty = true;
	}
	return WL_OK;
}

size_t
wl_state_count(const wl_state *s)
{
	return s->count;
}

size_t
wl_state_bytes(const wl_state *s)
{
	return s->bytes;
}

void
wl_state_each(wl_state *s, uint32_t state_id, bool all, wl_state_fn fn,
    void *arg)
{
	if (!all) {
		for (size_t i = 0; i < s->ndirty; i++)
			if (s->dirty[i]->state_id == state_id)
				fn(arg, s->dirty[i]);
		return;
	}
	for (size_t i = 0; i < s->nbuckets; i++)
		for (wl_state_entry *e = s->buckets[i]; e; e = e->next)
			if (e->state_id == state_id && e->present)
				fn(arg, e);
}

void
wl_state_clear_dirty(wl_state *s)
{
	for (size_t i = 0; i < s->ndirty; i++)
		s->dirty[i]->dirty = false;
	s->ndirty = 0;
}

size_t
wl_state_dirty(const wl_state *s)
{
	return s->ndirty;
}
