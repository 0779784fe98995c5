/*
 * ckptlog.h -- the checkpoint log's on-disk format: checksummed records
 * in an append-only file, and the scan that reads them back.
 *
 * A record is a 16-byte header and a payload (little-endian):
 *
 *   u32 magic "WLCK" | u16 format | u16 type | u32 payload length |
 *   u32 crc32c (of format, type, length and the payload) | payload
 *
 * This module knows records, not checkpoints: checkpoint.c decides what a
 * checkpoint is made of (BEGIN ... COMMIT) and which ones count. Here are
 * the rules that keep recovery from guessing: a record is valid only when
 * its header and checksum are; the scan stops at the first invalid one;
 * if nothing valid follows it, it is a torn tail (a crash during a write)
 * and is reported as such; if a valid record follows it, the file is
 * corrupt in the middle and the scan fails.
 */
#ifndef WL_CKPTLOG_H
#define WL_CKPTLOG_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define WL_CKPT_MAGIC 0x4B434C57u   /* "WLCK" read as little-endian u32 */
/* Format 2 added SINK_STAGED: an engine that reads only format 1 would
 * skip it and empty the sink's file, so it must refuse the log instead.
 * Records of format 1 are still read. */
#define WL_CKPT_FORMAT 2
#define WL_CKPT_FORMAT_MIN 1
#define WL_CKPT_HEADER 16
/* A payload over this is corruption, not a record: writers split state
 * into chunks far below it. */
#define WL_CKPT_MAX_PAYLOAD (256u * 1024 * 1024)

/* Record types. */
enum {
	WL_CKREC_BEGIN = 1,   /* u64 id, u64 incarnation, u32 flags,
	                         u32 partitions, i64 wall time (µs) */
	WL_CKREC_STATE = 2,   /* str step, then entries: u8 present,
	                         u32 klen, u32 vlen, key, value */
	WL_CKREC_SOURCE = 3,  /* str source, str stream, u64 position,
	                         u64 offset */
	WL_CKREC_SINK = 4,    /* str sink, u64 length (format 1: the file's
	                         committed length, written through) */
	WL_CKREC_COMMIT = 5,  /* u64 id, u32 records before it */
	WL_CKREC_SINK_STAGED = 6, /* str sink, u64 committed length, u64 stage
	                         seq (0: none), u64 dest, u64 len: the stage's
	                         first len bytes go at dest (sink.h) */
};
#define WL_CKPT_FULL 1u     /* BEGIN flag: the state is complete, not a
                               change since the previous checkpoint */

/* CRC-32C (Castagnoli) of `n` bytes, continuing from `crc` (start: 0). */
uint32_t wl_crc32c(uint32_t crc, const void *p, size_t n);

/* A growable buffer of encoded records. Zero-initialised is empty. */
typedef struct {
	uint8_t *p;
	size_t len, cap;
	size_t open;      /* offset of the record being built, or SIZE_MAX */
	int failed;       /* an allocation failed: the buffer is unusable */
} wl_ckbuf;

/* Starts a record of `type`; the payload follows through the put calls. */
void wl_ckbuf_begin(wl_ckbuf *b, uint16_t type);
void wl_ckbuf_put(wl_ckbuf *b, const void *p, size_t n);
void wl_ckbuf_u8(wl_ckbuf *b, uint8_t v);
void wl_ckbuf_u16(wl_ckbuf *b, uint16_t v);
void wl_ckbuf_u32(wl_ckbuf *b, uint32_t v);
void wl_ckbuf_u64(wl_ckbuf *b, uint64_t v);
/* A string: u16 length, bytes (cut at 65535). */
void wl_ckbuf_str(wl_ckbuf *b, const char *s);
/* Bytes of payload in the record being built. */
size_t wl_ckbuf_payload(const wl_ckbuf *b);
/* Finishes the record: fills in its length and checksum. */
void wl_ckbuf_end(wl_ckbuf *b);
/* Empties the buffer, keeping its memory. */
void wl_ckbuf_reset(wl_ckbuf *b);
void wl_ckbuf_free(wl_ckbuf *b);

/* A record as the scan hands it over: the payload points into the scan's
 * buffer and is valid during the callback only. */
typedef struct {
	uint16_t type;
	uint32_t len;
	const uint8_t *p;
	uint64_t offset;  /* of the record's header in the file */
	uint64_t end;     /* offset just past the record */
} wl_ckrec;

/* A cursor over a payload; `bad` is set by any read past the end. */
typedef struct {
	const uint8_t *p;
	size_t len, off;
	int bad;
} wl_ckcur;

void wl_ckcur_init(wl_ckcur *c, const wl_ckrec *r);
uint8_t wl_ckcur_u8(wl_ckcur *c);
uint32_t wl_ckcur_u32(wl_ckcur *c);
uint64_t wl_ckcur_u64(wl_ckcur *c);
/* A string as a pointer into the payload and its length. */
const uint8_t *wl_ckcur_str(wl_ckcur *c, uint16_t *n);
const uint8_t *wl_ckcur_bytes(wl_ckcur *c, size_t n);
int wl_ckcur_done(const wl_ckcur *c);

/* The checkpoints a recovered log holds, oldest first (ids increase):
 * each one's id and the engine incarnation that wrote it. */
typedef struct {
	uint64_t id, incarnation;
} wl_ckhist_entry;
typedef struct {
	const wl_ckhist_entry *v;  /* not owned */
	size_t n;
} wl_ckhist;

/* How it is known whether an epoch of checkpoint `id`, prepared by
 * `incarnation`, is covered by a durable checkpoint. */
typedef enum {
	WL_CKHIST_NO,        /* that incarnation's checkpoints in the log all
	                        come before `id`, or `id` is after the log */
	WL_CKHIST_YES,       /* a checkpoint >= `id` by that incarnation is in
	                        the log: it counted on the epoch's outputs */
	WL_CKHIST_BY_ID,     /* older than the log (compacted away), or
	                        incarnation 0 (not known) and at most the
	                        log's newest: only the id says it was durable */
} wl_ckhist_answer;

/* Within one incarnation checkpoints are cut in order and each covers all
 * before it, so a durable checkpoint `k' >= id` of the same incarnation
 * means the epoch counted. Checkpoints of other incarnations say nothing
 * about it (a later engine may have reused the id after recovering an
 * older checkpoint). */
wl_ckhist_answer wl_ckhist_covers(const wl_ckhist *h, uint64_t id,
    uint64_t incarnation);

/* How a scan ended. */
typedef enum {
	WL_CKSCAN_CLEAN,  /* every byte belonged to a valid record */
	WL_CKSCAN_TORN,   /* an invalid tail with nothing valid after it */
} wl_ckscan_end;

/* Called for each valid record in order; a non-OK return stops the scan
 * and is returned by it. */
typedef wl_err (*wl_ckscan_fn)(void *arg, const wl_ckrec *r, char *why,
    size_t n);

/*
 * Reads the file at `path` (a missing file scans as empty) and calls `fn`
 * for each valid record. On WL_OK, *end tells whether the file ended
 * cleanly or in a torn tail, and *valid_end is the offset after the last
 * valid record. Fails with WL_ERR_PROTO and a message in `why` (naming the
 * offset) for corruption in the middle or a record of another format,
 * WL_ERR_IO when the file cannot be read.
 */
wl_err wl_ckptlog_scan(const char *path, wl_ckscan_fn fn, void *arg,
    wl_ckscan_end *end, uint64_t *valid_end, char *why, size_t n);

#endif
