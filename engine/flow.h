/*
 * flow.h -- the dataflow: routes events through the topology's steps to
 * its sinks, holds keyed state, batches events for runners, applies their
 * replies, and recovers what a lost runner had in flight.
 *
 * Routing: an event's key picks a partition (wl_hash_partition); the
 * partition picks the runner instance of the step's program (partition mod
 * instances). An unkeyed event is routed by its origin stream instead, so
 * a source's order holds until the first key_by.
 *
 * Per-key order and atomic state: a key of a state step is never in two
 * in-flight batches; its events wait while it is. A reply is checked whole
 * before anything of it is applied.
 */
#ifndef WL_FLOW_H
#define WL_FLOW_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <ev.h>

#include "err.h"
#include "event.h"
#include "ckptlog.h"
#include "hist.h"
#include "sink.h"
#include "topology.h"

typedef struct wl_flow wl_flow;

typedef struct {
	/* Every runner has become ready at least once. */
	void (*ready)(void *arg);
	/* A runner slot gave up: the application cannot run. */
	void (*fatal)(void *arg, const char *why);
} wl_flow_hooks;

/* Builds the dataflow for `t` (which must outlive it); connector sinks
 * start. Runners are created but not started. */
wl_err wl_flow_new(wl_flow **out, struct ev_loop *loop, const wl_topology *t,
    const char *sockdir, const char *worker, uint64_t incarnation,
    const wl_flow_hooks *hooks, void *arg);

/* Opens the built-in sinks (before wl_flow_start). `stage_dir` (NULL:
 * checkpoints off) makes file sinks staged (sink.h); `recs` (NULL: none
 * recovered) gives per sink the recovered checkpoint's record.
 * WL_ERR_IO when one cannot be opened (logged). */
wl_err wl_flow_open_sinks(wl_flow *f, const char *stage_dir,
    const wl_sink_commit *recs);

/* Spawns the runners (calls the ready hook at once when there are none). */
void wl_flow_start(wl_flow *f);

/* An event from source number `source`. Takes `e`. */
void wl_flow_source_event(wl_flow *f, int source, wl_event *e);

/* Sends what can be sent: batches to ready runners within their window,
 * and sink buffers. Called before the loop blocks. */
void wl_flow_flush(wl_flow *f);

/* Housekeeping from the cron timer. */
void wl_flow_tick(wl_flow *f, ev_tstamp now);

/* True while some queue is over its byte limit: sources must pause. */
bool wl_flow_pressure(const wl_flow *f);

/* Events queued or in flight, and bytes not yet written by sinks. */
uint64_t wl_flow_pending_events(const wl_flow *f);
uint64_t wl_flow_unwritten_bytes(const wl_flow *f);

/* True when nothing is queued, in flight or unwritten. */
bool wl_flow_drained(const wl_flow *f);

/* Says goodbye to every runner; `grace` seconds before they are killed. */
void wl_flow_stop_runners(wl_flow *f, ev_tstamp grace);

/* True when every runner process has exited. */
bool wl_flow_runners_stopped(const wl_flow *f);

/* Prints SUMMARY lines for steps and sinks. */
void wl_flow_summary(const wl_flow *f, FILE *out);

/* Totals for the engine's summary line. */
uint64_t wl_flow_outputs(const wl_flow *f);
uint64_t wl_flow_errors(const wl_flow *f);
uint32_t wl_flow_restarts(const wl_flow *f);

/*
 * Checkpoint epochs (docs/design.md, "Checkpoints"). After
 * wl_flow_checkpoints_on, every source event is tagged with the current
 * epoch, whose id starts at `first_id`. wl_flow_cut makes it the closing
 * epoch and opens the next (returns the closing id; only when none is
 * closing). While one closes, events of the next wait before state steps
 * and sinks. wl_flow_epoch_complete says when nothing of the closing
 * epoch is left (and built-in sinks have written its bytes);
 * wl_flow_close_epoch then appends its STATE records (every entry when
 * `full`, else those changed) and seals every file sink's stage (a
 * SINK_STAGED record each), puts the descriptors to fsync in `fds` (room
 * for three per sink), and lets the waiting events go. WL_ERR_IO when a
 * sink could not seal (logged): the checkpoint must not count.
 */
/* `hist` (its entries must outlive the flow): the recovered log's
 * checkpoints, for 2PC sinks' in-doubt epochs. */
void wl_flow_checkpoints_on(wl_flow *f, uint64_t first_id, wl_ckhist hist);
uint64_t wl_flow_cut(wl_flow *f);
/* Checkpoint `id` is durable: file sinks copy its stage to their file,
 * connector sinks commit up to it. */
void wl_flow_durable(wl_flow *f, uint64_t id);
/* Events tagged with the current epoch since the last cut. */
uint64_t wl_flow_epoch_events(const wl_flow *f);
bool wl_flow_epoch_complete(wl_flow *f);
/* Events of the closing epoch still in the dataflow (0: none closing). */
uint64_t wl_flow_closing_live(const wl_flow *f);
wl_err wl_flow_close_epoch(wl_flow *f, wl_ckbuf *b, bool full, int *fds,
    size_t *nfds);

/* Recovery: sets the state of `key` in the state step named `step` (or
 * removes it when !present). WL_ERR_CONFIG: no such state step. Call
 * wl_flow_restored once everything is restored. */
wl_err wl_flow_restore_state(wl_flow *f, const char *step, const void *key,
    uint32_t klen, const void *value, uint32_t vlen, bool present);
void wl_flow_restored(wl_flow *f);

/* Closes sinks, kills runners, frees everything; accepts NULL. */
void wl_flow_free(wl_flow *f);

/* The "ingest to done" latency histogram of source `source` (ns), or NULL
 * for a source that does not exist. Owned by the flow. */
const wl_hist *wl_flow_latency(const wl_flow *f, size_t source);

#endif
