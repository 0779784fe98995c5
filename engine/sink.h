/*
 * sink.h -- built-in sinks: a file, or a TCP connection to a receiver.
 * Both write each output payload framed as the topology says (u32
 * big-endian length + payload, or payload + '\n').
 */
#ifndef WL_SINK_H
#define WL_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <ev.h>

#include "err.h"
#include "event.h"
#include "topology.h"

typedef struct wl_sink wl_sink;

/* A file sink's part of a checkpoint (and, recovered, what the file must
 * be brought to). With checkpoints on, outputs are not written to the file
 * but to a stage file (`DIR/NAME@SEQ`); a checkpoint seals the stage, and
 * once it is durable the stage's bytes are copied to the end of the file.
 * So the file only ever holds committed output: a reader never sees bytes
 * that a crash takes back. */
typedef struct {
	bool seen;           /* recovery: the checkpoint has a record of it */
	uint64_t committed;  /* the file's length with this checkpoint's output */
	uint64_t seq;        /* the stage file not yet (surely) in the file; 0 none */
	uint64_t dest;       /* where its first `len` bytes go in the file */
	uint64_t len;
} wl_sink_commit;

/* Opens the sink described by `def` (which must outlive it): creates or
 * truncates the file (and its directory), or starts connecting.
 * `stage_dir` (NULL: write through) makes a file sink staged, its stage
 * files in that directory (created if missing). `rec` (staged only; NULL
 * or !seen: start empty) is the recovered checkpoint's record: the file is
 * cut back to what was committed before the record's stage, the stage is
 * copied after it and synced, and every other stage file of the sink is
 * removed. A file or stage shorter than the record says is an error. */
wl_err wl_sink_open(wl_sink **out, struct ev_loop *loop, const wl_io *def,
    const char *stage_dir, const wl_sink_commit *rec);

/* True for a file sink opened with a stage dir. */
bool wl_sink_staged(const wl_sink *s);

/* Checkpoint time (staged sinks; everything accepted must be written, see
 * wl_sink_backlog): seals the current stage and fills `c`; appends to
 * `fds` (room for 3) the descriptors the checkpoint must fsync before it
 * counts. WL_ERR_IO (logged) when the stage cannot be sealed: that
 * checkpoint must fail; the bytes stay staged for the next one. */
wl_err wl_sink_seal(wl_sink *s, wl_sink_commit *c, int *fds, size_t *nfds);

/* The last sealed checkpoint is durable: its stage goes into the file
 * (a failure is logged and retried at the next one: the stage is durable,
 * and recovery would copy it as well). */
void wl_sink_durable(wl_sink *s);

/* Appends the framed payload of `e` to the sink's buffer. Takes `e`. */
void wl_sink_write(wl_sink *s, wl_event *e);

/* Pushes buffered bytes out as far as possible without blocking the loop
 * (files are written through; TCP writes when the socket has room). */
void wl_sink_flush(wl_sink *s);

/* Bytes accepted but not yet written. */
size_t wl_sink_backlog(const wl_sink *s);

uint64_t wl_sink_events(const wl_sink *s);
uint64_t wl_sink_bytes(const wl_sink *s);
const char *wl_sink_name(const wl_sink *s);

/* Flushes what it can and closes; accepts NULL. A staged sink syncs the
 * file and removes the stage it last copied there; a stage not copied yet
 * is left for recovery. */
void wl_sink_close(wl_sink *s);

#endif
