/*
 * position.h -- which messages of a source stream are fully processed.
 *
 * Every event a tracked source produces holds a reference to its origin
 * (the source message it came from); events derived from it (outputs,
 * re-keyed copies, fan-out copies) take references too, and freeing an
 * event drops its reference. When the last reference goes, the message is
 * done: every effect it had has happened (written to a sink, filtered, or
 * failed and logged). A stream's position is the highest message id such
 * that it and every earlier message are done: the position a source may be
 * told is processed (acknowledged), whatever order the keys finish in.
 */
#ifndef WL_POSITION_H
#define WL_POSITION_H

#include <stdint.h>

#include "err.h"

typedef struct wl_stream_pos wl_stream_pos;
typedef struct wl_origin wl_origin;

/* A new stream whose position is `start` (messages up to it are done).
 * Free with wl_stream_pos_free. */
wl_err wl_stream_pos_new(wl_stream_pos **out, uint64_t start);

/*
 * Starts tracking message `id`, which must be greater than every id
 * tracked before on this stream. Returns its origin holding one reference
 * (the caller's, usually handed to the event), or NULL when out of memory.
 */
wl_origin *wl_stream_pos_track(wl_stream_pos *s, uint64_t id);

/* Takes one more reference; accepts NULL. */
void wl_origin_ref(wl_origin *o);

/* Drops one reference; the last one makes the message done and may
 * advance its stream's position. Accepts NULL. */
void wl_origin_unref(wl_origin *o);

/* The highest id such that it and all earlier tracked ids are done. */
uint64_t wl_stream_pos_done(const wl_stream_pos *s);

/* The highest id tracked so far (or the start). */
uint64_t wl_stream_pos_last(const wl_stream_pos *s);

/* Messages tracked and not yet done. */
uint64_t wl_stream_pos_pending(const wl_stream_pos *s);

/*
 * Frees the stream once nothing references its origins any more; if some
 * still do, the stream is freed when the last of them is dropped. Accepts
 * NULL.
 */
void wl_stream_pos_free(wl_stream_pos *s);

#endif
