/*
 * runner.h -- one runner slot: a (program, instance) pair from the
 * topology, and the successive processes ("incarnations") that serve it.
 *
 * The same slot serves connectors (protocol section 6): a source or sink
 * program the engine spawns, or an address where an operator-started
 * connector dials in (accepted: no process, the slot waits for the next
 * connection instead of restarting anything). The slot runs the handshake,
 * heartbeats and deadlines; the frames particular to connectors go to the
 * `frame` hook.
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

/* The longest token an accepted connector may be configured with. */
#define WL_TOKEN_MAX 128

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
	/* Connectors: a frame the slot does not handle itself, received while
	 * ready (OpenStream, Batch, EndStream from a source; InDoubt,
	 * Prepared, Resolved from a sink). Returning non-zero makes it a
	 * protocol violation: the hook fills `code` and `why`, and the slot
	 * logs, answers Error and drops the connection. NULL for runners. */
	wl_err (*frame)(void *arg, wl_runner *r, const wl_frame *f,
	    Wallaroo__V1__ErrorCode *code, char *why, size_t whylen);
	/* Connectors: a spawned one said Goodbye and exited with status 0.
	 * Returning true means it has finished: the slot stops. False (or
	 * a NULL hook) restarts it like any other exit. */
	bool (*ended)(void *arg, wl_runner *r);
} wl_runner_hooks;

/* What a slot serves; the values are the protocol's Role. */
typedef enum {
	WL_SLOT_RUNNER = 1,
	WL_SLOT_SOURCE = 2,
	WL_SLOT_SINK = 3,
} wl_slot_role;

typedef struct {
	const wl_program *program;
	uint32_t instance;
	const char *sockdir;        /* private 0700 directory for ipc sockets */
	const wl_limits *limits;
	const Wallaroo__V1__StepSpec *const *steps; /* owned by the caller */
	size_t nsteps;
	const char *worker;
	uint64_t incarnation;       /* the engine's */
	wl_slot_role role;          /* 0 means WL_SLOT_RUNNER */
	const char *connector;      /* connectors: the source or sink name */
	const char *listen_url;     /* accepted connectors (program NULL) */
	const char *token;          /* ... and the token they must present */
	uint64_t initial_credits;   /* sources: Welcome.initial_credits */
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

/* Sends any encoded frame to a ready connector (Ack, Credit, Prepare...).
 * Takes `m` in every case. */
wl_err wl_runner_send(wl_runner *r, nng_msg *m);

/* Ends the current connection for a violation the caller found: logs
 * "RUN-TAG"/"CONN-TAG" with `why`, answers Error{code, why} to a connector
 * (code 0: nothing), and kills the process (spawned) or drops the peer
 * (accepted). */
void wl_runner_drop(wl_runner *r, Wallaroo__V1__ErrorCode code,
    const char *tag, const char *why);

/* True if the current incarnation's Hello listed `cap`. */
bool wl_runner_has_capability(const wl_runner *r, const char *cap);

/* Housekeeping from the engine's cron: heartbeats, hang detection. */
void wl_runner_tick(wl_runner *r, ev_tstamp now);

/* Says Goodbye and lets the process exit; kills it if it has not after
 * `grace` seconds (checked by wl_runner_tick). No restart follows. */
void wl_runner_stop(wl_runner *r, ev_tstamp grace);

bool wl_runner_is_ready(const wl_runner *r);

/* True once stopped and the last process has been reaped (or never ran). */
bool wl_runner_is_stopped(const wl_runner *r);

/* "program/instance" ("connector/instance" for connectors), for logs. */
const char *wl_runner_name(const wl_runner *r);

/* The current process id, or 0. */
int wl_runner_pid(const wl_runner *r);

/* Restarts so far (all incarnations after the first). */
uint32_t wl_runner_restarts(const wl_runner *r);

/* Kills the process if any and frees the slot; accepts NULL. */
void wl_runner_free(wl_runner *r);

#endif
