/*
 * link.h -- one nng pair1 socket joined to the libev loop.
 *
 * The engine listens on a private address per spawned process; the process
 * dials it. Receiving: the socket's pollable receive descriptor drives an
 * ev_io and messages are drained with non-blocking receives. Sending never
 * blocks the loop: a message nng cannot take now waits in the link's
 * backlog until the send descriptor says there is room.
 */
#ifndef WL_LINK_H
#define WL_LINK_H

#include <stddef.h>
#include <stdint.h>
#include <ev.h>
#include <nng/nng.h>

#include "err.h"

typedef struct wl_link wl_link;

/*
 * nng's pair1 puts a 4-byte header before each message and counts it
 * against the receiver's NNG_OPT_RECVMAXSZ, so with a limit of L bytes the
 * largest frame a peer accepts is L - WL_LINK_FRAME_OVERHEAD.
 */
#define WL_LINK_FRAME_OVERHEAD 4u

typedef enum {
	WL_LINK_UP = 1,    /* a peer connected */
	WL_LINK_DOWN = 2,  /* the peer's connection went away */
} wl_link_event;

typedef struct {
	/* A message arrived; the hook owns `m` and must free it. */
	void (*recv)(void *arg, nng_msg *m);
	/* The peer connected or went away. */
	void (*event)(void *arg, wl_link_event ev);
} wl_link_hooks;

/*
 * Opens a pair1 socket listening on `url` (ipc:// sockets get mode 0600),
 * with a receive size limit of `max_msg` bytes: nng drops the connection
 * of a peer that sends more. On success *out is the new link; close it
 * with wl_link_close.
 */
wl_err wl_link_listen(wl_link **out, struct ev_loop *loop, const char *url,
    uint32_t max_msg, const wl_link_hooks *hooks, void *arg);

/* Sends `m`. Always takes ownership of `m`, even on error: a message that
 * cannot go now is queued in the backlog. */
wl_err wl_link_send(wl_link *l, nng_msg *m);

/* Messages waiting in the backlog. */
size_t wl_link_backlog(const wl_link *l);

/* Closes the socket and frees the link and its backlog. Safe to call from
 * inside a hook: the free is then deferred until the hook returns. No hook
 * runs after it. Accepts NULL. The socket itself is closed by a detached
 * thread (nng 1.5.2 may block in nng_close; the loop must not), so the
 * address may stay taken for a moment: see wl_link_quiesce. */
void wl_link_close(wl_link *l);

/* Disconnects the current peer, if any, after `delay` seconds (so that it
 * can read a last explanation), and keeps listening for the next one.
 * From now on, messages it sent are discarded; at the disconnect, so is
 * whatever the link had not yet sent. The WL_LINK_DOWN event follows. */
void wl_link_drop_peer(wl_link *l, double delay);

/* Waits up to timeout_s seconds for the sockets of closed links to finish
 * closing. Returns how many are still closing (0: all done). Called at
 * exit, and before reusing an address. */
int wl_link_quiesce(double timeout_s);

#endif
