/*
 * recv.c -- the benchmark receiver: listens for the engine's TCP sink,
 * counts the records it writes and measures their end-to-end latency.
 *
 * The sink connects to us, and reconnects after a failure, so any number
 * of connections is accepted, one after another or at once, and all are
 * read through one poll(). Records are parsed in place in a per-connection
 * buffer; only the partial record at the end of a read is moved to the
 * front. The clock is read once per read() call: every record a read
 * returns arrived at the same moment, and one clock read per record would
 * cost more than the parsing.
 *
 * Latency = CLOCK_MONOTONIC when the record is parsed - the send time the
 * load generator put in the record (bench/loadgen, same machine, same
 * clock), recorded in a wl_hist. bench/README.md has the output format.
 */
#include "addr.h"
#include "err.h"
#include "hist.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_BYTES (1024 * 1024)
#define MAX_RECORD (64u * 1024 * 1024)  /* larger frames end the connection */
#define MAX_CONNS 1024
#define TS21_LEN 21

enum framing {
	FRAMING_LENGTH,         /* big-endian u32 length, then the record */
	FRAMING_LINE,           /* the record, then '\n' */
};

enum ts_kind {
	TS_NONE,                /* count only */
	TS_ASCII21,             /* 21 ASCII decimal digits of ns */
	TS_BE64,                /* u64 big-endian ns */
};

enum recv_state {
	RS_WAITING,             /* no record yet: wait as long as it takes */
	RS_RECEIVING,           /* records came; the idle timer runs */
	RS_DONE,                /* --expect reached, idle, or a signal */
};

/* One accepted connection. `buf` (owned) holds at most one partial record
 * between reads, at its front. */
struct conn {
	int fd;
	uint8_t *buf;
	size_t cap, len;
};

struct receiver {
	enum recv_state state;
	enum framing framing;
	enum ts_kind ts;
	size_t ts_off;
	uint64_t expect;        /* 0 = no count limit */
	uint64_t idle_ns;       /* 0 = never idle out */
	FILE *hist_out;         /* owned, or NULL */
	int lfd;
	struct conn conns[MAX_CONNS];
	unsigned nconns;
	uint64_t records, bytes, malformed;
	uint64_t first, last;   /* arrival of the first and last record */
	uint64_t *per_sec;      /* owned; records per second since `first` */
	size_t nsec, capsec;
	wl_hist hist;
};

/* Set by SIGINT/SIGTERM, which are blocked except inside ppoll. */
static volatile sig_atomic_t g_stop;

static void
on_signal(int sig)
{
	(void)sig;
	g_stop = 1;
}

/* ---- command line ----------------------------------------------------- */

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: bench/recv --listen HOST:PORT [--framing length|line]\n"
	    "                  [--ts none|ascii21@OFFSET|be64@OFFSET] "
	    "[--expect N]\n"
	    "                  [--idle-exit S] [--hist-out FILE]\n"
	    "  --listen    where the engine's sink connects (port 0: any; "
	    "RECV-LISTEN port=P says which)\n"
	    "  --framing   how records are delimited (default length)\n"
	    "  --ts        where each record carries its send time "
	    "(default none)\n"
	    "  --expect    exit after N records\n"
	    "  --idle-exit exit S seconds after the last record (default 5; "
	    "0 never)\n"
	    "  --hist-out  also write the latency buckets (index count per "
	    "line)\n");
}

static bool
parse_u64(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!isdigit((unsigned char)s[0]))
		return false;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end)
		return false;
	*out = v;
	return true;
}

/* "none", "ascii21@N" or "be64@N". */
static bool
parse_ts(struct receiver *rv, const char *s)
{
	uint64_t off;

	if (!strcmp(s, "none")) {
		rv->ts = TS_NONE;
		return true;
	}
	if (!strncmp(s, "ascii21@", 8) && parse_u64(s + 8, &off))
		rv->ts = TS_ASCII21;
	else if (!strncmp(s, "be64@", 5) && parse_u64(s + 5, &off))
		rv->ts = TS_BE64;
	else
		return false;
	if (off > MAX_RECORD)
		return false;
	rv->ts_off = (size_t)off;
	return true;
}

static bool
bad_arg(const char *opt, const char *val, const char *want)
{
	fprintf(stderr, "recv: %s: expected %s, got '%s'\n", opt, want, val);
	return false;
}

/* Applies one "--opt value" pair. Returns false after saying what is
 * wrong. */
static bool
apply_opt(struct receiver *rv, const char *opt, const char *val,
    const char **listen, const char **hist_path)
{
	double d;
	char *end;

	if (!strcmp(opt, "--listen"))
		*listen = val;
	else if (!strcmp(opt, "--hist-out"))
		*hist_path = val;
	else if (!strcmp(opt, "--framing")) {
		if (!strcmp(val, "length"))
			rv->framing = FRAMING_LENGTH;
		else if (!strcmp(val, "line"))
			rv->framing = FRAMING_LINE;
		else
			return bad_arg(opt, val, "length or line");
	} else if (!strcmp(opt, "--ts")) {
		if (!parse_ts(rv, val))
			return bad_arg(opt, val,
			    "none, ascii21@OFFSET or be64@OFFSET");
	} else if (!strcmp(opt, "--expect")) {
		if (!parse_u64(val, &rv->expect) || rv->expect == 0)
			return bad_arg(opt, val, "a record count >= 1");
	} else if (!strcmp(opt, "--idle-exit")) {
		d = strtod(val, &end);
		if (end == val || *end || !isfinite(d) || d < 0 || d > 1e9)
			return bad_arg(opt, val, "seconds >= 0");
		rv->idle_ns = (uint64_t)(d * 1e9);
	} else {
		fprintf(stderr, "recv: unknown option '%s' (see --help)\n", opt);
		return false;
	}
	return true;
}

static bool
parse_args(struct receiver *rv, int argc, char **argv, const char **listen,
    const char **hist_path)
{
	for (int i = 1; i < argc; i++) {
		char opt[64];
		const char *a = argv[i], *eq = strchr(a, '='), *val;
		size_t n = eq ? (size_t)(eq - a) : strlen(a);

		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			exit(0);
		}
		if (strncmp(a, "--", 2) != 0 || n >= sizeof(opt)) {
			fprintf(stderr, "recv: unexpected argument '%s'\n", a);
			return false;
		}
		memcpy(opt, a, n);
		opt[n] = '\0';
		if (eq)
			val = eq + 1;
		else if (i + 1 < argc)
			val = argv[++i];
		else {
			fprintf(stderr, "recv: %s needs a value\n", opt);
			return false;
		}
		if (!apply_opt(rv, opt, val, listen, hist_path))
			return false;
	}
	if (!*listen) {
		fprintf(stderr, "recv: --listen HOST:PORT is required\n");
		return false;
	}
	return true;
}

/* ---- listening ---------------------------------------------------------- */

/* Binds and listens on "HOST:PORT" (an empty HOST or "*" = every
 * address). Returns the fd, or -1 after saying why. */
static int
listen_on(const char *addr, unsigned *port)
{
	char host[256], portstr[8];
	const char *h;
	size_t hl;
	uint16_t nport;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
	    .ai_flags = AI_PASSIVE }, *res, *ai;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd = -1, one = 1, err, saved = 0;

	if (wl_addr_split(addr, 0, &h, &hl, &nport) != WL_OK ||
	    hl >= sizeof(host)) {
		fprintf(stderr, "recv: --listen: '%s' is not HOST:PORT with a "
		    "port from 0 to 65535\n", addr);
		return -1;
	}
	memcpy(host, h, hl);
	host[hl] = '\0';
	snprintf(portstr, sizeof(portstr), "%u", (unsigned)nport);
	/* An empty host or "*" listens on every address. */
	err = getaddrinfo(host[0] && strcmp(host, "*") ? host : NULL,
	    portstr, &hints, &res);
	if (err) {
		fprintf(stderr, "recv: --listen: %s: %s\n", addr,
		    gai_strerror(err));
		return -1;
	}
	for (ai = res; ai && fd < 0; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK,
		    ai->ai_protocol);
		if (fd < 0)
			continue;
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 ||
		    listen(fd, 64) < 0) {
			saved = errno;
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(res);
	if (fd < 0) {
		fprintf(stderr, "recv: cannot listen on %s: %s\n", addr,
		    strerror(saved ? saved : errno));
		return -1;
	}
	getsockname(fd, (struct sockaddr *)&ss, &sl);
	*port = ntohs(ss.ss_family == AF_INET6 ?
	    ((struct sockaddr_in6 *)&ss)->sin6_port :
	    ((struct sockaddr_in *)&ss)->sin_port);
	return fd;
}

/* Takes every pending connection. A connection over MAX_CONNS is closed at
 * once, with a warning. */
static void
accept_all(struct receiver *rv)
{
	int fd;

	while ((fd = accept4(rv->lfd, NULL, NULL, SOCK_NONBLOCK |
	    SOCK_CLOEXEC)) >= 0) {
		struct conn *c = &rv->conns[rv->nconns];

		if (rv->nconns == MAX_CONNS || !(c->buf = malloc(READ_BYTES))) {
			fprintf(stderr, "recv: refusing a connection: %s\n",
			    rv->nconns == MAX_CONNS ? "too many" : "no memory");
			close(fd);
			continue;
		}
		c->fd = fd;
		c->cap = READ_BYTES;
		c->len = 0;
		rv->nconns++;
	}
}

/* ---- records ------------------------------------------------------------ */

/* The send time in `rec`, or false if the record is too short or the field
 * is not a number. */
static bool
read_stamp(const struct receiver *rv, const uint8_t *rec, size_t len,
    uint64_t *out)
{
	const uint8_t *p = rec + rv->ts_off;
	uint64_t v = 0;

	if (rv->ts == TS_BE64) {
		if (len < rv->ts_off + 8)
			return false;
		for (int i = 0; i < 8; i++)
			v = v << 8 | p[i];
		*out = v;
		return true;
	}
	if (len < rv->ts_off + TS21_LEN)
		return false;
	for (int i = 0; i < TS21_LEN; i++) {
		if (p[i] < '0' || p[i] > '9' ||
		    __builtin_mul_overflow(v, 10, &v) ||
		    __builtin_add_overflow(v, (uint64_t)(p[i] - '0'), &v))
			return false;
	}
	*out = v;
	return true;
}

static inline void
take_record(struct receiver *rv, const uint8_t *rec, size_t len, uint64_t now)
{
	uint64_t sent;

	rv->records++;
	if (rv->ts == TS_NONE)
		return;
	if (!read_stamp(rv, rec, len, &sent)) {
		rv->malformed++;
		return;
	}
	/* A stamp "from the future" can only be a generator sending early;
	 * count it as zero latency rather than wrapping around. */
	wl_hist_record(&rv->hist, now > sent ? now - sent : 0);
}

/* Parses the complete records at the front of `c->buf`. Returns the bytes
 * they take; sets *need to the bytes the next record needs in all when it
 * is incomplete (so a large frame can grow the buffer). */
static size_t
parse_records(struct receiver *rv, struct conn *c, uint64_t now, size_t *need)
{
	const uint8_t *p = c->buf, *end = c->buf + c->len;

	*need = 0;
	if (rv->framing == FRAMING_LINE) {
		const uint8_t *nl;

		while ((nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
			take_record(rv, p, (size_t)(nl - p), now);
			p = nl + 1;
		}
		if (p == c->buf && c->len == c->cap)
			*need = c->cap * 2;     /* a line longer than the buffer */
		return (size_t)(p - c->buf);
	}
	while (end - p >= 4) {
		size_t len = (size_t)p[0] << 24 | (size_t)p[1] << 16 |
		    (size_t)p[2] << 8 | p[3];

		if ((size_t)(end - p) - 4 < len) {
			*need = 4 + len;
			break;
		}
		take_record(rv, p + 4, len, now);
		p += 4 + len;
	}
	return (size_t)(p - c->buf);
}

/* Adds `n` records that arrived at `now` to the counters and the
 * per-second series. */
static void
count_arrivals(struct receiver *rv, uint64_t n, uint64_t now)
{
	size_t sec;

	if (n == 0)
		return;
	if (rv->expect && rv->records >= rv->expect)
		rv->state = RS_DONE;
	else if (rv->state == RS_WAITING)
		rv->state = RS_RECEIVING;
	if (rv->first == 0)             /* the monotonic clock is never 0 */
		rv->first = now;
	rv->last = now;
	sec = (size_t)((now - rv->first) / 1000000000u);
	if (sec >= rv->capsec) {
		size_t cap = (sec + 1) * 2;
		uint64_t *p = realloc(rv->per_sec, cap * sizeof(*p));

		if (!p)
			return;
		memset(p + rv->capsec, 0, (cap - rv->capsec) * sizeof(*p));
		rv->per_sec = p;
		rv->capsec = cap;
	}
	rv->per_sec[sec] += n;
	if (sec + 1 > rv->nsec)
		rv->nsec = sec + 1;
}

/* Makes room for a record of `need` bytes; false if it is over MAX_RECORD
 * or memory is short (said on stderr). */
static bool
conn_grow(struct conn *c, size_t need)
{
	uint8_t *p;

	if (need > MAX_RECORD) {
		fprintf(stderr, "recv: a %zu-byte record is over the %u-byte "
		    "limit; dropping the connection\n", need, MAX_RECORD);
		return false;
	}
	if (!(p = realloc(c->buf, need))) {
		fprintf(stderr, "recv: no memory for a %zu-byte record\n", need);
		return false;
	}
	c->buf = p;
	c->cap = need;
	return true;
}

/* Reads once from a connection and parses what came. Returns false when
 * the connection is over (closed, failed, or unreadable framing); bytes of
 * a record it left unfinished count as one malformed record. */
static bool
conn_read(struct receiver *rv, struct conn *c)
{
	ssize_t n = read(c->fd, c->buf + c->len, c->cap - c->len);
	uint64_t now, before = rv->records;
	size_t used, need;

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return true;
	if (n <= 0) {
		if (n < 0)
			fprintf(stderr, "recv: read: %s\n", strerror(errno));
		if (c->len)
			rv->malformed++;
		return false;
	}
	now = wl_mono_ns();
	rv->bytes += (uint64_t)n;
	c->len += (size_t)n;
	used = parse_records(rv, c, now, &need);
	count_arrivals(rv, rv->records - before, now);
	memmove(c->buf, c->buf + used, c->len - used);
	c->len -= used;
	if (need > c->cap && !conn_grow(c, need)) {
		rv->malformed++;
		return false;
	}
	return true;
}

static void
conn_close(struct receiver *rv, unsigned i)
{
	close(rv->conns[i].fd);
	free(rv->conns[i].buf);
	rv->conns[i] = rv->conns[--rv->nconns];
}

/* ---- the loop ----------------------------------------------------------- */

/* Waits for a connection, data, the idle deadline or a signal, and handles
 * what came; RS_WAITING/RS_RECEIVING -> RS_DONE when the run is over. */
static void
recv_step(struct receiver *rv, const sigset_t *waitmask)
{
	static struct pollfd pfd[MAX_CONNS + 1];
	struct timespec ts, *tp = NULL;
	unsigned n = rv->nconns;

	pfd[0] = (struct pollfd){ .fd = rv->lfd, .events = POLLIN };
	for (unsigned i = 0; i < n; i++)
		pfd[i + 1] = (struct pollfd){ .fd = rv->conns[i].fd,
		    .events = POLLIN };
	if (rv->state == RS_RECEIVING && rv->idle_ns) {
		uint64_t now = wl_mono_ns(), end = rv->last + rv->idle_ns;
		uint64_t d = end > now ? end - now : 0;

		ts.tv_sec = (time_t)(d / 1000000000u);
		ts.tv_nsec = (long)(d % 1000000000u);
		tp = &ts;
	}
	if (ppoll(pfd, n + 1, tp, waitmask) > 0) {
		/* Backwards, so that closing one (which moves the last into
		 * its slot) never skips another. */
		for (unsigned i = n; i-- > 0 && rv->state != RS_DONE;)
			if (pfd[i + 1].revents && !conn_read(rv, &rv->conns[i]))
				conn_close(rv, i);
		if (pfd[0].revents)
			accept_all(rv);
	}
	if (g_stop)
		rv->state = RS_DONE;
	if (rv->state == RS_RECEIVING && rv->idle_ns &&
	    wl_mono_ns() - rv->last >= rv->idle_ns)
		rv->state = RS_DONE;
}

static void
report(const struct receiver *rv)
{
	double span = (double)(rv->last - rv->first) / 1e9;

	printf("RECV records=%llu bytes=%llu malformed=%llu first_to_last_s=%.3f "
	    "rate=%.0f\n", (unsigned long long)rv->records,
	    (unsigned long long)rv->bytes, (unsigned long long)rv->malformed,
	    span, span > 0 ? (double)rv->records / span : 0.0);
	if (rv->ts != TS_NONE)
		wl_hist_print_us(&rv->hist, stdout, "RECV latency");
	printf("RECV per_second=");
	for (size_t i = 0; i < rv->nsec; i++)
		printf("%s%llu", i ? "," : "",
		    (unsigned long long)rv->per_sec[i]);
	printf("\n");
	fflush(stdout);
}

/* The raw buckets, "index count" per line, non-empty ones only, so runs
 * can be merged bucket by bucket later. */
static wl_err
write_buckets(const struct receiver *rv, FILE *f)
{
	for (unsigned i = 0; i < WL_HIST_NBUCKETS; i++)
		if (rv->hist.n[i])
			fprintf(f, "%u %llu\n", i,
			    (unsigned long long)rv->hist.n[i]);
	return ferror(f) ? WL_ERR_IO : WL_OK;
}

static void
setup_signals(sigset_t *waitmask)
{
	struct sigaction sa = { .sa_handler = on_signal };
	sigset_t block;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigprocmask(SIG_BLOCK, &block, waitmask);
	sigdelset(waitmask, SIGINT);
	sigdelset(waitmask, SIGTERM);
}

int
main(int argc, char **argv)
{
	static struct receiver rv;  /* ~15 KiB of histogram, 1024 conns */
	const char *listen = NULL, *hist_path = NULL;
	sigset_t waitmask;
	unsigned port;
	int rc = 0;

	rv.idle_ns = 5000000000ull;
	wl_hist_init(&rv.hist);
	if (!parse_args(&rv, argc, argv, &listen, &hist_path))
		return 2;
	if (hist_path && !(rv.hist_out = fopen(hist_path, "w"))) {
		fprintf(stderr, "recv: --hist-out: %s: %s\n", hist_path,
		    strerror(errno));
		return 1;
	}
	setup_signals(&waitmask);
	if ((rv.lfd = listen_on(listen, &port)) < 0)
		return 1;
	printf("RECV-LISTEN port=%u\n", port);
	fflush(stdout);
	while (rv.state != RS_DONE)
		recv_step(&rv, &waitmask);
	report(&rv);
	if (rv.hist_out) {
		if (write_buckets(&rv, rv.hist_out) != WL_OK ||
		    fclose(rv.hist_out) != 0) {
			fprintf(stderr, "recv: --hist-out: %s: write failed\n",
			    hist_path);
			rc = 1;
		}
	}
	while (rv.nconns)
		conn_close(&rv, rv.nconns - 1);
	close(rv.lfd);
	free(rv.per_sec);
	return rc;
}
