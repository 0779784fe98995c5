/*
 * frame_test.c -- the C side of the shared protocol vectors: every
 * protocol/vectors/NAME.bin decodes, has the body its name says (the name
 * starts with the body name: "batch", "reply_error"...), and re-encodes to
 * the same bytes. Python and Go read the same files.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "tap.h"

static unsigned char *
slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *b;
	long n;

	if (f == NULL)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	b = malloc(n > 0 ? (size_t)n : 1);
	if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
		free(b);
		b = NULL;
	}
	fclose(f);
	*len = (size_t)n;
	return b;
}

static int
known_body(const char *name)
{
	static const char *bodies[] = { "hello", "welcome", "refuse", "assign",
	    "ready", "batch", "reply", "credit", "heartbeat", "error", "goodbye",
	    "open_stream", "stream_opened", "ack", "end_stream", "stream_ended",
	    "reconnect", "prepare", "prepared", "commit", "abort", "resolved",
	    "in_doubt" };

	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++)
		if (strcmp(name, bodies[i]) == 0)
			return 1;
	return 0;
}

int
main(void)
{
	const char *srcdir = getenv("srcdir");
	char dir[1024], path[1200];
	struct dirent *de;
	DIR *d;
	int nvec = 0;
	wl_frame *f = NULL;

	snprintf(dir, sizeof(dir), "%s/protocol/vectors", srcdir ? srcdir : ".");
	d = opendir(dir);
	TAP_OK(d != NULL, "open %s", dir);
	while (d && (de = readdir(d)) != NULL) {
		size_t n = strlen(de->d_name), len;
		unsigned char *buf;
		nng_msg *m;
		char want[64];
		if (n < 5 || strcmp(de->d_name + n - 4, ".bin") != 0)
			continue;
		nvec++;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		snprintf(want, sizeof(want), "%.*s", (int)strcspn(de->d_name, "_."),
		    de->d_name);
		buf = slurp(path, &len);
		TAP_OK(buf != NULL && wl_frame_decode(&f, buf, len) == WL_OK,
		    "%s decodes", de->d_name);
		if (buf == NULL || f == NULL) {
			free(buf);
			continue;
		}
		/* Names that do not start with a body name (unknown_field)
		 * are about something else than the body. */
		TAP_OK(!known_body(want) || strcmp(wl_frame_name(f), want) == 0,
		    "%s is a %s frame (got %s)", de->d_name, want,
		    wl_frame_name(f));
		TAP_OK(wl_frame_encode(&m, f) == WL_OK &&
		    nng_msg_len(m) == len &&
		    memcmp(nng_msg_body(m), buf, len) == 0,
		    "%s re-encodes to the same %zu bytes", de->d_name, len);
		nng_msg_free(m);
		wl_frame_free(f);
		f = NULL;
		free(buf);
	}
	if (d)
		closedir(d);
	TAP_OK(nvec >= 11, "found %d vectors (one per frame body at least)",
	    nvec);
	{
		static const unsigned char garbage[] = { 0xff, 0xff, 0xff, 0xff,
		    0x0f, 0x01 };
		TAP_OK(wl_frame_decode(&f, garbage, sizeof(garbage)) ==
		    WL_ERR_PROTO, "garbage is refused");
		TAP_OK(wl_frame_decode(&f, "", 0) == WL_ERR_PROTO,
		    "an empty message has no body and is refused");
		/* A batch field holding a length that runs past the end. */
		static const unsigned char trunc[] = { 0x32, 0x40, 0x08, 0x01 };
		TAP_OK(wl_frame_decode(&f, trunc, sizeof(trunc)) == WL_ERR_PROTO,
		    "a truncated frame is refused");
	}
	return TAP_DONE();
}
