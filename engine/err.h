/*
 * err.h -- the engine's small error enum. Functions return one of these
 * (0 = ok) and deliver results through their first out-parameter. A module
 * logs an error once, where the context is known, then returns the code.
 */
#ifndef WL_ERR_H
#define WL_ERR_H

typedef enum {
	WL_OK = 0,
	WL_ERR_NOMEM,     /* allocation failed */
	WL_ERR_IO,        /* read/write/open failed; errno is logged */
	WL_ERR_CONFIG,    /* topology or command line is invalid */
	WL_ERR_PROTO,     /* a peer sent a frame we cannot accept */
	WL_ERR_TOOBIG,    /* over a configured limit */
	WL_ERR_AGAIN,     /* would block; try again when the loop says so */
	WL_ERR_CLOSED,    /* the peer or object is gone */
	WL_ERR_NNG,       /* an nng call failed; the nng error is logged */
	WL_ERR_STATE,     /* call not allowed in the object's current state */
} wl_err;

/* A static description of `e`, never NULL. */
const char *wl_strerror(wl_err e);

#endif
