/*
 * source.c -- built-in file and TCP sources.
 *
 * Stream ids: a file source is stream (index + 1); every TCP connection
 * gets its own stream, numbered from 1 << 20 upwards. Message ids start at
 * 1 in every stream and increase by one per event.
 */
#include "source.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"

/* Bytes asked of the kernel per read(). Every record of a read becomes an
 * event before the loop flushes batches, so a read's events should still
 * be in the CPU's caches when batches are built: 32 KiB of ~50-byte
 * records is ~650 events, ~80 KiB with their headers. With 256 KiB reads
 * (~650 KiB of events) building a batch took a cache miss per event on a
 * CPU with 1 MiB of L2: unpaced W1 with the Go runner ran at 1.1-1.2M
 * events/s, against 2.5-2.8M with 32 KiB (docs/design.md). */
#define READ_CHUNK (32 * 1024)

/* Seconds a TCP source stops accepting after accept() failed for want of
 * descriptors or memory, unless a connection closes first (which frees
 * one). Retrying at once would spin: the refused connection stays in the
 * listen backlog, so the socket stays readable. */
#define ACCEPT_RETRY_S 1.0

/* The life of a source. */
typedef enum {
	SS_NEW,      /* not started */
	SS_READING,  /* reading (file) or accepting (tcp) */
	SS_ENDED,    /* end of file, fatal error, or stopped */
} source_state;

typedef struct conn conn;

/* Frame parser over a growable buffer, shared by files and connections. */
typedef struct {
	uint8_t *buf;
	size_t start, end, cap;
	/* The most the buffer grows to: a chunk beside the largest frame.
	 * It starts at two chunks, so that a connection of small frames does
	 * not hold max_frame_bytes (8 MiB by default) for its whole life. */
	size_t max_cap;
	uint32_t stream_id;
	uint64_t next_id;
	uint64_t offset;   /* bytes consumed so far, for error messages */
	/* When the bytes being parsed were read: taken once per read(), not
	 * per event, since every event of one read arrived together (and
	 * two clock reads per event cost more than the parse). */
	uint64_t read_ns;
	int64_t read_us;
} reader;

struct conn {
	conn *next;
	wl_source *src;
	int fd;
	ev_io rio;
	reader rd;
	char peer[64];
};

struct wl_source {
	const wl_io *def;
	int index;
	struct ev_loop *loop;
	wl_source_hooks hooks;
	void *arg;
	source_state state;
	bool paused;
	int fd;           /* file, or the listening socket */
	ev_idle idle;     /* file: read while there is room */
	ev_io lio;        /* tcp: accept */
	ev_timer accept_retry; /* tcp: accepting stopped after a failure */
	reader rd;        /* file */
	conn *conns;
	size_t nconns;
	uint16_t port;
	uint64_t events, bytes, errors;
	uint64_t pauses;  /* times back pressure paused it */
	bool resume;      /* file: start at resume_offset (recovery) */
	uint64_t resume_offset, resume_id;
};

static uint32_t next_tcp_stream = 1u << 20;

static int64_t
wall_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int
reader_init(reader *rd, size_t max_frame)
{
	rd->max_cap = READ_CHUNK + max_frame + 8;
	rd->cap = rd->max_cap < 2 * READ_CHUNK ? rd->max_cap : 2 * READ_CHUNK;
	rd->buf = malloc(rd->cap);
	rd->start = rd->end = 0;
	rd->next_id = 1;
	return rd->buf ? 0 : -1;
}

static void
emit(wl_source *s, reader *rd, const uint8_t *p, uint32_t n)
{
	wl_event *e = wl_event_new(NULL, 0, p, n);

	if (e == NULL) {
		wl_log("SRC-ERROR", "source '%s': out of memory", s->def->name);
		s->errors++;
		return;
	}
	e->stream_id = rd->stream_id;
	e->message_id = rd->next_id++;
	e->event_time = rd->read_us;
	e->ingest_ns = rd->read_ns;
	s->events++;
	s->bytes += n;
	s->hooks.event(s->arg, s->index, e);
}

/*
 * Emits every complete frame in the buffer. Returns 0, or -1 when the
 * stream is broken (a frame over the limit): the caller ends the stream.
 */
static int
parse(wl_source *s, reader *rd, const char *where)
{
	while (rd->start < rd->end) {
		uint8_t *p = rd->buf + rd->start;
		size_t avail = rd->end - rd->start;
		if (s->def->framing == WL_FRAMING_LINE) {
			uint8_t *nl = memchr(p, '\n', avail);
			if (nl == NULL) {
				if (avail > s->def->max_frame_bytes) {
					wl_log("SRC-FRAME", "source '%s' %s offset %llu: "
					    "line longer than max_frame_bytes=%u",
					    s->def->name, where,
					    (unsigned long long)rd->offset,
					    s->def->max_frame_bytes);
					s->errors++;
					return -1;
				}
				break;
			}
			if ((size_t)(nl - p) > s->def->max_frame_bytes) {
				wl_log("SRC-FRAME", "source '%s' %s offset %llu: "
				    "line longer than max_frame_bytes=%u",
				    s->def->name, where,
				    (unsigned long long)rd->offset,
				    s->def->max_frame_bytes);
				s->errors++;
				return -1;
			}
			uint32_t n = (uint32_t)(nl - p);
			if (n > 0 && p[n - 1] == '\r')
				n--;
			emit(s, rd, p, n);
			rd->start += (size_t)(nl - p) + 1;
			rd->offset += (uint64_t)(nl - p) + 1;
		} else {
			uint32_t n;
			if (avail < 4)
				break;
			n = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
			    ((uint32_t)p[2] << 8) | p[3];
			if (n > s->def->max_frame_bytes) {
				wl_log("SRC-FRAME", "source '%s' %s offset %llu: frame "
				    "of %u bytes exceeds max_frame_bytes=%u",
				    s->def->name, where,
				    (unsigned long long)rd->offset, n,
				    s->def->max_frame_bytes);
				s->errors++;
				return -1;
			}
			if (avail < 4 + (size_t)n)
				break;
			emit(s, rd, p + 4, n);
			rd->start += 4 + (size_t)n;
			rd->offset += 4 + (uint64_t)n;
		}
	}
	if (rd->start == rd->end)
		rd->start = rd->end = 0;
	return 0;
}

/*
 * Makes room for the next read and returns its size: one chunk at most,
 * never the whole buffer (which may hold 8 MiB, and reading all of it at
 * once would bring in a whole file before back pressure, checked after
 * each read, could pause the source). Unparsed bytes move to the front;
 * when a partial frame still leaves less than a chunk, the buffer grows
 * (doubling, up to max_cap, where a chunk always fits beside the largest
 * frame parse() accepts). Returns 0 only when growing failed for want of
 * memory and nothing fits.
 */
static size_t
reader_room(reader *rd)
{
	size_t room;

	if (rd->start > 0 && rd->cap - rd->end < READ_CHUNK) {
		memmove(rd->buf, rd->buf + rd->start, rd->end - rd->start);
		rd->end -= rd->start;
		rd->start = 0;
	}
	if (rd->cap - rd->end < READ_CHUNK && rd->cap < rd->max_cap) {
		size_t nc = rd->cap * 2 < rd->max_cap ? rd->cap * 2 : rd->max_cap;
		uint8_t *nb = realloc(rd->buf, nc);

		if (nb != NULL) {
			rd->buf = nb;
			rd->cap = nc;
		}
	}
	room = rd->cap - rd->end;
	return room < READ_CHUNK ? room : READ_CHUNK;
}

/* Reports a partial frame left at the end of a stream. */
static void
leftover(wl_source *s, reader *rd, const char *where)
{
	size_t n = rd->end - rd->start;

	if (n == 0)
		return;
	if (s->def->framing == WL_FRAMING_LINE) {
		/* A last line without '\n' is still a line. */
		emit(s, rd, rd->buf + rd->start, (uint32_t)n);
		rd->start = rd->end = 0;
		rd->offset += n;
		return;
	}
	wl_log("SRC-TRUNCATED", "source '%s' %s offset %llu: stream ended "
	    "inside a frame (%zu bytes dropped)", s->def->name, where,
	    (unsigned long long)rd->offset, n);
	s->errors++;
}

static void
end_source(wl_source *s)
{
	if (s->state == SS_ENDED)
		return;
	s->state = SS_ENDED;
	ev_idle_stop(s->loop, &s->idle);
	if (s->def->type == WL_IO_FILE && s->fd >= 0) {
		close(s->fd);
		s->fd = -1;
	}
	wl_log("SRC-END", "source '%s' ended after %llu events",
	    s->def->name, (unsigned long long)s->events);
	s->hooks.ended(s->arg, s->index);
}

static void
file_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
	wl_source *s = w->data;
	reader *rd = &s->rd;
	size_t room;
	ssize_t n;

	(void)loop;
	(void)revents;
	if ((room = reader_room(rd)) == 0) {
		wl_log("SRC-ERROR", "source '%s': out of memory for a frame "
		    "of %s", s->def->name, s->def->path);
		s->errors++;
		end_source(s);
		return;
	}
	n = read(s->fd, rd->buf + rd->end, room);
	if (n < 0) {
		if (errno == EINTR)
			return;
		wl_log("SRC-ERROR", "source '%s': read %s: %s", s->def->name,
		    s->def->path, strerror(errno));
		s->errors++;
		end_source(s);
		return;
	}
	if (n == 0) {
		leftover(s, rd, s->def->path);
		end_source(s);
		return;
	}
	rd->end += (size_t)n;
	rd->read_ns = wl_mono_ns();
	rd->read_us = wall_us();
	if (parse(s, rd, s->def->path) != 0) {
		end_source(s);
		return;
	}
	if (s->hooks.pressure(s->arg)) {
		s->paused = true;
		s->pauses++;
		ev_idle_stop(s->loop, &s->idle);
	}
}

static void
conn_close(conn *c)
{
	wl_source *s = c->src;
	conn **pp;

	ev_io_stop(s->loop, &c->rio);
	close(c->fd);
	for (pp = &s->conns; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	s->nconns--;
	free(c->rd.buf);
	free(c);
	/* A descriptor is free again: take the next connection now rather
	 * than when the retry timer fires. */
	if (ev_is_active(&s->accept_retry) && s->fd >= 0) {
		ev_timer_stop(s->loop, &s->accept_retry);
		ev_io_start(s->loop, &s->lio);
	}
}

static void
conn_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	conn *c = w->data;
	wl_source *s = c->src;
	reader *rd = &c->rd;
	size_t room;
	ssize_t n;

	(void)loop;
	(void)revents;
	if ((room = reader_room(rd)) == 0) {
		wl_log("SRC-ERROR", "source '%s' peer %s: out of memory for a "
		    "frame; closing the connection", s->def->name, c->peer);
		s->errors++;
		conn_close(c);
		return;
	}
	n = read(c->fd, rd->buf + rd->end, room);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		if (n < 0)
			wl_log("SRC-ERROR", "source '%s' peer %s: %s",
			    s->def->name, c->peer, strerror(errno));
		leftover(s, rd, c->peer);
		wl_log("SRC-CLOSE", "source '%s' peer %s closed after %llu "
		    "events", s->def->name, c->peer,
		    (unsigned long long)(rd->next_id - 1));
		conn_close(c);
		return;
	}
	rd->end += (size_t)n;
	rd->read_ns = wl_mono_ns();
	rd->read_us = wall_us();
	if (parse(s, rd, c->peer) != 0) {
		/* The rest of this stream cannot be framed: close it. The
		 * frames before the bad one were delivered. */
		wl_log("SRC-CLOSE", "source '%s' peer %s: closing the "
		    "connection after a bad frame", s->def->name, c->peer);
		conn_close(c);
		return;
	}
	if (s->hooks.pressure(s->arg)) {
		s->paused = true;
		s->pauses++;
		for (conn *x = s->conns; x; x = x->next)
			ev_io_stop(s->loop, &x->rio);
	}
}

static void
accept_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	wl_source *s = w->data;

	(void)revents;
	if (s->fd >= 0)
		ev_io_start(loop, &s->lio);
}

static void
accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	wl_source *s = w->data;
	struct sockaddr_storage sa;
	socklen_t sl = sizeof(sa);
	char host[48] = "?", port[8] = "?";
	conn *c;
	int fd;

	(void)revents;
	fd = accept4(s->fd, (struct sockaddr *)&sa, &sl,
	    SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK ||
		    errno == EINTR || errno == ECONNABORTED)
			return;
		/* EMFILE, ENFILE, ENOBUFS, ENOMEM: nothing to do but wait. */
		wl_log("SRC-ERROR", "source '%s': cannot accept a connection "
		    "(%zu open): %s; accepting again in %.0f s or when one "
		    "closes", s->def->name, s->nconns, strerror(errno),
		    ACCEPT_RETRY_S);
		ev_io_stop(loop, &s->lio);
		/* Set each time: a stopped timer keeps what was left of its
		 * last run, which after it fired is nothing. */
		ev_timer_set(&s->accept_retry, ACCEPT_RETRY_S, 0.);
		ev_timer_start(loop, &s->accept_retry);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL || reader_init(&c->rd, s->def->max_frame_bytes) != 0) {
		wl_log("SRC-ERROR", "source '%s': out of memory accepting a "
		    "connection", s->def->name);
		free(c);
		close(fd);
		return;
	}
	s->nconns++;
	getnameinfo((struct sockaddr *)&sa, sl, host, sizeof(host), port,
	    sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV);
	snprintf(c->peer, sizeof(c->peer), "%s:%s", host, port);
	c->src = s;
	c->fd = fd;
	c->rd.stream_id = next_tcp_stream++;
	c->next = s->conns;
	s->conns = c;
	ev_io_init(&c->rio, conn_cb, fd, EV_READ);
	c->rio.data = c;
	if (!s->paused)
		ev_io_start(loop, &c->rio);
	wl_log("SRC-ACCEPT", "source '%s' accepted %s as stream %u",
	    s->def->name, c->peer, c->rd.stream_id);
}

wl_err
wl_source_new(wl_source **out, struct ev_loop *loop, const wl_io *def,
    int index, const wl_source_hooks *hooks, void *arg)
{
	wl_source *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return WL_ERR_NOMEM;
	s->def = def;
	s->index = index;
	s->loop = loop;
	s->hooks = *hooks;
	s->arg = arg;
	s->fd = -1;
	s->state = SS_NEW;
	ev_idle_init(&s->idle, file_cb);
	/* Highest priority: the idle watcher then runs on every loop
	 * iteration, even when replies keep other watchers busy, so a file
	 * source is starved only by back pressure. */
	ev_set_priority(&s->idle, EV_MAXPRI);
	s->idle.data = s;
	ev_init(&s->lio, accept_cb);
	s->lio.data = s;
	ev_timer_init(&s->accept_retry, accept_retry_cb, ACCEPT_RETRY_S, 0.);
	s->accept_retry.data = s;
	*out = s;
	return WL_OK;
}

static wl_err
tcp_listen(wl_source *s)
{
	struct addrinfo hints, *ai = NULL;
	struct sockaddr_storage sa;
	socklen_t sl = sizeof(sa);
	char port[8];
	int one = 1;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	snprintf(port, sizeof(port), "%u", s->def->port);
	if (getaddrinfo(s->def->host, port, &hints, &ai) != 0 || ai == NULL) {
		wl_log("SRC-ERROR", "source '%s': cannot resolve %s",
		    s->def->name, s->def->host);
		return WL_ERR_IO;
	}
	s->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->fd < 0 ||
	    setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    bind(s->fd, ai->ai_addr, ai->ai_addrlen) != 0 ||
	    listen(s->fd, 64) != 0) {
		wl_log("SRC-ERROR", "source '%s': cannot listen on %s:%u: %s",
		    s->def->name, s->def->host, s->def->port, strerror(errno));
		freeaddrinfo(ai);
		if (s->fd >= 0)
			close(s->fd);
		s->fd = -1;
		return WL_ERR_IO;
	}
	freeaddrinfo(ai);
	if (getsockname(s->fd, (struct sockaddr *)&sa, &sl) == 0)
		s->port = ntohs(sa.ss_family == AF_INET6 ?
		    ((struct sockaddr_in6 *)&sa)->sin6_port :
		    ((struct sockaddr_in *)&sa)->sin_port);
	ev_io_set(&s->lio, s->fd, EV_READ);
	ev_io_start(s->loop, &s->lio);
	wl_log("SRC-LISTEN", "source '%s' listening on %s:%u", s->def->name,
	    s->def->host, s->port);
	return WL_OK;
}

wl_err
wl_source_start(wl_source *s)
{
	if (s->state != SS_NEW)
		return WL_ERR_STATE;
	if (s->def->type == WL_IO_TCP) {
		if (tcp_listen(s) != WL_OK)
			return WL_ERR_IO;
		s->state = SS_READING;
		return WL_OK;
	}
	s->fd = open(s->def->path, O_RDONLY | O_CLOEXEC);
	if (s->fd < 0) {
		wl_log("SRC-ERROR", "source '%s': cannot open %s: %s",
		    s->def->name, s->def->path, strerror(errno));
		return WL_ERR_IO;
	}
	if (reader_init(&s->rd, s->def->max_frame_bytes) != 0) {
		close(s->fd);
		s->fd = -1;
		return WL_ERR_NOMEM;
	}
	s->rd.stream_id = (uint32_t)s->index + 1;
	if (s->resume) {
		struct stat st;
		if (fstat(s->fd, &st) != 0 ||
		    (uint64_t)st.st_size < s->resume_offset ||
		    lseek(s->fd, (off_t)s->resume_offset, SEEK_SET) < 0) {
			wl_log("SRC-ERROR", "source '%s': %s is shorter than the "
			    "checkpointed offset %llu: it is not the file the "
			    "checkpoint read", s->def->name, s->def->path,
			    (unsigned long long)s->resume_offset);
			close(s->fd);
			s->fd = -1;
			return WL_ERR_IO;
		}
		s->rd.offset = s->resume_offset;
		s->rd.next_id = s->resume_id + 1;
		wl_log("SRC-RESUME", "source '%s' resumes %s at offset %llu "
		    "after message %llu", s->def->name, s->def->path,
		    (unsigned long long)s->resume_offset,
		    (unsigned long long)s->resume_id);
	}
	s->state = SS_READING;
	wl_log("SRC-START", "source '%s' reading %s", s->def->name,
	    s->def->path);
	ev_idle_start(s->loop, &s->idle);
	return WL_OK;
}

void
wl_source_seek(wl_source *s, uint64_t offset, uint64_t last_id)
{
	s->resume = true;
	s->resume_offset = offset;
	s->resume_id = last_id;
}

bool
wl_source_position(const wl_source *s, uint64_t *offset, uint64_t *last_id)
{
	if (s->def->type != WL_IO_FILE)
		return false;
	if (s->state == SS_NEW) {
		*offset = s->resume ? s->resume_offset : 0;
		*last_id = s->resume ? s->resume_id : 0;
		return true;
	}
	*offset = s->rd.offset;
	*last_id = s->rd.next_id - 1;
	return true;
}

void
wl_source_resume(wl_source *s)
{
	if (!s->paused || s->state != SS_READING)
		return;
	s->paused = false;
	if (s->def->type == WL_IO_FILE) {
		ev_idle_start(s->loop, &s->idle);
		return;
	}
	for (conn *c = s->conns; c; c = c->next)
		ev_io_start(s->loop, &c->rio);
}

bool
wl_source_paused(const wl_source *s)
{
	return s->paused;
}

void
wl_source_stop(wl_source *s)
{
	if (s->state == SS_ENDED)
		return;
	if (s->def->type == WL_IO_TCP) {
		ev_io_stop(s->loop, &s->lio);
		ev_timer_stop(s->loop, &s->accept_retry);
		if (s->fd >= 0)
			close(s->fd);
		s->fd = -1;
		while (s->conns)
			conn_close(s->conns);
	}
	if (s->state == SS_NEW)
		s->state = SS_READING; /* so that end_source reports it */
	end_source(s);
}

bool
wl_source_started(const wl_source *s)
{
	return s->state != SS_NEW;
}

bool
wl_source_ended(const wl_source *s)
{
	return s->state == SS_ENDED;
}

const char *
wl_source_name(const wl_source *s)
{
	return s->def->name;
}

uint64_t
wl_source_events(const wl_source *s)
{
	return s->events;
}

uint64_t
wl_source_bytes(const wl_source *s)
{
	return s->bytes;
}

uint64_t
wl_source_errors(const wl_source *s)
{
	return s->errors;
}

uint64_t
wl_source_pauses(const wl_source *s)
{
	return s->pauses;
}

uint16_t
wl_source_port(const wl_source *s)
{
	return s->port;
}

void
wl_source_free(wl_source *s)
{
	if (s == NULL)
		return;
	ev_idle_stop(s->loop, &s->idle);
	ev_io_stop(s->loop, &s->lio);
	ev_timer_stop(s->loop, &s->accept_retry);
	while (s->conns)
		conn_close(s->conns);
	if (s->fd >= 0)
		close(s->fd);
	free(s->rd.buf);
	free(s);
}
