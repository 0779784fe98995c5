/*
 * log.h -- one line per event on stderr, with a stable tag.
 *
 * Format: "2026-11-22T04:15:15.123Z wallaroo[NAME] TAG message". Tags are
 * upper case, stable, and documented in docs/design.md so that operators
 * and tests can grep for them (SUP-RESTART, TOPO-ERROR, READY...).
 */
#ifndef WL_LOG_H
#define WL_LOG_H

/* Sets the worker name shown in every line; the string is copied. */
void wl_log_set_name(const char *name);

void wl_log(const char *tag, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Writes `len` bytes of `p` into `out` (size `cap`) as a printable,
 * escaped, possibly truncated string, for naming keys in log lines.
 * Returns out. */
char *wl_log_bytes(char *out, unsigned cap, const void *p, unsigned len);

#endif
