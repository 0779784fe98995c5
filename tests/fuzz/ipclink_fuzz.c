/*
 * ipclink_fuzz.c -- the bytes a runner sends over its ipc:// link, read by
 * the engine's own implementation of nng's ipc framing (engine/ipclink.c),
 * from a real unix socket on a real libev loop.
 *
 * The first input byte says where the peer's 8-byte SP header comes from:
 * even, a valid pair1 header is sent first; odd, the next 8 input bytes
 * are the header. The rest is the stream, then the peer shuts its side.
 * Beyond the sanitizers: the messages delivered must be exactly those a
 * plain reading of the framing gives (protocol/README.md, "Transport"),
 * in order, up to the first frame that breaks a rule; a frame that crossed
 * more than 8 hops is read and dropped, as nng's pair1 drops it.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <ev.h>
#include <nng/nng.h>

#include "fuzz.h"
#include "ipclink.h"

const char wl_fuzz_corpus[] = "ipclink";

#define MAX_MSG 300u   /* the link's limit, the 4-byte hop count included */
#define MAX_WANT 1024

static const uint8_t pair1_hello[8] = { 0, 'S', 'P', 0, 0, 0x11, 0, 0 };

typedef struct {
	const uint8_t *p;
	size_t n;
} span;

typedef struct {
	span want[MAX_WANT];
	size_t nwant, seen;
	bool wrong;
} check;

static uint64_t
be(const uint8_t *p, int n)
{
	uint64_t v = 0;

	for (int i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

/* The messages of `p` (after the header) that a pair1 peer delivers. */
static void
reference(check *c, const uint8_t *hello, const uint8_t *p, size_t n)
{
	size_t off = 0;

	if (memcmp(hello, pair1_hello, 8) != 0)
		return; /* not SP, or not pair1: closed before any message */
	while (n - off >= 13 && c->nwant < MAX_WANT) {
		uint64_t len = be(p + off + 1, 8);
		uint32_t hops = (uint32_t)be(p + off + 9, 4);

		if (p[off] != 1 || len > MAX_MSG || len < 4 || hops > 0xff ||
		    n - off - 13 < len - 4)
			return;
		if (hops <= 8) {
			c->want[c->nwant].p = p + off + 13;
			c->want[c->nwant++].n = (size_t)len - 4;
		}
		off += 9 + (size_t)len;
	}
}

static void
on_recv(void *arg, nng_msg *m)
{
	check *c = arg;
	size_t n = nng_msg_len(m);

	if (c->seen >= c->nwant || n != c->want[c->seen].n ||
	    (n && memcmp(nng_msg_body(m), c->want[c->seen].p, n)))
		c->wrong = true;
	c->seen++;
	nng_msg_free(m);
}

static void
on_event(void *arg, wl_link_event ev)
{
	(void)arg;
	(void)ev;
}

static const wl_link_hooks hooks = { on_recv, on_event };

static void
tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
}

/* True once the link has closed our connection (its own header, which it
 * sends first, is read and thrown away). */
static bool
closed(int fd)
{
	char b[64];
	ssize_t n = recv(fd, b, sizeof(b), MSG_DONTWAIT);

	return n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct ev_loop *loop;
	static wl_ipclink *link;
	static check c;
	static char path[64];
	static ev_timer tick;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	const uint8_t *hello = pair1_hello, *p;
	size_t n;
	int fd;

	if (size < 1 || (data[0] & 1 && size < 9))
		return 0;
	if (loop == NULL) {
		char url[80];

		loop = ev_loop_new(EVFLAG_AUTO);
		snprintf(path, sizeof(path), "/tmp/wl-ipclink-fuzz-%d.sock",
		    (int)getpid());
		snprintf(url, sizeof(url), "ipc://%s", path);
		if (wl_ipclink_listen(&link, loop, url, MAX_MSG, &hooks,
		    &c) != WL_OK)
			abort();
		/* The client socket is not a watcher of the loop. */
		ev_timer_init(&tick, tick_cb, 0.001, 0.001);
		ev_timer_start(loop, &tick);
	}
	if (data[0] & 1)
		hello = data + 1;
	p = data + (data[0] & 1 ? 9 : 1);
	n = size - (size_t)(p - data);
	memset(&c, 0, sizeof(c));
	reference(&c, hello, p, n);

	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    send(fd, hello, 8, MSG_NOSIGNAL) != 8)
		abort();
	/* The link may close on a bad frame before reading the rest. */
	(void)!send(fd, p, n, MSG_NOSIGNAL);
	shutdown(fd, SHUT_WR);
	while (!closed(fd))
		ev_run(loop, EVRUN_ONCE);
	close(fd);
	if (c.wrong || c.seen != c.nwant) {
		fprintf(stderr, "%zu messages delivered, %zu expected\n",
		    c.seen, c.nwant);
		WL_FUZZ_FAIL("the link's messages are not the stream's");
	}
	return 0;
}
