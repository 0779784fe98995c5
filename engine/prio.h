/*
 * prio.h -- the scheduling class of the programs the engine starts, and of
 * the engine's own event loop.
 *
 * A program with `priority: realtime`, or `auto` (the default) when the
 * engine is allowed to, runs under SCHED_FIFO at the lowest real-time
 * priority; so does the engine's loop thread (the topology's top-level
 * `priority`). Why: on a kernel built without preemption of kernel
 * code (PREEMPT_NONE, as on the benchmark machine), a kernel thread such
 * as kdamond holds a CPU for 1-2 ms at a time, and a woken process of the
 * normal class waits behind it even with the other CPU idle; only a
 * real-time wake-up makes the kernel thread yield at once (docs/design.md,
 * "Real-time priority"). A real-time process that keeps a CPU busy would
 * starve everything else of the normal class on its CPU, so the engine
 * watches each one's CPU time, and its loop's own, and puts a busy one back
 * to normal (wl_prio_watch).
 */
#ifndef WL_PRIO_H
#define WL_PRIO_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"
#include "topology.h"

/* The share of one CPU a real-time program may use, measured over
 * WL_PRIO_WINDOW_S, before it goes back to the normal class. A program
 * serving events as they come sleeps most of the time (a Python Market
 * Spread runner at 100,000 events/s: 0.4-0.6); one that is at 0.8 is
 * saturated, where latency is queueing and priority buys nothing. Not
 * shorter windows: catching up after a stall of the machine, such a
 * runner is busy for a few hundred milliseconds, and 0.7 over 0.25 s
 * took real-time priority away then, when it matters (bench/RESULTS.md,
 * eighth session). */
#define WL_PRIO_MAX_SHARE 0.8
#define WL_PRIO_WINDOW_S 1.0

/* Moves every thread of process `pid` to SCHED_FIFO, priority 1, with
 * SCHED_RESET_ON_FORK: what they start later (threads and processes)
 * starts in the normal class, so that no process escapes the watch below;
 * calling it again moves the threads started since. *moved: how many
 * threads moved (those already real-time, and those that exited
 * meanwhile, are skipped). WL_ERR_IO with errno set
 * when the kernel refuses (EPERM: not root, no CAP_SYS_NICE and
 * RLIMIT_RTPRIO 0) or the process's thread list cannot be read. */
wl_err wl_prio_realtime(int pid, unsigned *moved);

/* True when this process may move its children to real-time priority:
 * it has CAP_SYS_NICE, or an RLIMIT_RTPRIO of 1 or more (which its
 * children inherit). Asked once, then remembered. */
bool wl_prio_permitted(void);

/* Whether a program or the engine set to `p` should try real-time
 * priority: `realtime` always (a refusal is the caller's to log), `auto`
 * when wl_prio_permitted, `normal` never. */
bool wl_prio_wanted(wl_priority p);

/* Moves every thread of process `pid` back to the normal class
 * (SCHED_OTHER, nice unchanged, SCHED_RESET_ON_FORK kept: see prio.c).
 * Errors as wl_prio_realtime. */
wl_err wl_prio_normal(int pid, unsigned *moved);

/* The calling thread alone to SCHED_FIFO 1 (with SCHED_RESET_ON_FORK: the
 * processes and threads it starts later start normal), or back to the
 * normal class (the flag kept, as wl_prio_normal). WL_ERR_IO with errno
 * set when the kernel refuses. */
wl_err wl_prio_self_realtime(void);
wl_err wl_prio_self_normal(void);

/* The CPU time the calling thread has used so far, in nanoseconds. */
uint64_t wl_prio_self_cpu_ns(void);

/* The CPU time process `pid` has used so far (user and system, all its
 * threads), in nanoseconds, from /proc/<pid>/stat. */
wl_err wl_prio_cpu_ns(int pid, uint64_t *ns);

/* Watches one real-time process's CPU use. Plain data: zero it (or call
 * wl_prio_watch_start) for each new process. */
typedef struct {
	double since;       /* start of the current window, loop time */
	uint64_t cpu_ns;    /* the process's CPU time then */
	bool armed;
} wl_prio_watch;

/* Starts watching process `pid` at loop time `now`. */
void wl_prio_watch_start(wl_prio_watch *w, int pid, double now);

/* Starts a watch on a CPU time the caller reads itself (the engine's
 * thread: wl_prio_self_cpu_ns). */
void wl_prio_watch_start_ns(wl_prio_watch *w, uint64_t cpu_ns, double now);

/* What wl_prio_watch_check found. */
typedef enum {
	WL_PRIO_WAIT = 0, /* the window has not ended, or the process's CPU
	                     time cannot be read (it has exited: its
	                     supervisor will know) */
	WL_PRIO_CALM = 1, /* a window ended with the process under the limit */
	WL_PRIO_BUSY = 2, /* a window ended with it over WL_PRIO_MAX_SHARE */
} wl_prio_verdict;

/* Called now and then (the engine's 50 ms cron). At the end of each
 * window, the share of a CPU the process used in it goes in *share. */
wl_prio_verdict wl_prio_watch_check(wl_prio_watch *w, int pid, double now,
    double *share);

/* The same, for a watch started with wl_prio_watch_start_ns: `cpu_ns` is
 * the CPU time now. */
wl_prio_verdict wl_prio_watch_check_ns(wl_prio_watch *w, uint64_t cpu_ns,
    double now, double *share);

#endif
