/*
 * engine.h -- one engine worker: the libev loop that owns the dataflow,
 * the sources and the runners, from READY to the final summary.
 */
#ifndef WL_ENGINE_H
#define WL_ENGINE_H

#include "topology.h"

/* Process exit codes, documented in docs/design.md and --help. */
enum {
	WL_EXIT_OK = 0,       /* the job ended (sources ended, or SIGTERM) and drained */
	WL_EXIT_FAILURE = 1,  /* a runtime failure: cannot listen, a runner cannot start... */
	WL_EXIT_USAGE = 2,    /* bad command line */
	WL_EXIT_CONFIG = 3,   /* the topology file is invalid */
};

typedef struct {
	const char *name;      /* worker name, for logs and the handshake */
	const char *state_dir; /* NULL: none (state lives in memory only) */
	double checkpoint_interval; /* seconds between checkpoints */
} wl_engine_opts;

/* Runs `t` until it ends; returns a WL_EXIT_* code. */
int wl_engine_run(const wl_topology *t, const wl_engine_opts *opts);

#endif
