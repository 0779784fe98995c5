/*
 * csink.h -- a sink connector: outputs sent to a program speaking the
 * connector protocol (protocol/README.md, sections 6.3 and 6.4).
 *
 * The csink owns every output it was given until the connector has taken
 * it over (BatchReply; for a two-phase-commit sink, the commit of its
 * epoch). Only then is the output freed, which is what lets the source
 * messages it came from be acknowledged. A connection that goes away
 * loses nothing: what it had not taken over is sent again, in order, on
 * the next one.
 */
#ifndef WL_CSINK_H
#define WL_CSINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <ev.h>

#include "ckptlog.h"
#include "err.h"
#include "event.h"
#include "topology.h"

typedef struct wl_csink wl_csink;

typedef struct {
	const wl_io *def;           /* type WL_IO_CONNECTOR */
	const wl_topology *t;
	const char *sockdir;
	const char *worker;
	uint64_t incarnation;
	const char *token;          /* accepted connectors: expected token */
} wl_csink_config;

/* Creates the sink and starts its connector (spawned or listening). The
 * config's pointers must outlive it. */
wl_err wl_csink_new(wl_csink **out, struct ev_loop *loop,
    const wl_csink_config *cfg);

/* Takes `e` (an output for this sink). */
void wl_csink_write(wl_csink *s, wl_event *e);

/* From the engine's ev_prepare: sends batches while the window allows,
 * closes and prepares epochs of a 2PC sink. */
void wl_csink_flush(wl_csink *s, ev_tstamp now);

/* From the engine's cron. */
void wl_csink_tick(wl_csink *s, ev_tstamp now);

/* Events given and not yet taken over, and their payload bytes. */
uint64_t wl_csink_pending(const wl_csink *s);
size_t wl_csink_pending_bytes(const wl_csink *s);

/*
 * Checkpoints (csink.c, top). wl_csink_checkpoints_on: epochs follow the
 * checkpoints, and an in-doubt epoch of an earlier incarnation is
 * committed when `hist` (the recovered log; entries not owned, they must
 * outlive `s`) holds a checkpoint of that incarnation at or after the
 * epoch's (wl_ckhist_covers), or, for one older than the whole log or
 * listed with incarnation 0, when its checkpoint is at most
 * `recovered_id`. wl_csink_close_epoch:
 * every output of checkpoints <= `id` has been written here; prepare
 * them (outputs count as taken over at Prepared). wl_csink_durable:
 * checkpoint `id` is on disk; commit its epochs and the earlier ones.
 * wl_csink_unresolved: epochs prepared or committed and not yet resolved
 * (the engine must not stop before they are).
 */
void wl_csink_checkpoints_on(wl_csink *s, uint64_t recovered_id,
    wl_ckhist hist);
void wl_csink_close_epoch(wl_csink *s, uint64_t id);
void wl_csink_durable(wl_csink *s, uint64_t id);
uint64_t wl_csink_unresolved(const wl_csink *s);

/* Says Goodbye (call once nothing is pending); kills the process if it
 * has not exited after `grace` seconds. */
void wl_csink_stop(wl_csink *s, ev_tstamp grace);
bool wl_csink_stopped(const wl_csink *s);

/* True when a connection gave up for good (see wl_csource_failed). */
bool wl_csink_failed(const wl_csink *s);

const char *wl_csink_name(const wl_csink *s);
uint64_t wl_csink_events(const wl_csink *s);   /* taken over */
uint64_t wl_csink_bytes(const wl_csink *s);
uint64_t wl_csink_resent(const wl_csink *s);   /* events sent again */
uint32_t wl_csink_restarts(const wl_csink *s);

/* Frees everything; outputs not taken over are freed too (their source
 * messages stay unacknowledged). Accepts NULL. */
void wl_csink_free(wl_csink *s);

#endif
