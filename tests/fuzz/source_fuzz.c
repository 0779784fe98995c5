/*
 * source_fuzz.c -- bytes a file or TCP source reads, through the engine's
 * framing (engine/source.c), on a real libev loop.
 *
 * The first input byte picks the framing (even: length, odd: lines) and
 * the second the frame limit (0-255 bytes, so that frames over it are
 * common); the rest is the file. Beyond the sanitizers, the events the
 * source emits must be exactly those a plain reading of the framing rules
 * gives (docs/topology.md), in order, with message ids 1, 2, 3...; a frame
 * over the limit ends the stream there, and an error is counted.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>

#include "fuzz.h"
#include "source.h"

const char wl_fuzz_corpus[] = "source";

typedef struct {
	const uint8_t *p;
	uint32_t n;
} span;

typedef struct {
	span want[4096];
	size_t nwant, seen;
	bool want_error;
	bool ended, wrong;
} check;

/* The frames of `p` under the framing rules, as a reader of the docs
 * would cut them; true when the stream breaks a rule (a frame over the
 * limit, or a length-framed stream ending inside a frame). */
static bool
reference(check *c, bool lines, uint32_t max, const uint8_t *p, size_t n)
{
	size_t off = 0;

	while (off < n && c->nwant < 4096) {
		if (lines) {
			const uint8_t *nl = memchr(p + off, '\n', n - off);
			size_t len = nl ? (size_t)(nl - (p + off)) : n - off;

			if (len > max)
				return true;
			c->want[c->nwant].p = p + off;
			/* A CR before the LF is not part of the line; a last
			 * line without LF is taken as it is. */
			c->want[c->nwant++].n = (uint32_t)(nl && len > 0 &&
			    p[off + len - 1] == '\r' ? len - 1 : len);
			off += len + (nl ? 1 : 0);
		} else {
			uint32_t len;

			if (n - off < 4)
				return true;
			len = (uint32_t)p[off] << 24 | (uint32_t)p[off + 1] << 16 |
			    (uint32_t)p[off + 2] << 8 | p[off + 3];
			if (len > max || n - off - 4 < len)
				return true;
			c->want[c->nwant].p = p + off + 4;
			c->want[c->nwant++].n = len;
			off += 4 + (size_t)len;
		}
	}
	return false;
}

static void
on_event(void *arg, int source, wl_event *e)
{
	check *c = arg;

	if (c->seen >= c->nwant || e->message_id != c->seen + 1 ||
	    e->plen != c->want[c->seen].n ||
	    (e->plen && memcmp(e->payload, c->want[c->seen].p, e->plen)))
		c->wrong = true;
	c->seen++;
	wl_event_free(e);
}

static bool
on_pressure(void *arg)
{
	(void)arg;
	return false;
}

static void
on_ended(void *arg, int source)
{
	((check *)arg)->ended = true;
}

static const wl_source_hooks hooks = { on_event, on_pressure, on_ended };

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct ev_loop *loop;
	static check c;
	char path[] = "/tmp/wl-source-fuzz-XXXXXX";
	wl_source *s = NULL;
	wl_io def;
	int fd;

	if (size < 2 || size - 2 > 64 * 1024)
		return 0;
	if (loop == NULL)
		loop = ev_loop_new(EVFLAG_AUTO);
	memset(&c, 0, sizeof(c));
	memset(&def, 0, sizeof(def));
	def.name = "fuzz";
	def.type = WL_IO_FILE;
	def.framing = data[0] & 1 ? WL_FRAMING_LINE : WL_FRAMING_LENGTH;
	def.max_frame_bytes = data[1];
	def.after = -1;
	def.path = path;
	c.want_error = reference(&c, data[0] & 1, data[1], data + 2, size - 2);
	if (c.nwant == 4096)
		return 0; /* more frames than the check holds */

	fd = mkstemp(path);
	if (fd < 0 || write(fd, data + 2, size - 2) != (ssize_t)(size - 2))
		abort();
	close(fd);
	if (wl_source_new(&s, loop, &def, 0, &hooks, &c) != WL_OK ||
	    wl_source_start(s) != WL_OK)
		WL_FUZZ_FAIL("a file source did not start");
	while (!c.ended)
		ev_run(loop, EVRUN_ONCE);
	unlink(path);
	if (c.wrong || c.seen != c.nwant)
		WL_FUZZ_FAIL("the source's events are not the file's frames");
	if ((wl_source_errors(s) > 0) != c.want_error)
		WL_FUZZ_FAIL("an error was counted for a good file, or none "
		    "for a bad one");
	wl_source_free(s);
	return 0;
}
