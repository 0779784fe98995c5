/*
 * topology_test.c -- tests of topology.c, printing TAP.
 *
 * Usage: topology_test [DIR]
 *
 * DIR holds good/ and bad/ (normally tests/topology). Without an argument
 * it is $srcdir/tests/topology, or tests/topology from the current
 * directory.
 *
 * - Each bad/X.yaml starts with one "# expect: line:col: message" line per
 *   problem; loading it must fail and print exactly those lines, prefixed
 *   with the file name, in that order. Adding a case is adding a file.
 * - Each good/X.yaml must load, give a consistent plan, and print exactly
 *   good/X.print (with @FILE@ and @DIR@ standing for the file as given and
 *   its resolved directory). The good_cases table checks fields of the plan
 *   that printing does not show plainly.
 * - inline_cases go through wl_topology_parse().
 * - A fuzz loop feeds truncations and byte changes of the good files; run
 *   under ASan and UBSan, it shows that no input crashes the loader.
 */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "topology.h"

static int ntests;
static int nfailed;

static void ok(bool cond, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
ok(bool cond, const char *fmt, ...)
{
	va_list ap;

	printf("%sok %d - ", cond ? "" : "not ", ++ntests);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	if (!cond) {
		nfailed++;
	}
}

/* A TAP diagnostic: every line of it starts with "# ". */
static void
note(const char *fmt, ...)
{
	char    buf[8192];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
		printf("# %s\n", line);
	}
}

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

static char *
read_all(const char *path, size_t *lenp)
{
	FILE  *f = fopen(path, "rb");
	char  *buf;
	long   n;

	if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 ||
	    fseek(f, 0, SEEK_SET) != 0 || (buf = malloc((size_t) n + 1)) ==
	        NULL) {
		if (f != NULL) {
			fclose(f);
		}
		return (NULL);
	}
	if (fread(buf, 1, (size_t) n, f) != (size_t) n) {
		free(buf);
		fclose(f);
		return (NULL);
	}
	buf[n] = '\0';
	fclose(f);
	if (lenp != NULL) {
		*lenp = (size_t) n;
	}
	return (buf);
}

static int
str_cmp(const void *a, const void *b)
{
	return (strcmp(*(char *const *) a, *(char *const *) b));
}

/* The sorted names in `dir` ending in `suffix`. */
static char **
list_dir(const char *dir, const char *suffix, size_t *np)
{
	DIR           *d = opendir(dir);
	struct dirent *e;
	char         **v = NULL;
	size_t         n = 0;

	*np = 0;
	if (d == NULL) {
		return (NULL);
	}
	while ((e = readdir(d)) != NULL) {
		size_t l = strlen(e->d_name);
		if (l > strlen(suffix) &&
		    strcmp(e->d_name + l - strlen(suffix), suffix) == 0) {
			v      = realloc(v, (n + 1) * sizeof(*v));
			v[n++] = strdup(e->d_name);
		}
	}
	closedir(d);
	qsort(v, n, sizeof(*v), str_cmp);
	*np = n;
	return (v);
}

static void
free_list(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(v[i]);
	}
	free(v);
}

static char *
path_join(const char *a, const char *b)
{
	char *s = malloc(strlen(a) + strlen(b) + 2);
	sprintf(s, "%s/%s", a, b);
	return (s);
}

/* Replaces every `from` in `s` by `to`; returns a new string. */
static char *
replace_all(const char *s, const char *from, const char *to)
{
	size_t n  = 0;
	size_t fl = strlen(from);
	char  *out;
	char  *o;

	for (const char *p = s; (p = strstr(p, from)) != NULL; p += fl) {
		n++;
	}
	out = malloc(strlen(s) + n * strlen(to) + 1);
	o   = out;
	while (*s) {
		if (fl > 0 && strncmp(s, from, fl) == 0) {
			o += sprintf(o, "%s", to);
			s += fl;
		} else {
			*o++ = *s++;
		}
	}
	*o = '\0';
	return (out);
}

static const char *
node_name(const wl_topology *t, wl_node_type type, int idx)
{
	switch (type) {
	case WL_NODE_SOURCE:
		return (t->sources[idx].name);
	case WL_NODE_STEP:
		return (t->steps[idx].name);
	case WL_NODE_SINK:
		return (t->sinks[idx].name);
	}
	return ("?");
}

/*
 * Checks what every plan must satisfy, whatever the file: indices in range,
 * steps after their inputs, every source and step consumed, defaults set.
 * Returns NULL or a description of the first violation.
 */
static const char *
plan_problem(const wl_topology *t)
{
	static char why[256];

	if (t->application == NULL || t->file == NULL || t->dir == NULL) {
		return ("application, file or dir is NULL");
	}
	if (t->partitions < 1 || t->partitions > 65536) {
		return ("partitions out of range");
	}
	if (t->nsources == 0 || t->nsinks == 0) {
		return ("no source or no sink");
	}
	for (size_t i = 0; i < t->nedges; i++) {
		const wl_edge *e = &t->edges[i];
		size_t nfrom = e->from_type == WL_NODE_SOURCE ? t->nsources
		    : e->from_type == WL_NODE_STEP ? t->nsteps : 0;
		size_t nto   = e->to_type == WL_NODE_STEP ? t->nsteps
		    : e->to_type == WL_NODE_SINK ? t->nsinks : 0;
		if (e->from < 0 || (size_t) e->from >= nfrom || e->to < 0 ||
		    (size_t) e->to >= nto) {
			snprintf(why, sizeof(why), "edge %zu out of range", i);
			return (why);
		}
		if (e->from_type == WL_NODE_STEP && e->to_type == WL_NODE_STEP &&
		    e->from >= e->to) {
			snprintf(why, sizeof(why), "step '%s' comes before its "
			    "input '%s'", t->steps[e->to].name,
			    t->steps[e->from].name);
			return (why);
		}
	}
	{
		/* One count per source, then per step. */
		size_t *fed = calloc(t->nsources + t->nsteps + 1, sizeof(size_t));
		size_t  i;

		for (i = 0; i < t->nedges; i++) {
			fed[(t->edges[i].from_type == WL_NODE_STEP ? t->nsources
			                                           : 0) +
			    (size_t) t->edges[i].from]++;
		}
		for (i = 0; i < t->nsources + t->nsteps && fed[i] > 0; i++) {
		}
		free(fed);
		if (i < t->nsources + t->nsteps) {
			snprintf(why, sizeof(why), "'%s' feeds nothing",
			    i < t->nsources ? t->sources[i].name
			                    : t->steps[i - t->nsources].name);
			return (why);
		}
	}
	for (size_t i = 0; i < t->nsteps; i++) {
		const wl_step *s = &t->steps[i];
		if (s->program >= (int) t->nprograms ||
		    (s->program < 0 && (s->kind != WL_STEP_KEY_BY ||
		                           s->key_length == 0)) ||
		    (s->program >= 0 && s->function == NULL) ||
		    ((s->kind == WL_STEP_STATE) != (s->state_name != NULL))) {
			snprintf(why, sizeof(why), "step '%s' is inconsistent",
			    s->name);
			return (why);
		}
	}
	for (size_t i = 0; i < t->nprograms; i++) {
		const wl_program *p = &t->programs[i];
		if (p->argc == 0 || p->argv[p->argc] != NULL || p->cwd == NULL ||
		    (p->env != NULL && p->env[p->envc] != NULL) ||
		    p->instances < 1 || p->instances > 256) {
			snprintf(why, sizeof(why), "program '%s' is inconsistent",
			    p->name);
			return (why);
		}
	}
	for (size_t i = 0; i < t->nsources; i++) {
		const wl_io *s = &t->sources[i];
		if (s->type == WL_IO_CONNECTOR) {
			if ((s->program >= 0) == (s->url != NULL) ||
			    (s->url != NULL) != (s->token_env != NULL) ||
			    s->program >= (int) t->nprograms ||
			    s->path != NULL || s->host != NULL) {
				snprintf(why, sizeof(why), "connector source "
				    "'%s' is inconsistent", s->name);
				return (why);
			}
			continue;
		}
		if ((s->type == WL_IO_FILE) != (s->path != NULL) ||
		    (s->type == WL_IO_TCP) != (s->host != NULL) ||
		    s->max_frame_bytes == 0 ||
		    s->max_frame_bytes > t->limits.message_max_bytes ||
		    s->after >= (int) t->nsources || s->after == (int) i) {
			snprintf(why, sizeof(why), "source '%s' is inconsistent",
			    s->name);
			return (why);
		}
	}
	return (NULL);
}

/* "type:name>type:name, ..." for every edge, in plan order. */
static void
edges_str(const wl_topology *t, char *buf, size_t size)
{
	static const char *const types[] = { "source", "step", "sink" };
	size_t off = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < t->nedges && off < size; i++) {
		const wl_edge *e = &t->edges[i];
		off += (size_t) snprintf(buf + off, size - off, "%s%s:%s>%s:%s",
		    i ? ", " : "", types[e->from_type],
		    node_name(t, e->from_type, e->from), types[e->to_type],
		    node_name(t, e->to_type, e->to));
	}
}

static void
steps_str(const wl_topology *t, char *buf, size_t size)
{
	size_t off = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < t->nsteps && off < size; i++) {
		off += (size_t) snprintf(buf + off, size - off, "%s%s",
		    i ? "," : "", t->steps[i].name);
	}
}

/* ------------------------------------------------------------------ */
/* Bad files                                                           */
/* ------------------------------------------------------------------ */

/* The "# expect: " lines at the top of `text`, each prefixed by `name:`. */
static char *
expected_errors(const char *text, const char *name)
{
	static const char tag[] = "# expect: ";
	size_t size = 1;
	char  *out;

	for (const char *p = text; strncmp(p, tag, strlen(tag)) == 0;) {
		const char *nl = strchr(p, '\n');
		size += strlen(name) + 2 + (nl ? (size_t) (nl - p) : strlen(p));
		if (nl == NULL) {
			break;
		}
		p = nl + 1;
	}
	out    = malloc(size);
	out[0] = '\0';
	for (const char *p = text; strncmp(p, tag, strlen(tag)) == 0;) {
		const char *nl = strchr(p, '\n');
		size_t      l  = nl ? (size_t) (nl - p) : strlen(p);
		strcat(out, name);
		strcat(out, ":");
		strncat(out, p + strlen(tag), l - strlen(tag));
		strcat(out, "\n");
		if (nl == NULL) {
			break;
		}
		p = nl + 1;
	}
	return (out);
}

static void
test_bad_file(const char *dir, const char *name)
{
	char        *path = path_join(dir, name);
	char        *text = read_all(path, NULL);
	char        *want;
	char        *got  = NULL;
	size_t       glen = 0;
	FILE        *errs = open_memstream(&got, &glen);
	wl_topology *t    = NULL;
	wl_err       rv;

	if (text == NULL) {
		ok(false, "bad/%s: cannot read it", name);
		fclose(errs);
		free(got);
		free(path);
		return;
	}
	want = expected_errors(text, path);
	rv   = wl_topology_load(&t, path, errs);
	fclose(errs);
	ok(rv == WL_ERR_CONFIG && t == NULL && want[0] != '\0' &&
	        strcmp(got, want) == 0,
	    "bad/%s is rejected with exactly its expected errors", name);
	if (rv != WL_ERR_CONFIG || strcmp(got, want) != 0) {
		note("returned %s\nexpected:\n%sgot:\n%s", wl_strerror(rv), want,
		    got);
	}
	wl_topology_free(t);
	free(want);
	free(got);
	free(text);
	free(path);
}

/* ------------------------------------------------------------------ */
/* Good files                                                          */
/* ------------------------------------------------------------------ */

/* Extra checks on one plan; they return NULL or what is wrong. */
typedef const char *(*plan_check)(const wl_topology *t);

static bool
str_eq(const char *a, const char *b)
{
	return (a == b || (a != NULL && b != NULL && strcmp(a, b) == 0));
}

/* Whether `path` is `t->dir` + "/" + `rel`. */
static bool
in_dir(const wl_topology *t, const char *path, const char *rel)
{
	size_t dl = strlen(t->dir);

	return (path != NULL && strncmp(path, t->dir, dl) == 0 &&
	    path[dl] == '/' && strcmp(path + dl + 1, rel) == 0);
}

static const char *
check_market_spread(const wl_topology *t)
{
	const wl_limits  *l = &t->limits;
	const wl_program *p = &t->programs[0];
	int orders = wl_topology_find_source(t, "orders");
	int nbbo0  = wl_topology_find_source(t, "initial-nbbo");
	int nbbo   = wl_topology_find_source(t, "nbbo");
	int ko     = wl_topology_find_step(t, "key-orders");
	int kn     = wl_topology_find_step(t, "key-nbbo");
	int co     = wl_topology_find_step(t, "check-order");
	int mon    = wl_topology_find_sink(t, "monitor");
	int alerts = wl_topology_find_sink(t, "alerts");

	if (orders < 0 || nbbo0 < 0 || nbbo < 0 || ko < 0 || kn < 0 ||
	    co < 0 || mon < 0 || alerts < 0 ||
	    wl_topology_find_step(t, "orders") != -1 ||
	    wl_topology_find_sink(t, "nope") != -1) {
		return ("wl_topology_find_* disagree with the file");
	}
	if (l->batch_max_events != 256 || l->batch_max_bytes != 1048576 ||
	    l->inflight_batches != 4 || l->queue_max_bytes != 8589934592ull ||
	    l->message_max_bytes != 4194304 || l->heartbeat_ms != 1000 ||
	    l->heartbeat_timeout_ms != 5000 || l->batch_deadline_ms != 30000 ||
	    l->restart_backoff_ms != 100 || l->restart_backoff_max_ms != 5000) {
		return ("limits are not the given ones plus defaults");
	}
	if (t->nprograms != 1 || !str_eq(p->name, "py") || p->argc != 2 ||
	    !str_eq(p->argv[0], "python3") ||
	    !str_eq(p->argv[1], "market_spread.py") || p->argv[2] != NULL ||
	    p->instances != 2 || p->envc != 2 ||
	    !str_eq(p->env[0], "PYTHONPATH=../../sdk-python") ||
	    !str_eq(p->env[1], "DEBUG=1") || p->env[2] != NULL ||
	    !in_dir(t, p->cwd, "app")) {
		return ("program py is not as written");
	}
	if (!in_dir(t, t->sources[orders].path, "data/orders.bin") ||
	    t->sources[orders].type != WL_IO_FILE ||
	    t->sources[orders].framing != WL_FRAMING_LENGTH ||
	    t->sources[orders].max_frame_bytes != 4194304 / 2 ||
	    t->sources[orders].after != nbbo0) {
		return ("source orders is not as written");
	}
	if (!str_eq(t->sources[nbbo0].path, "/var/data/nbbo.bin") ||
	    t->sources[nbbo0].framing != WL_FRAMING_LINE ||
	    t->sources[nbbo0].max_frame_bytes != 4096 ||
	    t->sources[nbbo0].after != -1) {
		return ("source initial-nbbo is not as written");
	}
	if (t->sources[nbbo].type != WL_IO_TCP ||
	    !str_eq(t->sources[nbbo].host, "127.0.0.1") ||
	    t->sources[nbbo].port != 7001 || t->sources[nbbo].path != NULL) {
		return ("source nbbo is not as written");
	}
	if (t->steps[ko].kind != WL_STEP_KEY_BY || t->steps[ko].program != -1 ||
	    t->steps[ko].key_offset != 12 || t->steps[ko].key_length != 4 ||
	    t->steps[ko].function != NULL) {
		return ("step key-orders is not an engine key_by");
	}
	if (t->steps[kn].kind != WL_STEP_KEY_BY || t->steps[kn].program != 0 ||
	    !str_eq(t->steps[kn].function, "nbbo_symbol")) {
		return ("step key-nbbo is not a runner key_by");
	}
	if (t->steps[co].kind != WL_STEP_STATE || t->steps[co].program != 0 ||
	    !str_eq(t->steps[co].function, "check-order") ||
	    !str_eq(t->steps[co].state_name, "symbol-data")) {
		return ("step check-order is not as written");
	}
	if (!in_dir(t, t->sinks[alerts].path, "out/alerts.bin") ||
	    t->sinks[mon].type != WL_IO_TCP ||
	    !str_eq(t->sinks[mon].host, "::1") || t->sinks[mon].port != 7002 ||
	    t->sinks[mon].framing != WL_FRAMING_LINE) {
		return ("sinks are not as written");
	}
	return (NULL);
}

static const char *
check_minimal(const wl_topology *t)
{
	const wl_limits *l = &t->limits;

	if (l->batch_max_events != 1024 || l->batch_max_bytes != 1048576 ||
	    l->inflight_batches != 4 || l->queue_max_bytes != 1048576 ||
	    l->message_max_bytes != 16777216 || l->heartbeat_ms != 1000 ||
	    l->heartbeat_timeout_ms != 5000 || l->batch_deadline_ms != 30000 ||
	    l->restart_backoff_ms != 100 || l->restart_backoff_max_ms != 5000) {
		return ("limits are not the defaults");
	}
	if (t->nprograms != 0 || t->nsteps != 0 ||
	    t->sources[0].framing != WL_FRAMING_LENGTH ||
	    t->sources[0].max_frame_bytes != 8388608 ||
	    t->sources[0].after != -1 ||
	    !in_dir(t, t->sources[0].path, "in.bin") ||
	    !in_dir(t, t->sinks[0].path, "out/copy.bin")) {
		return ("defaults or paths are wrong");
	}
	return (NULL);
}

static const char *
check_word_count(const wl_topology *t)
{
	const wl_program *p = &t->programs[0];
	int               k = wl_topology_find_step(t, "key-words");

	if (p->instances != 4 || !str_eq(p->cwd, "/opt/wc") || p->envc != 0 ||
	    !str_eq(p->argv[1], "--mode=count words")) {
		return ("program wc is not as written");
	}
	if (k < 0 || !str_eq(t->steps[k].function, "key-words") ||
	    t->steps[k].program != 0) {
		return ("a runner key_by's function is not its name");
	}
	if (t->sources[0].port != 0 || !str_eq(t->sources[0].host, "0.0.0.0") ||
	    t->sources[0].max_frame_bytes != 65536 ||
	    !str_eq(t->sinks[0].host, "localhost") || t->sinks[0].port != 9000) {
		return ("tcp addresses are wrong");
	}
	if (t->limits.heartbeat_ms != 200 ||
	    t->limits.restart_backoff_max_ms != 10) {
		return ("flow-style limits were not read");
	}
	return (NULL);
}

typedef struct {
	const char *file;        /* under good/ */
	const char *application;
	uint32_t    partitions;
	const char *steps;       /* step names in plan order */
	const char *edges;       /* as edges_str() writes them */
	plan_check  check;
} good_case;

static const good_case good_cases[] = {
	{ "market-spread.yaml", "market-spread", 512,
	    "key-orders,key-nbbo,check-order",
	    "source:orders>step:key-orders, source:initial-nbbo>step:key-nbbo, "
	    "source:nbbo>step:key-nbbo, step:key-orders>step:check-order, "
	    "step:key-nbbo>step:check-order, step:check-order>sink:alerts, "
	    "step:check-order>sink:monitor, source:nbbo>sink:monitor",
	    check_market_spread },
	{ "minimal.yaml", "copy", 1024, "", "source:in>sink:out",
	    check_minimal },
	{ "word-count.yaml", "word-count", 64, "split,key-words,count",
	    "source:lines>step:split, step:split>step:key-words, "
	    "step:key-words>step:count, step:count>sink:counts",
	    check_word_count },
	{ "diamond.yaml", "diamond", 1024, "left,right,join",
	    "source:main>step:left, source:main>step:right, "
	    "step:left>step:join, step:right>step:join, source:prime>step:join, "
	    "step:join>sink:joined, step:left>sink:raw, source:main>sink:raw",
	    NULL },
};

#define NGOOD (sizeof(good_cases) / sizeof(good_cases[0]))

static void
test_good_case(const char *dir, const good_case *gc)
{
	char        *path = path_join(dir, gc->file);
	wl_topology *t    = NULL;
	wl_err       rv   = wl_topology_load(&t, path, stderr);
	const char  *why  = NULL;
	char         steps[512];
	char         edges[2048];
	struct stat  sd;
	struct stat  st;

	if (rv != WL_OK) {
		why = wl_strerror(rv);
	} else if ((why = plan_problem(t)) != NULL) {
		/* reported below */
	} else if (!str_eq(t->application, gc->application) ||
	    t->partitions != gc->partitions) {
		why = "application or partitions differ";
	} else if (!str_eq(t->file, path) || t->dir[0] != '/' ||
	    stat(dir, &sd) != 0 || stat(t->dir, &st) != 0 ||
	    sd.st_dev != st.st_dev || sd.st_ino != st.st_ino) {
		why = "file is not as given, or dir is not its absolute directory";
	} else {
		steps_str(t, steps, sizeof(steps));
		edges_str(t, edges, sizeof(edges));
		if (strcmp(steps, gc->steps) != 0) {
			note("steps: %s", steps);
			why = "steps are not in the expected topological order";
		} else if (strcmp(edges, gc->edges) != 0) {
			note("edges: %s", edges);
			why = "edges differ";
		} else if (gc->check != NULL) {
			why = gc->check(t);
		}
	}
	ok(why == NULL, "good/%s gives the expected plan", gc->file);
	if (why != NULL) {
		note("%s", why);
	}
	wl_topology_free(t);
	free(path);
}

/* Every good file prints exactly as its .print file says. */
static void
test_good_print(const char *dir, const char *name)
{
	char        *path = path_join(dir, name);
	char        *want_path;
	char        *want = NULL;
	char        *got  = NULL;
	char        *g1   = NULL;
	char        *g2   = NULL;
	size_t       glen = 0;
	wl_topology *t    = NULL;
	wl_err       rv   = wl_topology_load(&t, path, stderr);
	FILE        *f;

	want_path = malloc(strlen(path) + 8);
	strcpy(want_path, path);
	strcpy(want_path + strlen(want_path) - strlen(".yaml"), ".print");
	want = read_all(want_path, NULL);
	if (rv == WL_OK) {
		f = open_memstream(&got, &glen);
		wl_topology_print(t, f);
		fclose(f);
		/* The file as given first: it may contain the directory. */
		g1 = replace_all(got, t->file, "@FILE@");
		g2 = replace_all(g1, t->dir, "@DIR@");
	}
	ok(rv == WL_OK && want != NULL && strcmp(g2, want) == 0,
	    "good/%s loads and prints as %s", name,
	    strrchr(want_path, '/') + 1);
	if (rv != WL_OK || want == NULL || strcmp(g2, want) != 0) {
		note("returned %s; got:\n%s", wl_strerror(rv), g2 ? g2 : "");
	}
	wl_topology_free(t);
	free(g1);
	free(g2);
	free(got);
	free(want);
	free(want_path);
	free(path);
}

/* ------------------------------------------------------------------ */
/* Inline cases                                                        */
/* ------------------------------------------------------------------ */

#define HEAD "application: app\n"
#define SRC \
	"sources:\n" \
	"  in:\n" \
	"    type: file\n" \
	"    path: in.bin\n"
#define SINK \
	"sinks:\n" \
	"  out:\n" \
	"    type: file\n" \
	"    path: out.bin\n" \
	"    inputs: [in]\n"

static const char *
check_inline_paths(const wl_topology *t)
{
	if (!str_eq(t->dir, "/srv/app") ||
	    !str_eq(t->sources[0].path, "/srv/app/in.bin") ||
	    !str_eq(t->sources[1].path, "/srv/app/data/b.bin") ||
	    !str_eq(t->sources[2].path, "/abs/c.bin") ||
	    !str_eq(t->sinks[0].path, "/srv/app/out.bin") ||
	    !str_eq(t->programs[0].cwd, "/srv/app") ||
	    !str_eq(t->programs[1].cwd, "/srv/app/sub") ||
	    !str_eq(t->programs[2].cwd, "/srv/app")) {
		return ("relative paths are not joined to the parse directory");
	}
	return (NULL);
}

static const char *
check_inline_tags(const wl_topology *t)
{
	if (t->partitions != 8 || !str_eq(t->application, "7")) {
		return ("core tags were not honoured");
	}
	return (NULL);
}

static const char *
check_inline_after_chain(const wl_topology *t)
{
	if (t->sources[0].after != 1 || t->sources[1].after != 2 ||
	    t->sources[2].after != -1) {
		return ("after links are wrong");
	}
	return (NULL);
}

static const char *
check_inline_ipv6(const wl_topology *t)
{
	if (!str_eq(t->sources[0].host, "::1") || t->sources[0].port != 65535) {
		return ("IPv6 host:port was not split");
	}
	return (NULL);
}

typedef struct {
	const char *desc;
	const char *text;
	size_t      len;    /* 0: strlen(text) */
	const char *errs;   /* exact error output, or NULL if it must load */
	plan_check  check;
} inline_case;

static const inline_case inline_cases[] = {
	{ "the smallest topology loads", HEAD SRC SINK, 0, NULL, NULL },
	{ "relative paths join the parse directory",
	    HEAD
	    "programs:\n"
	    "  a: {argv: [a]}\n"
	    "  b: {argv: [b], cwd: ./sub}\n"
	    "  c: {argv: [c], cwd: .}\n"
	    "sources:\n"
	    "  in: {type: file, path: ./in.bin}\n"
	    "  b: {type: file, path: data/b.bin}\n"
	    "  c: {type: file, path: /abs/c.bin}\n"
	    "sinks:\n"
	    "  out: {type: file, path: out.bin, inputs: [in, b, c]}\n",
	    0, NULL, check_inline_paths },
	{ "a whole document in flow style loads",
	    "{application: app, sources: {in: {type: tcp, listen: 'h:1'}},"
	    " sinks: {out: {type: tcp, connect: 'h:2', inputs: [in]}}}",
	    0, NULL, NULL },
	{ "core tags are honoured",
	    "application: !!str 7\npartitions: !!int 8\n" SRC SINK, 0, NULL,
	    check_inline_tags },
	{ "a UTF-8 byte order mark is accepted",
	    "\xef\xbb\xbf" HEAD SRC SINK, 0, NULL, NULL },
	{ "after chains are resolved",
	    HEAD
	    "sources:\n"
	    "  a: {type: file, path: a, after: b}\n"
	    "  b: {type: file, path: b, after: c}\n"
	    "  c: {type: file, path: c}\n"
	    "sinks:\n"
	    "  out: {type: file, path: o, inputs: [a, b, c]}\n",
	    0, NULL, check_inline_after_chain },
	{ "an IPv6 listen address is split",
	    HEAD
	    "sources:\n"
	    "  in: {type: tcp, listen: '[::1]:65535'}\n" SINK,
	    0, NULL, check_inline_ipv6 },
	{ "!!str makes an integer a string",
	    HEAD "partitions: !!str 8\n" SRC SINK, 0,
	    "inline.yaml:2:13: partitions must be an integer, not a string\n",
	    NULL },
	{ "the text length is honoured, not a NUL",
	    HEAD SRC SINK "sinks: {}\n", sizeof(HEAD SRC SINK) - 1, NULL,
	    NULL },
	{ "a NUL byte in the text is an error",
	    "application: a\0pp\n" SRC SINK, sizeof("application: a\0pp\n" SRC
	    SINK) - 1,
	    "inline.yaml:1:15: control characters are not allowed (byte "
	    "0x00)\n", NULL },
	{ "a tab in indentation is a syntax error",
	    HEAD SRC "\tx: 1\n" SINK, 0,
	    "inline.yaml:6:1: found a tab character that violates indentation "
	    "(while scanning a plain scalar at line 5, column 11)\n",
	    NULL },
	{ "control characters in names are escaped in messages",
	    HEAD SRC SINK "steps:\n  \"a\\nb\": {}\n", 0,
	    "inline.yaml:12:3: step name 'a\\x0ab' may only contain letters, "
	    "digits, '_', '.' and '-'\n"
	    "inline.yaml:12:3: step 'a\\x0ab' is missing required key 'kind'\n"
	    "inline.yaml:12:3: step 'a\\x0ab' is missing required key "
	    "'inputs'\n",
	    NULL },
	{ "non-ASCII names are rejected",
	    "application: caf\xc3\xa9\n" SRC SINK, 0,
	    "inline.yaml:1:14: application 'caf\xc3\xa9' may only contain "
	    "letters, digits, '_', '.' and '-'\n", NULL },
	{ "problems come out in file order, all of them",
	    "sinks:\n"
	    "  out: {type: pipe, path: o, inputs: [nope]}\n"
	    "partitions: 0\n"
	    "sources:\n"
	    "  in: {type: file}\n",
	    0,
	    "inline.yaml:1:1: missing required key 'application'\n"
	    "inline.yaml:2:15: sink 'out' type 'pipe' is not one of: file, tcp, connector\n"
	    "inline.yaml:2:39: sink 'out' input 'nope' is not a source or step\n"
	    "inline.yaml:3:13: partitions must be between 1 and 65536, not 0\n"
	    "inline.yaml:5:3: source 'in' is missing required key 'path'\n",
	    NULL },
	{ "a scalar document is not a map", "hello\n", 0,
	    "inline.yaml:1:1: the top level must be a map, not a string\n",
	    NULL },
	{ "whitespace only is empty", "  \n\n  # nothing\n", 0,
	    "inline.yaml:1:1: file is empty\n", NULL },
	{ "an empty string is empty", "", 0,
	    "inline.yaml:1:1: file is empty\n", NULL },
	{ "a map key that is a map is rejected",
	    HEAD SRC SINK "? {a: b}\n: c\n", 0,
	    "inline.yaml:11:3: a map key must be a string, not a map\n", NULL },
	{ "a limit set below its default partner is checked",
	    HEAD SRC SINK "limits: {heartbeat_timeout_ms: 1000, heartbeat_ms: "
	    "1000}\n",
	    0,
	    "inline.yaml:11:32: limits.heartbeat_timeout_ms (1000) must be "
	    "greater than limits.heartbeat_ms (1000)\n",
	    NULL },
};

#define NINLINE (sizeof(inline_cases) / sizeof(inline_cases[0]))

static void
test_inline(const inline_case *ic)
{
	size_t       len  = ic->len ? ic->len : strlen(ic->text);
	char        *got  = NULL;
	size_t       glen = 0;
	FILE        *errs = open_memstream(&got, &glen);
	wl_topology *t    = NULL;
	wl_err       rv;
	const char  *why  = NULL;

	rv = wl_topology_parse(&t, "inline.yaml", "/srv/app", ic->text, len,
	    errs);
	fclose(errs);
	if (ic->errs == NULL) {
		if (rv != WL_OK) {
			why = "it did not load";
		} else if ((why = plan_problem(t)) == NULL && ic->check != NULL) {
			why = ic->check(t);
		}
	} else if (rv != WL_ERR_CONFIG || t != NULL) {
		why = "it did not fail with WL_ERR_CONFIG";
	} else if (strcmp(got, ic->errs) != 0) {
		why = "the errors differ";
	}
	ok(why == NULL, "inline: %s", ic->desc);
	if (why != NULL) {
		note("%s (%s)\nexpected:\n%sgot:\n%s", why, wl_strerror(rv),
		    ic->errs ? ic->errs : "", got);
	}
	wl_topology_free(t);
	free(got);
}

/* ------------------------------------------------------------------ */
/* Other behaviour                                                     */
/* ------------------------------------------------------------------ */

static void
test_strerror(void)
{
	bool good = true;

	for (int e = WL_OK; e <= WL_ERR_STATE; e++) {
		const char *s = wl_strerror((wl_err) e);
		good = good && s != NULL && *s != '\0' &&
		    strcmp(s, "unknown error") != 0;
		for (int f = WL_OK; f < e; f++) {
			good = good && strcmp(s, wl_strerror((wl_err) f)) != 0;
		}
	}
	good = good && strcmp(wl_strerror((wl_err) 999), "unknown error") == 0;
	ok(good, "wl_strerror describes every code differently");
}

static void
test_missing_file(void)
{
	char        *got  = NULL;
	size_t       glen = 0;
	FILE        *errs = open_memstream(&got, &glen);
	wl_topology *t    = NULL;
	wl_err       rv;

	rv = wl_topology_load(&t, "/nonexistent/topo.yaml", errs);
	fclose(errs);
	ok(rv == WL_ERR_IO && t == NULL &&
	        strcmp(got, "/nonexistent/topo.yaml: No such file or "
	                    "directory\n") == 0,
	    "a missing file is an I/O error naming the file");
	free(got);
}

static void
test_null_errs(void)
{
	wl_topology *t = NULL;
	wl_err       rv;

	wl_topology_free(NULL);
	rv = wl_topology_parse(&t, NULL, NULL, "- x\n", 4, NULL);
	ok(rv == WL_ERR_CONFIG && t == NULL,
	    "a NULL error stream, name and dir are allowed, and free(NULL)");
}

/*
 * A chain of `n` steps, listed last-first so that ordering has the most
 * work to do. With `closed`, s0 takes s1 as input instead of the source,
 * so s0 and s1 feed each other.
 */
static char *
chain_text(int n, bool closed, size_t *lenp)
{
	char  *text = malloc((size_t) n * 64 + 4096);
	size_t off  = 0;

	off += (size_t) sprintf(text + off,
	    HEAD "programs: {p: {argv: [p]}}\n" SRC "steps:\n");
	for (int i = n - 1; i > 0; i--) {
		off += (size_t) sprintf(text + off,
		    "  s%d: {kind: stateless, program: p, inputs: [s%d]}\n", i,
		    i - 1);
	}
	off += (size_t) sprintf(text + off,
	    "  s0: {kind: stateless, program: p, inputs: [%s]}\n"
	    "sinks: {out: {type: file, path: o, inputs: [s%d]}}\n",
	    closed ? "s1" : "in", n - 1);
	*lenp = off;
	return (text);
}

/* Nothing may recurse once per step: a long chain must not overflow. */
static void
test_long_chain(void)
{
	enum { N = 20000 };
	size_t       len;
	char        *text = chain_text(N, false, &len);
	char        *got  = NULL;
	size_t       glen = 0;
	FILE        *errs;
	wl_topology *t    = NULL;
	wl_err       rv;
	bool         good;

	rv   = wl_topology_parse(&t, "chain.yaml", "/", text, len, stderr);
	good = rv == WL_OK && t->nsteps == N && plan_problem(t) == NULL &&
	    strcmp(t->steps[0].name, "s0") == 0;
	wl_topology_free(t);
	free(text);

	t    = NULL;
	text = chain_text(N, true, &len);
	errs = open_memstream(&got, &glen);
	rv   = wl_topology_parse(&t, "chain.yaml", "/", text, len, errs);
	fclose(errs);
	good = good && rv == WL_ERR_CONFIG &&
	    strcmp(got, "chain.yaml:4:3: source 'in' feeds nothing: no step or "
	                "sink lists it in inputs\n"
	                "chain.yaml:20006:3: step 's1' is part of a cycle: "
	                "s1 -> s0 -> s1\n") == 0;
	if (!good) {
		note("got:\n%s", got ? got : "");
	}
	ok(good, "a chain of %d steps loads, and closed into a cycle fails", N);
	free(got);
	free(text);
}

/*
 * Whether `out` is well formed for a run that returned `rv`: nothing on
 * success, else lines "name:line:col: message".
 */
static bool
output_ok(wl_err rv, const char *out, const char *name)
{
	size_t nl = strlen(name);

	if (rv == WL_OK) {
		return (*out == '\0');
	}
	if (rv != WL_ERR_CONFIG || *out == '\0') {
		return (false);
	}
	for (const char *p = out; *p;) {
		const char *end = strchr(p, '\n');
		int         line;
		int         col;
		int         n = 0;

		if (end == NULL || strncmp(p, name, nl) != 0 || p[nl] != ':' ||
		    sscanf(p + nl + 1, "%d:%d: %n", &line, &col, &n) != 2 ||
		    n == 0 || line < 1 || col < 1 || p + nl + 1 + n >= end) {
			return (false);
		}
		p = end + 1;
	}
	return (true);
}

static unsigned long fuzz_seed = 12345;

static unsigned
fuzz_rand(void)
{
	/* A fixed LCG: the same cases on every run and every platform. */
	fuzz_seed = fuzz_seed * 6364136223846793005ul + 1442695040888963407ul;
	return ((unsigned) (fuzz_seed >> 33));
}

static int
fuzz_one(const char *text, size_t len, char *why, size_t whysize)
{
	char        *got  = NULL;
	size_t       glen = 0;
	FILE        *errs = open_memstream(&got, &glen);
	wl_topology *t    = NULL;
	wl_err       rv;
	int          bad  = 0;

	rv = wl_topology_parse(&t, "fuzz.yaml", "/srv", text, len, errs);
	fclose(errs);
	if (!output_ok(rv, got, "fuzz.yaml")) {
		snprintf(why, whysize, "bad output (%s): %.300s", wl_strerror(rv),
		    got);
		bad = 1;
	} else if (rv == WL_OK) {
		const char *p = plan_problem(t);
		FILE       *null = fopen("/dev/null", "w");
		wl_topology_print(t, null);
		fclose(null);
		if (p != NULL) {
			snprintf(why, whysize, "inconsistent plan: %s", p);
			bad = 1;
		}
	}
	wl_topology_free(t);
	free(got);
	return (bad);
}

static void
test_fuzz(const char *dir, char **names, size_t n)
{
	/* Bytes that change YAML structure the most, plus a non-UTF-8 one;
	 * the random rounds below cover the rest. */
	static const char repl[] = { '\0', ' ', ':', '-', '[', '{', '\n', '&',
		'\xff' };
	size_t runs = 0;
	int    bad  = 0;
	char   why[512] = "";

	for (size_t i = 0; i < n; i++) {
		char  *path = path_join(dir, names[i]);
		size_t len  = 0;
		char  *text = read_all(path, &len);
		char  *buf  = malloc(len + 1);

		free(path);
		if (text == NULL) {
			bad++;
			continue;
		}
		for (size_t l = 0; l <= len && bad == 0; l++) {
			memcpy(buf, text, l);
			bad += fuzz_one(buf, l, why, sizeof(why));
			runs++;
		}
		for (size_t p = 0; p < len && bad == 0; p++) {
			for (size_t r = 0; r <= sizeof(repl) && bad == 0; r++) {
				memcpy(buf, text, len);
				buf[p] = r < sizeof(repl) ? repl[r] : (char) (text[p] ^ 0x20);
				bad += fuzz_one(buf, len, why, sizeof(why));
				runs++;
			}
		}
		for (int k = 0; k < 1000 && bad == 0; k++) {
			int changes = 1 + (int) (fuzz_rand() % 4);
			memcpy(buf, text, len);
			for (int c = 0; c < changes && len > 0; c++) {
				buf[fuzz_rand() % len] = (char) (fuzz_rand() & 0xff);
			}
			bad += fuzz_one(buf, len, why, sizeof(why));
			runs++;
		}
		free(buf);
		free(text);
	}
	ok(bad == 0, "fuzz: %zu truncated or altered files load or fail "
	    "cleanly", runs);
	if (bad != 0) {
		note("%s", why);
	}
}

/* ------------------------------------------------------------------ */

static char *
test_dir(int argc, char **argv)
{
	const char *srcdir = getenv("srcdir");
	char       *d;
	char       *good;
	DIR        *probe;

	if (argc > 1) {
		return (strdup(argv[1]));
	}
	if (srcdir == NULL) {
		return (strdup("tests/topology"));
	}
	/* $srcdir may be the project root or the test data directory. */
	d     = path_join(srcdir, "tests/topology");
	good  = path_join(d, "good");
	probe = opendir(good);
	free(good);
	if (probe != NULL) {
		closedir(probe);
		return (d);
	}
	free(d);
	return (strdup(srcdir));
}

int
main(int argc, char **argv)
{
	char  *dir     = test_dir(argc, argv);
	char  *baddir  = path_join(dir, "bad");
	char  *gooddir = path_join(dir, "good");
	size_t nbad;
	size_t ngood;
	char **bad  = list_dir(baddir, ".yaml", &nbad);
	char **good = list_dir(gooddir, ".yaml", &ngood);

	if (nbad == 0 || ngood == 0) {
		printf("1..1\nnot ok 1 - no test files in %s/bad and %s/good\n",
		    dir, dir);
		return (1);
	}
	printf("1..%zu\n", nbad + ngood + NGOOD + NINLINE + 5);

	test_strerror();
	for (size_t i = 0; i < nbad; i++) {
		test_bad_file(baddir, bad[i]);
	}
	for (size_t i = 0; i < ngood; i++) {
		test_good_print(gooddir, good[i]);
	}
	for (size_t i = 0; i < NGOOD; i++) {
		test_good_case(gooddir, &good_cases[i]);
	}
	for (size_t i = 0; i < NINLINE; i++) {
		test_inline(&inline_cases[i]);
	}
	test_missing_file();
	test_null_errs();
	test_long_chain();
	test_fuzz(gooddir, good, ngood);

	free_list(bad, nbad);
	free_list(good, ngood);
	free(baddir);
	free(gooddir);
	free(dir);
	return (nfailed == 0 ? 0 : 1);
}
