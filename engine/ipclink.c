/*
 * ipclink.c -- nng's ipc framing for pair1, read and written by the loop.
 *
 * Why: with nng's own transport every message crosses threads twice in
 * the engine (the loop hands it to nng's send task, nng's poller and
 * receive task hand incoming ones back through the socket's pollable
 * descriptor). At 100,000 events/s that hand-off was the engine's largest
 * cost (bench/profile: 44% of its samples were futex waits and wake-ups).
 * Here the loop does one sendmsg per send and one read per 64 KiB
 * received, and nothing else runs.
 *
 * One connection at a time, as pair1 has: a second one is refused while
 * the first is connected (its dialer retries, as it would with nng).
 */
#include "ipclink.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

#define PAIR1_PROTO 0x11u     /* SP protocol number of pair1 */
#define HELLO_LEN 8u          /* 0 'S' 'P' 0 proto-hi proto-lo 0 0 */
#define FRAME_HEAD 13u        /* type byte, u64 length, pair1 hop count */
#define PAIR1_MAX_HOPS 8u     /* nng's default TTL: more hops are dropped */
#define HELLO_TIMEOUT 10.0    /* nng's own negotiation timeout */
#define RBUF_SIZE (64u * 1024u)
#define READS_PER_WAKE 2      /* bounded, so a busy peer shares the loop */
#define IOV_MSGS 64           /* messages per sendmsg */
/* Seconds without accepting after accept() failed for want of descriptors
 * or memory: retrying at once would spin, since the connection waiting in
 * the backlog keeps the socket readable. */
#define ACCEPT_RETRY_S 1.0

typedef enum {
	PEER_NONE = 0,  /* listening, nobody connected */
	PEER_HELLO,     /* connected, headers being exchanged */
	PEER_UP,        /* paired: messages flow both ways */
	PEER_DROPPED,   /* wl_ipclink_drop_peer: we still write, its input is
	                   discarded, the timer ends it */
} peer_state;

struct wl_ipclink {
	struct ev_loop *loop;
	int lfd;                  /* listening socket */
	int fd;                   /* the connection, -1: none */
	peer_state state;
	ev_io accept_io;
	ev_io rio;
	ev_io wio;                /* started only while output waits */
	ev_timer timer;           /* hello deadline, or the drop delay */
	ev_timer accept_retry;    /* accepting stopped after a failure */
	bool failed;              /* a send failed: the read side tears down */
	bool busy_logged;         /* one line per pairing for refused peers */
	uint8_t hello_in[HELLO_LEN];
	size_t hello_got;
	/* Receiving: frames are parsed out of rbuf; one larger than what is
	 * buffered is finished by reading straight into its message. */
	uint8_t *rbuf;
	size_t roff, rlen;        /* unparsed bytes are rbuf[roff, rlen) */
	nng_msg *rmsg;
	size_t rmsg_got;
	bool rmsg_discard;        /* too many hops: read off, then dropped */
	/* Sending: a ring of whole messages; qoff bytes of the head's frame
	 * (13-byte head, then the body) are already written. */
	nng_msg **q;
	size_t qhead, qcount, qcap, qoff;
	uint8_t heads[IOV_MSGS][FRAME_HEAD];
	uint32_t max_msg;
	wl_link_hooks hooks;
	void *arg;
	int in_hook;
	bool close_pending;
	char url[256];
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

static void link_free(wl_ipclink *l);

static void
put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static uint64_t
get_be64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static uint32_t
get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

/* Hooks run inside in_hook; a close they ask for happens once the last
 * one returns. True: the link is gone, the caller must not touch it. */
static bool
hook_done(wl_ipclink *l)
{
	l->in_hook--;
	if (l->in_hook == 0 && l->close_pending) {
		link_free(l);
		return true;
	}
	return false;
}

static void
emit(wl_ipclink *l, wl_link_event ev)
{
	if (!l->close_pending)
		l->hooks.event(l->arg, ev);
}

static void
queue_clear(wl_ipclink *l)
{
	while (l->qcount > 0) {
		nng_msg_free(l->q[l->qhead]);
		l->qhead = (l->qhead + 1) % l->qcap;
		l->qcount--;
	}
	l->qoff = 0;
}

/*
 * Ends the connection. What was queued was meant for that peer, and must
 * not reach the next one. Reports WL_LINK_DOWN if the peer had been up;
 * only called from the loop's own callbacks (inside in_hook), never from
 * a caller's wl_ipclink_* call.
 */
static void
conn_end(wl_ipclink *l)
{
	bool was_up = l->state == PEER_UP || l->state == PEER_DROPPED;

	if (l->fd < 0)
		return;
	ev_io_stop(l->loop, &l->rio);
	ev_io_stop(l->loop, &l->wio);
	ev_timer_stop(l->loop, &l->timer);
	close(l->fd);
	l->fd = -1;
	l->state = PEER_NONE;
	l->failed = false;
	l->roff = l->rlen = 0;
	nng_msg_free(l->rmsg); /* accepts NULL */
	l->rmsg = NULL;
	queue_clear(l);
	if (was_up)
		emit(l, WL_LINK_DOWN);
}

/* Writes as much of the queue as the socket takes. A failure is left for
 * the read side to act on, since this may run inside a caller's send. */
static void
flush(wl_ipclink *l)
{
	while (l->qcount > 0 && !l->failed) {
		struct iovec iov[2 * IOV_MSGS];
		struct msghdr mh;
		size_t n = 0, skip = l->qoff;
		ssize_t w;

		for (size_t i = 0; i < l->qcount && i < IOV_MSGS; i++) {
			nng_msg *m = l->q[(l->qhead + i) % l->qcap];
			size_t len = nng_msg_len(m);
			uint8_t *h = l->heads[i];

			h[0] = 1;
			put_be64(h + 1, (uint64_t)len + 4);
			h[9] = h[10] = h[11] = 0;
			h[12] = 1; /* one hop: pair1's sender counts itself */
			if (skip < FRAME_HEAD) {
				iov[n].iov_base = h + skip;
				iov[n++].iov_len = FRAME_HEAD - skip;
				skip = 0;
			} else {
				skip -= FRAME_HEAD;
			}
			if (len > skip) {
				iov[n].iov_base = (uint8_t *)nng_msg_body(m) +
				    skip;
				iov[n++].iov_len = len - skip;
			}
			skip = 0; /* only the head was partly written */
		}
		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = iov;
		mh.msg_iovlen = n;
		w = sendmsg(l->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			wl_log("LINK-ERROR", "%s: send: %s", l->url,
			    strerror(errno));
			l->failed = true;
			ev_feed_event(l->loop, &l->rio, EV_READ);
			break;
		}
		/* Retire what went out whole; remember how far into the next
		 * one the socket got. */
		size_t done = (size_t)w;
		while (done > 0 && l->qcount > 0) {
			nng_msg *m = l->q[l->qhead];
			size_t left = FRAME_HEAD + nng_msg_len(m) - l->qoff;
			if (done < left) {
				l->qoff += done;
				break;
			}
			done -= left;
			nng_msg_free(m);
			l->qhead = (l->qhead + 1) % l->qcap;
			l->qcount--;
			l->qoff = 0;
		}
	}
	if (l->qcount > 0 && !l->failed && l->fd >= 0)
		ev_io_start(l->loop, &l->wio);
	else
		ev_io_stop(l->loop, &l->wio);
}

/* One complete frame body of `len` bytes (hop count already checked). */
static void
deliver(wl_ipclink *l, nng_msg *m)
{
	if (l->state != PEER_UP || l->close_pending) {
		nng_msg_free(m); /* a dropped peer's late message */
		return;
	}
	l->hooks.recv(l->arg, m);
}

/*
 * Parses the frames in rbuf. Returns false when the connection must end
 * (a frame breaking the protocol or the size limit; logged).
 */
static bool
parse(wl_ipclink *l)
{
	while (l->rlen - l->roff >= 9 && l->fd >= 0 && !l->close_pending) {
		const uint8_t *p = l->rbuf + l->roff;
		size_t have = l->rlen - l->roff;
		uint64_t len = get_be64(p + 1);
		uint32_t hops;
		size_t body;
		nng_msg *m;

		if (p[0] != 1) {
			wl_log("LINK-ERROR", "%s: frame type %u is not an SP "
			    "message (1): connection closed", l->url, p[0]);
			return false;
		}
		if (len > l->max_msg) {
			wl_log("LINK-ERROR", "%s: a message of %llu bytes is "
			    "over the limit of %u: connection closed", l->url,
			    (unsigned long long)len, l->max_msg);
			return false;
		}
		if (len < 4) {
			wl_log("LINK-ERROR", "%s: a message of %llu bytes has "
			    "no pair1 header: connection closed", l->url,
			    (unsigned long long)len);
			return false;
		}
		if (have < FRAME_HEAD)
			break;
		hops = get_be32(p + 9);
		if (hops > 0xff) {
			wl_log("LINK-ERROR", "%s: pair1 header 0x%x is "
			    "malformed: connection closed", l->url, hops);
			return false;
		}
		body = (size_t)len - 4;
		if (nng_msg_alloc(&m, body) != 0) {
			wl_log("LINK-ERROR", "%s: no memory for a message of "
			    "%zu bytes: connection closed", l->url, body);
			return false;
		}
		if (have - FRAME_HEAD < body) {
			/* The rest comes straight into the message. */
			size_t part = have - FRAME_HEAD;
			memcpy(nng_msg_body(m), p + FRAME_HEAD, part);
			l->rmsg = m;
			l->rmsg_got = part;
			/* More hops than nng's pair1 allows: read off the
			 * wire, then discarded, as nng does. */
			l->rmsg_discard = hops > PAIR1_MAX_HOPS;
			l->roff = l->rlen = 0;
			return true;
		}
		memcpy(nng_msg_body(m), p + FRAME_HEAD, body);
		l->roff += FRAME_HEAD + body;
		if (hops > PAIR1_MAX_HOPS)
			nng_msg_free(m);
		else
			deliver(l, m);
	}
	/* A frame head cut at the end of the buffer (under 13 bytes) moves
	 * to the front, so the next read completes it. */
	if (l->roff > 0) {
		memmove(l->rbuf, l->rbuf + l->roff, l->rlen - l->roff);
		l->rlen -= l->roff;
		l->roff = 0;
	}
	return true;
}

/* Reads the rest of a large frame into its message. Returns bytes read,
 * 0 at end of file, -1 with errno. */
static ssize_t
read_into_msg(wl_ipclink *l)
{
	size_t got = l->rmsg_got;
	size_t len = nng_msg_len(l->rmsg);
	ssize_t n = read(l->fd, (uint8_t *)nng_msg_body(l->rmsg) + got,
	    len - got);

	if (n > 0) {
		l->rmsg_got += (size_t)n;
		if (got + (size_t)n == len) {
			nng_msg *m = l->rmsg;
			l->rmsg = NULL;
			l->rmsg_got = 0;
			if (l->rmsg_discard)
				nng_msg_free(m);
			else
				deliver(l, m);
		}
	}
	return n;
}

/* The 8-byte header from the peer. False: the connection must end. */
static bool
hello_read(wl_ipclink *l)
{
	const uint8_t *h = l->hello_in;
	ssize_t n = read(l->fd, l->hello_in + l->hello_got,
	    HELLO_LEN - l->hello_got);
	unsigned proto;

	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
		return false; /* gone before pairing: no event */
	if (n < 0)
		return true;
	l->hello_got += (size_t)n;
	if (l->hello_got < HELLO_LEN)
		return true;
	proto = (unsigned)h[4] << 8 | h[5];
	if (h[0] != 0 || h[1] != 'S' || h[2] != 'P' || h[3] != 0 ||
	    h[6] != 0 || h[7] != 0) {
		wl_log("LINK-ERROR", "%s: the peer did not start with an SP "
		    "header: connection closed", l->url);
		return false;
	}
	if (proto != PAIR1_PROTO) {
		wl_log("LINK-ERROR", "%s: the peer speaks SP protocol 0x%x, "
		    "not pair1 (0x11): connection closed", l->url, proto);
		return false;
	}
	ev_timer_stop(l->loop, &l->timer);
	l->state = PEER_UP;
	l->busy_logged = false;
	emit(l, WL_LINK_UP);
	if (l->state == PEER_UP && !l->close_pending)
		flush(l); /* what was sent before it came */
	return true;
}

static void
read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	wl_ipclink *l = w->data;
	bool end = false;

	(void)loop;
	(void)revents;
	l->in_hook++;
	if (l->failed) {
		end = true;
	} else if (l->state == PEER_HELLO) {
		end = !hello_read(l);
	} else {
		for (int i = 0; i < READS_PER_WAKE && l->fd >= 0 &&
		    !l->close_pending; i++) {
			size_t want;
			ssize_t n;
			if (l->rmsg != NULL) {
				want = nng_msg_len(l->rmsg) - l->rmsg_got;
				n = read_into_msg(l);
			} else {
				want = RBUF_SIZE - l->rlen;
				n = read(l->fd, l->rbuf + l->rlen, want);
				if (n > 0) {
					l->rlen += (size_t)n;
					if (!parse(l)) {
						end = true;
						break;
					}
				}
			}
			if (n == 0) {
				end = true; /* the peer closed */
				break;
			}
			if (n < 0) {
				if (errno == EINTR)
					continue;
				if (errno != EAGAIN && errno != EWOULDBLOCK) {
					wl_log("LINK-ERROR", "%s: receive: %s",
					    l->url, strerror(errno));
					end = true;
				}
				break;
			}
			/* A short read drained the socket: another would only
			 * say EAGAIN. */
			if ((size_t)n < want)
				break;
		}
	}
	if (end && !l->close_pending)
		conn_end(l);
	hook_done(l);
}

static void
write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	wl_ipclink *l = w->data;

	(void)loop;
	(void)revents;
	flush(l);
}

static void
timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	wl_ipclink *l = w->data;

	(void)loop;
	(void)revents;
	l->in_hook++;
	if (l->state == PEER_HELLO)
		wl_log("LINK-ERROR", "%s: the peer sent no SP header within "
		    "%.0f s: connection closed", l->url, HELLO_TIMEOUT);
	conn_end(l);
	hook_done(l);
}

static void
accept_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	wl_ipclink *l = w->data;

	(void)revents;
	ev_io_start(loop, &l->accept_io);
}

static void
accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	static const uint8_t hello[HELLO_LEN] = { 0, 'S', 'P', 0, 0,
	    PAIR1_PROTO, 0, 0 };
	wl_ipclink *l = w->data;

	(void)loop;
	(void)revents;
	for (;;) {
		int fd = accept4(l->lfd, NULL, NULL,
		    SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK ||
			    errno == ECONNABORTED)
				return;
			wl_log("LINK-ERROR", "%s: accept: %s; accepting "
			    "again in %.0f s", l->url, strerror(errno),
			    ACCEPT_RETRY_S);
			ev_io_stop(l->loop, &l->accept_io);
			/* Set each time: a stopped timer keeps what was left of its
			 * last run, which after it fired is nothing. */
			ev_timer_set(&l->accept_retry, ACCEPT_RETRY_S, 0.);
			ev_timer_start(l->loop, &l->accept_retry);
			return;
		}
		if (l->fd >= 0) {
			/* pair1 pairs with one peer; its dialer retries. */
			if (!l->busy_logged)
				wl_log("LINK-BUSY", "%s: refused a second peer "
				    "while one is connected", l->url);
			l->busy_logged = true;
			close(fd);
			continue;
		}
		/* A new socket's buffer is empty: our 8 bytes go at once,
		 * and nothing else is written before them. */
		if (send(fd, hello, HELLO_LEN, MSG_NOSIGNAL | MSG_DONTWAIT) !=
		    (ssize_t)HELLO_LEN) {
			close(fd); /* gone already */
			continue;
		}
		l->fd = fd;
		l->state = PEER_HELLO;
		l->hello_got = 0;
		ev_io_set(&l->rio, fd, EV_READ);
		ev_io_set(&l->wio, fd, EV_WRITE);
		ev_io_start(l->loop, &l->rio);
		ev_timer_set(&l->timer, HELLO_TIMEOUT, 0.);
		ev_timer_start(l->loop, &l->timer);
	}
}

/* Binds `sa`, replacing a socket file that nobody listens on any more (a
 * crashed engine's). */
static int
bind_path(int fd, const struct sockaddr_un *sa)
{
	int probe, rv;

	if (bind(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0)
		return 0;
	if (errno != EADDRINUSE)
		return -1;
	probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (probe < 0)
		return -1;
	rv = connect(probe, (const struct sockaddr *)sa, sizeof(*sa));
	close(probe);
	if (rv == 0 || errno != ECONNREFUSED) {
		errno = EADDRINUSE;
		return -1;
	}
	if (unlink(sa->sun_path) != 0)
		return -1;
	return bind(fd, (const struct sockaddr *)sa, sizeof(*sa));
}

wl_err
wl_ipclink_listen(wl_ipclink **out, struct ev_loop *loop, const char *url,
    uint32_t max_msg, const wl_link_hooks *hooks, void *arg)
{
	const char *path = url + strlen("ipc://");
	struct sockaddr_un sa;
	wl_ipclink *l;

	if (strncmp(url, "ipc://", 6) != 0 || strlen(path) == 0 ||
	    strlen(path) >= sizeof(sa.sun_path)) {
		wl_log("LINK-ERROR", "%s: cannot listen: a unix socket path "
		    "must be 1 to %zu bytes", url, sizeof(sa.sun_path) - 1);
		return WL_ERR_CONFIG;
	}
	l = calloc(1, sizeof(*l));
	if (l == NULL || (l->rbuf = malloc(RBUF_SIZE)) == NULL) {
		free(l);
		return WL_ERR_NOMEM;
	}
	l->loop = loop;
	l->fd = -1;
	l->max_msg = max_msg;
	l->hooks = *hooks;
	l->arg = arg;
	snprintf(l->url, sizeof(l->url), "%s", url);
	snprintf(l->path, sizeof(l->path), "%s", path);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	l->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
	/* Mode 0600 before listen(): nobody can connect in between. */
	if (l->lfd < 0 || bind_path(l->lfd, &sa) != 0 ||
	    chmod(path, 0600) != 0 || listen(l->lfd, 16) != 0) {
		wl_log("LINK-ERROR", "%s: cannot listen: %s", url,
		    strerror(errno));
		if (l->lfd >= 0)
			close(l->lfd);
		free(l->rbuf);
		free(l);
		return WL_ERR_IO;
	}
	ev_io_init(&l->accept_io, accept_cb, l->lfd, EV_READ);
	ev_io_init(&l->rio, read_cb, -1, EV_READ);
	ev_io_init(&l->wio, write_cb, -1, EV_WRITE);
	ev_timer_init(&l->timer, timer_cb, 0., 0.);
	ev_timer_init(&l->accept_retry, accept_retry_cb, ACCEPT_RETRY_S, 0.);
	l->accept_io.data = l->rio.data = l->wio.data = l->timer.data = l;
	l->accept_retry.data = l;
	ev_io_start(loop, &l->accept_io);
	*out = l;
	return WL_OK;
}

wl_err
wl_ipclink_send(wl_ipclink *l, nng_msg *m)
{
	if (l->qcount == l->qcap) {
		size_t ncap = l->qcap ? l->qcap * 2 : 16;
		nng_msg **nq = malloc(ncap * sizeof(*nq));
		if (nq == NULL) {
			nng_msg_free(m);
			return WL_ERR_NOMEM;
		}
		for (size_t i = 0; i < l->qcount; i++)
			nq[i] = l->q[(l->qhead + i) % l->qcap];
		free(l->q);
		l->q = nq;
		l->qcap = ncap;
		l->qhead = 0;
	}
	l->q[(l->qhead + l->qcount) % l->qcap] = m;
	l->qcount++;
	/* Written now when nothing is ahead of it: no wait for the loop. */
	if ((l->state == PEER_UP || l->state == PEER_DROPPED) &&
	    l->qcount == 1)
		flush(l);
	else if (l->state == PEER_UP || l->state == PEER_DROPPED)
		ev_io_start(l->loop, &l->wio);
	return WL_OK;
}

size_t
wl_ipclink_backlog(const wl_ipclink *l)
{
	return l->qcount;
}

void
wl_ipclink_drop_peer(wl_ipclink *l, double delay)
{
	if (l->state != PEER_UP)
		return;
	l->state = PEER_DROPPED;
	l->roff = l->rlen = 0; /* its buffered input is discarded */
	ev_timer_stop(l->loop, &l->timer);
	ev_timer_set(&l->timer, delay > 0 ? delay : 0., 0.);
	ev_timer_start(l->loop, &l->timer);
}

static void
link_free(wl_ipclink *l)
{
	ev_io_stop(l->loop, &l->accept_io);
	ev_io_stop(l->loop, &l->rio);
	ev_io_stop(l->loop, &l->wio);
	ev_timer_stop(l->loop, &l->timer);
	ev_timer_stop(l->loop, &l->accept_retry);
	if (l->fd >= 0)
		close(l->fd);
	close(l->lfd);
	unlink(l->path);
	nng_msg_free(l->rmsg);
	queue_clear(l);
	free(l->q);
	free(l->rbuf);
	free(l);
}

void
wl_ipclink_close(wl_ipclink *l)
{
	if (l == NULL)
		return;
	if (l->in_hook > 0) {
		l->close_pending = true;
		return;
	}
	link_free(l);
}
