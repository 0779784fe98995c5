/*
 * wire_test.c -- the hand-written batch encoder and reply decoder against
 * protobuf-c: the encoder writes the same bytes; the decoder builds frames
 * that protobuf-c packs back to the same bytes, and declines, never
 * guessing, whatever it does not take (protobuf-c then decides).
 */
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "tap.h"
#include "testalloc.h"
#include "wire.h"

static uint64_t rng = 88172645463325252ull;

static uint64_t
rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* A value that exercises varint lengths: 0, small, or anything. */
static uint64_t
rnd_varint(void)
{
	switch (rnd() % 4) {
	case 0: return 0;
	case 1: return rnd() % 200;
	case 2: return rnd() >> (rnd() % 64);
	default: return rnd();
	}
}

static void
fill(uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)rnd();
}

/* What protobuf-c packs a frame into; the caller frees it. */
static uint8_t *
repack(const Wallaroo__V1__Frame *f, size_t *len)
{
	*len = wallaroo__v1__frame__get_packed_size(f);
	uint8_t *b = malloc(*len + 1);
	wallaroo__v1__frame__pack(f, b);
	return b;
}

/* ---- the encoder ---- */

static wl_state_entry *
new_key(size_t klen, size_t vlen, bool present)
{
	wl_state_entry *k = calloc(1, sizeof(*k) + klen + 1);

	k->klen = (uint32_t)klen;
	fill(k->key, klen);
	k->vlen = (uint32_t)vlen;
	k->value = vlen ? malloc(vlen) : NULL;
	fill(k->value, vlen);
	k->present = present;
	return k;
}

/* protobuf-c's bytes for the same batch. */
static uint8_t *
reference(const wl_wire_batch *b, size_t *len)
{
	Wallaroo__V1__Frame fr = WALLAROO__V1__FRAME__INIT;
	Wallaroo__V1__Batch pb = WALLAROO__V1__BATCH__INIT;
	size_t ne = 0, ns = 0, i = 0;

	for (const wl_event *e = b->events; e; e = e->next)
		ne++;
	for (const wl_state_entry *k = b->keys; k; k = k->mark)
		ns++;
	Wallaroo__V1__Event *ev = calloc(ne + 1, sizeof(*ev));
	Wallaroo__V1__Event **evp = calloc(ne + 1, sizeof(*evp));
	Wallaroo__V1__StateEntry *st = calloc(ns + 1, sizeof(*st));
	Wallaroo__V1__StateEntry **stp = calloc(ns + 1, sizeof(*stp));
	for (const wl_event *e = b->events; e; e = e->next, i++) {
		wallaroo__v1__event__init(&ev[i]);
		ev[i].key.data = e->key;
		ev[i].key.len = e->klen;
		ev[i].payload.data = e->payload;
		ev[i].payload.len = e->plen;
		ev[i].event_time = e->event_time;
		ev[i].stream_id = e->stream_id;
		ev[i].message_id = e->message_id;
		evp[i] = &ev[i];
	}
	i = 0;
	for (const wl_state_entry *k = b->keys; k; k = k->mark, i++) {
		wallaroo__v1__state_entry__init(&st[i]);
		st[i].key.data = (uint8_t *)k->key;
		st[i].key.len = k->klen;
		st[i].value.data = k->value;
		st[i].value.len = k->vlen;
		st[i].present = k->present;
		stp[i] = &st[i];
	}
	pb.batch_id = b->batch_id;
	pb.step_id = b->step_id;
	pb.n_events = ne;
	pb.events = evp;
	pb.n_states = ns;
	pb.states = stp;
	fr.body_case = WALLAROO__V1__FRAME__BODY_BATCH;
	fr.batch = &pb;
	uint8_t *out = repack(&fr, len);
	free(ev);
	free(evp);
	free(st);
	free(stp);
	return out;
}

/* Encodes b both ways; 1 when the bytes are the same. */
static int
same_as_protobuf_c(const wl_wire_batch *b)
{
	nng_msg *m;
	size_t len;
	uint8_t *ref = reference(b, &len);
	int same;

	if (wl_wire_batch_encode(&m, b) != WL_OK) {
		free(ref);
		return 0;
	}
	same = nng_msg_len(m) == len && memcmp(nng_msg_body(m), ref, len) == 0;
	nng_msg_free(m);
	free(ref);
	return same;
}

static void
free_batch(wl_wire_batch *b)
{
	while (b->events) {
		wl_event *n = b->events->next;
		wl_event_free((wl_event *)b->events);
		b->events = n;
	}
	while (b->keys) {
		wl_state_entry *n = b->keys->mark;
		free(((wl_state_entry *)b->keys)->value);
		free((wl_state_entry *)b->keys);
		b->keys = n;
	}
}

static void
test_encoder(void)
{
	wl_wire_batch b = { 0 };
	uint8_t kbuf[300], pbuf[300];
	int bad = 0, cases = 0;

	/* An empty batch, all defaults: protobuf-c still writes the body. */
	TAP_OK(same_as_protobuf_c(&b), "an empty batch with ids 0");

	/* Edges of every field. */
	{
		wl_event *e = wl_event_new("k", 1, "", 0);
		e->event_time = -1;     /* int64: ten bytes */
		e->stream_id = UINT32_MAX;
		e->message_id = UINT64_MAX;
		wl_event *e2 = wl_event_new(NULL, 0, "p", 1);
		e->next = e2;
		b.events = e;
		b.batch_id = UINT64_MAX;
		b.step_id = UINT32_MAX;
		wl_state_entry *k = new_key(0, 0, true);
		k->mark = new_key(3, 0, false);
		b.keys = k;
		TAP_OK(same_as_protobuf_c(&b), "extreme ids and times, empty key, "
		    "payload, value; present true and false");
		free_batch(&b);
	}

	/* Random batches: sizes across varint boundaries (127/128 bytes). */
	for (int round = 0; round < 2000; round++) {
		wl_wire_batch r = { rnd_varint(), (uint32_t)rnd_varint(), NULL,
		    NULL };
		wl_event **tail = (wl_event **)&r.events;
		wl_state_entry **ktail = (wl_state_entry **)&r.keys;
		size_t ne = rnd() % 12, ns = rnd() % 6;

		for (size_t i = 0; i < ne; i++) {
			size_t kl = rnd() % 3 ? rnd() % 20 : rnd() % 300;
			size_t pl = rnd() % 3 ? rnd() % 150 : rnd() % 300;
			fill(kbuf, kl);
			fill(pbuf, pl);
			wl_event *e = wl_event_new(kl ? kbuf : NULL, (uint32_t)kl,
			    pbuf, (uint32_t)pl);
			e->event_time = (int64_t)rnd_varint();
			e->stream_id = (uint32_t)rnd_varint();
			e->message_id = rnd_varint();
			*tail = e;
			tail = &e->next;
		}
		for (size_t i = 0; i < ns; i++) {
			wl_state_entry *k = new_key(rnd() % 140, rnd() % 140,
			    rnd() % 2);
			*ktail = k;
			ktail = &k->mark;
		}
		cases++;
		if (!same_as_protobuf_c(&r))
			bad++;
		free_batch(&r);
	}
	TAP_OK(bad == 0, "%d random batches encode as protobuf-c packs them "
	    "(%d differ)", cases, bad);
}

/* ---- the decoder ---- */

/* A random reply, packed by protobuf-c; the caller frees it. */
static uint8_t *
random_reply(size_t *len, int ascii_errors)
{
	Wallaroo__V1__Frame fr = WALLAROO__V1__FRAME__INIT;
	Wallaroo__V1__BatchReply rep = WALLAROO__V1__BATCH_REPLY__INIT;
	size_t nres = rnd() % 10, nst = rnd() % 5;
	Wallaroo__V1__Result *res = calloc(nres + 1, sizeof(*res));
	Wallaroo__V1__Result **resp = calloc(nres + 1, sizeof(*resp));
	Wallaroo__V1__StateEntry *st = calloc(nst + 1, sizeof(*st));
	Wallaroo__V1__StateEntry **stp = calloc(nst + 1, sizeof(*stp));
	static uint8_t pool[8192];
	static char err[300];
	size_t nouts = 0;
	Wallaroo__V1__Output *outs = calloc(nres * 4 + 1, sizeof(*outs));
	Wallaroo__V1__Output **outp = calloc(nres * 4 + 1, sizeof(*outp));

	fill(pool, sizeof(pool));
	for (size_t i = 0; i < nres; i++) {
		wallaroo__v1__result__init(&res[i]);
		size_t no = rnd() % 4;
		res[i].outputs = &outp[nouts];
		res[i].n_outputs = no;
		for (size_t j = 0; j < no; j++, nouts++) {
			Wallaroo__V1__Output *o = &outs[nouts];
			wallaroo__v1__output__init(o);
			o->key.len = rnd() % 3 ? rnd() % 16 : 0;
			o->key.data = pool + rnd() % 4096;
			o->has_key = rnd() % 2;
			o->payload.len = rnd() % 3 ? rnd() % 200 : 0;
			o->payload.data = pool + rnd() % 4096;
			o->event_time = (int64_t)rnd_varint();
			outp[nouts] = o;
		}
		if (rnd() % 3 == 0) {
			res[i].key.len = rnd() % 20;
			res[i].key.data = pool + rnd() % 4096;
		}
		if (rnd() % 4 == 0) {
			size_t n = rnd() % 200;
			for (size_t j = 0; j < n; j++)
				err[j] = ascii_errors ? (char)(' ' + rnd() % 90) :
				    (char)(rnd() % 255 + 1);
			err[n] = '\0';
			res[i].error = err;
		}
		resp[i] = &res[i];
	}
	for (size_t i = 0; i < nst; i++) {
		wallaroo__v1__state_entry__init(&st[i]);
		st[i].key.len = rnd() % 20;
		st[i].key.data = pool + rnd() % 4096;
		st[i].value.len = rnd() % 3 ? rnd() % 40 : 0;
		st[i].value.data = pool + rnd() % 4096;
		st[i].present = rnd() % 2;
		stp[i] = &st[i];
	}
	rep.batch_id = rnd_varint();
	rep.n_results = nres;
	rep.results = resp;
	rep.n_states = nst;
	rep.states = stp;
	fr.body_case = WALLAROO__V1__FRAME__BODY_REPLY;
	fr.reply = &rep;
	uint8_t *out = repack(&fr, len);
	free(res);
	free(resp);
	free(st);
	free(stp);
	free(outs);
	free(outp);
	return out;
}

/* Decodes buf by hand. 1: accepted, and protobuf-c decodes the same bytes
 * to a frame that packs identically; 0: declined; -1: accepted but not
 * what protobuf-c makes of it. */
static int
check_decode(const uint8_t *buf, size_t len)
{
	block *blocks = NULL;
	ProtobufCAllocator a = { t_alloc, t_free, &blocks };
	Wallaroo__V1__Frame *mine = NULL, *ref;
	int verdict = -1;

	if (!wl_wire_reply_decode(&a, buf, len, &mine)) {
		t_release(&blocks);
		return 0;
	}
	ref = wallaroo__v1__frame__unpack(NULL, len, buf);
	if (ref != NULL && ref->body_case == WALLAROO__V1__FRAME__BODY_REPLY) {
		size_t l1, l2;
		uint8_t *b1 = repack(mine, &l1), *b2 = repack(ref, &l2);
		verdict = l1 == l2 && memcmp(b1, b2, l1) == 0 ? 1 : -1;
		free(b1);
		free(b2);
	}
	if (ref != NULL)
		wallaroo__v1__frame__free_unpacked(ref, NULL);
	t_release(&blocks);
	return verdict;
}

static void
test_decoder(void)
{
	int accepted = 0, declined = 0, wrong = 0;
	size_t len;

	for (int round = 0; round < 2000; round++) {
		uint8_t *buf = random_reply(&len, 1);
		int v = check_decode(buf, len);
		accepted += v == 1;
		declined += v == 0;
		wrong += v == -1;
		free(buf);
	}
	TAP_OK(accepted == 2000 && wrong == 0, "2000 random replies decode as "
	    "protobuf-c decodes them (%d accepted, %d declined, %d differ)",
	    accepted, declined, wrong);

	/* Every prefix and thousands of one-byte changes of valid replies:
	 * whatever the decoder takes, protobuf-c takes the same way. */
	int taken = 0;
	wrong = 0;
	for (int round = 0; round < 300; round++) {
		uint8_t *buf = random_reply(&len, 1);
		for (size_t cut = 0; cut < len; cut++) {
			int v = check_decode(buf, cut);
			taken += v == 1;
			wrong += v == -1;
		}
		for (int m = 0; m < 40 && len > 0; m++) {
			size_t at = rnd() % len;
			uint8_t was = buf[at];
			buf[at] = (uint8_t)rnd();
			int v = check_decode(buf, len);
			taken += v == 1;
			wrong += v == -1;
			buf[at] = was;
		}
		free(buf);
	}
	TAP_OK(wrong == 0, "prefixes and one-byte changes of 300 replies: "
	    "%d taken by the decoder, none decoded otherwise than protobuf-c "
	    "(%d differ)", taken, wrong);

	/* Errors with bytes over 0x7f are left to protobuf-c. */
	int left = 0, n = 0;
	for (int round = 0; round < 300; round++) {
		uint8_t *buf = random_reply(&len, 0);
		block *blocks = NULL;
		ProtobufCAllocator a = { t_alloc, t_free, &blocks };
		Wallaroo__V1__Frame *mine = NULL;
		bool took = wl_wire_reply_decode(&a, buf, len, &mine);
		bool high = false;
		if (took)
			for (size_t i = 0; i < mine->reply->n_results; i++)
				for (const char *c = mine->reply->results[i]->error;
				    *c; c++)
					high |= (*c & 0x80) != 0;
		n++;
		left += !took || !high;
		t_release(&blocks);
		free(buf);
	}
	TAP_OK(left == n, "replies whose errors hold bytes over 0x7f are "
	    "never decoded by hand (%d of %d)", left, n);
}

static void
test_declines(void)
{
	block *blocks = NULL;
	ProtobufCAllocator a = { t_alloc, t_free, &blocks };
	Wallaroo__V1__Frame *f = NULL;
	/* Frame{reply{batch_id 5}} as the base. */
	static const uint8_t ok[] = { 0x3a, 0x02, 0x08, 0x05 };
	static const uint8_t unknown_field[] = { 0x3a, 0x04, 0x08, 0x05, 0x48,
		0x01 };                                  /* BatchReply field 9 */
	static const uint8_t wrong_type[] = { 0x3a, 0x02, 0x0a, 0x00 };
	                                                 /* batch_id as bytes */
	static const uint8_t two_bodies[] = { 0x3a, 0x02, 0x08, 0x05, 0x3a,
		0x00 };                                  /* reply twice: merged */
	static const uint8_t other_body[] = { 0x4a, 0x02, 0x08, 0x01 };
	                                                 /* heartbeat */
	static const uint8_t long_tag[] = { 0x3a, 0x03, 0x88, 0x00, 0x05 };
	                                                 /* overlong tag */
	static const uint8_t overrun[] = { 0x3a, 0x05, 0x08, 0x05 };
	/* A length of 0 padded to 6 bytes: protobuf-c refuses a prefix over
	 * 5 bytes, so the hand decoder must not take it (found by
	 * tests/fuzz/frame_fuzz.c); 5 bytes are fine. */
	static const uint8_t len6[] = { 0x3a, 0x80, 0x80, 0x80, 0x80, 0x80,
		0x00 };
	static const uint8_t len5[] = { 0x3a, 0x80, 0x80, 0x80, 0x80, 0x00 };

	TAP_OK(wl_wire_reply_decode(&a, ok, sizeof(ok), &f) &&
	    f->body_case == WALLAROO__V1__FRAME__BODY_REPLY &&
	    f->reply->batch_id == 5 && f->reply->n_results == 0,
	    "Frame{reply{batch_id 5}} is decoded");
	f = NULL;
	TAP_OK(!wl_wire_reply_decode(&a, unknown_field, sizeof(unknown_field),
	    &f) && f == NULL, "an unknown field is left to protobuf-c");
	TAP_OK(!wl_wire_reply_decode(&a, wrong_type, sizeof(wrong_type), &f),
	    "a known field with another wire type is left to protobuf-c");
	TAP_OK(!wl_wire_reply_decode(&a, two_bodies, sizeof(two_bodies), &f),
	    "a reply field given twice is left to protobuf-c");
	TAP_OK(!wl_wire_reply_decode(&a, other_body, sizeof(other_body), &f),
	    "another body is left to protobuf-c");
	TAP_OK(!wl_wire_reply_decode(&a, long_tag, sizeof(long_tag), &f),
	    "a tag over one byte is left to protobuf-c");
	TAP_OK(!wl_wire_reply_decode(&a, overrun, sizeof(overrun), &f),
	    "a length past the end is left to protobuf-c");
	TAP_OK(!wl_wire_reply_decode(&a, len6, sizeof(len6), &f) &&
	    wallaroo__v1__frame__unpack(NULL, sizeof(len6), len6) == NULL,
	    "a length prefix over 5 bytes is refused, as protobuf-c does");
	f = NULL;
	TAP_OK(wl_wire_reply_decode(&a, len5, sizeof(len5), &f) &&
	    f->reply->batch_id == 0, "a length prefix of 5 bytes is decoded");
	f = NULL;
	TAP_OK(!wl_wire_reply_decode(&a, ok, 0, &f), "no bytes at all");
	t_release(&blocks);
}

static void
test_through_frame_decode(void)
{
	/* wl_frame_decode takes the hand path for a reply: its payloads point
	 * into the buffer, which protobuf-c would have copied. */
	uint8_t *buf;
	size_t len;
	wl_frame *f = NULL;
	int inside = 0, outputs = 0;

	do {
		free(buf = NULL);
		buf = random_reply(&len, 1);
		if (wl_frame_decode(&f, buf, len) != WL_OK)
			break;
		for (size_t i = 0; i < f->reply->n_results; i++)
			for (size_t j = 0; j < f->reply->results[i]->n_outputs; j++) {
				const Wallaroo__V1__Output *o =
				    f->reply->results[i]->outputs[j];
				if (o->payload.len == 0)
					continue;
				outputs++;
				inside += o->payload.data >= buf &&
				    o->payload.data + o->payload.len <= buf + len;
			}
		if (outputs == 0) {
			wl_frame_free(f);
			f = NULL;
			free(buf);
		}
	} while (outputs == 0);
	TAP_OK(f != NULL && outputs > 0 && inside == outputs,
	    "wl_frame_decode decodes replies by hand (%d of %d payloads point "
	    "into the message)", inside, outputs);
	wl_frame_free(f);
	free(buf);
	wl_frame_arenas_drain();
}

int
main(void)
{
	test_encoder();
	test_decoder();
	test_declines();
	test_through_frame_decode();
	wl_event_pool_drain();
	return TAP_DONE();
}
