/*
 * link_test.c -- an nng pair1 link in a libev loop, against a plain nng
 * pair1 peer dialing it: the up and down events, ordered delivery both
 * ways, the backlog when the peer does not read, the receive size limit,
 * closing from inside a hook, and the mode of the ipc socket file.
 *
 * The peer that breaks the size limit is a bare unix socket speaking
 * nng's ipc framing by hand: it can announce any length, and closing it
 * involves no nng dialer (nng 1.5.2 sometimes leaks a dialer whose
 * connection the other side dropped for size, which LeakSanitizer then
 * reports).
 *
 * ipc:// addresses are served by ipclink.c unless WALLAROO_NNG_IPC=1;
 * this test sets it, to test the nng transport the link keeps for other
 * addresses (ipclink_test.c tests the other).
 *
 * The test runs on one thread and never sleeps: it drives the loop with
 * EVRUN_ONCE until a condition holds or a deadline passes. A repeating
 * tick timer bounds each EVRUN_ONCE, because some conditions (the peer
 * having received something) are not events of this loop.
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>

#include "link.h"
#include "linktest.h"
#include "tap.h"

#define MAX_MSG 1024        /* the link's receive limit */
#define NBIG 2000           /* messages sent while the peer does not read */

/* The peer reads whenever its receive descriptor says it can: the loop
 * then wakes for the peer as it would for a real process. */
static void
peer_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	nng_socket *s = w->data;

	(void)loop;
	(void)revents;
	peer_drain(*s);
}

/*
 * Messages taken off the wire by the link's socket: the newest socket but
 * the peer's (sockets closed before may linger in the statistics a
 * while). nng's statistics are the one view of a socket the test does not
 * own.
 *
 * nng 1.5.2 can hang for ever in nng_close when a message is arriving on
 * the socket being closed (nanomsg/nng#1543); a test that closes the link
 * must first know that nothing is still on the wire.
 */
static uint64_t
link_rx_msgs(nng_socket peer)
{
	nng_stat *all, *s;
	uint64_t n = 0, newest = 0;

	if (nng_stats_get(&all) != 0)
		return 0;
	for (s = nng_stat_child(all); s != NULL; s = nng_stat_next(s)) {
		nng_stat *id = nng_stat_find(s, "id");
		nng_stat *rx = nng_stat_find(s, "rx_msgs");
		if (strcmp(nng_stat_name(s), "socket") == 0 && id != NULL &&
		    rx != NULL && nng_stat_value(id) > newest &&
		    nng_stat_value(id) != (uint64_t)nng_socket_id(peer)) {
			newest = nng_stat_value(id);
			n = nng_stat_value(rx);
		}
	}
	nng_stats_free(all);
	return n;
}

int
main(void)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	char dir[] = "/tmp/wl-link-test-XXXXXX";
	char path[128], url[160];
	ev_timer tick;
	ev_io peer_rio;
	rec r;
	nng_socket peer;
	nng_msg *m;
	struct stat st;
	wl_link *l;
	char big[BIG_SIZE];
	bool ok;
	int nsent, peer_fd, raw;

	setenv("WALLAROO_NNG_IPC", "1", 1);
	if (loop == NULL || mkdtemp(dir) == NULL) {
		printf("Bail out! no loop or no temporary directory\n");
		return 1;
	}
	ev_timer_init(&tick, tick_cb, 0.01, 0.01);
	ev_timer_start(loop, &tick);
	snprintf(path, sizeof(path), "%s/link.sock", dir);
	snprintf(url, sizeof(url), "ipc://%s", path);

	memset(&r, 0, sizeof(r));
	memset(&st, 0, sizeof(st));
	TAP_OK(wl_link_listen(&l, loop, url, MAX_MSG, &hooks, &r) == WL_OK,
	    "listen on %s", url);
	r.link = l;
	TAP_OK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600,
	    "the ipc socket file has mode 0600 (%o)", st.st_mode & 0777);

	ok = peer_open(&peer, url);
	TAP_OK(ok, "a plain pair1 socket dials the link");
	RUN_UNTIL(loop, r.nevents > 0);
	TAP_OK(r.nevents == 1 && r.events[0] == WL_LINK_UP,
	    "the link reports the peer up");

	ok = true;
	for (int i = 0; i < 10; i++) {
		char s[16];
		int n = snprintf(s, sizeof(s), "m%d", i);
		ok = ok && peer_send(peer, s, (size_t)n);
	}
	RUN_UNTIL(loop, r.nmsgs >= 10);
	for (int i = 0; i < 10 && ok; i++) {
		char s[16];
		snprintf(s, sizeof(s), "m%d", i);
		ok = strcmp(r.msgs[i], s) == 0;
	}
	TAP_OK(ok && r.nmsgs == 10, "messages from the peer reach the recv "
	    "hook in order (%d)", r.nmsgs);

	m = msg_of("hello", 5);
	TAP_OK(m != NULL && wl_link_send(l, m) == WL_OK, "send to the peer");
	{
		nng_msg *pm = NULL;
		RUN_UNTIL(loop, nng_recvmsg(peer, &pm, NNG_FLAG_NONBLOCK) == 0);
		TAP_OK(pm != NULL && nng_msg_len(pm) == 5 &&
		    memcmp(nng_msg_body(pm), "hello", 5) == 0,
		    "the peer receives what the link sent");
		nng_msg_free(pm);
	}

	/* The peer does not read: nng's buffers and the kernel's fill up,
	 * and the rest must wait in the link's backlog. */
	memset(big, 'x', sizeof(big));
	ok = true;
	for (nsent = 0; nsent < NBIG && ok; nsent++) {
		uint32_t seq = (uint32_t)nsent;
		memcpy(big, &seq, sizeof(seq));
		ok = (m = msg_of(big, sizeof(big))) != NULL &&
		    wl_link_send(l, m) == WL_OK;
	}
	TAP_OK(ok, "%d sends of %d bytes are accepted", nsent, BIG_SIZE);
	TAP_OK(wl_link_backlog(l) > 0, "what nng cannot take waits in the "
	    "backlog (%zu)", wl_link_backlog(l));
	ok = nng_socket_get_int(peer, NNG_OPT_RECVFD, &peer_fd) == 0;
	ev_io_init(&peer_rio, peer_read_cb, peer_fd, EV_READ);
	peer_rio.data = &peer;
	ev_io_start(loop, &peer_rio);
	RUN_UNTIL(loop, peer_drain(peer) == NBIG && wl_link_backlog(l) == 0);
	ev_io_stop(loop, &peer_rio);
	TAP_OK(ok && peer_got == NBIG && peer_in_order, "once the peer "
	    "reads, all %d arrive in order (%d)", NBIG, peer_got);
	TAP_OK(wl_link_backlog(l) == 0, "the backlog is empty again");

	nng_close(peer);
	RUN_UNTIL(loop, count_event(&r, WL_LINK_DOWN) > 0);
	TAP_OK(r.nevents == 2 && r.events[1] == WL_LINK_DOWN,
	    "the link reports the peer's departure down");

	raw = raw_dial(path);
	RUN_UNTIL(loop, count_event(&r, WL_LINK_UP) > 1);
	TAP_OK(raw >= 0 && r.nevents == 3 && r.events[2] == WL_LINK_UP,
	    "another peer may then connect: up again");
	TAP_OK(raw_announce(raw, MAX_MSG + 1),
	    "the peer announces a message over the limit");
	RUN_UNTIL(loop, count_event(&r, WL_LINK_DOWN) > 1);
	TAP_OK(r.nevents == 4 && r.events[3] == WL_LINK_DOWN && r.nmsgs == 10,
	    "nng drops the connection: the link reports it down, and nothing "
	    "reaches the recv hook");
	RUN_UNTIL(loop, closed_by_peer(raw));
	TAP_OK(closed_by_peer(raw), "the peer sees its connection closed");
	close(raw);
	wl_link_close(l);

	/*
	 * Closing from the recv hook. The peer's four messages must all have
	 * reached the link's socket before the loop runs: then "a" and
	 * "close" come in one batch with "b" and "c" right behind them, and
	 * the hook must see neither, nor the peer's departure. Waiting also
	 * keeps nng 1.5.2 from hanging in nng_close, which it may do when a
	 * message is still on the wire (see link_rx_msgs).
	 */
	memset(&r, 0, sizeof(r));
	r.close_on = "close";
	atomic_store(&peer_removed, 0);
	TAP_OK(wl_link_quiesce(5.0) == 0,
	    "the closed link's socket finishes closing on its own thread");
	TAP_OK(wl_link_listen(&l, loop, url, MAX_MSG, &hooks, &r) == WL_OK,
	    "listen again on the same address");
	r.link = l;
	ok = peer_open(&peer, url);
	RUN_UNTIL(loop, r.nevents > 0);
	ok = ok && peer_send(peer, "a", 1) && peer_send(peer, "close", 5) &&
	    peer_send(peer, "b", 1) && peer_send(peer, "c", 1);
	/* Polled without running the loop, which would let the hook close
	 * the link before all four are in. */
	for (double dl = mono() + 5.0; link_rx_msgs(peer) < 4 && mono() < dl;)
		;
	TAP_OK(ok && link_rx_msgs(peer) == 4, "the peer sends a, close, b, c "
	    "and the link's socket holds them (%llu)",
	    (unsigned long long)link_rx_msgs(peer));
	RUN_UNTIL(loop, r.closed && atomic_load(&peer_removed));
	TAP_OK(r.closed && atomic_load(&peer_removed), "wl_link_close inside "
	    "the recv hook closes the link: the peer sees it go");
	for (int i = 0; i < 20; i++)
		ev_run(loop, EVRUN_NOWAIT);
	TAP_OK(r.nmsgs == 2 && r.hooks_after_close == 0,
	    "no hook runs after the close (%d messages, %d late hooks)",
	    r.nmsgs, r.hooks_after_close);
	nng_close(peer);

	wl_link_close(NULL);
	TAP_OK(1, "close accepts NULL");
	TAP_OK(wl_link_quiesce(5.0) == 0,
	    "every closed link's socket has finished closing");

	ev_timer_stop(loop, &tick);
	ev_loop_destroy(loop);
	unlink(path);
	rmdir(dir);
	return TAP_DONE();
}
