/*
 * prio.c -- real-time priority for the programs that ask for it, and the
 * watch that takes it back from a busy one (prio.h says why).
 */
#include "prio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* The lowest real-time priority: above every normal process, below the
 * kernel's own real-time threads and anything an operator raised. */
#define RT_PRIORITY 1

/* CAP_SYS_NICE's bit in the capability sets of /proc/<pid>/status. */
#define CAP_SYS_NICE_BIT 23

/*
 * Sets the class of every thread of process `pid`. A thread started while
 * we walk the list may be missed; it starts normal (SCHED_RESET_ON_FORK),
 * which is right when moving back, and the watch's next calm window moves
 * it up (runner.c, watch_priority).
 */
static wl_err
set_all(int pid, int policy, int priority, unsigned *moved)
{
	struct sched_param sp = { .sched_priority = priority };
	char path[64];
	struct dirent *de;
	wl_err rc = WL_OK;
	int saved = 0;
	DIR *d;

	*moved = 0;
	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	if ((d = opendir(path)) == NULL)
		return WL_ERR_IO;
	while ((de = readdir(d)) != NULL) {
		char *end;
		long tid = strtol(de->d_name, &end, 10);

		/* sched_getscheduler reports SCHED_RESET_ON_FORK with the
		 * policy: compare the classes alone. */
		if (*end != '\0' || tid <= 0 ||
		    (sched_getscheduler((pid_t)tid) & ~SCHED_RESET_ON_FORK) ==
		    (policy & ~SCHED_RESET_ON_FORK))
			continue;
		if (sched_setscheduler((pid_t)tid, policy, &sp) == 0) {
			(*moved)++;
		} else if (errno != ESRCH) { /* ESRCH: it exited */
			saved = errno;
			rc = WL_ERR_IO;
			break;
		}
	}
	closedir(d);
	errno = saved;
	return rc;
}

wl_err
wl_prio_realtime(int pid, unsigned *moved)
{
	/* SCHED_RESET_ON_FORK: a process the program starts (a shell
	 * command, a worker pool) is not watched, so it must not inherit a
	 * class that could starve the machine. The threads a runtime starts
	 * later (Go's) start normal too; the engine's watch moves them at
	 * the end of each window. */
	return set_all(pid, SCHED_FIFO | SCHED_RESET_ON_FORK, RT_PRIORITY,
	    moved);
}

/* Whether CAP_SYS_NICE is in this process's effective set. */
static bool
has_sys_nice(void)
{
	char line[256];
	bool yes = false;
	FILE *f = fopen("/proc/self/status", "re");

	if (f == NULL)
		return false;
	while (fgets(line, sizeof(line), f) != NULL) {
		unsigned long long caps;

		if (sscanf(line, "CapEff: %llx", &caps) == 1) {
			yes = (caps >> CAP_SYS_NICE_BIT) & 1;
			break;
		}
	}
	fclose(f);
	return yes;
}

bool
wl_prio_permitted(void)
{
	/* The answer cannot change while the engine runs: it drops no
	 * capability and raises no limit. */
	static int known = -1;
	struct rlimit rl;

	if (known < 0)
		known = has_sys_nice() ||
		    (getrlimit(RLIMIT_RTPRIO, &rl) == 0 &&
		    rl.rlim_cur >= RT_PRIORITY);
	return known == 1;
}

bool
wl_prio_wanted(wl_priority p)
{
	return p == WL_PRIORITY_REALTIME ||
	    (p == WL_PRIORITY_AUTO && wl_prio_permitted());
}

wl_err
wl_prio_normal(int pid, unsigned *moved)
{
	/* Keeping SCHED_RESET_ON_FORK: without CAP_SYS_NICE (an engine
	 * allowed by RLIMIT_RTPRIO alone) the kernel refuses to clear it,
	 * and a normal thread loses nothing by keeping it. */
	return set_all(pid, SCHED_OTHER | SCHED_RESET_ON_FORK, 0, moved);
}

wl_err
wl_prio_cpu_ns(int pid, uint64_t *ns)
{
	char path[64], buf[1024];
	unsigned long long ut, st;
	long hz = sysconf(_SC_CLK_TCK);
	const char *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return WL_ERR_IO;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return WL_ERR_IO;
	buf[n] = '\0';
	/* The command name (field 2) may hold spaces and parentheses: the
	 * fields that follow start after its last ')'. utime and stime are
	 * fields 14 and 15, the 12th and 13th after it. */
	if ((p = strrchr(buf, ')')) == NULL)
		return WL_ERR_IO;
	if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u "
	    "%llu %llu", &ut, &st) != 2 || hz <= 0)
		return WL_ERR_IO;
	*ns = (ut + st) * (1000000000ull / (unsigned long long)hz);
	return WL_OK;
}

wl_err
wl_prio_self_realtime(void)
{
	struct sched_param sp = { .sched_priority = RT_PRIORITY };

	/* 0: the calling thread alone, not the threads nng started. */
	return sched_setscheduler(0, SCHED_FIFO | SCHED_RESET_ON_FORK,
	    &sp) == 0 ? WL_OK : WL_ERR_IO;
}

wl_err
wl_prio_self_normal(void)
{
	struct sched_param sp = { .sched_priority = 0 };

	return sched_setscheduler(0, SCHED_OTHER | SCHED_RESET_ON_FORK,
	    &sp) == 0 ? WL_OK : WL_ERR_IO;
}

uint64_t
wl_prio_self_cpu_ns(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
		return 0;
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void
wl_prio_watch_start(wl_prio_watch *w, int pid, double now)
{
	uint64_t cpu;

	if (wl_prio_cpu_ns(pid, &cpu) == WL_OK)
		wl_prio_watch_start_ns(w, cpu, now);
	else
		w->armed = false;
}

void
wl_prio_watch_start_ns(wl_prio_watch *w, uint64_t cpu_ns, double now)
{
	w->since = now;
	w->cpu_ns = cpu_ns;
	w->armed = true;
}

wl_prio_verdict
wl_prio_watch_check(wl_prio_watch *w, int pid, double now, double *share)
{
	uint64_t cpu;

	if (!w->armed) {
		wl_prio_watch_start(w, pid, now);
		return WL_PRIO_WAIT;
	}
	if (now - w->since < WL_PRIO_WINDOW_S)
		return WL_PRIO_WAIT;
	if (wl_prio_cpu_ns(pid, &cpu) != WL_OK) {
		w->armed = false;
		return WL_PRIO_WAIT;
	}
	return wl_prio_watch_check_ns(w, cpu, now, share);
}

wl_prio_verdict
wl_prio_watch_check_ns(wl_prio_watch *w, uint64_t cpu, double now,
    double *share)
{
	double s;

	if (now - w->since < WL_PRIO_WINDOW_S)
		return WL_PRIO_WAIT;
	s = cpu > w->cpu_ns ? (double)(cpu - w->cpu_ns) / 1e9 /
	    (now - w->since) : 0.0;
	w->since = now;
	w->cpu_ns = cpu;
	*share = s;
	return s > WL_PRIO_MAX_SHARE ? WL_PRIO_BUSY : WL_PRIO_CALM;
}
