/*
 * linktest.h -- what link_test.c and ipclink_test.c share: driving the
 * loop until a condition holds, recording the hooks, an nng pair1 peer,
 * and a bare unix-socket peer speaking nng's ipc framing by hand (it can
 * send what nng never would: any length, any header). Header-only, like
 * tap.h; each test is one file plus these.
 */
#ifndef WL_LINKTEST_H
#define WL_LINKTEST_H

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>

#include "link.h"

static double
mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Drives `loop` until `cond` holds or 5 s have passed; then `cond` is
 * evaluated once more by the caller's TAP_OK. */
#define RUN_UNTIL(loop, cond) \
	for (double dl_ = mono() + 5.0; !(cond) && mono() < dl_;) \
		ev_run((loop), EVRUN_ONCE)

static void
tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
}

/* What the hooks saw. */
typedef struct {
	wl_link *link;
	int events[16];
	int nevents;
	char msgs[64][32];    /* small messages, as strings */
	int nmsgs;
	const char *close_on; /* close the link when this message arrives */
	bool closed;
	int hooks_after_close;
} rec;

static void
on_recv(void *arg, nng_msg *m)
{
	rec *r = arg;
	size_t n = nng_msg_len(m);

	if (r->closed)
		r->hooks_after_close++;
	if (r->nmsgs < 64) {
		if (n > 31)
			n = 31;
		memcpy(r->msgs[r->nmsgs], nng_msg_body(m), n);
		r->msgs[r->nmsgs][n] = '\0';
		r->nmsgs++;
	}
	nng_msg_free(m);
	if (r->close_on != NULL && r->nmsgs > 0 &&
	    strcmp(r->msgs[r->nmsgs - 1], r->close_on) == 0) {
		wl_link_close(r->link);
		r->closed = true;
	}
}

static void
on_event(void *arg, wl_link_event ev)
{
	rec *r = arg;

	if (r->closed)
		r->hooks_after_close++;
	if (r->nevents < 16)
		r->events[r->nevents++] = (int)ev;
}

static int
count_event(const rec *r, int ev)
{
	int n = 0;

	for (int i = 0; i < r->nevents; i++)
		n += r->events[i] == ev;
	return n;
}

static const wl_link_hooks hooks = { on_recv, on_event };

/* The peer's pipe went away: set from an nng thread. */
static atomic_int peer_removed;

static void
peer_pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	(void)p;
	(void)ev;
	(void)arg;
	atomic_store(&peer_removed, 1);
}

static bool
peer_open(nng_socket *s, const char *url)
{
	return nng_pair1_open(s) == 0 &&
	    nng_socket_set_size(*s, NNG_OPT_RECVMAXSZ, 1 << 20) == 0 &&
	    nng_socket_set_int(*s, NNG_OPT_RECVBUF, 64) == 0 &&
	    /* A peer that redials once the link is gone would be one
	     * more peer to account for. */
	    nng_socket_set_ms(*s, NNG_OPT_RECONNMINT, 60000) == 0 &&
	    nng_socket_set_ms(*s, NNG_OPT_RECONNMAXT, 60000) == 0 &&
	    nng_pipe_notify(*s, NNG_PIPE_EV_REM_POST, peer_pipe_cb,
	    NULL) == 0 &&
	    /* Not waiting for the handshake: a listener served by this
	     * thread's loop can only answer once the loop runs. */
	    nng_dial(*s, url, NULL, NNG_FLAG_NONBLOCK) == 0;
}

/*
 * Connects to `path` over a bare unix socket and sends the 8-byte header
 * nng's ipc transport starts with (0, 'S', 'P', 0, the protocol number as
 * a big-endian u16, two zero bytes; pair1 is 0x11), without waiting for
 * the other side's. Returns the socket, or -1.
 */
static int
raw_connect(const char *path, const uint8_t hello[8])
{
	struct sockaddr_un sa;
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	if (strlen(path) < sizeof(sa.sun_path))
		memcpy(sa.sun_path, path, strlen(path) + 1);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    write(fd, hello, 8) != 8) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

static const uint8_t pair1_hello[8] = { 0, 'S', 'P', 0, 0, 0x11, 0, 0 };

/* Dials like a pair1 peer and reads the other side's header, blocking:
 * only for a listener that answers from its own threads (nng). */
static int __attribute__((unused))
raw_dial(const char *path)
{
	uint8_t reply[8];
	int fd = raw_connect(path, pair1_hello);

	if (fd >= 0 && (read(fd, reply, sizeof(reply)) != sizeof(reply) ||
	    memcmp(reply, pair1_hello, sizeof(reply)) != 0)) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Announces a message of `len` bytes: on ipc a message starts with the
 * type byte 1 and its length as a big-endian u64. */
static bool
raw_announce(int fd, uint64_t len)
{
	uint8_t h[9] = { 1 };

	for (int i = 0; i < 8; i++)
		h[1 + i] = (uint8_t)(len >> (56 - 8 * i));
	return write(fd, h, sizeof(h)) == sizeof(h);
}

/* True once the other end has closed `fd`. A unix socket closed with our
 * bytes still unread in it reports ECONNRESET once, then end of file. */
static bool
closed_by_peer(int fd)
{
	char b[16];
	ssize_t n = recv(fd, b, sizeof(b), MSG_DONTWAIT);

	return n == 0 || (n < 0 && errno == ECONNRESET);
}

static bool
peer_send(nng_socket s, const void *p, size_t n)
{
	return nng_send(s, (void *)p, n, 0) == 0;
}

static nng_msg *
msg_of(const void *p, size_t n)
{
	nng_msg *m;

	if (nng_msg_alloc(&m, 0) != 0)
		return NULL;
	if (nng_msg_append(m, p, n) != 0) {
		nng_msg_free(m);
		return NULL;
	}
	return m;
}

#define BIG_SIZE 4096 /* the size of the big messages: far more than all the buffers */

/* Big messages received by the peer so far, and whether each carried the
 * sequence number it should. */
static int peer_got;
static bool peer_in_order = true;

/* Receives whatever the peer has waiting, without blocking. */
static int __attribute__((unused))
peer_drain(nng_socket s)
{
	nng_msg *m;

	while (nng_recvmsg(s, &m, NNG_FLAG_NONBLOCK) == 0) {
		uint32_t seq;
		if (nng_msg_len(m) != BIG_SIZE) {
			peer_in_order = false;
		} else {
			memcpy(&seq, nng_msg_body(m), sizeof(seq));
			if (seq != (uint32_t)peer_got)
				peer_in_order = false;
		}
		peer_got++;
		nng_msg_free(m);
	}
	return peer_got;
}

#endif
