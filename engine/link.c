/*
 * link.c -- nng pair1 in the libev loop.
 *
 * nng runs its own threads; the only thing they do to us is the pipe
 * notification (peer up or down), which sets an atomic flag and wakes the
 * loop through an ev_async. Everything else happens on the loop thread.
 */
#include "link.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <nng/protocol/pair1/pair.h>

#include "ipclink.h"
#include "log.h"

/*
 * nng 1.5.2 can lose a message it has accepted: pair1 hands it to the
 * pipe's send aio, and when that pipe is closing at the same moment
 * nni_aio_begin on the stopped aio returns without ever completing it,
 * so nobody frees it. Our ownership ends when nng_sendmsg succeeds, so
 * under LeakSanitizer a message is marked as nng's just before it is
 * offered (a refused one goes to our backlog, which frees it itself).
 * Without this, an ASan run of a runner that dies mid-send reports a leak
 * about one time in ten.
 */
#if defined(__has_feature)
#if __has_feature(address_sanitizer) && !defined(__SANITIZE_ADDRESS__)
#define __SANITIZE_ADDRESS__ 1 /* clang spells it this way */
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define OFFER_TO_NNG(m) __lsan_ignore_object(m)
#else
#define OFFER_TO_NNG(m) ((void)(m))
#endif

struct wl_link {
	wl_ipclink *ipc;      /* ipc://: the loop speaks the framing itself,
	                         and none of the fields below is used */
	nng_socket sock;
	struct ev_loop *loop;
	ev_io rio;            /* NNG_OPT_RECVFD readable: messages waiting */
	ev_io wio;            /* NNG_OPT_SENDFD writable: room to send */
	ev_async wake;        /* nng thread -> loop: pipe up/down */
	atomic_int pending;   /* WL_LINK_UP/DOWN bits set by nng threads */
	atomic_bool closing;
	atomic_uint peer;     /* id of the newest connected pipe, 0: none */
	uint32_t dropped;     /* pipe dropped by wl_link_drop_peer: its late
	                         messages are discarded */
	ev_timer drop_timer;  /* closes the dropped pipe after a delay */
	wl_link_hooks hooks;
	void *arg;
	nng_msg **backlog;    /* ring of messages waiting for room */
	size_t bhead, bcount, bcap;
	int in_hook;          /* >0 while a hook runs: defer the free */
	bool close_pending;
	char url[256];
};

static void
pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	wl_link *l = arg;

	(void)p;
	if (atomic_load(&l->closing))
		return;
	if (ev == NNG_PIPE_EV_ADD_POST)
		atomic_store(&l->peer, nng_pipe_id(p));
	atomic_fetch_or(&l->pending,
	    ev == NNG_PIPE_EV_ADD_POST ? WL_LINK_UP : WL_LINK_DOWN);
	ev_async_send(l->loop, &l->wake);
}

static void link_free(wl_link *l);
static void drop_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);

static bool
hook_done(wl_link *l)
{
	l->in_hook--;
	if (l->in_hook == 0 && l->close_pending) {
		link_free(l);
		return true;
	}
	return false;
}

static void
wake_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	wl_link *l = w->data;
	int ev = atomic_exchange(&l->pending, 0);

	(void)loop;
	(void)revents;
	/* Report "up" before "down": a peer that came and went between two
	 * loop iterations still shows both, in order. */
	l->in_hook++;
	if ((ev & WL_LINK_UP) && !l->close_pending)
		l->hooks.event(l->arg, WL_LINK_UP);
	if ((ev & WL_LINK_DOWN) && !l->close_pending)
		l->hooks.event(l->arg, WL_LINK_DOWN);
	hook_done(l);
}

static void
recv_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	wl_link *l = w->data;

	(void)loop;
	(void)revents;
	l->in_hook++;
	/* Bounded so that one busy peer cannot starve the others. */
	for (int i = 0; i < 256 && !l->close_pending; i++) {
		nng_msg *m;
		int rv = nng_recvmsg(l->sock, &m, NNG_FLAG_NONBLOCK);
		if (rv != 0) {
			if (rv != NNG_EAGAIN)
				wl_log("LINK-ERROR", "%s: receive: %s", l->url,
				    nng_strerror(rv));
			break;
		}
		if (l->dropped != 0 &&
		    (uint32_t)nng_pipe_id(nng_msg_get_pipe(m)) == l->dropped) {
			nng_msg_free(m); /* sent before we dropped its peer */
			continue;
		}
		l->hooks.recv(l->arg, m);
	}
	hook_done(l);
}

static void
drain_backlog(wl_link *l)
{
	while (l->bcount > 0) {
		nng_msg *m = l->backlog[l->bhead];
		OFFER_TO_NNG(m);
		int rv = nng_sendmsg(l->sock, m, NNG_FLAG_NONBLOCK);
		if (rv == NNG_EAGAIN)
			break;
		if (rv != 0) {
			wl_log("LINK-ERROR", "%s: send: %s", l->url,
			    nng_strerror(rv));
			nng_msg_free(m);
		}
		l->bhead = (l->bhead + 1) % l->bcap;
		l->bcount--;
	}
	if (l->bcount == 0)
		ev_io_stop(l->loop, &l->wio);
	else
		ev_io_start(l->loop, &l->wio);
}

static void
send_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	(void)revents;
	drain_backlog(w->data);
}

wl_err
wl_link_listen(wl_link **out, struct ev_loop *loop, const char *url,
    uint32_t max_msg, const wl_link_hooks *hooks, void *arg)
{
	wl_link *l = calloc(1, sizeof(*l));
	const char *use_nng = getenv("WALLAROO_NNG_IPC");
	nng_listener lst;
	int rv, rfd, wfd;

	if (l == NULL)
		return WL_ERR_NOMEM;
	/* nng's own ipc transport stays available for comparison
	 * (bench/run --nng-ipc) and for its tests. */
	if (strncmp(url, "ipc://", 6) == 0 &&
	    (use_nng == NULL || strcmp(use_nng, "1") != 0)) {
		wl_err e = wl_ipclink_listen(&l->ipc, loop, url, max_msg,
		    hooks, arg);
		if (e != WL_OK) {
			free(l);
			return e;
		}
		*out = l;
		return WL_OK;
	}
	l->loop = loop;
	l->hooks = *hooks;
	l->arg = arg;
	snprintf(l->url, sizeof(l->url), "%s", url);
	if ((rv = nng_pair1_open(&l->sock)) != 0)
		goto fail_nosock;
	/* nng's defaults (no size limit, no buffers) are wrong for us: an
	 * unlimited size lets a broken peer exhaust memory, and zero-length
	 * buffers turn every send into a rendezvous. */
	if ((rv = nng_socket_set_size(l->sock, NNG_OPT_RECVMAXSZ, max_msg)) != 0 ||
	    (rv = nng_socket_set_int(l->sock, NNG_OPT_RECVBUF, 64)) != 0 ||
	    (rv = nng_socket_set_int(l->sock, NNG_OPT_SENDBUF, 64)) != 0 ||
	    (rv = nng_pipe_notify(l->sock, NNG_PIPE_EV_ADD_POST, pipe_cb, l)) != 0 ||
	    (rv = nng_pipe_notify(l->sock, NNG_PIPE_EV_REM_POST, pipe_cb, l)) != 0 ||
	    (rv = nng_listener_create(&lst, l->sock, url)) != 0)
		goto fail;
	if (strncmp(url, "ipc://", 6) == 0 &&
	    (rv = nng_listener_set_int(lst, NNG_OPT_IPC_PERMISSIONS, 0600)) != 0)
		goto fail;
	if ((rv = nng_listener_start(lst, 0)) != 0 ||
	    (rv = nng_socket_get_int(l->sock, NNG_OPT_RECVFD, &rfd)) != 0 ||
	    (rv = nng_socket_get_int(l->sock, NNG_OPT_SENDFD, &wfd)) != 0)
		goto fail;
	ev_io_init(&l->rio, recv_cb, rfd, EV_READ);
	ev_io_init(&l->wio, send_cb, wfd, EV_READ);
	ev_async_init(&l->wake, wake_cb);
	ev_timer_init(&l->drop_timer, drop_timer_cb, 0., 0.);
	l->rio.data = l->wio.data = l->wake.data = l->drop_timer.data = l;
	ev_io_start(loop, &l->rio);
	ev_async_start(loop, &l->wake);
	*out = l;
	return WL_OK;
fail:
	nng_close(l->sock);
fail_nosock:
	wl_log("LINK-ERROR", "%s: cannot listen: %s", url, nng_strerror(rv));
	free(l);
	return WL_ERR_NNG;
}

wl_err
wl_link_send(wl_link *l, nng_msg *m)
{
	if (l->ipc != NULL)
		return wl_ipclink_send(l->ipc, m);
	if (l->bcount == 0) {
		OFFER_TO_NNG(m);
		int rv = nng_sendmsg(l->sock, m, NNG_FLAG_NONBLOCK);
		if (rv == 0)
			return WL_OK;
		if (rv != NNG_EAGAIN) {
			wl_log("LINK-ERROR", "%s: send: %s", l->url,
			    nng_strerror(rv));
			nng_msg_free(m);
			return WL_ERR_NNG;
		}
	}
	if (l->bcount == l->bcap) {
		size_t ncap = l->bcap ? l->bcap * 2 : 8;
		nng_msg **nb = malloc(ncap * sizeof(*nb));
		if (nb == NULL) {
			nng_msg_free(m);
			return WL_ERR_NOMEM;
		}
		for (size_t i = 0; i < l->bcount; i++)
			nb[i] = l->backlog[(l->bhead + i) % l->bcap];
		free(l->backlog);
		l->backlog = nb;
		l->bcap = ncap;
		l->bhead = 0;
	}
	l->backlog[(l->bhead + l->bcount) % l->bcap] = m;
	l->bcount++;
	ev_io_start(l->loop, &l->wio);
	return WL_OK;
}

size_t
wl_link_backlog(const wl_link *l)
{
	if (l->ipc != NULL)
		return wl_ipclink_backlog(l->ipc);
	return l->bcount;
}

/* Links whose socket a closer thread has not finished closing yet. */
static atomic_int closing_links;

static void *
closer_main(void *arg)
{
	wl_link *l = arg;

	/* nng_close also waits for pipe_cb calls in progress, which see
	 * `closing` and leave the (stopped) watchers alone: after it
	 * returns nothing of nng refers to l. */
	nng_close(l->sock);
	free(l);
	atomic_fetch_sub(&closing_links, 1);
	return NULL;
}

/*
 * nng 1.5.2 can block for ever in nng_close when a message is arriving on
 * the socket (nanomsg/nng#1543), which a runner that is being replaced
 * while it still sends may cause. The loop thread must never wait on
 * that, so the socket is closed by a short-lived detached thread; the
 * loop only stops its watchers and frees the backlog. Each incarnation
 * listens on its own address, so a socket still closing is in nobody's
 * way.
 */
static void
link_free(wl_link *l)
{
	pthread_t t;
	pthread_attr_t attr;
	bool started = false;

	atomic_store(&l->closing, true);
	ev_io_stop(l->loop, &l->rio);
	ev_io_stop(l->loop, &l->wio);
	ev_async_stop(l->loop, &l->wake);
	ev_timer_stop(l->loop, &l->drop_timer);
	while (l->bcount > 0) {
		nng_msg_free(l->backlog[l->bhead]);
		l->bhead = (l->bhead + 1) % l->bcap;
		l->bcount--;
	}
	free(l->backlog);
	l->backlog = NULL;
	atomic_fetch_add(&closing_links, 1);
	if (pthread_attr_init(&attr) == 0) {
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		started = pthread_create(&t, &attr, closer_main, l) == 0;
		pthread_attr_destroy(&attr);
	}
	if (!started)
		closer_main(l); /* no thread to be had: close here */
}

static void
close_dropped(wl_link *l)
{
	nng_pipe p = NNG_PIPE_INITIALIZER;

	ev_timer_stop(l->loop, &l->drop_timer);
	/* What we had queued was meant for that peer: it must not reach the
	 * next one. */
	while (l->bcount > 0) {
		nng_msg_free(l->backlog[l->bhead]);
		l->bhead = (l->bhead + 1) % l->bcap;
		l->bcount--;
	}
	ev_io_stop(l->loop, &l->wio);
	p.id = l->dropped;
	(void)nng_pipe_close(p); /* already gone is fine */
}

static void
drop_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	close_dropped(w->data);
}

void
wl_link_drop_peer(wl_link *l, double delay)
{
	uint32_t id;

	if (l->ipc != NULL) {
		wl_ipclink_drop_peer(l->ipc, delay);
		return;
	}
	id = atomic_load(&l->peer);
	if (id == 0 || id == l->dropped)
		return;
	if (ev_is_active(&l->drop_timer))
		close_dropped(l); /* an earlier one still waiting: now */
	l->dropped = id;
	if (delay <= 0) {
		close_dropped(l);
		return;
	}
	/* pair1 admits no other peer while this one is connected, so
	 * nothing sent in the meantime can reach someone else. */
	ev_timer_set(&l->drop_timer, delay, 0.);
	ev_timer_start(l->loop, &l->drop_timer);
}

int
wl_link_quiesce(double timeout_s)
{
	struct timespec pause = { 0, 2 * 1000 * 1000 };
	double waited = 0;
	int n;

	while ((n = atomic_load(&closing_links)) > 0 && waited < timeout_s) {
		nanosleep(&pause, NULL);
		waited += 0.002;
	}
	return n;
}

void
wl_link_close(wl_link *l)
{
	if (l == NULL)
		return;
	if (l->ipc != NULL) {
		/* It defers its own free inside a hook, and never refers
		 * back to this wrapper. */
		wl_ipclink_close(l->ipc);
		free(l);
		return;
	}
	if (l->in_hook > 0) {
		l->close_pending = true;
		return;
	}
	link_free(l);
}
