/*
 * sink_test.c -- the built-in sinks, driven by a real libev loop: file
 * sinks write exactly the framed bytes (length and line framing), create
 * missing directories, and fail cleanly on a path that cannot be a file;
 * TCP sinks deliver every frame in order to a listener in the test, and
 * hold their output while nothing listens, delivering it once something
 * does.
 *
 * Nothing sleeps: the loop is driven until a condition holds or a deadline
 * passes. A repeating tick timer bounds each EVRUN_ONCE, because the
 * test's own sockets are not watchers of the loop.
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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "sink.h"
#include "tap.h"

#define NTCP 10000 /* frames through the TCP sink: more than one flush */

static double
mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#define RUN_UNTIL(loop, secs, cond) \
	for (double dl_ = mono() + (secs); !(cond) && mono() < dl_;) \
		ev_run((loop), EVRUN_ONCE)

static void
tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
}

static char tmpdir[] = "/tmp/wl-sink-test-XXXXXX";

static wl_event *
ev_of(const char *s)
{
	return wl_event_new(NULL, 0, s, (uint32_t)strlen(s));
}

/* The whole content of `path` into buf (at most cap bytes); its length,
 * or -1. */
static ssize_t
slurp(const char *path, uint8_t *buf, size_t cap)
{
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, cap);
	close(fd);
	return n;
}

static wl_io
file_def(const char *name, char *path, wl_framing framing)
{
	wl_io d;

	memset(&d, 0, sizeof(d));
	d.name = (char *)name;
	d.type = WL_IO_FILE;
	d.framing = framing;
	d.path = path;
	d.after = -1;
	return d;
}

static void
test_files(struct ev_loop *loop)
{
	static const uint8_t want_len[] = { 0, 0, 0, 1, 'x', 0, 0, 0, 0,
		0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o' };
	static const char want_line[] = "a\n\nbc\n";
	char path[160], bad[160];
	uint8_t buf[256];
	ssize_t n;
	wl_sink *s;
	wl_io def;
	int fd;

	snprintf(path, sizeof(path), "%s/new/dirs/out.bin", tmpdir);
	def = file_def("len", path, WL_FRAMING_LENGTH);
	TAP_OK(wl_sink_open(&s, loop, &def, NULL, NULL) == WL_OK,
	    "open a file sink whose directories do not exist yet");
	wl_sink_write(s, ev_of("x"));
	wl_sink_write(s, ev_of(""));
	wl_sink_write(s, ev_of("hello"));
	TAP_OK(wl_sink_backlog(s) == sizeof(want_len) &&
	    wl_sink_events(s) == 3 && wl_sink_bytes(s) == 6,
	    "writes are buffered: %zu bytes, 3 events, 6 payload bytes",
	    wl_sink_backlog(s));
	wl_sink_flush(s);
	n = slurp(path, buf, sizeof(buf));
	TAP_OK(wl_sink_backlog(s) == 0 && n == sizeof(want_len) &&
	    memcmp(buf, want_len, sizeof(want_len)) == 0,
	    "after flush the file holds exactly the length-framed payloads");
	wl_sink_close(s);
	n = slurp(path, buf, sizeof(buf));
	TAP_OK(n == sizeof(want_len), "close adds nothing");

	snprintf(path, sizeof(path), "%s/out.txt", tmpdir);
	def = file_def("lines", path, WL_FRAMING_LINE);
	TAP_OK(wl_sink_open(&s, loop, &def, NULL, NULL) == WL_OK, "open a line sink");
	wl_sink_write(s, ev_of("a"));
	wl_sink_write(s, ev_of(""));
	wl_sink_write(s, ev_of("bc"));
	wl_sink_close(s);
	n = slurp(path, buf, sizeof(buf));
	TAP_OK(n == (ssize_t)strlen(want_line) &&
	    memcmp(buf, want_line, (size_t)n) == 0,
	    "after close the file holds each payload and a newline");

	def = file_def("again", path, WL_FRAMING_LINE);
	TAP_OK(wl_sink_open(&s, loop, &def, NULL, NULL) == WL_OK &&
	    slurp(path, buf, sizeof(buf)) == 0, "opening truncates");
	wl_sink_close(s);

	/* Root may write anywhere, so "unwritable" here is a path through a
	 * regular file, which no one can create. */
	snprintf(bad, sizeof(bad), "%s/plain", tmpdir);
	fd = open(bad, O_WRONLY | O_CREAT, 0644);
	if (fd >= 0)
		close(fd);
	snprintf(path, sizeof(path), "%s/plain/out.bin", tmpdir);
	def = file_def("bad", path, WL_FRAMING_LENGTH);
	s = NULL;
	TAP_OK(fd >= 0 && wl_sink_open(&s, loop, &def, NULL, NULL) == WL_ERR_IO &&
	    s == NULL, "a path that cannot be created fails with WL_ERR_IO");
}

/*
 * An output counts as done (its source message may be acknowledged) only
 * once its bytes are written: the sink holds its origin until then.
 */
static void
test_origins(struct ev_loop *loop)
{
	char path[160];
	wl_stream_pos *sp;
	wl_sink *s;
	wl_io def;

	snprintf(path, sizeof(path), "%s/origins.txt", tmpdir);
	for (int framing = 0; framing < 2; framing++) {
		def = file_def("origins", path, framing ? WL_FRAMING_LENGTH :
		    WL_FRAMING_LINE);
		if (wl_stream_pos_new(&sp, 0) != WL_OK ||
		    wl_sink_open(&s, loop, &def, NULL, NULL) != WL_OK) {
			TAP_OK(0, "open a sink and a stream");
			return;
		}
		for (uint64_t id = 1; id <= 3; id++) {
			wl_event *e = ev_of(id == 2 ? "" : "payload");
			e->origin = wl_stream_pos_track(sp, id);
			wl_sink_write(s, e);
		}
		TAP_OK(wl_stream_pos_done(sp) == 0 && wl_stream_pos_pending(sp) == 3,
		    "%s framing: buffered outputs are not done (done %llu)",
		    framing ? "length" : "line",
		    (unsigned long long)wl_stream_pos_done(sp));
		wl_sink_flush(s);
		TAP_OK(wl_stream_pos_done(sp) == 3 && wl_stream_pos_pending(sp) == 0,
		    "%s framing: written outputs are done (done %llu)",
		    framing ? "length" : "line",
		    (unsigned long long)wl_stream_pos_done(sp));
		wl_sink_close(s);
		wl_stream_pos_free(sp);
	}
}

/* A TCP socket bound to 127.0.0.1 on a free port, not yet listening:
 * connecting to it is refused until listen() is called. */
static int
bound_socket(uint16_t *port)
{
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	fcntl(fd, F_SETFL, O_NONBLOCK);
	*port = ntohs(sa.sin_port);
	return fd;
}

/* The receiving side: accepts once, then reads whatever has arrived. */
typedef struct {
	int lfd;
	int fd;
	uint8_t *buf;
	size_t len, cap;
	bool eof;
} receiver;

static size_t
receive(receiver *r)
{
	if (r->fd < 0) {
		r->fd = accept(r->lfd, NULL, NULL);
		if (r->fd < 0)
			return r->len;
		fcntl(r->fd, F_SETFL, O_NONBLOCK);
	}
	for (;;) {
		ssize_t n = recv(r->fd, r->buf + r->len, r->cap - r->len, 0);
		if (n > 0) {
			r->len += (size_t)n;
			continue;
		}
		if (n == 0)
			r->eof = true;
		break;
	}
	return r->len;
}

/* The length-framed bytes of frames "f0", "f1"... "f<n-1>". */
static size_t
expected(uint8_t *buf, int n)
{
	size_t off = 0;

	for (int i = 0; i < n; i++) {
		int k = sprintf((char *)buf + off + 4, "f%d", i);
		uint32_t be = htonl((uint32_t)k);
		memcpy(buf + off, &be, 4);
		off += 4 + (size_t)k;
	}
	return off;
}

static wl_io
tcp_def(uint16_t port)
{
	wl_io d;

	memset(&d, 0, sizeof(d));
	d.name = "tcp";
	d.type = WL_IO_TCP;
	d.framing = WL_FRAMING_LENGTH;
	d.host = "127.0.0.1";
	d.port = port;
	d.after = -1;
	return d;
}

static void
write_frames(wl_sink *s, int from, int to)
{
	char p[16];

	for (int i = from; i < to; i++) {
		snprintf(p, sizeof(p), "f%d", i);
		wl_sink_write(s, ev_of(p));
	}
}

static void
test_tcp(struct ev_loop *loop)
{
	size_t cap = (size_t)NTCP * 16;
	uint8_t *want = malloc(cap);
	size_t nhalf = expected(want, NTCP / 2);
	size_t nwant = expected(want, NTCP);
	receiver r = { .fd = -1, .cap = cap };
	uint16_t port = 0;
	wl_sink *s;
	wl_io def;

	r.buf = malloc(cap);
	r.lfd = bound_socket(&port);
	TAP_OK(r.lfd >= 0 && listen(r.lfd, 4) == 0, "a receiver listens on "
	    "127.0.0.1:%u", port);
	def = tcp_def(port);
	TAP_OK(wl_sink_open(&s, loop, &def, NULL, NULL) == WL_OK, "open a TCP sink to it");
	write_frames(s, 0, NTCP / 2);
	wl_sink_flush(s);
	RUN_UNTIL(loop, 5.0, receive(&r) >= nhalf && wl_sink_backlog(s) == 0);
	TAP_OK(r.len == nhalf, "flushing sends what was written");
	write_frames(s, NTCP / 2, NTCP);
	wl_sink_flush(s);
	RUN_UNTIL(loop, 5.0, receive(&r) >= nwant);
	TAP_OK(r.len == nwant && memcmp(r.buf, want, nwant) == 0,
	    "the receiver gets all %d frames, in order (%zu of %zu bytes)",
	    NTCP, r.len, nwant);
	TAP_OK(wl_sink_backlog(s) == 0 && wl_sink_events(s) == NTCP,
	    "nothing is left in the backlog");
	wl_sink_close(s);
	RUN_UNTIL(loop, 5.0, (receive(&r), r.eof));
	TAP_OK(r.eof, "close closes the connection");
	close(r.fd);
	close(r.lfd);
	free(r.buf);

	/* Nothing listens: the sink connects, is refused, and retries every
	 * second, holding its output meanwhile. */
	memset(&r, 0, sizeof(r));
	r.fd = -1;
	r.cap = cap;
	r.buf = malloc(cap);
	r.lfd = bound_socket(&port);
	def = tcp_def(port);
	TAP_OK(r.lfd >= 0 && wl_sink_open(&s, loop, &def, NULL, NULL) == WL_OK,
	    "open a TCP sink to 127.0.0.1:%u, where nothing listens", port);
	write_frames(s, 0, 10);
	wl_sink_flush(s);
	for (int i = 0; i < 10; i++)
		ev_run(loop, EVRUN_NOWAIT);
	nwant = expected(want, 10);
	TAP_OK(wl_sink_backlog(s) == nwant && wl_sink_events(s) == 10,
	    "it holds the %zu bytes written", wl_sink_backlog(s));
	TAP_OK(listen(r.lfd, 4) == 0, "a listener appears");
	RUN_UNTIL(loop, 3.5, receive(&r) >= nwant);
	TAP_OK(r.len == nwant && memcmp(r.buf, want, nwant) == 0 &&
	    wl_sink_backlog(s) == 0, "within the next retry it connects and "
	    "delivers them all, in order");
	wl_sink_close(s);
	close(r.fd);
	close(r.lfd);
	free(r.buf);
	free(want);
}

static bool
exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static off_t
size_of(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? st.st_size : -1;
}

/* Staged (checkpoints on): the file holds only what a durable checkpoint
 * committed; recovery copies the recovered checkpoint's stage again. */
static void
test_staged(struct ev_loop *loop)
{
	char path[160], dir[160], st1[200], st2[200], st3[200], st4[200];
	uint8_t buf[256];
	wl_sink_commit c, c2;
	int fds[3];
	size_t nfds = 0;
	wl_sink *s;
	wl_io def;

	snprintf(path, sizeof(path), "%s/staged/out.txt", tmpdir);
	snprintf(dir, sizeof(dir), "%s/state/sinks", tmpdir);
	snprintf(st1, sizeof(st1), "%s/st@1", dir);
	snprintf(st2, sizeof(st2), "%s/st@2", dir);
	snprintf(st3, sizeof(st3), "%s/st@3", dir);
	snprintf(st4, sizeof(st4), "%s/st@4", dir);
	def = file_def("st", path, WL_FRAMING_LINE);
	TAP_OK(wl_sink_open(&s, loop, &def, dir, NULL) == WL_OK &&
	    wl_sink_staged(s), "open a staged file sink (its stage dir is created)");
	wl_sink_write(s, ev_of("one"));
	wl_sink_write(s, ev_of("two"));
	wl_sink_flush(s);
	TAP_OK(wl_sink_backlog(s) == 0 && size_of(path) == 0 &&
	    size_of(st1) == 8, "written outputs go to the stage file, not the file");
	TAP_OK(wl_sink_seal(s, &c, fds, &nfds) == WL_OK && c.seen &&
	    c.seq == 1 && c.dest == 0 && c.len == 8 && c.committed == 8 &&
	    nfds == 2, "seal: stage 1, 8 bytes at 0; its fd and the dir's to sync");
	wl_sink_write(s, ev_of("three"));
	wl_sink_flush(s);
	TAP_OK(size_of(path) == 0 && size_of(st2) == 6,
	    "the next epoch's outputs go to stage 2 while 1 is in flight");
	wl_sink_durable(s);
	TAP_OK(slurp(path, buf, sizeof(buf)) == 8 &&
	    memcmp(buf, "one\ntwo\n", 8) == 0 && exists(st1),
	    "durable: stage 1 is copied to the file, and kept until it is synced");
	nfds = 0;
	TAP_OK(wl_sink_seal(s, &c, fds, &nfds) == WL_OK && c.seq == 2 &&
	    c.dest == 8 && c.len == 6 && c.committed == 14 && nfds == 3,
	    "seal 2: 6 bytes at 8; the file is synced too (stage 1's copy)");
	/* That checkpoint fails: no durable. The next seal joins the stages. */
	wl_sink_write(s, ev_of("four"));
	wl_sink_flush(s);
	nfds = 0;
	TAP_OK(wl_sink_seal(s, &c, fds, &nfds) == WL_OK && c.seq == 2 &&
	    c.dest == 8 && c.len == 11 && c.committed == 19 && !exists(st3) &&
	    size_of(st2) == 11, "after a failed checkpoint the next seal "
	    "joins its outputs to the sealed stage: 11 bytes at 8");
	wl_sink_durable(s);
	TAP_OK(slurp(path, buf, sizeof(buf)) == 19 &&
	    memcmp(buf, "one\ntwo\nthree\nfour\n", 19) == 0 && !exists(st1) &&
	    exists(st2), "durable: stage 1 removed, stage 2 copied");
	wl_sink_write(s, ev_of("five"));
	wl_sink_flush(s);
	wl_sink_close(s);
	TAP_OK(!exists(st2) && exists(st4) && size_of(path) == 19,
	    "close syncs the file and removes stage 2; stage 4 (uncommitted; "
	    "3 was joined to 2) stays for recovery, out of the file");

	/* Recovery from the checkpoint that sealed stage 2 (c): a crash may
	 * have cut the copy short. Stage 2 is gone (copied, synced). */
	TAP_OK(truncate(path, 19) == 0 && wl_sink_open(&s, loop, &def, dir,
	    &c) == WL_OK && size_of(path) == 19 && !exists(st4),
	    "recovery with the stage removed and the file complete: kept; "
	    "stage 4 is removed");
	wl_sink_write(s, ev_of("six"));
	wl_sink_flush(s);
	nfds = 0;
	TAP_OK(wl_sink_seal(s, &c2, fds, &nfds) == WL_OK && c2.seq == 3 &&
	    c2.dest == 19 && c2.len == 4, "numbering goes on after the "
	    "recovered stage: stage 3, at 19");
	wl_sink_close(s); /* crash before its checkpoint is durable */
	TAP_OK(truncate(path, 21) == 0 && wl_sink_open(&s, loop, &def, dir,
	    &c2) == WL_OK && slurp(path, buf, sizeof(buf)) == 23 &&
	    memcmp(buf + 19, "six\n", 4) == 0 && !exists(st3),
	    "recovery of a half-copied stage: the file is cut to its place and "
	    "the stage copied again");
	wl_sink_close(s);
	c2.seq = 9;
	c2.dest = 23;
	c2.committed = 27;
	TAP_OK(wl_sink_open(&s, loop, &def, dir, &c2) == WL_ERR_IO,
	    "a recorded stage that is missing while the file is short: refused");
	c2 = (wl_sink_commit){ .seen = true, .committed = 40 };
	TAP_OK(wl_sink_open(&s, loop, &def, dir, &c2) == WL_ERR_IO,
	    "a file shorter than its committed length: refused");
	c2 = (wl_sink_commit){ .seen = true, .committed = 4 };
	TAP_OK(wl_sink_open(&s, loop, &def, dir, &c2) == WL_OK &&
	    size_of(path) == 4, "a format-1 record (a length, no stage): the "
	    "file is cut to it");
	wl_sink_close(s);
	TAP_OK(wl_sink_open(&s, loop, &def, dir, NULL) == WL_OK &&
	    size_of(path) == 0, "a staged sink no checkpoint saw starts empty");
	wl_sink_close(s);
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
	test_origins(loop);
	test_staged(loop);
	test_tcp(loop);
	wl_sink_close(NULL);
	TAP_OK(1, "close accepts NULL");
	ev_timer_stop(loop, &tick);
	ev_loop_destroy(loop);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		printf("# could not remove %s\n", tmpdir);
	return TAP_DONE();
}
