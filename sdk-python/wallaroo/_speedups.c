/* The runner's per-batch path in C: parse a Batch frame, run the step over
 * its events, write the BatchReply frame.
 *
 * Optional. The pure-Python path (_core.py, _wire.py) is the definition;
 * this module does the same for the common case and declines (returns
 * None) for anything else, and the runner then takes the Python path over
 * the same bytes. Why it exists: at 5 events a batch, a Python runner spent
 * about two thirds of its time per batch outside the user's code, most of
 * it reading protobuf message wrappers and calling small helpers; here the
 * batch is read straight from the frame's bytes and the reply is written
 * into one buffer, and only the user's functions are called.
 *
 * Declines (None), and the Python path then decides:
 *   - a frame that is not exactly one Batch, or that this parser does not
 *     fully understand (a known field with an unexpected wire type, a
 *     group, a truncated field);
 *   - a step id not in `plans` (the runner reports it);
 *   - a state step whose user code raises, or whose state cannot be made,
 *     loaded or saved as bytes: the Python path rolls the key back
 *     (_core._Recovery). Its user code has then run twice on the events
 *     before the failure, with fresh states: step functions must be
 *     deterministic in (data, state) anyway;
 *   - a key-by step whose key_bytes gives something not exactly bytes.
 * An exception that is not an Exception (KeyboardInterrupt, SystemExit)
 * propagates, as on the Python path.
 *
 * Replies are byte-for-byte what _wire.py writes: the SDK's tests compare
 * the two over random batches (sdk-python/tests/test_speedups.py).
 *
 * Field numbers (protocol/wallaroo.proto): Frame.batch = 6, Frame.reply = 7;
 * Batch.batch_id = 1, step_id = 2, events = 3, states = 4, epoch = 5;
 * Event.key = 1, payload = 2, event_time = 3, stream_id = 4,
 * message_id = 5; StateEntry.key = 1, value = 2, present = 3;
 * BatchReply.batch_id = 1, results = 2, states = 3; Result.outputs = 1,
 * key = 2; Output.payload = 3.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if PY_VERSION_HEX < 0x030A0000
/* Python 3.9 has no Py_NewRef. */
static inline PyObject *
Py_NewRef(PyObject *o)
{
	Py_INCREF(o);
	return o;
}
#endif

/* What reply() found, beside a Python error (-1). */
enum sp_status {
	SP_ERROR = -1,   /* a Python exception is set: propagate it */
	SP_OK = 0,
	SP_DECLINE = 1,  /* not handled here: the caller takes the Python path */
};

/* Step kinds, as _core.py's plans give them. */
enum sp_kind {
	SP_STATELESS = 0,
	SP_STATE = 1,
	SP_KEY_BY = 2,
};

/* The Python helpers the rare branches call, set once by init(). Owned
 * references, kept for the process's life. */
static PyObject *h_result;       /* _core._result(out, encode) -> bytes */
static PyObject *h_multi;        /* _core._multi_result(outs, encode, plain) -> bytes */
static PyObject *h_failed;       /* (name, key, exc) -> an error Result field */
static PyObject *h_plain;        /* _wire.plain_result(payload) -> bytes */
static PyObject *h_key_bytes;    /* codecs.key_bytes(key) -> bytes */
static PyObject *h_output_type;  /* output.Output */

/* ---- reading the frame ---- */

/* A slice of the frame's bytes. */
struct sp_slice {
	const uint8_t *p;
	size_t n;
};

struct sp_reader {
	const uint8_t *p;
	const uint8_t *end;
};

/* Reads a varint; 0, or -1 when it is truncated or longer than 10 bytes. */
static int
sp_varint(struct sp_reader *r, uint64_t *out)
{
	uint64_t v = 0;
	for (int shift = 0; shift < 70; shift += 7) {
		if (r->p >= r->end)
			return -1;
		uint8_t b = *r->p++;
		if (shift == 63 && b > 1)
			return -1; /* over 64 bits */
		v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*out = v;
			return 0;
		}
	}
	return -1;
}

/* Reads a field's tag: its number and wire type. */
static int
sp_tag(struct sp_reader *r, uint32_t *field, int *wire)
{
	uint64_t t;
	if (sp_varint(r, &t) < 0 || t > UINT32_MAX || (t >> 3) == 0)
		return -1;
	*field = (uint32_t)(t >> 3);
	*wire = (int)(t & 7);
	return 0;
}

/* Reads a length-delimited field's bytes (after its tag). */
static int
sp_bytes(struct sp_reader *r, struct sp_slice *out)
{
	uint64_t n;
	if (sp_varint(r, &n) < 0 || n > (uint64_t)(r->end - r->p))
		return -1;
	out->p = r->p;
	out->n = (size_t)n;
	r->p += n;
	return 0;
}

/* Skips a field of an unknown number. Groups (wire types 3, 4) are not
 * skipped: the caller declines. */
static int
sp_skip(struct sp_reader *r, int wire)
{
	uint64_t v;
	struct sp_slice s;
	size_t width;
	switch (wire) {
	case 0:
		return sp_varint(r, &v);
	case 2:
		return sp_bytes(r, &s);
	case 1: /* fixed64 */
	case 5: /* fixed32 */
		width = wire == 1 ? 8 : 4;
		if ((size_t)(r->end - r->p) < width)
			return -1;
		r->p += width;
		return 0;
	default:
		return -1;
	}
}

/* An event or state entry: its bytes fields, its varint flag. */
struct sp_item {
	struct sp_slice key;
	struct sp_slice value;  /* Event.payload, StateEntry.value */
	int present;            /* StateEntry.present */
};

/* Reads an Event or a StateEntry: field 1 key, field 2 payload or value,
 * field 3 (StateEntry) present; others skipped when their wire type is
 * the one the message declares. -1 on anything else. */
static int
sp_item(struct sp_slice body, int is_state, struct sp_item *out)
{
	struct sp_reader r = {body.p, body.p + body.n};
	memset(out, 0, sizeof(*out));
	while (r.p < r.end) {
		uint32_t field;
		int wire;
		uint64_t v;
		if (sp_tag(&r, &field, &wire) < 0)
			return -1;
		if (field == 1 || field == 2) {
			if (wire != 2)
				return -1;
			if (sp_bytes(&r, field == 1 ? &out->key : &out->value) < 0)
				return -1;
		} else if (field <= 5 && !(is_state && field > 3)) {
			/* Event: event_time, stream_id, message_id; StateEntry:
			 * present. All varints. */
			if (wire != 0 || sp_varint(&r, &v) < 0)
				return -1;
			if (is_state)
				out->present = v != 0;
		} else if (sp_skip(&r, wire) < 0) {
			return -1;
		}
	}
	return 0;
}

/* The parts of a Batch this module uses. The items point into the frame. */
struct sp_batch {
	uint64_t batch_id;
	uint64_t step_id;
	struct sp_item *events;
	size_t nevents, events_cap;
	struct sp_item *states;
	size_t nstates, states_cap;
};

static int
sp_push(struct sp_item **items, size_t *n, size_t *cap, const struct sp_item *it)
{
	if (*n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 16;
		struct sp_item *m = PyMem_Realloc(*items, ncap * sizeof(*m));
		if (m == NULL) {
			PyErr_NoMemory();
			return SP_ERROR;
		}
		*items = m;
		*cap = ncap;
	}
	(*items)[(*n)++] = *it;
	return SP_OK;
}

/* Parses a Frame holding exactly one Batch field. SP_DECLINE for any other
 * frame or anything not understood. */
static int
sp_parse(const uint8_t *data, size_t n, struct sp_batch *b)
{
	struct sp_reader top = {data, data + n};
	uint32_t field;
	int wire;
	struct sp_slice body;
	if (sp_tag(&top, &field, &wire) < 0 || field != 6 || wire != 2 ||
	    sp_bytes(&top, &body) < 0 || top.p != top.end)
		return SP_DECLINE;
	struct sp_reader r = {body.p, body.p + body.n};
	while (r.p < r.end) {
		uint64_t v;
		struct sp_slice s;
		struct sp_item it;
		if (sp_tag(&r, &field, &wire) < 0)
			return SP_DECLINE;
		switch (field) {
		case 1:
		case 2:
		case 5:
			if (wire != 0 || sp_varint(&r, &v) < 0)
				return SP_DECLINE;
			/* Batch.step_id is a uint32: protobuf keeps the low bits. */
			if (field == 1)
				b->batch_id = v;
			else if (field == 2)
				b->step_id = (uint32_t)v;
			break;
		case 3:
		case 4:
			if (wire != 2 || sp_bytes(&r, &s) < 0 ||
			    sp_item(s, field == 4, &it) < 0)
				return SP_DECLINE;
			if ((field == 3 ? sp_push(&b->events, &b->nevents, &b->events_cap, &it)
			                : sp_push(&b->states, &b->nstates, &b->states_cap, &it)) < 0)
				return SP_ERROR;
			break;
		default:
			if (sp_skip(&r, wire) < 0)
				return SP_DECLINE;
		}
	}
	return SP_OK;
}

/* ---- writing the reply ---- */

/* The reply's Result and StateEntry fields, as they are written. */
struct sp_out {
	uint8_t *p;
	size_t n, cap;
};

static int
sp_reserve(struct sp_out *o, size_t more)
{
	if (o->cap - o->n >= more)
		return SP_OK;
	size_t ncap = o->cap ? o->cap : 256;
	while (ncap - o->n < more) {
		if (ncap > PY_SSIZE_T_MAX / 2) {
			PyErr_NoMemory();
			return SP_ERROR;
		}
		ncap *= 2;
	}
	uint8_t *m = PyMem_Realloc(o->p, ncap);
	if (m == NULL) {
		PyErr_NoMemory();
		return SP_ERROR;
	}
	o->p = m;
	o->cap = ncap;
	return SP_OK;
}

static size_t
sp_varint_len(uint64_t v)
{
	size_t n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

/* Writes a varint into reserved room. */
static void
sp_put_varint(struct sp_out *o, uint64_t v)
{
	while (v >= 0x80) {
		o->p[o->n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	o->p[o->n++] = (uint8_t)v;
}

/* The size of a length-delimited field of n bytes: tag, length, bytes. */
static size_t
sp_field_len(size_t n)
{
	return 1 + sp_varint_len(n) + n;
}

/* Writes a length-delimited field into reserved room. */
static void
sp_put_bytes_field(struct sp_out *o, uint8_t tag, const void *p, size_t n)
{
	o->p[o->n++] = tag;
	sp_put_varint(o, n);
	memcpy(o->p + o->n, p, n);
	o->n += n;
}

static int
sp_put_raw(struct sp_out *o, const void *p, size_t n)
{
	if (sp_reserve(o, n) < 0)
		return SP_ERROR;
	memcpy(o->p + o->n, p, n);
	o->n += n;
	return SP_OK;
}

/* Appends a field a Python helper wrote (bytes). Steals `field`. */
static int
sp_put_field(struct sp_out *o, PyObject *field)
{
	if (field == NULL)
		return SP_ERROR;
	if (!PyBytes_Check(field)) {
		Py_DECREF(field);
		PyErr_SetString(PyExc_TypeError, "a reply helper returned something not bytes");
		return SP_ERROR;
	}
	int rc = sp_put_raw(o, PyBytes_AS_STRING(field), (size_t)PyBytes_GET_SIZE(field));
	Py_DECREF(field);
	return rc;
}

static const uint8_t EMPTY_RESULT[2] = {0x12, 0x00};

/* _wire.plain_result: a Result with one Output that has only a payload. */
static int
sp_put_plain(struct sp_out *o, const char *payload, size_t n)
{
	size_t out_body = n ? sp_field_len(n) : 0;  /* Output */
	size_t res_body = sp_field_len(out_body);   /* Result */
	if (sp_reserve(o, sp_field_len(res_body)) < 0)
		return SP_ERROR;
	o->p[o->n++] = 0x12;
	sp_put_varint(o, res_body);
	o->p[o->n++] = 0x0a;
	sp_put_varint(o, out_body);
	if (n)
		sp_put_bytes_field(o, 0x1a, payload, n);
	return SP_OK;
}

/* _wire.key_result: a key-by step's Result, the event's new key. */
static int
sp_put_key_result(struct sp_out *o, const char *key, size_t n)
{
	if (n == 0)
		return sp_put_raw(o, EMPTY_RESULT, sizeof(EMPTY_RESULT));
	size_t body = sp_field_len(n);
	if (sp_reserve(o, sp_field_len(body)) < 0)
		return SP_ERROR;
	o->p[o->n++] = 0x12;
	sp_put_varint(o, body);
	sp_put_bytes_field(o, 0x12, key, n);
	return SP_OK;
}

/* _wire.state_entry: `key` now has state `value`. */
static int
sp_put_state(struct sp_out *o, const char *key, size_t kn, const char *value, size_t vn)
{
	size_t body = (kn ? sp_field_len(kn) : 0) + (vn ? sp_field_len(vn) : 0) + 2;
	if (sp_reserve(o, sp_field_len(body)) < 0)
		return SP_ERROR;
	o->p[o->n++] = 0x1a;
	sp_put_varint(o, body);
	if (kn)
		sp_put_bytes_field(o, 0x0a, key, kn);
	if (vn)
		sp_put_bytes_field(o, 0x12, value, vn);
	o->p[o->n++] = 0x18;
	o->p[o->n++] = 0x01;
	return SP_OK;
}

/* ---- running a step ---- */

/* A step as _core.plan() describes it: a tuple of
 * (kind, name, fn, decode or None, encode or None, plain, multi,
 *  factory or None, loads or None, dumps or None). Borrowed references. */
struct sp_plan {
	long kind;
	PyObject *name, *fn, *decode, *encode;
	int plain, multi;
	PyObject *factory, *loads, *dumps;
};

static int
sp_plan_of(PyObject *t, struct sp_plan *pl)
{
	if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 10) {
		PyErr_SetString(PyExc_TypeError, "a plan is a tuple of 10 items");
		return SP_ERROR;
	}
	pl->kind = PyLong_AsLong(PyTuple_GET_ITEM(t, 0));
	if (pl->kind == -1 && PyErr_Occurred())
		return SP_ERROR;
	pl->name = PyTuple_GET_ITEM(t, 1);
	pl->fn = PyTuple_GET_ITEM(t, 2);
	pl->decode = PyTuple_GET_ITEM(t, 3);
	pl->encode = PyTuple_GET_ITEM(t, 4);
	pl->plain = PyObject_IsTrue(PyTuple_GET_ITEM(t, 5));
	pl->multi = PyObject_IsTrue(PyTuple_GET_ITEM(t, 6));
	pl->factory = PyTuple_GET_ITEM(t, 7);
	pl->loads = PyTuple_GET_ITEM(t, 8);
	pl->dumps = PyTuple_GET_ITEM(t, 9);
	if (pl->plain < 0 || pl->multi < 0)
		return SP_ERROR;
	if (pl->kind != SP_STATELESS && pl->kind != SP_STATE && pl->kind != SP_KEY_BY) {
		PyErr_Format(PyExc_ValueError, "unknown plan kind %ld", pl->kind);
		return SP_ERROR;
	}
	return SP_OK;
}

/* After user code raised: SP_DECLINE for an Exception (cleared), SP_ERROR
 * (kept) for anything else, which must propagate as on the Python path. */
static int
sp_user_failed(void)
{
	if (PyErr_ExceptionMatches(PyExc_Exception)) {
		PyErr_Clear();
		return SP_DECLINE;
	}
	return SP_ERROR;
}

/* The user's input for an event: the payload, decoded when the step has a
 * decoder. New reference, NULL with an exception set. */
static PyObject *
sp_input(const struct sp_plan *pl, PyObject *payload)
{
	if (pl->decode == Py_None) {
		Py_INCREF(payload);
		return payload;
	}
	return PyObject_CallOneArg(pl->decode, payload);
}

/* Writes the Result of `out`, what fn returned for one event, as
 * _core._run_stateless and _run_state do. SP_ERROR with the exception set
 * when the encoding failed (which counts as the event failing). */
static int
sp_put_outcome(struct sp_out *o, const struct sp_plan *pl, PyObject *out)
{
	if (out == Py_None)
		return sp_put_raw(o, EMPTY_RESULT, sizeof(EMPTY_RESULT));
	if (pl->multi)
		return sp_put_field(o, PyObject_CallFunctionObjArgs(
			h_multi, out, pl->encode, pl->plain ? Py_True : Py_False, NULL));
	if (pl->plain && PyBytes_CheckExact(out))
		return sp_put_plain(o, PyBytes_AS_STRING(out), (size_t)PyBytes_GET_SIZE(out));
	int is_output = PyObject_IsInstance(out, h_output_type);
	if (is_output < 0)
		return SP_ERROR;
	if (is_output)
		return sp_put_field(o, PyObject_CallFunctionObjArgs(h_result, out, pl->encode, NULL));
	/* _core._result: plain_result(encode(out)). */
	PyObject *enc = PyObject_CallOneArg(pl->encode, out);
	if (enc == NULL)
		return SP_ERROR;
	if (PyBytes_CheckExact(enc)) {
		int rc = sp_put_plain(o, PyBytes_AS_STRING(enc), (size_t)PyBytes_GET_SIZE(enc));
		Py_DECREF(enc);
		return rc;
	}
	PyObject *field = PyObject_CallOneArg(h_plain, enc);
	Py_DECREF(enc);
	return sp_put_field(o, field);
}

/* The error Result of an event whose user code raised (the exception is
 * set, and is an Exception): _wire.error_result(describe_failure(...)). */
static int
sp_put_failure(struct sp_out *o, const struct sp_plan *pl, PyObject *key)
{
	PyObject *type, *value, *tb;
	PyErr_Fetch(&type, &value, &tb);
	PyErr_NormalizeException(&type, &value, &tb);
	if (tb != NULL && value != NULL)
		PyException_SetTraceback(value, tb);
	PyObject *field = PyObject_CallFunctionObjArgs(h_failed, pl->name, key,
	                                               value ? value : Py_None, NULL);
	Py_XDECREF(type);
	Py_XDECREF(value);
	Py_XDECREF(tb);
	return sp_put_field(o, field);
}

/* A new bytes object for a slice. */
static PyObject *
sp_bytes_of(struct sp_slice s)
{
	return PyBytes_FromStringAndSize((const char *)s.p, (Py_ssize_t)s.n);
}

static int
sp_run_stateless(struct sp_out *o, const struct sp_plan *pl, const struct sp_batch *b)
{
	for (size_t i = 0; i < b->nevents; i++) {
		PyObject *payload = sp_bytes_of(b->events[i].value);
		if (payload == NULL)
			return SP_ERROR;
		PyObject *arg = sp_input(pl, payload);
		Py_DECREF(payload);
		PyObject *out = arg ? PyObject_CallOneArg(pl->fn, arg) : NULL;
		Py_XDECREF(arg);
		int rc;
		if (pl->kind == SP_KEY_BY) {
			PyObject *key = out;
			if (key != NULL && !PyBytes_CheckExact(key)) {
				key = PyObject_CallOneArg(h_key_bytes, out);
				Py_DECREF(out);
			}
			if (key != NULL && !PyBytes_CheckExact(key)) {
				Py_DECREF(key);
				return SP_DECLINE;
			}
			rc = key ? sp_put_key_result(o, PyBytes_AS_STRING(key),
			                             (size_t)PyBytes_GET_SIZE(key))
			         : SP_ERROR;
			Py_XDECREF(key);
		} else {
			rc = out ? sp_put_outcome(o, pl, out) : SP_ERROR;
			Py_XDECREF(out);
		}
		if (rc == SP_ERROR) {
			if (!PyErr_ExceptionMatches(PyExc_Exception))
				return SP_ERROR;
			PyObject *key = sp_bytes_of(b->events[i].key);
			if (key == NULL)
				return SP_ERROR;
			rc = sp_put_failure(o, pl, key);
			Py_DECREF(key);
			if (rc != SP_OK)
				return rc;
		}
	}
	return SP_OK;
}

/* The state of `key` for its first event in the batch: the factory's for a
 * key the engine has no state for, else loads(value). New reference; NULL
 * with an exception set. */
static PyObject *
sp_load(const struct sp_plan *pl, PyObject *initial, PyObject *key)
{
	PyObject *value = PyDict_GetItemWithError(initial, key); /* borrowed */
	if (value == NULL && PyErr_Occurred())
		return NULL;
	if (value == NULL || value == Py_None)
		return PyObject_CallNoArgs(pl->factory);
	return PyObject_CallOneArg(pl->loads, value);
}

static int
sp_run_state_events(struct sp_out *o, const struct sp_plan *pl, const struct sp_batch *b,
                    PyObject *initial, PyObject *states)
{
	for (size_t i = 0; i < b->nevents; i++) {
		PyObject *key = sp_bytes_of(b->events[i].key);
		if (key == NULL)
			return SP_ERROR;
		PyObject *state = PyDict_GetItemWithError(states, key); /* borrowed */
		if (state == NULL) {
			if (PyErr_Occurred()) {
				Py_DECREF(key);
				return SP_ERROR;
			}
			PyObject *made = sp_load(pl, initial, key);
			if (made == NULL || PyDict_SetItem(states, key, made) < 0) {
				Py_XDECREF(made);
				Py_DECREF(key);
				return sp_user_failed();
			}
			state = made;
			Py_DECREF(made); /* the dict holds it */
		}
		Py_DECREF(key);
		PyObject *payload = sp_bytes_of(b->events[i].value);
		if (payload == NULL)
			return SP_ERROR;
		PyObject *arg = sp_input(pl, payload);
		Py_DECREF(payload);
		PyObject *out = NULL;
		if (arg != NULL) {
			PyObject *args[2] = {arg, state};
			/* The state stays alive: `states` holds it, and user code
			 * cannot reach that dict. */
			out = PyObject_Vectorcall(pl->fn, args, 2, NULL);
			Py_DECREF(arg);
		}
		int rc = out ? sp_put_outcome(o, pl, out) : SP_ERROR;
		Py_XDECREF(out);
		if (rc == SP_ERROR)
			return sp_user_failed();
	}
	return SP_OK;
}

/* The StateEntry of every key whose serialized state changed. */
static int
sp_save_states(struct sp_out *o, const struct sp_plan *pl, PyObject *initial, PyObject *states)
{
	Py_ssize_t pos = 0;
	PyObject *key, *state;
	while (PyDict_Next(states, &pos, &key, &state)) {
		PyObject *value = PyObject_CallOneArg(pl->dumps, state);
		if (value == NULL)
			return sp_user_failed();
		if (!PyBytes_CheckExact(value)) {
			/* bytearray and friends: the Python path decides. */
			Py_DECREF(value);
			return SP_DECLINE;
		}
		PyObject *before = PyDict_GetItemWithError(initial, key); /* borrowed */
		if (before == NULL && PyErr_Occurred()) {
			Py_DECREF(value);
			return SP_ERROR;
		}
		int same = before != NULL && before != Py_None &&
		           PyBytes_GET_SIZE(before) == PyBytes_GET_SIZE(value) &&
		           memcmp(PyBytes_AS_STRING(before), PyBytes_AS_STRING(value),
		                  (size_t)PyBytes_GET_SIZE(value)) == 0;
		int rc = same ? SP_OK
		              : sp_put_state(o, PyBytes_AS_STRING(key), (size_t)PyBytes_GET_SIZE(key),
		                             PyBytes_AS_STRING(value), (size_t)PyBytes_GET_SIZE(value));
		Py_DECREF(value);
		if (rc != SP_OK)
			return rc;
	}
	return SP_OK;
}

static int
sp_run_state(struct sp_out *o, const struct sp_plan *pl, const struct sp_batch *b)
{
	/* The engine's view of each key before this batch: bytes, or None for
	 * a key without state. A later entry for a key replaces an earlier. */
	PyObject *initial = PyDict_New();
	PyObject *states = PyDict_New();
	int rc = (initial && states) ? SP_OK : SP_ERROR;
	for (size_t i = 0; rc == SP_OK && i < b->nstates; i++) {
		const struct sp_item *it = &b->states[i];
		PyObject *key = sp_bytes_of(it->key);
		PyObject *value = it->present ? sp_bytes_of(it->value) : Py_NewRef(Py_None);
		if (key == NULL || value == NULL || PyDict_SetItem(initial, key, value) < 0)
			rc = SP_ERROR;
		Py_XDECREF(key);
		Py_XDECREF(value);
	}
	if (rc == SP_OK)
		rc = sp_run_state_events(o, pl, b, initial, states);
	if (rc == SP_OK)
		rc = sp_save_states(o, pl, initial, states);
	Py_XDECREF(initial);
	Py_XDECREF(states);
	return rc;
}

/* The whole reply frame: Frame.reply holding batch_id and the fields. */
static PyObject *
sp_frame(uint64_t batch_id, const struct sp_out *fields)
{
	size_t head = batch_id ? 1 + sp_varint_len(batch_id) : 0;
	size_t body = head + fields->n;
	size_t total = sp_field_len(body);
	PyObject *frame = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
	if (frame == NULL)
		return NULL;
	struct sp_out o = {(uint8_t *)PyBytes_AS_STRING(frame), 0, total};
	o.p[o.n++] = 0x3a;
	sp_put_varint(&o, body);
	if (batch_id) {
		o.p[o.n++] = 0x08;
		sp_put_varint(&o, batch_id);
	}
	if (fields->n)
		memcpy(o.p + o.n, fields->p, fields->n);
	return frame;
}

PyDoc_STRVAR(reply_doc,
"reply(frame, plans) -> bytes or None\n\n"
"The BatchReply frame for a Batch frame, running the step whose id the\n"
"batch names (plans: {step_id: plan tuple}, see _core.plan). None when\n"
"this module declines: the caller then takes the Python path.");

static PyObject *
sp_reply(PyObject *self, PyObject *args)
{
	Py_buffer data;
	PyObject *plans;
	(void)self;
	if (!PyArg_ParseTuple(args, "y*O!:reply", &data, &PyDict_Type, &plans))
		return NULL;
	if (h_result == NULL) {
		PyBuffer_Release(&data);
		PyErr_SetString(PyExc_RuntimeError, "_speedups.init() was not called");
		return NULL;
	}
	struct sp_batch b;
	struct sp_out o = {NULL, 0, 0};
	struct sp_plan pl;
	memset(&b, 0, sizeof(b));
	PyObject *result = NULL;
	int rc = sp_parse(data.buf, (size_t)data.len, &b);
	PyObject *plan = NULL;
	if (rc == SP_OK) {
		PyObject *id = PyLong_FromUnsignedLongLong(b.step_id);
		plan = id ? PyDict_GetItemWithError(plans, id) : NULL; /* borrowed */
		Py_XDECREF(id);
		if (plan == NULL)
			rc = PyErr_Occurred() ? SP_ERROR : SP_DECLINE;
	}
	if (rc == SP_OK) {
		/* User code may change `plans`: hold the plan while it runs. */
		Py_INCREF(plan);
		rc = sp_plan_of(plan, &pl);
		if (rc == SP_OK)
			rc = pl.kind == SP_STATE ? sp_run_state(&o, &pl, &b)
			                         : sp_run_stateless(&o, &pl, &b);
		Py_DECREF(plan);
	}
	if (rc == SP_OK)
		result = sp_frame(b.batch_id, &o);
	else if (rc == SP_DECLINE)
		result = Py_NewRef(Py_None);
	PyMem_Free(o.p);
	PyMem_Free(b.events);
	PyMem_Free(b.states);
	PyBuffer_Release(&data);
	return result;
}

PyDoc_STRVAR(init_doc,
"init(result, multi_result, failed, plain_result, key_bytes, Output)\n\n"
"Hand over the Python helpers the rare branches call (see _core.py).");

static PyObject *
sp_init(PyObject *self, PyObject *args)
{
	PyObject *h[6];
	(void)self;
	if (!PyArg_ParseTuple(args, "OOOOOO:init", &h[0], &h[1], &h[2], &h[3], &h[4], &h[5]))
		return NULL;
	PyObject **slot[6] = {&h_result, &h_multi, &h_failed, &h_plain, &h_key_bytes,
	                      &h_output_type};
	for (int i = 0; i < 6; i++) {
		PyObject *old = *slot[i];
		*slot[i] = Py_NewRef(h[i]);
		Py_XDECREF(old);
	}
	Py_RETURN_NONE;
}

static PyMethodDef sp_methods[] = {
	{"reply", sp_reply, METH_VARARGS, reply_doc},
	{"init", sp_init, METH_VARARGS, init_doc},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef sp_module = {
	PyModuleDef_HEAD_INIT, "wallaroo._speedups",
	"The runner's per-batch path in C (optional; see _core.py).", -1, sp_methods,
	NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
	return PyModule_Create(&sp_module);
}
