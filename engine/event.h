/*
 * event.h -- an event inside the engine, and FIFO queues of them.
 *
 * The event is a plain record on the hot path, read by every module, so its
 * struct is public. Key and payload live in the same allocation as the
 * header: one malloc per event.
 */
#ifndef WL_EVENT_H
#define WL_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "position.h"

typedef struct wl_event wl_event;

/* A checkpoint epoch: the events read while it was the current one, and
 * everything derived from them. The dataflow owns it; `live` counts the
 * events that point to it, so the epoch is complete (every effect of it
 * applied) when the dataflow has stopped tagging new events with it and
 * `live` is 0. */
typedef struct {
	uint64_t id;    /* the checkpoint it belongs to */
	uint64_t live;  /* events pointing to it */
} wl_epoch;
struct wl_event {
	wl_event *next;       /* queue link; owned by whichever queue holds it */
	uint64_t message_id;  /* per-stream, increasing (origin) */
	int64_t event_time;   /* microseconds since the epoch, 0 = unknown */
	uint64_t ingest_ns;   /* monotonic time the engine read the origin event */
	wl_origin *origin;    /* the source message it derives from (one
	                         reference, dropped by wl_event_free); NULL
	                         when its source does not track positions */
	wl_epoch *epoch;      /* counted in epoch->live; NULL when checkpoints
	                         are off */
	uint32_t stream_id;   /* origin stream */
	uint32_t klen;
	uint32_t plen;
	uint32_t source;      /* index of the source it came from, for the
	                         per-source latency histogram */
	uint8_t *key;         /* points into data[], NULL when klen == 0 */
	uint8_t *payload;     /* points into data[] */
	uint8_t data[];
};

/* Allocates an event holding copies of key and payload. Returns NULL when
 * out of memory. The caller owns the result (wl_event_free). */
wl_event *wl_event_new(const void *key, uint32_t klen, const void *payload,
    uint32_t plen);

/* Gives `to` the origin of `from`: stream, message id, times, a
 * reference to its origin and a count in its epoch. For outputs derived
 * from an event. */
void wl_event_inherit(wl_event *to, const wl_event *from);

/* A copy of `e` with a different key (the origin fields are kept). */
wl_event *wl_event_rekey(const wl_event *e, const void *key, uint32_t klen);

/* A copy of `e`. */
wl_event *wl_event_dup(const wl_event *e);

/* Puts an event that has none in epoch `ep` (counted). */
static inline void
wl_event_set_epoch(wl_event *e, wl_epoch *ep)
{
	e->epoch = ep;
	ep->live++;
}

/* Frees an event (dropping its origin reference and epoch count);
 * accepts NULL. */
void wl_event_free(wl_event *e);

/* Frees the events kept for reuse (at exit, so that leak checkers see a
 * clean heap). */
void wl_event_pool_drain(void);

/* Bytes the event accounts for in queue limits. */
static inline size_t
wl_event_size(const wl_event *e)
{
	return sizeof(*e) + e->klen + e->plen;
}

/* A FIFO of events, linked through wl_event.next. Embedded in its owner;
 * zero-initialised is empty. */
typedef struct {
	wl_event *head;
	wl_event *tail;
	size_t count;
	size_t bytes;
} wl_queue;

/* Appends `e`; the queue takes ownership. */
void wl_queue_push(wl_queue *q, wl_event *e);

/* Removes and returns the head, or NULL when empty; the caller owns it. */
wl_event *wl_queue_pop(wl_queue *q);

/* Moves every event of `from` to the tail of `to`. */
void wl_queue_append(wl_queue *to, wl_queue *from);

/* Moves every event of `from` to the head of `to`, in their order. */
void wl_queue_prepend(wl_queue *to, wl_queue *from);

/* Frees every event. */
void wl_queue_clear(wl_queue *q);

#endif
