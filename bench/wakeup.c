/*
 * wakeup.c -- how long this machine takes to wake a process up: the floor
 * under every latency the engine reports (bench/README.md).
 *
 * An event crosses several processes (generator, engine, runner, engine,
 * receiver), and each crossing is a process that was blocked being woken.
 * On a shared VM that wake-up has a tail of its own, whatever the engine
 * does. Two figures, each a log-linear histogram (hist.h) over --seconds:
 *
 *   sleep     one process sleeping --gap-us again and again: how late the
 *             timer wakes it (the time asleep beyond the gap). Skipped with
 *             --gap-us 0.
 *   pingpong  a 64-byte message to a forked child over a unix socket pair
 *             and back, one in flight, with a --gap-us sleep between round
 *             trips so both sides block (as a runner at low load does): the
 *             round trip.
 *
 * Output: "WAKEUP sleep gap_us=G samples=N ... max_us=M" and
 * "WAKEUP pingpong gap_us=G samples=N ... max_us=M" (wl_hist_print_us).
 *
 * With --stall, a third figure instead of those two: one process per CPU,
 * pinned to it, never sleeping, reading the clock in a loop; a gap between
 * two reads is time the CPU was taken from a running process (by the
 * kernel, or by the host of a VM, which /proc/stat's steal column does not
 * always show). Every CPU is kept busy, so the scheduler has nowhere else
 * to put anything: what is left is the machine. One line per CPU:
 *
 *   WAKEUP stall cpu=C seconds=S over_0.5ms=N over_1ms=N over_2ms=N max_us=M
 *
 * With --watch, the same question asked *while something else runs* (a
 * benchmark), without taking its CPUs: one process per CPU, pinned, at the
 * highest real-time priority it may have (SCHED_FIFO; fifo=0 in the output
 * when it was refused), sleeping to a deadline every --gap-us (default
 * 1000) and noting how late it woke. Nothing of ours can hold a CPU from a
 * FIFO process, so a wake-up late by milliseconds is a CPU that was not
 * running at all (the host's doing) or a kernel section that would not be
 * preempted. It costs each CPU one wake-up per gap. One line per CPU:
 *
 *   WAKEUP watch cpu=C seconds=S gap_us=G fifo=F samples=N over_0.5ms=N
 *       over_1ms=N over_2ms=N max_us=M
 *
 * and, on stderr as each probe starts, "WAKEUP watching cpu=C pid=P".
 */
#define _GNU_SOURCE 1
#include "hist.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MSG 64

static void
sleep_ns(uint64_t ns)
{
	struct timespec d = { (time_t)(ns / 1000000000ull),
	    (long)(ns % 1000000000ull) };

	while (nanosleep(&d, &d) != 0 && errno == EINTR)
		;
}

/* Reads or writes exactly MSG bytes; -1 when the peer is gone. */
static int
full(int fd, char *b, int writing)
{
	size_t got = 0;

	while (got < MSG) {
		ssize_t r = writing ? write(fd, b + got, MSG - got) :
		    read(fd, b + got, MSG - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

static void
run_sleep(double seconds, uint64_t gap_ns, wl_hist *h)
{
	uint64_t end = wl_mono_ns() + (uint64_t)(seconds * 1e9);

	while (wl_mono_ns() < end) {
		uint64_t t0 = wl_mono_ns(), late;

		sleep_ns(gap_ns);
		late = wl_mono_ns() - t0;
		wl_hist_record(h, late > gap_ns ? late - gap_ns : 0);
	}
}

static int
run_pingpong(double seconds, uint64_t gap_ns, wl_hist *h)
{
	char b[MSG] = { 0 };
	int sv[2], status;
	pid_t pid;
	uint64_t end;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
		fprintf(stderr, "wakeup: socketpair: %s\n", strerror(errno));
		return 1;
	}
	if ((pid = fork()) < 0) {
		fprintf(stderr, "wakeup: fork: %s\n", strerror(errno));
		return 1;
	}
	if (pid == 0) {
		/* The echo: until the parent closes its end. */
		close(sv[0]);
		while (full(sv[1], b, 0) == 0 && full(sv[1], b, 1) == 0)
			;
		_exit(0);
	}
	close(sv[1]);
	end = wl_mono_ns() + (uint64_t)(seconds * 1e9);
	while (wl_mono_ns() < end) {
		uint64_t t0 = wl_mono_ns();

		if (full(sv[0], b, 1) != 0 || full(sv[0], b, 0) != 0) {
			fprintf(stderr, "wakeup: the echo process went away\n");
			return 1;
		}
		wl_hist_record(h, wl_mono_ns() - t0);
		if (gap_ns)
			sleep_ns(gap_ns);
	}
	close(sv[0]);
	waitpid(pid, &status, 0);
	return 0;
}

/* The spinning probe of one CPU: gap counts over 0.5, 1 and 2 ms, and the
 * longest gap, in nanoseconds. */
typedef struct {
	uint64_t over[3];
	uint64_t max_ns;
} stall_result;

/* Counts one gap (or lateness) of `ns` into `res`. */
static void
note_gap(stall_result *res, uint64_t ns)
{
	static const uint64_t limits[3] = { 500000, 1000000, 2000000 };

	if (ns > res->max_ns)
		res->max_ns = ns;
	for (int i = 0; i < 3; i++)
		if (ns > limits[i])
			res->over[i]++;
}

static void
spin_probe(double seconds, stall_result *res)
{
	uint64_t prev = wl_mono_ns();
	uint64_t end = prev + (uint64_t)(seconds * 1e9);

	memset(res, 0, sizeof(*res));
	for (;;) {
		uint64_t now = wl_mono_ns();

		note_gap(res, now - prev);
		if (now >= end)
			break;
		prev = now;
	}
}

/* The watching probe of one CPU: wake-ups later than 0.5, 1 and 2 ms past
 * their deadline, and the latest. A deadline missed by more than a gap is
 * not made up for: the next one is a gap after the late wake-up. */
static void
watch_probe(double seconds, uint64_t gap_ns, stall_result *res,
    uint64_t *samples)
{
	uint64_t next = wl_mono_ns();
	uint64_t end = next + (uint64_t)(seconds * 1e9);

	memset(res, 0, sizeof(*res));
	*samples = 0;
	while (next < end) {
		struct timespec at;
		uint64_t now, late;

		next += gap_ns;
		at.tv_sec = (time_t)(next / 1000000000ull);
		at.tv_nsec = (long)(next % 1000000000ull);
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at,
		    NULL) == EINTR)
			;
		now = wl_mono_ns();
		late = now > next ? now - next : 0;
		(*samples)++;
		note_gap(res, late);
		if (late > gap_ns)
			next = now;
	}
}

typedef struct {
	stall_result r;
	uint64_t samples;
	int fifo;
} probe_result;

/* One pinned child per CPU, all at once, spinning (--stall) or watching
 * (gap_ns > 0); each writes its result into a pipe, read back in CPU
 * order. */
static int
run_probes(double seconds, uint64_t gap_ns)
{
	cpu_set_t all;
	int ncpu = 0, cpus[CPU_SETSIZE];
	int fds[CPU_SETSIZE];
	pid_t pids[CPU_SETSIZE];

	if (sched_getaffinity(0, sizeof(all), &all) != 0) {
		fprintf(stderr, "wakeup: sched_getaffinity: %s\n", strerror(errno));
		return 1;
	}
	for (int c = 0; c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, &all))
			cpus[ncpu++] = c;
	for (int i = 0; i < ncpu; i++) {
		int p[2];

		if (pipe(p) != 0 || (pids[i] = fork()) < 0) {
			fprintf(stderr, "wakeup: starting the probe of cpu %d: %s\n",
			    cpus[i], strerror(errno));
			return 1;
		}
		if (pids[i] == 0) {
			cpu_set_t one;
			probe_result r = { .fifo = 0 };

			close(p[0]);
			CPU_ZERO(&one);
			CPU_SET(cpus[i], &one);
			if (sched_setaffinity(0, sizeof(one), &one) != 0)
				_exit(3);
			if (gap_ns > 0) {
				struct sched_param sp = {
				    .sched_priority = sched_get_priority_max(SCHED_FIFO) };
				r.fifo = sched_setscheduler(0, SCHED_FIFO, &sp) == 0;
				/* On stderr, so that stdout stays one line per
				 * CPU: who is watching, for a test to stop it. */
				fprintf(stderr, "WAKEUP watching cpu=%d pid=%d\n",
				    cpus[i], (int)getpid());
				fflush(stderr);
				watch_probe(seconds, gap_ns, &r.r, &r.samples);
			} else
				spin_probe(seconds, &r.r);
			_exit(write(p[1], &r, sizeof(r)) == (ssize_t)sizeof(r) ?
			    0 : 4);
		}
		close(p[1]);
		fds[i] = p[0];
	}
	int failed = 0;
	for (int i = 0; i < ncpu; i++) {
		probe_result pr;
		const stall_result *r = &pr.r;
		int status;
		ssize_t got = read(fds[i], &pr, sizeof(pr));

		close(fds[i]);
		waitpid(pids[i], &status, 0);
		if (got != (ssize_t)sizeof(pr)) {
			fprintf(stderr, "wakeup: the probe of cpu %d failed "
			    "(status %d)\n", cpus[i], status);
			failed = 1;
			continue;
		}
		if (gap_ns > 0)
			printf("WAKEUP watch cpu=%d seconds=%g gap_us=%llu fifo=%d "
			    "samples=%llu ", cpus[i], seconds,
			    (unsigned long long)(gap_ns / 1000), pr.fifo,
			    (unsigned long long)pr.samples);
		else
			printf("WAKEUP stall cpu=%d seconds=%g ", cpus[i], seconds);
		printf("over_0.5ms=%llu over_1ms=%llu over_2ms=%llu "
		    "max_us=%.1f\n", (unsigned long long)r->over[0],
		    (unsigned long long)r->over[1],
		    (unsigned long long)r->over[2], (double)r->max_ns / 1e3);
	}
	return failed;
}

static void
usage(FILE *f)
{
	fprintf(f, "usage: wakeup [--seconds S] [--gap-us G] [--stall | --watch]\n"
	    "  --seconds S  seconds per figure (default 4)\n"
	    "  --gap-us G   sleep between samples, microseconds (default 100;\n"
	    "               1000 with --watch)\n"
	    "  --stall      instead: spin on every CPU and count the gaps\n"
	    "  --watch      instead: on every CPU, at real-time priority, wake\n"
	    "               every G us and count the late wake-ups\n");
}

int
main(int argc, char **argv)
{
	static wl_hist h;
	double seconds = 4;
	long gap_us = -1; /* not given */
	char prefix[64];
	int stall = 0, watch = 0;

	for (int i = 1; i < argc; i++) {
		char *end = NULL;

		if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
			seconds = strtod(argv[++i], &end);
			if (*end != '\0' || !(seconds > 0 && seconds <= 3600)) {
				fprintf(stderr, "wakeup: --seconds '%s': a number "
				    "of seconds from 0 to 3600\n", argv[i]);
				return 2;
			}
		} else if (strcmp(argv[i], "--gap-us") == 0 && i + 1 < argc) {
			gap_us = strtol(argv[++i], &end, 10);
			if (*end != '\0' || gap_us < 0 || gap_us > 1000000) {
				fprintf(stderr, "wakeup: --gap-us '%s': an integer "
				    "from 0 to 1000000\n", argv[i]);
				return 2;
			}
		} else if (strcmp(argv[i], "--stall") == 0) {
			stall = 1;
		} else if (strcmp(argv[i], "--watch") == 0) {
			watch = 1;
		} else if (strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (stall && watch) {
		fprintf(stderr, "wakeup: --stall and --watch are two different "
		    "probes: give one\n");
		return 2;
	}
	if (stall)
		return run_probes(seconds, 0);
	if (watch) {
		if (gap_us == 0) {
			fprintf(stderr, "wakeup: --watch needs a --gap-us over 0\n");
			return 2;
		}
		return run_probes(seconds, (uint64_t)(gap_us < 0 ? 1000 : gap_us) *
		    1000);
	}
	if (gap_us < 0)
		gap_us = 100;
	wl_hist_init(&h);
	if (gap_us > 0) {
		run_sleep(seconds, (uint64_t)gap_us * 1000, &h);
		snprintf(prefix, sizeof(prefix), "WAKEUP sleep gap_us=%ld", gap_us);
		wl_hist_print_us(&h, stdout, prefix);
		fflush(stdout);
	}
	wl_hist_init(&h);
	if (run_pingpong(seconds, (uint64_t)gap_us * 1000, &h) != 0)
		return 1;
	snprintf(prefix, sizeof(prefix), "WAKEUP pingpong gap_us=%ld", gap_us);
	wl_hist_print_us(&h, stdout, prefix);
	return 0;
}
