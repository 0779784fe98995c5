/*
 * wire.c -- the Batch and BatchReply frames, by hand (wire.h says why).
 *
 * Protobuf's wire format, as far as these frames need it: a field is a tag
 * varint (field number << 3 | wire type) then a varint (type 0) or a
 * varint length and that many bytes (type 2). proto3 leaves out fields at
 * their default (0, false, empty bytes); a repeated message field repeats
 * its tag once per element, an empty element included.
 */
#include "wire.h"

#include <limits.h>
#include <string.h>

#define WT_VARINT 0
#define WT_LEN 2
#define TAG(field, wt) ((uint8_t)((field) << 3 | (wt)))

/* ---- encoding ---------------------------------------------------------- */

static inline size_t
varint_len(uint64_t v)
{
	size_t n = 1;

	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static inline uint8_t *
put_varint(uint8_t *p, uint64_t v)
{
	while (v >= 0x80) {
		*p++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*p++ = (uint8_t)v;
	return p;
}

static inline size_t
bytes_field_len(size_t n)
{
	return n ? 1 + varint_len(n) + n : 0;
}

static inline uint8_t *
put_bytes_field(uint8_t *p, uint8_t tag, const uint8_t *b, size_t n)
{
	if (n == 0)
		return p;
	*p++ = tag;
	p = put_varint(p, n);
	memcpy(p, b, n);
	return p + n;
}

static inline size_t
varint_field_len(uint64_t v)
{
	return v ? 1 + varint_len(v) : 0;
}

static inline uint8_t *
put_varint_field(uint8_t *p, uint8_t tag, uint64_t v)
{
	if (v == 0)
		return p;
	*p++ = tag;
	return put_varint(p, v);
}

/* Event: key 1, payload 2, event_time 3 (int64: negative is 10 bytes),
 * stream_id 4, message_id 5. */
static size_t
event_len(const wl_event *e)
{
	return bytes_field_len(e->klen) + bytes_field_len(e->plen) +
	    varint_field_len((uint64_t)e->event_time) +
	    varint_field_len(e->stream_id) + varint_field_len(e->message_id);
}

static uint8_t *
put_event(uint8_t *p, const wl_event *e)
{
	p = put_bytes_field(p, TAG(1, WT_LEN), e->key, e->klen);
	p = put_bytes_field(p, TAG(2, WT_LEN), e->payload, e->plen);
	p = put_varint_field(p, TAG(3, WT_VARINT), (uint64_t)e->event_time);
	p = put_varint_field(p, TAG(4, WT_VARINT), e->stream_id);
	return put_varint_field(p, TAG(5, WT_VARINT), e->message_id);
}

/* StateEntry: key 1, value 2, present 3. */
static size_t
state_len(const wl_state_entry *k)
{
	return bytes_field_len(k->klen) + bytes_field_len(k->vlen) +
	    (k->present ? 2 : 0);
}

static uint8_t *
put_state(uint8_t *p, const wl_state_entry *k)
{
	p = put_bytes_field(p, TAG(1, WT_LEN), k->key, k->klen);
	p = put_bytes_field(p, TAG(2, WT_LEN), k->value, k->vlen);
	if (k->present) {
		*p++ = TAG(3, WT_VARINT);
		*p++ = 1;
	}
	return p;
}

wl_err
wl_wire_batch_encode(nng_msg **out, const wl_wire_batch *b)
{
	size_t body = varint_field_len(b->batch_id) +
	    varint_field_len(b->step_id);
	nng_msg *m;
	uint8_t *p;

	/* Two walks over the batch, sizes then bytes, so that the message
	 * is allocated once at its exact size. */
	for (const wl_event *e = b->events; e; e = e->next) {
		size_t n = event_len(e);
		body += 1 + varint_len(n) + n;
	}
	for (const wl_state_entry *k = b->keys; k; k = k->mark) {
		size_t n = state_len(k);
		body += 1 + varint_len(n) + n;
	}
	if (nng_msg_alloc(&m, 1 + varint_len(body) + body) != 0)
		return WL_ERR_NOMEM;
	p = nng_msg_body(m);
	*p++ = TAG(6, WT_LEN); /* Frame.batch */
	p = put_varint(p, body);
	p = put_varint_field(p, TAG(1, WT_VARINT), b->batch_id);
	p = put_varint_field(p, TAG(2, WT_VARINT), b->step_id);
	for (const wl_event *e = b->events; e; e = e->next) {
		*p++ = TAG(3, WT_LEN);
		p = put_varint(p, event_len(e));
		p = put_event(p, e);
	}
	for (const wl_state_entry *k = b->keys; k; k = k->mark) {
		*p++ = TAG(4, WT_LEN);
		p = put_varint(p, state_len(k));
		p = put_state(p, k);
	}
	*out = m;
	return WL_OK;
}

/* ---- decoding ---------------------------------------------------------- */

/* A range of bytes being read. Every function below returns false on
 * anything it does not take (see wire.h), and the whole decode declines. */
typedef struct {
	const uint8_t *p, *end;
} rd;

static bool
get_varint(rd *r, uint64_t *v)
{
	uint64_t x = 0;

	for (unsigned i = 0; i < 10; i++) {
		uint8_t b;

		if (r->p >= r->end)
			return false;
		b = *r->p++;
		/* A tenth byte may only carry bit 63; more is left to
		 * protobuf-c, as is anything longer. */
		if (i == 9 && b > 1)
			return false;
		x |= (uint64_t)(b & 0x7f) << (7 * i);
		if (!(b & 0x80)) {
			*v = x;
			return true;
		}
	}
	return false;
}

/* A tag of one byte (field 1 to 15): every field of these messages. */
static bool
get_tag(rd *r, unsigned *field, unsigned *wt)
{
	uint8_t b;

	if (r->p >= r->end || (*r->p & 0x80))
		return false;
	b = *r->p++;
	*field = b >> 3;
	*wt = b & 7;
	return *field != 0;
}

/* A length prefix, as protobuf-c reads one: at most 5 bytes, the value at
 * most INT_MAX. protobuf-c refuses a longer prefix (even one that only
 * pads a small value with 0x80 bytes), so taking it here would accept a
 * reply the protocol refuses (tests/fuzz/frame_fuzz.c found this). */
static bool
get_len(rd *r, rd *sub)
{
	const uint8_t *start = r->p;
	uint64_t n;

	if (!get_varint(r, &n) || r->p - start > 5 || n > INT_MAX ||
	    n > (uint64_t)(r->end - r->p))
		return false;
	sub->p = r->p;
	sub->end = r->p + n;
	r->p += n;
	return true;
}

static bool
get_bytes(rd *r, ProtobufCBinaryData *out)
{
	rd s;

	if (!get_len(r, &s))
		return false;
	out->len = (size_t)(s.end - s.p);
	out->data = out->len ? (uint8_t *)s.p : NULL;
	return true;
}

static void *
alloc(ProtobufCAllocator *a, size_t n)
{
	return a->alloc(a->allocator_data, n);
}

static bool
decode_state(ProtobufCAllocator *a, rd r, Wallaroo__V1__StateEntry **out)
{
	Wallaroo__V1__StateEntry *s = alloc(a, sizeof(*s));
	unsigned f = 0, wt = 0;
	uint64_t v;

	if (s == NULL)
		return false;
	wallaroo__v1__state_entry__init(s);
	while (r.p < r.end) {
		if (!get_tag(&r, &f, &wt))
			return false;
		if (f == 1 && wt == WT_LEN) {
			if (!get_bytes(&r, &s->key))
				return false;
		} else if (f == 2 && wt == WT_LEN) {
			if (!get_bytes(&r, &s->value))
				return false;
		} else if (f == 3 && wt == WT_VARINT) {
			if (!get_varint(&r, &v))
				return false;
			s->present = v != 0;
		} else
			return false;
	}
	*out = s;
	return true;
}

static bool
decode_output(ProtobufCAllocator *a, rd r, Wallaroo__V1__Output **out)
{
	Wallaroo__V1__Output *o = alloc(a, sizeof(*o));
	unsigned f = 0, wt = 0;
	uint64_t v;

	if (o == NULL)
		return false;
	wallaroo__v1__output__init(o);
	while (r.p < r.end) {
		if (!get_tag(&r, &f, &wt))
			return false;
		if (f == 1 && wt == WT_LEN) {
			if (!get_bytes(&r, &o->key))
				return false;
		} else if (f == 2 && wt == WT_VARINT) {
			if (!get_varint(&r, &v))
				return false;
			o->has_key = v != 0;
		} else if (f == 3 && wt == WT_LEN) {
			if (!get_bytes(&r, &o->payload))
				return false;
		} else if (f == 4 && wt == WT_VARINT) {
			if (!get_varint(&r, &v))
				return false;
			o->event_time = (int64_t)v;
		} else
			return false;
	}
	*out = o;
	return true;
}

/* Counts the occurrences of length-delimited field `want` in r, checking
 * that every field is one of the message's (`known` has bit N set for
 * field N; `lenmask` for those that are length-delimited). */
static bool
count_field(rd r, unsigned want, unsigned known, unsigned lenmask,
    size_t *n)
{
	unsigned f = 0, wt = 0;
	uint64_t v;
	rd s;

	*n = 0;
	while (r.p < r.end) {
		if (!get_tag(&r, &f, &wt) || !(known & (1u << f)))
			return false;
		if (lenmask & (1u << f)) {
			if (wt != WT_LEN || !get_len(&r, &s))
				return false;
			if (f == want)
				(*n)++;
		} else if (wt != WT_VARINT || !get_varint(&r, &v))
			return false;
	}
	return true;
}

static bool
decode_result(ProtobufCAllocator *a, rd r, Wallaroo__V1__Result **out)
{
	Wallaroo__V1__Result *res = alloc(a, sizeof(*res));
	size_t nout, i = 0;
	unsigned f = 0, wt = 0;
	rd s;

	if (res == NULL || !count_field(r, 1, 0xe, 0xe, &nout))
		return false;
	wallaroo__v1__result__init(res);
	if (nout > 0) {
		res->outputs = alloc(a, nout * sizeof(*res->outputs));
		if (res->outputs == NULL)
			return false;
	}
	while (r.p < r.end) {
		(void)get_tag(&r, &f, &wt); /* checked by count_field */
		(void)get_len(&r, &s);
		if (f == 1) {
			if (!decode_output(a, s, &res->outputs[i++]))
				return false;
		} else if (f == 2) {
			res->key.len = (size_t)(s.end - s.p);
			res->key.data = res->key.len ? (uint8_t *)s.p : NULL;
		} else {
			/* A string: copied, to end it with a NUL. Only ASCII:
			 * whatever protobuf-c makes of other bytes, it does. */
			size_t n = (size_t)(s.end - s.p);
			for (size_t j = 0; j < n; j++)
				if (s.p[j] & 0x80)
					return false;
			res->error = alloc(a, n + 1);
			if (res->error == NULL)
				return false;
			memcpy(res->error, s.p, n);
			res->error[n] = '\0';
		}
	}
	res->n_outputs = nout;
	*out = res;
	return true;
}

static bool
decode_reply(ProtobufCAllocator *a, rd r, Wallaroo__V1__BatchReply **out)
{
	Wallaroo__V1__BatchReply *rep = alloc(a, sizeof(*rep));
	size_t nres, nst, ir = 0, is = 0;
	unsigned f = 0, wt = 0;
	uint64_t v;
	rd s;

	if (rep == NULL || !count_field(r, 2, 0xe, 0xc, &nres) ||
	    !count_field(r, 3, 0xe, 0xc, &nst))
		return false;
	wallaroo__v1__batch_reply__init(rep);
	if (nres > 0 &&
	    (rep->results = alloc(a, nres * sizeof(*rep->results))) == NULL)
		return false;
	if (nst > 0 &&
	    (rep->states = alloc(a, nst * sizeof(*rep->states))) == NULL)
		return false;
	while (r.p < r.end) {
		(void)get_tag(&r, &f, &wt); /* checked by count_field */
		if (f == 1) {
			(void)get_varint(&r, &v);
			rep->batch_id = v;
			continue;
		}
		(void)get_len(&r, &s);
		if (f == 2) {
			if (!decode_result(a, s, &rep->results[ir++]))
				return false;
		} else if (!decode_state(a, s, &rep->states[is++]))
			return false;
	}
	rep->n_results = nres;
	rep->n_states = nst;
	*out = rep;
	return true;
}

bool
wl_wire_reply_decode(ProtobufCAllocator *a, const uint8_t *buf, size_t len,
    Wallaroo__V1__Frame **out)
{
	rd r = { buf, buf + len }, s;
	Wallaroo__V1__Frame *fr;
	unsigned f = 0, wt = 0;

	/* Frame{reply} and nothing else: one field, all of the bytes. */
	if (!get_tag(&r, &f, &wt) || f != 7 || wt != WT_LEN ||
	    !get_len(&r, &s) || r.p != r.end)
		return false;
	fr = alloc(a, sizeof(*fr));
	if (fr == NULL)
		return false;
	wallaroo__v1__frame__init(fr);
	if (!decode_reply(a, s, &fr->reply))
		return false;
	fr->body_case = WALLAROO__V1__FRAME__BODY_REPLY;
	*out = fr;
	return true;
}
