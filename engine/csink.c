/*
 * csink.c -- sink connectors (protocol/README.md, sections 6.3 and 6.4).
 *
 * An output lives in exactly one place until it is taken over: the
 * connection's pending queue, an in-flight batch, or (two-phase commit)
 * the held list of its epoch. When a connection goes, everything not taken
 * over goes back to the front of the pending queue in its original order,
 * so the next connection receives it again and per-key order holds.
 *
 * Epochs (2PC sinks). Until checkpoints exist (exactly-once), the engine
 * cuts an epoch every EPOCH_S or when it has nothing more to send, prepares
 * it once all its batches are answered, and commits it as soon as it is
 * prepared. The one epoch state that survives a lost connection is
 * "commit sent": the sink may have committed it, so its outputs are held
 * until the sink's InDoubt list on the next connection says which way it
 * went. Every other unresolved epoch is abandoned (the sink gets an Abort
 * if it lists it) and its outputs are sent again in a new epoch.
 *
 * With checkpoints (wl_csink_checkpoints_on) an epoch belongs to one
 * checkpoint: its number is the checkpoint id << EPOCH_SHIFT plus a
 * sequence, so that any engine can tell from an in-doubt epoch which
 * checkpoint it rests on. The dataflow says when a checkpoint's outputs
 * have all reached the csink (wl_csink_close_epoch); the csink then
 * prepares its epochs of it, and once the sink has answered Prepared the
 * outputs count as done (the checkpoint can complete: the sink holds them
 * durably). Commit waits for the checkpoint to be durable
 * (wl_csink_durable). A connection lost after Prepared keeps the epoch:
 * the sink lists it in InDoubt and the decision is the checkpoint's.
 */
#include "csink.h"

#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "hash.h"
#include "link.h"
#include "log.h"
#include "runner.h"

#define EPOCH_S 0.05
#define EPOCH_SHIFT 20

typedef struct sbatch sbatch;
struct sbatch {
	sbatch *next;
	uint64_t id;
	uint64_t epoch;
	wl_queue events;
};

typedef enum {
	EP_OPEN,        /* batches are being added */
	EP_CLOSED,      /* no more batches; waiting for their answers */
	EP_PREPARING,   /* Prepare sent */
	EP_PREPARED,    /* checkpoints: prepared (outputs released), waiting
	                   for the checkpoint to be durable */
	EP_COMMITTING,  /* Commit sent: the decision is taken */
} ep_state;

typedef struct ep ep;
struct ep {
	ep *next;
	uint64_t epoch;
	uint64_t ckpt;  /* checkpoints: the checkpoint it belongs to */
	ep_state st;
	uint32_t nbatches;
	wl_queue held;  /* events of answered batches, until the commit */
};

typedef struct {
	wl_csink *sink;
	wl_runner *slot;
	uint32_t instance;
	bool up;
	bool twopc;          /* this connection's Hello had "2pc" */
	bool indoubt_wait;   /* 2PC: waiting for its InDoubt */
	wl_queue pending;
	sbatch *head, *tail; /* in flight, oldest first */
	uint32_t ninflight;
	ep *eps;             /* unresolved epochs, oldest first */
	ep *cur;             /* the open epoch, if any */
	ev_tstamp cur_since;
} conn;

struct wl_csink {
	struct ev_loop *loop;
	wl_csink_config cfg;
	conn *conns;
	size_t nconns;
	uint64_t next_batch_id;
	uint64_t next_epoch;
	uint64_t pending_events;
	size_t pending_bytes;
	/* Checkpoints. */
	bool ckpt;
	uint64_t recovered_id;   /* the checkpoint this incarnation started from */
	wl_ckhist hist;          /* the recovered log's checkpoints */
	uint64_t durable_id;     /* the last durable checkpoint */
	uint64_t closed_id;      /* every output of checkpoints <= it is here */
	uint64_t ep_seq;
	uint64_t unresolved;     /* epochs prepared or committing */
	uint64_t events, bytes, resent, too_large;
	bool failed;
};

static void
release(wl_csink *s, wl_event *e)
{
	s->pending_events--;
	s->pending_bytes -= e->plen;
	s->events++;
	s->bytes += e->plen;
	wl_event_free(e); /* the last reference: its origin may be done */
}

static void
release_queue(wl_csink *s, wl_queue *q)
{
	wl_event *e;

	while ((e = wl_queue_pop(q)) != NULL)
		release(s, e);
}

/* Puts `q` back in front of the pending queue, keeping its order. */
static void
rewind_queue(conn *c, wl_queue *q)
{
	c->sink->resent += q->count;
	wl_queue_prepend(&c->pending, q);
}

static void
send_frame(conn *c, const wl_frame *f)
{
	nng_msg *m;

	if (wl_frame_encode(&m, f) == WL_OK)
		(void)wl_runner_send(c->slot, m);
}

static void
send_decision(conn *c, uint64_t epoch, bool commit)
{
	Wallaroo__V1__Frame f = WALLAROO__V1__FRAME__INIT;
	Wallaroo__V1__Commit cm = WALLAROO__V1__COMMIT__INIT;
	Wallaroo__V1__Abort ab = WALLAROO__V1__ABORT__INIT;

	if (commit) {
		cm.epoch = epoch;
		cm.checkpoint_id = c->sink->ckpt ? epoch >> EPOCH_SHIFT : 0;
		cm.incarnation = c->sink->cfg.incarnation;
		f.body_case = WALLAROO__V1__FRAME__BODY_COMMIT;
		f.commit = &cm;
	} else {
		ab.epoch = epoch;
		ab.checkpoint_id = c->sink->ckpt ? epoch >> EPOCH_SHIFT : 0;
		ab.incarnation = c->sink->cfg.incarnation;
		f.body_case = WALLAROO__V1__FRAME__BODY_ABORT;
		f.abort = &ab;
	}
	send_frame(c, &f);
}

static ep *
find_ep(conn *c, uint64_t epoch)
{
	for (ep *e = c->eps; e != NULL; e = e->next)
		if (e->epoch == epoch)
			return e;
	return NULL;
}

static void
remove_ep(conn *c, ep *x)
{
	if (x->st == EP_PREPARED || x->st == EP_COMMITTING)
		c->sink->unresolved--;
	for (ep **p = &c->eps; *p != NULL; p = &(*p)->next) {
		if (*p == x) {
			*p = x->next;
			break;
		}
	}
	if (c->cur == x)
		c->cur = NULL;
	free(x);
}

/* The checkpoint of an output (0 when checkpoints are off). */
static uint64_t
ckpt_of(const wl_event *e)
{
	return e->epoch != NULL ? e->epoch->id : 0;
}

/* Appends a new epoch in state `st`; NULL when out of memory. */
static ep *
add_ep(conn *c, uint64_t epoch, uint64_t ckpt, ep_state st)
{
	ep *x = calloc(1, sizeof(*x)), **tail;

	if (x == NULL)
		return NULL;
	x->epoch = epoch;
	x->ckpt = ckpt;
	x->st = st;
	if (st == EP_PREPARED || st == EP_COMMITTING)
		c->sink->unresolved++;
	for (tail = &c->eps; *tail != NULL; tail = &(*tail)->next)
		;
	*tail = x;
	return x;
}

static uint64_t
batch_epoch(conn *c, ev_tstamp now, uint64_t ckpt)
{
	wl_csink *s = c->sink;
	ep *x;

	if (!c->twopc)
		return 0;
	if (c->cur != NULL && (!s->ckpt || c->cur->ckpt == ckpt))
		return c->cur->epoch;
	if (c->cur != NULL) {
		/* A later checkpoint's output: the earlier one is complete
		 * here (the dataflow holds a checkpoint's outputs back until
		 * the one before is done). */
		c->cur->st = EP_CLOSED;
		c->cur = NULL;
	}
	x = add_ep(c, s->ckpt ? (ckpt << EPOCH_SHIFT) |
	    (++s->ep_seq & ((1u << EPOCH_SHIFT) - 1)) : s->next_epoch++, ckpt,
	    EP_OPEN);
	if (x == NULL)
		return 0;
	c->cur = x;
	c->cur_since = now;
	return x->epoch;
}

static wl_err
encode(wl_csink *s, const sbatch *b, nng_msg **out)
{
	Wallaroo__V1__Frame f = WALLAROO__V1__FRAME__INIT;
	Wallaroo__V1__Batch pb = WALLAROO__V1__BATCH__INIT;
	Wallaroo__V1__Event *ev = calloc(b->events.count, sizeof(*ev));
	Wallaroo__V1__Event **evp = calloc(b->events.count, sizeof(*evp));
	size_t i = 0;
	wl_err rc = WL_ERR_NOMEM;

	if (ev != NULL && evp != NULL) {
		for (wl_event *e = b->events.head; e != NULL; e = e->next, i++) {
			wallaroo__v1__event__init(&ev[i]);
			ev[i].key.data = e->key;
			ev[i].key.len = e->klen;
			ev[i].payload.data = e->payload;
			ev[i].payload.len = e->plen;
			ev[i].event_time = e->event_time;
			evp[i] = &ev[i];
		}
		pb.batch_id = b->id;
		pb.epoch = b->epoch;
		pb.n_events = i;
		pb.events = evp;
		f.body_case = WALLAROO__V1__FRAME__BODY_BATCH;
		f.batch = &pb;
		rc = wl_frame_encode(out, &f);
	}
	(void)s;
	free(ev);
	free(evp);
	return rc;
}

static void
send_batches(conn *c, ev_tstamp now)
{
	wl_csink *s = c->sink;
	const wl_limits *lim = &s->cfg.t->limits;
	size_t max_bytes = (lim->message_max_bytes - WL_LINK_FRAME_OVERHEAD) / 2;

	if (lim->batch_max_bytes < max_bytes)
		max_bytes = lim->batch_max_bytes;
	while (c->up && !c->indoubt_wait && c->pending.count > 0 &&
	    c->ninflight < lim->inflight_batches) {
		sbatch *b = calloc(1, sizeof(*b));
		size_t bytes = 0;
		nng_msg *m;

		if (b == NULL)
			return;
		uint64_t ckpt = ckpt_of(c->pending.head);
		while (c->pending.count > 0 &&
		    b->events.count < lim->batch_max_events) {
			wl_event *e = c->pending.head;
			size_t sz = (size_t)e->klen + e->plen + 32;
			if (b->events.count > 0 && bytes + sz > max_bytes)
				break;
			if (ckpt_of(e) != ckpt)
				break; /* one checkpoint per batch */
			wl_queue_push(&b->events, wl_queue_pop(&c->pending));
			bytes += sz;
		}
		b->id = ++s->next_batch_id;
		b->epoch = batch_epoch(c, now, ckpt);
		if (encode(s, b, &m) != WL_OK) {
			rewind_queue(c, &b->events);
			free(b);
			return;
		}
		if (nng_msg_len(m) + WL_LINK_FRAME_OVERHEAD >
		    lim->message_max_bytes) {
			/* One output larger than a frame: no sink can ever
			 * receive it. Say so loudly and count it. */
			wl_event *e = wl_queue_pop(&b->events);
			wl_log("SINK-ERROR", "sink '%s': an output of %u bytes "
			    "does not fit in message_max_bytes=%u; it is "
			    "dropped", s->cfg.def->name, e->plen,
			    lim->message_max_bytes);
			s->too_large++;
			release(s, e);
			s->events--;
			s->bytes -= e->plen;
			nng_msg_free(m);
			rewind_queue(c, &b->events);
			free(b);
			continue;
		}
		if (wl_runner_send_batch(c->slot, m) != WL_OK) {
			rewind_queue(c, &b->events);
			free(b);
			return;
		}
		if (c->cur != NULL && b->epoch == c->cur->epoch)
			c->cur->nbatches++;
		if (c->tail != NULL)
			c->tail->next = b;
		else
			c->head = b;
		c->tail = b;
		c->ninflight++;
	}
}

/* 2PC: closes the open epoch when due, and prepares closed epochs whose
 * batches have all been answered. */
static void
advance_epochs(conn *c, ev_tstamp now)
{
	if (!c->twopc || !c->up || c->indoubt_wait)
		return;
	if (c->sink->ckpt) {
		/* Closed when the dataflow has given every output of its
		 * checkpoint and none of them waits here unsent. */
		if (c->cur != NULL && c->cur->ckpt <= c->sink->closed_id &&
		    (c->pending.count == 0 ||
		    ckpt_of(c->pending.head) > c->cur->ckpt)) {
			c->cur->st = EP_CLOSED;
			c->cur = NULL;
		}
	} else if (c->cur != NULL && c->cur->nbatches > 0 &&
	    (c->pending.count == 0 || now - c->cur_since >= EPOCH_S)) {
		c->cur->st = EP_CLOSED;
		c->cur = NULL;
	}
	for (ep *x = c->eps; x != NULL; x = x->next) {
		Wallaroo__V1__Frame f = WALLAROO__V1__FRAME__INIT;
		Wallaroo__V1__Prepare pr = WALLAROO__V1__PREPARE__INIT;

		if (x->st != EP_CLOSED)
			continue;
		if (c->head != NULL && c->head->epoch <= x->epoch)
			break; /* answers come in order: later ones wait too */
		pr.epoch = x->epoch;
		pr.checkpoint_id = x->ckpt;
		pr.incarnation = c->sink->cfg.incarnation;
		f.body_case = WALLAROO__V1__FRAME__BODY_PREPARE;
		f.prepare = &pr;
		send_frame(c, &f);
		x->st = EP_PREPARING;
	}
}

static wl_err
hook_reply(void *arg, wl_runner *r, const Wallaroo__V1__BatchReply *rep)
{
	conn *c = arg;
	sbatch *b = c->head;

	(void)r;
	if (b == NULL || rep->batch_id != b->id) {
		wl_log("CONN-PROTO", "sink %s/%u answered batch %llu; the oldest "
		    "unanswered is %llu", c->sink->cfg.def->name, c->instance,
		    (unsigned long long)rep->batch_id,
		    (unsigned long long)(b ? b->id : 0));
		return WL_ERR_PROTO;
	}
	c->head = b->next;
	if (c->head == NULL)
		c->tail = NULL;
	c->ninflight--;
	if (b->epoch != 0 && find_ep(c, b->epoch) != NULL)
		wl_queue_append(&find_ep(c, b->epoch)->held, &b->events);
	else
		release_queue(c->sink, &b->events);
	free(b);
	return WL_OK;
}

static wl_err
hook_failed(void *arg, wl_runner *r, uint64_t id, const char *msg)
{
	conn *c = arg;
	char why[300];

	if (c->head == NULL || c->head->id != id)
		return WL_ERR_PROTO;
	snprintf(why, sizeof(why), "could not deliver batch %llu (%s); its "
	    "outputs go again on the next connection", (unsigned long long)id,
	    msg);
	wl_runner_drop(r, 0, "DELIVERY", why);
	return WL_OK;
}

static void
on_indoubt(conn *c, const Wallaroo__V1__InDoubt *d)
{
	wl_csink *s = c->sink;

	/* Epochs this engine decided or holds prepared: listed means the
	 * sink still holds them, not listed that it committed them. */
	for (ep *x = c->eps, *nx; x != NULL; x = nx) {
		bool listed = false;
		nx = x->next;
		for (size_t i = 0; i < d->n_epochs; i++)
			listed |= d->epochs[i] == x->epoch;
		if (x->st == EP_COMMITTING) {
			if (listed) {
				send_decision(c, x->epoch, true);
			} else {
				release_queue(s, &x->held);
				remove_ep(c, x);
			}
		} else if (x->st == EP_PREPARED) {
			if (!listed) {
				wl_log("CONN-LOST", "sink %s/%u no longer holds epoch "
				    "%llu, which it had prepared: its outputs are lost "
				    "(a 2PC sink must keep a prepared epoch until "
				    "Commit or Abort)", s->cfg.def->name, c->instance,
				    (unsigned long long)x->epoch);
				remove_ep(c, x);
			} else if (x->ckpt <= s->durable_id) {
				x->st = EP_COMMITTING;
				send_decision(c, x->epoch, true);
			}
		}
	}
	for (size_t i = 0; i < d->n_epochs; i++) {
		uint64_t e = d->epochs[i], ck = e >> EPOCH_SHIFT;
		uint64_t inc = i < d->n_incarnations ? d->incarnations[i] : 0;
		ep *x = find_ep(c, e);
		if (x != NULL && (x->st == EP_COMMITTING || x->st == EP_PREPARED))
			continue;
		/* Prepared by an earlier incarnation, and a durable checkpoint
		 * of that incarnation covers it: that checkpoint counted on these
		 * outputs, so they are committed. A checkpoint of the same id by
		 * another incarnation does not: that engine recovered an older
		 * one and produced the outputs again. */
		wl_ckhist_answer a = s->ckpt && inc != s->cfg.incarnation &&
		    ck != 0 ? wl_ckhist_covers(&s->hist, ck, inc) : WL_CKHIST_NO;
		if (a != WL_CKHIST_NO &&
		    (x = add_ep(c, e, ck, EP_COMMITTING)) != NULL) {
			wl_log("CONN-INDOUBT", "sink %s/%u holds epoch %llu of "
			    "checkpoint %llu, %s: commit", s->cfg.def->name,
			    c->instance, (unsigned long long)e,
			    (unsigned long long)ck, a == WL_CKHIST_YES ?
			    "covered by a durable checkpoint of the incarnation "
			    "that prepared it" : "at most the recovered one (by "
			    "its id only: older than the log, or prepared by an "
			    "unnamed incarnation)");
			send_decision(c, e, true);
			continue;
		}
		wl_log("CONN-INDOUBT", "sink %s/%u holds epoch %llu prepared; not "
		    "committed by this engine: abort", s->cfg.def->name,
		    c->instance, (unsigned long long)e);
		send_decision(c, e, false);
		if (!s->ckpt && e >= s->next_epoch)
			s->next_epoch = e + 1;
	}
	c->indoubt_wait = false;
}

static wl_err
hook_frame(void *arg, wl_runner *r, const wl_frame *f,
    Wallaroo__V1__ErrorCode *code, char *why, size_t n)
{
	conn *c = arg;
	ep *x;

	(void)r;
	(void)code;
	switch (f->body_case) {
	case WALLAROO__V1__FRAME__BODY_IN_DOUBT:
		if (!c->indoubt_wait)
			break;
		on_indoubt(c, f->in_doubt);
		return WL_OK;
	case WALLAROO__V1__FRAME__BODY_PREPARED:
		if (c->indoubt_wait)
			break;
		x = find_ep(c, f->prepared->epoch);
		if (x == NULL || x->st != EP_PREPARING) {
			snprintf(why, n, "prepared for epoch %llu, which is not "
			    "being prepared",
			    (unsigned long long)f->prepared->epoch);
			return WL_ERR_PROTO;
		}
		if (!f->prepared->ok) {
			/* The sink cannot make it durable: start over on a
			 * new connection with everything not committed. */
			snprintf(why, n, "cannot prepare epoch %llu: %.120s",
			    (unsigned long long)x->epoch, f->prepared->error);
			wl_runner_drop(c->slot, 0, "PREPARE", why);
			return WL_OK;
		}
		if (c->sink->ckpt) {
			/* Durable at the sink: the outputs are done as far as
			 * the checkpoint is concerned; the commit waits for it. */
			release_queue(c->sink, &x->held);
			x->st = EP_PREPARED;
			c->sink->unresolved++;
			if (x->ckpt <= c->sink->durable_id) {
				x->st = EP_COMMITTING;
				send_decision(c, x->epoch, true);
			}
			return WL_OK;
		}
		/* No checkpoint to wait for: commit at once. */
		x->st = EP_COMMITTING;
		c->sink->unresolved++;
		send_decision(c, x->epoch, true);
		return WL_OK;
	case WALLAROO__V1__FRAME__BODY_RESOLVED:
		if (c->indoubt_wait)
			break;
		x = find_ep(c, f->resolved->epoch);
		if (x == NULL)
			return WL_OK; /* an abort we sent for an old epoch */
		if (x->st != EP_COMMITTING || !f->resolved->committed) {
			snprintf(why, n, "resolved epoch %llu as %s, which the "
			    "engine did not decide",
			    (unsigned long long)x->epoch,
			    f->resolved->committed ? "committed" : "aborted");
			return WL_ERR_PROTO;
		}
		release_queue(c->sink, &x->held);
		remove_ep(c, x);
		return WL_OK;
	default:
		break;
	}
	snprintf(why, n, "%s not allowed while %s", wl_frame_name(f),
	    c->indoubt_wait ? "waiting for in_doubt" : "open");
	return WL_ERR_PROTO;
}

static void
hook_ready(void *arg, wl_runner *r)
{
	conn *c = arg;

	c->up = true;
	c->twopc = wl_runner_has_capability(r, "2pc");
	c->indoubt_wait = c->twopc;
	if (!c->twopc) {
		/* Commits sent to an earlier 2PC connection cannot be
		 * resolved by this one: send those outputs again. */
		for (ep *x = c->eps; x != NULL; x = c->eps) {
			rewind_queue(c, &x->held);
			remove_ep(c, x);
		}
	}
}

static void
hook_down(void *arg, wl_runner *r)
{
	conn *c = arg;
	wl_queue back = { 0 };

	(void)r;
	c->up = false;
	c->indoubt_wait = false;
	/* Held outputs of abandoned epochs first, then the batches in
	 * flight, in order: together they are older than anything pending. */
	for (ep *x = c->eps, *nx; x != NULL; x = nx) {
		nx = x->next;
		if (x->st == EP_COMMITTING || x->st == EP_PREPARED)
			continue; /* held by the sink: InDoubt will list it */
		wl_queue_append(&back, &x->held);
		remove_ep(c, x);
	}
	while (c->head != NULL) {
		sbatch *b = c->head;
		c->head = b->next;
		wl_queue_append(&back, &b->events);
		free(b);
	}
	c->tail = NULL;
	c->ninflight = 0;
	c->cur = NULL;
	rewind_queue(c, &back);
}

static void
hook_fatal(void *arg, wl_runner *r)
{
	conn *c = arg;

	(void)r;
	c->sink->failed = true;
}

static const wl_runner_hooks conn_hooks = {
	.ready = hook_ready, .reply = hook_reply, .failed = hook_failed,
	.down = hook_down, .fatal = hook_fatal, .frame = hook_frame,
};

wl_err
wl_csink_new(wl_csink **out, struct ev_loop *loop, const wl_csink_config *cfg)
{
	wl_csink *s = calloc(1, sizeof(*s));
	const wl_io *d = cfg->def;
	const wl_program *p = d->program >= 0 ? &cfg->t->programs[d->program] :
	    NULL;

	if (s == NULL)
		return WL_ERR_NOMEM;
	s->loop = loop;
	s->cfg = *cfg;
	/* Epoch numbers only grow, across engine restarts too: a sink may
	 * still hold an epoch of an earlier incarnation. */
	s->next_epoch = cfg->incarnation / 1000 + 1;
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
			.role = WL_SLOT_SINK,
			.connector = d->name,
			.listen_url = d->url,
			.token = cfg->token,
		};
		c->sink = s;
		c->instance = (uint32_t)i;
		if (wl_runner_new(&c->slot, loop, &rc, &conn_hooks, c) != WL_OK) {
			wl_csink_free(s);
			return WL_ERR_NOMEM;
		}
	}
	for (size_t i = 0; i < s->nconns; i++)
		wl_runner_start(s->conns[i].slot);
	*out = s;
	return WL_OK;
}

void
wl_csink_write(wl_csink *s, wl_event *e)
{
	uint32_t i = 0;

	if (s->nconns > 1) {
		/* Per key order: one key always goes to one connection. */
		if (e->klen > 0)
			i = wl_hash_partition(e->key, e->klen, 65536) %
			    (uint32_t)s->nconns;
		else
			i = e->stream_id % (uint32_t)s->nconns;
	}
	s->pending_events++;
	s->pending_bytes += e->plen;
	wl_queue_push(&s->conns[i].pending, e);
}

void
wl_csink_flush(wl_csink *s, ev_tstamp now)
{
	for (size_t i = 0; i < s->nconns; i++) {
		send_batches(&s->conns[i], now);
		advance_epochs(&s->conns[i], now);
	}
}

void
wl_csink_tick(wl_csink *s, ev_tstamp now)
{
	for (size_t i = 0; i < s->nconns; i++)
		wl_runner_tick(s->conns[i].slot, now);
	wl_csink_flush(s, now);
}

uint64_t
wl_csink_pending(const wl_csink *s)
{
	return s->pending_events;
}

size_t
wl_csink_pending_bytes(const wl_csink *s)
{
	return s->pending_bytes;
}

void
wl_csink_stop(wl_csink *s, ev_tstamp grace)
{
	for (size_t i = 0; i < s->nconns; i++)
		wl_runner_stop(s->conns[i].slot, grace);
}

bool
wl_csink_stopped(const wl_csink *s)
{
	for (size_t i = 0; i < s->nconns; i++)
		if (!wl_runner_is_stopped(s->conns[i].slot))
			return false;
	return true;
}

bool
wl_csink_failed(const wl_csink *s)
{
	return s->failed;
}

const char *
wl_csink_name(const wl_csink *s)
{
	return s->cfg.def->name;
}

uint64_t
wl_csink_events(const wl_csink *s)
{
	return s->events;
}

uint64_t
wl_csink_bytes(const wl_csink *s)
{
	return s->bytes;
}

uint64_t
wl_csink_resent(const wl_csink *s)
{
	return s->resent;
}

uint32_t
wl_csink_restarts(const wl_csink *s)
{
	uint32_t n = 0;

	for (size_t i = 0; i < s->nconns; i++)
		n += wl_runner_restarts(s->conns[i].slot);
	return n;
}

void
wl_csink_checkpoints_on(wl_csink *s, uint64_t recovered_id, wl_ckhist hist)
{
	s->ckpt = true;
	s->hist = hist;
	s->recovered_id = s->durable_id = s->closed_id = recovered_id;
}

void
wl_csink_close_epoch(wl_csink *s, uint64_t id)
{
	if (id > s->closed_id)
		s->closed_id = id;
}

void
wl_csink_durable(wl_csink *s, uint64_t id)
{
	s->durable_id = id;
	for (size_t i = 0; i < s->nconns; i++) {
		conn *c = &s->conns[i];
		if (!c->up || c->indoubt_wait)
			continue; /* InDoubt will bring them back */
		for (ep *x = c->eps; x != NULL; x = x->next) {
			if (x->st != EP_PREPARED || x->ckpt > id)
				continue;
			x->st = EP_COMMITTING;
			send_decision(c, x->epoch, true);
		}
	}
}

uint64_t
wl_csink_unresolved(const wl_csink *s)
{
	return s->unresolved;
}

void
wl_csink_free(wl_csink *s)
{
	if (s == NULL)
		return;
	for (size_t i = 0; i < s->nconns; i++) {
		conn *c = &s->conns[i];
		wl_event *e;
		wl_runner_free(c->slot);
		while (c->head != NULL) {
			sbatch *b = c->head;
			c->head = b->next;
			wl_queue_append(&c->pending, &b->events);
			free(b);
		}
		while (c->eps != NULL) {
			ep *x = c->eps;
			wl_queue_append(&c->pending, &x->held);
			c->eps = x->next;
			free(x);
		}
		while ((e = wl_queue_pop(&c->pending)) != NULL)
			wl_event_free(e);
	}
	free(s->conns);
	free(s);
}
