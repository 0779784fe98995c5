/*
 * topology.h -- the application plan read from the topology file.
 *
 * The plan is a read-only value once loaded: the whole engine reads it and
 * nothing changes it. That is why, unlike the other modules, its structs are
 * declared here: hiding them behind accessors would add code and no safety.
 * Everything in it is owned by the wl_topology and freed by
 * wl_topology_free().
 */
#ifndef WL_TOPOLOGY_H
#define WL_TOPOLOGY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "err.h"

/* The kind of a node: where it sits in the dataflow graph. */
typedef enum {
	WL_NODE_SOURCE = 0,
	WL_NODE_STEP = 1,
	WL_NODE_SINK = 2,
} wl_node_type;

typedef enum {
	WL_STEP_STATELESS = 1, /* runner: 1 event -> 0..N outputs */
	WL_STEP_KEY_BY = 2,    /* runner function or engine byte range */
	WL_STEP_STATE = 3,     /* runner: keyed state computation */
} wl_step_kind;

typedef enum {
	WL_IO_FILE = 1,
	WL_IO_TCP = 2,
	WL_IO_CONNECTOR = 3, /* a program speaking protocol section 6 */
} wl_io_type;

typedef enum {
	WL_FRAMING_LENGTH = 1, /* big-endian u32 length, then the payload */
	WL_FRAMING_LINE = 2,   /* one event per line, '\n' stripped */
} wl_framing;

/* The scheduling class the engine starts a program's processes in
 * (engine/prio.h). */
typedef enum {
	WL_PRIORITY_AUTO = 0,     /* the default: REALTIME when the engine is
	                             permitted (wl_prio_permitted), else
	                             NORMAL, without a complaint per process */
	WL_PRIORITY_NORMAL = 1,   /* the kernel's normal class */
	WL_PRIORITY_REALTIME = 2, /* SCHED_FIFO 1 while it is not busy; a
	                             refusal is logged */
} wl_priority;

typedef struct {
	char *name;
	char **argv;      /* NULL-terminated, argv[0] looked up in PATH */
	size_t argc;
	char **env;       /* NULL-terminated "K=V" added to the child's env */
	size_t envc;
	char *cwd;        /* NULL: the topology file's directory */
	uint32_t instances;
	wl_priority priority;
} wl_program;

typedef struct {
	char *name;
	wl_io_type type;
	wl_framing framing;
	char *path;       /* file: resolved against the topology file's dir */
	char *host;       /* tcp: listen (source) or connect (sink) address */
	uint16_t port;
	uint32_t max_frame_bytes; /* tcp/file length framing: larger = error */
	int after;        /* file sources: index into sources of the source
	                     that must end before this one starts; else -1 */
	int program;      /* connectors: index into programs the engine spawns,
	                     or -1 when it accepts one on `url` */
	char *url;        /* connectors without a program: nng URL to listen on */
	char *token_env;  /* ... and the variable holding the expected token */
} wl_io;

typedef struct {
	char *name;
	wl_step_kind kind;
	int program;      /* index into programs, -1 for engine key ranges */
	char *function;   /* runner function name; defaults to the step name */
	char *state_name; /* WL_STEP_STATE only */
	uint32_t key_offset; /* engine key_by: payload[key_offset..+key_length] */
	uint32_t key_length;
} wl_step;

/* One edge of the graph: `from` feeds `to`. */
typedef struct {
	wl_node_type from_type;
	int from;         /* index into sources or steps */
	wl_node_type to_type;
	int to;           /* index into steps or sinks */
} wl_edge;

typedef struct {
	uint32_t batch_max_events;     /* default 1024 */
	uint32_t batch_max_bytes;      /* default 1 MiB */
	uint32_t inflight_batches;     /* per runner instance, default 4 */
	uint64_t queue_max_bytes;      /* per step instance, default 1 MiB */
	uint32_t message_max_bytes;    /* largest nng message, default 16 MiB */
	uint32_t heartbeat_ms;         /* default 1000 */
	uint32_t heartbeat_timeout_ms; /* default 5000 */
	uint32_t batch_deadline_ms;    /* default 30000 */
	uint32_t restart_backoff_ms;   /* first restart delay, default 100 */
	uint32_t restart_backoff_max_ms; /* default 5000 */
	uint32_t source_credits;       /* events a source connection may have
	                                  in the engine, default 4096 */
} wl_limits;

typedef struct {
	char *file;       /* path as given */
	char *dir;        /* directory of the file, for relative paths */
	char *application;
	uint32_t partitions; /* default 1024 */
	wl_priority priority; /* the engine's own event loop (engine.c) */
	wl_limits limits;
	wl_program *programs;
	size_t nprograms;
	wl_io *sources;
	size_t nsources;
	wl_step *steps;
	size_t nsteps;    /* in topological order: a step comes after its inputs */
	wl_io *sinks;
	size_t nsinks;
	wl_edge *edges;
	size_t nedges;
} wl_topology;

/*
 * Loads and validates FILE. On success *out is a new plan the caller frees
 * with wl_topology_free(). When the content is invalid returns
 * WL_ERR_CONFIG and prints one line per problem to `errs` as
 * "file:line:col: message" (all problems found, not just the first); an
 * unreadable file is WL_ERR_IO ("file: reason"), a file over 16 MiB is
 * WL_ERR_CONFIG ("file: larger than 16 MiB..."), and WL_ERR_NOMEM is out of
 * memory. On failure *out is left untouched.
 */
wl_err wl_topology_load(wl_topology **out, const char *file, FILE *errs);

/* Same as wl_topology_load, from a string; `name` is used in messages and
 * relative paths resolve against `dir`. */
wl_err wl_topology_parse(wl_topology **out, const char *name, const char *dir,
    const char *text, size_t len, FILE *errs);

/* Prints the resolved plan (defaults filled in, paths resolved) to `f`. */
void wl_topology_print(const wl_topology *t, FILE *f);

/* Frees everything; accepts NULL. */
void wl_topology_free(wl_topology *t);

/* Whether the environment variable `name` (or a "NAME=value" entry) is
 * the engine's to set for its children: WALLAROO_*, except the SDKs' own
 * settings, WALLAROO_SDK_*. A program's `env` may not set one. */
bool wl_topology_env_is_engines(const char *name);

/* Index of the step/source/sink called `name`, or -1. */
int wl_topology_find_step(const wl_topology *t, const char *name);
int wl_topology_find_source(const wl_topology *t, const char *name);
int wl_topology_find_sink(const wl_topology *t, const char *name);

#endif
