/*
 * ipclink_test.c -- the link on ipc:// addresses, where the loop speaks
 * nng's ipc framing itself (ipclink.c): against a real nng pair1 peer
 * (what pynng and the Go SDK's mangos are), and against a bare unix
 * socket that sends what nng never would: another protocol, a frame of
 * the wrong type, too many hops, a frame cut into single bytes, a second
 * connection while one is paired.
 *
 * One thread, no sleeps: the loop runs until a condition holds (see
 * RUN_UNTIL in linktest.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "linktest.h"
#include "tap.h"

#define MAX_MSG (1u << 20)  /* the link's receive limit (with the header) */
#define NBIG 2000           /* messages sent while the peer does not read */
#define HUGE_SIZE (300u * 1024u) /* larger than the link's read buffer */

/* One frame as the raw peer writes it: type 1, u64 length (header
 * included), the 4-byte hop count, the body. Returns its length. */
static size_t
frame(uint8_t *out, uint8_t type, uint32_t hops, const void *body,
    size_t n)
{
	uint64_t len = n + 4;

	out[0] = type;
	for (int i = 0; i < 8; i++)
		out[1 + i] = (uint8_t)(len >> (56 - 8 * i));
	for (int i = 0; i < 4; i++)
		out[9 + i] = (uint8_t)(hops >> (24 - 8 * i));
	memcpy(out + 13, body, n);
	return 13 + n;
}

static bool
write_all(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n > 0) {
		ssize_t w = write(fd, b, n);
		if (w <= 0)
			return false;
		b += w;
		n -= (size_t)w;
	}
	return true;
}

/* The link's 8-byte header has arrived on `fd` and says pair1. */
static bool
got_hello(int fd)
{
	uint8_t h[8];

	return recv(fd, h, sizeof(h), MSG_DONTWAIT | MSG_PEEK) == 8 &&
	    read(fd, h, sizeof(h)) == 8 && memcmp(h, pair1_hello, 8) == 0;
}

/* Reads one frame sent by the link into `body`; its length, or -1. */
static long
raw_read_frame(int fd, uint8_t *body, size_t cap)
{
	uint8_t h[13];
	uint64_t len = 0;

	if (recv(fd, h, sizeof(h), MSG_WAITALL) != (ssize_t)sizeof(h) ||
	    h[0] != 1)
		return -1;
	for (int i = 0; i < 8; i++)
		len = len << 8 | h[1 + i];
	/* The link, like nng's pair1, sends a hop count of 1. */
	if (len < 4 || len - 4 > cap || h[9] || h[10] || h[11] || h[12] != 1)
		return -1;
	if (len > 4 && recv(fd, body, len - 4, MSG_WAITALL) != (ssize_t)(len - 4))
		return -1;
	return (long)(len - 4);
}

int
main(void)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	char dir[] = "/tmp/wl-ipclink-test-XXXXXX";
	char path[128], url[160];
	static uint8_t buf[HUGE_SIZE + 64];
	ev_timer tick;
	rec r;
	nng_socket peer;
	nng_msg *m;
	struct stat st;
	wl_link *l, *l2;
	char big[BIG_SIZE];
	bool ok;
	int nsent, raw, raw2, peer_fd;
	size_t n;

	if (loop == NULL || mkdtemp(dir) == NULL) {
		printf("Bail out! no loop or no temporary directory\n");
		return 1;
	}
	unsetenv("WALLAROO_NNG_IPC");
	ev_timer_init(&tick, tick_cb, 0.01, 0.01);
	ev_timer_start(loop, &tick);
	snprintf(path, sizeof(path), "%s/link.sock", dir);
	snprintf(url, sizeof(url), "ipc://%s", path);

	/* A socket file left by a crashed process is replaced; one that
	 * someone listens on is not. */
	{
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		int s = socket(AF_UNIX, SOCK_STREAM, 0);
		memcpy(sa.sun_path, path, strlen(path) + 1);
		ok = s >= 0 && bind(s, (struct sockaddr *)&sa, sizeof(sa)) == 0;
		close(s);
	}
	memset(&r, 0, sizeof(r));
	TAP_OK(ok && wl_link_listen(&l, loop, url, MAX_MSG, &hooks, &r) ==
	    WL_OK, "listen on %s, replacing a stale socket file", url);
	r.link = l;
	TAP_OK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600,
	    "the socket file has mode 0600 (%o)", st.st_mode & 0777);
	TAP_OK(wl_link_listen(&l2, loop, url, MAX_MSG, &hooks, &r) ==
	    WL_ERR_IO, "a second listener on the same path is refused");
	{
		char lurl[200];
		memset(lurl, 'a', sizeof(lurl));
		memcpy(lurl, "ipc:///", 7);
		lurl[sizeof(lurl) - 1] = '\0';
		TAP_OK(wl_link_listen(&l2, loop, lurl, MAX_MSG, &hooks, &r) ==
		    WL_ERR_CONFIG, "a path longer than a unix socket "
		    "allows is a configuration error");
	}

	/* Sent before anyone connects: waits for the peer. */
	m = msg_of("early", 5);
	TAP_OK(m != NULL && wl_link_send(l, m) == WL_OK &&
	    wl_link_backlog(l) == 1, "a send before the peer connects waits "
	    "in the backlog");

	ok = peer_open(&peer, url);
	RUN_UNTIL(loop, r.nevents > 0);
	TAP_OK(ok && r.nevents == 1 && r.events[0] == WL_LINK_UP,
	    "an nng pair1 socket dials the link: up");
	{
		nng_msg *pm = NULL;
		RUN_UNTIL(loop, nng_recvmsg(peer, &pm, NNG_FLAG_NONBLOCK) == 0);
		TAP_OK(pm != NULL && nng_msg_len(pm) == 5 &&
		    memcmp(nng_msg_body(pm), "early", 5) == 0 &&
		    wl_link_backlog(l) == 0,
		    "the nng peer receives what was sent before it came");
		nng_msg_free(pm);
	}

	ok = true;
	for (int i = 0; i < 10; i++) {
		char s[16];
		int k = snprintf(s, sizeof(s), "m%d", i);
		ok = ok && peer_send(peer, s, (size_t)k);
	}
	RUN_UNTIL(loop, r.nmsgs >= 10);
	for (int i = 0; i < 10 && ok; i++) {
		char s[16];
		snprintf(s, sizeof(s), "m%d", i);
		ok = strcmp(r.msgs[i], s) == 0;
	}
	TAP_OK(ok && r.nmsgs == 10, "the nng peer's messages reach the recv "
	    "hook in order (%d)", r.nmsgs);

	/* The peer does not read: the kernel's buffers fill and the rest
	 * waits in the backlog, partly written frames included. */
	memset(big, 'x', sizeof(big));
	ok = true;
	for (nsent = 0; nsent < NBIG && ok; nsent++) {
		uint32_t seq = (uint32_t)nsent;
		memcpy(big, &seq, sizeof(seq));
		ok = (m = msg_of(big, sizeof(big))) != NULL &&
		    wl_link_send(l, m) == WL_OK;
	}
	TAP_OK(ok && wl_link_backlog(l) > 0, "%d sends of %d bytes are "
	    "accepted, and %zu wait in the backlog", nsent, BIG_SIZE,
	    wl_link_backlog(l));
	ok = nng_socket_get_int(peer, NNG_OPT_RECVFD, &peer_fd) == 0;
	RUN_UNTIL(loop, peer_drain(peer) == NBIG && wl_link_backlog(l) == 0);
	TAP_OK(ok && peer_got == NBIG && peer_in_order, "once the peer reads, "
	    "all %d arrive whole and in order (%d)", NBIG, peer_got);

	/* One message larger than the link's read buffer, both ways. */
	memset(buf, 'h', HUGE_SIZE);
	ok = nng_send(peer, buf, HUGE_SIZE, 0) == 0;
	{
		int before = r.nmsgs;
		RUN_UNTIL(loop, r.nmsgs > before);
		TAP_OK(ok && r.nmsgs == before + 1 &&
		    strncmp(r.msgs[before], "hhhh", 4) == 0,
		    "a %u-byte message from the peer arrives as one", HUGE_SIZE);
	}
	m = msg_of(buf, HUGE_SIZE);
	ok = m != NULL && wl_link_send(l, m) == WL_OK;
	{
		nng_msg *pm = NULL;
		RUN_UNTIL(loop, nng_recvmsg(peer, &pm, NNG_FLAG_NONBLOCK) == 0);
		TAP_OK(ok && pm != NULL && nng_msg_len(pm) == HUGE_SIZE,
		    "and one sent to the peer arrives whole");
		nng_msg_free(pm);
	}

	/* pair1 has one peer: a second connection is refused while the
	 * first one is paired, and the first is undisturbed. */
	raw2 = raw_connect(path, pair1_hello);
	RUN_UNTIL(loop, raw2 >= 0 && closed_by_peer(raw2));
	TAP_OK(raw2 >= 0 && closed_by_peer(raw2) && r.nevents == 1,
	    "a second peer is refused while one is connected");
	close(raw2);
	ok = peer_send(peer, "still", 5);
	RUN_UNTIL(loop, r.nmsgs > 11);
	TAP_OK(ok && strcmp(r.msgs[11], "still") == 0,
	    "the first peer still gets through");

	nng_close(peer);
	RUN_UNTIL(loop, count_event(&r, WL_LINK_DOWN) > 0);
	TAP_OK(r.nevents == 2 && r.events[1] == WL_LINK_DOWN,
	    "the peer's departure: down");

	/* Bare peers. */
	{
		static const uint8_t pair0[8] = { 0, 'S', 'P', 0, 0, 0x10, 0, 0 };
		static const uint8_t junk[8] = { 'G', 'E', 'T', ' ', '/', ' ',
		    'H', 'T' };
		raw = raw_connect(path, pair0);
		RUN_UNTIL(loop, raw >= 0 && closed_by_peer(raw));
		TAP_OK(raw >= 0 && closed_by_peer(raw) && r.nevents == 2,
		    "a peer speaking pair0 is closed, never reported up");
		close(raw);
		raw = raw_connect(path, junk);
		RUN_UNTIL(loop, raw >= 0 && closed_by_peer(raw));
		TAP_OK(raw >= 0 && closed_by_peer(raw) && r.nevents == 2,
		    "so is one that does not start with an SP header");
		close(raw);
	}

	raw = raw_connect(path, pair1_hello);
	RUN_UNTIL(loop, count_event(&r, WL_LINK_UP) > 1);
	TAP_OK(raw >= 0 && got_hello(raw) && r.nevents == 3 &&
	    r.events[2] == WL_LINK_UP, "a bare pair1 peer is paired: up, "
	    "and gets the link's header");
	/* A frame cut into single bytes, each written on its own. */
	n = frame(buf, 1, 1, "bytes", 5);
	ok = true;
	for (size_t i = 0; i < n && ok; i++) {
		ok = write(raw, buf + i, 1) == 1;
		for (int k = 0; k < 3; k++)
			ev_run(loop, EVRUN_NOWAIT);
	}
	RUN_UNTIL(loop, r.nmsgs > 12);
	TAP_OK(ok && r.nmsgs == 13 && strcmp(r.msgs[12], "bytes") == 0,
	    "a frame written one byte at a time arrives once, whole");
	/* Too many hops: nng's pair1 drops such a message and goes on. */
	n = frame(buf, 1, 9, "hops", 4);
	n += frame(buf + n, 1, 1, "after", 5);
	ok = write_all(raw, buf, n);
	RUN_UNTIL(loop, r.nmsgs > 13);
	TAP_OK(ok && r.nmsgs == 14 && strcmp(r.msgs[13], "after") == 0 &&
	    r.nevents == 3, "a message over 8 hops is dropped, the next one "
	    "arrives");
	m = msg_of("to raw", 6);
	ok = m != NULL && wl_link_send(l, m) == WL_OK;
	{
		long got = raw_read_frame(raw, buf, sizeof(buf));
		TAP_OK(ok && got == 6 && memcmp(buf, "to raw", 6) == 0,
		    "the link frames its messages as nng does (type 1, u64 "
		    "length, hop count 1)");
	}
	n = frame(buf, 2, 1, "x", 1);
	ok = write_all(raw, buf, n);
	RUN_UNTIL(loop, count_event(&r, WL_LINK_DOWN) > 1);
	TAP_OK(ok && r.nevents == 4 && r.events[3] == WL_LINK_DOWN &&
	    r.nmsgs == 14, "a frame of type 2 ends the connection: down, and "
	    "nothing reaches the recv hook");
	close(raw);

	raw = raw_connect(path, pair1_hello);
	RUN_UNTIL(loop, count_event(&r, WL_LINK_UP) > 2);
	ok = raw >= 0 && got_hello(raw) && raw_announce(raw, MAX_MSG + 1);
	RUN_UNTIL(loop, count_event(&r, WL_LINK_DOWN) > 2);
	TAP_OK(ok && r.nevents == 6 && r.events[5] == WL_LINK_DOWN &&
	    r.nmsgs == 14, "a message announced over the limit ends the "
	    "connection before its body is read");
	RUN_UNTIL(loop, closed_by_peer(raw));
	TAP_OK(closed_by_peer(raw), "the peer sees its connection closed");
	close(raw);

	raw = raw_connect(path, pair1_hello);
	RUN_UNTIL(loop, count_event(&r, WL_LINK_UP) > 3);
	n = frame(buf, 1, 0x100, "x", 1);
	ok = raw >= 0 && got_hello(raw) && write_all(raw, buf, n);
	RUN_UNTIL(loop, count_event(&r, WL_LINK_DOWN) > 3);
	TAP_OK(ok && r.nevents == 8 && r.nmsgs == 14, "a malformed pair1 "
	    "header (hop count over 255) ends the connection");
	close(raw);

	/* Dropping the peer: it reads what we send during the delay, what
	 * it sends is discarded, then it is disconnected and the next one
	 * may come. */
	raw = raw_connect(path, pair1_hello);
	RUN_UNTIL(loop, count_event(&r, WL_LINK_UP) > 4);
	ok = raw >= 0 && got_hello(raw);
	wl_link_drop_peer(l, 0.05);
	m = msg_of("bye", 3);
	ok = ok && m != NULL && wl_link_send(l, m) == WL_OK;
	n = frame(buf, 1, 1, "late", 4);
	ok = ok && write_all(raw, buf, n);
	{
		long got = raw_read_frame(raw, buf, sizeof(buf));
		TAP_OK(ok && got == 3 && memcmp(buf, "bye", 3) == 0 &&
		    r.nevents == 9, "a dropped peer still reads what is sent "
		    "during the delay");
	}
	RUN_UNTIL(loop, count_event(&r, WL_LINK_DOWN) > 4);
	TAP_OK(r.nevents == 10 && r.events[9] == WL_LINK_DOWN &&
	    r.nmsgs == 14 && closed_by_peer(raw), "then it is disconnected: "
	    "down, and its late message was discarded");
	close(raw);

	/* Closing from the recv hook, with more messages behind in the
	 * same read: the hook sees none of them, nor any event. */
	r.close_on = "close";
	raw = raw_connect(path, pair1_hello);
	RUN_UNTIL(loop, count_event(&r, WL_LINK_UP) > 5);
	n = frame(buf, 1, 1, "a", 1);
	n += frame(buf + n, 1, 1, "close", 5);
	n += frame(buf + n, 1, 1, "b", 1);
	n += frame(buf + n, 1, 1, "c", 1);
	ok = raw >= 0 && got_hello(raw) && write_all(raw, buf, n);
	RUN_UNTIL(loop, r.closed);
	for (int i = 0; i < 20; i++)
		ev_run(loop, EVRUN_NOWAIT);
	TAP_OK(ok && r.closed && r.nmsgs == 16 && r.hooks_after_close == 0,
	    "wl_link_close inside the recv hook: no hook runs after it "
	    "(%d messages, %d late hooks)", r.nmsgs, r.hooks_after_close);
	TAP_OK(closed_by_peer(raw), "the peer sees the connection closed");
	TAP_OK(stat(path, &st) != 0 && errno == ENOENT,
	    "the socket file is removed");
	close(raw);

	wl_link_close(NULL);
	TAP_OK(1, "close accepts NULL");
	ev_timer_stop(loop, &tick);
	ev_loop_destroy(loop);
	rmdir(dir);
	return TAP_DONE();
}
