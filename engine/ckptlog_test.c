/*
 * ckptlog_test.c -- the record format and the scan: clean files, empty
 * and missing files, torn tails, flipped bits, records of another format.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckptlog.h"
#include "tap.h"

static char dir[] = "/tmp/wl-ckptlog-XXXXXX";
static char path[256];

typedef struct {
	int n;
	uint16_t types[64];
	uint64_t ends[64];
} seen;

static wl_err
collect(void *arg, const wl_ckrec *r, char *why, size_t n)
{
	seen *s = arg;

	(void)why;
	(void)n;
	if (s->n < 64) {
		s->types[s->n] = r->type;
		s->ends[s->n] = r->end;
	}
	s->n++;
	return WL_OK;
}

static void
write_file(const uint8_t *p, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	if (fd < 0 || write(fd, p, n) != (ssize_t)n)
		abort();
	close(fd);
}

/* Four records: BEGIN, two STATE, COMMIT. */
static void
build(wl_ckbuf *b)
{
	wl_ckbuf_begin(b, WL_CKREC_BEGIN);
	wl_ckbuf_u64(b, 7);
	wl_ckbuf_end(b);
	for (int i = 0; i < 2; i++) {
		wl_ckbuf_begin(b, WL_CKREC_STATE);
		wl_ckbuf_str(b, "count");
		for (int k = 0; k < 50; k++)
			wl_ckbuf_u32(b, (uint32_t)(k * (i + 1)));
		wl_ckbuf_end(b);
	}
	wl_ckbuf_begin(b, WL_CKREC_COMMIT);
	wl_ckbuf_u64(b, 7);
	wl_ckbuf_end(b);
}

static wl_err
scan(seen *s, wl_ckscan_end *end, uint64_t *valid, char *why)
{
	memset(s, 0, sizeof(*s));
	return wl_ckptlog_scan(path, collect, s, end, valid, why, 300);
}

int
main(void)
{
	wl_ckbuf b = { 0 };
	seen s;
	wl_ckscan_end end;
	uint64_t valid;
	char why[300] = "";
	size_t rec2;

	if (mkdtemp(dir) == NULL)
		return 1;
	snprintf(path, sizeof(path), "%s/checkpoints.log", dir);

	TAP_OK(wl_crc32c(0, "123456789", 9) == 0xE3069283u,
	    "crc32c of the standard check string");
	TAP_OK(wl_crc32c(wl_crc32c(0, "1234", 4), "56789", 5) == 0xE3069283u,
	    "crc32c continues across calls");

	TAP_OK(scan(&s, &end, &valid, why) == WL_OK && s.n == 0 &&
	    end == WL_CKSCAN_CLEAN && valid == 0, "a missing file scans as empty");
	write_file((const uint8_t *)"", 0);
	TAP_OK(scan(&s, &end, &valid, why) == WL_OK && s.n == 0 &&
	    end == WL_CKSCAN_CLEAN, "an empty file scans as empty");

	build(&b);
	TAP_OK(!b.failed && b.len > 4 * WL_CKPT_HEADER, "records encoded");
	write_file(b.p, b.len);
	TAP_OK(scan(&s, &end, &valid, why) == WL_OK && s.n == 4 &&
	    end == WL_CKSCAN_CLEAN && valid == b.len &&
	    s.types[0] == WL_CKREC_BEGIN && s.types[3] == WL_CKREC_COMMIT,
	    "a clean file gives every record, in order");
	rec2 = (size_t)s.ends[1];

	/* Torn tail: every cut inside the last record. */
	{
		int bad = 0;
		for (size_t cut = (size_t)s.ends[2] + 1; cut < b.len; cut++) {
			write_file(b.p, cut);
			if (scan(&s, &end, &valid, why) != WL_OK || s.n != 3 ||
			    end != WL_CKSCAN_TORN || valid != s.ends[2])
				bad++;
		}
		TAP_OK(bad == 0, "a truncated last record is a torn tail (every "
		    "cut point)");
	}
	write_file(b.p, rec2 + 5);
	TAP_OK(scan(&s, &end, &valid, why) == WL_OK && s.n == 2 &&
	    end == WL_CKSCAN_TORN && valid == rec2,
	    "a cut a few bytes into a record keeps the records before it");

	/* A flipped bit in the last record: torn tail, nothing after it. */
	{
		uint8_t *c = malloc(b.len);
		memcpy(c, b.p, b.len);
		c[b.len - 3] ^= 0x10;
		write_file(c, b.len);
		TAP_OK(scan(&s, &end, &valid, why) == WL_OK && s.n == 3 &&
		    end == WL_CKSCAN_TORN, "a flipped bit in the last record "
		    "is treated as a torn tail");
		/* In the middle: valid records follow, so it is corruption. */
		memcpy(c, b.p, b.len);
		c[rec2 + WL_CKPT_HEADER + 3] ^= 0x01;
		write_file(c, b.len);
		TAP_OK(scan(&s, &end, &valid, why) == WL_ERR_PROTO &&
		    strstr(why, "corrupt in the middle") != NULL &&
		    strstr(why, "offset") != NULL,
		    "a flipped bit in a middle record stops the scan: %s", why);
		/* A flipped bit in a header's length field. */
		memcpy(c, b.p, b.len);
		c[rec2 + 9] ^= 0x40;
		write_file(c, b.len);
		TAP_OK(scan(&s, &end, &valid, why) == WL_ERR_PROTO,
		    "a damaged length in the middle is corruption too");
		free(c);
	}

	/* A record of an older format, with a valid checksum. */
	{
		wl_ckbuf o = { 0 };
		uint32_t crc;
		wl_ckbuf_begin(&o, WL_CKREC_BEGIN);
		wl_ckbuf_u64(&o, 1);
		wl_ckbuf_end(&o);
		o.p[4] = 0; /* format 0 */
		crc = wl_crc32c(0, o.p + 4, 8);
		crc = wl_crc32c(crc, o.p + WL_CKPT_HEADER, o.len - WL_CKPT_HEADER);
		for (int i = 0; i < 4; i++)
			o.p[12 + i] = (uint8_t)(crc >> (8 * i));
		write_file(o.p, o.len);
		TAP_OK(scan(&s, &end, &valid, why) == WL_ERR_PROTO &&
		    strstr(why, "format 0") != NULL,
		    "a record of an older format is refused by name: %s", why);
		wl_ckbuf_free(&o);
	}

	/* Garbage only (not even a header): a torn tail of nothing. */
	write_file((const uint8_t *)"WLC", 3);
	TAP_OK(scan(&s, &end, &valid, why) == WL_OK && s.n == 0 &&
	    end == WL_CKSCAN_TORN && valid == 0, "three stray bytes are a torn tail");

	/* Cursor bounds. */
	{
		wl_ckrec r = { .p = (const uint8_t *)"\x03\x00" "abc", .len = 5 };
		wl_ckcur k;
		uint16_t n;
		wl_ckcur_init(&k, &r);
		TAP_OK(wl_ckcur_str(&k, &n) != NULL && n == 3 && wl_ckcur_done(&k),
		    "a string reads back");
		(void)wl_ckcur_u64(&k);
		TAP_OK(k.bad, "reading past the payload is caught");
	}

	wl_ckbuf_free(&b);
	unlink(path);
	rmdir(dir);
	{
		/* Incarnation A wrote 3..5, B recovered 4 and wrote 5..6 (A's
		 * 5 never became durable, or it would have been recovered). */
		static const wl_ckhist_entry v[] = {
			{ 3, 0xA }, { 4, 0xA }, { 5, 0xB }, { 6, 0xB },
		};
		wl_ckhist h = { v, 4 }, none = { NULL, 0 };
		TAP_OK(wl_ckhist_covers(&h, 4, 0xA) == WL_CKHIST_YES &&
		    wl_ckhist_covers(&h, 3, 0xA) == WL_CKHIST_YES,
		    "an epoch of A's checkpoint 3 or 4: covered by A's durable 4");
		TAP_OK(wl_ckhist_covers(&h, 5, 0xA) == WL_CKHIST_NO,
		    "an epoch A prepared for 5: not covered, though B's 5 is durable");
		TAP_OK(wl_ckhist_covers(&h, 6, 0xB) == WL_CKHIST_YES &&
		    wl_ckhist_covers(&h, 7, 0xB) == WL_CKHIST_NO,
		    "B's 6 is covered, B's 7 is not");
		TAP_OK(wl_ckhist_covers(&h, 2, 0xC) == WL_CKHIST_BY_ID,
		    "an incarnation missing from the log, before its first "
		    "checkpoint: only the id can say");
		TAP_OK(wl_ckhist_covers(&h, 5, 0xC) == WL_CKHIST_NO,
		    "an incarnation missing from the log, within it: not covered");
		TAP_OK(wl_ckhist_covers(&none, 1, 0xA) == WL_CKHIST_NO,
		    "an empty log covers nothing");
		TAP_OK(wl_ckhist_covers(&h, 6, 0) == WL_CKHIST_BY_ID &&
		    wl_ckhist_covers(&h, 7, 0) == WL_CKHIST_NO &&
		    wl_ckhist_covers(&none, 1, 0) == WL_CKHIST_NO,
		    "incarnation 0 (not known): by id, up to the newest checkpoint");
	}
	return TAP_DONE();
}
