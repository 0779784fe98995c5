/*
 * frame.h -- the protocol's Frame: decode from and encode into nng
 * messages. One nng message carries exactly one Frame.
 */
#ifndef WL_FRAME_H
#define WL_FRAME_H

#include <stddef.h>
#include <nng/nng.h>

#include "err.h"
#include "wallaroo.pb-c.h"

#define WL_PROTO_MAJOR 1
#define WL_PROTO_MINOR 0

typedef Wallaroo__V1__Frame wl_frame;

/* Decodes `len` bytes into *out (free with wl_frame_free). Returns
 * WL_ERR_PROTO when the bytes are not a Frame or the Frame has no body.
 * The frame may point into buf (a batch reply's bytes fields do): keep buf
 * until wl_frame_free. */
wl_err wl_frame_decode(wl_frame **out, const void *buf, size_t len);

/* Frees a decoded frame; accepts NULL. */
void wl_frame_free(wl_frame *f);

/* Encodes `f` into a new nng message in *out; the caller owns it (a
 * successful wl_link_send takes it). `f` stays the caller's. */
wl_err wl_frame_encode(nng_msg **out, const wl_frame *f);

/* The name of a frame body ("batch", "hello"...), for log lines. */
/* Frees the decoding arenas kept for reuse (at exit, for leak checkers). */
void wl_frame_arenas_drain(void);

const char *wl_frame_name(const wl_frame *f);

#endif
