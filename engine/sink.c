/*
 * sink.c -- built-in file and TCP sinks.
 *
 * Outputs are appended to one contiguous buffer and written in large
 * writes: a sink is flushed once per loop iteration (from the engine's
 * ev_prepare) or when the buffer passes FLUSH_AT, never once per event.
 */
#include "sink.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

#define FLUSH_AT (256 * 1024)

/* TCP sink connection states. */
typedef enum {
	TS_NONE,        /* not a TCP sink */
	TS_CONNECTING,  /* non-blocking connect in progress */
	TS_UP,          /* connected */
	TS_WAIT,        /* connect failed or connection lost: retry timer */
} tcp_state;

struct wl_sink {
	const wl_io *def;
	struct ev_loop *loop;
	int fd;
	tcp_state ts;
	ev_io wio;
	ev_timer retry;
	uint8_t *buf;
	size_t len, cap;
	uint64_t events;
	uint64_t bytes;
	/* Outputs count as done (their source message may be acknowledged)
	 * only once their bytes have left the buffer: a reference to each
	 * origin is held until then, with the total byte count it needs. */
	uint64_t appended, written;  /* bytes ever put in / taken out of buf */
	uint64_t base;               /* file: length kept from before (recovery) */
	struct held { wl_origin *o; uint64_t end; } *held;
	size_t hhead, hcount, hcap;
};

/* Releases the origins whose bytes are all written. */
static void
release_written(wl_sink *s)
{
	while (s->hcount > 0 && s->held[s->hhead].end <= s->written) {
		wl_origin_unref(s->held[s->hhead].o);
		s->hhead = (s->hhead + 1) % s->hcap;
		s->hcount--;
	}
}

/* Holds `o` until `end` bytes have been written; false when out of
 * memory (the caller then lets go at once: at worst an early ack). */
static bool
hold(wl_sink *s, wl_origin *o, uint64_t end)
{
	if (s->hcount == s->hcap) {
		size_t ncap = s->hcap ? s->hcap * 2 : 256;
		struct held *nh = malloc(ncap * sizeof(*nh));
		if (nh == NULL)
			return false;
		for (size_t i = 0; i < s->hcount; i++)
			nh[i] = s->held[(s->hhead + i) % s->hcap];
		free(s->held);
		s->held = nh;
		s->hcap = ncap;
		s->hhead = 0;
	}
	wl_origin_ref(o);
	s->held[(s->hhead + s->hcount) % s->hcap] = (struct held){ o, end };
	s->hcount++;
	return true;
}

static int
mkdirs(const char *path)
{
	char tmp[4096];
	size_t n = strlen(path);

	if (n >= sizeof(tmp))
		return -1;
	memcpy(tmp, path, n + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	return 0;
}

static void tcp_connect(wl_sink *s);

static void
tcp_down(wl_sink *s, const char *why)
{
	wl_log("SINK-DISCONNECT", "sink '%s' %s:%u: %s; retrying in 1 s "
	    "(%zu bytes held)", s->def->name, s->def->host, s->def->port, why,
	    s->len);
	ev_io_stop(s->loop, &s->wio);
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	s->ts = TS_WAIT;
	ev_timer_set(&s->retry, 1.0, 0.);
	ev_timer_start(s->loop, &s->retry);
}

static void
tcp_write(wl_sink *s)
{
	while (s->len > 0) {
		ssize_t n = send(s->fd, s->buf, s->len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			if (errno == EINTR)
				continue;
			tcp_down(s, strerror(errno));
			return;
		}
		memmove(s->buf, s->buf + n, s->len - (size_t)n);
		s->len -= (size_t)n;
		s->written += (uint64_t)n;
	}
	release_written(s);
	if (s->len > 0)
		ev_io_start(s->loop, &s->wio);
	else
		ev_io_stop(s->loop, &s->wio);
}

static void
wio_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	wl_sink *s = w->data;
	int err = 0;
	socklen_t el = sizeof(err);

	(void)loop;
	(void)revents;
	if (s->ts == TS_CONNECTING) {
		getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el);
		if (err != 0) {
			tcp_down(s, strerror(err));
			return;
		}
		s->ts = TS_UP;
		wl_log("SINK-CONNECT", "sink '%s' connected to %s:%u",
		    s->def->name, s->def->host, s->def->port);
	}
	tcp_write(s);
}

static void
retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	tcp_connect(w->data);
}

static void
tcp_connect(wl_sink *s)
{
	struct addrinfo hints, *ai = NULL;
	char port[8];
	int one = 1;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	snprintf(port, sizeof(port), "%u", s->def->port);
	if (getaddrinfo(s->def->host, port, &hints, &ai) != 0 || ai == NULL) {
		tcp_down(s, "cannot resolve the address");
		return;
	}
	s->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->fd < 0) {
		freeaddrinfo(ai);
		tcp_down(s, strerror(errno));
		return;
	}
	setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(s->fd, ai->ai_addr, ai->ai_addrlen) != 0 &&
	    errno != EINPROGRESS) {
		freeaddrinfo(ai);
		tcp_down(s, strerror(errno));
		return;
	}
	freeaddrinfo(ai);
	s->ts = TS_CONNECTING;
	ev_io_set(&s->wio, s->fd, EV_WRITE);
	ev_io_start(s->loop, &s->wio);
}

wl_err
wl_sink_open(wl_sink **out, struct ev_loop *loop, const wl_io *def,
    int64_t keep)
{
	wl_sink *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return WL_ERR_NOMEM;
	s->def = def;
	s->loop = loop;
	s->fd = -1;
	s->cap = FLUSH_AT * 2;
	s->buf = malloc(s->cap);
	if (s->buf == NULL) {
		free(s);
		return WL_ERR_NOMEM;
	}
	ev_init(&s->wio, wio_cb);
	ev_timer_init(&s->retry, retry_cb, 1.0, 0.);
	s->wio.data = s->retry.data = s;
	if (def->type == WL_IO_FILE) {
		s->ts = TS_NONE;
		struct stat st;
		if (mkdirs(def->path) != 0 ||
		    (s->fd = open(def->path, O_WRONLY | O_CREAT | O_CLOEXEC |
		    (keep < 0 ? O_TRUNC : 0), 0644)) < 0) {
			wl_log("SINK-ERROR", "sink '%s': cannot open %s: %s",
			    def->name, def->path, strerror(errno));
			free(s->buf);
			free(s);
			return WL_ERR_IO;
		}
		if (keep >= 0) {
			/* Recovery: the checkpoint says how much of the file is
			 * committed; what follows came from epochs that did not
			 * complete and is produced again. A file shorter than
			 * that lost committed output: no guessing. */
			if (fstat(s->fd, &st) != 0 || st.st_size < keep ||
			    ftruncate(s->fd, keep) != 0 ||
			    lseek(s->fd, keep, SEEK_SET) != keep) {
				wl_log("SINK-ERROR", "sink '%s': %s is %lld bytes, "
				    "the checkpoint committed %lld: it was changed "
				    "behind the engine's back", def->name, def->path,
				    (long long)st.st_size, (long long)keep);
				close(s->fd);
				free(s->buf);
				free(s);
				return WL_ERR_IO;
			}
			if (st.st_size > keep)
				wl_log("SINK-TRUNCATE", "sink '%s': %s cut from %lld "
				    "to %lld bytes (the committed length); the rest "
				    "is produced again", def->name, def->path,
				    (long long)st.st_size, (long long)keep);
			s->base = (uint64_t)keep;
		}
	} else {
		tcp_connect(s);
	}
	*out = s;
	return WL_OK;
}

static void
file_write(wl_sink *s)
{
	size_t off = 0;

	while (off < s->len) {
		ssize_t n = write(s->fd, s->buf + off, s->len - off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			/* A full disk must not pass silently: the bytes stay
			 * buffered (back pressure holds the sources) and the
			 * error is logged on every attempt. */
			wl_log("SINK-ERROR", "sink '%s': write %s: %s",
			    s->def->name, s->def->path, strerror(errno));
			break;
		}
		off += (size_t)n;
	}
	memmove(s->buf, s->buf + off, s->len - off);
	s->len -= off;
	s->written += off;
	release_written(s);
}

void
wl_sink_write(wl_sink *s, wl_event *e)
{
	size_t need = (size_t)e->plen + 4;

	if (s->len + need > s->cap) {
		size_t ncap = s->cap;
		uint8_t *nb;
		while (ncap < s->len + need)
			ncap *= 2;
		nb = realloc(s->buf, ncap);
		if (nb == NULL) {
			wl_log("SINK-ERROR", "sink '%s': out of memory; output "
			    "dropped", s->def->name);
			wl_event_free(e);
			return;
		}
		s->buf = nb;
		s->cap = ncap;
	}
	if (s->def->framing == WL_FRAMING_LENGTH) {
		uint32_t n = htonl(e->plen);
		memcpy(s->buf + s->len, &n, 4);
		s->len += 4;
		memcpy(s->buf + s->len, e->payload, e->plen);
		s->len += e->plen;
	} else {
		memcpy(s->buf + s->len, e->payload, e->plen);
		s->len += e->plen;
		s->buf[s->len++] = '\n';
	}
	s->events++;
	s->bytes += e->plen;
	s->appended += s->def->framing == WL_FRAMING_LENGTH ? need : e->plen + 1u;
	if (e->origin != NULL)
		(void)hold(s, e->origin, s->appended);
	wl_event_free(e);
	if (s->len >= FLUSH_AT)
		wl_sink_flush(s);
}

void
wl_sink_flush(wl_sink *s)
{
	if (s->len == 0)
		return;
	if (s->ts == TS_NONE)
		file_write(s);
	else if (s->ts == TS_UP)
		tcp_write(s);
}

int64_t
wl_sink_length(const wl_sink *s)
{
	return s->ts == TS_NONE ? (int64_t)(s->base + s->appended) : -1;
}

int
wl_sink_fd(const wl_sink *s)
{
	return s->ts == TS_NONE ? s->fd : -1;
}

size_t
wl_sink_backlog(const wl_sink *s)
{
	return s->len;
}

uint64_t
wl_sink_events(const wl_sink *s)
{
	return s->events;
}

uint64_t
wl_sink_bytes(const wl_sink *s)
{
	return s->bytes;
}

const char *
wl_sink_name(const wl_sink *s)
{
	return s->def->name;
}

void
wl_sink_close(wl_sink *s)
{
	if (s == NULL)
		return;
	wl_sink_flush(s);
	if (s->len > 0)
		wl_log("SINK-ERROR", "sink '%s': closing with %zu bytes unwritten",
		    s->def->name, s->len);
	ev_io_stop(s->loop, &s->wio);
	ev_timer_stop(s->loop, &s->retry);
	if (s->fd >= 0)
		close(s->fd);
	/* What is still held was never written: its messages stay unacked. */
	s->written = s->appended = 0;
	while (s->hcount > 0) {
		wl_origin_unref(s->held[s->hhead].o);
		s->hhead = (s->hhead + 1) % s->hcap;
		s->hcount--;
	}
	free(s->held);
	free(s->buf);
	free(s);
}
