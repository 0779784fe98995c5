/*
 * runner.c -- supervision and session of one runner slot.
 *
 * Every incarnation gets its own socket at a new address and a new token,
 * so a late frame from a process we already gave up on can never be taken
 * for a frame of its replacement: when the process goes, its socket goes.
 */
#include "runner.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "link.h"
#include "log.h"
#include "prio.h"

extern char **environ;

/* The life of one slot. Advanced only by set_state(). */
typedef enum {
	RS_IDLE,       /* no process; the backoff timer will spawn one */
	RS_STARTING,   /* process spawned, waiting for its Hello */
	RS_ASSIGNING,  /* Welcome and AssignSteps sent, waiting for Ready */
	RS_READY,      /* serving batches */
	RS_KILLED,     /* SIGKILL sent (crash, hang, protocol), waiting to reap */
	RS_STOPPING,   /* Goodbye sent, waiting for the process to exit */
	RS_STOPPED,    /* stopped for good and reaped */
} runner_state;

static const char *state_names[] = {
	"idle", "starting", "assigning", "ready", "killed", "stopping", "stopped",
};

/* The same states as protocol section 6 names them for connectors. */
static const char *conn_state_names[] = {
	"waiting", "hello", "hello", "open", "closed", "closing", "closed",
};

/* A process that fails this many times in a row without ever becoming
 * ready is a configuration problem, not bad luck: give up. */
#define MAX_FAILS_BEFORE_READY 5

/* Batches sent and not yet answered: their send times, for the deadline. */
#define MAX_TRACKED 256

/* How long a connection stays open after the engine sent it a Refuse or
 * an Error, so that the peer can read why before it goes. */
#define LINGER_S 0.1

struct wl_runner {
	struct ev_loop *loop;
	wl_runner_config cfg;
	wl_runner_hooks hooks;
	void *arg;
	runner_state state;
	wl_slot_role role;
	const char *kind;        /* "runner", "source" or "sink", for logs */
	const char *prefix;      /* log tag prefix: "RUN" or "CONN" */
	bool accepted;           /* no process: a connector dials in */
	bool said_goodbye;       /* this incarnation sent Goodbye */
	ev_tstamp peer_up_at;    /* accepted: when the peer connected, or 0 */
	ev_timer linger;         /* the delayed end of a refused connection */
	char **caps;             /* capabilities of the current Hello */
	size_t ncaps;
	char name[96];
	char token[WL_TOKEN_MAX + 1];
	char url[256];
	wl_link *link;
	pid_t pid;
	ev_child child;
	ev_timer backoff;
	uint32_t generation;     /* incarnations spawned so far */
	uint32_t fails;          /* consecutive failures without a reply */
	bool ever_ready;         /* this incarnation reached RS_READY */
	bool stop_requested;
	ev_tstamp state_since;
	ev_tstamp last_rx;
	ev_tstamp last_reply;
	ev_tstamp stop_deadline;
	uint64_t ping_seq;
	ev_tstamp ping_sent;     /* 0: no heartbeat outstanding */
	ev_tstamp sent_at[MAX_TRACKED];
	uint32_t inflight_head, inflight;
	char why[160];           /* why the current incarnation was killed */
	bool realtime;           /* this incarnation runs at real-time
	                            priority (its program asks or leaves it
	                            to `auto`, the kernel agreed, and it has
	                            not been busy) */
	bool rt_refused;         /* the kernel refused it once: said so */
	wl_prio_watch rt_watch;  /* its CPU use while real-time */
};

static void
set_state(wl_runner *r, runner_state s)
{
	r->state = s;
	r->state_since = wl_clock_now();
}

static void set_priority(wl_runner *r);

const char *
wl_runner_name(const wl_runner *r)
{
	return r->name;
}

int
wl_runner_pid(const wl_runner *r)
{
	return (int)r->pid;
}

uint32_t
wl_runner_restarts(const wl_runner *r)
{
	return r->generation > 0 ? r->generation - 1 : 0;
}

bool
wl_runner_is_ready(const wl_runner *r)
{
	return r->state == RS_READY;
}

bool
wl_runner_is_stopped(const wl_runner *r)
{
	return r->state == RS_STOPPED;
}

static void
free_caps(wl_runner *r)
{
	for (size_t i = 0; i < r->ncaps; i++)
		free(r->caps[i]);
	free(r->caps);
	r->caps = NULL;
	r->ncaps = 0;
}

static void
send_frame(wl_runner *r, const wl_frame *f)
{
	nng_msg *m;

	if (r->link == NULL || wl_frame_encode(&m, f) != WL_OK)
		return;
	wl_link_send(r->link, m);
}

/*
 * Ends the connection now. A spawned process is killed, and the reaper
 * decides what comes next; an accepted connector's peer is dropped and the
 * slot waits for the next one.
 */
static void
reset_accepted(wl_runner *r, double delay)
{
	wl_link_drop_peer(r->link, delay);
	r->peer_up_at = 0;
	r->inflight = 0;
	r->inflight_head = 0;
	r->ping_sent = 0;
	free_caps(r);
	set_state(r, r->stop_requested ? RS_STOPPED : RS_STARTING);
	r->hooks.down(r->arg, r);
}

static void
drop_now(wl_runner *r)
{
	ev_timer_stop(r->loop, &r->linger);
	if (r->accepted) {
		reset_accepted(r, 0);
		return;
	}
	if (r->pid > 0)
		kill(r->pid, SIGKILL);
	wl_link_close(r->link);
	r->link = NULL;
}

static void
linger_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	drop_now(w->data);
}

/*
 * Gives up on the current connection: logs PREFIX-TAG, tells a connector
 * why (an Error frame, when code is set) and ends the connection, after
 * LINGER_S when something was sent that the peer should read first.
 */
static void
drop(wl_runner *r, Wallaroo__V1__ErrorCode code, const char *tag,
    const char *why, bool linger)
{
	char t[32];

	if (r->state == RS_KILLED || r->state == RS_STOPPED ||
	    r->state == RS_IDLE)
		return;
	if (r->accepted && r->state == RS_STARTING && r->peer_up_at == 0)
		return; /* nobody connected */
	snprintf(t, sizeof(t), "%s-%s", r->prefix, tag);
	if (r->accepted)
		wl_log(t, "%s %s: %s; dropping the connection", r->kind,
		    r->name, why);
	else
		wl_log(t, "%s %s pid %d: %s; killing it", r->kind, r->name,
		    (int)r->pid, why);
	snprintf(r->why, sizeof(r->why), "%s", why);
	if (code != 0 && r->role != WL_SLOT_RUNNER) {
		Wallaroo__V1__Frame f = WALLAROO__V1__FRAME__INIT;
		Wallaroo__V1__Error e = WALLAROO__V1__ERROR__INIT;
		e.code = code;
		e.message = (char *)why;
		f.body_case = WALLAROO__V1__FRAME__BODY_ERROR;
		f.error = &e;
		send_frame(r, &f);
		linger = true;
	}
	if (r->accepted) {
		/* The link lets the peer go after the delay; the slot waits
		 * for the next connection at once. */
		reset_accepted(r, linger ? LINGER_S : 0);
		return;
	}
	set_state(r, RS_KILLED);
	if (linger) {
		ev_timer_set(&r->linger, LINGER_S, 0.);
		ev_timer_start(r->loop, &r->linger);
		return;
	}
	drop_now(r);
}

/* The runner-era name: a violation gets no explanation. */
static void
kill_process(wl_runner *r, const char *tag, const char *why)
{
	drop(r, 0, tag, why, false);
}

void
wl_runner_drop(wl_runner *r, Wallaroo__V1__ErrorCode code, const char *tag,
    const char *why)
{
	drop(r, code, tag, why, code != 0);
}

static void
refuse(wl_runner *r, Wallaroo__V1__ErrorCode code, const char *msg)
{
	Wallaroo__V1__Frame f = WALLAROO__V1__FRAME__INIT;
	Wallaroo__V1__Refuse rf = WALLAROO__V1__REFUSE__INIT;

	rf.code = code;
	rf.message = (char *)msg;
	f.body_case = WALLAROO__V1__FRAME__BODY_REFUSE;
	f.refuse = &rf;
	send_frame(r, &f);
}

static void
on_hello(wl_runner *r, const Wallaroo__V1__Hello *h)
{
	Wallaroo__V1__Frame f = WALLAROO__V1__FRAME__INIT;
	Wallaroo__V1__Welcome w = WALLAROO__V1__WELCOME__INIT;
	Wallaroo__V1__AssignSteps a = WALLAROO__V1__ASSIGN_STEPS__INIT;
	char msg[160];

	if (h->version_major != WL_PROTO_MAJOR) {
		snprintf(msg, sizeof(msg),
		    "protocol version %u.%u is not supported; this engine speaks %d.x",
		    h->version_major, h->version_minor, WL_PROTO_MAJOR);
		refuse(r, WALLAROO__V1__ERROR_CODE__ERROR_CODE_BAD_VERSION, msg);
		drop(r, 0, "REFUSED", msg, true);
		return;
	}
	if (strcmp(h->token, r->token) != 0) {
		refuse(r, WALLAROO__V1__ERROR_CODE__ERROR_CODE_BAD_TOKEN,
		    r->accepted ? "token does not match the one the engine expects" :
		    "token does not match the one this engine handed out");
		drop(r, 0, "REFUSED", "wrong token in hello", true);
		return;
	}
	if ((int)h->role != (int)r->role) {
		snprintf(msg, sizeof(msg), "this address serves a %s; hello has "
		    "role %d", r->kind, (int)h->role);
		refuse(r, WALLAROO__V1__ERROR_CODE__ERROR_CODE_BAD_FRAME, msg);
		drop(r, 0, "REFUSED", msg, true);
		return;
	}
	free_caps(r);
	if (h->n_capabilities > 0 &&
	    (r->caps = calloc(h->n_capabilities, sizeof(*r->caps))) != NULL) {
		for (size_t i = 0; i < h->n_capabilities; i++)
			if ((r->caps[r->ncaps] = strdup(h->capabilities[i])) != NULL)
				r->ncaps++;
	}
	w.version_major = WL_PROTO_MAJOR;
	w.version_minor = WL_PROTO_MINOR;
	w.worker = (char *)r->cfg.worker;
	w.incarnation = r->cfg.incarnation;
	w.max_message_bytes = r->cfg.limits->message_max_bytes;
	w.max_batch_events = r->cfg.limits->batch_max_events;
	w.max_inflight_batches = r->cfg.limits->inflight_batches;
	w.heartbeat_interval_ms = r->cfg.limits->heartbeat_ms;
	w.max_batch_bytes = r->cfg.limits->batch_max_bytes;
	w.heartbeat_timeout_ms = r->cfg.limits->heartbeat_timeout_ms;
	w.batch_deadline_ms = r->cfg.limits->batch_deadline_ms;
	if (r->role == WL_SLOT_SOURCE)
		w.initial_credits = r->cfg.initial_credits;
	f.body_case = WALLAROO__V1__FRAME__BODY_WELCOME;
	f.welcome = &w;
	send_frame(r, &f);
	if (r->role != WL_SLOT_RUNNER) {
		/* A connector has nothing to be assigned: it is ready. */
		set_state(r, RS_READY);
		set_priority(r);
		r->ever_ready = true;
		r->said_goodbye = false;
		r->last_reply = wl_clock_now();
		wl_log("CONN-READY", "%s %s pid %d connected: %s", r->kind,
		    r->name, (int)r->pid, h->program);
		r->hooks.ready(r->arg, r);
		return;
	}

	a.n_steps = r->cfg.nsteps;
	a.steps = (Wallaroo__V1__StepSpec **)r->cfg.steps;
	f.body_case = WALLAROO__V1__FRAME__BODY_ASSIGN;
	f.assign = &a;
	send_frame(r, &f);
	set_state(r, RS_ASSIGNING);
}

static void
on_frame(wl_runner *r, const wl_frame *f)
{
	char msg[200];

	switch (f->body_case) {
	case WALLAROO__V1__FRAME__BODY_HELLO:
		if (r->state == RS_STARTING) {
			on_hello(r, f->hello);
			return;
		}
		break;
	case WALLAROO__V1__FRAME__BODY_READY:
		if (r->state == RS_ASSIGNING && r->role == WL_SLOT_RUNNER) {
			set_state(r, RS_READY);
			set_priority(r);
			r->ever_ready = true;
			r->last_reply = wl_clock_now();
			wl_log("RUN-READY", "runner %s pid %d serves %zu step(s)",
			    r->name, (int)r->pid, r->cfg.nsteps);
			r->hooks.ready(r->arg, r);
			return;
		}
		break;
	case WALLAROO__V1__FRAME__BODY_REPLY:
		if (r->state == RS_READY && r->role != WL_SLOT_SOURCE) {
			if (r->inflight == 0) {
				kill_process(r, "PROTO",
				    "sent a reply with no batch in flight");
				return;
			}
			if (r->hooks.reply(r->arg, r, f->reply) != WL_OK) {
				kill_process(r, "PROTO", "sent a reply that does "
				    "not match its batch (see the line above)");
				return;
			}
			if (r->state != RS_READY)
				return; /* the hook dropped the connection */
			r->inflight_head = (r->inflight_head + 1) % MAX_TRACKED;
			r->inflight--;
			r->fails = 0;
			r->last_reply = wl_clock_now();
			return;
		}
		break;
	case WALLAROO__V1__FRAME__BODY_HEARTBEAT:
		if (r->state == RS_ASSIGNING || r->state == RS_READY ||
		    r->state == RS_STOPPING) {
			if (f->heartbeat->reply) {
				Wallaroo__V1__Frame o = WALLAROO__V1__FRAME__INIT;
				Wallaroo__V1__Heartbeat hb = WALLAROO__V1__HEARTBEAT__INIT;
				hb.seq = f->heartbeat->seq;
				o.body_case = WALLAROO__V1__FRAME__BODY_HEARTBEAT;
				o.heartbeat = &hb;
				send_frame(r, &o);
			} else if (f->heartbeat->seq == r->ping_seq) {
				r->ping_sent = 0;
			}
			return;
		}
		break;
	case WALLAROO__V1__FRAME__BODY_ERROR:
		snprintf(msg, sizeof(msg), "reported an error (code %d): %s",
		    (int)f->error->code, f->error->message);
		if (r->state == RS_ASSIGNING) {
			/* Typically a step function the program lacks: the
			 * process exits and the failure count grows. */
			wl_log("RUN-ERROR", "runner %s %s", r->name, msg);
			kill_process(r, "REFUSED", "it cannot serve the steps "
			    "assigned to it");
			return;
		}
		if (r->state == RS_READY || r->state == RS_STOPPING) {
			char t[32];
			snprintf(t, sizeof(t), "%s-ERROR", r->prefix);
			wl_log(t, "%s %s %s", r->kind, r->name, msg);
			if (f->error->batch_id == 0 || r->state != RS_READY ||
			    r->role == WL_SLOT_SOURCE)
				return;
			if (r->inflight == 0 || r->hooks.failed(r->arg, r,
			    f->error->batch_id, f->error->message) != WL_OK) {
				kill_process(r, "PROTO", "sent an error about a "
				    "batch that is not the oldest in flight");
				return;
			}
			if (r->state != RS_READY)
				return; /* the hook dropped the connection */
			r->inflight_head = (r->inflight_head + 1) % MAX_TRACKED;
			r->inflight--;
			r->last_reply = wl_clock_now();
			return;
		}
		break;
	case WALLAROO__V1__FRAME__BODY_GOODBYE: {
		char t[32];
		snprintf(t, sizeof(t), "%s-GOODBYE", r->prefix);
		wl_log(t, "%s %s pid %d is leaving: %s", r->kind, r->name,
		    (int)r->pid, f->goodbye->reason);
		r->said_goodbye = true;
		return;
	}
	default:
		if (r->state == RS_READY && r->hooks.frame != NULL) {
			Wallaroo__V1__ErrorCode code =
			    WALLAROO__V1__ERROR_CODE__ERROR_CODE_BAD_FRAME;
			msg[0] = '\0';
			if (r->hooks.frame(r->arg, r, f, &code, msg,
			    sizeof(msg)) != WL_OK)
				drop(r, code, "PROTO", msg, true);
			else if (f->body_case ==
			    WALLAROO__V1__FRAME__BODY_BATCH)
				/* A source whose batch was accepted is doing
				 * its work, like a runner that replied: its
				 * next crash starts the backoff over. */
				r->fails = 0;
			return;
		}
		break;
	}
	if (r->state == RS_STOPPING)
		return; /* a late reply after our Goodbye: nothing to do */
	snprintf(msg, sizeof(msg), "%s not allowed while %s",
	    wl_frame_name(f), conn_state_names[r->state]);
	if (r->role == WL_SLOT_RUNNER) {
		snprintf(msg, sizeof(msg), "sent a %s frame, not allowed while %s",
		    wl_frame_name(f), state_names[r->state]);
		kill_process(r, "PROTO", msg);
		return;
	}
	drop(r, WALLAROO__V1__ERROR_CODE__ERROR_CODE_BAD_FRAME, "PROTO", msg,
	    true);
}

static void
link_recv(void *arg, nng_msg *m)
{
	wl_runner *r = arg;
	wl_frame *f;
	char msg[120];

	r->last_rx = wl_clock_now();
	if (r->state == RS_KILLED || r->state == RS_STOPPED) {
		nng_msg_free(m);
		return;
	}
	/* A message proves a peer. Over nng its first one can come before
	 * its "up" event does (nng starts a pipe receiving before it runs
	 * the ADD_POST callback, and the two reach the loop by different
	 * watchers): without this, a hello that came first was taken for
	 * nobody's, and refusing it was neither logged nor followed by
	 * dropping the connection. */
	if (r->accepted && r->state == RS_STARTING && r->peer_up_at == 0)
		r->peer_up_at = r->last_rx;
	if (wl_frame_decode(&f, nng_msg_body(m), nng_msg_len(m)) != WL_OK) {
		snprintf(msg, sizeof(msg),
		    "sent %zu bytes that are not a protocol frame",
		    nng_msg_len(m));
		nng_msg_free(m);
		drop(r, r->role == WL_SLOT_RUNNER ? 0 :
		    WALLAROO__V1__ERROR_CODE__ERROR_CODE_BAD_FRAME, "GARBAGE", msg,
		    false);
		return;
	}
	on_frame(r, f);
	wl_frame_free(f);
	nng_msg_free(m); /* after the frame, which may point into it */
}

static void
link_event(void *arg, wl_link_event ev)
{
	wl_runner *r = arg;
	char msg[160];

	if (ev == WL_LINK_UP) {
		if (r->accepted && r->state == RS_STARTING)
			r->peer_up_at = wl_clock_now();
		return;
	}
	if (r->state == RS_STOPPING) {
		/* Expected: it is exiting after our Goodbye. */
		if (r->accepted)
			drop_now(r);
		return;
	}
	if (r->accepted && r->state == RS_STARTING) {
		r->peer_up_at = 0; /* came and went before saying hello */
		return;
	}
	snprintf(msg, sizeof(msg),
	    "connection closed while %s (a frame over message_max_bytes=%u "
	    "closes it, as does the process exiting)",
	    state_names[r->state], r->cfg.limits->message_max_bytes);
	if (r->said_goodbye && r->role != WL_SLOT_RUNNER) {
		/* It said goodbye: leaving is no violation. The reaper judges
		 * the exit status of a spawned one. */
		if (r->accepted)
			drop_now(r);
		else {
			wl_link_close(r->link);
			r->link = NULL;
			set_state(r, RS_KILLED);
		}
		return;
	}
	kill_process(r, "DISCONNECT", msg);
}

static void
random_token(char out[33])
{
	unsigned char b[16];

	if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
		/* Not secret without getrandom, but still unique enough to
		 * tell incarnations apart. */
		for (size_t i = 0; i < sizeof(b); i++)
			b[i] = (unsigned char)(rand() & 0xff);
	}
	for (size_t i = 0; i < sizeof(b); i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* Builds the child's environment: ours, the program's, then ours again
 * for the WALLAROO_* variables, which the topology cannot override.
 * WALLAROO_SDK_* are settings of the SDKs inside the children (the engine
 * does not read them): they pass through from our environment, and the
 * program's `env` may set them. */
static char **
child_env(wl_runner *r)
{
	size_t n = 0, k = 0;
	char **env;

	while (environ[n])
		n++;
	env = calloc(n + r->cfg.program->envc + 10, sizeof(*env));
	if (env == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (!wl_topology_env_is_engines(environ[i]))
			env[k++] = strdup(environ[i]);
	/* The topology refuses the engine's names in `env`. */
	for (size_t i = 0; i < r->cfg.program->envc; i++)
		env[k++] = strdup(r->cfg.program->env[i]);
	if (asprintf(&env[k++], "WALLAROO_ENGINE_ADDR=%s", r->url) < 0 ||
	    asprintf(&env[k++], "WALLAROO_TOKEN=%s", r->token) < 0 ||
	    asprintf(&env[k++], "WALLAROO_PROGRAM=%s", r->cfg.program->name) < 0 ||
	    asprintf(&env[k++], "WALLAROO_INSTANCE=%u", r->cfg.instance) < 0 ||
	    asprintf(&env[k++], "WALLAROO_MAX_MESSAGE_BYTES=%u",
	    r->cfg.limits->message_max_bytes) < 0)
		return NULL;
	if (r->role != WL_SLOT_RUNNER &&
	    (asprintf(&env[k++], "WALLAROO_ROLE=%s", r->kind) < 0 ||
	    asprintf(&env[k++], "WALLAROO_CONNECTOR=%s", r->cfg.connector) < 0))
		return NULL;
	env[k] = NULL;
	return env;
}

static void
free_env(char **env)
{
	if (env == NULL)
		return;
	for (size_t i = 0; env[i]; i++)
		free(env[i]);
	free(env);
}

static void child_cb(struct ev_loop *loop, ev_child *w, int revents);
static void schedule_restart(wl_runner *r);

/* What a child that could not start writes to the engine, then errno. */
enum { EXEC_CHDIR = 1, EXEC_EXEC = 2 };

/* In the child, after chdir or exec failed: tells the engine what and
 * errno (write is async-signal-safe). */
static void
child_failed(int fd, int what)
{
	int why[2] = { what, errno };

	if (fd >= 0 && write(fd, why, sizeof(why)) < 0) {
		/* The engine has the exit status to go by. */
	}
}

/*
 * Waits for the child just forked to exec (the pipe closes empty) or to
 * report why it could not (logged as SUP-EXEC: its exit status alone,
 * 126 or 127, does not say that a path is wrong). The wait is the time a
 * fork and exec take, on the loop: spawns are rare.
 */
static void
exec_failure(wl_runner *r, int fd)
{
	int why[2];
	ssize_t n;

	do
		n = read(fd, why, sizeof(why));
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)sizeof(why))
		return;
	if (why[0] == EXEC_CHDIR)
		wl_log("SUP-EXEC", "%s %s: cannot change to its directory "
		    "%s: %s", r->kind, r->name, r->cfg.program->cwd,
		    strerror(why[1]));
	else
		wl_log("SUP-EXEC", "%s %s: cannot execute %s: %s", r->kind,
		    r->name, r->cfg.program->argv[0], strerror(why[1]));
}

/*
 * Moves the process that just became ready to real-time priority when its
 * program asks, or leaves it to the default (`auto`) and the engine is
 * permitted (prio.h says why). At ready, not at fork: start-up (an
 * interpreter importing its libraries can take seconds of CPU) gains
 * nothing from it and would look busy to the watch below. From the engine,
 * so that a refusal can be logged; a refusal is no failure: the program
 * runs at normal priority, said once per slot. Under `auto` without the
 * permission nothing is tried: the engine said so once at start
 * (say_priority in engine.c).
 */
static void
set_priority(wl_runner *r)
{
	unsigned moved = 0;

	r->realtime = false;
	if (r->cfg.program == NULL || r->pid <= 0 ||
	    !wl_prio_wanted(r->cfg.program->priority))
		return;
	if (wl_prio_realtime(r->pid, &moved) != WL_OK) {
		if (!r->rt_refused)
			wl_log("SUP-PRIORITY", "%s %s: cannot run at real-time "
			    "priority: %s (it needs root, CAP_SYS_NICE or an "
			    "RLIMIT_RTPRIO of 1 or more); runs at normal "
			    "priority", r->kind, r->name, strerror(errno));
		r->rt_refused = true;
		return;
	}
	r->realtime = true;
	wl_prio_watch_start(&r->rt_watch, r->pid, wl_clock_now());
}

/*
 * A real-time process that keeps a CPU busy starves every process of the
 * normal class on that CPU, the engine included: back to normal with it,
 * for the rest of its life. One that is calm gets the threads it started
 * since (they start normal: prio.h) moved as well.
 */
static void
watch_priority(wl_runner *r, ev_tstamp now)
{
	unsigned moved = 0;
	double share;

	if (!r->realtime || r->pid <= 0)
		return;
	switch (wl_prio_watch_check(&r->rt_watch, r->pid, now, &share)) {
	case WL_PRIO_WAIT:
		return;
	case WL_PRIO_CALM:
		/* A failure here is the process exiting: its exit is being
		 * handled. */
		if (wl_prio_realtime(r->pid, &moved) == WL_OK && moved > 0)
			wl_log("SUP-PRIORITY", "%s %s pid %d: %u thread(s) it "
			    "started since moved to real-time priority",
			    r->kind, r->name, (int)r->pid, moved);
		return;
	case WL_PRIO_BUSY:
		break;
	}
	r->realtime = false;
	if (wl_prio_normal(r->pid, &moved) != WL_OK)
		return; /* gone: its exit is being handled */
	wl_log("SUP-PRIORITY", "%s %s pid %d used %.0f%% of a CPU over %.1f s: "
	    "back to normal priority (%u thread(s)), so that it cannot starve "
	    "the engine", r->kind, r->name, (int)r->pid, share * 100.0,
	    WL_PRIO_WINDOW_S, moved);
}

static void
spawn(wl_runner *r)
{
	static const wl_link_hooks hooks = { link_recv, link_event };
	char **env;
	pid_t pid;
	int ep[2];

	ev_timer_stop(r->loop, &r->linger);
	r->generation++;
	random_token(r->token);
	snprintf(r->url, sizeof(r->url), "ipc://%s/%s-%u.%u.sock",
	    r->cfg.sockdir, r->cfg.program->name, r->cfg.instance,
	    r->generation);
	if (wl_link_listen(&r->link, r->loop, r->url,
	    r->cfg.limits->message_max_bytes, &hooks, r) != WL_OK) {
		r->fails++;
		schedule_restart(r);
		return;
	}
	env = child_env(r);
	if (env == NULL) {
		wl_log("SUP-ERROR", "%s %s: out of memory building its "
		    "environment", r->kind, r->name);
		wl_link_close(r->link);
		r->link = NULL;
		r->fails++;
		schedule_restart(r);
		return;
	}
	/* The child reports a failed chdir or exec through this pipe; a
	 * successful exec closes it (O_CLOEXEC) with nothing written. */
	if (pipe2(ep, O_CLOEXEC) != 0)
		ep[0] = ep[1] = -1;
	pid = fork();
	if (pid == 0) {
		/* The child: only async-signal-safe calls until exec. Dying
		 * with the engine keeps no orphan runner serving nobody. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(STDERR_FILENO, STDOUT_FILENO);
		if (r->cfg.program->cwd && chdir(r->cfg.program->cwd) != 0) {
			child_failed(ep[1], EXEC_CHDIR);
			_exit(126);
		}
		environ = env;
		execvp(r->cfg.program->argv[0], r->cfg.program->argv);
		child_failed(ep[1], EXEC_EXEC);
		_exit(127);
	}
	free_env(env);
	if (ep[1] >= 0)
		close(ep[1]);
	if (pid < 0) {
		wl_log("SUP-ERROR", "%s %s: fork: %s", r->kind, r->name,
		    strerror(errno));
		if (ep[0] >= 0)
			close(ep[0]);
		wl_link_close(r->link);
		r->link = NULL;
		r->fails++;
		schedule_restart(r);
		return;
	}
	r->pid = pid;
	r->realtime = false;
	r->ever_ready = false;
	r->said_goodbye = false;
	r->ping_sent = 0;
	r->inflight = 0;
	r->inflight_head = 0;
	r->why[0] = '\0';
	ev_child_init(&r->child, child_cb, pid, 0);
	r->child.data = r;
	ev_child_start(r->loop, &r->child);
	set_state(r, RS_STARTING);
	wl_log("SUP-SPAWN", "%s %s pid %d: %s (incarnation %u)", r->kind,
	    r->name, (int)pid, r->cfg.program->argv[0], r->generation);
	if (ep[0] >= 0) {
		exec_failure(r, ep[0]);
		close(ep[0]);
	}
}

static void
backoff_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	wl_runner *r = w->data;

	(void)loop;
	(void)revents;
	if (r->stop_requested) {
		set_state(r, RS_STOPPED);
		return;
	}
	spawn(r);
}

static void
schedule_restart(wl_runner *r)
{
	double ms = r->cfg.limits->restart_backoff_ms;

	set_state(r, RS_IDLE);
	if (r->stop_requested) {
		set_state(r, RS_STOPPED);
		return;
	}
	if (r->fails >= MAX_FAILS_BEFORE_READY && !r->ever_ready) {
		if (r->role == WL_SLOT_RUNNER)
			wl_log("SUP-GIVEUP", "runner %s failed %u times in a row "
			    "without becoming ready; check its argv and that it "
			    "registers every step the topology assigns to it",
			    r->name, r->fails);
		else
			wl_log("SUP-GIVEUP", "%s %s failed %u times in a row "
			    "without connecting; check its argv and its log above",
			    r->kind, r->name, r->fails);
		r->hooks.fatal(r->arg, r);
		return;
	}
	for (uint32_t i = 1; i < r->fails && ms < r->cfg.limits->restart_backoff_max_ms; i++)
		ms *= 2;
	if (ms > r->cfg.limits->restart_backoff_max_ms)
		ms = r->cfg.limits->restart_backoff_max_ms;
	if (r->fails == 0)
		ms = 0;
	wl_log("SUP-RESTART", "%s %s restarts in %.0f ms (failure %u in a row)",
	    r->kind, r->name, ms, r->fails);
	ev_timer_set(&r->backoff, ms / 1000.0, 0.);
	ev_timer_start(r->loop, &r->backoff);
}

static void
child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
	wl_runner *r = w->data;
	int st = w->rstatus;
	bool was_ready = r->state == RS_READY || r->state == RS_KILLED;
	bool stopping = r->state == RS_STOPPING || r->stop_requested;

	bool finished = r->role != WL_SLOT_RUNNER && r->said_goodbye &&
	    WIFEXITED(st) && WEXITSTATUS(st) == 0 && r->why[0] == '\0';

	(void)revents;
	ev_child_stop(loop, w);
	ev_timer_stop(loop, &r->linger);
	if (WIFEXITED(st))
		wl_log(stopping || finished ? "SUP-EXIT" : "SUP-CRASH",
		    "%s %s pid %d exited with status %d%s%s", r->kind, r->name,
		    (int)r->pid, WEXITSTATUS(st), r->why[0] ? " after: " : "",
		    r->why);
	else
		wl_log(stopping ? "SUP-EXIT" : "SUP-CRASH",
		    "%s %s pid %d was killed by signal %d%s%s", r->kind, r->name,
		    (int)r->pid, WTERMSIG(st), r->why[0] ? " after: " : "",
		    r->why);
	wl_link_close(r->link);
	r->link = NULL;
	r->pid = 0;
	r->inflight = 0;
	free_caps(r);
	(void)was_ready;
	r->hooks.down(r->arg, r);
	if (finished && !stopping)
		finished = r->hooks.ended != NULL && r->hooks.ended(r->arg, r);
	if (stopping || finished) {
		set_state(r, RS_STOPPED);
		return;
	}
	/* A crash counts against the slot only while it makes no progress:
	 * one good reply resets the count (see on_frame). */
	r->fails++;
	schedule_restart(r);
}

wl_err
wl_runner_new(wl_runner **out, struct ev_loop *loop,
    const wl_runner_config *cfg, const wl_runner_hooks *hooks, void *arg)
{
	wl_runner *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return WL_ERR_NOMEM;
	r->loop = loop;
	r->cfg = *cfg;
	r->hooks = *hooks;
	r->arg = arg;
	r->role = cfg->role ? cfg->role : WL_SLOT_RUNNER;
	r->kind = r->role == WL_SLOT_SOURCE ? "source" :
	    r->role == WL_SLOT_SINK ? "sink" : "runner";
	r->prefix = r->role == WL_SLOT_RUNNER ? "RUN" : "CONN";
	r->accepted = cfg->program == NULL;
	if (r->role == WL_SLOT_RUNNER)
		snprintf(r->name, sizeof(r->name), "%s/%u", cfg->program->name,
		    cfg->instance);
	else
		snprintf(r->name, sizeof(r->name), "%s/%u", cfg->connector,
		    cfg->instance);
	if (r->accepted)
		snprintf(r->token, sizeof(r->token), "%s", cfg->token);
	ev_timer_init(&r->backoff, backoff_cb, 0., 0.);
	r->backoff.data = r;
	ev_timer_init(&r->linger, linger_cb, 0., 0.);
	r->linger.data = r;
	r->state = RS_IDLE;
	*out = r;
	return WL_OK;
}

void
wl_runner_start(wl_runner *r)
{
	static const wl_link_hooks hooks = { link_recv, link_event };

	if (!r->accepted) {
		spawn(r);
		return;
	}
	snprintf(r->url, sizeof(r->url), "%s", r->cfg.listen_url);
	if (wl_link_listen(&r->link, r->loop, r->url,
	    r->cfg.limits->message_max_bytes, &hooks, r) != WL_OK) {
		wl_log("CONN-ERROR", "%s %s: cannot listen on %s (see the line "
		    "above)", r->kind, r->name, r->url);
		set_state(r, RS_STOPPED);
		r->hooks.fatal(r->arg, r);
		return;
	}
	r->generation++;
	set_state(r, RS_STARTING);
	wl_log("CONN-LISTEN", "%s %s: waiting for a connector on %s", r->kind,
	    r->name, r->url);
}

wl_err
wl_runner_send(wl_runner *r, nng_msg *m)
{
	if (r->state != RS_READY || r->link == NULL) {
		nng_msg_free(m);
		return WL_ERR_STATE;
	}
	return wl_link_send(r->link, m);
}

bool
wl_runner_has_capability(const wl_runner *r, const char *cap)
{
	for (size_t i = 0; i < r->ncaps; i++)
		if (strcmp(r->caps[i], cap) == 0)
			return true;
	return false;
}

wl_err
wl_runner_send_batch(wl_runner *r, nng_msg *m)
{
	if (r->state != RS_READY || r->inflight >= MAX_TRACKED) {
		nng_msg_free(m);
		return WL_ERR_STATE;
	}
	r->sent_at[(r->inflight_head + r->inflight) % MAX_TRACKED] =
	    wl_clock_now();
	r->inflight++;
	return wl_link_send(r->link, m);
}

void
wl_runner_tick(wl_runner *r, ev_tstamp now)
{
	const wl_limits *lim = r->cfg.limits;
	char msg[160];

	watch_priority(r, now);
	switch (r->state) {
	case RS_STARTING:
	case RS_ASSIGNING:
		if (r->accepted && (r->peer_up_at == 0 ||
		    now - r->peer_up_at <= lim->heartbeat_timeout_ms / 1000.0))
			break; /* waiting for a connector is no hang */
		if (now - r->state_since > lim->heartbeat_timeout_ms / 1000.0) {
			snprintf(msg, sizeof(msg), "no %s within %u ms",
			    r->state == RS_STARTING ? "hello" : "ready",
			    lim->heartbeat_timeout_ms);
			kill_process(r, "HUNG", msg);
		}
		break;
	case RS_READY:
		if (r->inflight > 0) {
			ev_tstamp t = r->sent_at[r->inflight_head];
			if (r->last_reply > t)
				t = r->last_reply;
			if (now - t > lim->batch_deadline_ms / 1000.0) {
				snprintf(msg, sizeof(msg), "no reply to a batch "
				    "within batch_deadline_ms=%u",
				    lim->batch_deadline_ms);
				kill_process(r, "HUNG", msg);
			}
			break;
		}
		if (r->ping_sent > 0) {
			if (now - r->ping_sent > lim->heartbeat_timeout_ms / 1000.0) {
				snprintf(msg, sizeof(msg), "no heartbeat answer "
				    "within heartbeat_timeout_ms=%u",
				    lim->heartbeat_timeout_ms);
				kill_process(r, "HUNG", msg);
			}
		} else if (now - r->last_rx > lim->heartbeat_ms / 1000.0) {
			Wallaroo__V1__Frame f = WALLAROO__V1__FRAME__INIT;
			Wallaroo__V1__Heartbeat hb = WALLAROO__V1__HEARTBEAT__INIT;
			hb.seq = ++r->ping_seq;
			hb.reply = true;
			f.body_case = WALLAROO__V1__FRAME__BODY_HEARTBEAT;
			f.heartbeat = &hb;
			send_frame(r, &f);
			r->ping_sent = now;
		}
		break;
	case RS_STOPPING:
		if (r->accepted && now > r->stop_deadline) {
			drop_now(r);
			break;
		}
		if (now > r->stop_deadline && r->pid > 0) {
			wl_log("SUP-KILL", "runner %s pid %d did not exit after "
			    "goodbye; killing it", r->name, (int)r->pid);
			kill(r->pid, SIGKILL);
			r->stop_deadline = now + 3600;
		}
		break;
	default:
		break;
	}
}

void
wl_runner_stop(wl_runner *r, ev_tstamp grace)
{
	Wallaroo__V1__Frame f = WALLAROO__V1__FRAME__INIT;
	Wallaroo__V1__Goodbye g = WALLAROO__V1__GOODBYE__INIT;

	r->stop_requested = true;
	switch (r->state) {
	case RS_IDLE:
		ev_timer_stop(r->loop, &r->backoff);
		set_state(r, RS_STOPPED);
		break;
	case RS_STARTING:
		if (r->accepted && r->peer_up_at == 0) {
			set_state(r, RS_STOPPED);
			break;
		}
		/* fall through */
	case RS_ASSIGNING:
	case RS_READY:
		g.reason = "engine shutting down";
		f.body_case = WALLAROO__V1__FRAME__BODY_GOODBYE;
		f.goodbye = &g;
		send_frame(r, &f);
		set_state(r, RS_STOPPING);
		r->stop_deadline = wl_clock_now() + grace;
		break;
	default:
		/* KILLED: the reaper sees stop_requested and stops. */
		break;
	}
}

void
wl_runner_free(wl_runner *r)
{
	if (r == NULL)
		return;
	if (r->pid > 0) {
		kill(r->pid, SIGKILL);
		ev_child_stop(r->loop, &r->child);
	}
	ev_timer_stop(r->loop, &r->backoff);
	ev_timer_stop(r->loop, &r->linger);
	wl_link_close(r->link);
	free_caps(r);
	free(r);
}
