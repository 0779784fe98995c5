/* prio_test.c -- reading a process's CPU time, and the watch over it. */
#include <errno.h>
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
