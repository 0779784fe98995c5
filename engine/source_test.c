/*
 * source_test.c -- the built-in sources, driven by a real libev loop:
 * file sources over temporary files (length and line framing, frames over
 * the limit, a truncated last frame, back pressure, a missing file) and a
 * TCP source on 127.0.0.1 with plain client sockets (frames arrive, a bad
 * frame closes only its own connection, stop ends the source).
 *
 * Nothing sleeps: the loop is driven until a condition holds or a deadline
 * passes. A repeating tick timer bounds each EVRUN_ONCE, because a test
 * client's socket is not a watcher of the loop.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "source.h"
#include "tap.h"

#define NPRESSURE 100000 /* lines in the back pressure file: ~5 reads */

static double
mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

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

/* One event as the hook saw it. */
typedef struct {
	int source;
	uint32_t stream_id;
	uint64_t message_id;
	char payload[64];
	uint32_t plen;
	uint64_t sum;    /* of the whole payload: see payload_sum() */
} seen;

/* What the hooks saw. */
typedef struct {
	seen *ev;
	size_t n, cap;
	bool pressure;   /* what the pressure hook answers */
	int ended;
	int ended_source;
} rec;

/* A checksum that also depends on each byte's place. */
static uint64_t
payload_sum(const uint8_t *p, size_t n)
{
	uint64_t h = 1469598103934665603ull;

	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 1099511628211ull;
	return h;
}

static void
on_event(void *arg, int source, wl_event *e)
{
	rec *r = arg;
	seen *s;

	if (r->n == r->cap) {
		r->cap = r->cap ? r->cap * 2 : 64;
		r->ev = realloc(r->ev, r->cap * sizeof(*r->ev));
	}
	s = &r->ev[r->n++];
	s->source = source;
	s->stream_id = e->stream_id;
	s->message_id = e->message_id;
	s->plen = e->plen;
	s->sum = payload_sum(e->payload, e->plen);
	memcpy(s->payload, e->payload, e->plen < 63 ? e->plen : 63);
	s->payload[e->plen < 63 ? e->plen : 63] = '\0';
	wl_event_free(e);
}

static bool
on_pressure(void *arg)
{
	return ((rec *)arg)->pressure;
}

static void
on_ended(void *arg, int source)
{
	rec *r = arg;

	r->ended++;
	r->ended_source = source;
}

static const wl_source_hooks hooks = { on_event, on_pressure, on_ended };

static void
rec_reset(rec *r)
{
	free(r->ev);
	memset(r, 0, sizeof(*r));
}

/* True when the events seen are exactly `want` (n strings), in order, with
 * message ids 1..n and one stream id. */
static bool
events_are(const rec *r, const char *const want[], size_t n)
{
	if (r->n != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(r->ev[i].payload, want[i]) != 0 ||
		    r->ev[i].plen != strlen(want[i]) ||
		    r->ev[i].message_id != i + 1 ||
		    r->ev[i].stream_id != r->ev[0].stream_id)
			return false;
	}
	return true;
}

static char tmpdir[] = "/tmp/wl-source-test-XXXXXX";

static char *
write_file(const char *name, const void *p, size_t n)
{
	static char path[8][128];
	static int next;
	char *f = path[next++ % 8];
	FILE *fp;

	snprintf(f, 128, "%s/%s", tmpdir, name);
	if ((fp = fopen(f, "wb")) == NULL)
		return f;
	fwrite(p, 1, n, fp);
	fclose(fp);
	return f;
}

/* Appends one length-framed payload to buf at *off. */
static void
put_frame(uint8_t *buf, size_t *off, const char *s)
{
	uint32_t n = htonl((uint32_t)strlen(s));

	memcpy(buf + *off, &n, 4);
	memcpy(buf + *off + 4, s, strlen(s));
	*off += 4 + strlen(s);
}

static wl_io
file_def(const char *name, char *path, wl_framing framing, uint32_t max)
{
	wl_io d;

	memset(&d, 0, sizeof(d));
	d.name = (char *)name;
	d.type = WL_IO_FILE;
	d.framing = framing;
	d.path = path;
	d.max_frame_bytes = max;
	d.after = -1;
	return d;
}

/* Runs a file source to its end; returns it (or NULL if it did not
 * start). */
static wl_source *
run_file(struct ev_loop *loop, const wl_io *def, int index, rec *r)
{
	wl_source *s;

	if (wl_source_new(&s, loop, def, index, &hooks, r) != WL_OK)
		return NULL;
	if (wl_source_start(s) != WL_OK) {
		wl_source_free(s);
		return NULL;
	}
	RUN_UNTIL(loop, r->ended > 0);
	return s;
}

static void
test_files(struct ev_loop *loop)
{
	static const char *const frames[] = { "one", "", "three" };
	static const char *const lines[] = { "alpha", "", "beta", "gamma" };
	static const char *const two[] = { "ok1", "ok2" };
	uint8_t buf[256];
	size_t off = 0;
	const char *text;
	wl_io def;
	wl_source *s;
	rec r;

	memset(&r, 0, sizeof(r));
	for (int i = 0; i < 3; i++)
		put_frame(buf, &off, frames[i]);
	def = file_def("len", write_file("len.bin", buf, off),
	    WL_FRAMING_LENGTH, 64);
	s = run_file(loop, &def, 2, &r);
	TAP_OK(s != NULL && r.ended == 1 && r.ended_source == 2 &&
	    wl_source_ended(s), "a length-framed file is read to its end");
	TAP_OK(events_are(&r, frames, 3), "its frames arrive in order, "
	    "message ids 1, 2, 3, an empty frame included");
	TAP_OK(r.n > 0 && r.ev[0].stream_id == 3 && r.ev[0].source == 2,
	    "source index 2 reads as stream 3");
	TAP_OK(s != NULL && wl_source_events(s) == 3 &&
	    wl_source_bytes(s) == 8 && wl_source_errors(s) == 0,
	    "counts: 3 events, 8 bytes, no errors");
	wl_source_free(s);
	rec_reset(&r);

	text = "alpha\r\n\nbeta\ngamma";
	def = file_def("lines", write_file("lines.txt", text, strlen(text)),
	    WL_FRAMING_LINE, 64);
	s = run_file(loop, &def, 0, &r);
	TAP_OK(s != NULL && events_are(&r, lines, 4) &&
	    r.ev[0].stream_id == 1 && wl_source_errors(s) == 0,
	    "line framing: \\r\\n stripped, an empty line kept, a last line "
	    "without \\n still a line");
	wl_source_free(s);
	rec_reset(&r);

	off = 0;
	put_frame(buf, &off, "ok1");
	put_frame(buf, &off, "ok2");
	put_frame(buf, &off, "this frame is longer than the limit");
	put_frame(buf, &off, "never");
	def = file_def("big", write_file("big.bin", buf, off),
	    WL_FRAMING_LENGTH, 8);
	s = run_file(loop, &def, 0, &r);
	TAP_OK(s != NULL && r.ended == 1 && events_are(&r, two, 2) &&
	    wl_source_errors(s) == 1, "a frame over max_frame_bytes ends the "
	    "source with one error, after the frames before it");
	wl_source_free(s);
	rec_reset(&r);

	text = "ok1\nok2\nthis line is too long\nnever\n";
	def = file_def("bigline", write_file("big.txt", text, strlen(text)),
	    WL_FRAMING_LINE, 8);
	s = run_file(loop, &def, 0, &r);
	TAP_OK(s != NULL && r.ended == 1 && events_are(&r, two, 2) &&
	    wl_source_errors(s) == 1, "so does a line over max_frame_bytes");
	wl_source_free(s);
	rec_reset(&r);

	off = 0;
	put_frame(buf, &off, "ok1");
	put_frame(buf, &off, "ok2");
	put_frame(buf, &off, "truncated");
	def = file_def("trunc", write_file("trunc.bin", buf, off - 4),
	    WL_FRAMING_LENGTH, 64);
	s = run_file(loop, &def, 0, &r);
	TAP_OK(s != NULL && r.ended == 1 && events_are(&r, two, 2) &&
	    wl_source_errors(s) == 1, "a length frame cut short at the end of "
	    "the file is an error; the frames before it arrive");
	wl_source_free(s);
	rec_reset(&r);

	def = file_def("missing", "/nonexistent/wl-source-test/none.bin",
	    WL_FRAMING_LENGTH, 64);
	s = NULL;
	TAP_OK(wl_source_new(&s, loop, &def, 0, &hooks, &r) == WL_OK &&
	    wl_source_start(s) == WL_ERR_IO && !wl_source_started(s),
	    "a missing file fails wl_source_start with WL_ERR_IO");
	wl_source_free(s);
	rec_reset(&r);
}

/* Fills p with n bytes that differ from frame to frame, never '\n'. */
static void
fill(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)('a' + (i * 7 + seed) % 26);
}

/*
 * Frames far larger than the reader's first buffer (two 32 KiB chunks),
 * up to the limit: the buffer grows for them, and every byte arrives.
 */
static void
test_large_frames(struct ev_loop *loop)
{
	static const size_t sizes[] = { 10, 70000, 1u << 20, 5, 300000,
	    (2u << 20) - 1, 3 };
	enum { N = sizeof(sizes) / sizeof(sizes[0]) };
	size_t total = 0, off = 0;
	uint8_t *file, *p;
	bool ok;
	wl_source *s;
	wl_io def;
	rec r;

	memset(&r, 0, sizeof(r));
	for (int i = 0; i < N; i++)
		total += sizes[i] + 4;
	file = malloc(total);
	for (int i = 0; i < N; i++) {
		uint32_t be = htonl((uint32_t)sizes[i]);
		memcpy(file + off, &be, 4);
		fill(file + off + 4, sizes[i], (unsigned)i);
		off += 4 + sizes[i];
	}
	def = file_def("large", write_file("large.bin", file, total),
	    WL_FRAMING_LENGTH, 2u << 20);
	s = run_file(loop, &def, 0, &r);
	ok = s != NULL && r.n == N && wl_source_errors(s) == 0;
	for (size_t i = 0, o = 4; ok && i < N; o += sizes[i] + 4, i++)
		ok = r.ev[i].plen == sizes[i] &&
		    r.ev[i].sum == payload_sum(file + o, sizes[i]);
	TAP_OK(ok, "length frames of 10 B to 2 MiB (the limit) arrive whole "
	    "and in order");
	wl_source_free(s);
	rec_reset(&r);

	/* The same as lines: the payloads hold no '\n'. */
	p = file;
	for (int i = 0; i < N; i++) {
		fill(p, sizes[i], (unsigned)i);
		p[sizes[i]] = '\n';
		p += sizes[i] + 1;
	}
	def = file_def("large-lines", write_file("large.txt", file,
	    (size_t)(p - file)), WL_FRAMING_LINE, 2u << 20);
	s = run_file(loop, &def, 0, &r);
	ok = s != NULL && r.n == N && wl_source_errors(s) == 0;
	p = file;
	for (size_t i = 0; ok && i < N; p += sizes[i] + 1, i++)
		ok = r.ev[i].plen == sizes[i] &&
		    r.ev[i].sum == payload_sum(p, sizes[i]);
	TAP_OK(ok, "so do lines of 10 B to 2 MiB");
	wl_source_free(s);
	rec_reset(&r);
	free(file);
}

static void
test_pressure(struct ev_loop *loop)
{
	size_t len = (size_t)NPRESSURE * 12;
	char *text = malloc(len + 1);
	size_t before;
	bool ok = true;
	wl_source *s;
	wl_io def;
	rec r;

	for (int i = 0; i < NPRESSURE; i++)
		snprintf(text + (size_t)i * 12, 13, "line-%06d\n", i);
	def = file_def("pressure", write_file("pressure.txt", text, len),
	    WL_FRAMING_LINE, 64);
	free(text);
	memset(&r, 0, sizeof(r));
	r.pressure = true;
	TAP_OK(wl_source_new(&s, loop, &def, 0, &hooks, &r) == WL_OK &&
	    wl_source_start(s) == WL_OK, "start a source over a %zu-byte file",
	    len);
	RUN_UNTIL(loop, wl_source_paused(s));
	before = r.n;
	TAP_OK(wl_source_paused(s) && before > 0 && before < NPRESSURE &&
	    wl_source_pauses(s) == 1, "the pressure hook pauses it after one "
	    "read (%zu events)", before);
	for (int i = 0; i < 10; i++)
		ev_run(loop, EVRUN_NOWAIT);
	TAP_OK(r.n == before && !wl_source_ended(s),
	    "a paused source reads nothing");
	r.pressure = false;
	wl_source_resume(s);
	TAP_OK(!wl_source_paused(s), "wl_source_resume unpauses it");
	RUN_UNTIL(loop, r.ended > 0);
	for (size_t i = 0; i < r.n && ok; i++) {
		char want[16];
		snprintf(want, sizeof(want), "line-%06d", (int)i);
		ok = strcmp(r.ev[i].payload, want) == 0 &&
		    r.ev[i].message_id == i + 1;
	}
	TAP_OK(r.ended == 1 && r.n == NPRESSURE && ok &&
	    wl_source_errors(s) == 0, "it then reads to the end, losing "
	    "nothing (%zu events)", r.n);
	wl_source_free(s);
	rec_reset(&r);
}

/* A connected, non-blocking client socket, or -1. */
static int
client(uint16_t port)
{
	struct sockaddr_in sa;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons(port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	/* A blocking connect to the loopback completes in the kernel's
	 * backlog without the loop accepting. */
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	fcntl(fd, F_SETFL, O_NONBLOCK);
	return fd;
}

static bool
send_frames(int fd, const char *const frames[], size_t n)
{
	uint8_t buf[512];
	size_t off = 0;

	for (size_t i = 0; i < n; i++)
		put_frame(buf, &off, frames[i]);
	return send(fd, buf, off, MSG_NOSIGNAL) == (ssize_t)off;
}

/* True once the peer has closed `fd` (EOF or reset). */
static bool
closed_by_peer(int fd)
{
	char b[16];
	ssize_t n = recv(fd, b, sizeof(b), 0);

	return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

static size_t
count_stream(const rec *r, uint32_t stream)
{
	size_t n = 0;

	for (size_t i = 0; i < r->n; i++)
		n += r->ev[i].stream_id == stream;
	return n;
}

static void
test_tcp(struct ev_loop *loop)
{
	static const char *const abc[] = { "a", "bb", "ccc" };
	static const char *const more[] = { "d" };
	uint8_t bad[8] = { 0, 0, 1, 0, 'x', 'x', 'x', 'x' }; /* 256 > 64 */
	wl_io def;
	wl_source *s;
	rec r;
	int a, b, c;
	uint32_t sa, sb;

	memset(&def, 0, sizeof(def));
	def.name = "tcp";
	def.type = WL_IO_TCP;
	def.framing = WL_FRAMING_LENGTH;
	def.host = "127.0.0.1";
	def.port = 0;
	def.max_frame_bytes = 64;
	def.after = -1;
	memset(&r, 0, sizeof(r));
	TAP_OK(wl_source_new(&s, loop, &def, 1, &hooks, &r) == WL_OK &&
	    wl_source_start(s) == WL_OK && wl_source_port(s) != 0,
	    "a TCP source listens on 127.0.0.1, port 0 picks port %u",
	    wl_source_port(s));

	a = client(wl_source_port(s));
	TAP_OK(a >= 0 && send_frames(a, abc, 3), "a client connects and "
	    "sends three frames");
	RUN_UNTIL(loop, r.n >= 3);
	TAP_OK(events_are(&r, abc, 3) && r.ev[0].stream_id >= (1u << 20) &&
	    r.ev[0].source == 1, "they arrive in order on the connection's "
	    "own stream (%u), message ids 1, 2, 3",
	    r.n > 0 ? r.ev[0].stream_id : 0);
	sa = r.n > 0 ? r.ev[0].stream_id : 0;

	b = client(wl_source_port(s));
	TAP_OK(b >= 0 && send_frames(b, abc, 1), "a second client connects "
	    "and sends");
	RUN_UNTIL(loop, r.n >= 4);
	sb = r.n >= 4 ? r.ev[3].stream_id : 0;
	TAP_OK(r.n == 4 && sb != sa && sb >= (1u << 20) &&
	    r.ev[3].message_id == 1, "its frame arrives on another stream, "
	    "as message 1");

	TAP_OK(send(a, bad, sizeof(bad), MSG_NOSIGNAL) == sizeof(bad),
	    "the first client sends a frame over max_frame_bytes");
	RUN_UNTIL(loop, closed_by_peer(a));
	TAP_OK(closed_by_peer(a) && wl_source_errors(s) == 1,
	    "the source closes that connection and counts one error");
	TAP_OK(send_frames(b, more, 1), "the second client sends again");
	RUN_UNTIL(loop, count_stream(&r, sb) >= 2);
	TAP_OK(count_stream(&r, sb) == 2 && r.ev[r.n - 1].message_id == 2 &&
	    strcmp(r.ev[r.n - 1].payload, "d") == 0 && !wl_source_ended(s) &&
	    r.ended == 0, "the other connection and the source carry on");

	wl_source_stop(s);
	TAP_OK(wl_source_ended(s) && r.ended == 1 && r.ended_source == 1,
	    "wl_source_stop ends the source");
	RUN_UNTIL(loop, closed_by_peer(b));
	TAP_OK(closed_by_peer(b), "and closes its connections");
	c = client(wl_source_port(s));
	TAP_OK(c < 0, "and its listener");
	close(a);
	close(b);
	wl_source_free(s);
	rec_reset(&r);
}

int
main(void)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	ev_timer tick;
	char cmd[160];

	if (loop == NULL || mkdtemp(tmpdir) == NULL) {
		printf("Bail out! no loop or no temporary directory\n");
		return 1;
	}
	ev_timer_init(&tick, tick_cb, 0.01, 0.01);
	ev_timer_start(loop, &tick);
	test_files(loop);
	test_large_frames(loop);
	test_pressure(loop);
	test_tcp(loop);
	wl_source_free(NULL);
	TAP_OK(1, "free accepts NULL");
	ev_timer_stop(loop, &tick);
	ev_loop_destroy(loop);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		printf("# could not remove %s\n", tmpdir);
	return TAP_DONE();
}
