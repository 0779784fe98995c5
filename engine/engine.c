/*
 * engine.c -- the worker's one libev loop.
 *
 * Phases of an iteration (see docs/design.md): I/O and timers run their
 * callbacks (sources read, runners reply); then, before the loop blocks,
 * the ev_prepare watcher flushes: batches go to runners, sink buffers are
 * written, paused sources resume if there is room, and the lifecycle
 * advances. Nothing in the data path waits on a timer.
 */
#include "engine.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <ev.h>

#include "checkpoint.h"
#include "clock.h"
#include "csource.h"
#include "flow.h"
#include "link.h"
#include "log.h"
#include "prio.h"
#include "runner.h"
#include "source.h"

/* The checkpoint cycle (with --state-dir). */
typedef enum {
	CK_OFF,      /* no state dir */
	CK_OPEN,     /* the current epoch is open; no checkpoint in progress */
	CK_CLOSING,  /* cut: waiting for the closing epoch to complete */
	CK_WRITING,  /* submitted to the writer thread */
} ckpt_state;

/* A file source's position at the last cut. */
typedef struct {
	uint64_t offset, last_id;
	bool has;
} file_pos;

/* The life of the worker. Advanced only by advance(). */
typedef enum {
	ENG_STARTING,  /* runners starting; sources not reading yet */
	ENG_RUNNING,   /* READY printed; sources reading */
	ENG_DRAINING,  /* every source ended (or SIGTERM): finishing the queues */
	ENG_STOPPING,  /* drained: runners told goodbye, waiting for their exit */
	ENG_DONE,      /* the loop is breaking */
} engine_state;

typedef struct {
	const wl_topology *t;
	struct ev_loop *loop;
	engine_state state;
	wl_flow *flow;
	wl_source **sources;   /* built-in sources; NULL for connectors */
	wl_csource **csources; /* connector sources; NULL for built-in */
	ev_prepare prep;
	ev_timer cron;
	ev_signal sigterm, sigint;
	int exit_code;
	bool fatal;
	bool signalled;    /* a SIGTERM/SIGINT was received */
	char sockdir[256];
	double started;     /* monotonic seconds at READY */
	double finished;
	uint64_t incarnation;
	/* Checkpoints. */
	wl_ckpt *ckpt;
	ckpt_state ck;
	double ck_interval;
	double ck_last_cut;   /* wl_clock_now() of the last cut */
	uint64_t ck_id;       /* the checkpoint being closed or written */
	bool ck_failed;       /* the last one failed: a new one is needed */
	file_pos *ck_files;   /* per source, taken at the cut */
	wl_sink_commit *sink_rec; /* recovery: each sink's record, if any */
	char stage_dir[4096]; /* STATE_DIR/sinks: file sinks' stage files */
	int *ck_fds;          /* to fsync per checkpoint: 3 per sink */
	uint64_t ck_restored; /* recovery: state entries */
	double ck_cut_at;     /* monotonic time of the cut, for the log */
	double ck_align_sum;  /* seconds from cut to closed, all checkpoints */
	double ck_align_max;
	/* The loop thread's own priority (engine_priority). */
	bool rt;              /* under SCHED_FIFO now */
	wl_prio_watch rt_watch;
} engine;

/* Source accessors over both kinds: built-in and connector. */
static bool
src_is_started(const engine *g, size_t i)
{
	return g->csources[i] ? wl_csource_started(g->csources[i]) :
	    wl_source_started(g->sources[i]);
}

static bool
src_is_ended(const engine *g, size_t i)
{
	return g->csources[i] ? wl_csource_ended(g->csources[i]) :
	    wl_source_ended(g->sources[i]);
}

static void
start_ready_sources(engine *g)
{
	for (size_t i = 0; i < g->t->nsources; i++) {
		const wl_io *d = &g->t->sources[i];
		if (src_is_started(g, i))
			continue;
		if (d->after >= 0 && !src_is_ended(g, (size_t)d->after))
			continue;
		if (g->csources[i] != NULL) {
			(void)wl_csource_start(g->csources[i]);
			continue;
		}
		if (wl_source_start(g->sources[i]) != WL_OK) {
			g->fatal = true;
			g->exit_code = WL_EXIT_FAILURE;
			wl_log("ENGINE-FATAL", "source '%s' cannot start", d->name);
			return;
		}
	}
}

static bool
all_sources_ended(const engine *g)
{
	for (size_t i = 0; i < g->t->nsources; i++)
		if (!src_is_ended(g, i))
			return false;
	return true;
}

/* Connector sources have said Goodbye once everything they sent is done
 * and acknowledged: only then may the engine stop. */
static bool
connectors_ended(const engine *g)
{
	for (size_t i = 0; i < g->t->nsources; i++)
		if (g->csources[i] != NULL && !wl_csource_ended(g->csources[i]))
			return false;
	return true;
}

static void
stop_sources(engine *g)
{
	for (size_t i = 0; i < g->t->nsources; i++) {
		if (g->csources[i] != NULL)
			wl_csource_stop(g->csources[i]);
		else
			wl_source_stop(g->sources[i]);
	}
}

static void
check_connectors(engine *g)
{
	for (size_t i = 0; i < g->t->nsources; i++) {
		if (g->csources[i] != NULL && !g->fatal &&
		    wl_csource_failed(g->csources[i])) {
			wl_log("ENGINE-FATAL", "the connector of source '%s' "
			    "cannot come up; stopping", g->t->sources[i].name);
			g->fatal = true;
			g->exit_code = WL_EXIT_FAILURE;
		}
	}
}

/* -- checkpoints ------------------------------------------------------ */

/* True while something the last durable checkpoint does not cover has
 * been accepted. */
static bool
ckpt_needed(const engine *g)
{
	return g->ck_failed || wl_flow_epoch_events(g->flow) > 0;
}

/* The barrier: from here on sources tag the next epoch. Positions are
 * taken now, between callbacks, so they match the events of the closing
 * epoch exactly. */
static void
ckpt_cut(engine *g)
{
	g->ck_id = wl_flow_cut(g->flow);
	g->ck_last_cut = wl_clock_now();
	g->ck_cut_at = wl_clock_now();
	for (size_t i = 0; i < g->t->nsources; i++) {
		if (g->csources[i] != NULL)
			wl_csource_mark(g->csources[i]);
		else
			g->ck_files[i].has = wl_source_position(g->sources[i],
			    &g->ck_files[i].offset, &g->ck_files[i].last_id);
	}
	g->ck = CK_CLOSING;
}

/* The closing epoch is complete: snapshot it and hand it to the writer. */
static void
ckpt_close(engine *g)
{
	bool full = wl_ckpt_want_full(g->ckpt);
	double align = wl_clock_now() - g->ck_cut_at;
	wl_ckbuf *b = wl_ckpt_begin(g->ckpt, g->ck_id, g->incarnation,
	    g->t->partitions, full, align);
	size_t nfds = 0;
	wl_err e = wl_flow_close_epoch(g->flow, b, full, g->ck_fds, &nfds);

	g->ck_align_sum += align;
	if (align > g->ck_align_max)
		g->ck_align_max = align;
	if (e != WL_OK) {
		/* A file sink could not seal its stage (SINK-ERROR says why):
		 * this checkpoint would claim output it cannot vouch for. */
		wl_log("CKPT-FAIL", "checkpoint %llu failed: a file sink could "
		    "not seal its output; the previous checkpoint stands",
		    (unsigned long long)g->ck_id);
		wl_ckpt_abandon(g->ckpt);
		g->ck_failed = true;
		g->ck = CK_OPEN;
		return;
	}
	for (size_t i = 0; i < g->t->nsources; i++) {
		if (g->csources[i] != NULL) {
			wl_csource_record(g->csources[i], b);
			continue;
		}
		if (!g->ck_files[i].has)
			continue;
		wl_ckbuf_begin(b, WL_CKREC_SOURCE);
		wl_ckbuf_str(b, g->t->sources[i].name);
		wl_ckbuf_str(b, "file");
		wl_ckbuf_u64(b, g->ck_files[i].last_id);
		wl_ckbuf_u64(b, g->ck_files[i].offset);
		wl_ckbuf_end(b);
	}
	if (wl_ckpt_submit(g->ckpt, g->ck_fds, nfds) != WL_OK) {
		g->ck_failed = true;
		g->ck = CK_OPEN;
		return;
	}
	g->ck = CK_WRITING;
}

static void
ckpt_done(void *arg, uint64_t id, bool ok)
{
	engine *g = arg;

	g->ck = CK_OPEN;
	g->ck_failed = !ok;
	if (!ok)
		return;
	/* Only now may sources forget what the checkpoint covers, and
	 * connector sinks make its outputs visible. */
	wl_flow_durable(g->flow, id);
	for (size_t i = 0; i < g->t->nsources; i++)
		if (g->csources[i] != NULL)
			wl_csource_durable(g->csources[i], id);
}

/* Advances the cycle; from the prepare watcher and the cron. */
static void
ckpt_step(engine *g, bool cron)
{
	switch (g->ck) {
	case CK_OFF:
	case CK_WRITING:
		return;
	case CK_OPEN:
		/* Draining (end of input, SIGTERM) checkpoints at once, so
		 * that connectors get their final Acks and the engine can stop
		 * with everything durable. A failed one is retried at the
		 * interval, not in a loop. */
		if (!cron || g->state < ENG_RUNNING || g->state > ENG_DRAINING ||
		    !ckpt_needed(g))
			return;
		if (wl_clock_now() - g->ck_last_cut >= g->ck_interval ||
		    (g->state == ENG_DRAINING && !g->ck_failed &&
		    wl_flow_pending_events(g->flow) == 0))
			ckpt_cut(g);
		return;
	case CK_CLOSING:
		if (wl_flow_epoch_complete(g->flow))
			ckpt_close(g);
		return;
	}
}

/* True when checkpoints are off or the last durable one covers all. */
static bool
ckpt_settled(const engine *g)
{
	return g->ck == CK_OFF || (g->ck == CK_OPEN && !ckpt_needed(g));
}

/* Recovery callbacks (wl_ckpt_restore). */
static wl_err
rec_state(void *arg, const char *step, const uint8_t *key, uint32_t klen,
    const uint8_t *value, uint32_t vlen, bool present)
{
	engine *g = arg;

	g->ck_restored++;
	return wl_flow_restore_state(g->flow, step, key, klen, value, vlen,
	    present);
}

static int
source_index(const engine *g, const char *name)
{
	for (size_t i = 0; i < g->t->nsources; i++)
		if (strcmp(g->t->sources[i].name, name) == 0)
			return (int)i;
	return -1;
}

static wl_err
rec_source(void *arg, const char *source, const char *stream,
    uint64_t position, uint64_t offset)
{
	engine *g = arg;
	int i = source_index(g, source);

	if (i < 0) {
		/* A source taken out of the topology loses nothing here. */
		wl_log("CKPT-WARN", "the checkpoint has a position for source "
		    "'%s', which the topology no longer has; ignored", source);
		return WL_OK;
	}
	if (g->csources[i] != NULL)
		return wl_csource_restore(g->csources[i], stream, position);
	if (g->t->sources[i].type == WL_IO_FILE)
		wl_source_seek(g->sources[i], offset, position);
	return WL_OK;
}

static wl_err
rec_sink(void *arg, const char *sink, const wl_sink_commit *c)
{
	engine *g = arg;

	for (size_t i = 0; i < g->t->nsinks; i++) {
		if (strcmp(g->t->sinks[i].name, sink) != 0)
			continue;
		if (g->t->sinks[i].type == WL_IO_FILE)
			g->sink_rec[i] = *c;
		return WL_OK;
	}
	wl_log("CKPT-WARN", "the checkpoint has a length for sink '%s', which "
	    "the topology no longer has; ignored", sink);
	return WL_OK;
}

/* Opens the state dir's log and restores the last checkpoint into the
 * dataflow and the sources, before anything starts. */
static int
ckpt_recover(engine *g, const wl_engine_opts *o)
{
	static const wl_ckpt_restore cb = { rec_state, rec_source, rec_sink };
	char why[512];
	uint64_t last = 0;
	double t0 = wl_clock_now();

	g->ck_files = calloc(g->t->nsources ? g->t->nsources : 1,
	    sizeof(*g->ck_files));
	g->sink_rec = calloc(g->t->nsinks ? g->t->nsinks : 1,
	    sizeof(*g->sink_rec));
	g->ck_fds = calloc(3 * g->t->nsinks + 1, sizeof(*g->ck_fds));
	if (g->ck_files == NULL || g->sink_rec == NULL || g->ck_fds == NULL) {
		wl_log("ENGINE-FATAL", "out of memory");
		return WL_EXIT_FAILURE;
	}
	if (snprintf(g->stage_dir, sizeof(g->stage_dir), "%s/sinks",
	    o->state_dir) >= (int)sizeof(g->stage_dir)) {
		wl_log("ENGINE-FATAL", "--state-dir: the path is too long");
		return WL_EXIT_FAILURE;
	}
	if (wl_ckpt_open(&g->ckpt, g->loop, o->state_dir, ckpt_done, g) !=
	    WL_OK)
		return WL_EXIT_FAILURE;
	if (wl_ckpt_recover(g->ckpt, &cb, g, &last, why, sizeof(why)) !=
	    WL_OK) {
		wl_log("CKPT-CORRUPT", "cannot recover from %s: %s",
		    o->state_dir, why);
		return WL_EXIT_FAILURE;
	}
	/* A file sink the checkpoint never saw starts empty, as always; one
	 * it saw keeps its committed length. */
	if (last == 0)
		wl_log("CKPT-EMPTY", "no checkpoint in %s: starting empty",
		    o->state_dir);
	else
		wl_log("CKPT-RECOVER", "recovered checkpoint %llu from %s: %llu "
		    "state entries in %.1f ms", (unsigned long long)last,
		    o->state_dir, (unsigned long long)g->ck_restored,
		    (wl_clock_now() - t0) * 1e3);
	if (last != 0 && wl_ckpt_partitions(g->ckpt) != g->t->partitions)
		wl_log("CKPT-WARN", "checkpoint %llu was taken with %u partitions, "
		    "the topology has %u: state is kept by key, so it carries "
		    "over; keys route to other runner instances from now on",
		    (unsigned long long)last, wl_ckpt_partitions(g->ckpt),
		    g->t->partitions);
	wl_flow_restored(g->flow);
	wl_flow_checkpoints_on(g->flow, last + 1, wl_ckpt_history(g->ckpt));
	for (size_t i = 0; i < g->t->nsources; i++)
		if (g->csources[i] != NULL)
			wl_csource_checkpoints_on(g->csources[i], last);
	g->ck = CK_OPEN;
	g->ck_interval = o->checkpoint_interval > 0 ? o->checkpoint_interval :
	    1.0;
	g->ck_last_cut = wl_clock_now();
	return WL_EXIT_OK;
}

static void
advance(engine *g)
{
	check_connectors(g);
	if (g->fatal && g->state < ENG_STOPPING) {
		stop_sources(g);
		wl_flow_stop_runners(g->flow, 2.0);
		g->state = ENG_STOPPING;
	}
	switch (g->state) {
	case ENG_STARTING:
		break;
	case ENG_RUNNING:
		if (all_sources_ended(g)) {
			wl_log("ENGINE-DRAIN", "every source has ended; draining");
			g->state = ENG_DRAINING;
		}
		break;
	case ENG_DRAINING:
		if (wl_flow_drained(g->flow) && ckpt_settled(g) &&
		    connectors_ended(g)) {
			g->finished = wl_clock_now();
			wl_log("ENGINE-DRAINED", "everything accepted has been "
			    "processed; stopping runners");
			wl_flow_stop_runners(g->flow, 5.0);
			g->state = ENG_STOPPING;
		}
		break;
	case ENG_STOPPING:
		if (wl_flow_runners_stopped(g->flow)) {
			g->state = ENG_DONE;
			ev_break(g->loop, EVBREAK_ALL);
		}
		break;
	case ENG_DONE:
		break;
	}
}

static void
prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	engine *g = w->data;

	(void)loop;
	(void)revents;
	wl_flow_flush(g->flow);
	ckpt_step(g, false);
	for (size_t i = 0; i < g->t->nsources; i++)
		if (g->csources[i] != NULL)
			wl_csource_flush(g->csources[i]);
	if (g->state == ENG_RUNNING || g->state == ENG_DRAINING) {
		if (!wl_flow_pressure(g->flow))
			for (size_t i = 0; i < g->t->nsources; i++)
				if (g->sources[i] != NULL)
					wl_source_resume(g->sources[i]);
	}
	advance(g);
}

/*
 * The loop thread under SCHED_FIFO, as the topology's `priority` asks
 * (auto: when permitted). Why the engine too: the benchmark machine's
 * kernel keeps ready normal-class processes queued on a busy or halted
 * vCPU while the other idles (bench/RESULTS.md, "second session"), and the
 * engine is the one process no hedge covers: a wait of the loop holds up
 * every event in flight. SCHED_RESET_ON_FORK: the runners it starts, and
 * the threads nng starts later, start normal. The cost, measured: a
 * real-time process is woken on the CPU it last ran on, so the engine and
 * a real-time runner wake each other across vCPUs, and waking a halted
 * vCPU costs tens of microseconds on that machine (docs/design.md,
 * "Real-time priority").
 */
static void
engine_priority(engine *g)
{
	if (!wl_prio_wanted(g->t->priority))
		return;
	if (wl_prio_self_realtime() != WL_OK) {
		wl_log("SUP-PRIORITY", "engine: cannot run at real-time priority: "
		    "%s (it needs root, CAP_SYS_NICE or an RLIMIT_RTPRIO of 1 "
		    "or more); runs at normal priority", strerror(errno));
		return;
	}
	g->rt = true;
	wl_prio_watch_start_ns(&g->rt_watch, wl_prio_self_cpu_ns(),
	    wl_clock_now());
}

/* The runners' rule applied to the loop thread: busy for a whole window,
 * it would starve the machine's normal processes on its CPU (the
 * generator of a benchmark, the operator's shell), so it goes back to
 * normal for good. */
static void
watch_own_priority(engine *g, double now)
{
	double share = 0.0;

	if (wl_prio_watch_check_ns(&g->rt_watch, wl_prio_self_cpu_ns(), now,
	    &share) != WL_PRIO_BUSY)
		return;
	g->rt = false;
	if (wl_prio_self_normal() != WL_OK) {
		wl_log("SUP-PRIORITY", "engine used %.0f%% of a CPU over %.1f s "
		    "and cannot go back to normal priority: %s", share * 100.0,
		    WL_PRIO_WINDOW_S, strerror(errno));
		return;
	}
	wl_log("SUP-PRIORITY", "engine used %.0f%% of a CPU over %.1f s: back "
	    "to normal priority for good, so that it cannot starve the "
	    "machine", share * 100.0, WL_PRIO_WINDOW_S);
}

static void
cron_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	engine *g = w->data;

	(void)revents;
	if (g->rt)
		watch_own_priority(g, wl_clock_now());
	wl_flow_tick(g->flow, wl_clock_now());
	ckpt_step(g, true);
	for (size_t i = 0; i < g->t->nsources; i++)
		if (g->csources[i] != NULL)
			wl_csource_tick(g->csources[i], wl_clock_now());
}

static void
signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	engine *g = w->data;

	(void)loop;
	(void)revents;
	if (g->state >= ENG_STOPPING)
		return;
	if (g->state == ENG_DRAINING && g->signalled) {
		/* The operator insists (a sink that cannot flush would make the
		 * drain last forever): stop now, and say what is abandoned. */
		wl_log("ENGINE-FORCE", "second signal %d while draining: stopping "
		    "now; %llu events queued or in flight and %llu bytes unwritten "
		    "by sinks are abandoned", w->signum,
		    (unsigned long long)wl_flow_pending_events(g->flow),
		    (unsigned long long)wl_flow_unwritten_bytes(g->flow));
		g->fatal = true;
		g->exit_code = WL_EXIT_FAILURE;
		return;
	}
	g->signalled = true;
	wl_log("ENGINE-SIGNAL", "signal %d: stopping sources and draining "
	    "(a second signal stops at once)", w->signum);
	stop_sources(g);
	if (g->state == ENG_STARTING) {
		/* Nothing was accepted yet: just stop. */
		g->finished = wl_clock_now();
		wl_flow_stop_runners(g->flow, 2.0);
		g->state = ENG_STOPPING;
	} else {
		g->state = ENG_DRAINING;
	}
}

static void
src_event(void *arg, int source, wl_event *e)
{
	engine *g = arg;

	wl_flow_source_event(g->flow, source, e);
}

static bool
src_pressure(void *arg)
{
	engine *g = arg;

	return wl_flow_pressure(g->flow);
}

static void
src_ended(void *arg, int source)
{
	engine *g = arg;

	(void)source;
	/* Sources waiting for this one (`after:`) may start now. */
	if (g->state == ENG_RUNNING)
		start_ready_sources(g);
}

static void
flow_ready(void *arg)
{
	engine *g = arg;

	if (g->state != ENG_STARTING)
		return;
	g->state = ENG_RUNNING;
	g->started = wl_clock_now();
	start_ready_sources(g);
	if (g->fatal)
		return;
	wl_log("READY", "application '%s' accepts work (%zu source(s), "
	    "%zu step(s), %zu sink(s))", g->t->application, g->t->nsources,
	    g->t->nsteps, g->t->nsinks);
}

static void
flow_fatal(void *arg, const char *why)
{
	engine *g = arg;

	wl_log("ENGINE-FATAL", "%s; stopping", why);
	g->fatal = true;
	g->exit_code = WL_EXIT_FAILURE;
}

static double
cpu_seconds(int who)
{
	struct rusage ru;

	if (getrusage(who, &ru) != 0)
		return 0;
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	    (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void
summary(engine *g)
{
	double el = (g->finished > 0 ? g->finished : wl_clock_now()) - g->started;
	uint64_t in = 0;

	if (g->started == 0)
		el = 0;
	for (size_t i = 0; i < g->t->nsources; i++)
		in += g->csources[i] ? wl_csource_events(g->csources[i]) :
		    wl_source_events(g->sources[i]);
	printf("SUMMARY application=%s elapsed_s=%.3f events_in=%llu "
	    "events_per_s=%.0f outputs=%llu errors=%llu restarts=%u\n",
	    g->t->application, el, (unsigned long long)in,
	    el > 0 ? (double)in / el : 0.0,
	    (unsigned long long)wl_flow_outputs(g->flow),
	    (unsigned long long)wl_flow_errors(g->flow),
	    wl_flow_restarts(g->flow));
	/* Runners are reaped by now, so RUSAGE_CHILDREN counts them all. */
	printf("SUMMARY cpu engine_s=%.3f runners_s=%.3f\n",
	    cpu_seconds(RUSAGE_SELF), cpu_seconds(RUSAGE_CHILDREN));
	for (size_t i = 0; i < g->t->nsources; i++) {
		const wl_csource *c = g->csources[i];
		if (c != NULL) {
			printf("SUMMARY source=%s events=%llu bytes=%llu "
			    "errors=%llu duplicates=%llu\n",
			    g->t->sources[i].name,
			    (unsigned long long)wl_csource_events(c),
			    (unsigned long long)wl_csource_bytes(c),
			    (unsigned long long)wl_csource_errors(c),
			    (unsigned long long)wl_csource_duplicates(c));
			continue;
		}
		printf("SUMMARY source=%s events=%llu bytes=%llu errors=%llu "
		    "pauses=%llu\n",
		    wl_source_name(g->sources[i]),
		    (unsigned long long)wl_source_events(g->sources[i]),
		    (unsigned long long)wl_source_bytes(g->sources[i]),
		    (unsigned long long)wl_source_errors(g->sources[i]),
		    (unsigned long long)wl_source_pauses(g->sources[i]));
	}
	wl_flow_summary(g->flow, stdout);
	if (g->ckpt != NULL)
		printf("SUMMARY checkpoints=%llu failed=%llu last=%llu "
		    "align_ms_total=%.1f align_ms_max=%.1f\n",
		    (unsigned long long)wl_ckpt_count(g->ckpt),
		    (unsigned long long)wl_ckpt_failures(g->ckpt),
		    (unsigned long long)(g->ck_failed ? 0 : g->ck_id),
		    g->ck_align_sum * 1e3, g->ck_align_max * 1e3);
	fflush(stdout);
}

static void
remove_sockdir(const char *dir)
{
	/* The ipc sockets are removed by nng on close; only the directory
	 * remains. */
	if (dir[0] != '\0' && rmdir(dir) != 0 && errno != ENOENT)
		wl_log("ENGINE-WARN", "cannot remove %s: %s", dir,
		    strerror(errno));
}

/*
 * Says once, at start, which class the programs left to `priority: auto`
 * will run in, so that an operator who finds them under SCHED_FIFO (or
 * wonders why they are not) reads why here, not once per process.
 */
static void
say_priority(const wl_topology *t)
{
	char names[256];
	size_t len = 0, n = 0;

	names[0] = '\0';
	for (size_t i = 0; i < t->nprograms; i++) {
		if (t->programs[i].priority != WL_PRIORITY_AUTO)
			continue;
		if (len < sizeof(names))
			len += (size_t)snprintf(names + len, sizeof(names) - len,
			    "%s'%s'", n ? ", " : "", t->programs[i].name);
		n++;
	}
	if (t->priority == WL_PRIORITY_AUTO && wl_prio_permitted())
		wl_log("SUP-PRIORITY", "engine: real-time priority while not "
		    "busy (priority: auto at the top level, and this engine may "
		    "take it; priority: normal turns it off)");
	else if (t->priority == WL_PRIORITY_AUTO)
		wl_log("SUP-PRIORITY", "engine: normal priority (priority: auto "
		    "at the top level, and this engine may not take real-time "
		    "priority: that needs root, CAP_SYS_NICE or an "
		    "RLIMIT_RTPRIO of 1 or more)");
	if (n == 0)
		return;
	if (wl_prio_permitted())
		wl_log("SUP-PRIORITY", "program(s) %s: real-time priority once "
		    "ready, while not busy (priority: auto, and this engine "
		    "may give it; priority: normal turns it off)", names);
	else
		wl_log("SUP-PRIORITY", "program(s) %s: normal priority "
		    "(priority: auto, and this engine may not give real-time "
		    "priority: that needs root, CAP_SYS_NICE or an "
		    "RLIMIT_RTPRIO of 1 or more)", names);
}

int
wl_engine_run(const wl_topology *t, const wl_engine_opts *o)
{
	static const wl_source_hooks shooks = { src_event, src_pressure,
	    src_ended };
	static const wl_flow_hooks fhooks = { flow_ready, flow_fatal };
	engine g;
	const char *tmp = getenv("TMPDIR");
	uint64_t incarnation;
	struct timespec ts;
	int rc;

	memset(&g, 0, sizeof(g));
	g.t = t;
	/* An accepted connector must present the token the operator put in
	 * the engine's environment: check them all before anything starts. */
	for (int pass = 0; pass < 2; pass++) {
		const wl_io *ios = pass == 0 ? t->sources : t->sinks;
		size_t n = pass == 0 ? t->nsources : t->nsinks;
		for (size_t i = 0; i < n; i++) {
			const char *v;
			if (ios[i].token_env == NULL)
				continue;
			v = getenv(ios[i].token_env);
			if (v == NULL || v[0] == '\0' || strlen(v) > WL_TOKEN_MAX) {
				wl_log("ENGINE-FATAL", "%s '%s': the environment "
				    "variable %s (token_env) must hold the token "
				    "its connector presents, 1 to %d characters; "
				    "it is %s", pass == 0 ? "source" : "sink",
				    ios[i].name, ios[i].token_env, WL_TOKEN_MAX,
				    v == NULL ? "not set" : v[0] == '\0' ?
				    "empty" : "too long");
				return WL_EXIT_CONFIG;
			}
		}
	}
	g.exit_code = WL_EXIT_OK;
	g.loop = ev_default_loop(EVFLAG_AUTO);
	if (g.loop == NULL) {
		wl_log("ENGINE-FATAL", "cannot create the event loop");
		return WL_EXIT_FAILURE;
	}
	signal(SIGPIPE, SIG_IGN);
	if (o->state_dir != NULL && mkdir(o->state_dir, 0700) != 0 &&
	    errno != EEXIST) {
		wl_log("ENGINE-FATAL", "cannot create state dir %s: %s",
		    o->state_dir, strerror(errno));
		return WL_EXIT_FAILURE;
	}
	/* A private directory for the runners' sockets: mode 0700 keeps other
	 * users from even seeing them. */
	snprintf(g.sockdir, sizeof(g.sockdir), "%s/wl-XXXXXX",
	    tmp && tmp[0] && strlen(tmp) < 80 ? tmp : "/tmp");
	if (mkdtemp(g.sockdir) == NULL) {
		wl_log("ENGINE-FATAL", "cannot create a socket directory %s: %s",
		    g.sockdir, strerror(errno));
		return WL_EXIT_FAILURE;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	incarnation = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	if (wl_flow_new(&g.flow, g.loop, t, g.sockdir, o->name, incarnation,
	    &fhooks, &g) != WL_OK) {
		wl_log("ENGINE-FATAL", "cannot build the dataflow");
		remove_sockdir(g.sockdir);
		return WL_EXIT_FAILURE;
	}
	g.sources = calloc(t->nsources ? t->nsources : 1, sizeof(*g.sources));
	g.csources = calloc(t->nsources ? t->nsources : 1, sizeof(*g.csources));
	if (g.sources == NULL || g.csources == NULL) {
		wl_log("ENGINE-FATAL", "out of memory");
		return WL_EXIT_FAILURE;
	}
	for (size_t i = 0; i < t->nsources; i++) {
		if (t->sources[i].type == WL_IO_CONNECTOR) {
			wl_csource_config cc = {
				.def = &t->sources[i],
				.index = (int)i,
				.t = t,
				.sockdir = g.sockdir,
				.worker = o->name,
				.incarnation = incarnation,
				.token = t->sources[i].token_env ?
				    getenv(t->sources[i].token_env) : NULL,
				.credits = t->limits.source_credits,
			};
			if (wl_csource_new(&g.csources[i], g.loop, &cc, &shooks,
			    &g) != WL_OK) {
				wl_log("ENGINE-FATAL", "out of memory");
				return WL_EXIT_FAILURE;
			}
			continue;
		}
		if (wl_source_new(&g.sources[i], g.loop, &t->sources[i], (int)i,
		    &shooks, &g) != WL_OK) {
			wl_log("ENGINE-FATAL", "out of memory");
			return WL_EXIT_FAILURE;
		}
	}
	g.incarnation = incarnation;
	if (o->state_dir != NULL && (rc = ckpt_recover(&g, o)) != WL_EXIT_OK)
		goto early_exit;
	if (wl_flow_open_sinks(g.flow, g.ckpt ? g.stage_dir : NULL,
	    g.sink_rec) != WL_OK) {
		wl_log("ENGINE-FATAL", "a sink cannot be opened");
		rc = WL_EXIT_FAILURE;
		goto early_exit;
	}
	ev_prepare_init(&g.prep, prepare_cb);
	ev_timer_init(&g.cron, cron_cb, 0.05, 0.05);
	ev_signal_init(&g.sigterm, signal_cb, SIGTERM);
	ev_signal_init(&g.sigint, signal_cb, SIGINT);
	g.prep.data = g.cron.data = g.sigterm.data = g.sigint.data = &g;
	ev_prepare_start(g.loop, &g.prep);
	ev_timer_start(g.loop, &g.cron);
	ev_signal_start(g.loop, &g.sigterm);
	ev_signal_start(g.loop, &g.sigint);
	wl_log("ENGINE-START", "application '%s' from %s: %zu program(s), "
	    "%u partitions", t->application, t->file, t->nprograms,
	    t->partitions);
	say_priority(t);
	engine_priority(&g);
	wl_flow_start(g.flow);
	ev_run(g.loop, 0);

	if (!g.fatal)
		summary(&g);
	rc = g.exit_code;
early_exit:
	/* The writer first (it may be syncing sink files), then the
	 * dataflow: its events may hold origins of the sources. */
	wl_ckpt_free(g.ckpt);
	wl_flow_free(g.flow);
	wl_event_pool_drain();
	wl_frame_arenas_drain();
	for (size_t i = 0; i < t->nsources; i++) {
		wl_source_free(g.sources[i]);
		wl_csource_free(g.csources[i]);
	}
	free(g.sources);
	free(g.csources);
	free(g.ck_files);
	free(g.sink_rec);
	free(g.ck_fds);
	/* Runner sockets close on their own threads (see wl_link_close);
	 * let them finish before their addresses go. */
	int stuck = wl_link_quiesce(2.0);
	if (stuck > 0)
		wl_log("LINK-STUCK", "%d runner socket(s) still closing at exit "
		    "(an nng close that does not return); exiting anyway", stuck);

	remove_sockdir(g.sockdir);
	ev_prepare_stop(g.loop, &g.prep);
	ev_timer_stop(g.loop, &g.cron);
	ev_signal_stop(g.loop, &g.sigterm);
	ev_signal_stop(g.loop, &g.sigint);
	wl_log("ENGINE-EXIT", "exit code %d", rc);
	return rc;
}
