/*
 * checkpoint.h -- the checkpoint log of a state dir: recovery from it, and
 * a writer thread that makes checkpoints durable without blocking the
 * loop.
 *
 * A checkpoint is a run of records (ckptlog.h) from BEGIN to COMMIT: the
 * state entries changed since the previous checkpoint (or all of them in
 * a full one), every source stream's position and every file sink's
 * committed length. It counts only once its COMMIT is on disk. The log is
 * `DIR/checkpoints.log`; a full checkpoint is written to a new file that
 * replaces it (compaction), so recovery reads at most one full checkpoint
 * and the increments after it.
 */
#ifndef WL_CHECKPOINT_H
#define WL_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <ev.h>

#include "ckptlog.h"
#include "err.h"
#include "sink.h"

typedef struct wl_ckpt wl_ckpt;

/* What recovery hands back, in log order; a later value replaces an
 * earlier one. Strings are NUL-terminated copies valid during the call. */
typedef struct {
	wl_err (*state)(void *arg, const char *step, const uint8_t *key,
	    uint32_t klen, const uint8_t *value, uint32_t vlen, bool present);
	wl_err (*source)(void *arg, const char *source, const char *stream,
	    uint64_t position, uint64_t offset);
	wl_err (*sink)(void *arg, const char *sink, const wl_sink_commit *c);
} wl_ckpt_restore;

/* Called on the loop when a submitted checkpoint is durable (ok) or has
 * failed (logged as CKPT-FAIL; the previous one still stands). */
typedef void (*wl_ckpt_done_fn)(void *arg, uint64_t id, bool ok);

/* Opens the log of `dir` (which must exist) and starts the writer. Takes
 * `dir`/lock for as long as the wl_ckpt lives: WL_ERR_STATE (logged as
 * CKPT-FAIL, naming the holder's pid) when another engine holds it. */
wl_err wl_ckpt_open(wl_ckpt **out, struct ev_loop *loop, const char *dir,
    wl_ckpt_done_fn done, void *arg);

/*
 * Reads the log and replays the last complete full checkpoint and every
 * complete one after it through `r`. *last_id is the id of the last
 * complete checkpoint (0: none). A torn tail is cut off (logged); a
 * corrupt middle, a record of another format or a callback error fails
 * with the reason in `why`.
 */
wl_err wl_ckpt_recover(wl_ckpt *c, const wl_ckpt_restore *r, void *arg,
    uint64_t *last_id, char *why, size_t n);

/* The partition count the recovered checkpoint was taken with (0: none). */
uint32_t wl_ckpt_partitions(const wl_ckpt *c);

/* True when the next checkpoint must hold all the state: none was ever
 * written, the last one failed, or the log has grown enough to compact. */
bool wl_ckpt_want_full(const wl_ckpt *c);

/* Starts building checkpoint `id` (BEGIN written) in the buffer it
 * returns; the caller appends its records, then submits. `align_secs` is
 * how long the epoch took to close after its cut (for CKPT-DONE: it is
 * what the checkpoint costs the dataflow, the write happens beside it). */
wl_ckbuf *wl_ckpt_begin(wl_ckpt *c, uint64_t id, uint64_t incarnation,
    uint32_t partitions, bool full, double align_secs);

/* Hands the built checkpoint to the writer, which fsyncs `fds` (file sinks
 * holding its outputs) first, then writes it and fsyncs the log. Only one
 * at a time: WL_ERR_STATE while one is in flight. */
wl_err wl_ckpt_submit(wl_ckpt *c, const int *fds, size_t nfds);

/* The checkpoints the recovered log held (after wl_ckpt_recover; valid
 * while `c` lives): which incarnation wrote each, for 2PC sinks deciding
 * epochs an earlier engine left in doubt. */
wl_ckhist wl_ckpt_history(const wl_ckpt *c);

/* The checkpoint begun cannot be submitted (the caller says why): counted
 * as failed, and the next one is full (the dirty set went to this one). */
void wl_ckpt_abandon(wl_ckpt *c);

/* True while a checkpoint is being written. */
bool wl_ckpt_busy(const wl_ckpt *c);

/* Checkpoints made durable, failed; bytes and seconds of the last one. */
uint64_t wl_ckpt_count(const wl_ckpt *c);
uint64_t wl_ckpt_failures(const wl_ckpt *c);

/* Waits for the writer and frees; accepts NULL. */
void wl_ckpt_free(wl_ckpt *c);

#endif
