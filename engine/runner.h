/*
 * runner.h -- one runner slot: a (program, instance) pair from the
 * topology, and the successive processes ("incarnations") that serve it.
 *
 * The slot spawns the process with the engine's address and a fresh token
 * in its environment, runs the handshake, forwards batches and replies,
 * watches heartbeats and batch deadlines, and replaces a process that
 * crashes, hangs or breaks the protocol, with exponential backoff. What was
 * in flight is the dataflow's business: the slot only says "down" and,
 * later, "ready" again.
 */
#ifndef WL_RUNNER_H
#define WL_RUNNER_H

#include <stdbool.h>
#include <stdint.h>
#include <ev.h>
#include <nng/nng.h>

#include "err.h"
#include "frame.h"
#include "topology.h"

typedef struct wl_runner wl_runner;

typedef struct {
	/* The runner accepts batches (after its handshake, or again after a
	 * restart: re-send what was in flight now). */
	void (*ready)(void *arg, wl_runner *r);
	/* A reply arrived. Returning non-zero means it breaks the protocol:
	 * the slot then kills the process (the hook has logged why). The
	 * reply stays owned by the slot. */
	wl_err (*reply)(void *arg, wl_runner *r, const Wallaroo__V1__BatchReply *rep);
	/* The runner answered the oldest in-flight batch with an Error frame
	 * instead of a reply (e.g. its reply would be too large): the batch
	 * is done, its events failed. Non-zero: the batch id is not the
	 * oldest in flight, a protocol violation. */
	wl_err (*failed)(void *arg, wl_runner *r, uint64_t batch_id,
	    const char *message);
	/* The incarnation is gone: nothing in flight will be answered. */
	void (*down)(void *arg, wl_runner *r);
	/* The slot gave up: the program keeps failing before it becomes
	 * ready, so the application cannot run. */
	void (*fatal)(void *arg, wl_runner *r);
} wl_runner_hooks;

typedef struct {
	const wl_program *program;
	uint32_t instance;
	const char *sockdir;        /* private 0700 directory for ipc sockets */
	const wl_limits *limits;
	const Wallaroo__V1__StepSpec *const *steps; /* owned by the caller */
	size_t nsteps;
	const char *worker;
	uint64_t incarnation;       /* the engine's */
} wl_runner_config;

/* Creates a slot (no process yet). The config's pointers must outlive the
 * slot. Free with wl_runner_free. */
wl_err wl_runner_new(wl_runner **out, struct ev_loop *loop,
    const wl_runner_config *cfg, const wl_runner_hooks *hooks, void *arg);

/* Spawns the first process. */
void wl_runner_start(wl_runner *r);

/* Sends an encoded Batch frame. Takes `m` in every case. Only valid when
 * wl_runner_is_ready(). */
wl_err wl_runner_send_batch(wl_runner *r, nng_msg *m);

/* Housekeeping from the engine's cron: heartbeats, hang detection. */
void wl_runner_tick(wl_runner *r, ev_tstamp now);

/* Says Goodbye and lets the process exit; kills it if it has not after
 * `grace` seconds (checked by wl_runner_tick). No restart follows. */
void wl_runner_stop(wl_runner *r, ev_tstamp grace);

bool wl_runner_is_ready(const wl_runner *r);

/* True once stopped and the last process has been reaped (or never ran). */
bool wl_runner_is_stopped(const wl_runner *r);

/* "program/instance", for log lines. */
const char *wl_runner_name(const wl_runner *r);

/* The current process id, or 0. */
int wl_runner_pid(const wl_runner *r);

/* Restarts so far (all incarnations after the first). */
uint32_t wl_runner_restarts(const wl_runner *r);

/* Kills the process if any and frees the slot; accepts NULL. */
void wl_runner_free(wl_runner *r);

#endif
