/*
 * source.h -- built-in sources: a file (bounded) or a TCP listener
 * (unbounded), framed by a big-endian u32 length or by lines.
 *
 * A source reads only while the dataflow has room: after each chunk it
 * asks the `pressure` hook and pauses when told to; the engine resumes it
 * when the queues have drained. Nothing is ever dropped to make room.
 */
#ifndef WL_SOURCE_H
#define WL_SOURCE_H

#include <stdbool.h>
#include <stdint.h>
#include <ev.h>

#include "err.h"
#include "event.h"
#include "topology.h"

typedef struct wl_source wl_source;

typedef struct {
	/* An event was read; the hook takes `e`. */
	void (*event)(void *arg, int source, wl_event *e);
	/* True while the dataflow is full: the source pauses. */
	bool (*pressure)(void *arg);
	/* The source has ended (end of file, error, or stopped). */
	void (*ended)(void *arg, int source);
} wl_source_hooks;

/* Prepares source number `index` of the topology (`def` must outlive it).
 * Opens nothing yet. */
wl_err wl_source_new(wl_source **out, struct ev_loop *loop, const wl_io *def,
    int index, const wl_source_hooks *hooks, void *arg);

/* Opens the file or starts listening. A file that cannot be opened or an
 * address that cannot be bound is an error (logged). */
wl_err wl_source_start(wl_source *s);

/* Recovery, before wl_source_start: a file source starts reading at byte
 * `offset`, numbering messages after `last_id`. */
void wl_source_seek(wl_source *s, uint64_t offset, uint64_t last_id);
/* A file source's position: the offset after the last event it emitted
 * and that event's id (what a checkpoint records). False for TCP. */
bool wl_source_position(const wl_source *s, uint64_t *offset,
    uint64_t *last_id);

/* Reads again after a pause. */
void wl_source_resume(wl_source *s);

/* True when paused by back pressure. */
bool wl_source_paused(const wl_source *s);

/* Stops reading for good (SIGTERM): closes the listener and connections.
 * The source then counts as ended. */
void wl_source_stop(wl_source *s);

bool wl_source_started(const wl_source *s);
bool wl_source_ended(const wl_source *s);
const char *wl_source_name(const wl_source *s);
uint64_t wl_source_events(const wl_source *s);
uint64_t wl_source_bytes(const wl_source *s);
uint64_t wl_source_errors(const wl_source *s);

/* Times back pressure paused the source. */
uint64_t wl_source_pauses(const wl_source *s);

/* The bound TCP port (useful with port 0), or 0. */
uint16_t wl_source_port(const wl_source *s);

/* Frees; accepts NULL. */
void wl_source_free(wl_source *s);

#endif
