/*
 * csource.h -- a source connector: events from a program speaking the
 * connector protocol (protocol/README.md, section 6.2).
 *
 * One csource per topology source of type `connector`. It owns one slot
 * per connection (a spawned instance, or the accepted address), the
 * streams opened on them, their positions and their credits. Events go to
 * the dataflow through the same hooks as a built-in source; each carries a
 * reference to its stream position, so the csource acknowledges a message
 * only when everything it caused is done.
 */
#ifndef WL_CSOURCE_H
#define WL_CSOURCE_H

#include <stdbool.h>
#include <stdint.h>
#include <ev.h>

#include "ckptlog.h"
#include "err.h"
#include "source.h"
#include "topology.h"

typedef struct wl_csource wl_csource;

typedef struct {
	const wl_io *def;           /* type WL_IO_CONNECTOR */
	int index;                  /* the source's index, passed to hooks */
	const wl_topology *t;
	const char *sockdir;
	const char *worker;
	uint64_t incarnation;
	const char *token;          /* accepted connectors: expected token */
	uint64_t credits;           /* events in the engine per connection */
} wl_csource_config;

/* Creates the source; nothing starts until wl_csource_start. The config's
 * pointers must outlive it. Hooks as for built-in sources: `event` takes
 * the event, `pressure` holds credits back, `ended` when every connection
 * has finished. */
wl_err wl_csource_new(wl_csource **out, struct ev_loop *loop,
    const wl_csource_config *cfg, const wl_source_hooks *hooks, void *arg);

/* Spawns the programs or starts listening. */
wl_err wl_csource_start(wl_csource *s);

/* From the engine's ev_prepare: sends Acks, Credits and StreamEnded for
 * what became done, and says Goodbye when stopping and drained. */
void wl_csource_flush(wl_csource *s);

/* From the engine's cron: heartbeats and hang detection. */
void wl_csource_tick(wl_csource *s, ev_tstamp now);

/* Stops granting credits; once every accepted event is done and
 * acknowledged the connections are told Goodbye (wl_csource_flush). */
void wl_csource_stop(wl_csource *s);

bool wl_csource_started(const wl_csource *s);

/* True when a connection gave up for good (the program fails before its
 * handshake every time, or the address cannot be listened on). */
bool wl_csource_failed(const wl_csource *s);

/* True when every connection has finished (Goodbye and exit 0), or the
 * source was stopped and every connection is closed. */
bool wl_csource_ended(const wl_csource *s);

/* Events accepted, their payload bytes, duplicates dropped, connections
 * dropped for a protocol violation, connector restarts. */
uint64_t wl_csource_events(const wl_csource *s);
uint64_t wl_csource_bytes(const wl_csource *s);
uint64_t wl_csource_duplicates(const wl_csource *s);
uint64_t wl_csource_errors(const wl_csource *s);

/* Events accepted and not yet done, over every stream. */
uint64_t wl_csource_pending(const wl_csource *s);

/*
 * Checkpoints. After wl_csource_checkpoints_on a stream's Ack (and
 * StreamEnded) goes only up to the position of the last durable
 * checkpoint. wl_csource_restore (recovery, before start) makes a stream
 * known at `position`: its OpenStream resumes after it whatever the hint.
 * wl_csource_mark takes every stream's accepted position at a cut;
 * wl_csource_record appends them to `b` as SOURCE records; and
 * wl_csource_durable says checkpoint `id`, holding them, is on disk (Acks
 * then name it in checkpoint_id).
 */
void wl_csource_checkpoints_on(wl_csource *s, uint64_t recovered_id);
wl_err wl_csource_restore(wl_csource *s, const char *stream,
    uint64_t position);
void wl_csource_mark(wl_csource *s);
void wl_csource_record(const wl_csource *s, wl_ckbuf *b);
void wl_csource_durable(wl_csource *s, uint64_t id);

/* Kills the connectors and frees everything; accepts NULL. Positions
 * still referenced by events are freed when those events are. */
void wl_csource_free(wl_csource *s);

#endif
