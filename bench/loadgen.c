/*
 * loadgen.c -- an open-loop load generator for the engine's TCP sources.
 *
 * Sends one of the benchmark workloads (bench/README.md has the record
 * layouts) over one or more TCP connections, or into files with --out.
 *
 * Open loop: event j, counted over all streams, is due at start + j/rate
 * whatever happened to the events before it. An event that back pressure
 * makes late is sent as soon as the socket takes it but keeps its due time
 * as its timestamp, so a stall is charged to the latency of every event it
 * delayed instead of silently lowering the offered rate (the "coordinated
 * omission" a closed-loop client would hide). With --rate 0 there is no
 * schedule: events go as fast as the sockets take them, stamped with the
 * time they are built.
 *
 * One thread, one non-blocking socket per stream, one buffer per stream.
 * Events are built into the buffer in chunks -- every event already due,
 * at most one chunk per --chunk-us -- and each chunk is handed to the kernel
 * with as few write() calls as it takes. Events are never sent early, so
 * the chunking delay (up to --chunk-us) is part of the measured latency.
 * That batching is what lets one core offer millions of events per second.
 *
 * Every timestamp is CLOCK_MONOTONIC nanoseconds (wl_mono_ns), the clock
 * bench/recv reads on the same machine.
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
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define NBBO_LEN 42          /* Market Spread record sizes, without framing */
#define ORDER_LEN 53
#define LINE_WORDS 8
#define WORD_MAX 14          /* letters of the longest word: 26^14 > 2^64 */
#define CHUNK_BYTES (256 * 1024)
#define MAX_SYMBOLS (26 * 26 * 26 * 26)
#define MAX_SIZE (1024 * 1024)
#define WARMUP_NS 200000000ull     /* after the initial NBBOs (w1) */
#define STOP_GRACE_NS 2000000000ull /* to flush buffers after a signal */

/* ---- command line ----------------------------------------------------- */

struct options {
	const char *workload;
	const char *connect;    /* "HOST:PORT[,HOST:PORT...]", or NULL */
	const char *out;        /* file name prefix, or NULL */
	double rate;            /* events/s over all streams; 0 = unpaced */
	double duration;        /* seconds; 0 = no time limit */
	uint64_t events;        /* total; 0 = no count limit */
	uint64_t seed;
	uint64_t symbols;
	uint64_t reject_every;  /* 0 = timed NBBOs are never wide */
	uint64_t size;
	uint64_t vocab_start, vocab_end;
	double chunk_us;
	double progress;        /* seconds between progress lines; 0 = none */
};

enum opt_kind {
	OPT_STR,                /* const char * */
	OPT_U64,                /* uint64_t, decimal, within [min, max] */
	OPT_F64,                /* double, finite, within [min, max] */
};

/* One command-line option: the table drives parsing, range checks and
 * --help, so every option is validated the same way and every error names
 * its option. */
struct opt_def {
	const char *name;       /* without the leading "--" */
	enum opt_kind kind;
	size_t field;           /* offsetof(struct options, ...) */
	double min, max;
	const char *arg, *help;
};

#define F(x) offsetof(struct options, x)
static const struct opt_def opt_defs[] = {
	{ "workload", OPT_STR, F(workload), 0, 0, "w1|w1e|w2|w3",
	    "what to send (required)" },
	{ "connect", OPT_STR, F(connect), 0, 0, "HOST:PORT[,HOST:PORT]",
	    "the source addresses; w1/w1e: NBBO then orders" },
	{ "out", OPT_STR, F(out), 0, 0, "FILE",
	    "write the streams to FILE (w1: FILE.nbbo, FILE.orders)" },
	{ "rate", OPT_F64, F(rate), 0, 1e12, "R",
	    "events/s over all streams; 0 = as fast as possible (default)" },
	{ "duration", OPT_F64, F(duration), 1e-6, 1e9, "S",
	    "stop after S seconds" },
	{ "events", OPT_U64, F(events), 1, 1e18, "N",
	    "stop after N events in total" },
	{ "seed", OPT_U64, F(seed), 0, 0x1p64, "N", "PRNG seed (default 1)" },
	{ "symbols", OPT_U64, F(symbols), 1, MAX_SYMBOLS, "N",
	    "w1: distinct symbols (default 350)" },
	{ "reject-every", OPT_U64, F(reject_every), 0, 1e18, "N",
	    "w1: one timed NBBO in N is wide (default 70000; 0 never)" },
	{ "size", OPT_U64, F(size), 8, MAX_SIZE, "BYTES",
	    "w3: record size (default 32)" },
	{ "vocab-start", OPT_U64, F(vocab_start), 1, 1e15, "K",
	    "w2: vocabulary at the start (default 10000)" },
	{ "vocab-end", OPT_U64, F(vocab_end), 1, 1e15, "K",
	    "w2: vocabulary at the end (default 1000000)" },
	{ "chunk-us", OPT_F64, F(chunk_us), 0, 1e6, "US",
	    "at most one write burst per stream per US (default 500)" },
	{ "progress", OPT_F64, F(progress), 0, 1e6, "S",
	    "print 'LOADGEN progress t_s=.. sent=..' every S seconds" },
};
#undef F
#define NOPTS (sizeof(opt_defs) / sizeof(opt_defs[0]))

static void
usage(FILE *f)
{
	fprintf(f, "usage: bench/loadgen --workload w1|w1e|w2|w3 "
	    "(--connect HOST:PORT[,...] | --out FILE) [options]\n");
	for (size_t i = 0; i < NOPTS; i++)
		fprintf(f, "  --%-13s %-22s %s\n", opt_defs[i].name,
		    opt_defs[i].arg, opt_defs[i].help);
}

/* Stores `val` into the option's field. Returns false after saying which
 * option was wrong and why. */
static bool
opt_set(struct options *o, const struct opt_def *d, const char *val)
{
	void *dst = (char *)o + d->field;
	char *end;

	errno = 0;
	if (d->kind == OPT_STR) {
		*(const char **)dst = val;
		return true;
	}
	if (d->kind == OPT_U64) {
		unsigned long long v = 0;

		if (isdigit((unsigned char)val[0]))
			v = strtoull(val, &end, 10);
		if (isdigit((unsigned char)val[0]) && !errno && !*end &&
		    (double)v >= d->min && (double)v <= d->max) {
			*(uint64_t *)dst = v;
			return true;
		}
	} else {
		double v = strtod(val, &end);

		if (end != val && !*end && !errno && isfinite(v) &&
		    v >= d->min && v <= d->max) {
			*(double *)dst = v;
			return true;
		}
	}
	fprintf(stderr, "loadgen: --%s: expected %s from %g to %g, got '%s'\n",
	    d->name, d->kind == OPT_U64 ? "an integer" : "a number", d->min,
	    d->max, val);
	return false;
}

/* Fills `o` from argv ("--name value" or "--name=value"). Returns false
 * after printing the problem. */
static bool
opt_parse(struct options *o, int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *eq, *val;
		const struct opt_def *d = NULL;
		size_t n;

		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			exit(0);
		}
		if (strncmp(a, "--", 2) != 0) {
			fprintf(stderr, "loadgen: unexpected argument '%s'\n", a);
			return false;
		}
		a += 2;
		eq = strchr(a, '=');
		n = eq ? (size_t)(eq - a) : strlen(a);
		for (size_t j = 0; j < NOPTS && !d; j++)
			if (strlen(opt_defs[j].name) == n &&
			    !strncmp(opt_defs[j].name, a, n))
				d = &opt_defs[j];
		if (!d) {
			fprintf(stderr, "loadgen: unknown option '%s' "
			    "(see --help)\n", argv[i]);
			return false;
		}
		if (eq)
			val = eq + 1;
		else if (i + 1 < argc)
			val = argv[++i];
		else {
			fprintf(stderr, "loadgen: --%s needs a value\n", d->name);
			return false;
		}
		if (!opt_set(o, d, val))
			return false;
	}
	return true;
}

/* ---- randomness: splitmix64, one generator per stream ------------------- */

static uint64_t
prng_next(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [0, n), by the high half of a 64x64 product (no modulo). */
static uint64_t
prng_below(uint64_t *state, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)prng_next(state) * n) >> 64);
}

/* Uniform in [0, 1), 53 bits. */
static double
prng_unit(uint64_t *state)
{
	return (double)(prng_next(state) >> 11) * 0x1p-53;
}

/*
 * A rank k in 1..n with P(k) proportional to 1/k (Zipf, s = 1), in O(1)
 * whatever n, by rejection-inversion: the hat is the density 1/x, whose
 * integral is ln x. Rank k owns the stretch [ln(k - 1/2), ln(k + 1/2)] of
 * the hat's area (rank 1 owns the stretch ending at ln 3/2 of length 1).
 * That stretch is at least 1/k long, because 1/x is convex; an area
 * position u drawn uniformly names a k, and it is kept when u falls in
 * the last 1/k of k's stretch, so every rank is kept with probability
 * exactly proportional to 1/k. Almost every draw is kept.
 */
static uint64_t
zipf_draw(uint64_t *state, uint64_t n)
{
	const double lo = log(1.5) - 1.0, hi = log((double)n + 0.5);

	for (;;) {
		double u = hi + prng_unit(state) * (lo - hi);
		uint64_t k = (uint64_t)(exp(u) + 0.5);

		if (k < 1)
			k = 1;
		if (k > n)
			k = n;
		if (u >= log((double)k + 0.5) - 1.0 / (double)k)
			return k;
	}
}

/* ---- record encoding: big-endian, framing included ---------------------- */

static uint8_t *
put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
	return p + 4;
}

static uint8_t *
put_be64(uint8_t *p, uint64_t v)
{
	put_be32(p, (uint32_t)(v >> 32));
	return put_be32(p + 4, (uint32_t)v);
}

static uint8_t *
put_f64(uint8_t *p, double d)
{
	uint64_t u;

	memcpy(&u, &d, sizeof(u));
	return put_be64(p, u);
}

/* `v` as `width` zero-padded decimal digits (the low digits if it does
 * not fit). */
static uint8_t *
put_digits(uint8_t *p, uint64_t v, int width)
{
	for (int i = width - 1; i >= 0; i--) {
		p[i] = (uint8_t)('0' + v % 10);
		v /= 10;
	}
	return p + width;
}

/* Word k of the w2 vocabulary: k in base 26 with the digits a..z, no
 * leading 'a' except for k = 0 itself, so spellings are distinct. */
static uint8_t *
put_word(uint8_t *p, uint64_t k)
{
	uint8_t rev[WORD_MAX];
	int n = 0;

	do {
		rev[n++] = (uint8_t)('a' + k % 26);
		k /= 26;
	} while (k);
	while (n)
		*p++ = rev[--n];
	return p;
}

/* The 4-letter symbol of index i: i in base 26, A..Z, padded with 'A'. */
static void
symbol_of(char out[4], uint64_t i)
{
	for (int j = 3; j >= 0; j--) {
		out[j] = (char)('A' + i % 26);
		i /= 26;
	}
}

static uint8_t *
put_nbbo(uint8_t *p, const char sym[4], uint64_t ts, double bid, double offer)
{
	p = put_be32(p, NBBO_LEN);
	*p++ = 2;
	memcpy(p, sym, 4);
	p = put_digits(p + 4, ts, 21);
	p = put_f64(p, bid);
	return put_f64(p, offer);
}

/* ---- the run ------------------------------------------------------------ */

enum record_kind {
	REC_NBBO,               /* w1: market data updates */
	REC_ORDER,              /* w1: orders, stamped in their transact time */
	REC_LINE,               /* w2: a line of words */
	REC_PASS,               /* w3: fixed size, stamped in the first 8 bytes */
};

enum stream_state {
	ST_IDLE,                /* buffer empty; waiting for events to fall due */
	ST_WRITING,             /* buffer holds a chunk the kernel has not taken */
	ST_DONE,                /* every event of this stream is written */
};

struct stream {
	enum stream_state state;
	enum record_kind kind;
	int fd;
	bool socket;            /* false for --out files */
	const char *name;       /* address or file, for messages */
	unsigned phase;         /* event i is event i * nstreams + phase overall */
	uint64_t next;          /* index of the next event to build */
	uint64_t quota;         /* events this stream sends */
	uint64_t prng;
	uint8_t *buf;           /* owned; CHUNK_BYTES + one record */
	size_t cap, len, off;   /* capacity, bytes built, bytes written */
	uint64_t chunk_events;  /* events in buf */
	uint64_t chunk_first;   /* due time of the first of them */
	uint64_t last_fill;     /* when the last chunk was built */
};

struct run {
	const struct options *o;
	bool w1e;
	bool paced;             /* rate > 0 */
	double period_ns;       /* between consecutive events overall */
	uint64_t start;         /* due time of event 0 */
	uint64_t end;           /* start + duration; UINT64_MAX without one */
	uint64_t chunk_ns;
	unsigned nstreams;
	struct stream *streams; /* owned */
	size_t max_record;      /* framed bytes of the largest record */
	uint64_t sent;          /* events the kernel (or the file) took */
	uint64_t max_lag;       /* ns, worst chunk completion behind due time */
	uint64_t progress_ns;   /* 0 = no progress lines */
	uint64_t next_progress; /* when the next one is due */
};

/* Set by SIGINT/SIGTERM; those are blocked except inside ppoll, so the
 * loop never misses one between its check and its wait. */
static volatile sig_atomic_t g_stop;
static sigset_t g_waitmask;

static void
on_signal(int sig)
{
	(void)sig;
	g_stop = 1;
}

static uint64_t
due_time(const struct run *r, const struct stream *s, uint64_t i)
{
	double j = (double)i * r->nstreams + s->phase;

	return r->start + (uint64_t)(j * r->period_ns);
}

/* The vocabulary size for an event: it grows linearly from --vocab-start to
 * --vocab-end over --events or --duration (whichever is further along). */
static uint64_t
vocab_size(const struct run *r, uint64_t global, uint64_t t)
{
	const struct options *o = r->o;
	double f = 0;

	if (o->events)
		f = (double)global / (double)o->events;
	if (o->duration > 0) {
		double g = (double)(t - r->start) / (o->duration * 1e9);
		f = g > f ? g : f;
	}
	f = f > 1 ? 1 : f;
	return o->vocab_start +
	    (uint64_t)((double)(o->vocab_end - o->vocab_start) * f);
}

static uint8_t *
build_nbbo(const struct run *r, struct stream *s, uint8_t *p, uint64_t ts)
{
	char sym[4];
	uint64_t cents = 5000 + prng_below(&s->prng, 10001);
	bool wide = r->w1e || (r->o->reject_every &&
	    prng_below(&s->prng, r->o->reject_every) == 0);

	symbol_of(sym, prng_below(&s->prng, r->o->symbols));
	return put_nbbo(p, sym, ts, (double)cents / 100,
	    (double)(cents + (wide ? 100 : 1)) / 100);
}

static uint8_t *
build_order(const struct run *r, struct stream *s, uint8_t *p, uint64_t ts)
{
	char sym[4];

	symbol_of(sym, prng_below(&s->prng, r->o->symbols));
	p = put_be32(p, ORDER_LEN);
	*p++ = 1;
	*p++ = (uint8_t)(1 + prng_below(&s->prng, 2));
	p = put_be32(p, (uint32_t)prng_next(&s->prng));
	p = put_digits(p, s->next % 1000000, 6);
	memcpy(p, sym, 4);
	p = put_f64(p + 4, (double)(1 + prng_below(&s->prng, 1000)));
	p = put_f64(p, (double)(5000 + prng_below(&s->prng, 10001)) / 100);
	return put_digits(p, ts, 21);
}

static uint8_t *
build_line(const struct run *r, struct stream *s, uint8_t *p, uint64_t ts)
{
	uint64_t v = vocab_size(r, s->next * r->nstreams + s->phase, ts);

	for (int w = 0; w < LINE_WORDS; w++) {
		if (w)
			*p++ = ' ';
		p = put_word(p, zipf_draw(&s->prng, v) - 1);
	}
	*p++ = '\n';
	return p;
}

static uint8_t *
build_pass(const struct run *r, struct stream *s, uint8_t *p, uint64_t ts)
{
	size_t filler = r->o->size - 8;

	p = put_be32(p, (uint32_t)r->o->size);
	p = put_be64(p, ts);
	memset(p, '.', filler);
	return p + filler;
}

/* Appends the stream's next event, stamped `ts`, at p; returns its end. */
static uint8_t *
build_event(const struct run *r, struct stream *s, uint8_t *p, uint64_t ts)
{
	switch (s->kind) {
	case REC_NBBO:
		return build_nbbo(r, s, p, ts);
	case REC_ORDER:
		return build_order(r, s, p, ts);
	case REC_LINE:
		return build_line(r, s, p, ts);
	case REC_PASS:
		return build_pass(r, s, p, ts);
	}
	return p;
}

/* True when the stream has no event left to build: its share of --events
 * is sent, its next event falls after --duration, or a signal came. */
static bool
stream_exhausted(const struct run *r, const struct stream *s, uint64_t now)
{
	if (g_stop || s->next >= s->quota)
		return true;
	return (r->paced ? due_time(r, s, s->next) : now) >= r->end;
}

/* When an idle stream should build its next chunk: when its next event is
 * due, but not sooner than one chunk interval after the last chunk. An
 * unpaced stream builds again as soon as the kernel took the last one. */
static uint64_t
stream_wake(const struct run *r, const struct stream *s)
{
	uint64_t due, early;

	if (!r->paced)
		return 0;
	due = due_time(r, s, s->next);
	early = s->last_fill + r->chunk_ns;
	return due > early ? due : early;
}

/* ST_IDLE -> builds every event due by `now` (or, unpaced, a full buffer
 * stamped `now`) -> ST_WRITING, or ST_DONE if nothing is left. */
static void
stream_fill(struct run *r, struct stream *s, uint64_t now)
{
	uint8_t *p = s->buf, *lim = s->buf + s->cap - r->max_record;

	s->chunk_events = 0;
	s->last_fill = now;
	while (p <= lim && !g_stop && s->next < s->quota) {
		uint64_t t = r->paced ? due_time(r, s, s->next) : now;

		if (t > now || t >= r->end)
			break;
		if (s->chunk_events++ == 0)
			s->chunk_first = t;
		p = build_event(r, s, p, t);
		s->next++;
	}
	s->len = (size_t)(p - s->buf);
	s->off = 0;
	if (s->len)
		s->state = ST_WRITING;
	else if (stream_exhausted(r, s, now))
		s->state = ST_DONE;
}

/* Writes what the kernel takes of the buffer: WL_OK when all of it is
 * written, WL_ERR_AGAIN when the socket is full, WL_ERR_IO (said on
 * stderr) when the peer is gone. */
static wl_err
stream_push(struct stream *s)
{
	while (s->off < s->len) {
		ssize_t n = write(s->fd, s->buf + s->off, s->len - s->off);

		if (n >= 0) {
			s->off += (size_t)n;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return WL_ERR_AGAIN;
		fprintf(stderr, "loadgen: write to %s: %s\n", s->name,
		    strerror(errno));
		return WL_ERR_IO;
	}
	return WL_OK;
}

/* ST_WRITING -> pushes the chunk; once all of it is written, counts its
 * events, charges its lag, and goes back to ST_IDLE (or ST_DONE). */
static wl_err
stream_write(struct run *r, struct stream *s)
{
	wl_err e = stream_push(s);
	uint64_t now;

	if (e != WL_OK)
		return e == WL_ERR_AGAIN ? WL_OK : e;
	now = wl_mono_ns();
	/* The chunk's first event waited longest: from its due time until
	 * its chunk's last byte was taken. */
	if (r->paced && now > s->chunk_first && now - s->chunk_first > r->max_lag)
		r->max_lag = now - s->chunk_first;
	r->sent += s->chunk_events;
	s->chunk_events = 0;
	s->len = s->off = 0;
	s->state = stream_exhausted(r, s, now) ? ST_DONE : ST_IDLE;
	return WL_OK;
}

/* Sleeps until `wake`, a signal, or one of the fds becomes writable. */
static void
wait_for(struct pollfd *pfd, unsigned n, uint64_t wake, uint64_t now)
{
	struct timespec ts, *tp = NULL;

	if (wake != UINT64_MAX) {
		uint64_t d = wake > now ? wake - now : 0;

		ts.tv_sec = (time_t)(d / 1000000000u);
		ts.tv_nsec = (long)(d % 1000000000u);
		tp = &ts;
	}
	(void)ppoll(pfd, n, tp, &g_waitmask);
}

/* Writes a stream's whole buffer, waiting for the socket as needed; used
 * before the timed run starts. */
static wl_err
stream_flush(struct stream *s)
{
	struct pollfd pfd = { .fd = s->fd, .events = POLLOUT };
	wl_err e;

	while ((e = stream_push(s)) == WL_ERR_AGAIN && !g_stop)
		wait_for(&pfd, 1, UINT64_MAX, 0);
	s->len = s->off = 0;
	/* After a signal the rest is dropped: the run ends with sent=0. */
	return e == WL_ERR_IO ? e : WL_OK;
}

/* w1: one NBBO per symbol, a tight market around $100, so the engine knows
 * every symbol before the first order; then a pause for it to apply them
 * (not with --out: nothing reads the file meanwhile). Not counted in
 * `sent`. A signal cuts this short; the timed run then ends at once. */
static wl_err
send_initial_nbbos(struct run *r)
{
	struct stream *s = &r->streams[0];
	uint64_t prng = r->o->seed ^ 0x5bd1e9955bd1e995ull;
	uint64_t ts = wl_mono_ns();
	struct timespec pause = { 0, (long)WARMUP_NS };

	for (uint64_t i = 0; i < r->o->symbols; i++) {
		char sym[4];
		uint64_t cents = 9950 + prng_below(&prng, 101);

		symbol_of(sym, i);
		s->len = (size_t)(put_nbbo(s->buf + s->len, sym, ts,
		    (double)cents / 100, (double)(cents + 1) / 100) - s->buf);
		if ((s->len + r->max_record > s->cap || i + 1 == r->o->symbols) &&
		    stream_flush(s) != WL_OK)
			return WL_ERR_IO;
	}
	if (s->socket && !g_stop)
		(void)ppoll(NULL, 0, &pause, &g_waitmask);
	return WL_OK;
}

/* The timed run: every stream from ST_IDLE to ST_DONE. Returns WL_ERR_IO
 * when a peer went away. After a signal, buffers already built get
 * STOP_GRACE_NS to drain; then the run ends regardless. */
static wl_err
run_streams(struct run *r)
{
	struct pollfd *pfd = calloc(r->nstreams, sizeof(*pfd));
	uint64_t deadline = UINT64_MAX;
	wl_err e = WL_OK;

	if (!pfd)
		return WL_ERR_NOMEM;
	for (;;) {
		uint64_t now = wl_mono_ns(), wake = UINT64_MAX;
		unsigned npfd = 0, live = 0;

		if (g_stop && deadline == UINT64_MAX)
			deadline = now + STOP_GRACE_NS;
		if (now >= deadline) {
			fprintf(stderr, "loadgen: peers did not take the last "
			    "buffers within %llu s of the signal\n",
			    STOP_GRACE_NS / 1000000000ull);
			break;
		}
		for (unsigned i = 0; i < r->nstreams && e == WL_OK; i++) {
			struct stream *s = &r->streams[i];

			if (s->state == ST_IDLE && stream_wake(r, s) <= now)
				stream_fill(r, s, now);
			if (s->state == ST_IDLE && stream_exhausted(r, s, now))
				s->state = ST_DONE;
			if (s->state == ST_WRITING)
				e = stream_write(r, s);
			if (s->state == ST_IDLE) {
				uint64_t w = stream_wake(r, s);
				wake = w < wake ? w : wake;
				live++;
			} else if (s->state == ST_WRITING) {
				pfd[npfd++] = (struct pollfd){ s->fd, POLLOUT, 0 };
				live++;
			}
		}
		if (e != WL_OK || live == 0)
			break;
		/* Unpaced, the generator goes only as fast as back pressure
		 * lets it, so `sent` over time is the peer's intake over time:
		 * how it changes as the run goes on (a growing vocabulary, say). */
		if (r->progress_ns > 0) {
			if (now >= r->next_progress) {
				printf("LOADGEN progress t_s=%.3f sent=%llu\n",
				    (double)(now - r->start) / 1e9,
				    (unsigned long long)r->sent);
				fflush(stdout);
				while (r->next_progress <= now)
					r->next_progress += r->progress_ns;
			}
			wake = r->next_progress < wake ? r->next_progress : wake;
		}
		wait_for(pfd, npfd, deadline < wake ? deadline : wake, now);
	}
	free(pfd);
	return e;
}

/* ---- opening the streams ------------------------------------------------ */

/* Connects to "HOST:PORT" (HOST may be "[v6]"). Returns the fd, or -1
 * after saying why. */
static int
connect_to(const char *addr)
{
	char host[256], portstr[8];
	const char *h;
	size_t hl;
	uint16_t port;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
	int fd = -1, err, saved = 0;

	if (wl_addr_split(addr, 1, &h, &hl, &port) != WL_OK || hl == 0 ||
	    hl >= sizeof(host)) {
		fprintf(stderr, "loadgen: --connect: '%s' is not HOST:PORT with "
		    "a port from 1 to 65535\n", addr);
		return -1;
	}
	memcpy(host, h, hl);
	host[hl] = '\0';
	snprintf(portstr, sizeof(portstr), "%u", (unsigned)port);
	if ((err = getaddrinfo(host, portstr, &hints, &res)) != 0) {
		fprintf(stderr, "loadgen: --connect: %s: %s\n", addr,
		    gai_strerror(err));
		return -1;
	}
	for (ai = res; ai && fd < 0; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
		if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
			saved = errno;
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(res);
	if (fd < 0)
		fprintf(stderr, "loadgen: cannot connect to %s: %s\n", addr,
		    strerror(saved ? saved : errno));
	return fd;
}

static wl_err
stream_open_socket(struct stream *s, const char *addr)
{
	int one = 1;

	s->name = addr;
	s->socket = true;
	if ((s->fd = connect_to(addr)) < 0)
		return WL_ERR_IO;
	/* Chunks are already batched; Nagle would only add delay at low
	 * rates. */
	(void)setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	(void)fcntl(s->fd, F_SETFL, fcntl(s->fd, F_GETFL) | O_NONBLOCK);
	return WL_OK;
}

static wl_err
stream_open_file(struct stream *s, const char *path)
{
	s->name = path;
	s->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (s->fd < 0) {
		fprintf(stderr, "loadgen: --out: %s: %s\n", path,
		    strerror(errno));
		return WL_ERR_IO;
	}
	return WL_OK;
}

/* Splits --connect at commas into `out` (strings owned by `copy`). Returns
 * the number of addresses. */
static unsigned
split_addrs(char *copy, char **out, unsigned max)
{
	unsigned n = 0;

	for (char *save, *t = strtok_r(copy, ",", &save); t && n < max;
	    t = strtok_r(NULL, ",", &save))
		out[n++] = t;
	return n;
}

/* Allocates the streams and opens their sockets or files. Every buffer is
 * owned by its stream; run_free releases them. */
static wl_err
run_open(struct run *r, char **addrs, unsigned naddrs)
{
	const struct options *o = r->o;
	bool w1 = !strcmp(o->workload, "w1") || r->w1e;
	static char paths[2][4096];

	r->nstreams = o->out ? (w1 ? 2 : 1) : naddrs;
	r->streams = calloc(r->nstreams, sizeof(*r->streams));
	if (!r->streams)
		return WL_ERR_NOMEM;
	/* Before any open can fail: run_free closes every fd >= 0. */
	for (unsigned i = 0; i < r->nstreams; i++)
		r->streams[i].fd = -1;
	for (unsigned i = 0; i < r->nstreams; i++) {
		struct stream *s = &r->streams[i];
		uint64_t n = o->events ? o->events : UINT64_MAX;
		wl_err e;

		s->fd = -1;
		s->phase = i;
		s->quota = n == UINT64_MAX ? n :
		    n / r->nstreams + (i < n % r->nstreams);
		s->prng = o->seed ^ (0xa0761d6478bd642full * (i + 1));
		s->kind = w1 ? (i == 0 ? REC_NBBO : REC_ORDER) :
		    o->workload[1] == '2' ? REC_LINE : REC_PASS;
		s->cap = CHUNK_BYTES + r->max_record;
		if (!(s->buf = malloc(s->cap)))
			return WL_ERR_NOMEM;
		if (!o->out)
			e = stream_open_socket(s, addrs[i]);
		else if (w1) {
			snprintf(paths[i], sizeof(paths[i]), "%s.%s", o->out,
			    i == 0 ? "nbbo" : "orders");
			e = stream_open_file(s, paths[i]);
		} else
			e = stream_open_file(s, o->out);
		if (e != WL_OK)
			return e;
	}
	return WL_OK;
}

/* Ends every stream: a socket's write side is shut first so the peer sees
 * a clean end of stream after the last record. */
static void
run_free(struct run *r)
{
	for (unsigned i = 0; i < r->nstreams; i++) {
		struct stream *s = &r->streams[i];

		if (s->fd >= 0) {
			if (s->socket)
				(void)shutdown(s->fd, SHUT_WR);
			close(s->fd);
		}
		free(s->buf);
	}
	free(r->streams);
}

/* ---- main --------------------------------------------------------------- */

/* Checks what the table cannot: the workload name, the address count.
 * Returns false after saying what is wrong. */
static bool
check_options(const struct options *o, unsigned naddrs)
{
	static const char *const names[] = { "w1", "w1e", "w2", "w3" };
	bool known = false;

	for (size_t i = 0; i < 4; i++)
		known = known || (o->workload && !strcmp(o->workload, names[i]));
	if (!known) {
		fprintf(stderr, "loadgen: --workload: %s%s%s (expected w1, "
		    "w1e, w2 or w3)\n", o->workload ? "unknown workload '" :
		    "missing", o->workload ? o->workload : "",
		    o->workload ? "'" : "");
		return false;
	}
	if (!o->connect == !o->out) {
		fprintf(stderr, "loadgen: give exactly one of --connect and "
		    "--out\n");
		return false;
	}
	if (o->connect && o->workload[1] == '1' && naddrs != 2) {
		fprintf(stderr, "loadgen: --connect: %s needs two addresses "
		    "(NBBO,orders), got %u\n", o->workload, naddrs);
		return false;
	}
	if (o->connect && o->workload[1] == '2' && naddrs != 1) {
		fprintf(stderr, "loadgen: --connect: w2 needs one address, "
		    "got %u\n", naddrs);
		return false;
	}
	if (o->connect && naddrs == 0) {
		fprintf(stderr, "loadgen: --connect: no address\n");
		return false;
	}
	/* A slower schedule is no schedule: its period overflows the clock. */
	if (o->rate > 0 && o->rate < 0.001) {
		fprintf(stderr, "loadgen: --rate: %g is below 0.001 events/s "
		    "(0 = as fast as possible)\n", o->rate);
		return false;
	}
	if (o->vocab_end < o->vocab_start) {
		fprintf(stderr, "loadgen: --vocab-end (%llu) is below "
		    "--vocab-start (%llu)\n", (unsigned long long)o->vocab_end,
		    (unsigned long long)o->vocab_start);
		return false;
	}
	return true;
}

static void
setup_signals(void)
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
	sigprocmask(SIG_BLOCK, &block, &g_waitmask);
	sigdelset(&g_waitmask, SIGINT);
	sigdelset(&g_waitmask, SIGTERM);
}

/* The achieved rate is events over the time they took. For a paced run
 * that time ends no sooner than the last event's slot does (start + sent
 * periods): event 0 is due at the start, so N events span N periods, and
 * counting only to the last send would overstate the rate. */
static void
print_summary(const struct run *r, uint64_t finish)
{
	double elapsed = (double)(finish - r->start) / 1e9;

	if (r->paced && (double)r->sent * r->period_ns / 1e9 > elapsed)
		elapsed = (double)r->sent * r->period_ns / 1e9;

	printf("LOADGEN workload=%s offered_rate=%.10g sent=%llu elapsed_s=%.3f "
	    "achieved_rate=%.0f max_lag_ms=%.3f\n", r->o->workload, r->o->rate,
	    (unsigned long long)r->sent, elapsed,
	    elapsed > 0 ? (double)r->sent / elapsed : 0.0,
	    (double)r->max_lag / 1e6);
	fflush(stdout);
}

int
main(int argc, char **argv)
{
	struct options o = {
		.seed = 1, .symbols = 350, .reject_every = 70000, .size = 32,
		.vocab_start = 10000, .vocab_end = 1000000, .chunk_us = 500,
	};
	struct run r = { .o = &o };
	char *copy = NULL, *addrs[256];
	unsigned naddrs = 0;
	wl_err e;

	if (!opt_parse(&o, argc, argv))
		return 2;
	if (o.connect && !(copy = strdup(o.connect)))
		return 1;
	if (copy)
		naddrs = split_addrs(copy, addrs, 256);
	if (!check_options(&o, naddrs)) {
		free(copy);
		return 2;
	}
	setup_signals();
	/* Wake-ups are the schedule: the default 50 us timer slack would be
	 * added to the lag of every chunk. */
	(void)prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
	r.w1e = !strcmp(o.workload, "w1e");
	r.paced = o.rate > 0;
	r.period_ns = r.paced ? 1e9 / o.rate : 0;
	r.chunk_ns = (uint64_t)(o.chunk_us * 1000);
	r.max_record = o.workload[1] == '1' ? 4 + ORDER_LEN :
	    o.workload[1] == '2' ? LINE_WORDS * (WORD_MAX + 1) : 4 + o.size;
	e = run_open(&r, addrs, naddrs);
	if (e == WL_OK && r.streams[0].kind == REC_NBBO)
		e = send_initial_nbbos(&r);
	if (e == WL_OK) {
		r.start = wl_mono_ns();
		r.progress_ns = (uint64_t)(o.progress * 1e9);
		r.next_progress = r.start + r.progress_ns;
		r.end = o.duration > 0 ?
		    r.start + (uint64_t)(o.duration * 1e9) : UINT64_MAX;
		e = run_streams(&r);
		print_summary(&r, wl_mono_ns());
	}
	run_free(&r);
	free(copy);
	return e == WL_OK ? 0 : 1;
}
