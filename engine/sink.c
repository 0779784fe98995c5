/*
 * sink.c -- built-in file and TCP sinks.
 *
 * Outputs are appended to one contiguous buffer and written in large
 * writes: a sink is flushed once per loop iteration (from the engine's
 * ev_prepare) or when the buffer passes FLUSH_AT, never once per event.
 *
 * A staged file sink (checkpoints on) writes to a stage file instead and
 * copies a stage to the file once the checkpoint that sealed it is
 * durable: the file holds committed output only. At any time a sink has
 * at most one stage being written (`cur`), one sealed and not yet in the
 * file (`sealed`: its checkpoint is in flight, failed, or its copy did not
 * succeed) and one copied but kept until the file is fsynced (`pub_seq`,
 * removed when the next checkpoint, which syncs the file, is durable).
 * Recovery copies the recovered checkpoint's stage again, so a crash in
 * the middle of a copy loses nothing.
 */
#include "sink.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
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
	struct held { wl_origin *o; uint64_t end; } *held;
	size_t hhead, hcount, hcap;
	/* Staged file sinks only (see the top of the file). */
	bool staged;
	char *stage_dir;             /* owned */
	int dirfd;
	uint64_t main_len;           /* the file's length, copied stages in */
	uint64_t next_seq;
	struct stage {
		uint64_t seq;        /* 0: none */
		int fd;
		uint64_t dest;       /* sealed: its place in the file */
		uint64_t len;
	} cur, sealed;
	uint64_t pub_seq;            /* copied, kept until the file is synced */
	/* File sinks: since when writes fail (0: they do not), and when that
	 * was last logged, in seconds of wl_clock_now(). */
	double failing_since, failure_logged;
};

/* Seconds between repeats of a write failure's log line: often enough to
 * be seen, rarely enough not to fill the disk the logs are on. */
#define FAILURE_LOG_EVERY 10.0

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

/* ---- stage files -------------------------------------------------------- */

/* "DIR/NAME@SEQ": '@' is not allowed in a name, so one sink's stage files
 * never match another's prefix. */
static void
stage_path(const wl_sink *s, uint64_t seq, char *out, size_t n)
{
	snprintf(out, n, "%s/%s@%" PRIu64, s->stage_dir, s->def->name, seq);
}

/* Copies `len` bytes from `in` at `ioff` to `out` at `ooff`. Returns 0 or
 * an errno. In the kernel where it can be (copy_file_range); with a buffer
 * where it cannot (another file system, an old kernel). */
static int
copy_range(int in, uint64_t ioff, int out, uint64_t ooff, uint64_t len)
{
	char buf[64 * 1024];

	while (len > 0) {
		loff_t a = (loff_t)ioff, b = (loff_t)ooff;
		ssize_t n = copy_file_range(in, &a, out, &b, len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EXDEV && errno != ENOSYS &&
		    errno != EINVAL && errno != EOPNOTSUPP)
			return errno;
		if (n < 0) {
			size_t want = len < sizeof(buf) ? (size_t)len : sizeof(buf);
			n = pread(in, buf, want, (off_t)ioff);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				return errno;
			if (n > 0 && pwrite(out, buf, (size_t)n, (off_t)ooff) != n)
				return errno ? errno : EIO;
		}
		if (n == 0)
			return EIO; /* the stage is shorter than it should be */
		ioff += (uint64_t)n;
		ooff += (uint64_t)n;
		len -= (uint64_t)n;
	}
	return 0;
}

static void
stage_drop(wl_sink *s, struct stage *st)
{
	char path[4096];

	if (st->fd >= 0)
		close(st->fd);
	if (st->seq != 0) {
		stage_path(s, st->seq, path, sizeof(path));
		(void)unlink(path);
	}
	*st = (struct stage){ .fd = -1 };
}

/* Removes every stage file of this sink: at open, after recovery has
 * copied what counts (anything else came from epochs no checkpoint
 * covers). */
static void
remove_stages(wl_sink *s)
{
	size_t nl = strlen(s->def->name);
	DIR *d = opendir(s->stage_dir);
	struct dirent *de;

	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		const char *n = de->d_name;
		if (strncmp(n, s->def->name, nl) != 0 || n[nl] != '@' ||
		    n[nl + 1] == '\0' || strspn(n + nl + 1, "0123456789") !=
		    strlen(n + nl + 1))
			continue;
		(void)unlinkat(dirfd(d), n, 0);
	}
	closedir(d);
}

/* The current stage, created on the first write after a seal. */
static int
stage_fd(wl_sink *s)
{
	char path[4096];

	if (s->cur.fd >= 0)
		return s->cur.fd;
	s->cur.seq = s->next_seq;
	stage_path(s, s->cur.seq, path, sizeof(path));
	s->cur.fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (s->cur.fd < 0) {
		wl_log("SINK-ERROR", "sink '%s': cannot create its stage file "
		    "%s: %s", s->def->name, path, strerror(errno));
		s->cur.seq = 0;
		return -1;
	}
	s->next_seq++;
	s->cur.len = 0;
	return s->cur.fd;
}

/* Brings the file to what checkpoint record `c` committed (see
 * wl_sink_open). */
static wl_err
recover_file(wl_sink *s, const wl_sink_commit *c)
{
	uint64_t start = c->seq ? c->dest : c->committed;
	char path[4096];
	struct stat st;
	int sfd = -1, serr = 0, err;

	if (c->seq != 0) {
		stage_path(s, c->seq, path, sizeof(path));
		sfd = open(path, O_RDONLY | O_CLOEXEC);
		serr = sfd < 0 ? errno : 0;
		/* A stage is removed only once the file holding its copy has
		 * been synced (at the next durable checkpoint, or at a clean
		 * stop): gone, with the file long enough, means copied. */
		if (sfd < 0 && serr == ENOENT && fstat(s->fd, &st) == 0 &&
		    (uint64_t)st.st_size >= c->committed)
			start = c->committed;
	}
	if (fstat(s->fd, &st) != 0 || (uint64_t)st.st_size < start) {
		wl_log("SINK-ERROR", "sink '%s': %s is %lld bytes, the checkpoint "
		    "committed %llu: it was changed behind the engine's back",
		    s->def->name, s->def->path, (long long)st.st_size,
		    (unsigned long long)start);
		if (sfd >= 0)
			close(sfd);
		return WL_ERR_IO;
	}
	/* Longer than committed: written by an engine before staged sinks
	 * (or by hand). Its tail is produced again. */
	if ((uint64_t)st.st_size > c->committed)
		wl_log("SINK-TRUNCATE", "sink '%s': %s cut from %lld to %llu "
		    "bytes (the committed length); the rest is produced again",
		    s->def->name, s->def->path, (long long)st.st_size,
		    (unsigned long long)c->committed);
	if (ftruncate(s->fd, (off_t)start) != 0) {
		wl_log("SINK-ERROR", "sink '%s': truncate %s: %s", s->def->name,
		    s->def->path, strerror(errno));
		if (sfd >= 0)
			close(sfd);
		return WL_ERR_IO;
	}
	if (start < c->committed) {
		/* The checkpoint is durable, so its stage is; whether the copy
		 * after it was done (or synced) is not known: do it again. */
		if (sfd < 0 || fstat(sfd, &st) != 0 ||
		    (uint64_t)st.st_size < c->len) {
			wl_log("SINK-ERROR", "sink '%s': the checkpoint's stage file "
			    "%s is %s (it must hold %llu bytes): it was changed "
			    "behind the engine's back", s->def->name, path,
			    sfd < 0 ? strerror(serr) : "too short",
			    (unsigned long long)c->len);
			if (sfd >= 0)
				close(sfd);
			return WL_ERR_IO;
		}
		err = copy_range(sfd, 0, s->fd, c->dest, c->len);
		close(sfd);
		sfd = -1;
		if (err == 0 && fdatasync(s->fd) != 0)
			err = errno;
		if (err != 0) {
			wl_log("SINK-ERROR", "sink '%s': copying its stage %s to %s: "
			    "%s", s->def->name, path, s->def->path, strerror(err));
			return WL_ERR_IO;
		}
	}
	if (sfd >= 0)
		close(sfd);
	s->main_len = c->committed;
	s->next_seq = c->seq + 1;
	return WL_OK;
}

/* Copies the sealed stage (its checkpoint is durable) to the file. */
static void
publish(wl_sink *s)
{
	char path[4096];
	int err = copy_range(s->sealed.fd, 0, s->fd, s->sealed.dest,
	    s->sealed.len);

	if (err != 0) {
		stage_path(s, s->sealed.seq, path, sizeof(path));
		wl_log("SINK-ERROR", "sink '%s': copying %s to %s: %s; the "
		    "output is kept there and copied after the next checkpoint",
		    s->def->name, path, s->def->path, strerror(err));
		return;
	}
	s->main_len = s->sealed.dest + s->sealed.len;
	close(s->sealed.fd);
	s->pub_seq = s->sealed.seq;
	s->sealed = (struct stage){ .fd = -1 };
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
    const char *stage_dir, const wl_sink_commit *rec)
{
	wl_sink *s = calloc(1, sizeof(*s));
	bool recovering = stage_dir != NULL && rec != NULL && rec->seen;

	if (s == NULL)
		return WL_ERR_NOMEM;
	s->def = def;
	s->loop = loop;
	s->fd = s->dirfd = -1;
	s->cur = s->sealed = (struct stage){ .fd = -1 };
	s->next_seq = 1;
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
		char dir[4096];
		wl_err e;
		if (mkdirs(def->path) != 0 ||
		    (s->fd = open(def->path, O_RDWR | O_CREAT | O_CLOEXEC |
		    (recovering ? 0 : O_TRUNC), 0644)) < 0) {
			wl_log("SINK-ERROR", "sink '%s': cannot open %s: %s",
			    def->name, def->path, strerror(errno));
			free(s->buf);
			free(s);
			return WL_ERR_IO;
		}
		if (stage_dir != NULL) {
			s->staged = true;
			snprintf(dir, sizeof(dir), "%s/", stage_dir);
			s->stage_dir = strdup(stage_dir);
			if (s->stage_dir == NULL || mkdirs(dir) != 0 ||
			    (s->dirfd = open(stage_dir, O_RDONLY | O_DIRECTORY |
			    O_CLOEXEC)) < 0) {
				wl_log("SINK-ERROR", "sink '%s': cannot open its "
				    "stage directory %s: %s", def->name, stage_dir,
				    strerror(errno));
				wl_sink_close(s);
				return WL_ERR_IO;
			}
			e = recovering ? recover_file(s, rec) : WL_OK;
			if (e != WL_OK) {
				wl_sink_close(s);
				return e;
			}
			remove_stages(s);
			if (lseek(s->fd, 0, SEEK_END) < 0) {
				wl_sink_close(s);
				return WL_ERR_IO;
			}
		}
	} else {
		tcp_connect(s);
	}
	*out = s;
	return WL_OK;
}

static void
write_failed(wl_sink *s)
{
	double now = wl_clock_now();

	if (s->failing_since > 0 &&
	    now - s->failure_logged < FAILURE_LOG_EVERY)
		return;
	if (s->failing_since == 0)
		s->failing_since = now;
	s->failure_logged = now;
	if (now > s->failing_since)
		wl_log("SINK-ERROR", "sink '%s': write %s%s: %s (%zu bytes "
		    "held; failing for %.0f s)", s->def->name, s->def->path,
		    s->staged ? " (its stage file)" : "", strerror(errno),
		    s->len, now - s->failing_since);
	else
		wl_log("SINK-ERROR", "sink '%s': write %s%s: %s (%zu bytes "
		    "held; trying again until it works)", s->def->name,
		    s->def->path, s->staged ? " (its stage file)" : "",
		    strerror(errno), s->len);
}

static void
file_write(wl_sink *s)
{
	size_t off = 0;
	bool failed = false;

	int fd = s->staged ? stage_fd(s) : s->fd;

	while (fd >= 0 && off < s->len) {
		ssize_t n = write(fd, s->buf + off, s->len - off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			/* A full disk must not pass silently: the bytes stay
			 * buffered (back pressure holds the sources), the
			 * write is tried again on every turn of the loop, and
			 * the error is logged at once, then every
			 * FAILURE_LOG_EVERY seconds while it lasts. */
			write_failed(s);
			failed = true;
			break;
		}
		off += (size_t)n;
	}
	if (!failed && off > 0 && s->failing_since > 0) {
		wl_log("SINK-RESUMED", "sink '%s': writing %s again after "
		    "%.0f s", s->def->name, s->def->path,
		    wl_clock_now() - s->failing_since);
		s->failing_since = 0;
	}
	if (s->staged)
		s->cur.len += off;
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

bool
wl_sink_staged(const wl_sink *s)
{
	return s->staged;
}

wl_err
wl_sink_seal(wl_sink *s, wl_sink_commit *c, int *fds, size_t *nfds)
{
	if (s->cur.fd >= 0 && s->cur.len > 0) {
		if (s->sealed.fd >= 0) {
			/* The last seal's checkpoint failed (or its copy did):
			 * this epoch's bytes join that stage, so that one stage
			 * holds everything the file does not have yet. */
			int err = copy_range(s->cur.fd, 0, s->sealed.fd,
			    s->sealed.len, s->cur.len);
			if (err != 0) {
				wl_log("SINK-ERROR", "sink '%s': joining two stage "
				    "files: %s", s->def->name, strerror(err));
				return WL_ERR_IO;
			}
			s->sealed.len += s->cur.len;
			stage_drop(s, &s->cur);
		} else {
			s->sealed = s->cur;
			s->sealed.dest = s->main_len;
			s->cur = (struct stage){ .fd = -1 };
		}
	}
	*c = (wl_sink_commit){ .seen = true, .committed = s->main_len };
	if (s->sealed.fd >= 0) {
		c->seq = s->sealed.seq;
		c->dest = s->sealed.dest;
		c->len = s->sealed.len;
		c->committed = c->dest + c->len;
		fds[(*nfds)++] = s->sealed.fd;
		fds[(*nfds)++] = s->dirfd; /* the stage's name */
	}
	/* Bytes copied at the last durable checkpoint: synced by this one,
	 * whose durability then lets their stage go. */
	if (s->pub_seq != 0)
		fds[(*nfds)++] = s->fd;
	return WL_OK;
}

void
wl_sink_durable(wl_sink *s)
{
	if (!s->staged)
		return;
	if (s->pub_seq != 0) {
		stage_drop(s, &(struct stage){ .seq = s->pub_seq, .fd = -1 });
		s->pub_seq = 0;
	}
	if (s->sealed.fd >= 0)
		publish(s);
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
	if (s->staged && s->pub_seq != 0 && fdatasync(s->fd) == 0)
		stage_drop(s, &(struct stage){ .seq = s->pub_seq, .fd = -1 });
	/* Stages not in the file stay for recovery: close, do not remove. */
	if (s->cur.fd >= 0)
		close(s->cur.fd);
	if (s->sealed.fd >= 0)
		close(s->sealed.fd);
	if (s->dirfd >= 0)
		close(s->dirfd);
	free(s->stage_dir);
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
