/*
 * sink.h -- built-in sinks: a file, or a TCP connection to a receiver.
 * Both write each output payload framed as the topology says (u32
 * big-endian length + payload, or payload + '\n').
 */
#ifndef WL_SINK_H
#define WL_SINK_H

#include <stddef.h>
#include <stdint.h>
#include <ev.h>

#include "err.h"
#include "event.h"
#include "topology.h"

typedef struct wl_sink wl_sink;

/* Opens the sink described by `def` (which must outlive it): creates or
 * truncates the file (and its directory), or starts connecting. `keep` >=
 * 0 (recovery): the file keeps its first `keep` bytes and appends after
 * them; a file shorter than that is an error. */
wl_err wl_sink_open(wl_sink **out, struct ev_loop *loop, const wl_io *def,
    int64_t keep);

/* Appends the framed payload of `e` to the sink's buffer. Takes `e`. */
void wl_sink_write(wl_sink *s, wl_event *e);

/* Pushes buffered bytes out as far as possible without blocking the loop
 * (files are written through; TCP writes when the socket has room). */
void wl_sink_flush(wl_sink *s);

/* A file sink's length once everything accepted is written (kept bytes
 * included), and its descriptor (to fsync); -1 for a TCP sink. */
int64_t wl_sink_length(const wl_sink *s);
int wl_sink_fd(const wl_sink *s);

/* Bytes accepted but not yet written. */
size_t wl_sink_backlog(const wl_sink *s);

uint64_t wl_sink_events(const wl_sink *s);
uint64_t wl_sink_bytes(const wl_sink *s);
const char *wl_sink_name(const wl_sink *s);

/* Flushes what it can and closes; accepts NULL. */
void wl_sink_close(wl_sink *s);

#endif
