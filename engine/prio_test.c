/* prio_test.c -- reading a process's CPU time, and the watch over it; the
 * class of a process's threads and of the calling thread alone. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "prio.h"
#include "tap.h"

/* Burns about `s` seconds of this process's CPU. */
static void
spin(double s)
{
	struct timespec t0, t;
	volatile unsigned long x = 0;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
	do {
		for (int i = 0; i < 100000; i++)
			x += (unsigned long)i;
		clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	} while ((double)(t.tv_sec - t0.tv_sec) +
	    (double)(t.tv_nsec - t0.tv_nsec) / 1e9 < s);
}

/* A thread started after its creator moved: reports its own class. */
static void *
thread_class(void *arg)
{
	*(int *)arg = sched_getscheduler(0);
	return NULL;
}

/* The engine's loop thread (wl_prio_self_*): only the calling thread
 * moves, and what it starts starts normal. Run in a forked child, so that
 * the process's other checks find it as it was. */
static int
self_checks(void)
{
	pthread_t th;
	int klass = -1;
	uint64_t a, b;

	if (wl_prio_self_realtime() != WL_OK)
		return errno == EPERM && !wl_prio_permitted() ? 0 : 20;
	if (sched_getscheduler(0) != (SCHED_FIFO | SCHED_RESET_ON_FORK))
		return 21;
	if (pthread_create(&th, NULL, thread_class, &klass) != 0 ||
	    pthread_join(th, NULL) != 0 || klass != SCHED_OTHER)
		return 22;
	a = wl_prio_self_cpu_ns();
	spin(0.05);
	b = wl_prio_self_cpu_ns();
	if (!(b >= a + 40000000ull && b < a + 1000000000ull))
		return 23;
	if (wl_prio_self_normal() != WL_OK ||
	    (sched_getscheduler(0) & ~SCHED_RESET_ON_FORK) != SCHED_OTHER)
		return 24;
	return 0;
}

int
main(void)
{
	uint64_t a = 0, b = 0;
	wl_prio_watch w = { 0 };
	double share = -1;
	unsigned moved = 99;

	/* A command name with the characters that end and split the field
	 * /proc/<pid>/stat puts it in. */
	prctl(PR_SET_NAME, "a) b (c) d");
	TAP_OK(wl_prio_cpu_ns(getpid(), &a) == WL_OK, "CPU time read past "
	    "a command name holding ') '");
	spin(0.15);
	TAP_OK(wl_prio_cpu_ns(getpid(), &b) == WL_OK && b >= a + 100000000ull &&
	    b < a + 1000000000ull, "it grows by the CPU used (%llu ns)",
	    (unsigned long long)(b - a));
	TAP_OK(wl_prio_cpu_ns(0x7ffffff0, &a) == WL_ERR_IO, "no such process: "
	    "an error");

	/* The watch, on a clock of our own: a window is WL_PRIO_WINDOW_S. */
	wl_prio_watch_start(&w, getpid(), 100.0);
	TAP_OK(w.armed, "the watch starts");
	spin(0.1);
	TAP_OK(wl_prio_watch_check(&w, getpid(), 100.5, &share) ==
	    WL_PRIO_WAIT, "no verdict before the window ends");
	TAP_OK(wl_prio_watch_check(&w, getpid(), 110.0, &share) ==
	    WL_PRIO_CALM && share >= 0 && share < WL_PRIO_MAX_SHARE,
	    "about 0.1 s of CPU in 10 s is calm (share %.3f)", share);
	TAP_OK(wl_prio_watch_check(&w, getpid(), 110.5, &share) ==
	    WL_PRIO_WAIT, "a window shorter than WL_PRIO_WINDOW_S gives no "
	    "verdict");
	spin(0.9);
	TAP_OK(wl_prio_watch_check(&w, getpid(), 111.0, &share) ==
	    WL_PRIO_BUSY && share > WL_PRIO_MAX_SHARE, "0.9 s of CPU in a "
	    "window of 1 s is busy (share %.2f)", share);
	TAP_OK(wl_prio_watch_check(&w, 0x7ffffff0, 113.0, &share) ==
	    WL_PRIO_WAIT && !w.armed, "a process that is gone: no verdict, "
	    "and the watch disarms");

	/* The same watch over a CPU time the caller reads (the engine's). */
	wl_prio_watch_start_ns(&w, 5000000000ull, 200.0);
	TAP_OK(wl_prio_watch_check_ns(&w, 5500000000ull, 200.9, &share) ==
	    WL_PRIO_WAIT, "by CPU time: no verdict before the window ends");
	TAP_OK(wl_prio_watch_check_ns(&w, 5500000000ull, 201.0, &share) ==
	    WL_PRIO_CALM && share > 0.49 && share < 0.51, "0.5 s of CPU in "
	    "1 s is calm (share %.2f)", share);
	TAP_OK(wl_prio_watch_check_ns(&w, 6350000000ull, 202.0, &share) ==
	    WL_PRIO_BUSY && share > 0.84 && share < 0.86, "then 0.85 s in the "
	    "next second is busy (share %.2f)", share);
	{
		pid_t child;
		int status = -1;

		if ((child = fork()) == 0)
			_exit(self_checks());
		waitpid(child, &status, 0);
		TAP_OK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		    "the calling thread moves up (or is refused with "
		    "EPERM where not permitted), what it starts starts normal, "
		    "its CPU time grows, and it moves back (status %d)",
		    status);
	}

	/* The class itself: real-time when the kernel lets this process,
	 * back to normal for all its threads. */
	TAP_OK(wl_prio_normal(getpid(), &moved) == WL_OK && moved == 0,
	    "a normal process has no thread to move (%u)", moved);
	if (wl_prio_realtime(getpid(), &moved) == WL_OK) {
		pid_t child;
		int status = -1;

		TAP_OK(wl_prio_permitted(), "permitted, as the kernel agreed");
		TAP_OK(moved == 1, "one thread moved to real-time (%u)", moved);
		TAP_OK(sched_getscheduler(0) ==
		    (SCHED_FIFO | SCHED_RESET_ON_FORK), "now real-time, and "
		    "what it starts will not be");
		TAP_OK(wl_prio_realtime(getpid(), &moved) == WL_OK &&
		    moved == 0, "again: no thread left to move (%u)", moved);
		/* A child reports its class through its exit status. */
		if ((child = fork()) == 0)
			_exit(sched_getscheduler(0) == SCHED_OTHER ? 7 : 8);
		waitpid(child, &status, 0);
		TAP_OK(WIFEXITED(status) && WEXITSTATUS(status) == 7,
		    "a process it starts runs in the normal class (%d)",
		    status);
		TAP_OK(wl_prio_normal(getpid(), &moved) == WL_OK && moved == 1 &&
		    (sched_getscheduler(0) & ~SCHED_RESET_ON_FORK) ==
		    SCHED_OTHER, "back to normal: %u thread moved", moved);
		if (geteuid() == 0) {
			/* Without CAP_SYS_NICE (an engine allowed by
			 * RLIMIT_RTPRIO alone) the kernel refuses to clear
			 * SCHED_RESET_ON_FORK: a process moved up by root and
			 * then unprivileged must still be moved back. */
			status = -1;
			if ((child = fork()) == 0) {
				if (wl_prio_realtime(getpid(), &moved) != WL_OK ||
				    moved != 1)
					_exit(9);
				if (setgid(65534) != 0 || setuid(65534) != 0)
					_exit(10);
				if (wl_prio_normal(getpid(), &moved) != WL_OK ||
				    moved != 1)
					_exit(11);
				_exit((sched_getscheduler(0) &
				    ~SCHED_RESET_ON_FORK) == SCHED_OTHER ? 0 : 12);
			}
			waitpid(child, &status, 0);
			TAP_OK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
			    "an unprivileged real-time process is moved back "
			    "(status %d)", status);
		}
	} else {
		TAP_OK(errno == EPERM, "refused: EPERM (not permitted here)");
		TAP_OK(!wl_prio_permitted(), "and not permitted by our own "
		    "reckoning");
		TAP_OK(sched_getscheduler(0) == SCHED_OTHER, "still normal");
	}
	return TAP_DONE();
}
