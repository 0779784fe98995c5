/* event_test.c -- events and FIFO queues. */
#include <string.h>

#include "event.h"
#include "tap.h"

int
main(void)
{
	wl_queue q = { 0 }, r = { 0 };
	wl_event *a = wl_event_new("k", 1, "payload", 7);
	wl_event *b, *c;

	TAP_OK(a && a->klen == 1 && a->plen == 7 &&
	    memcmp(a->key, "k", 1) == 0 && memcmp(a->payload, "payload", 7) == 0,
	    "new event holds copies of key and payload");
	a->stream_id = 7;
	a->message_id = 42;
	b = wl_event_rekey(a, "newkey", 6);
	TAP_OK(b && b->klen == 6 && memcmp(b->key, "newkey", 6) == 0 &&
	    b->plen == 7 && b->stream_id == 7 && b->message_id == 42,
	    "rekey keeps payload and origin");
	c = wl_event_new(NULL, 0, "", 0);
	TAP_OK(c && c->key == NULL && c->plen == 0, "empty key and payload");
	wl_queue_push(&q, a);
	wl_queue_push(&q, b);
	TAP_OK(q.count == 2 && q.bytes == wl_event_size(a) + wl_event_size(b),
	    "queue counts events and bytes");
	wl_queue_push(&r, c);
	wl_queue_append(&r, &q);
	TAP_OK(r.count == 3 && q.count == 0 && q.head == NULL && q.bytes == 0,
	    "append moves everything");
	TAP_OK(wl_queue_pop(&r) == c && wl_queue_pop(&r) == a &&
	    wl_queue_pop(&r) == b && wl_queue_pop(&r) == NULL && r.bytes == 0,
	    "FIFO order");
	wl_event_free(a);
	wl_event_free(b);
	wl_event_free(c);
	wl_queue_push(&q, wl_event_new("x", 1, "y", 1));
	wl_queue_clear(&q);
	TAP_OK(q.count == 0 && q.head == NULL && q.tail == NULL, "clear");

	/* prepend: what comes back from a lost connection goes first. */
	a = wl_event_new(NULL, 0, "1", 1);
	b = wl_event_new(NULL, 0, "2", 1);
	c = wl_event_new(NULL, 0, "3", 1);
	wl_queue_push(&q, c);
	wl_queue_push(&r, a);
	wl_queue_push(&r, b);
	wl_queue_prepend(&q, &r);
	TAP_OK(q.count == 3 && r.count == 0 && r.head == NULL &&
	    q.bytes == wl_event_size(a) * 3 && q.tail == c,
	    "prepend moves everything to the front");
	TAP_OK(wl_queue_pop(&q) == a && wl_queue_pop(&q) == b &&
	    wl_queue_pop(&q) == c && q.tail == NULL, "prepend keeps both orders");
	wl_queue_prepend(&q, &r);
	TAP_OK(q.count == 0 && q.head == NULL, "prepend of an empty queue");
	wl_queue_push(&r, a);
	wl_queue_prepend(&q, &r);
	TAP_OK(q.head == a && q.tail == a && q.count == 1,
	    "prepend into an empty queue");
	wl_queue_clear(&q);
	wl_event_free(b);
	wl_event_free(c);
	return TAP_DONE();
}
