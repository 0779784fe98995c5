/*
 * timejump.c -- an LD_PRELOAD shim for tests/engine/test_clock.py: steps
 * the wall clock a process sees (clock_gettime's CLOCK_REALTIME and
 * gettimeofday) by $TIMEJUMP_SECONDS once the file $TIMEJUMP_FILE exists,
 * as NTP or an operator stepping the machine's clock would. The monotonic
 * clock is left alone. Built by the test itself (cc -shared -fPIC).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* Seconds added to the wall clock once the file $TIMEJUMP_FILE exists. */
static long
jump(void)
{
	const char *f = getenv("TIMEJUMP_FILE");
	const char *s = getenv("TIMEJUMP_SECONDS");

	if (f == NULL || s == NULL || access(f, F_OK) != 0)
		return 0;
	return atol(s);
}

int
clock_gettime(clockid_t id, struct timespec *ts)
{
	static int (*real)(clockid_t, struct timespec *);
	int rv;

	if (real == NULL)
		real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
	rv = real(id, ts);
	if (rv == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE))
		ts->tv_sec += jump();
	return rv;
}

int
gettimeofday(struct timeval *tv, void *tz)
{
	static int (*real)(struct timeval *, void *);
	int rv;

	if (real == NULL)
		real = (int (*)(struct timeval *, void *))dlsym(RTLD_NEXT, "gettimeofday");
	rv = real(tv, tz);
	if (rv == 0 && tv != NULL)
		tv->tv_sec += jump();
	return rv;
}
