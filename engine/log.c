/*
 * log.c -- line-oriented logging. Each call writes one whole line with one
 * write(2) so that lines from the engine and its children (which share
 * stderr) never interleave mid-line.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static char log_name[64] = "engine";

void
wl_log_set_name(const char *name)
{
	snprintf(log_name, sizeof(log_name), "%s", name);
}

void
wl_log(const char *tag, const char *fmt, ...)
{
	char line[2048];
	struct timeval tv;
	struct tm tm;
	int n;
	va_list ap;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = snprintf(line, sizeof(line),
	    "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ wallaroo[%s] %s ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000), log_name, tag);
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	/* A short write to stderr is not worth retrying: logs are advisory. */
	if (write(STDERR_FILENO, line, (size_t)n) < 0)
		return;
}

char *
wl_log_bytes(char *out, unsigned cap, const void *p, unsigned len)
{
	const unsigned char *b = p;
	unsigned o = 0;

	if (cap < 8) {
		if (cap > 0)
			out[0] = '\0';
		return out;
	}
	out[o++] = '\'';
	for (unsigned i = 0; i < len; i++) {
		if (o + 6 >= cap) {
			out[o++] = '.';
			out[o++] = '.';
			break;
		}
		if (b[i] >= 0x20 && b[i] < 0x7f && b[i] != '\'' && b[i] != '\\')
			out[o++] = (char)b[i];
		else
			o += (unsigned)snprintf(out + o, cap - o, "\\x%02x", b[i]);
	}
	out[o++] = '\'';
	out[o] = '\0';
	return out;
}
