/*
 * checkpoint.c -- recovery from the checkpoint log and the writer thread.
 *
 * The loop builds a checkpoint in memory (a copy of what changed: the
 * loop may change the state again right after), then the writer thread
 * does what can block for milliseconds: fsync the sink files, write the
 * records, fsync the log (and, for a full checkpoint, the new file and the
 * directory). It reports back through an ev_async, so the loop never waits
 * on the disk. One checkpoint is in flight at a time, so the thread and
 * the loop hand the log descriptor and its length back and forth under the
 * mutex and never touch them at the same time.
 */
#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"

/* Compact once the increments since the last full checkpoint pass twice
 * its size plus this: recovery reads a bounded multiple of the state. */
#define COMPACT_SLACK (4u << 20)

/* The writer's life. */
typedef enum {
	W_IDLE,     /* nothing submitted */
	W_QUEUED,   /* submitted, the thread has not finished it */
	W_DONE,     /* finished; the loop has not collected the result */
} writer_state;

struct wl_ckpt {
	struct ev_loop *loop;
	char path[1024], newpath[1100], dir[1024];
	wl_ckpt_done_fn done;
	void *arg;
	int fd;                 /* the log; -1 when it could not be opened */
	int lockfd;             /* DIR/lock, flock()ed while we live */
	uint64_t end;           /* bytes of complete checkpoints in the log */
	uint64_t full_bytes;    /* size of the last full checkpoint */
	uint64_t since_full;    /* bytes of increments after it */
	uint32_t partitions;    /* of the recovered checkpoint (0: none) */
	bool want_full;
	/* The checkpoint being built or written. */
	wl_ckbuf buf;
	uint64_t id;
	uint32_t nrec;          /* records in buf before COMMIT */
	bool full;
	int *fds;               /* owned; fsynced before the log is written */
	wl_ckhist_entry *hist;  /* owned: the recovered log's checkpoints */
	size_t nhist;
	size_t nfds, fdcap;
	/* Writer thread. */
	pthread_t th;
	bool th_started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	writer_state ws;
	bool quit;
	bool ok;                /* result of the last job */
	char why[300];
	double secs;
	double align_secs;      /* of the checkpoint being written */
	ev_async async;
	uint64_t count, failures;
};

static int
write_all(int fd, const uint8_t *p, size_t n, off_t at)
{
	while (n > 0) {
		ssize_t w = pwrite(fd, p, n, at);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
		at += w;
	}
	return 0;
}

/* Runs a job on the writer thread; false with c->why on failure. */
static bool
write_job(wl_ckpt *c)
{
	int nfd = -1, dfd;

	for (size_t i = 0; i < c->nfds; i++) {
		if (fdatasync(c->fds[i]) != 0) {
			snprintf(c->why, sizeof(c->why), "fsync of a file sink: %s",
			    strerror(errno));
			return false;
		}
	}
	if (!c->full) {
		if (c->fd < 0) {
			snprintf(c->why, sizeof(c->why), "%.200s is not open", c->path);
			return false;
		}
		if (write_all(c->fd, c->buf.p, c->buf.len, (off_t)c->end) != 0 ||
		    fdatasync(c->fd) != 0) {
			snprintf(c->why, sizeof(c->why), "write %.200s: %s", c->path,
			    strerror(errno));
			/* Leave no partial checkpoint behind if the disk lets us;
			 * recovery would ignore it anyway (no COMMIT). */
			if (ftruncate(c->fd, (off_t)c->end) != 0)
				c->want_full = true;
			return false;
		}
		c->end += c->buf.len;
		c->since_full += c->buf.len;
		return true;
	}
	/* Full: a new file that replaces the log only once it is complete
	 * on disk, so a crash at any point leaves one whole log. */
	nfd = open(c->newpath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (nfd < 0 || write_all(nfd, c->buf.p, c->buf.len, 0) != 0 ||
	    fdatasync(nfd) != 0 || rename(c->newpath, c->path) != 0) {
		snprintf(c->why, sizeof(c->why), "write %.200s: %s", c->newpath,
		    strerror(errno));
		if (nfd >= 0)
			close(nfd);
		unlink(c->newpath);
		return false;
	}
	dfd = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		(void)fsync(dfd);
		close(dfd);
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = nfd;
	c->end = c->buf.len;
	c->full_bytes = c->buf.len;
	c->since_full = 0;
	return true;
}

static void *
writer_main(void *arg)
{
	wl_ckpt *c = arg;

	pthread_mutex_lock(&c->mu);
	for (;;) {
		while (c->ws != W_QUEUED && !c->quit)
			pthread_cond_wait(&c->cv, &c->mu);
		if (c->ws != W_QUEUED)
			break;
		pthread_mutex_unlock(&c->mu);
		double t0 = wl_clock_now();
		bool ok = write_job(c);
		double dt = wl_clock_now() - t0;
		pthread_mutex_lock(&c->mu);
		c->ok = ok;
		c->secs = dt;
		c->ws = W_DONE;
		ev_async_send(c->loop, &c->async);
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

static void
async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	wl_ckpt *c = w->data;
	bool ok;

	(void)loop;
	(void)revents;
	pthread_mutex_lock(&c->mu);
	if (c->ws != W_DONE) {
		pthread_mutex_unlock(&c->mu);
		return;
	}
	ok = c->ok;
	c->ws = W_IDLE;
	pthread_mutex_unlock(&c->mu);
	if (ok) {
		c->count++;
		c->want_full = c->since_full > 2 * c->full_bytes + COMPACT_SLACK;
		wl_log("CKPT-DONE", "checkpoint %llu durable: %zu bytes%s in "
		    "%.1f ms; its epoch closed %.1f ms after the cut",
		    (unsigned long long)c->id, c->buf.len,
		    c->full ? " (full)" : "", c->secs * 1e3,
		    c->align_secs * 1e3);
	} else {
		c->failures++;
		/* The dirty set was handed to the failed checkpoint: only a
		 * full one can be sure to hold everything again. */
		c->want_full = true;
		wl_log("CKPT-FAIL", "checkpoint %llu failed: %s; the previous "
		    "checkpoint stands and nothing it does not cover is "
		    "acknowledged; the next one is full",
		    (unsigned long long)c->id, c->why);
	}
	wl_ckbuf_reset(&c->buf);
	c->done(c->arg, c->id, ok);
}

/*
 * Takes DIR/lock (an exclusive flock, which the kernel drops when the
 * process ends, crash or not) and writes our pid in it. One state
 * directory serves one engine: a second would recover from the log the
 * first is appending to, cut its sinks back to their committed length and
 * remove its compaction in progress. Returns the descriptor, or -1 after
 * logging why (naming the engine that holds it).
 */
static int
lock_dir(const char *dir)
{
	char path[1100], pid[32];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/lock", dir);
	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0) {
		wl_log("CKPT-FAIL", "cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		int e = errno;

		if (e != EWOULDBLOCK) {
			wl_log("CKPT-FAIL", "cannot lock %s: %s", path,
			    strerror(e));
		} else {
			n = pread(fd, pid, sizeof(pid) - 1, 0);
			pid[n > 0 ? n : 0] = '\0';
			pid[strcspn(pid, "\n")] = '\0';
			wl_log("CKPT-FAIL", "%s is in use by another engine "
			    "(pid %s): one state directory serves one engine "
			    "at a time", dir, pid[0] ? pid : "unknown");
		}
		close(fd);
		return -1;
	}
	n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
		/* The lock holds without the pid, which only names us. */
	}
	return fd;
}

wl_err
wl_ckpt_open(wl_ckpt **out, struct ev_loop *loop, const char *dir,
    wl_ckpt_done_fn done, void *arg)
{
	wl_ckpt *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return WL_ERR_NOMEM;
	if ((c->lockfd = lock_dir(dir)) < 0) {
		free(c);
		return WL_ERR_STATE;
	}
	c->loop = loop;
	c->done = done;
	c->arg = arg;
	snprintf(c->dir, sizeof(c->dir), "%s", dir);
	snprintf(c->path, sizeof(c->path), "%s/checkpoints.log", dir);
	snprintf(c->newpath, sizeof(c->newpath), "%s.new", c->path);
	c->fd = open(c->path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (c->fd < 0) {
		wl_log("CKPT-FAIL", "cannot open %s: %s", c->path,
		    strerror(errno));
		close(c->lockfd);
		free(c);
		return WL_ERR_IO;
	}
	/* A compaction cut short by a crash left a partial new file. */
	unlink(c->newpath);
	c->want_full = true;
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	ev_async_init(&c->async, async_cb);
	c->async.data = c;
	ev_async_start(loop, &c->async);
	if (pthread_create(&c->th, NULL, writer_main, c) != 0) {
		wl_log("CKPT-FAIL", "cannot start the checkpoint writer thread");
		wl_ckpt_free(c);
		return WL_ERR_NOMEM;
	}
	c->th_started = true;
	*out = c;
	return WL_OK;
}

/* -- recovery --------------------------------------------------------- */

typedef struct {
	uint64_t begin, end, id, incarnation;
	uint32_t partitions;
	bool full;
} range;

typedef struct {
	/* pass 1 */
	range *r;
	size_t nr, cap;
	bool in;
	range cur;
	/* pass 2 */
	const wl_ckpt_restore *cb;
	void *arg;
	size_t next;       /* the range being applied */
} scan_ctx;

static wl_err
pass1(void *arg, const wl_ckrec *r, char *why, size_t n)
{
	scan_ctx *s = arg;
	wl_ckcur k;

	wl_ckcur_init(&k, r);
	if (r->type == WL_CKREC_BEGIN) {
		/* A BEGIN inside a checkpoint abandons the one before: it was
		 * never committed (a failed write the disk would not undo). */
		s->in = true;
		s->cur.begin = r->offset;
		s->cur.id = wl_ckcur_u64(&k);
		s->cur.incarnation = wl_ckcur_u64(&k);
		s->cur.full = (wl_ckcur_u32(&k) & WL_CKPT_FULL) != 0;
		s->cur.partitions = wl_ckcur_u32(&k);
		return k.bad ? WL_ERR_PROTO : WL_OK;
	}
	if (r->type < WL_CKREC_BEGIN || r->type > WL_CKREC_SINK_STAGED) {
		snprintf(why, n, "offset %llu: unknown record type %u",
		    (unsigned long long)r->offset, r->type);
		return WL_ERR_PROTO;
	}
	if (!s->in) {
		snprintf(why, n, "offset %llu: a record of type %u outside any "
		    "checkpoint", (unsigned long long)r->offset, r->type);
		return WL_ERR_PROTO;
	}
	if (r->type != WL_CKREC_COMMIT)
		return WL_OK;
	if (wl_ckcur_u64(&k) != s->cur.id) {
		snprintf(why, n, "offset %llu: COMMIT of another checkpoint than "
		    "its BEGIN (%llu)", (unsigned long long)r->offset,
		    (unsigned long long)s->cur.id);
		return WL_ERR_PROTO;
	}
	if (s->nr > 0 && s->cur.id <= s->r[s->nr - 1].id) {
		snprintf(why, n, "offset %llu: checkpoint %llu after checkpoint "
		    "%llu", (unsigned long long)r->offset,
		    (unsigned long long)s->cur.id,
		    (unsigned long long)s->r[s->nr - 1].id);
		return WL_ERR_PROTO;
	}
	if (s->nr == s->cap) {
		size_t nc = s->cap ? s->cap * 2 : 16;
		range *nr = realloc(s->r, nc * sizeof(*nr));
		if (nr == NULL)
			return WL_ERR_NOMEM;
		s->r = nr;
		s->cap = nc;
	}
	s->cur.end = r->end;
	s->r[s->nr++] = s->cur;
	s->in = false;
	return WL_OK;
}

/* Copies a string of the payload into `out` (NUL-terminated). */
static bool
cur_cstr(wl_ckcur *k, char *out, size_t n)
{
	uint16_t len;
	const uint8_t *p = wl_ckcur_str(k, &len);

	if (p == NULL || len >= n)
		return false;
	memcpy(out, p, len);
	out[len] = '\0';
	return true;
}

static wl_err
apply(scan_ctx *s, const wl_ckrec *r, char *why, size_t n)
{
	char a[65536], b[65536];
	wl_ckcur k;
	wl_err rc = WL_OK;

	wl_ckcur_init(&k, r);
	switch (r->type) {
	case WL_CKREC_STATE:
		if (!cur_cstr(&k, a, sizeof(a)))
			break;
		while (rc == WL_OK && !k.bad && k.off < k.len) {
			bool present = wl_ckcur_u8(&k) != 0;
			uint32_t kl = wl_ckcur_u32(&k), vl = wl_ckcur_u32(&k);
			const uint8_t *key = wl_ckcur_bytes(&k, kl);
			const uint8_t *val = wl_ckcur_bytes(&k, vl);
			if (k.bad)
				break;
			rc = s->cb->state(s->arg, a, key, kl, val, vl, present);
			if (rc == WL_ERR_CONFIG)
				snprintf(why, n, "the checkpoint holds state of step "
				    "'%s', which the topology has no state step of "
				    "that name for (restore the step, or move the "
				    "state dir away to start empty)", a);
		}
		break;
	case WL_CKREC_SOURCE: {
		uint64_t pos, off;
		if (!cur_cstr(&k, a, sizeof(a)) || !cur_cstr(&k, b, sizeof(b)))
			break;
		pos = wl_ckcur_u64(&k);
		off = wl_ckcur_u64(&k);
		if (!wl_ckcur_done(&k))
			break;
		rc = s->cb->source(s->arg, a, b, pos, off);
		if (rc == WL_ERR_CONFIG)
			snprintf(why, n, "the checkpoint has a position of source "
			    "'%s' stream '%s', which the topology does not have",
			    a, b);
		break;
	}
	case WL_CKREC_SINK: {
		/* Format 1: the file itself held the output, committed up to
		 * this length; no stage. */
		wl_sink_commit c = { .seen = true };
		if (!cur_cstr(&k, a, sizeof(a)))
			break;
		c.committed = wl_ckcur_u64(&k);
		if (!wl_ckcur_done(&k))
			break;
		rc = s->cb->sink(s->arg, a, &c);
		break;
	}
	case WL_CKREC_SINK_STAGED: {
		wl_sink_commit c = { .seen = true };
		if (!cur_cstr(&k, a, sizeof(a)))
			break;
		c.committed = wl_ckcur_u64(&k);
		c.seq = wl_ckcur_u64(&k);
		c.dest = wl_ckcur_u64(&k);
		c.len = wl_ckcur_u64(&k);
		if (!wl_ckcur_done(&k))
			break;
		if (c.seq != 0 ? c.dest > c.committed ||
		    c.len != c.committed - c.dest : c.len != 0) {
			snprintf(why, n, "offset %llu: sink '%s': a stage of %llu "
			    "bytes at %llu does not end at the committed length "
			    "%llu", (unsigned long long)r->offset, a,
			    (unsigned long long)c.len, (unsigned long long)c.dest,
			    (unsigned long long)c.committed);
			return WL_ERR_PROTO;
		}
		rc = s->cb->sink(s->arg, a, &c);
		break;
	}
	default:
		return WL_OK;
	}
	if (k.bad) {
		snprintf(why, n, "offset %llu: a malformed record of type %u",
		    (unsigned long long)r->offset, r->type);
		return WL_ERR_PROTO;
	}
	return rc;
}

static wl_err
pass2(void *arg, const wl_ckrec *r, char *why, size_t n)
{
	scan_ctx *s = arg;

	while (s->next < s->nr && r->offset >= s->r[s->next].end)
		s->next++;
	if (s->next == s->nr || r->offset < s->r[s->next].begin)
		return WL_OK; /* before the last full one, or never committed */
	return apply(s, r, why, n);
}

wl_err
wl_ckpt_recover(wl_ckpt *c, const wl_ckpt_restore *r, void *arg,
    uint64_t *last_id, char *why, size_t n)
{
	scan_ctx s = { 0 };
	wl_ckscan_end end;
	uint64_t valid;
	size_t first = 0;
	struct stat st;
	wl_err rc;

	*last_id = 0;
	rc = wl_ckptlog_scan(c->path, pass1, &s, &end, &valid, why, n);
	if (rc != WL_OK)
		goto out;
	for (size_t i = 0; i < s.nr; i++)
		if (s.r[i].full)
			first = i;
	if (s.nr > 0 && !s.r[first].full) {
		snprintf(why, n, "%s: no full checkpoint before checkpoint %llu",
		    c->path, (unsigned long long)s.r[0].id);
		rc = WL_ERR_PROTO;
		goto out;
	}
	s.cb = r;
	s.arg = arg;
	s.next = first;
	if (s.nr > 0) {
		rc = wl_ckptlog_scan(c->path, pass2, &s, &end, &valid, why, n);
		if (rc != WL_OK)
			goto out;
	}
	c->end = s.nr > 0 ? s.r[s.nr - 1].end : 0;
	free(c->hist);
	c->hist = s.nr > 0 ? calloc(s.nr, sizeof(*c->hist)) : NULL;
	c->nhist = c->hist ? s.nr : 0;
	for (size_t i = 0; i < c->nhist; i++)
		c->hist[i] = (wl_ckhist_entry){ s.r[i].id, s.r[i].incarnation };
	if (s.nr > 0) {
		*last_id = s.r[s.nr - 1].id;
		c->partitions = s.r[s.nr - 1].partitions;
		c->full_bytes = s.r[first].end - s.r[first].begin;
		c->since_full = c->end - s.r[first].end;
		c->want_full = s.r[first].begin > 0 ||
		    c->since_full > 2 * c->full_bytes + COMPACT_SLACK;
	}
	if (fstat(c->fd, &st) == 0 && S_ISREG(st.st_mode) &&
	    (uint64_t)st.st_size > c->end) {
		wl_log("CKPT-TORN", "%s: %llu bytes after the last complete "
		    "checkpoint (%s) dropped: a checkpoint the engine did not "
		    "finish writing", c->path,
		    (unsigned long long)((uint64_t)st.st_size - c->end),
		    end == WL_CKSCAN_TORN ? "a torn record" :
		    "records without their COMMIT");
		if (ftruncate(c->fd, (off_t)c->end) != 0)
			c->want_full = true;
	}
out:
	free(s.r);
	return rc;
}

/* -- writing ---------------------------------------------------------- */

bool
wl_ckpt_want_full(const wl_ckpt *c)
{
	return c->want_full;
}

wl_ckbuf *
wl_ckpt_begin(wl_ckpt *c, uint64_t id, uint64_t incarnation,
    uint32_t partitions, bool full, double align_secs)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	wl_ckbuf_reset(&c->buf);
	c->id = id;
	c->full = full;
	c->align_secs = align_secs;
	wl_ckbuf_begin(&c->buf, WL_CKREC_BEGIN);
	wl_ckbuf_u64(&c->buf, id);
	wl_ckbuf_u64(&c->buf, incarnation);
	wl_ckbuf_u32(&c->buf, full ? WL_CKPT_FULL : 0);
	wl_ckbuf_u32(&c->buf, partitions);
	wl_ckbuf_u64(&c->buf, (uint64_t)ts.tv_sec * 1000000u +
	    (uint64_t)ts.tv_nsec / 1000u);
	wl_ckbuf_end(&c->buf);
	return &c->buf;
}

wl_ckhist
wl_ckpt_history(const wl_ckpt *c)
{
	return (wl_ckhist){ c->hist, c->nhist };
}

void
wl_ckpt_abandon(wl_ckpt *c)
{
	wl_ckbuf_reset(&c->buf);
	c->failures++;
	c->want_full = true;
}

wl_err
wl_ckpt_submit(wl_ckpt *c, const int *fds, size_t nfds)
{
	if (wl_ckpt_busy(c))
		return WL_ERR_STATE;
	wl_ckbuf_begin(&c->buf, WL_CKREC_COMMIT);
	wl_ckbuf_u64(&c->buf, c->id);
	wl_ckbuf_u32(&c->buf, 0);
	wl_ckbuf_end(&c->buf);
	if (c->buf.failed) {
		wl_ckbuf_free(&c->buf);
		c->failures++;
		c->want_full = true;
		wl_log("CKPT-FAIL", "checkpoint %llu: out of memory building it",
		    (unsigned long long)c->id);
		return WL_ERR_NOMEM;
	}
	if (nfds > c->fdcap) {
		int *nf = realloc(c->fds, nfds * sizeof(*nf));
		if (nf == NULL) {
			wl_ckpt_abandon(c);
			wl_log("CKPT-FAIL", "checkpoint %llu: out of memory",
			    (unsigned long long)c->id);
			return WL_ERR_NOMEM;
		}
		c->fds = nf;
		c->fdcap = nfds;
	}
	c->nfds = nfds;
	if (nfds > 0)
		memcpy(c->fds, fds, nfds * sizeof(*fds));
	pthread_mutex_lock(&c->mu);
	c->ws = W_QUEUED;
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->mu);
	return WL_OK;
}

bool
wl_ckpt_busy(const wl_ckpt *c)
{
	/* Only the loop sets W_IDLE, but the writer moves W_QUEUED to
	 * W_DONE: read under the lock. */
	bool busy;

	pthread_mutex_lock((pthread_mutex_t *)&c->mu);
	busy = c->ws != W_IDLE;
	pthread_mutex_unlock((pthread_mutex_t *)&c->mu);
	return busy;
}

uint32_t
wl_ckpt_partitions(const wl_ckpt *c)
{
	return c->partitions;
}

uint64_t
wl_ckpt_count(const wl_ckpt *c)
{
	return c->count;
}

uint64_t
wl_ckpt_failures(const wl_ckpt *c)
{
	return c->failures;
}

void
wl_ckpt_free(wl_ckpt *c)
{
	if (c == NULL)
		return;
	if (c->th_started) {
		pthread_mutex_lock(&c->mu);
		c->quit = true;
		pthread_cond_signal(&c->cv);
		pthread_mutex_unlock(&c->mu);
		pthread_join(c->th, NULL);
	}
	ev_async_stop(c->loop, &c->async);
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cv);
	if (c->fd >= 0)
		close(c->fd);
	close(c->lockfd); /* last: the directory is ours until here */
	wl_ckbuf_free(&c->buf);
	free(c->fds);
	free(c->hist);
	free(c);
}
