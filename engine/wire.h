/*
 * wire.h -- the hot path's protobuf, written and read by hand: the Frame
 * carrying a Batch to a runner, and the Frame carrying its BatchReply.
 *
 * protobuf-c encodes and decodes through its descriptors, field by field,
 * with one allocation per sub-message: at full load that was a quarter of
 * the engine's CPU (bench/RESULTS.md). These two functions do the same work
 * for the two frames that carry events, and nothing else. The encoder
 * writes exactly the bytes protobuf-c would; the decoder builds the same
 * structs protobuf-c would, or declines and leaves the frame to protobuf-c
 * (wire_test.c checks both against protobuf-c).
 */
#ifndef WL_WIRE_H
#define WL_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <nng/nng.h>

#include "err.h"
#include "event.h"
#include "state.h"
#include "wallaroo.pb-c.h"

/* What goes into a Frame{batch}: the events (linked through next) and the
 * states of the keys they touch (linked through mark), as the dataflow
 * holds them. */
typedef struct {
	uint64_t batch_id;
	uint32_t step_id;
	const wl_event *events;
	const wl_state_entry *keys;
} wl_wire_batch;

/* Encodes `b` into a new nng message in *out: the bytes protobuf-c packs
 * for Frame{batch: Batch{batch_id, step_id, events, states}}. The caller
 * owns the message (a successful send takes it). WL_ERR_NOMEM when it
 * cannot be allocated. */
wl_err wl_wire_batch_encode(nng_msg **out, const wl_wire_batch *b);

/* Decodes buf, when it is a Frame holding only a BatchReply made of the
 * fields this protocol version knows, into *out, allocating with `alloc`
 * (nothing is freed one by one: an arena). Byte fields point into buf, so
 * buf must outlive *out. Returns false, with *out untouched, for anything
 * else (another body, an unknown or repeated field, malformed bytes): the
 * caller then decodes with protobuf-c, which accepts or rejects it as it
 * always did. */
bool wl_wire_reply_decode(ProtobufCAllocator *alloc, const uint8_t *buf,
    size_t len, Wallaroo__V1__Frame **out);

#endif
