/*
 * frame.c -- thin helpers over protobuf-c so that the rest of the engine
 * deals in wl_err and nng messages, never in protobuf-c's conventions.
 */
#include "frame.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "wire.h"

/*
 * Decoding allocates from an arena. protobuf-c's default allocator makes
 * one malloc per sub-message, which for a batch reply is one per event
 * (each Result), all freed together a moment later: with the arena a
 * decode is a few pointer bumps and freeing it is a reset. Frames are
 * decoded and freed on the loop thread, one or two alive at a time, so a
 * small per-thread table maps a frame to its arena; should it be full, a
 * frame falls back to malloc.
 */
#define CHUNK_MIN (128 * 1024)
#define LIVE_MAX 8
#define IDLE_MAX 4

typedef struct chunk chunk;
struct chunk {
	chunk *next;
	size_t cap, used;
	max_align_t data[];
};

typedef struct arena arena;
struct arena {
	chunk *head;            /* allocating from this one */
	wl_frame *frame;        /* the frame it holds, NULL while decoding */
	arena *next_idle;
};

static _Thread_local arena *live[LIVE_MAX];
static _Thread_local arena *idle;
static _Thread_local size_t nidle;

static void *
arena_alloc(void *data, size_t size)
{
	arena *a = data;
	chunk *c = a->head;

	size = (size + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
	if (c == NULL || c->cap - c->used < size) {
		size_t cap = size > CHUNK_MIN ? size : CHUNK_MIN;
		c = malloc(sizeof(*c) + cap);
		if (c == NULL)
			return NULL;
		c->cap = cap;
		c->used = 0;
		c->next = a->head;
		a->head = c;
	}
	void *p = (char *)c->data + c->used;
	c->used += size;
	return p;
}

static void
arena_free(void *data, void *p)
{
	(void)data;
	(void)p; /* everything goes at once, in arena_release */
}

/* Empties `a` and keeps it for the next decode (or frees it). */
static void
arena_release(arena *a)
{
	/* Keep one chunk, the largest, so a steady stream of same-sized
	 * replies allocates nothing at all. */
	chunk *keep = NULL;
	for (chunk *c = a->head, *n; c; c = n) {
		n = c->next;
		if (keep == NULL || c->cap > keep->cap) {
			free(keep);
			keep = c;
		} else
			free(c);
	}
	if (keep) {
		keep->next = NULL;
		keep->used = 0;
	}
	a->head = keep;
	a->frame = NULL;
	if (nidle < IDLE_MAX) {
		a->next_idle = idle;
		idle = a;
		nidle++;
	} else {
		free(a->head);
		free(a);
	}
}

wl_err
wl_frame_decode(wl_frame **out, const void *buf, size_t len)
{
	int slot = -1;
	arena *a = NULL;
	ProtobufCAllocator pa = { arena_alloc, arena_free, NULL };
	wl_frame *f;

	for (int i = 0; i < LIVE_MAX && slot < 0; i++)
		if (live[i] == NULL)
			slot = i;
	if (slot >= 0) {
		if (idle != NULL) {
			a = idle;
			idle = a->next_idle;
			nidle--;
		} else
			a = calloc(1, sizeof(*a));
	}
	pa.allocator_data = a;
	/* Batch replies, the frames that carry events back, are decoded by
	 * hand when they hold nothing unusual (wire.c); the rest, and any
	 * reply the hand decoder declines, by protobuf-c. The hand decoder
	 * points into buf, so it needs the arena: nothing of it is freed
	 * one by one. */
	f = NULL;
	if (a != NULL && len > 0 && ((const uint8_t *)buf)[0] == 0x3a)
		(void)wl_wire_reply_decode(&pa, buf, len, &f);
	if (f == NULL)
		f = wallaroo__v1__frame__unpack(a ? &pa : NULL, len, buf);
	if (f == NULL || f->body_case == WALLAROO__V1__FRAME__BODY__NOT_SET) {
		if (a != NULL)
			arena_release(a);
		else if (f != NULL)
			wallaroo__v1__frame__free_unpacked(f, NULL);
		return WL_ERR_PROTO;
	}
	if (a != NULL) {
		a->frame = f;
		live[slot] = a;
	}
	*out = f;
	return WL_OK;
}

void
wl_frame_free(wl_frame *f)
{
	if (f == NULL)
		return;
	for (int i = 0; i < LIVE_MAX; i++) {
		if (live[i] != NULL && live[i]->frame == f) {
			arena *a = live[i];
			live[i] = NULL;
			arena_release(a);
			return;
		}
	}
	wallaroo__v1__frame__free_unpacked(f, NULL);
}

void
wl_frame_arenas_drain(void)
{
	while (idle != NULL) {
		arena *a = idle;
		idle = a->next_idle;
		free(a->head);
		free(a);
	}
	nidle = 0;
}

wl_err
wl_frame_encode(nng_msg **out, const wl_frame *f)
{
	size_t n = wallaroo__v1__frame__get_packed_size(f);
	nng_msg *m;

	if (nng_msg_alloc(&m, n) != 0)
		return WL_ERR_NOMEM;
	wallaroo__v1__frame__pack(f, nng_msg_body(m));
	*out = m;
	return WL_OK;
}

const char *
wl_frame_name(const wl_frame *f)
{
	switch (f->body_case) {
	case WALLAROO__V1__FRAME__BODY_HELLO: return "hello";
	case WALLAROO__V1__FRAME__BODY_WELCOME: return "welcome";
	case WALLAROO__V1__FRAME__BODY_REFUSE: return "refuse";
	case WALLAROO__V1__FRAME__BODY_ASSIGN: return "assign";
	case WALLAROO__V1__FRAME__BODY_READY: return "ready";
	case WALLAROO__V1__FRAME__BODY_BATCH: return "batch";
	case WALLAROO__V1__FRAME__BODY_REPLY: return "reply";
	case WALLAROO__V1__FRAME__BODY_CREDIT: return "credit";
	case WALLAROO__V1__FRAME__BODY_HEARTBEAT: return "heartbeat";
	case WALLAROO__V1__FRAME__BODY_ERROR: return "error";
	case WALLAROO__V1__FRAME__BODY_GOODBYE: return "goodbye";
	case WALLAROO__V1__FRAME__BODY_OPEN_STREAM: return "open_stream";
	case WALLAROO__V1__FRAME__BODY_STREAM_OPENED: return "stream_opened";
	case WALLAROO__V1__FRAME__BODY_ACK: return "ack";
	case WALLAROO__V1__FRAME__BODY_END_STREAM: return "end_stream";
	case WALLAROO__V1__FRAME__BODY_STREAM_ENDED: return "stream_ended";
	case WALLAROO__V1__FRAME__BODY_RECONNECT: return "reconnect";
	case WALLAROO__V1__FRAME__BODY_PREPARE: return "prepare";
	case WALLAROO__V1__FRAME__BODY_PREPARED: return "prepared";
	case WALLAROO__V1__FRAME__BODY_COMMIT: return "commit";
	case WALLAROO__V1__FRAME__BODY_ABORT: return "abort";
	case WALLAROO__V1__FRAME__BODY_RESOLVED: return "resolved";
	case WALLAROO__V1__FRAME__BODY_IN_DOUBT: return "in_doubt";
	default: return "unknown";
	}
}
