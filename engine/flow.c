/*
 * flow.c -- the dataflow between sources, runner steps and sinks.
 *
 * Ownership of an event is always with exactly one place: a step's pending
 * queue, an in-flight batch, or a sink buffer. A batch stays in its slot's
 * in-flight list until its reply is applied, so a runner that dies loses
 * nothing: the list is sent again, in order, to its replacement.
 */
#include "flow.h"

#include <stdlib.h>
#include <string.h>

#include "ckptlog.h"
#include "clock.h"
#include "csink.h"
#include "frame.h"
#include "hash.h"
#include "hist.h"
#include "link.h"
#include "log.h"
#include "runner.h"
#include "sink.h"
#include "state.h"
#include "wire.h"

/* A batch that was in flight when this many runner incarnations died is
 * the likely cause (a "poison" batch): its events fail instead of killing
 * runners forever. Replies come in order, so only the oldest unanswered
 * batch can have been the one being processed. */
#define MAX_BATCH_ATTEMPTS 3

typedef struct batch batch;
struct batch {
	batch *next;
	uint64_t id;
	uint32_t step;
	uint32_t inst;          /* the step instance it was built for */
	uint32_t attempts;
	size_t bytes;
	uint64_t sent_ns;       /* when it was first handed to a runner (a
	                           re-sent batch keeps it: its round trip
	                           includes the restart) */
	wl_queue events;
	wl_state_entry *keys;   /* locked keys, linked through entry->mark */
	/* Hedged (see hedge): the same batch id in another slot's
	 * in-flight list. A ghost carries no events: when its twin is set,
	 * the twin holds them; when not, the batch was answered through the
	 * twin and this entry only waits for its runner's reply, which is
	 * dropped. Either way a runner's replies still come in the order of
	 * its list. */
	batch *twin;
	bool ghost;
};

typedef struct {
	wl_runner *runner;
	uint32_t program;
	uint32_t instance;
	uint32_t *steps;        /* runner steps this slot serves */
	size_t nsteps;
	size_t rr;              /* round robin over steps */
	batch *head, *tail;     /* in flight, oldest first */
	uint32_t ninflight;
	uint32_t nsent;         /* of those, sent to the current incarnation */
	bool was_ready;
	wl_flow *flow;
	uint32_t index;
	/* Where "ingest to done" goes, per runner: from the engine reading
	 * the oldest event of a batch to the batch leaving for the runner
	 * (queueing and coalescing), and from then to its reply being read
	 * (the runner and the link both ways). One sample per batch. */
	wl_hist to_send;
	wl_hist round_trip;
	uint64_t rt_avg_ns;     /* round trip, moving average (hedging) */
	uint64_t hedged;        /* batches this slot took over, hedged */
	uint64_t stolen;        /* batches it built from a stalled or down
	                           instance's queue */
	uint64_t spilled;       /* batches it built from a busy home's queue */
} slot;

typedef struct {
	wl_node_type type;
	int index;
} node_ref;

typedef struct {
	const wl_step *def;
	uint32_t id;            /* step index, also its state id */
	slot *slots;            /* the program's instances; NULL: engine step */
	size_t nslots;
	wl_queue *pending;      /* one per instance; a state step queues
	                           everything at `home` (see route) */
	uint32_t home;
	wl_queue *held;         /* per instance: events of the next epoch,
	                           waiting for the closing one (state steps) */
	/* State steps, per instance: events parked on their locked key
	 * (entry->wait_head) and the keys unlocked with events parked, which
	 * the next batch takes first. Parking makes building a batch O(1) per
	 * event whatever the number of locked keys: a hot key never makes
	 * the engine rescan the queue. */
	uint64_t *nwait, *wait_bytes;
	wl_state_entry **ready;
	wl_state_entry **ready_tail;
	node_ref *out;          /* consumers */
	size_t nout;
	Wallaroo__V1__StepSpec spec;
	uint64_t in, outputs, errors;
} step_rt;

struct wl_flow {
	struct ev_loop *loop;
	const wl_topology *t;
	wl_flow_hooks hooks;
	void *arg;
	wl_state *state;
	step_rt *steps;
	node_ref **src_out;
	size_t *src_nout;
	slot *slots;
	size_t nslots;
	Wallaroo__V1__StepSpec ***prog_specs;
	size_t *prog_nspecs;
	size_t *prog_first_slot;
	wl_sink **sinks;         /* built-in sinks; NULL for connectors */
	wl_csink **csinks;       /* connector sinks; NULL for built-in */
	wl_queue *sink_held;     /* per sink: outputs of the next epoch */
	/* Checkpoint epochs (NULL when checkpoints are off). Sources tag
	 * events with `cur`; after a cut, `closing` is complete once nothing
	 * points to it. At most these two exist: the next cut waits. */
	wl_epoch eps[2];
	wl_epoch *cur, *closing;
	uint64_t tagged;         /* events tagged with `cur` */
	uint64_t next_batch_id;
	/* "Ingest to done", per source: from the moment the engine read an
	 * event to the moment its last effect is applied (its outputs handed
	 * to a sink, or, when it has none, its reply applied). One sample
	 * per leaf, so an event fanning out counts once per output. `now_ns`
	 * is the time of the callback in progress, read once per reply. */
	wl_hist *lat;
	uint64_t now_ns;
	bool ready_reported;
	bool csink_fatal;
	uint64_t errors;
};

static void emit(wl_flow *f, node_ref from, wl_event *e);

static void
step_error(wl_flow *f, step_rt *st, const wl_event *e, const char *what)
{
	char k[80];

	st->errors++;
	f->errors++;
	/* Bounded logging: a step failing on every event must not turn the
	 * log into the bottleneck. */
	if (st->errors <= 10 || st->errors % 10000 == 0)
		wl_log("STEP-ERROR", "step '%s' key %s (stream %u message %llu): "
		    "%s (%llu errors so far)", st->def->name,
		    wl_log_bytes(k, sizeof(k), e->key, e->klen), e->stream_id,
		    (unsigned long long)e->message_id, what,
		    (unsigned long long)st->errors);
}

/* `e` has had its last effect: one latency sample for its source. */
static inline void
done(wl_flow *f, const wl_event *e)
{
	uint64_t now = f->now_ns;

	if (e->source < f->t->nsources)
		wl_hist_record(&f->lat[e->source],
		    now > e->ingest_ns ? now - e->ingest_ns : 0);
}

/*
 * The instance whose queue takes `e`. A stateless step partitions its
 * events over its instances: an instance's batches are answered in order,
 * so one key's (or one stream's) events stay in order. A state step has
 * one queue, at its home instance: its keys are locked per batch, so any
 * instance can take any key, and one queue lets the home runner get every
 * event of a burst in one batch. Split over two queues, the same burst
 * costs two batches and two runner wake-ups: at 100,000 events/s the
 * Python runners used 3.5 s of CPU per 4 s run that way, against 2.35 s
 * (bench/RESULTS.md, "fifth session"). The other instances take from that queue when the
 * home runner cannot keep up (spilling), stalls or is down (stealing):
 * see help_others.
 */
static uint32_t
route(const wl_flow *f, const step_rt *st, const wl_event *e)
{
	uint32_t p;

	if (st->def->kind == WL_STEP_STATE)
		return st->home;

	if (e->klen > 0)
		p = wl_hash_partition(e->key, e->klen, f->t->partitions);
	else {
		uint8_t le[4] = { (uint8_t)e->stream_id,
		    (uint8_t)(e->stream_id >> 8), (uint8_t)(e->stream_id >> 16),
		    (uint8_t)(e->stream_id >> 24) };
		p = wl_hash_partition(le, sizeof(le), f->t->partitions);
	}
	return p % (uint32_t)st->nslots;
}

static void
deliver(wl_flow *f, node_ref to, wl_event *e)
{
	step_rt *st;

	/* Aligned epochs: while one closes, what the next one brings waits
	 * before the places whose contents the checkpoint records (state and
	 * sink files), so the snapshot holds exactly the closing epoch. */
	bool hold = f->closing != NULL && e->epoch != NULL &&
	    e->epoch != f->closing;

	if (to.type == WL_NODE_SINK) {
		if (hold) {
			wl_queue_push(&f->sink_held[to.index], e);
			return;
		}
		done(f, e);
		if (f->csinks[to.index] != NULL)
			wl_csink_write(f->csinks[to.index], e);
		else
			wl_sink_write(f->sinks[to.index], e);
		return;
	}
	st = &f->steps[to.index];
	st->in++;
	if (st->slots == NULL) {
		/* Engine key_by: a byte range of the payload, no round trip. */
		const wl_step *d = st->def;
		if ((uint64_t)d->key_offset + d->key_length > e->plen) {
			char why[96];
			snprintf(why, sizeof(why), "payload of %u bytes is too "
			    "short for key {offset: %u, length: %u}", e->plen,
			    d->key_offset, d->key_length);
			step_error(f, st, e, why);
			wl_event_free(e);
			return;
		}
		/* The key is a range of the payload: point at it instead of
		 * copying the event (the payload itself does not change). */
		e->key = d->key_length ? e->payload + d->key_offset : NULL;
		e->klen = d->key_length;
		st->outputs++;
		emit(f, (node_ref){ WL_NODE_STEP, to.index }, e);
		return;
	}
	if (hold && st->def->kind == WL_STEP_STATE)
		wl_queue_push(&st->held[route(f, st, e)], e);
	else
		wl_queue_push(&st->pending[route(f, st, e)], e);
}

static void
emit(wl_flow *f, node_ref from, wl_event *e)
{
	const node_ref *out;
	size_t nout;

	if (from.type == WL_NODE_SOURCE) {
		out = f->src_out[from.index];
		nout = f->src_nout[from.index];
	} else {
		out = f->steps[from.index].out;
		nout = f->steps[from.index].nout;
	}
	for (size_t i = 0; i + 1 < nout; i++) {
		wl_event *d = wl_event_dup(e);
		if (d != NULL)
			deliver(f, out[i], d);
	}
	if (nout > 0)
		deliver(f, out[nout - 1], e);
	else
		wl_event_free(e);
}

void
wl_flow_source_event(wl_flow *f, int source, wl_event *e)
{
	e->source = (uint32_t)source;
	/* Straight to a sink, an event is done when it was read. */
	if (e->ingest_ns > f->now_ns)
		f->now_ns = e->ingest_ns;
	if (f->cur != NULL) {
		wl_event_set_epoch(e, f->cur);
		f->tagged++;
	}
	emit(f, (node_ref){ WL_NODE_SOURCE, source }, e);
}

/* The batch as a Frame, in a new message (wire.c writes it by hand). */
static wl_err
encode_batch(const batch *b, nng_msg **out)
{
	wl_wire_batch wb = { b->id, b->step, b->events.head, b->keys };

	return wl_wire_batch_encode(out, &wb);
}

/* Parks `e` behind the other waiting events of its key `k`. */
static void
park(step_rt *st, uint32_t inst, wl_state_entry *k, wl_event *e)
{
	e->next = NULL;
	if (k->wait_tail)
		k->wait_tail->next = e;
	else
		k->wait_head = e;
	k->wait_tail = e;
	st->nwait[inst]++;
	st->wait_bytes[inst] += wl_event_size(e);
}

static void
ready_push(step_rt *st, uint32_t inst, wl_state_entry *k)
{
	if (k->on_ready)
		return;
	k->on_ready = true;
	k->ready_next = NULL;
	if (st->ready[inst])
		st->ready_tail[inst]->ready_next = k;
	else
		st->ready[inst] = k;
	st->ready_tail[inst] = k;
}

static wl_state_entry *
ready_pop(step_rt *st, uint32_t inst)
{
	wl_state_entry *k = st->ready[inst];

	if (k == NULL)
		return NULL;
	st->ready[inst] = k->ready_next;
	k->ready_next = NULL;
	k->on_ready = false;
	return k;
}

/* Unlocks the keys of `b`; those with parked events become ready. */
static void
unlock_keys(wl_flow *f, batch *b)
{
	wl_state_entry *k = b->keys;
	step_rt *st = &f->steps[b->step];

	while (k) {
		wl_state_entry *n = k->mark;
		k->locked_by = 0;
		k->mark = NULL;
		if (k->wait_head != NULL)
			ready_push(st, b->inst, k);
		k = n;
	}
	b->keys = NULL;
}

/* Whether `b` has room for one more event of `sz` bytes. */
static bool
batch_room(const batch *b, size_t sz, uint32_t max_events, size_t max_bytes)
{
	return b->events.count < max_events &&
	    (b->events.count == 0 || b->bytes + sz <= max_bytes);
}

static void
lock_key(batch *b, wl_state_entry *k)
{
	k->locked_by = b->id;
	k->mark = b->keys;
	b->keys = k;
	b->bytes += k->klen + k->vlen;
}

/*
 * Takes events for one batch of step `st` on instance `inst`. For a state
 * step every key taken is locked by this batch; an event whose key is
 * locked by another batch is parked on the key (so later events of that
 * key stay behind it), and keys unlocked with parked events are taken
 * first, their parked events in order. Returns NULL when fewer than
 * `min_events` wait (queued or parked), or when nothing can be taken.
 */
static batch *
build_batch(wl_flow *f, step_rt *st, uint32_t inst, size_t min_events)
{
	const wl_limits *lim = &f->t->limits;
	wl_queue *q = &st->pending[inst];
	bool keyed = st->def->kind == WL_STEP_STATE;
	/* Half the message limit leaves room for the encoding's overhead, so
	 * only a single event with its state can ever be too large. */
	size_t max_bytes = lim->batch_max_bytes < lim->message_max_bytes / 2 ?
	    lim->batch_max_bytes : lim->message_max_bytes / 2;
	uint32_t max_events = lim->batch_max_events;
	batch *b;

	if (q->count == 0 && (!keyed || st->ready[inst] == NULL))
		return NULL;
	if (q->count + (keyed ? st->nwait[inst] : 0) < min_events)
		return NULL;
	b = calloc(1, sizeof(*b));
	if (b == NULL)
		return NULL;
	b->id = ++f->next_batch_id;
	b->step = st->id;
	b->inst = inst;
	while (keyed && st->ready[inst] != NULL) {
		wl_state_entry *k = st->ready[inst];
		if (!batch_room(b, wl_event_size(k->wait_head) + k->klen + k->vlen,
		    max_events, max_bytes))
			goto done;
		ready_pop(st, inst);
		lock_key(b, k);
		/* A key left half-taken stays locked by this batch with the
		 * rest parked: it is ready again when this batch is answered. */
		while (k->wait_head != NULL &&
		    batch_room(b, wl_event_size(k->wait_head), max_events,
		    max_bytes)) {
			wl_event *e = k->wait_head;
			size_t sz = wl_event_size(e);
			k->wait_head = e->next;
			if (k->wait_head == NULL)
				k->wait_tail = NULL;
			st->nwait[inst]--;
			st->wait_bytes[inst] -= sz;
			wl_queue_push(&b->events, e);
			b->bytes += sz;
		}
	}
	while (q->head != NULL) {
		wl_event *e = q->head;
		size_t sz = wl_event_size(e);
		if (!batch_room(b, sz, max_events, max_bytes))
			break;
		if (keyed) {
			wl_state_entry *k = wl_state_get(f->state, st->id, e->key,
			    e->klen, true);
			if (k == NULL)
				break; /* out of memory: try again next time */
			if ((k->locked_by != 0 && k->locked_by != b->id) ||
			    k->wait_head != NULL) {
				park(st, inst, k, wl_queue_pop(q));
				continue;
			}
			if (k->locked_by == 0) {
				if (!batch_room(b, sz + k->klen + k->vlen, max_events,
				    max_bytes))
					break;
				lock_key(b, k);
			}
		}
		wl_queue_push(&b->events, wl_queue_pop(q));
		b->bytes += sz;
	}
done:
	if (b->events.count == 0) {
		unlock_keys(f, b);
		free(b);
		--f->next_batch_id;
		return NULL;
	}
	return b;
}

static void
send_batch(wl_flow *f, slot *s, batch *b)
{
	nng_msg *m;

	if (encode_batch(b, &m) != WL_OK) {
		wl_log("FLOW-ERROR", "out of memory encoding a batch for %s",
		    wl_runner_name(s->runner));
		return;
	}
	wl_runner_send_batch(s->runner, m);
	s->nsent++;
}

static void free_batch(batch *b);

/* Fails every event of `b` (logged, counted as step errors), unlocks its
 * keys and frees it. `b` must not be in an in-flight list. */
static void
fail_batch(wl_flow *f, batch *b, const char *why)
{
	step_rt *st = &f->steps[b->step];

	for (wl_event *e = b->events.head; e; e = e->next)
		step_error(f, st, e, why);
	unlock_keys(f, b);
	/* Its ghost elsewhere now waits for a reply that is dropped. */
	if (b->twin != NULL)
		b->twin->twin = NULL;
	free_batch(b);
}

/* In-flight batches from which on only full batches are sent. */
#define COALESCE_INFLIGHT 2

/*
 * Hedging, for state steps: a batch a runner has not answered for
 * HEDGE_MIN_NS, or four times that runner's usual round trip if longer,
 * is sent as well to an idle runner of the same program (fewer than
 * COALESCE_INFLIGHT batches out), and the first reply is applied. A
 * runner the kernel leaves waiting for a CPU for milliseconds (on a busy
 * 2-core machine, several times a second: bench/RESULTS.md) then delays
 * its batches by about HEDGE_MIN_NS, not by the whole wait. Sound because
 * state belongs to the engine: a batch carries its keys' states and its
 * keys stay locked until it is answered, so either runner computes the
 * same reply from the same input (computations are deterministic, as
 * replay after a crash already requires), and only one is applied.
 *
 * The batch moves to the idle slot's in-flight list; a ghost with its id
 * takes its place in the slow slot's list, so each runner's replies still
 * match its list in order. Whichever reply comes first is applied (to the
 * batch, wherever it is); the other is dropped when it comes. A batch is
 * hedged once at most. Stateless steps are not hedged: a later batch of
 * the same instance could be answered before a hedged one, reordering a
 * stream.
 */
#define HEDGE_MIN_NS 1000000ull

/* Appends `b` to the in-flight list of `s`. */
static void
push_inflight(slot *s, batch *b)
{
	b->next = NULL;
	if (s->tail)
		s->tail->next = b;
	else
		s->head = b;
	s->tail = b;
	s->ninflight++;
}

/* How long `v` may take to answer a batch before it counts as stalled. */
static uint64_t
stall_ns(const slot *v)
{
	return v->rt_avg_ns * 4 > HEDGE_MIN_NS ? v->rt_avg_ns * 4 :
	    HEDGE_MIN_NS;
}

/* Hedges the oldest batch of step `st` that `v` has held too long, if
 * any, by sending it to `s` as well. */
static bool
hedge(wl_flow *f, slot *s, const step_rt *st, slot *v, uint64_t now)
{
	uint64_t after = stall_ns(v);
	batch *prev = NULL, *b, *g;
	nng_msg *m;

	/* Oldest first: the first one too young ends it. */
	for (b = v->head; b != NULL; prev = b, b = b->next) {
		if (now < b->sent_ns + after)
			return false;
		if (!b->ghost && b->twin == NULL && b->step == st->id)
			break;
	}
	if (b == NULL || (g = calloc(1, sizeof(*g))) == NULL)
		return false;
	if (encode_batch(b, &m) != WL_OK) {
		free(g);
		return false;
	}
	g->id = b->id;
	g->step = b->step;
	g->inst = b->inst;
	g->attempts = b->attempts;
	g->sent_ns = b->sent_ns;
	g->ghost = true;
	g->twin = b;
	b->twin = g;
	g->next = b->next;
	if (prev != NULL)
		prev->next = g;
	else
		v->head = g;
	if (v->tail == b)
		v->tail = g;
	push_inflight(s, b);
	s->hedged++;
	wl_runner_send_batch(s->runner, m);
	s->nsent++;
	return true;
}

/* How long the oldest event waiting in queue `inst` of `st` has been in
 * the engine (since it was read), or 0 when none waits. */
static uint64_t
oldest_wait(const step_rt *st, uint32_t inst, uint64_t now)
{
	uint64_t t = UINT64_MAX;
	const wl_event *e = st->pending[inst].head;

	if (e != NULL)
		t = e->ingest_ns;
	/* Parked events of unlocked keys go first into the next batch. */
	if (st->ready[inst] != NULL && (e = st->ready[inst]->wait_head) != NULL &&
	    e->ingest_ns < t)
		t = e->ingest_ns;
	return t == UINT64_MAX || now < t ? 0 : now - t;
}

/* Spilling: how long events may wait in a state step's queue for its
 * home runner while another runner is idle. 100 and 300 us measured
 * alike at 100,000 events/s (bench/RESULTS.md, "fifth session"); the
 * lower one bounds that wait more tightly. */
#define SPILL_NS 100000ull

/*
 * What a slot with little to do (fewer than COALESCE_INFLIGHT batches
 * out, nothing of its own queued) does for the others of its state steps:
 * it hedges a batch one of them has held too long (above), or else it
 * takes a batch from the queue of another instance. Returns true when it
 * sent a hedged batch; otherwise *stolen is a batch for it to send, or
 * NULL.
 *
 * It takes from another instance's queue when that instance
 *  - spills: its runner has COALESCE_INFLIGHT batches or more out, so it
 *    is only sent full batches, and the oldest waiting event has been in
 *    the engine SPILL_NS. A state step's events all queue at its home
 *    instance (route); this is how the others share its load, and only
 *    when the home runner is behind: while it keeps up, a burst goes to
 *    it whole, in one batch, at the cost of one wake-up;
 *  - or is stalled: its oldest batch has waited as long as hedging
 *    waits, or its runner is down.
 * This is correct because state belongs to the engine and travels with
 * each batch, and a key is never in two in-flight batches: the keys the
 * other instance holds stay locked, their events parked behind them, and
 * every other key goes on. The batch keeps the queue's instance
 * (b->inst): the keys it unlocks become ready there, where their parked
 * events are counted. A runner the kernel leaves waiting for a CPU for
 * milliseconds (docs/design.md, "One queue per state step") then holds
 * up only the keys of its own batches, and those only until they are
 * hedged.
 *
 * Stateless steps are never taken from: without locks, two instances
 * could reorder one key's, or one source stream's, events.
 */
static bool
help_others(wl_flow *f, slot *s, batch **stolen)
{
	uint64_t now = wl_mono_ns();

	*stolen = NULL;
	for (size_t i = 0; i < s->nsteps; i++) {
		step_rt *st = &f->steps[s->steps[i]];

		if (st->def->kind != WL_STEP_STATE)
			continue;
		for (size_t j = 0; j < st->nslots; j++) {
			slot *v = &st->slots[j];
			bool stalled, spill;

			if (v == s)
				continue;
			if (hedge(f, s, st, v, now))
				return true;
			stalled = !wl_runner_is_ready(v->runner) ||
			    (v->head != NULL &&
			    now >= v->head->sent_ns + stall_ns(v));
			spill = !stalled && v->ninflight >= COALESCE_INFLIGHT &&
			    oldest_wait(st, (uint32_t)j, now) >= SPILL_NS;
			if ((stalled || spill) &&
			    (*stolen = build_batch(f, st, (uint32_t)j, 1)) != NULL) {
				if (spill)
					s->spilled++;
				else
					s->stolen++;
				return false;
			}
		}
	}
	return false;
}

static void
flush_slot(wl_flow *f, slot *s)
{
	uint32_t window = f->t->limits.inflight_batches;

	/* runner.c tracks deadlines for at most 256 batches. */
	if (window > 128)
		window = 128;
	while (wl_runner_is_ready(s->runner) && s->ninflight < window) {
		batch *b = NULL;
		/* Coalescing, as Nagle's algorithm: while the runner has
		 * COALESCE_INFLIGHT batches to work on, a batch goes only when
		 * it is full. An idle runner gets what is there at once (low
		 * latency at low load); a busy one gets fewer, larger batches,
		 * which is what lets it keep up (per-batch costs -- a message,
		 * thread wake-ups on both sides -- are paid once per batch). */
		size_t min_events = s->ninflight >= COALESCE_INFLIGHT ?
		    f->t->limits.batch_max_events : 1;
		for (size_t i = 0; i < s->nsteps && b == NULL; i++) {
			step_rt *st = &f->steps[s->steps[(s->rr + i) % s->nsteps]];
			b = build_batch(f, st, s->instance, min_events);
		}
		if (b == NULL && s->ninflight < COALESCE_INFLIGHT &&
		    help_others(f, s, &b))
			continue;
		nng_msg *m;
		if (b == NULL)
			return;
		s->rr++;
		if (encode_batch(b, &m) != WL_OK) {
			fail_batch(f, b, "out of memory encoding the batch");
			continue;
		}
		if (nng_msg_len(m) + WL_LINK_FRAME_OVERHEAD >
		    f->t->limits.message_max_bytes) {
			char why[200];
			snprintf(why, sizeof(why), "the batch encodes to %zu bytes, "
			    "over message_max_bytes=%u less the %u-byte pair1 header "
			    "(events plus key state)",
			    nng_msg_len(m), f->t->limits.message_max_bytes,
			    WL_LINK_FRAME_OVERHEAD);
			wl_log("BATCH-FAILED", "step '%s': %s", f->steps[b->step].def->name,
			    why);
			nng_msg_free(m);
			fail_batch(f, b, why);
			continue;
		}
		push_inflight(s, b);
		b->sent_ns = wl_mono_ns();
		if (b->events.head != NULL)
			wl_hist_record(&s->to_send,
			    b->sent_ns > b->events.head->ingest_ns ?
			    b->sent_ns - b->events.head->ingest_ns : 0);
		/* Counted as sent even when the runner refuses it now: a refusal
		 * means it is going down, and the down hook resets nsent. */
		wl_runner_send_batch(s->runner, m);
		s->nsent++;
	}
}

void
wl_flow_flush(wl_flow *f)
{
	for (size_t i = 0; i < f->nslots; i++)
		flush_slot(f, &f->slots[i]);
	for (size_t i = 0; i < f->t->nsinks; i++) {
		if (f->csinks[i] != NULL)
			wl_csink_flush(f->csinks[i], wl_clock_now());
		else
			wl_sink_flush(f->sinks[i]);
	}
}

static void
free_batch(batch *b)
{
	wl_queue_clear(&b->events);
	free(b);
}

/* Removes the head of the in-flight list. */
static batch *
pop_inflight(slot *s)
{
	batch *b = s->head;

	s->head = b->next;
	if (s->head == NULL)
		s->tail = NULL;
	s->ninflight--;
	b->next = NULL;
	return b;
}

/* Takes the ghosts out of a slot whose runner is new: it was sent none of
 * them, and their batches are answered (or will be) through their twins. */
static void
drop_ghosts(slot *s)
{
	batch **pp = &s->head, *b;

	s->tail = NULL;
	while ((b = *pp) != NULL) {
		if (b->ghost) {
			*pp = b->next;
			if (b->twin != NULL)
				b->twin->twin = NULL;
			free_batch(b);
			s->ninflight--;
		} else {
			s->tail = b;
			pp = &b->next;
		}
	}
}

static void
hook_ready(void *arg, wl_runner *r)
{
	slot *s = NULL;
	wl_flow *f;

	/* Find our slot: the runner's arg is the slot itself. */
	s = arg;
	f = s->flow;
	(void)r;
	s->nsent = 0;
	drop_ghosts(s);
	for (batch *b = s->head; b; b = b->next)
		send_batch(f, s, b);
	if (s->head)
		wl_log("FLOW-RESEND", "sent %u in-flight batch(es) again to %s",
		    s->ninflight, wl_runner_name(s->runner));
	s->was_ready = true;
	if (!f->ready_reported) {
		for (size_t i = 0; i < f->nslots; i++)
			if (!f->slots[i].was_ready)
				return;
		f->ready_reported = true;
		f->hooks.ready(f->arg);
	}
}

static void
hook_down(void *arg, wl_runner *r)
{
	slot *s = arg;
	wl_flow *f = s->flow;
	batch *b = s->head;

	bool was_sent = s->nsent > 0;

	(void)r;
	s->nsent = 0;
	/* Only an incarnation that had the batch can have died of it; a
	 * ghost's batch is another runner's to finish. */
	if (b == NULL || !was_sent || b->ghost)
		return;
	if (++b->attempts < MAX_BATCH_ATTEMPTS)
		return;
	b = pop_inflight(s);
	wl_log("BATCH-FAILED", "step '%s': batch %llu of %zu events was in "
	    "flight in %u runner incarnations that all died; its events fail "
	    "(counted as errors) so the runner can go on",
	    f->steps[b->step].def->name, (unsigned long long)b->id,
	    b->events.count, b->attempts);
	fail_batch(f, b, "batch failed: runner died on it repeatedly");
}

static wl_err
hook_failed(void *arg, wl_runner *r, uint64_t batch_id, const char *message)
{
	slot *s = arg;
	wl_flow *f = s->flow;
	batch *b = s->head;
	char why[300];

	if (b == NULL || s->nsent == 0 || b->id != batch_id) {
		wl_log("RUN-PROTO", "runner %s: error for batch %llu, which is not "
		    "the oldest in flight", wl_runner_name(r),
		    (unsigned long long)batch_id);
		return WL_ERR_PROTO;
	}
	b = pop_inflight(s);
	s->nsent--;
	if (b->ghost) {
		/* Its twin's runner answers for the batch, or has. */
		if (b->twin != NULL)
			b->twin->twin = NULL;
		free_batch(b);
		return WL_OK;
	}
	snprintf(why, sizeof(why), "runner %s failed the whole batch: %s",
	    wl_runner_name(r), message);
	fail_batch(f, b, why);
	return WL_OK;
}

static void
hook_fatal(void *arg, wl_runner *r)
{
	slot *s = arg;
	char why[160];

	snprintf(why, sizeof(why), "runner %s cannot be started",
	    wl_runner_name(r));
	s->flow->hooks.fatal(s->flow->arg, why);
}

static wl_err
reply_error(const slot *s, const char *what, unsigned long long a,
    unsigned long long b)
{
	wl_log("RUN-PROTO", "runner %s: %s (%llu, expected %llu)",
	    wl_runner_name(s->runner), what, a, b);
	return WL_ERR_PROTO;
}

static wl_err
hook_reply(void *arg, wl_runner *r, const Wallaroo__V1__BatchReply *rep)
{
	slot *s = arg;
	wl_flow *f = s->flow;
	batch *b = s->head, *d;
	step_rt *st;
	uint64_t rt;
	char k[80];

	(void)r;
	if (b == NULL || s->nsent == 0)
		return reply_error(s, "reply with nothing in flight", rep->batch_id, 0);
	if (rep->batch_id != b->id)
		return reply_error(s, "reply for the wrong batch", rep->batch_id, b->id);
	/* The batch's events: here, or in the twin of a hedged batch's
	 * ghost, or nowhere when the twin's reply came first. */
	d = b->ghost ? b->twin : b;
	if (d == NULL) {
		free_batch(pop_inflight(s));
		s->nsent--;
		return WL_OK;
	}
	if (rep->n_results != d->events.count)
		return reply_error(s, "reply with the wrong number of results",
		    rep->n_results, d->events.count);
	st = &f->steps[d->step];
	/* Check everything before applying anything: a reply is atomic. */
	if (st->def->kind != WL_STEP_STATE && rep->n_states > 0)
		return reply_error(s, "state in a reply of a stateless step",
		    rep->n_states, 0);
	for (size_t i = 0; i < rep->n_states; i++) {
		const Wallaroo__V1__StateEntry *se = rep->states[i];
		wl_state_entry *e = wl_state_get(f->state, st->id, se->key.data,
		    (uint32_t)se->key.len, false);
		if (e == NULL || e->locked_by != d->id) {
			wl_log("RUN-PROTO", "runner %s: reply sets the state of key "
			    "%s, which is not in batch %llu", wl_runner_name(s->runner),
			    wl_log_bytes(k, sizeof(k), se->key.data,
			    (unsigned)se->key.len), (unsigned long long)d->id);
			return WL_ERR_PROTO;
		}
	}
	for (size_t i = 0; i < rep->n_states; i++) {
		const Wallaroo__V1__StateEntry *se = rep->states[i];
		wl_state_entry *e = wl_state_get(f->state, st->id, se->key.data,
		    (uint32_t)se->key.len, false);
		if (wl_state_set(f->state, e, se->value.data,
		    (uint32_t)se->value.len, se->present) != WL_OK)
			wl_log("FLOW-ERROR", "out of memory storing state of "
			    "step '%s'", st->def->name);
	}
	b = pop_inflight(s);
	s->nsent--;
	unlock_keys(f, d);
	f->now_ns = wl_mono_ns();
	rt = f->now_ns > b->sent_ns ? f->now_ns - b->sent_ns : 0;
	wl_hist_record(&s->round_trip, rt);
	/* A hedged batch's round trip is mostly the wait that made it one:
	 * kept out of the average, which says what is usual. */
	if (b->twin == NULL)
		s->rt_avg_ns = s->rt_avg_ns - s->rt_avg_ns / 8 + rt / 8;
	for (size_t i = 0; i < rep->n_results; i++) {
		const Wallaroo__V1__Result *res = rep->results[i];
		wl_event *e = wl_queue_pop(&d->events);
		node_ref from = { WL_NODE_STEP, (int)st->id };
		if (res->error != NULL && res->error[0] != '\0') {
			step_error(f, st, e, res->error);
			done(f, e);
			wl_event_free(e);
			continue;
		}
		if (st->def->kind == WL_STEP_KEY_BY) {
			wl_event *n = wl_event_rekey(e, res->key.data,
			    (uint32_t)res->key.len);
			wl_event_free(e);
			if (n != NULL) {
				st->outputs++;
				emit(f, from, n);
			}
			continue;
		}
		for (size_t j = 0; j < res->n_outputs; j++) {
			const Wallaroo__V1__Output *o = res->outputs[j];
			wl_event *n = o->has_key ?
			    wl_event_new(o->key.data, (uint32_t)o->key.len,
			    o->payload.data, (uint32_t)o->payload.len) :
			    wl_event_new(e->key, e->klen, o->payload.data,
			    (uint32_t)o->payload.len);
			if (n == NULL) {
				wl_log("FLOW-ERROR", "out of memory in step '%s'",
				    st->def->name);
				continue;
			}
			wl_event_inherit(n, e);
			if (o->event_time)
				n->event_time = o->event_time;
			st->outputs++;
			emit(f, from, n);
		}
		if (res->n_outputs == 0)
			done(f, e);
		wl_event_free(e);
	}
	if (d != b) {
		/* Answered here first: the twin, in the other slot's list,
		 * becomes a ghost whose reply is dropped. */
		d->ghost = true;
		d->twin = NULL;
	} else if (b->twin != NULL) {
		b->twin->twin = NULL;
	}
	free_batch(b);
	return WL_OK;
}

static const wl_runner_hooks runner_hooks = {
	.ready = hook_ready, .reply = hook_reply, .failed = hook_failed,
	.down = hook_down, .fatal = hook_fatal,
};

static Wallaroo__V1__StepKind
pb_kind(wl_step_kind k)
{
	switch (k) {
	case WL_STEP_STATELESS: return WALLAROO__V1__STEP_KIND__STEP_KIND_STATELESS;
	case WL_STEP_KEY_BY: return WALLAROO__V1__STEP_KIND__STEP_KIND_KEY_BY;
	case WL_STEP_STATE: return WALLAROO__V1__STEP_KIND__STEP_KIND_STATE;
	}
	return WALLAROO__V1__STEP_KIND__STEP_KIND_UNSPECIFIED;
}

static int
add_consumer(node_ref **list, size_t *n, node_ref to)
{
	node_ref *nl = realloc(*list, (*n + 1) * sizeof(**list));

	if (nl == NULL)
		return -1;
	nl[(*n)++] = to;
	*list = nl;
	return 0;
}

wl_err
wl_flow_new(wl_flow **out, struct ev_loop *loop, const wl_topology *t,
    const char *sockdir, const char *worker, uint64_t incarnation,
    const wl_flow_hooks *hooks, void *arg)
{
	wl_flow *f = calloc(1, sizeof(*f));
	size_t np = t->nprograms;

	if (f == NULL)
		return WL_ERR_NOMEM;
	f->loop = loop;
	f->t = t;
	f->hooks = *hooks;
	f->arg = arg;
	if (wl_state_new(&f->state) != WL_OK)
		goto nomem;
	f->steps = calloc(t->nsteps ? t->nsteps : 1, sizeof(*f->steps));
	f->src_out = calloc(t->nsources ? t->nsources : 1, sizeof(*f->src_out));
	f->src_nout = calloc(t->nsources ? t->nsources : 1, sizeof(*f->src_nout));
	f->sinks = calloc(t->nsinks ? t->nsinks : 1, sizeof(*f->sinks));
	f->csinks = calloc(t->nsinks ? t->nsinks : 1, sizeof(*f->csinks));
	f->sink_held = calloc(t->nsinks ? t->nsinks : 1, sizeof(*f->sink_held));
	f->lat = calloc(t->nsources ? t->nsources : 1, sizeof(*f->lat)); /* zero: empty */
	f->prog_specs = calloc(np ? np : 1, sizeof(*f->prog_specs));
	f->prog_nspecs = calloc(np ? np : 1, sizeof(*f->prog_nspecs));
	f->prog_first_slot = calloc(np ? np : 1, sizeof(*f->prog_first_slot));
	if (!f->steps || !f->src_out || !f->src_nout || !f->sinks || !f->csinks || !f->sink_held || !f->lat ||
	    !f->prog_specs || !f->prog_nspecs || !f->prog_first_slot)
		goto nomem;

	/* Runner slots for the programs that serve steps; the others are
	 * connectors, supervised by their source or sink. */
	for (size_t p = 0; p < np; p++) {
		bool runs_steps = false;
		for (size_t i = 0; i < t->nsteps; i++)
			runs_steps |= t->steps[i].program == (int)p;
		f->prog_first_slot[p] = f->nslots;
		if (runs_steps)
			f->nslots += t->programs[p].instances;
	}
	f->slots = calloc(f->nslots ? f->nslots : 1, sizeof(*f->slots));
	if (f->slots == NULL)
		goto nomem;

	for (size_t i = 0; i < t->nsteps; i++) {
		step_rt *st = &f->steps[i];
		const wl_step *d = &t->steps[i];
		st->def = d;
		st->id = (uint32_t)i;
		wallaroo__v1__step_spec__init(&st->spec);
		st->spec.step_id = (uint32_t)i;
		st->spec.name = d->name;
		st->spec.function = d->function ? d->function : d->name;
		st->spec.kind = pb_kind(d->kind);
		st->spec.state_name = d->state_name ? d->state_name : "";
		if (d->program >= 0) {
			size_t p = (size_t)d->program;
			Wallaroo__V1__StepSpec **ns;
			st->slots = &f->slots[f->prog_first_slot[p]];
			st->nslots = t->programs[p].instances;
			st->pending = calloc(st->nslots, sizeof(*st->pending));
			st->held = calloc(st->nslots, sizeof(*st->held));
			st->nwait = calloc(st->nslots, sizeof(*st->nwait));
			st->wait_bytes = calloc(st->nslots, sizeof(*st->wait_bytes));
			st->ready = calloc(st->nslots, sizeof(*st->ready));
			st->ready_tail = calloc(st->nslots, sizeof(*st->ready_tail));
			ns = realloc(f->prog_specs[p],
			    (f->prog_nspecs[p] + 1) * sizeof(*ns));
			if (st->pending == NULL || st->held == NULL || ns == NULL ||
			    !st->nwait || !st->wait_bytes || !st->ready || !st->ready_tail)
				goto nomem;
			/* A program's state steps have their homes on
			 * different instances, so that each runner is home
			 * to some when a program serves several. */
			st->home = (uint32_t)(f->prog_nspecs[p] % st->nslots);
			ns[f->prog_nspecs[p]++] = &st->spec;
			f->prog_specs[p] = ns;
		}
	}
	for (size_t i = 0; i < t->nedges; i++) {
		const wl_edge *e = &t->edges[i];
		node_ref to = { e->to_type, e->to };
		int rc = e->from_type == WL_NODE_SOURCE ?
		    add_consumer(&f->src_out[e->from], &f->src_nout[e->from], to) :
		    add_consumer(&f->steps[e->from].out, &f->steps[e->from].nout, to);
		if (rc != 0)
			goto nomem;
	}
	for (size_t p = 0; p < np; p++) {
		if (f->prog_nspecs[p] == 0)
			continue; /* a connector program */
		for (uint32_t i = 0; i < t->programs[p].instances; i++) {
			slot *s = &f->slots[f->prog_first_slot[p] + i];
			wl_runner_config cfg = {
				.program = &t->programs[p],
				.instance = i,
				.sockdir = sockdir,
				.limits = &t->limits,
				.steps = (const Wallaroo__V1__StepSpec *const *)f->prog_specs[p],
				.nsteps = f->prog_nspecs[p],
				.worker = worker,
				.incarnation = incarnation,
			};
			s->flow = f;
			s->program = (uint32_t)p;
			s->instance = i;
			s->index = (uint32_t)(f->prog_first_slot[p] + i);
			s->steps = calloc(f->prog_nspecs[p] ? f->prog_nspecs[p] : 1,
			    sizeof(*s->steps));
			if (s->steps == NULL)
				goto nomem;
			for (size_t k = 0; k < t->nsteps; k++)
				if (t->steps[k].program == (int)p)
					s->steps[s->nsteps++] = (uint32_t)k;
			if (wl_runner_new(&s->runner, loop, &cfg, &runner_hooks,
			    s) != WL_OK)
				goto nomem;
		}
	}
	for (size_t i = 0; i < t->nsinks; i++) {
		if (t->sinks[i].type == WL_IO_CONNECTOR) {
			wl_csink_config cc = {
				.def = &t->sinks[i],
				.t = t,
				.sockdir = sockdir,
				.worker = worker,
				.incarnation = incarnation,
				.token = t->sinks[i].token_env ?
				    getenv(t->sinks[i].token_env) : NULL,
			};
			if (wl_csink_new(&f->csinks[i], loop, &cc) != WL_OK)
				goto nomem;
			continue;
		}
	}
	*out = f;
	return WL_OK;
nomem:
	wl_flow_free(f);
	return WL_ERR_NOMEM;
}

wl_err
wl_flow_open_sinks(wl_flow *f, const char *stage_dir,
    const wl_sink_commit *recs)
{
	for (size_t i = 0; i < f->t->nsinks; i++) {
		if (f->csinks[i] != NULL)
			continue;
		if (wl_sink_open(&f->sinks[i], f->loop, &f->t->sinks[i],
		    f->t->sinks[i].type == WL_IO_FILE ? stage_dir : NULL,
		    recs ? &recs[i] : NULL) != WL_OK)
			return WL_ERR_IO;
	}
	return WL_OK;
}

void
wl_flow_start(wl_flow *f)
{
	for (size_t i = 0; i < f->nslots; i++)
		wl_runner_start(f->slots[i].runner);
	if (f->nslots == 0 && !f->ready_reported) {
		f->ready_reported = true;
		f->hooks.ready(f->arg);
	}
}

void
wl_flow_tick(wl_flow *f, ev_tstamp now)
{
	for (size_t i = 0; i < f->nslots; i++)
		wl_runner_tick(f->slots[i].runner, now);
	for (size_t i = 0; i < f->t->nsinks; i++) {
		if (f->csinks[i] == NULL)
			continue;
		wl_csink_tick(f->csinks[i], now);
		if (wl_csink_failed(f->csinks[i]) && !f->csink_fatal) {
			char why[160];
			f->csink_fatal = true;
			snprintf(why, sizeof(why), "the connector of sink '%s' "
			    "cannot come up", f->t->sinks[i].name);
			f->hooks.fatal(f->arg, why);
		}
	}
}

bool
wl_flow_pressure(const wl_flow *f)
{
	uint64_t max = f->t->limits.queue_max_bytes;

	for (size_t i = 0; i < f->t->nsteps; i++) {
		const step_rt *st = &f->steps[i];
		uint64_t lim = max;
		/* A state step's instances share one queue (route): it gets
		 * the room of all of them. */
		if (st->def->kind == WL_STEP_STATE && st->nslots > 1)
			lim = max > UINT64_MAX / st->nslots ? UINT64_MAX :
			    max * st->nslots;
		for (size_t j = 0; j < st->nslots; j++)
			if (st->pending[j].bytes + st->held[j].bytes +
			    st->wait_bytes[j] > lim)
				return true;
	}
	for (size_t i = 0; i < f->t->nsinks; i++)
		if ((f->csinks[i] != NULL ?
		    wl_csink_pending_bytes(f->csinks[i]) :
		    wl_sink_backlog(f->sinks[i])) + f->sink_held[i].bytes > max)
			return true;
	return false;
}

uint64_t
wl_flow_pending_events(const wl_flow *f)
{
	uint64_t n = 0;

	for (size_t i = 0; i < f->t->nsteps; i++) {
		const step_rt *st = &f->steps[i];
		for (size_t j = 0; j < st->nslots; j++)
			n += st->pending[j].count + st->held[j].count +
			    st->nwait[j];
	}
	for (size_t i = 0; i < f->nslots; i++)
		for (const batch *b = f->slots[i].head; b; b = b->next)
			n += b->events.count;
	for (size_t i = 0; i < f->t->nsinks; i++) {
		n += f->sink_held[i].count;
		if (f->csinks[i] != NULL)
			n += wl_csink_pending(f->csinks[i]);
	}
	return n;
}

uint64_t
wl_flow_unwritten_bytes(const wl_flow *f)
{
	uint64_t n = 0;

	for (size_t i = 0; i < f->t->nsinks; i++)
		n += f->csinks[i] != NULL ? wl_csink_pending_bytes(f->csinks[i]) :
		    wl_sink_backlog(f->sinks[i]);
	return n;
}

bool
wl_flow_drained(const wl_flow *f)
{
	for (size_t i = 0; i < f->t->nsteps; i++) {
		const step_rt *st = &f->steps[i];
		for (size_t j = 0; j < st->nslots; j++)
			if (st->pending[j].count > 0 || st->held[j].count > 0 ||
			    st->nwait[j] > 0)
				return false;
	}
	/* A ghost whose batch was answered through its twin is not work
	 * left: its runner's reply will be dropped. */
	for (size_t i = 0; i < f->nslots; i++)
		for (const batch *b = f->slots[i].head; b; b = b->next)
			if (!b->ghost || b->twin != NULL)
				return false;
	for (size_t i = 0; i < f->t->nsinks; i++)
		if (f->sink_held[i].count > 0 || (f->csinks[i] != NULL &&
		    wl_csink_unresolved(f->csinks[i]) > 0) || (f->csinks[i] != NULL ? wl_csink_pending(f->csinks[i]) :
		    wl_sink_backlog(f->sinks[i])) > 0)
			return false;
	return true;
}

void
wl_flow_stop_runners(wl_flow *f, ev_tstamp grace)
{
	for (size_t i = 0; i < f->nslots; i++)
		wl_runner_stop(f->slots[i].runner, grace);
	for (size_t i = 0; i < f->t->nsinks; i++)
		if (f->csinks[i] != NULL)
			wl_csink_stop(f->csinks[i], grace);
}

bool
wl_flow_runners_stopped(const wl_flow *f)
{
	for (size_t i = 0; i < f->nslots; i++)
		if (!wl_runner_is_stopped(f->slots[i].runner))
			return false;
	for (size_t i = 0; i < f->t->nsinks; i++)
		if (f->csinks[i] != NULL && !wl_csink_stopped(f->csinks[i]))
			return false;
	return true;
}

void
wl_flow_summary(const wl_flow *f, FILE *out)
{
	for (size_t i = 0; i < f->t->nsteps; i++) {
		const step_rt *st = &f->steps[i];
		fprintf(out, "SUMMARY step=%s events=%llu outputs=%llu errors=%llu\n",
		    st->def->name, (unsigned long long)st->in,
		    (unsigned long long)st->outputs,
		    (unsigned long long)st->errors);
	}
	for (size_t i = 0; i < f->t->nsinks; i++) {
		const wl_csink *c = f->csinks[i];
		if (c != NULL)
			fprintf(out, "SUMMARY sink=%s events=%llu bytes=%llu "
			    "resent=%llu restarts=%u\n", wl_csink_name(c),
			    (unsigned long long)wl_csink_events(c),
			    (unsigned long long)wl_csink_bytes(c),
			    (unsigned long long)wl_csink_resent(c),
			    wl_csink_restarts(c));
		else
			fprintf(out, "SUMMARY sink=%s events=%llu bytes=%llu\n",
			    wl_sink_name(f->sinks[i]),
			    (unsigned long long)wl_sink_events(f->sinks[i]),
			    (unsigned long long)wl_sink_bytes(f->sinks[i]));
	}
	for (size_t i = 0; i < f->nslots; i++)
		fprintf(out, "SUMMARY runner=%s restarts=%u hedged=%llu "
		    "stolen=%llu spilled=%llu\n",
		    wl_runner_name(f->slots[i].runner),
		    wl_runner_restarts(f->slots[i].runner),
		    (unsigned long long)f->slots[i].hedged,
		    (unsigned long long)f->slots[i].stolen,
		    (unsigned long long)f->slots[i].spilled);
	for (size_t i = 0; i < f->nslots; i++) {
		char prefix[160];
		snprintf(prefix, sizeof(prefix), "SUMMARY batches runner=%s "
		    "ingest_to_send", wl_runner_name(f->slots[i].runner));
		wl_hist_print_us(&f->slots[i].to_send, out, prefix);
		snprintf(prefix, sizeof(prefix), "SUMMARY batches runner=%s "
		    "round_trip", wl_runner_name(f->slots[i].runner));
		wl_hist_print_us(&f->slots[i].round_trip, out, prefix);
	}
	fprintf(out, "SUMMARY state keys=%zu bytes=%zu\n",
	    wl_state_count(f->state), wl_state_bytes(f->state));
	for (size_t i = 0; i < f->t->nsources; i++) {
		char prefix[160];
		snprintf(prefix, sizeof(prefix), "SUMMARY latency source=%s "
		    "ingest_to_done", f->t->sources[i].name);
		wl_hist_print_us(&f->lat[i], out, prefix);
	}
}

const wl_hist *
wl_flow_latency(const wl_flow *f, size_t source)
{
	return source < f->t->nsources ? &f->lat[source] : NULL;
}

uint64_t
wl_flow_outputs(const wl_flow *f)
{
	uint64_t n = 0;

	for (size_t i = 0; i < f->t->nsinks; i++)
		n += f->csinks[i] != NULL ? wl_csink_events(f->csinks[i]) :
		    wl_sink_events(f->sinks[i]);
	return n;
}

uint64_t
wl_flow_errors(const wl_flow *f)
{
	return f->errors;
}

uint32_t
wl_flow_restarts(const wl_flow *f)
{
	uint32_t n = 0;

	for (size_t i = 0; i < f->nslots; i++)
		n += wl_runner_restarts(f->slots[i].runner);
	for (size_t i = 0; i < f->t->nsinks; i++)
		if (f->csinks[i] != NULL)
			n += wl_csink_restarts(f->csinks[i]);
	return n;
}

void
wl_flow_free(wl_flow *f)
{
	if (f == NULL)
		return;
	for (size_t i = 0; i < f->nslots; i++) {
		slot *s = &f->slots[i];
		wl_runner_free(s->runner);
		/* Unlocking puts every key with parked events on a ready list,
		 * where the loop below frees them. */
		for (batch *b = s->head; b; b = b->next)
			unlock_keys(f, b);
		while (s->head)
			free_batch(pop_inflight(s));
		free(s->steps);
	}
	for (size_t i = 0; f->steps && i < f->t->nsteps; i++) {
		step_rt *st = &f->steps[i];
		for (size_t j = 0; st->pending && j < st->nslots; j++)
			wl_queue_clear(&st->pending[j]);
		for (size_t j = 0; st->held && j < st->nslots; j++)
			wl_queue_clear(&st->held[j]);
		for (size_t j = 0; st->ready && j < st->nslots; j++) {
			wl_state_entry *k;
			while ((k = ready_pop(st, (uint32_t)j)) != NULL) {
				while (k->wait_head) {
					wl_event *e = k->wait_head;
					k->wait_head = e->next;
					wl_event_free(e);
				}
				k->wait_tail = NULL;
			}
		}
		free(st->pending);
		free(st->held);
		free(st->nwait);
		free(st->wait_bytes);
		free(st->ready);
		free(st->ready_tail);
		free(st->out);
	}
	for (size_t i = 0; f->sink_held && i < f->t->nsinks; i++)
		wl_queue_clear(&f->sink_held[i]);
	free(f->sink_held);
	free(f->lat);
	for (size_t i = 0; f->sinks && i < f->t->nsinks; i++)
		wl_sink_close(f->sinks[i]);
	for (size_t i = 0; f->csinks && i < f->t->nsinks; i++)
		wl_csink_free(f->csinks[i]);
	free(f->csinks);
	for (size_t i = 0; f->src_out && i < f->t->nsources; i++)
		free(f->src_out[i]);
	for (size_t p = 0; f->prog_specs && p < f->t->nprograms; p++)
		free(f->prog_specs[p]);
	free(f->prog_specs);
	free(f->prog_nspecs);
	free(f->prog_first_slot);
	free(f->src_out);
	free(f->src_nout);
	free(f->sinks);
	free(f->slots);
	free(f->steps);
	wl_state_free(f->state);
	free(f);
}

/* -- checkpoints ------------------------------------------------------ */

void
wl_flow_checkpoints_on(wl_flow *f, uint64_t first_id, wl_ckhist hist)
{
	f->eps[0] = (wl_epoch){ .id = first_id };
	f->eps[1] = (wl_epoch){ 0 };
	f->cur = &f->eps[0];
	f->closing = NULL;
	f->tagged = 0;
	for (size_t i = 0; i < f->t->nsinks; i++)
		if (f->csinks[i] != NULL)
			wl_csink_checkpoints_on(f->csinks[i], first_id - 1, hist);
}

void
wl_flow_durable(wl_flow *f, uint64_t id)
{
	for (size_t i = 0; i < f->t->nsinks; i++) {
		if (f->sinks[i] != NULL)
			wl_sink_durable(f->sinks[i]);
		if (f->csinks[i] != NULL)
			wl_csink_durable(f->csinks[i], id);
	}
}

uint64_t
wl_flow_cut(wl_flow *f)
{
	/* The other epoch closed before this cut could happen, so nothing
	 * points to it any more and it can be reused. */
	wl_epoch *n = f->cur == &f->eps[0] ? &f->eps[1] : &f->eps[0];

	n->id = f->cur->id + 1;
	n->live = 0;
	f->closing = f->cur;
	f->cur = n;
	f->tagged = 0;
	return f->closing->id;
}

uint64_t
wl_flow_closing_live(const wl_flow *f)
{
	return f->closing ? f->closing->live : 0;
}

uint64_t
wl_flow_epoch_events(const wl_flow *f)
{
	return f->tagged;
}

bool
wl_flow_epoch_complete(wl_flow *f)
{
	uint64_t in_csinks = 0;

	if (f->closing == NULL)
		return false;
	/* Once every event of the closing epoch left is an output inside a
	 * connector sink, no more will come: 2PC sinks may prepare it (and
	 * their outputs stop counting once prepared). */
	for (size_t i = 0; i < f->t->nsinks; i++)
		if (f->csinks[i] != NULL)
			in_csinks += wl_csink_pending(f->csinks[i]);
	if (f->closing->live > 0 && f->closing->live == in_csinks)
		for (size_t i = 0; i < f->t->nsinks; i++)
			if (f->csinks[i] != NULL)
				wl_csink_close_epoch(f->csinks[i], f->closing->id);
	if (f->closing->live > 0)
		return false;
	/* Outputs leave events when they are buffered by a built-in sink:
	 * their bytes must also have reached the file or the socket. */
	for (size_t i = 0; i < f->t->nsinks; i++) {
		if (f->sinks[i] == NULL)
			continue;
		wl_sink_flush(f->sinks[i]);
		if (wl_sink_backlog(f->sinks[i]) > 0)
			return false;
	}
	return true;
}

/* STATE records are cut into chunks of about this much payload. */
#define STATE_CHUNK (1u << 20)

typedef struct {
	wl_ckbuf *b;
	const char *step;
	bool open;
	uint64_t entries;
} snap_ctx;

static void
snap_entry(void *arg, const wl_state_entry *e)
{
	snap_ctx *c = arg;

	if (c->open && wl_ckbuf_payload(c->b) + e->klen + e->vlen > STATE_CHUNK) {
		wl_ckbuf_end(c->b);
		c->open = false;
	}
	if (!c->open) {
		wl_ckbuf_begin(c->b, WL_CKREC_STATE);
		wl_ckbuf_str(c->b, c->step);
		c->open = true;
	}
	wl_ckbuf_u8(c->b, e->present);
	wl_ckbuf_u32(c->b, e->klen);
	wl_ckbuf_u32(c->b, e->present ? e->vlen : 0);
	wl_ckbuf_put(c->b, e->key, e->klen);
	if (e->present)
		wl_ckbuf_put(c->b, e->value, e->vlen);
	c->entries++;
}

wl_err
wl_flow_close_epoch(wl_flow *f, wl_ckbuf *b, bool full, int *fds,
    size_t *nfds)
{
	snap_ctx c = { .b = b };
	wl_err err = WL_OK;

	*nfds = 0;
	for (size_t i = 0; i < f->t->nsteps; i++) {
		step_rt *st = &f->steps[i];
		if (st->def->kind != WL_STEP_STATE)
			continue;
		c.step = st->def->name;
		c.open = false;
		wl_state_each(f->state, st->id, full, snap_entry, &c);
		if (c.open)
			wl_ckbuf_end(b);
	}
	wl_state_clear_dirty(f->state);
	for (size_t i = 0; i < f->t->nsinks; i++) {
		wl_sink_commit sc;
		if (f->sinks[i] == NULL || !wl_sink_staged(f->sinks[i]))
			continue; /* connector and TCP sinks keep no length */
		if (wl_sink_seal(f->sinks[i], &sc, fds, nfds) != WL_OK) {
			err = WL_ERR_IO;
			continue;
		}
		wl_ckbuf_begin(b, WL_CKREC_SINK_STAGED);
		wl_ckbuf_str(b, f->t->sinks[i].name);
		wl_ckbuf_u64(b, sc.committed);
		wl_ckbuf_u64(b, sc.seq);
		wl_ckbuf_u64(b, sc.dest);
		wl_ckbuf_u64(b, sc.len);
		wl_ckbuf_end(b);
	}
	/* The next epoch goes on where it waited, in its order. */
	f->closing = NULL;
	for (size_t i = 0; i < f->t->nsteps; i++) {
		step_rt *st = &f->steps[i];
		for (size_t j = 0; st->held && j < st->nslots; j++)
			wl_queue_prepend(&st->pending[j], &st->held[j]);
	}
	f->now_ns = wl_mono_ns();
	for (size_t i = 0; i < f->t->nsinks; i++) {
		wl_event *e;
		while ((e = wl_queue_pop(&f->sink_held[i])) != NULL)
			deliver(f, (node_ref){ WL_NODE_SINK, (int)i }, e);
	}
	return err;
}

wl_err
wl_flow_restore_state(wl_flow *f, const char *step, const void *key,
    uint32_t klen, const void *value, uint32_t vlen, bool present)
{
	for (size_t i = 0; i < f->t->nsteps; i++) {
		step_rt *st = &f->steps[i];
		wl_state_entry *e;
		if (st->def->kind != WL_STEP_STATE ||
		    strcmp(st->def->name, step) != 0)
			continue;
		e = wl_state_get(f->state, st->id, key, klen, present);
		if (e == NULL)
			return present ? WL_ERR_NOMEM : WL_OK;
		return wl_state_set(f->state, e, value, vlen, present);
	}
	return WL_ERR_CONFIG;
}

void
wl_flow_restored(wl_flow *f)
{
	/* What was restored is in the log already. */
	wl_state_clear_dirty(f->state);
}
