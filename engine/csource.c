/*
 * csource.c -- source connectors (protocol/README.md, section 6.2).
 *
 * Streams outlive connections: a stream is known by its name, and its
 * position (the last id accepted, the last id done) stays with the engine
 * when the connector crashes, so that the next connection resumes after
 * what the engine already has and nothing is accepted twice.
 *
 * Nothing here runs per event but the batch loop; acknowledgements and
 * credits are computed once per loop iteration from the stream positions.
 */
#include "csource.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "frame.h"
#include "log.h"
#include "position.h"
#include "runner.h"

/* A Credit frame is worth sending once this share of the window is free,
 * or when the connector has none left: fewer, larger grants. */
#define CREDIT_DIVISOR 4

typedef struct conn conn;

typedef struct {
	char *name;
	uint32_t local_id;       /* engine-wide stream number, for events */
	wl_stream_pos *pos;      /* accepted (last) and done positions */
	conn *owner;             /* connection that has it open, or NULL */
	uint32_t stream_id;      /* its id on that connection */
	bool ending;             /* EndStream received */
	bool ack_again;          /* a duplicate at or below the position came:
	                            repeat the Ack so it can be settled */
	uint64_t acked;          /* last up_to sent on the owner */
	/* Checkpoints: the accepted position at the last cut, and at the
	 * last durable checkpoint (what may be acknowledged). */
	uint64_t cut, durable;
} cstream;

/* One connection slot: a spawned instance, or the accepted address. */
struct conn {
	wl_csource *src;
	wl_runner *slot;
	uint32_t instance;
	bool up;                 /* handshake done, not yet down */
	bool finished;           /* said Goodbye and exited 0, every stream
	                            it opened having ended */
	bool streams_left;       /* streams were still open when it went */
	bool goodbye_sent;
	uint64_t credits;        /* credits the connector has left */
	cstream **open;          /* streams open on this connection */
	size_t nopen, capopen;
};

struct wl_csource {
	struct ev_loop *loop;
	wl_csource_config cfg;
	wl_source_hooks hooks;
	void *arg;
	conn *conns;
	size_t nconns;
	cstream **streams;       /* every stream name ever opened */
	size_t nstreams, capstreams;
	bool started, stopping;
	bool failed;             /* a connection will never come up */
	uint64_t events, bytes, duplicates, errors;
	bool ckpt;               /* acknowledge durable positions only */
	uint64_t durable_id;     /* the checkpoint they are durable in */
};

static cstream *
find_name(wl_csource *s, const char *name)
{
	for (size_t i = 0; i < s->nstreams; i++)
		if (strcmp(s->streams[i]->name, name) == 0)
			return s->streams[i];
	return NULL;
}

/* A stream known from now on, its position `start`; NULL: no memory. */
static cstream *
new_stream(wl_csource *s, const char *name, uint64_t start)
{
	cstream *st;

	if (s->nstreams == s->capstreams) {
		size_t nc = s->capstreams ? s->capstreams * 2 : 8;
		cstream **ns = realloc(s->streams, nc * sizeof(*ns));
		if (ns == NULL)
			return NULL;
		s->streams = ns;
		s->capstreams = nc;
	}
	st = calloc(1, sizeof(*st));
	if (st == NULL || (st->name = strdup(name)) == NULL ||
	    wl_stream_pos_new(&st->pos, start) != WL_OK) {
		if (st != NULL)
			free(st->name);
		free(st);
		return NULL;
	}
	st->cut = st->durable = start;
	/* Stream numbers distinguish streams across sources too, so that
	 * unkeyed events of different streams spread out. */
	st->local_id = (uint32_t)(s->cfg.index << 16) + (uint32_t)s->nstreams + 1;
	s->streams[s->nstreams++] = st;
	return st;
}

static cstream *
find_open(conn *c, uint32_t stream_id)
{
	for (size_t i = 0; i < c->nopen; i++)
		if (c->open[i]->stream_id == stream_id)
			return c->open[i];
	return NULL;
}

static void
close_stream(conn *c, cstream *st)
{
	for (size_t i = 0; i < c->nopen; i++) {
		if (c->open[i] == st) {
			c->open[i] = c->open[--c->nopen];
			break;
		}
	}
	st->owner = NULL;
	st->stream_id = 0;
	st->ending = false;
}

static void
send(conn *c, const wl_frame *f)
{
	nng_msg *m;

	if (wl_frame_encode(&m, f) == WL_OK)
		(void)wl_runner_send(c->slot, m);
}

static wl_err
on_open(conn *c, const Wallaroo__V1__OpenStream *o,
    Wallaroo__V1__ErrorCode *code, char *why, size_t n)
{
	wl_csource *s = c->src;
	Wallaroo__V1__Frame f = WALLAROO__V1__FRAME__INIT;
	Wallaroo__V1__StreamOpened so = WALLAROO__V1__STREAM_OPENED__INIT;
	cstream *st;

	(void)code;
	if (o->stream_id == 0 || find_open(c, o->stream_id) != NULL) {
		snprintf(why, n, "open_stream with stream_id %u, which is %s",
		    o->stream_id, o->stream_id == 0 ? "reserved" :
		    "already open on this connection");
		return WL_ERR_PROTO;
	}
	if (o->name == NULL || o->name[0] == '\0') {
		snprintf(why, n, "open_stream %u without a name", o->stream_id);
		return WL_ERR_PROTO;
	}
	st = find_name(s, o->name);
	if (st != NULL && st->owner != NULL && st->owner != c) {
		snprintf(why, n, "stream '%.64s' is already open on connection "
		    "%u of this source: two writers would lose data", o->name,
		    st->owner->instance);
		return WL_ERR_PROTO;
	}
	/* Unknown to the engine (and to its checkpoint): the connector's
	 * hint is the best knowledge there is. */
	if (st == NULL && (st = new_stream(s, o->name, o->resume_hint)) == NULL)
		goto nomem;
	if (c->nopen == c->capopen) {
		size_t nc = c->capopen ? c->capopen * 2 : 4;
		cstream **no = realloc(c->open, nc * sizeof(*no));
		if (no == NULL)
			goto nomem;
		c->open = no;
		c->capopen = nc;
	}
	c->open[c->nopen++] = st;
	st->owner = c;
	st->stream_id = o->stream_id;
	st->ending = false;
	st->acked = 0;
	st->ack_again = true; /* tell the new connection what is done */
	so.stream_id = o->stream_id;
	so.resume_after = wl_stream_pos_last(st->pos);
	f.body_case = WALLAROO__V1__FRAME__BODY_STREAM_OPENED;
	f.stream_opened = &so;
	send(c, &f);
	wl_log("CONN-STREAM", "source %s/%u opened stream %u '%s': resume "
	    "after %llu (hint %llu)", s->cfg.def->name, c->instance,
	    o->stream_id, o->name, (unsigned long long)so.resume_after,
	    (unsigned long long)o->resume_hint);
	return WL_OK;
nomem:
	*code = WALLAROO__V1__ERROR_CODE__ERROR_CODE_INTERNAL;
	snprintf(why, n, "out of memory opening stream '%.64s'", o->name);
	return WL_ERR_NOMEM;
}

static wl_err
on_batch(conn *c, const Wallaroo__V1__Batch *b,
    Wallaroo__V1__ErrorCode *code, char *why, size_t n)
{
	wl_csource *s = c->src;
	uint64_t ingest = wl_mono_ns();

	/* Check the whole batch first: a bad batch is refused whole, so the
	 * connector's upstream keeps every one of its messages. */
	if (b->n_events > c->credits) {
		*code = WALLAROO__V1__ERROR_CODE__ERROR_CODE_NO_CREDIT;
		snprintf(why, n, "batch %llu has %zu events but only %llu "
		    "credits are left", (unsigned long long)b->batch_id,
		    b->n_events, (unsigned long long)c->credits);
		return WL_ERR_PROTO;
	}
	for (size_t i = 0; i < b->n_events; i++) {
		const Wallaroo__V1__Event *pe = b->events[i];
		cstream *st = find_open(c, pe->stream_id);
		if (st == NULL || st->ending) {
			*code = WALLAROO__V1__ERROR_CODE__ERROR_CODE_UNKNOWN_STREAM;
			snprintf(why, n, "batch %llu event %zu names stream %u, "
			    "which is %s", (unsigned long long)b->batch_id, i,
			    pe->stream_id, st == NULL ? "not open" :
			    "ended (end_stream was sent)");
			return WL_ERR_PROTO;
		}
		if (pe->message_id == 0) {
			snprintf(why, n, "batch %llu event %zu has message id 0 "
			    "(ids start at 1)", (unsigned long long)b->batch_id, i);
			return WL_ERR_PROTO;
		}
		if (pe->key.len > UINT32_MAX / 2 || pe->payload.len > UINT32_MAX / 2) {
			*code = WALLAROO__V1__ERROR_CODE__ERROR_CODE_TOO_LARGE;
			snprintf(why, n, "batch %llu event %zu is too large",
			    (unsigned long long)b->batch_id, i);
			return WL_ERR_PROTO;
		}
	}
	c->credits -= b->n_events;
	for (size_t i = 0; i < b->n_events; i++) {
		const Wallaroo__V1__Event *pe = b->events[i];
		cstream *st = find_open(c, pe->stream_id);
		wl_event *e;

		if (pe->message_id <= wl_stream_pos_last(st->pos)) {
			/* Already accepted: sent again after a reconnect. It
			 * is settled by the Acks like the first copy. */
			s->duplicates++;
			st->ack_again = true;
			continue;
		}
		e = wl_event_new(pe->key.data, (uint32_t)pe->key.len,
		    pe->payload.data, (uint32_t)pe->payload.len);
		if (e == NULL || (e->origin = wl_stream_pos_track(st->pos,
		    pe->message_id)) == NULL) {
			/* Not accepted: the connector sends it again on its
			 * next connection. */
			wl_event_free(e);
			*code = WALLAROO__V1__ERROR_CODE__ERROR_CODE_INTERNAL;
			snprintf(why, n, "out of memory accepting batch %llu",
			    (unsigned long long)b->batch_id);
			return WL_ERR_NOMEM;
		}
		e->stream_id = st->local_id;
		e->message_id = pe->message_id;
		e->event_time = pe->event_time;
		e->ingest_ns = ingest;
		s->events++;
		s->bytes += pe->payload.len;
		s->hooks.event(s->arg, s->cfg.index, e);
	}
	return WL_OK;
}

static wl_err
on_end(conn *c, const Wallaroo__V1__EndStream *es,
    Wallaroo__V1__ErrorCode *code, char *why, size_t n)
{
	cstream *st = find_open(c, es->stream_id);

	if (st == NULL || st->ending) {
		*code = WALLAROO__V1__ERROR_CODE__ERROR_CODE_UNKNOWN_STREAM;
		snprintf(why, n, "end_stream for stream %u, which is %s",
		    es->stream_id, st == NULL ? "not open" : "already ending");
		return WL_ERR_PROTO;
	}
	st->ending = true;
	return WL_OK;
}

static wl_err
hook_frame(void *arg, wl_runner *r, const wl_frame *f,
    Wallaroo__V1__ErrorCode *code, char *why, size_t n)
{
	conn *c = arg;
	wl_err rc;

	(void)r;
	switch (f->body_case) {
	case WALLAROO__V1__FRAME__BODY_OPEN_STREAM:
		rc = on_open(c, f->open_stream, code, why, n);
		break;
	case WALLAROO__V1__FRAME__BODY_BATCH:
		rc = on_batch(c, f->batch, code, why, n);
		break;
	case WALLAROO__V1__FRAME__BODY_END_STREAM:
		rc = on_end(c, f->end_stream, code, why, n);
		break;
	default:
		snprintf(why, n, "%s not allowed while open", wl_frame_name(f));
		rc = WL_ERR_PROTO;
		break;
	}
	if (rc != WL_OK)
		c->src->errors++;
	return rc;
}

static void
hook_ready(void *arg, wl_runner *r)
{
	conn *c = arg;

	(void)r;
	c->up = true;
	c->goodbye_sent = false;
	c->credits = c->src->cfg.credits;
}

static void
hook_down(void *arg, wl_runner *r)
{
	conn *c = arg;

	(void)r;
	c->up = false;
	c->credits = 0;
	c->streams_left = c->nopen > 0;
	/* The streams stay known with their positions; the next
	 * connection may open them again. */
	while (c->nopen > 0)
		close_stream(c, c->open[0]);
}

static wl_err
hook_reply(void *arg, wl_runner *r, const Wallaroo__V1__BatchReply *rep)
{
	(void)arg;
	(void)r;
	(void)rep;
	return WL_ERR_PROTO; /* never called: the slot refuses replies */
}

static wl_err
hook_failed(void *arg, wl_runner *r, uint64_t id, const char *msg)
{
	(void)arg;
	(void)r;
	(void)id;
	(void)msg;
	return WL_OK; /* never called for sources */
}

static void
hook_fatal(void *arg, wl_runner *r)
{
	conn *c = arg;

	(void)r;
	/* The connector cannot start (bad argv, cannot listen): the
	 * application cannot run as declared. The engine stops. */
	c->finished = true;
	c->src->failed = true;
}

static bool
hook_ended(void *arg, wl_runner *r)
{
	conn *c = arg;

	(void)r;
	if (c->streams_left) {
		/* Stopped, not finished (an operator's SIGTERM, say): what
		 * it has not sent is still upstream. Start it again. */
		wl_log("CONN-STOPPED", "source %s/%u said goodbye with streams "
		    "still open; it is started again", c->src->cfg.def->name,
		    c->instance);
		return false;
	}
	c->finished = true;
	wl_log("CONN-ENDED", "source %s/%u finished", c->src->cfg.def->name,
	    c->instance);
	if (wl_csource_ended(c->src))
		c->src->hooks.ended(c->src->arg, c->src->cfg.index);
	return true;
}

static const wl_runner_hooks conn_hooks = {
	.ready = hook_ready, .reply = hook_reply, .failed = hook_failed,
	.down = hook_down, .fatal = hook_fatal, .frame = hook_frame,
	.ended = hook_ended,
};

wl_err
wl_csource_new(wl_csource **out, struct ev_loop *loop,
    const wl_csource_config *cfg, const wl_source_hooks *hooks, void *arg)
{
	wl_csource *s = calloc(1, sizeof(*s));
	const wl_io *d = cfg->def;
	const wl_program *p = d->program >= 0 ? &cfg->t->programs[d->program] :
	    NULL;

	if (s == NULL)
		return WL_ERR_NOMEM;
	s->loop = loop;
	s->cfg = *cfg;
	s->hooks = *hooks;
	s->arg = arg;
	s->nconns = p != NULL ? p->instances : 1;
	s->conns = calloc(s->nconns, sizeof(*s->conns));
	if (s->conns == NULL) {
		free(s);
		return WL_ERR_NOMEM;
	}
	for (size_t i = 0; i < s->nconns; i++) {
		conn *c = &s->conns[i];
		wl_runner_config rc = {
			.program = p,
			.instance = (uint32_t)i,
			.sockdir = cfg->sockdir,
			.limits = &cfg->t->limits,
			.worker = cfg->worker,
			.incarnation = cfg->incarnation,
			.role = WL_SLOT_SOURCE,
			.connector = d->name,
			.listen_url = d->url,
			.token = cfg->token,
			.initial_credits = cfg->credits,
		};
		c->src = s;
		c->instance = (uint32_t)i;
		if (wl_runner_new(&c->slot, loop, &rc, &conn_hooks, c) != WL_OK) {
			wl_csource_free(s);
			return WL_ERR_NOMEM;
		}
	}
	*out = s;
	return WL_OK;
}

wl_err
wl_csource_start(wl_csource *s)
{
	s->started = true;
	for (size_t i = 0; i < s->nconns; i++)
		wl_runner_start(s->conns[i].slot);
	return WL_OK;
}

static uint64_t
conn_pending(const conn *c)
{
	uint64_t n = 0;

	for (size_t i = 0; i < c->nopen; i++)
		n += wl_stream_pos_pending(c->open[i]->pos);
	return n;
}

static void
flush_conn(wl_csource *s, conn *c, bool pressure)
{
	Wallaroo__V1__Frame f = WALLAROO__V1__FRAME__INIT;

	for (size_t i = 0; i < c->nopen; i++) {
		cstream *st = c->open[i];
		/* With checkpoints, done is not enough: only a durable
		 * checkpoint's position survives a crash of the engine. */
		uint64_t done = s->ckpt ? st->durable : wl_stream_pos_done(st->pos);

		if (done > st->acked || (st->ack_again && done > 0)) {
			Wallaroo__V1__Ack a = WALLAROO__V1__ACK__INIT;
			a.stream_id = st->stream_id;
			a.up_to = done;
			a.checkpoint_id = s->durable_id;
			a.incarnation = s->cfg.incarnation;
			f.body_case = WALLAROO__V1__FRAME__BODY_ACK;
			f.ack = &a;
			send(c, &f);
			st->acked = done;
		}
		st->ack_again = false;
		if (st->ending && wl_stream_pos_pending(st->pos) == 0 &&
		    done == wl_stream_pos_last(st->pos)) {
			Wallaroo__V1__StreamEnded se =
			    WALLAROO__V1__STREAM_ENDED__INIT;
			se.stream_id = st->stream_id;
			se.up_to = done;
			f.body_case = WALLAROO__V1__FRAME__BODY_STREAM_ENDED;
			f.stream_ended = &se;
			send(c, &f);
			wl_log("CONN-STREAM", "source %s/%u stream %u '%s' ended "
			    "at %llu", s->cfg.def->name, c->instance,
			    st->stream_id, st->name, (unsigned long long)done);
			close_stream(c, st);
			i--;
		}
	}
	if (!s->stopping && !pressure) {
		/* Credits bound what this connection has in the engine:
		 * window = credits left + events accepted and not done. */
		uint64_t in_engine = conn_pending(c);
		uint64_t window = s->cfg.credits;
		uint64_t have = c->credits + in_engine;
		if (have < window) {
			uint64_t give = window - have;
			if (c->credits == 0 || give >= window / CREDIT_DIVISOR) {
				Wallaroo__V1__Credit cr = WALLAROO__V1__CREDIT__INIT;
				cr.events = give;
				f.body_case = WALLAROO__V1__FRAME__BODY_CREDIT;
				f.credit = &cr;
				send(c, &f);
				c->credits += give;
			}
		}
	}
	if (s->stopping && !c->goodbye_sent && conn_pending(c) == 0) {
		c->goodbye_sent = true;
		wl_runner_stop(c->slot, 5.0);
	}
}

void
wl_csource_flush(wl_csource *s)
{
	bool pressure;

	if (!s->started)
		return;
	pressure = s->hooks.pressure(s->arg);
	for (size_t i = 0; i < s->nconns; i++) {
		conn *c = &s->conns[i];
		if (c->up)
			flush_conn(s, c, pressure);
		else if (s->stopping && !c->goodbye_sent) {
			/* Not connected: nothing to acknowledge first. */
			c->goodbye_sent = true;
			wl_runner_stop(c->slot, 5.0);
		}
	}
}

void
wl_csource_tick(wl_csource *s, ev_tstamp now)
{
	for (size_t i = 0; i < s->nconns; i++)
		wl_runner_tick(s->conns[i].slot, now);
}

void
wl_csource_stop(wl_csource *s)
{
	s->stopping = true;
}

bool
wl_csource_failed(const wl_csource *s)
{
	return s->failed;
}

bool
wl_csource_started(const wl_csource *s)
{
	return s->started;
}

bool
wl_csource_ended(const wl_csource *s)
{
	for (size_t i = 0; i < s->nconns; i++) {
		const conn *c = &s->conns[i];
		if (!c->finished && !wl_runner_is_stopped(c->slot))
			return false;
	}
	return true;
}

uint64_t
wl_csource_events(const wl_csource *s)
{
	return s->events;
}

uint64_t
wl_csource_bytes(const wl_csource *s)
{
	return s->bytes;
}

uint64_t
wl_csource_duplicates(const wl_csource *s)
{
	return s->duplicates;
}

uint64_t
wl_csource_errors(const wl_csource *s)
{
	return s->errors;
}

uint64_t
wl_csource_pending(const wl_csource *s)
{
	uint64_t n = 0;

	for (size_t i = 0; i < s->nstreams; i++)
		n += wl_stream_pos_pending(s->streams[i]->pos);
	return n;
}

void
wl_csource_checkpoints_on(wl_csource *s, uint64_t recovered_id)
{
	s->ckpt = true;
	s->durable_id = recovered_id;
}

wl_err
wl_csource_restore(wl_csource *s, const char *stream, uint64_t position)
{
	cstream *st = find_name(s, stream);
	wl_stream_pos *p;

	if (st == NULL)
		return new_stream(s, stream, position) ? WL_OK : WL_ERR_NOMEM;
	/* A later checkpoint of the log: its position replaces the earlier
	 * one (nothing was accepted yet, so the stream has no origins). */
	if (st->owner != NULL || wl_stream_pos_pending(st->pos) > 0)
		return WL_ERR_STATE;
	if (wl_stream_pos_new(&p, position) != WL_OK)
		return WL_ERR_NOMEM;
	wl_stream_pos_free(st->pos);
	st->pos = p;
	st->cut = st->durable = position;
	return WL_OK;
}

void
wl_csource_mark(wl_csource *s)
{
	for (size_t i = 0; i < s->nstreams; i++)
		s->streams[i]->cut = wl_stream_pos_last(s->streams[i]->pos);
}

void
wl_csource_record(const wl_csource *s, wl_ckbuf *b)
{
	for (size_t i = 0; i < s->nstreams; i++) {
		wl_ckbuf_begin(b, WL_CKREC_SOURCE);
		wl_ckbuf_str(b, s->cfg.def->name);
		wl_ckbuf_str(b, s->streams[i]->name);
		wl_ckbuf_u64(b, s->streams[i]->cut);
		wl_ckbuf_u64(b, 0);
		wl_ckbuf_end(b);
	}
}

void
wl_csource_durable(wl_csource *s, uint64_t id)
{
	s->durable_id = id;
	for (size_t i = 0; i < s->nstreams; i++) {
		cstream *st = s->streams[i];
		if (st->cut > st->durable)
			st->durable = st->cut;
	}
}

void
wl_csource_free(wl_csource *s)
{
	if (s == NULL)
		return;
	for (size_t i = 0; i < s->nconns; i++) {
		wl_runner_free(s->conns[i].slot);
		free(s->conns[i].open);
	}
	free(s->conns);
	for (size_t i = 0; i < s->nstreams; i++) {
		wl_stream_pos_free(s->streams[i]->pos);
		free(s->streams[i]->name);
		free(s->streams[i]);
	}
	free(s->streams);
	free(s);
}
