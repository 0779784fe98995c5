/*
 * position.c -- per-stream done tracking.
 *
 * Origins are kept in arrival order in a ring; ids increase along it, so
 * the position is the id of the last done origin of the leading run of
 * done origins. An origin that finishes out of order waits in the ring
 * until everything before it is done.
 */
#include "position.h"

#include <stdbool.h>
#include <stdlib.h>

struct wl_origin {
	wl_stream_pos *stream;
	uint64_t id;
	uint32_t refs;
	bool done;
};

struct wl_stream_pos {
	wl_origin **ring;
	size_t head, count, cap;
	uint64_t done;      /* the position */
	uint64_t last;      /* the highest id tracked */
	bool closing;       /* freed by its owner; goes when the ring empties */
};

wl_err
wl_stream_pos_new(wl_stream_pos **out, uint64_t start)
{
	wl_stream_pos *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return WL_ERR_NOMEM;
	s->done = s->last = start;
	*out = s;
	return WL_OK;
}

static void
really_free(wl_stream_pos *s)
{
	free(s->ring);
	free(s);
}

wl_origin *
wl_stream_pos_track(wl_stream_pos *s, uint64_t id)
{
	wl_origin *o;

	if (s->count == s->cap) {
		size_t ncap = s->cap ? s->cap * 2 : 64;
		wl_origin **nr = malloc(ncap * sizeof(*nr));
		if (nr == NULL)
			return NULL;
		for (size_t i = 0; i < s->count; i++)
			nr[i] = s->ring[(s->head + i) % s->cap];
		free(s->ring);
		s->ring = nr;
		s->cap = ncap;
		s->head = 0;
	}
	o = malloc(sizeof(*o));
	if (o == NULL)
		return NULL;
	o->stream = s;
	o->id = id;
	o->refs = 1;
	o->done = false;
	s->ring[(s->head + s->count) % s->cap] = o;
	s->count++;
	s->last = id;
	return o;
}

void
wl_origin_ref(wl_origin *o)
{
	if (o != NULL)
		o->refs++;
}

void
wl_origin_unref(wl_origin *o)
{
	wl_stream_pos *s;

	if (o == NULL || --o->refs > 0)
		return;
	o->done = true;
	s = o->stream;
	/* Advance over the leading run of done origins. */
	while (s->count > 0 && s->ring[s->head]->done) {
		wl_origin *h = s->ring[s->head];
		s->done = h->id;
		s->head = (s->head + 1) % s->cap;
		s->count--;
		free(h);
	}
	if (s->closing && s->count == 0)
		really_free(s);
}

uint64_t
wl_stream_pos_done(const wl_stream_pos *s)
{
	return s->done;
}

uint64_t
wl_stream_pos_last(const wl_stream_pos *s)
{
	return s->last;
}

uint64_t
wl_stream_pos_pending(const wl_stream_pos *s)
{
	return s->count;
}

void
wl_stream_pos_free(wl_stream_pos *s)
{
	if (s == NULL)
		return;
	if (s->count == 0) {
		really_free(s);
		return;
	}
	s->closing = true;
}
