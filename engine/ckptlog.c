/*
 * ckptlog.c -- checkpoint log records: encoding, checksums, and the scan
 * that tells a torn tail from corruption in the middle.
 */
#include "ckptlog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* CRC-32C, reflected polynomial 0x82F63B78, eight bytes per step
 * ("slicing by 8"): the checksum runs over every state byte of every
 * checkpoint, so a byte-at-a-time table would show in profiles. */
static uint32_t crc_tab[8][256];
static int crc_ready;

static void
crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		crc_tab[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			crc_tab[t][i] = (crc_tab[t - 1][i] >> 8) ^
			    crc_tab[0][crc_tab[t - 1][i] & 0xff];
	crc_ready = 1;
}

uint32_t
wl_crc32c(uint32_t crc, const void *buf, size_t n)
{
	const uint8_t *p = buf;

	if (!crc_ready)
		crc_init();
	crc = ~crc;
	while (n >= 8) {
		uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 |
		    (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
		uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 |
		    (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
		crc = crc_tab[7][lo & 0xff] ^ crc_tab[6][(lo >> 8) & 0xff] ^
		    crc_tab[5][(lo >> 16) & 0xff] ^ crc_tab[4][lo >> 24] ^
		    crc_tab[3][hi & 0xff] ^ crc_tab[2][(hi >> 8) & 0xff] ^
		    crc_tab[1][(hi >> 16) & 0xff] ^ crc_tab[0][hi >> 24];
		p += 8;
		n -= 8;
	}
	while (n-- > 0)
		crc = (crc >> 8) ^ crc_tab[0][(crc ^ *p++) & 0xff];
	return ~crc;
}

static void
put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t
get_le(const uint8_t *p, int n)
{
	uint64_t v = 0;

	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* -- writing --------------------------------------------------------- */

static int
grow(wl_ckbuf *b, size_t more)
{
	size_t ncap;
	uint8_t *np;

	if (b->failed)
		return -1;
	if (b->len + more <= b->cap)
		return 0;
	ncap = b->cap ? b->cap : 64 * 1024;
	while (ncap < b->len + more)
		ncap *= 2;
	np = realloc(b->p, ncap);
	if (np == NULL) {
		b->failed = 1;
		return -1;
	}
	b->p = np;
	b->cap = ncap;
	return 0;
}

void
wl_ckbuf_begin(wl_ckbuf *b, uint16_t type)
{
	if (grow(b, WL_CKPT_HEADER) != 0)
		return;
	b->open = b->len;
	put_le(b->p + b->len, WL_CKPT_MAGIC, 4);
	put_le(b->p + b->len + 4, WL_CKPT_FORMAT, 2);
	put_le(b->p + b->len + 6, type, 2);
	b->len += WL_CKPT_HEADER;
}

void
wl_ckbuf_put(wl_ckbuf *b, const void *p, size_t n)
{
	if (n == 0 || grow(b, n) != 0)
		return;
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

void
wl_ckbuf_u8(wl_ckbuf *b, uint8_t v)
{
	wl_ckbuf_put(b, &v, 1);
}

void
wl_ckbuf_u16(wl_ckbuf *b, uint16_t v)
{
	uint8_t t[2];

	put_le(t, v, 2);
	wl_ckbuf_put(b, t, 2);
}

void
wl_ckbuf_u32(wl_ckbuf *b, uint32_t v)
{
	uint8_t t[4];

	put_le(t, v, 4);
	wl_ckbuf_put(b, t, 4);
}

void
wl_ckbuf_u64(wl_ckbuf *b, uint64_t v)
{
	uint8_t t[8];

	put_le(t, v, 8);
	wl_ckbuf_put(b, t, 8);
}

void
wl_ckbuf_str(wl_ckbuf *b, const char *s)
{
	size_t n = strlen(s);

	if (n > 65535)
		n = 65535;
	wl_ckbuf_u16(b, (uint16_t)n);
	wl_ckbuf_put(b, s, n);
}

size_t
wl_ckbuf_payload(const wl_ckbuf *b)
{
	return b->failed ? 0 : b->len - b->open - WL_CKPT_HEADER;
}

void
wl_ckbuf_end(wl_ckbuf *b)
{
	uint8_t *h;
	uint32_t len, crc;

	if (b->failed)
		return;
	h = b->p + b->open;
	len = (uint32_t)(b->len - b->open - WL_CKPT_HEADER);
	put_le(h + 8, len, 4);
	crc = wl_crc32c(0, h + 4, 8);
	crc = wl_crc32c(crc, h + WL_CKPT_HEADER, len);
	put_le(h + 12, crc, 4);
	b->open = SIZE_MAX;
}

void
wl_ckbuf_reset(wl_ckbuf *b)
{
	b->len = 0;
	b->open = SIZE_MAX;
}

void
wl_ckbuf_free(wl_ckbuf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

/* -- reading --------------------------------------------------------- */

void
wl_ckcur_init(wl_ckcur *c, const wl_ckrec *r)
{
	c->p = r->p;
	c->len = r->len;
	c->off = 0;
	c->bad = 0;
}

const uint8_t *
wl_ckcur_bytes(wl_ckcur *c, size_t n)
{
	const uint8_t *p;

	if (c->bad || c->len - c->off < n) {
		c->bad = 1;
		return NULL;
	}
	p = c->p + c->off;
	c->off += n;
	return p;
}

uint8_t
wl_ckcur_u8(wl_ckcur *c)
{
	const uint8_t *p = wl_ckcur_bytes(c, 1);

	return p ? p[0] : 0;
}

uint32_t
wl_ckcur_u32(wl_ckcur *c)
{
	const uint8_t *p = wl_ckcur_bytes(c, 4);

	return p ? (uint32_t)get_le(p, 4) : 0;
}

uint64_t
wl_ckcur_u64(wl_ckcur *c)
{
	const uint8_t *p = wl_ckcur_bytes(c, 8);

	return p ? get_le(p, 8) : 0;
}

const uint8_t *
wl_ckcur_str(wl_ckcur *c, uint16_t *n)
{
	const uint8_t *p = wl_ckcur_bytes(c, 2);

	if (p == NULL) {
		*n = 0;
		return NULL;
	}
	*n = (uint16_t)get_le(p, 2);
	return wl_ckcur_bytes(c, *n);
}

int
wl_ckcur_done(const wl_ckcur *c)
{
	return !c->bad && c->off == c->len;
}

/* What lies at `off`. */
typedef enum { AT_VALID, AT_INVALID, AT_OTHER_FORMAT } at_kind;

static at_kind
record_at(const uint8_t *buf, size_t size, size_t off, wl_ckrec *r,
    unsigned *format)
{
	const uint8_t *h = buf + off;
	uint32_t len, crc;

	if (size - off < WL_CKPT_HEADER || get_le(h, 4) != WL_CKPT_MAGIC)
		return AT_INVALID;
	len = (uint32_t)get_le(h + 8, 4);
	if (len > WL_CKPT_MAX_PAYLOAD || len > size - off - WL_CKPT_HEADER)
		return AT_INVALID;
	crc = wl_crc32c(0, h + 4, 8);
	crc = wl_crc32c(crc, h + WL_CKPT_HEADER, len);
	if (crc != (uint32_t)get_le(h + 12, 4))
		return AT_INVALID;
	*format = (unsigned)get_le(h + 4, 2);
	r->type = (uint16_t)get_le(h + 6, 2);
	r->len = len;
	r->p = h + WL_CKPT_HEADER;
	r->offset = off;
	r->end = off + WL_CKPT_HEADER + len;
	return *format >= WL_CKPT_FORMAT_MIN && *format <= WL_CKPT_FORMAT ?
	    AT_VALID : AT_OTHER_FORMAT;
}

wl_err
wl_ckptlog_scan(const char *path, wl_ckscan_fn fn, void *arg,
    wl_ckscan_end *end, uint64_t *valid_end, char *why, size_t n)
{
	uint8_t *buf = NULL;
	size_t size = 0, off = 0;
	struct stat st;
	wl_err rc = WL_OK;
	int fd;

	*end = WL_CKSCAN_CLEAN;
	*valid_end = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return WL_OK;
		snprintf(why, n, "cannot open %s: %s", path, strerror(errno));
		return WL_ERR_IO;
	}
	if (fstat(fd, &st) != 0) {
		snprintf(why, n, "cannot stat %s: %s", path, strerror(errno));
		close(fd);
		return WL_ERR_IO;
	}
	/* Compaction keeps the log to a few times the state's size, so it
	 * is read whole. A character device (tests' /dev/full) reads as
	 * empty. */
	if (S_ISREG(st.st_mode) && st.st_size > 0) {
		buf = malloc((size_t)st.st_size);
		if (buf == NULL) {
			snprintf(why, n, "out of memory reading %s (%lld bytes)",
			    path, (long long)st.st_size);
			close(fd);
			return WL_ERR_NOMEM;
		}
		while (size < (size_t)st.st_size) {
			ssize_t r = read(fd, buf + size, (size_t)st.st_size - size);
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0) {
				snprintf(why, n, "cannot read %s: %s", path,
				    strerror(errno));
				free(buf);
				close(fd);
				return WL_ERR_IO;
			}
			if (r == 0)
				break;
			size += (size_t)r;
		}
	}
	close(fd);
	while (off < size) {
		wl_ckrec r;
		unsigned format = 0;
		at_kind k = record_at(buf, size, off, &r, &format);
		if (k == AT_OTHER_FORMAT) {
			snprintf(why, n, "%s offset %zu: a record of checkpoint "
			    "format %u; this engine reads format %d (recover "
			    "with the engine that wrote it, or move the state "
			    "dir away to start empty)", path, off, format,
			    WL_CKPT_FORMAT);
			rc = WL_ERR_PROTO;
			break;
		}
		if (k == AT_INVALID) {
			/* A torn write leaves garbage only at the end: any valid
			 * record further on means the middle is damaged, and
			 * skipping it would silently lose checkpoints. */
			for (size_t o = off + 1; o + WL_CKPT_HEADER <= size; o++) {
				wl_ckrec r2;
				if (buf[o] != (WL_CKPT_MAGIC & 0xff) ||
				    record_at(buf, size, o, &r2, &format) ==
				    AT_INVALID)
					continue;
				snprintf(why, n, "%s offset %zu: a damaged record "
				    "(bad header or checksum) followed by a valid "
				    "one at offset %zu: the log is corrupt in the "
				    "middle, not torn at the end; refusing to "
				    "guess which checkpoint is right", path, off, o);
				rc = WL_ERR_PROTO;
				break;
			}
			if (rc == WL_OK)
				*end = WL_CKSCAN_TORN;
			break;
		}
		rc = fn(arg, &r, why, n);
		if (rc != WL_OK)
			break;
		off = (size_t)r.end;
		*valid_end = off;
	}
	free(buf);
	return rc;
}

wl_ckhist_answer
wl_ckhist_covers(const wl_ckhist *h, uint64_t id, uint64_t incarnation)
{
	uint64_t last = 0;

	/* Incarnation 0: the sink did not keep who prepared it (0 is older
	 * than any engine): only the id can say, against the newest
	 * checkpoint of the log, the one recovered from. */
	if (incarnation == 0)
		return h->n > 0 && id <= h->v[h->n - 1].id ? WL_CKHIST_BY_ID :
		    WL_CKHIST_NO;
	for (size_t i = 0; i < h->n; i++)
		if (h->v[i].incarnation == incarnation)
			last = h->v[i].id;
	if (last != 0)
		return id <= last ? WL_CKHIST_YES : WL_CKHIST_NO;
	/* No checkpoint of that incarnation in the log: if `id` is before
	 * the log's first one, its checkpoints may have been compacted
	 * away; after it, none of them was at or after `id`. */
	if (h->n > 0 && id < h->v[0].id)
		return WL_CKHIST_BY_ID;
	return WL_CKHIST_NO;
}
