/*
 * event.c -- event allocation and FIFO queues.
 */
#include "event.h"

#include <stdlib.h>
#include <string.h>

/*
 * Freed events are kept for reuse, by size class: events are allocated
 * and freed by the thousand in bursts (a batch in, a batch out), a
 * pattern glibc's per-thread cache (seven chunks per size) does not
 * absorb, and at about 130 bytes they miss its fast bins, so each malloc
 * and free took the slow path. Classes are 64 bytes apart up to 1 KiB;
 * larger events go straight to malloc. The lists are per thread (events
 * live on the loop thread; a test may use others) and capped, so that a
 * burst does not pin memory for ever.
 */
#define POOL_STEP 64
#define POOL_CLASSES 16
#define POOL_KEEP 16384

static _Thread_local struct {
	wl_event *free;
	size_t n;
} pool[POOL_CLASSES];

static size_t
pool_class(size_t bytes)
{
	return (bytes + POOL_STEP - 1) / POOL_STEP - 1;
}

wl_event *
wl_event_new(const void *key, uint32_t klen, const void *payload,
    uint32_t plen)
{
	size_t bytes = sizeof(wl_event) + (size_t)klen + plen;
	size_t c = pool_class(bytes);
	wl_event *e;

	if (c < POOL_CLASSES && pool[c].free != NULL) {
		e = pool[c].free;
		pool[c].free = e->next;
		pool[c].n--;
	} else {
		e = malloc(c < POOL_CLASSES ? (c + 1) * POOL_STEP : bytes);
		if (e == NULL)
			return NULL;
	}
	memset(e, 0, sizeof(*e));
	e->klen = klen;
	e->plen = plen;
	e->key = klen ? e->data : NULL;
	e->payload = e->data + klen;
	if (klen)
		memcpy(e->data, key, klen);
	if (plen)
		memcpy(e->data + klen, payload, plen);
	return e;
}

void
wl_event_inherit(wl_event *to, const wl_event *from)
{
	to->message_id = from->message_id;
	to->event_time = from->event_time;
	to->ingest_ns = from->ingest_ns;
	to->stream_id = from->stream_id;
	to->source = from->source;
	to->origin = from->origin;
	wl_origin_ref(to->origin);
	to->epoch = from->epoch;
	if (to->epoch != NULL)
		to->epoch->live++;
}

wl_event *
wl_event_rekey(const wl_event *e, const void *key, uint32_t klen)
{
	wl_event *n = wl_event_new(key, klen, e->payload, e->plen);

	if (n != NULL)
		wl_event_inherit(n, e);
	return n;
}

wl_event *
wl_event_dup(const wl_event *e)
{
	return wl_event_rekey(e, e->key, e->klen);
}

void
wl_event_free(wl_event *e)
{
	if (e == NULL)
		return;
	/* Dropping the last reference marks the source message processed. */
	wl_origin_unref(e->origin);
	if (e->epoch != NULL)
		e->epoch->live--;
	/* The allocation's size: the key may since point into the payload
	 * (an engine key_by), so it is measured from where the payload
	 * starts. */
	size_t c = pool_class(sizeof(*e) + (size_t)(e->payload - e->data) +
	    e->plen);
	if (c < POOL_CLASSES && pool[c].n < POOL_KEEP) {
		e->next = pool[c].free;
		pool[c].free = e;
		pool[c].n++;
		return;
	}
	free(e);
}

void
wl_event_pool_drain(void)
{
	for (size_t c = 0; c < POOL_CLASSES; c++) {
		while (pool[c].free != NULL) {
			wl_event *e = pool[c].free;
			pool[c].free = e->next;
			free(e);
		}
		pool[c].n = 0;
	}
}

void
wl_queue_push(wl_queue *q, wl_event *e)
{
	e->next = NULL;
	if (q->tail)
		q->tail->next = e;
	else
		q->head = e;
	q->tail = e;
	q->count++;
	q->bytes += wl_event_size(e);
}

wl_event *
wl_queue_pop(wl_queue *q)
{
	wl_event *e = q->head;

	if (e == NULL)
		return NULL;
	q->head = e->next;
	if (q->head == NULL)
		q->tail = NULL;
	q->count--;
	q->bytes -= wl_event_size(e);
	e->next = NULL;
	return e;
}

void
wl_queue_append(wl_queue *to, wl_queue *from)
{
	if (from->head == NULL)
		return;
	if (to->tail)
		to->tail->next = from->head;
	else
		to->head = from->head;
	to->tail = from->tail;
	to->count += from->count;
	to->bytes += from->bytes;
	memset(from, 0, sizeof(*from));
}

void
wl_queue_prepend(wl_queue *to, wl_queue *from)
{
	if (from->head == NULL)
		return;
	from->tail->next = to->head;
	if (to->head == NULL)
		to->tail = from->tail;
	to->head = from->head;
	to->count += from->count;
	to->bytes += from->bytes;
	memset(from, 0, sizeof(*from));
}

void
wl_queue_clear(wl_queue *q)
{
	wl_event *e;

	while ((e = wl_queue_pop(q)) != NULL)
		wl_event_free(e);
}
