/*
 * ipclink.h -- the runner link's ipc:// transport, spoken by the loop.
 *
 * nng's ipc transport is a unix stream socket with a small framing: each
 * side first sends an 8-byte header (0, 'S', 'P', 0, its protocol as a
 * big-endian u16, 0, 0), then every message is the byte 1, its length as a
 * big-endian u64 and the payload, which for pair1 begins with a 4-byte
 * big-endian hop count. This module reads and writes that framing itself,
 * from the libev loop: no nng thread stands between a runner's socket and
 * the engine. Peers are unchanged: pynng, mangos and nng dial it as they
 * would dial an nng pair1 listener.
 *
 * wl_link uses it for every ipc:// address; the behaviour matches its
 * contract in link.h (one peer at a time, the same events, the backlog,
 * the size limit including the 4-byte header). Only link.c calls this.
 */
#ifndef WL_IPCLINK_H
#define WL_IPCLINK_H

#include <stddef.h>
#include <stdint.h>
#include <ev.h>
#include <nng/nng.h>

#include "err.h"
#include "link.h"

typedef struct wl_ipclink wl_ipclink;

/* Listens on the unix socket path of `url` ("ipc:///path"), mode 0600,
 * replacing a stale socket file nobody listens on. On success *out is the
 * new link; close it with wl_ipclink_close. */
wl_err wl_ipclink_listen(wl_ipclink **out, struct ev_loop *loop,
    const char *url, uint32_t max_msg, const wl_link_hooks *hooks,
    void *arg);

/* Sends `m` (its body; nng message headers are not used on links).
 * Always takes ownership of `m`. Before a peer is up the message waits in
 * the backlog for it. */
wl_err wl_ipclink_send(wl_ipclink *l, nng_msg *m);

/* Messages not yet written whole to the socket. */
size_t wl_ipclink_backlog(const wl_ipclink *l);

/* As wl_link_drop_peer. The disconnect always happens from a timer (after
 * `delay`, or at the next loop iteration), never inside the call. */
void wl_ipclink_drop_peer(wl_ipclink *l, double delay);

/* Closes the connection and the listening socket, removes the socket
 * file, frees everything. Deferred when called from inside a hook; no
 * hook runs after it. Accepts NULL. */
void wl_ipclink_close(wl_ipclink *l);

#endif
