/*
 * topology.c -- reads and validates the topology file into a wl_topology.
 *
 * Loading happens in three passes over the text, so that one run reports
 * every problem in the file and not just the first:
 *
 *  1. yamltree.c builds a tree of positioned nodes from the text,
 *     rejecting anchors, aliases and tags we have no type for. Map keys
 *     are then checked once, globally, for duplicates and for keys that
 *     are not strings.
 *  2. Each section is validated field by field into a draft wl_topology,
 *     keeping the tree nodes that later checks need for their positions.
 *     A field that is wrong is reported and left at its default, so the
 *     checks after it still run.
 *  3. Names are resolved across sections (inputs, programs, `after`), and
 *     the graph is checked: unique names, dangling references, nodes that
 *     feed nothing, cycles. Only if nothing was reported are the steps put
 *     in topological order and the edges built.
 *
 * Problems are collected, sorted by position and printed at the end, as
 * "file:line:col: message", so the output reads top to bottom like the file.
 * Nothing here recurses on the input's shape, so no input can exhaust the
 * stack.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>

#include "addr.h"
#include "limit.h"
#include "topology.h"
#include "yamltree.h"

/* The characters allowed in names, as told to the user. */
#define NAME_CHARS "letters, digits, '_', '.' and '-'"

/*
 * Largest topology file read. Real ones are a few KB; without a cap a path
 * like /dev/zero or a log file named by mistake would be read until memory
 * runs out.
 */
#define MAX_FILE_BYTES (16u << 20)

typedef struct {
	int line;
	int col;
	size_t seq;   /* report order, to keep the sort stable */
	char *msg;
} diag;

/* A node of the graph by type and index, as an input names it. */
typedef struct {
	wl_node_type type;
	int idx;
} ref;

/* What the graph checks need about a source, step or sink. */
typedef struct {
	const wl_yamlnode *name;    /* the key node: positions, and the name */
	const wl_yamlnode *inputs;  /* steps and sinks: inputs, if valid */
	const wl_yamlnode *after;   /* sources: the `after` value, if valid */
	const wl_yamlnode *program; /* steps, connectors: the `program` value */
	const wl_yamlnode *state;   /* steps: the `state` value, if valid */
	const wl_yamlnode *path;    /* file sources and sinks: `path`, if valid */
	ref *in;                    /* resolved inputs */
	size_t nin;
	int nconsumers;
	bool dupname;               /* its name is taken by an earlier node */
} aux;

/*
 * Names sorted for lookup, ties in file order, so the first entry of a run
 * of equal names is the first definition. Sorting keeps a topology with
 * thousands of steps as quick to check as a small one.
 */
typedef struct {
	const wl_yamlnode *name;
	ref                r;
} entry;

typedef struct {
	entry *v;
	size_t n;
} name_index;

typedef struct {
	const char *name;    /* the file name used in messages */
	wl_topology *t;
	diag *diags;
	size_t ndiags;
	size_t diagcap;
	bool nomem;
	name_index names;    /* sources, steps and sinks */
	name_index programs; /* r.idx is the program's index */
	aux *srcaux;
	aux *stepaux;
	aux *sinkaux;
	bool badinputs;      /* some inputs list is missing, invalid, or names
	                        nothing: who feeds what is then unknown */
	bool badnames;       /* sources, steps or sinks is not a map, so a
	                        name not found may well be defined there */
	bool badprograms;    /* the same for programs */
	int *order;          /* steps in topological order, by draft index */
	size_t norder;
} ctx;

static const char *const type_names[] = { "file", "tcp", "connector", NULL };
static const int type_values[] = { WL_IO_FILE, WL_IO_TCP, WL_IO_CONNECTOR };
static const char *const framing_names[] = { "length", "line", NULL };
static const int framing_values[] = { WL_FRAMING_LENGTH, WL_FRAMING_LINE };
static const char *const kind_names[] = { "stateless", "key_by", "state",
	NULL };
static const int kind_values[] = { WL_STEP_STATELESS, WL_STEP_KEY_BY,
	WL_STEP_STATE };

/* ------------------------------------------------------------------ */
/* Reporting                                                           */
/* ------------------------------------------------------------------ */

static void report_at(ctx *c, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void report(ctx *c, const wl_yamlnode *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
vreport_at(ctx *c, int line, int col, const char *fmt, va_list ap)
{
	char  buf[1024];
	char *msg;
	char *p;
	int   n;

	if (c->ndiags == c->diagcap) {
		size_t cap = c->diagcap ? c->diagcap * 2 : 16;
		diag  *d   = realloc(c->diags, cap * sizeof(*d));
		if (d == NULL) {
			c->nomem = true;
			return;
		}
		c->diags   = d;
		c->diagcap = cap;
	}
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	if (n < 0) {
		buf[0] = '\0';
	}

	/*
	 * Names and values come from the file and may hold control
	 * characters; escaping them keeps the promise of one line per
	 * problem, which tools reading our output rely on.
	 */
	if ((msg = malloc(strlen(buf) * 4 + 1)) == NULL) {
		c->nomem = true;
		return;
	}
	p = msg;
	for (const unsigned char *s = (const unsigned char *) buf; *s; s++) {
		if (*s < 0x20 || *s == 0x7f) {
			p += sprintf(p, "\\x%02x", *s);
		} else {
			*p++ = (char) *s;
		}
	}
	*p = '\0';

	c->diags[c->ndiags].line = line;
	c->diags[c->ndiags].col  = col;
	c->diags[c->ndiags].seq  = c->ndiags;
	c->diags[c->ndiags].msg  = msg;
	c->ndiags++;
}

static void
report_at(ctx *c, int line, int col, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vreport_at(c, line, col, fmt, ap);
	va_end(ap);
}

static void
report(ctx *c, const wl_yamlnode *n, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vreport_at(c, n->line, n->col, fmt, ap);
	va_end(ap);
}

/* Problems the YAML tree finds join ours, to be sorted with them. */
static void
tree_report(void *arg, int line, int col, const char *msg)
{
	report_at(arg, line, col, "%s", msg);
}

static int
diag_cmp(const void *a, const void *b)
{
	const diag *x = a;
	const diag *y = b;

	if (x->line != y->line) {
		return (x->line < y->line ? -1 : 1);
	}
	if (x->col != y->col) {
		return (x->col < y->col ? -1 : 1);
	}
	return (x->seq < y->seq ? -1 : x->seq > y->seq);
}

static void
print_diags(ctx *c, FILE *errs)
{
	qsort(c->diags, c->ndiags, sizeof(diag), diag_cmp);
	if (errs == NULL) {
		return;
	}
	for (size_t i = 0; i < c->ndiags; i++) {
		fprintf(errs, "%s:%d:%d: %s\n", c->name, c->diags[i].line,
		    c->diags[i].col, c->diags[i].msg);
	}
}

static char *
dupstr(ctx *c, const char *s)
{
	char *d;

	if (s == NULL) {
		return (NULL);
	}
	if ((d = strdup(s)) == NULL) {
		c->nomem = true;
	}
	return (d);
}

static char *
dupmem(ctx *c, const char *s, size_t len)
{
	char *d;

	if ((d = malloc(len + 1)) == NULL) {
		c->nomem = true;
		return (NULL);
	}
	memcpy(d, s, len);
	d[len] = '\0';
	return (d);
}

static void *
zalloc(ctx *c, size_t n, size_t size)
{
	void *p;

	/* calloc(0, ...) may return NULL, which is not a failure here. */
	if ((p = calloc(n ? n : 1, size)) == NULL) {
		c->nomem = true;
	}
	return (p);
}

/* ------------------------------------------------------------------ */
/* Name indexes                                                        */
/* ------------------------------------------------------------------ */

static int
entry_cmp(const void *a, const void *b)
{
	const entry *x = a;
	const entry *y = b;
	int          d = wl_yamltree_strcmp(x->name, y->name);

	if (d != 0) {
		return (d);
	}
	return (wl_yamltree_poscmp(x->name, y->name));
}

static bool
index_init(ctx *c, name_index *ix, size_t cap)
{
	ix->n = 0;
	return ((ix->v = zalloc(c, cap, sizeof(entry))) != NULL);
}

/* The first definition of `name`, or NULL. */
static const entry *
index_find(const name_index *ix, const wl_yamlnode *name)
{
	size_t lo = 0;
	size_t hi = ix->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (wl_yamltree_strcmp(ix->v[mid].name, name) < 0) {
			lo = mid + 1;
		} else {
			hi = mid;
		}
	}
	if (lo < ix->n && wl_yamltree_strcmp(ix->v[lo].name, name) == 0) {
		return (&ix->v[lo]);
	}
	return (NULL);
}

/* ------------------------------------------------------------------ */
/* Pass 2: typed fields                                                */
/* ------------------------------------------------------------------ */

/* Reports keys of `map` not in `keys`; `where` is e.g. "in step 'x'". */
static void
check_keys(ctx *c, const wl_yamlnode *map, const char *const keys[],
    const char *where)
{
	for (size_t k = 0; k + 1 < map->nkids; k += 2) {
		const wl_yamlnode *kn = map->kids[k];
		size_t             i;

		if (kn->skip) {
			continue;
		}
		for (i = 0; keys[i] != NULL; i++) {
			if (kn->len == strlen(keys[i]) &&
			    strcmp(kn->str, keys[i]) == 0) {
				break;
			}
		}
		if (keys[i] == NULL) {
			report(c, kn, "unknown key '%s' %s", kn->str, where);
		}
	}
}

static void
missing(ctx *c, const wl_yamlnode *at, const char *owner, const char *key)
{
	if (owner == NULL) {
		report(c, at, "missing required key '%s'", key);
	} else {
		report(c, at, "%s is missing required key '%s'", owner, key);
	}
}

static bool
want(ctx *c, const wl_yamlnode *n, wl_yamltype type, const char *label)
{
	if (n->type == WL_YAML_BAD) {
		return (false);
	}
	if (n->type != type) {
		report(c, n, "%s must be %s, not %s", label,
		    type == WL_YAML_MAP ? "a map" :
		    type == WL_YAML_SEQ ? "a list" : "a string",
		    wl_yamltree_kind(n));
		return (false);
	}
	return (true);
}

/*
 * A string is any scalar but null: YAML would read `7001` as an integer,
 * but where we want a string, the text is what the user meant.
 */
static bool
get_str(ctx *c, const wl_yamlnode *n, const char *label, const char **out)
{
	if (n->type == WL_YAML_BAD) {
		return (false);
	}
	if (n->type != WL_YAML_SCALAR || wl_yamltree_is_null(n)) {
		report(c, n, "%s must be a string, not %s", label,
		    wl_yamltree_kind(n));
		return (false);
	}
	if (strlen(n->str) != n->len) {
		report(c, n, "%s must not contain NUL bytes", label);
		return (false);
	}
	*out = n->str;
	return (true);
}

static bool
get_nonempty(ctx *c, const wl_yamlnode *n, const char *label, const char **out)
{
	const char *s;

	if (!get_str(c, n, label, &s)) {
		return (false);
	}
	if (*s == '\0') {
		report(c, n, "%s is empty", label);
		return (false);
	}
	*out = s;
	return (true);
}

static bool
valid_name(const char *s)
{
	static const char ok[] = "abcdefghijklmnopqrstuvwxyz"
	                         "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-";

	return (*s != '\0' && strspn(s, ok) == strlen(s));
}

/* Checks a name; `label` is e.g. "source name". */
static bool
get_name(ctx *c, const wl_yamlnode *n, const char *label, const char **out)
{
	const char *s;

	if (!get_nonempty(c, n, label, &s)) {
		return (false);
	}
	if (!valid_name(s)) {
		report(c, n, "%s '%s' may only contain " NAME_CHARS, label, s);
		return (false);
	}
	*out = s;
	return (true);
}

static bool
get_uint(ctx *c, const wl_yamlnode *n, const char *label, uint64_t lo,
    uint64_t hi, uint64_t *out)
{
	uint64_t v = 0;
	bool     big = false;

	if (n->type == WL_YAML_BAD) {
		return (false);
	}
	if (n->type != WL_YAML_SCALAR || !n->plain || wl_yamltree_is_null(n)) {
		report(c, n, "%s must be an integer, not %s", label,
		    wl_yamltree_kind(n));
		return (false);
	}
	if (!wl_yamltree_is_decimal(n)) {
		report(c, n, "%s must be a plain decimal integer, not '%s'",
		    label, n->str);
		return (false);
	}
	if (n->str[0] != '-') {
		for (const char *s = n->str; *s; s++) {
			unsigned d = (unsigned) (*s - '0');
			if (v > (UINT64_MAX - d) / 10) {
				big = true;
				break;
			}
			v = v * 10 + d;
		}
	}
	if (n->str[0] == '-' || big || v < lo || v > hi) {
		report(c, n, "%s must be between %llu and %llu, not %s", label,
		    (unsigned long long) lo, (unsigned long long) hi, n->str);
		return (false);
	}
	*out = v;
	return (true);
}

static bool
get_enum(ctx *c, const wl_yamlnode *n, const char *label,
    const char *const names[], const int values[], int *out)
{
	const char *s;
	char        list[128] = "";

	if (!get_str(c, n, label, &s)) {
		return (false);
	}
	for (int i = 0; names[i] != NULL; i++) {
		if (strcmp(s, names[i]) == 0) {
			*out = values[i];
			return (true);
		}
	}
	for (int i = 0; names[i] != NULL; i++) {
		if (i > 0) {
			strcat(list, ", ");
		}
		strcat(list, names[i]);
	}
	report(c, n, "%s '%s' is not one of: %s", label, s, list);
	return (false);
}

/* auto, normal or realtime (wl_priority), for a program or the engine. */
static void
get_priority(ctx *c, const wl_yamlnode *v, const char *label,
    wl_priority *out)
{
	static const char *const prio_names[] = { "auto", "normal",
		"realtime", NULL };
	static const int prio_values[] = { WL_PRIORITY_AUTO,
		WL_PRIORITY_NORMAL, WL_PRIORITY_REALTIME };
	int e;

	if (get_enum(c, v, label, prio_names, prio_values, &e))
		*out = (wl_priority) e;
}

/* Joins a relative path to the topology file's directory. */
static char *
join_path(ctx *c, const char *dir, const char *p)
{
	size_t dl;
	char  *s;

	if (p[0] == '/') {
		return (dupstr(c, p));
	}
	while (p[0] == '.' && p[1] == '/') {
		p += 2;
		while (*p == '/') {
			p++;
		}
	}
	if (p[0] == '\0' || strcmp(p, ".") == 0) {
		return (dupstr(c, dir));
	}
	dl = strlen(dir);
	while (dl > 1 && dir[dl - 1] == '/') {
		dl--;
	}
	if ((s = malloc(dl + strlen(p) + 2)) == NULL) {
		c->nomem = true;
		return (NULL);
	}
	memcpy(s, dir, dl);
	s[dl] = '/';
	strcpy(s + dl + (dl != 1 || dir[0] != '/'), p);
	return (s);
}

/* A "host:port" scalar (addr.h); the host may not be empty. */
static bool
get_addr(ctx *c, const wl_yamlnode *n, const char *label, unsigned lo,
    wl_io *io)
{
	const char *s;
	const char *host;
	size_t      hl;
	uint16_t    port;

	if (!get_str(c, n, label, &s)) {
		return (false);
	}
	if (wl_addr_split(s, lo, &host, &hl, &port) != WL_OK || hl == 0) {
		report(c, n, "%s must be host:port with a port from %u to 65535, "
		    "not '%s'", label, lo, s);
		return (false);
	}
	io->host = dupmem(c, host, hl);
	io->port = port;
	return (true);
}

/* Entries of a section map that were not rejected as keys. */
static size_t
count_entries(const wl_yamlnode *map)
{
	size_t n = 0;

	for (size_t k = 0; k + 1 < map->nkids; k += 2) {
		n += !map->kids[k]->skip;
	}
	return (n);
}

static void
parse_limits(ctx *c, const wl_yamlnode *map)
{
	wl_limits         *l = &c->t->limits;
	const wl_yamlnode *kn;
	const wl_yamlnode *v;
	char               label[64];

	if (map == NULL || !want(c, map, WL_YAML_MAP, "limits")) {
		return;
	}
	for (size_t k = 0; k + 1 < map->nkids; k += 2) {
		const wl_limit_spec *ls;
		uint64_t             val;

		kn = map->kids[k];
		if (kn->skip) {
			continue;
		}
		if ((ls = wl_limit_find(kn->str)) == NULL) {
			report(c, kn, "unknown key '%s' in limits", kn->str);
			continue;
		}
		snprintf(label, sizeof(label), "limits.%s", ls->key);
		if (!get_uint(c, map->kids[k + 1], label, ls->lo, ls->hi, &val)) {
			continue;
		}
		wl_limit_set(l, ls, val);
	}

	/*
	 * The engine would declare a runner dead before its first missed
	 * heartbeat, or shrink the restart delay as it backs off.
	 */
	if ((v = wl_yamltree_find(map, "heartbeat_timeout_ms", &kn)) == NULL) {
		v = wl_yamltree_find(map, "heartbeat_ms", &kn);
	}
	if (v != NULL && l->heartbeat_timeout_ms <= l->heartbeat_ms) {
		report(c, v, "limits.heartbeat_timeout_ms (%u) must be greater "
		    "than limits.heartbeat_ms (%u)", l->heartbeat_timeout_ms,
		    l->heartbeat_ms);
	}
	if ((v = wl_yamltree_find(map, "restart_backoff_max_ms", &kn)) ==
	    NULL) {
		v = wl_yamltree_find(map, "restart_backoff_ms", &kn);
	}
	if (v != NULL && l->restart_backoff_max_ms < l->restart_backoff_ms) {
		report(c, v, "limits.restart_backoff_max_ms (%u) must not be "
		    "less than limits.restart_backoff_ms (%u)",
		    l->restart_backoff_max_ms, l->restart_backoff_ms);
	}
}

static void
parse_program(ctx *c, const wl_yamlnode *key, const wl_yamlnode *val,
    wl_program *p)
{
	static const char *const keys[] = { "argv", "instances", "env", "cwd",
		"priority", NULL };
	const wl_yamlnode *v;
	const char        *s;
	char               owner[160];
	char               where[170];
	char               label[200];
	uint64_t           u;

	p->name      = dupstr(c, key->str);
	p->instances = 1;
	(void) get_name(c, key, "program name", &s);
	snprintf(owner, sizeof(owner), "program '%s'", key->str);
	snprintf(where, sizeof(where), "in %s", owner);
	if (!want(c, val, WL_YAML_MAP, owner)) {
		return;
	}
	check_keys(c, val, keys, where);

	if ((v = wl_yamltree_find(val, "argv", NULL)) == NULL) {
		missing(c, key, owner, "argv");
	} else if (snprintf(label, sizeof(label), "%s argv", owner),
	    want(c, v, WL_YAML_SEQ, label)) {
		if (v->nkids == 0) {
			report(c, v, "%s argv must not be empty", owner);
		} else if ((p->argv = zalloc(c, v->nkids + 1,
		                sizeof(char *))) != NULL) {
			for (size_t i = 0; i < v->nkids; i++) {
				snprintf(label, sizeof(label), "%s argv[%zu]",
				    owner, i);
				if (i == 0 ? get_nonempty(c, v->kids[i], label, &s)
				           : get_str(c, v->kids[i], label, &s)) {
					p->argv[p->argc++] = dupstr(c, s);
				}
			}
		}
	}

	if ((v = wl_yamltree_find(val, "instances", NULL)) != NULL) {
		snprintf(label, sizeof(label), "%s instances", owner);
		if (get_uint(c, v, label, 1, 256, &u)) {
			p->instances = (uint32_t) u;
		}
	}

	if ((v = wl_yamltree_find(val, "priority", NULL)) != NULL) {
		snprintf(label, sizeof(label), "%s priority", owner);
		get_priority(c, v, label, &p->priority);
	}

	if ((v = wl_yamltree_find(val, "env", NULL)) != NULL) {
		snprintf(label, sizeof(label), "%s env", owner);
		if (want(c, v, WL_YAML_MAP, label) &&
		    (p->env = zalloc(c, v->nkids / 2 + 1, sizeof(char *))) !=
		        NULL) {
			for (size_t k = 0; k + 1 < v->nkids; k += 2) {
				const wl_yamlnode *en = v->kids[k];
				const char        *ev;
				char              *kv;

				if (en->skip) {
					continue;
				}
				if (en->len == 0 || strchr(en->str, '=') != NULL ||
				    strlen(en->str) != en->len) {
					report(c, en, "%s env name '%s' must be "
					    "non-empty and without '='", owner,
					    en->str);
					continue;
				}
				/* The engine sets the WALLAROO_* variables of a
				 * child; a topology that sets one would be ignored
				 * (or worse, obeyed), so it is refused. The SDKs'
				 * own settings, WALLAROO_SDK_*, pass. */
				if (wl_topology_env_is_engines(en->str)) {
					report(c, en, "%s env name '%s': the engine "
					    "sets WALLAROO_* variables itself (only "
					    "WALLAROO_SDK_* may be given)", owner,
					    en->str);
					continue;
				}
				snprintf(label, sizeof(label), "%s env '%s'", owner,
				    en->str);
				if (!get_str(c, v->kids[k + 1], label, &ev)) {
					continue;
				}
				if ((kv = malloc(en->len + strlen(ev) + 2)) ==
				    NULL) {
					c->nomem = true;
					continue;
				}
				sprintf(kv, "%s=%s", en->str, ev);
				p->env[p->envc++] = kv;
			}
		}
	}

	if ((v = wl_yamltree_find(val, "cwd", NULL)) != NULL) {
		snprintf(label, sizeof(label), "%s cwd", owner);
		if (get_nonempty(c, v, label, &s)) {
			p->cwd = join_path(c, c->t->dir, s);
		}
	}
	/* The plan has every default filled in, so consumers need no rule. */
	if (p->cwd == NULL) {
		p->cwd = dupstr(c, c->t->dir);
	}
}

static void
parse_inputs(ctx *c, const wl_yamlnode *val, const wl_yamlnode *key,
    const char *owner, aux *a)
{
	const wl_yamlnode *v;
	const char        *s;
	char               label[200];
	bool               ok = true;

	if ((v = wl_yamltree_find(val, "inputs", NULL)) == NULL) {
		missing(c, key, owner, "inputs");
		return;
	}
	snprintf(label, sizeof(label), "%s inputs", owner);
	if (!want(c, v, WL_YAML_SEQ, label)) {
		return;
	}
	if (v->nkids == 0) {
		report(c, v, "%s inputs must not be empty", owner);
		return;
	}
	snprintf(label, sizeof(label), "%s input", owner);
	for (size_t i = 0; i < v->nkids; i++) {
		ok = get_str(c, v->kids[i], label, &s) && ok;
	}
	if (ok) {
		a->inputs = v;
	}
}

/*
 * A connector is a program (spawned: `program`) or a process someone else
 * starts (accepted: `listen` URL plus `token_env`). The framing and file
 * keys make no sense for it: its events come in protocol frames.
 */
static void
parse_connector(ctx *c, const wl_yamlnode *key, const wl_yamlnode *val,
    bool source, wl_io *io, aux *a, const char *owner)
{
	static const char *const not_for[] = { "path", "connect", "framing",
		"max_frame_bytes", NULL };
	const wl_yamlnode *prog, *listen, *tok, *kn;
	const char        *s;
	char               label[200];

	for (size_t i = 0; not_for[i] != NULL; i++) {
		if (wl_yamltree_find(val, not_for[i], &kn) != NULL) {
			report(c, kn, "%s is a connector: '%s' does not apply "
			    "(the connector reads its own input)", owner,
			    not_for[i]);
		}
	}
	prog   = wl_yamltree_find(val, "program", NULL);
	listen = wl_yamltree_find(val, "listen", NULL);
	tok    = wl_yamltree_find(val, "token_env", NULL);
	if (prog != NULL && (listen != NULL || tok != NULL)) {
		report(c, key, "%s has both 'program' (the engine starts it) "
		    "and 'listen'/'token_env' (it connects by itself): choose "
		    "one", owner);
	} else if (prog == NULL && listen == NULL) {
		report(c, key, "%s needs 'program' (a program the engine "
		    "starts) or 'listen' and 'token_env' (an address where "
		    "the connector dials in)", owner);
	}
	if (prog != NULL) {
		snprintf(label, sizeof(label), "%s program", owner);
		if (get_str(c, prog, label, &s)) {
			a->program = prog;
		}
	}
	if (listen != NULL) {
		snprintf(label, sizeof(label), "%s listen", owner);
		if (get_nonempty(c, listen, label, &s)) {
			if (strncmp(s, "tcp://", 6) != 0 &&
			    strncmp(s, "ipc://", 6) != 0) {
				report(c, listen, "%s listen '%s' is not an nng "
				    "address (tcp://HOST:PORT or ipc:///PATH)",
				    owner, s);
			} else {
				io->url = dupstr(c, s);
			}
		}
		if (tok == NULL) {
			report(c, key, "%s listens on an address but has no "
			    "'token_env': the variable holding the token a "
			    "connector must present", owner);
		}
	}
	if (tok != NULL) {
		snprintf(label, sizeof(label), "%s token_env", owner);
		if (get_name(c, tok, label, &s)) {
			io->token_env = dupstr(c, s);
		}
	}
	/* A spawned connector may wait for another source to end, as a
	 * file source may: the engine starts it then. */
	if (source && (kn = wl_yamltree_find(val, "after", NULL)) != NULL) {
		snprintf(label, sizeof(label), "%s after", owner);
		if (get_str(c, kn, label, &s)) {
			a->after = kn;
		}
	}
	if (!source) {
		parse_inputs(c, val, key, owner, a);
	}
}

static void
parse_io(ctx *c, const wl_yamlnode *key, const wl_yamlnode *val, bool source,
    wl_io *io, aux *a)
{
	static const char *const src_keys[] = { "type", "path", "listen",
		"framing", "max_frame_bytes", "after", "program", "token_env",
		NULL };
	static const char *const sink_keys[] = { "type", "path", "connect",
		"framing", "inputs", "program", "listen", "token_env", NULL };
	const char        *what  = source ? "source" : "sink";
	const char        *akey  = source ? "listen" : "connect";
	const wl_yamlnode *v;
	const wl_yamlnode *kn;
	const char        *s;
	char               owner[160];
	char               where[170];
	char               label[200];
	int                e;
	uint64_t           u;

	io->name    = dupstr(c, key->str);
	io->framing = WL_FRAMING_LENGTH;
	io->after   = -1;
	io->program = -1;
	a->name     = key;
	snprintf(label, sizeof(label), "%s name", what);
	(void) get_name(c, key, label, &s);
	snprintf(owner, sizeof(owner), "%s '%s'", what, key->str);
	snprintf(where, sizeof(where), "in %s", owner);
	if (!want(c, val, WL_YAML_MAP, owner)) {
		return;
	}
	check_keys(c, val, source ? src_keys : sink_keys, where);

	if ((v = wl_yamltree_find(val, "type", NULL)) == NULL) {
		missing(c, key, owner, "type");
	} else {
		snprintf(label, sizeof(label), "%s type", owner);
		if (get_enum(c, v, label, type_names, type_values, &e)) {
			io->type = (wl_io_type) e;
		}
	}

	if (io->type == WL_IO_CONNECTOR) {
		parse_connector(c, key, val, source, io, a, owner);
		return;
	}
	if ((v = wl_yamltree_find(val, "program", &kn)) != NULL ||
	    (v = wl_yamltree_find(val, "token_env", &kn)) != NULL ||
	    (!source && (v = wl_yamltree_find(val, "listen", &kn)) != NULL)) {
		report(c, kn, "%s has '%s', which only connector %ss take",
		    owner, kn->str, what);
	}

	if ((v = wl_yamltree_find(val, "path", &kn)) != NULL) {
		snprintf(label, sizeof(label), "%s path", owner);
		if (io->type == WL_IO_TCP) {
			report(c, kn, "%s has 'path', which only file %ss take",
			    owner, what);
		} else if (get_nonempty(c, v, label, &s)) {
			io->path = join_path(c, c->t->dir, s);
			a->path = v;
		}
	} else if (io->type == WL_IO_FILE) {
		missing(c, key, owner, "path");
	}

	if ((v = wl_yamltree_find(val, akey, &kn)) != NULL) {
		snprintf(label, sizeof(label), "%s %s", owner, akey);
		if (io->type == WL_IO_FILE) {
			report(c, kn, "%s has '%s', which only tcp %ss take",
			    owner, akey, what);
		} else {
			/* Listening on port 0 picks a free port; dialing it
			 * cannot work. */
			(void) get_addr(c, v, label, source ? 0 : 1, io);
		}
	} else if (io->type == WL_IO_TCP) {
		missing(c, key, owner, akey);
	}

	if ((v = wl_yamltree_find(val, "framing", NULL)) != NULL) {
		snprintf(label, sizeof(label), "%s framing", owner);
		if (get_enum(c, v, label, framing_names, framing_values, &e)) {
			io->framing = (wl_framing) e;
		}
	}

	if (!source) {
		parse_inputs(c, val, key, owner, a);
		return;
	}

	/*
	 * A frame travels to the runners inside one message, so it can be
	 * no larger than a message; half leaves room for batching.
	 */
	io->max_frame_bytes = c->t->limits.message_max_bytes / 2;
	if ((v = wl_yamltree_find(val, "max_frame_bytes", NULL)) != NULL) {
		snprintf(label, sizeof(label), "%s max_frame_bytes", owner);
		if (get_uint(c, v, label, 1, c->t->limits.message_max_bytes,
		        &u)) {
			io->max_frame_bytes = (uint32_t) u;
		}
	}

	if ((v = wl_yamltree_find(val, "after", &kn)) != NULL) {
		snprintf(label, sizeof(label), "%s after", owner);
		if (io->type == WL_IO_TCP) {
			report(c, kn, "%s has 'after', which only file sources "
			    "take", owner);
		} else if (get_str(c, v, label, &s)) {
			a->after = v;
		}
	}
}

static void
parse_step(ctx *c, const wl_yamlnode *key, const wl_yamlnode *val,
    wl_step *st, aux *a)
{
	static const char *const keys[] = { "kind", "inputs", "key", "program",
		"function", "state", NULL };
	static const char *const key_keys[] = { "offset", "length", NULL };
	const wl_yamlnode *v;
	const wl_yamlnode *keymap;
	const wl_yamlnode *keykey = NULL;
	const wl_yamlnode *fn     = NULL;
	const wl_yamlnode *fnkey  = NULL;
	const wl_yamlnode *stkey  = NULL;
	const char        *s;
	char               owner[160];
	char               where[180];
	char               label[200];
	int                e;
	uint64_t           u;

	st->name    = dupstr(c, key->str);
	st->program = -1;
	a->name     = key;
	(void) get_name(c, key, "step name", &s);
	snprintf(owner, sizeof(owner), "step '%s'", key->str);
	snprintf(where, sizeof(where), "in %s", owner);
	if (!want(c, val, WL_YAML_MAP, owner)) {
		return;
	}
	check_keys(c, val, keys, where);

	if ((v = wl_yamltree_find(val, "kind", NULL)) == NULL) {
		missing(c, key, owner, "kind");
	} else {
		snprintf(label, sizeof(label), "%s kind", owner);
		if (get_enum(c, v, label, kind_names, kind_values, &e)) {
			st->kind = (wl_step_kind) e;
		}
	}

	parse_inputs(c, val, key, owner, a);

	if ((v = wl_yamltree_find(val, "program", NULL)) != NULL) {
		snprintf(label, sizeof(label), "%s program", owner);
		if (get_str(c, v, label, &s)) {
			a->program = v;
		}
	}

	if ((v = wl_yamltree_find(val, "function", &fnkey)) != NULL) {
		snprintf(label, sizeof(label), "%s function", owner);
		if (get_nonempty(c, v, label, &s)) {
			fn = v;
		}
	}

	if ((v = wl_yamltree_find(val, "state", &stkey)) != NULL) {
		snprintf(label, sizeof(label), "%s state", owner);
		if (get_name(c, v, label, &s)) {
			a->state = v;
		}
	}

	keymap = wl_yamltree_find(val, "key", &keykey);
	if (keymap != NULL && st->kind != WL_STEP_KEY_BY && st->kind != 0) {
		report(c, keykey, "%s has 'key', which only key_by steps take",
		    owner);
	} else if (keymap != NULL) {
		snprintf(label, sizeof(label), "%s key", owner);
		snprintf(where, sizeof(where), "in the key of %s", owner);
		if (want(c, keymap, WL_YAML_MAP, label)) {
			check_keys(c, keymap, key_keys, where);
			if ((v = wl_yamltree_find(keymap, "offset", NULL)) ==
			    NULL) {
				missing(c, keykey, label, "offset");
			} else {
				snprintf(label, sizeof(label), "%s key offset",
				    owner);
				if (get_uint(c, v, label, 0, UINT32_MAX, &u)) {
					st->key_offset = (uint32_t) u;
				}
			}
			snprintf(label, sizeof(label), "%s key", owner);
			if ((v = wl_yamltree_find(keymap, "length", NULL)) ==
			    NULL) {
				missing(c, keykey, label, "length");
			} else {
				snprintf(label, sizeof(label), "%s key length",
				    owner);
				if (get_uint(c, v, label, 1, 4096, &u)) {
					st->key_length = (uint32_t) u;
				}
			}
		}
	}

	if (stkey != NULL && st->kind != WL_STEP_STATE && st->kind != 0) {
		report(c, stkey, "%s has 'state', which only state steps take",
		    owner);
		a->state = NULL;
	} else if (stkey == NULL && st->kind == WL_STEP_STATE) {
		missing(c, key, owner, "state");
	}

	switch (st->kind) {
	case WL_STEP_KEY_BY:
		/*
		 * The engine extracts a byte range itself, or a runner
		 * computes the key; both at once would be ambiguous.
		 */
		if ((keymap != NULL) ==
		    (wl_yamltree_find(val, "program", NULL) != NULL)) {
			report(c, key, "%s needs exactly one of 'key' or "
			    "'program'", owner);
		} else if (keymap != NULL && fnkey != NULL) {
			report(c, fnkey, "%s has 'function', which only steps "
			    "with a 'program' take", owner);
			fn = NULL;
		}
		break;
	case WL_STEP_STATELESS:
	case WL_STEP_STATE:
		if (wl_yamltree_find(val, "program", NULL) == NULL) {
			missing(c, key, owner, "program");
		}
		break;
	}

	if (st->kind != WL_STEP_KEY_BY || keymap == NULL) {
		st->function = dupstr(c, fn != NULL ? fn->str : key->str);
	}
	if (a->state != NULL) {
		st->state_name = dupstr(c, a->state->str);
	}
}

/*
 * Finds a top-level section, which must be a map, and counts its entries
 * so the caller can size its arrays.
 */
static const wl_yamlnode *
section(ctx *c, const wl_yamlnode *root, const char *key, bool required,
    size_t *count, bool *bad)
{
	const wl_yamlnode *v = wl_yamltree_find(root, key, NULL);

	*count = 0;
	if (v == NULL) {
		if (required) {
			missing(c, root, NULL, key);
		}
		return (NULL);
	}
	if (!want(c, v, WL_YAML_MAP, key)) {
		*bad = true;
		return (NULL);
	}
	*count = count_entries(v);
	return (v);
}

static void
parse_root(ctx *c, const wl_yamlnode *root)
{
	static const char *const keys[] = { "application", "partitions",
		"priority", "limits", "programs", "sources", "steps", "sinks",
		NULL };
	wl_topology       *t = c->t;
	const wl_yamlnode *v;
	const wl_yamlnode *sec;
	const char        *s;
	uint64_t           u;
	size_t             n;
	size_t             i;

	check_keys(c, root, keys, "at the top level");

	if ((v = wl_yamltree_find(root, "application", NULL)) == NULL) {
		missing(c, root, NULL, "application");
	} else if (get_name(c, v, "application", &s)) {
		t->application = dupstr(c, s);
	}

	if ((v = wl_yamltree_find(root, "partitions", NULL)) != NULL &&
	    get_uint(c, v, "partitions", 1, 65536, &u)) {
		t->partitions = (uint32_t) u;
	}

	if ((v = wl_yamltree_find(root, "priority", NULL)) != NULL)
		get_priority(c, v, "priority", &t->priority);

	/* Limits first: source defaults derive from them. */
	parse_limits(c, wl_yamltree_find(root, "limits", NULL));

	if ((sec = section(c, root, "programs", false, &n,
	    &c->badprograms)) != NULL) {
		t->programs = zalloc(c, n, sizeof(wl_program));
		if (t->programs == NULL || !index_init(c, &c->programs, n)) {
			return;
		}
		for (i = 0; i + 1 < sec->nkids; i += 2) {
			if (!sec->kids[i]->skip) {
				c->programs.v[c->programs.n].name    = sec->kids[i];
				c->programs.v[c->programs.n++].r.idx =
				    (int) t->nprograms;
				parse_program(c, sec->kids[i], sec->kids[i + 1],
				    &t->programs[t->nprograms++]);
			}
		}
		/* Keys are unique by now (wl_yamltree_check_keys): no ties. */
		qsort(c->programs.v, c->programs.n, sizeof(entry), entry_cmp);
	}

	if ((sec = section(c, root, "sources", true, &n,
	    &c->badnames)) != NULL) {
		if (n == 0) {
			report(c, sec, "sources must list at least one source");
		}
		t->sources = zalloc(c, n, sizeof(wl_io));
		c->srcaux  = zalloc(c, n, sizeof(aux));
		if (t->sources == NULL || c->srcaux == NULL) {
			return;
		}
		for (i = 0; i + 1 < sec->nkids; i += 2) {
			if (!sec->kids[i]->skip) {
				parse_io(c, sec->kids[i], sec->kids[i + 1], true,
				    &t->sources[t->nsources],
				    &c->srcaux[t->nsources]);
				t->nsources++;
			}
		}
	}

	if ((sec = section(c, root, "steps", false, &n,
	    &c->badnames)) != NULL) {
		t->steps   = zalloc(c, n, sizeof(wl_step));
		c->stepaux = zalloc(c, n, sizeof(aux));
		if (t->steps == NULL || c->stepaux == NULL) {
			return;
		}
		for (i = 0; i + 1 < sec->nkids; i += 2) {
			if (!sec->kids[i]->skip) {
				parse_step(c, sec->kids[i], sec->kids[i + 1],
				    &t->steps[t->nsteps], &c->stepaux[t->nsteps]);
				t->nsteps++;
			}
		}
	}

	if ((sec = section(c, root, "sinks", true, &n,
	    &c->badnames)) != NULL) {
		if (n == 0) {
			report(c, sec, "sinks must list at least one sink");
		}
		t->sinks  = zalloc(c, n, sizeof(wl_io));
		c->sinkaux = zalloc(c, n, sizeof(aux));
		if (t->sinks == NULL || c->sinkaux == NULL) {
			return;
		}
		for (i = 0; i + 1 < sec->nkids; i += 2) {
			if (!sec->kids[i]->skip) {
				parse_io(c, sec->kids[i], sec->kids[i + 1], false,
				    &t->sinks[t->nsinks], &c->sinkaux[t->nsinks]);
				t->nsinks++;
			}
		}
	}
}

/* ------------------------------------------------------------------ */
/* Pass 3: the graph                                                   */
/* ------------------------------------------------------------------ */

static const char *
type_word(wl_node_type type)
{
	switch (type) {
	case WL_NODE_SOURCE:
		return ("source");
	case WL_NODE_STEP:
		return ("step");
	case WL_NODE_SINK:
		return ("sink");
	}
	return ("node");
}

static aux *
aux_of(ctx *c, ref r)
{
	switch (r.type) {
	case WL_NODE_SOURCE:
		return (&c->srcaux[r.idx]);
	case WL_NODE_STEP:
		return (&c->stepaux[r.idx]);
	case WL_NODE_SINK:
		return (&c->sinkaux[r.idx]);
	}
	return (NULL);
}

static size_t
count_of(ctx *c, wl_node_type type)
{
	switch (type) {
	case WL_NODE_SOURCE:
		return (c->t->nsources);
	case WL_NODE_STEP:
		return (c->t->nsteps);
	case WL_NODE_SINK:
		return (c->t->nsinks);
	}
	return (0);
}

/* The source, step or sink called like `n`, or one of type -1. */
static ref
lookup(ctx *c, const wl_yamlnode *n)
{
	const entry *e    = index_find(&c->names, n);
	ref          none = { (wl_node_type) -1, -1 };

	return (e != NULL ? e->r : none);
}

/*
 * Sources, steps and sinks share one namespace, since inputs name any of
 * them. When two share a name, the first in the file keeps it.
 */
static void
check_names(ctx *c)
{
	name_index *ix = &c->names;

	if (!index_init(c, ix, c->t->nsources + c->t->nsteps + c->t->nsinks)) {
		return;
	}
	for (int type = WL_NODE_SOURCE; type <= WL_NODE_SINK; type++) {
		ref r = { (wl_node_type) type, 0 };
		for (r.idx = 0; (size_t) r.idx < count_of(c, r.type); r.idx++) {
			ix->v[ix->n].name = aux_of(c, r)->name;
			ix->v[ix->n++].r  = r;
		}
	}
	qsort(ix->v, ix->n, sizeof(entry), entry_cmp);
	for (size_t k = 1, first = 0; k < ix->n; k++) {
		const entry *e = &ix->v[k];
		const entry *f = &ix->v[first];

		if (wl_yamltree_strcmp(e->name, f->name) != 0) {
			first = k;
			continue;
		}
		aux_of(c, e->r)->dupname = true;
		report(c, e->name, "name '%s' is already used by the %s at line "
		    "%d", e->name->str, type_word(f->r.type), f->name->line);
	}
}

static void
resolve_inputs(ctx *c, wl_node_type type, int idx)
{
	ref   self = { type, idx };
	aux  *a    = aux_of(c, self);
	char  owner[160];

	if (a->inputs == NULL) {
		c->badinputs = true;
		return;
	}
	snprintf(owner, sizeof(owner), "%s '%s'", type_word(type),
	    a->name->str);
	if ((a->in = zalloc(c, a->inputs->nkids, sizeof(ref))) == NULL) {
		return;
	}
	for (size_t i = 0; i < a->inputs->nkids; i++) {
		const wl_yamlnode *in = a->inputs->kids[i];
		ref                r  = lookup(c, in);
		bool               twice = false;

		for (size_t j = 0; j < i; j++) {
			twice = twice ||
			    wl_yamltree_strcmp(a->inputs->kids[j], in) == 0;
		}
		if (twice) {
			report(c, in, "%s lists input '%s' twice", owner, in->str);
		} else if ((int) r.type == -1) {
			if (!c->badnames) {
				report(c, in, "%s input '%s' is not a source or "
				    "step", owner, in->str);
			}
			c->badinputs = true;
		} else if (r.type == WL_NODE_SINK) {
			report(c, in, "%s input '%s' is a sink; only sources and "
			    "steps can be inputs", owner, in->str);
			c->badinputs = true;
		} else {
			a->in[a->nin++] = r;
			aux_of(c, r)->nconsumers++;
		}
	}
}

static void
resolve(ctx *c)
{
	wl_topology *t = c->t;
	name_index   states;

	for (size_t i = 0; i < t->nsteps; i++) {
		resolve_inputs(c, WL_NODE_STEP, (int) i);
	}
	for (size_t i = 0; i < t->nsinks; i++) {
		resolve_inputs(c, WL_NODE_SINK, (int) i);
	}

	for (size_t i = 0; i < t->nsteps; i++) {
		aux         *a = &c->stepaux[i];
		const entry *e;

		if (a->program == NULL) {
			continue;
		}
		if ((e = index_find(&c->programs, a->program)) != NULL) {
			t->steps[i].program = e->r.idx;
		} else if (!c->badprograms) {
			report(c, a->program, "step '%s' program '%s' is not "
			    "defined under programs", a->name->str,
			    a->program->str);
		}
	}

	/* Connector programs; a program is either a runner or a connector,
	 * since it serves one role per process. */
	for (int pass = 0; pass < 2; pass++) {
		wl_io  *ios = pass == 0 ? t->sources : t->sinks;
		aux    *auxs = pass == 0 ? c->srcaux : c->sinkaux;
		size_t  n = pass == 0 ? t->nsources : t->nsinks;
		const char *what = pass == 0 ? "source" : "sink";

		for (size_t i = 0; i < n; i++) {
			aux         *a = &auxs[i];
			const entry *e;

			if (a->program == NULL) {
				continue;
			}
			if ((e = index_find(&c->programs, a->program)) == NULL) {
				if (!c->badprograms) {
					report(c, a->program, "%s '%s' program "
					    "'%s' is not defined under programs",
					    what, a->name->str, a->program->str);
				}
				continue;
			}
			ios[i].program = e->r.idx;
			for (size_t j = 0; j < t->nsteps; j++) {
				if (t->steps[j].program == e->r.idx) {
					report(c, a->program, "%s '%s' program "
					    "'%s' also runs step '%s': a program "
					    "is a runner or a connector, not both",
					    what, a->name->str, a->program->str,
					    t->steps[j].name);
					break;
				}
			}
			for (size_t j = 0; j < i; j++) {
				if (ios[j].program == e->r.idx) {
					report(c, a->program, "%s '%s' program "
					    "'%s' already serves %s '%s'", what,
					    a->name->str, a->program->str, what,
					    ios[j].name);
					break;
				}
			}
			if (pass == 1) {
				for (size_t j = 0; j < t->nsources; j++) {
					if (t->sources[j].program == e->r.idx) {
						report(c, a->program, "sink '%s' "
						    "program '%s' already serves "
						    "source '%s'", a->name->str,
						    a->program->str,
						    t->sources[j].name);
						break;
					}
				}
			}
		}
	}

	/* A state belongs to one step: its keys live in one place. */
	if (index_init(c, &states, t->nsteps)) {
		for (size_t i = 0; i < t->nsteps; i++) {
			if (c->stepaux[i].state != NULL) {
				states.v[states.n].name    = c->stepaux[i].state;
				states.v[states.n++].r.idx = (int) i;
			}
		}
		qsort(states.v, states.n, sizeof(entry), entry_cmp);
		for (size_t k = 1, first = 0; k < states.n; k++) {
			const aux *a = &c->stepaux[states.v[k].r.idx];
			const aux *b = &c->stepaux[states.v[first].r.idx];

			if (wl_yamltree_strcmp(states.v[k].name,
			    states.v[first].name) != 0) {
				first = k;
				continue;
			}
			report(c, a->state, "step '%s' state '%s' is already used "
			    "by step '%s' at line %d", a->name->str, a->state->str,
			    b->name->str, b->name->line);
		}
		free(states.v);
	}

	for (size_t i = 0; i < t->nsources; i++) {
		aux               *a = &c->srcaux[i];
		const wl_yamlnode *n = a->after;
		ref                r;

		if (n == NULL) {
			continue;
		}
		r = lookup(c, n);
		if (r.type == WL_NODE_SOURCE && (size_t) r.idx == i) {
			report(c, n, "source '%s' cannot come after itself",
			    a->name->str);
		} else if (r.type == WL_NODE_SOURCE &&
		    t->sources[r.idx].type == WL_IO_CONNECTOR &&
		    t->sources[r.idx].program < 0) {
			report(c, n, "source '%s' after '%s', which accepts "
			    "connectors and so never ends", a->name->str, n->str);
		} else if (r.type == WL_NODE_SOURCE) {
			t->sources[i].after = r.idx;
		} else if ((int) r.type != -1 || !c->badnames) {
			report(c, n, "source '%s' after '%s' is not a source",
			    a->name->str, n->str);
		}
	}
}

static void
check_consumers(ctx *c)
{
	/*
	 * When an inputs list could not be read, the node it meant to name
	 * would be reported as feeding nothing: noise that hides the real
	 * mistake. It is reported once the inputs are fixed.
	 */
	if (c->badinputs) {
		return;
	}
	for (int type = WL_NODE_SOURCE; type <= WL_NODE_STEP; type++) {
		ref r = { (wl_node_type) type, 0 };
		for (r.idx = 0; (size_t) r.idx < count_of(c, r.type); r.idx++) {
			aux *a = aux_of(c, r);
			/* A duplicate name cannot be referred to at all;
			 * that was reported already. */
			if (a->nconsumers == 0 && !a->dupname) {
				report(c, a->name, "%s '%s' feeds nothing: no step "
				    "or sink lists it in inputs", type_word(r.type),
				    a->name->str);
			}
		}
	}
}

/*
 * `path` with "." and empty parts dropped, so that "d/./f", "d//f" and
 * "d/f" compare equal. ".." stays: "d/x/../f" is "d/f" only when x is not
 * a link, and refusing a valid file would be worse than missing a
 * mistake. NULL when out of memory.
 */
static char *
normal_path(const char *path)
{
	size_t n = strlen(path);
	char  *out = malloc(n + 2);
	size_t len = 0;

	if (out == NULL) {
		return (NULL);
	}
	for (const char *p = path; *p != '\0';) {
		size_t k = strcspn(p, "/");

		if (k > 0 && !(k == 1 && p[0] == '.')) {
			out[len++] = '/';
			memcpy(out + len, p, k);
			len += k;
		}
		p += k;
		p += *p == '/';
	}
	if (len == 0) {
		out[len++] = '/';
	}
	out[len] = '\0';
	return (out);
}

/*
 * A file written by two sinks would interleave their outputs (and each
 * sink's recovery would cut the other's back to its own length); a file
 * a source reads while a sink writes it feeds the pipeline its own output.
 * Both are mistakes in the file, reported at the second path.
 */
static void
check_paths(ctx *c)
{
	wl_topology *t = c->t;
	char       **src  = calloc(t->nsources + 1, sizeof(*src));
	char       **sink = calloc(t->nsinks + 1, sizeof(*sink));

	if (src == NULL || sink == NULL) {
		c->nomem = true;
		goto out;
	}
	for (size_t i = 0; i < t->nsources; i++) {
		if (t->sources[i].type == WL_IO_FILE &&
		    t->sources[i].path != NULL &&
		    (src[i] = normal_path(t->sources[i].path)) == NULL) {
			c->nomem = true;
			goto out;
		}
	}
	for (size_t i = 0; i < t->nsinks; i++) {
		if (t->sinks[i].type != WL_IO_FILE ||
		    t->sinks[i].path == NULL) {
			continue;
		}
		if ((sink[i] = normal_path(t->sinks[i].path)) == NULL) {
			c->nomem = true;
			goto out;
		}
		for (size_t j = 0; j < i; j++) {
			if (sink[j] != NULL && strcmp(sink[i], sink[j]) == 0) {
				report(c, c->sinkaux[i].path, "sink '%s' and sink "
				    "'%s' write the same file ('%s', '%s')",
				    t->sinks[i].name, t->sinks[j].name,
				    c->sinkaux[i].path->str,
				    c->sinkaux[j].path->str);
				break;
			}
		}
		for (size_t k = 0; k < t->nsources; k++) {
			if (src[k] != NULL && strcmp(sink[i], src[k]) == 0) {
				report(c, c->srcaux[k].path, "source '%s' reads "
				    "the file that sink '%s' writes ('%s', '%s'): "
				    "it would read its own output",
				    t->sources[k].name, t->sinks[i].name,
				    c->srcaux[k].path->str,
				    c->sinkaux[i].path->str);
			}
		}
	}
out:
	for (size_t i = 0; src != NULL && i < t->nsources; i++) {
		free(src[i]);
	}
	for (size_t i = 0; sink != NULL && i < t->nsinks; i++) {
		free(sink[i]);
	}
	free(src);
	free(sink);
}

/*
 * Orders the steps so each comes after its inputs, by an iterative
 * depth-first search along inputs (a chain of steps as long as the file
 * allows must not exhaust the stack). A step reached again while still on
 * the search path closes a cycle, which is reported along the data flow.
 */
static void
sort_steps(ctx *c)
{
	enum { WHITE, GREY, BLACK };
	size_t  n     = c->t->nsteps;
	int    *color = zalloc(c, n, sizeof(int));
	int    *pos   = zalloc(c, n, sizeof(int));
	int    *stk   = zalloc(c, n, sizeof(int));
	size_t *next  = zalloc(c, n, sizeof(size_t));

	c->order  = zalloc(c, n, sizeof(int));
	c->norder = 0;
	if (color == NULL || pos == NULL || stk == NULL || next == NULL ||
	    c->order == NULL) {
		goto out;
	}
	for (size_t root = 0; root < n; root++) {
		size_t depth = 0;

		if (color[root] != WHITE) {
			continue;
		}
		color[root]     = GREY;
		pos[root]       = 0;
		next[0]         = 0;
		stk[depth++]    = (int) root;
		while (depth > 0) {
			int  u = stk[depth - 1];
			aux *a = &c->stepaux[u];
			int  v;

			if (next[depth - 1] == a->nin) {
				color[u]                = BLACK;
				c->order[c->norder++] = u;
				depth--;
				continue;
			}
			if (a->in[next[depth - 1]].type != WL_NODE_STEP) {
				next[depth - 1]++;
				continue;
			}
			v = a->in[next[depth - 1]++].idx;
			if (color[v] == WHITE) {
				color[v]     = GREY;
				pos[v]       = (int) depth;
				next[depth]  = 0;
				stk[depth++] = v;
			} else if (color[v] == GREY) {
				/*
				 * stk[pos[v]..depth-1] runs against the data
				 * flow: each entry takes the next as an
				 * input, and the last takes v. So v feeds the
				 * last, which feeds the one before it...
				 */
				size_t len = 64;
				char  *msg;
				size_t off;

				for (size_t k = (size_t) pos[v]; k < depth; k++) {
					len += strlen(c->stepaux[stk[k]].name->str) + 4;
				}
				len += strlen(c->stepaux[v].name->str);
				if ((msg = malloc(len)) == NULL) {
					c->nomem = true;
					goto out;
				}
				off = (size_t) sprintf(msg, "%s",
				    c->stepaux[v].name->str);
				for (size_t k = depth; k-- > (size_t) pos[v];) {
					off += (size_t) sprintf(msg + off, " -> %s",
					    c->stepaux[stk[k]].name->str);
				}
				report(c, c->stepaux[v].name,
				    "step '%s' is part of a cycle: %s",
				    c->stepaux[v].name->str, msg);
				free(msg);
			}
		}
	}
out:
	free(color);
	free(pos);
	free(stk);
	free(next);
}

/*
 * `after` links form chains of sources, each with at most one link, so a
 * cycle is found by walking each chain once.
 */
static void
check_after_cycles(ctx *c)
{
	size_t n     = c->t->nsources;
	int   *walk  = zalloc(c, n, sizeof(int));

	if (walk == NULL) {
		return;
	}
	for (size_t s = 0; s < n; s++) {
		int u = (int) s;

		/* walk[] holds 0: unseen, s + 1: seen on this walk, -1: done. */
		while (u >= 0 && walk[u] == 0) {
			walk[u] = (int) s + 1;
			u       = c->t->sources[u].after;
		}
		if (u >= 0 && walk[u] == (int) s + 1) {
			size_t len = 64;
			char  *msg;
			size_t off;
			int    v = u;

			do {
				len += strlen(c->srcaux[v].name->str) + 4;
				v = c->t->sources[v].after;
			} while (v != u);
			len += strlen(c->srcaux[u].name->str);
			if ((msg = malloc(len)) == NULL) {
				c->nomem = true;
				break;
			}
			off = (size_t) sprintf(msg, "%s", c->srcaux[u].name->str);
			v   = u;
			do {
				v = c->t->sources[v].after;
				off += (size_t) sprintf(msg + off, " -> %s",
				    c->srcaux[v].name->str);
			} while (v != u);
			report(c, c->srcaux[u].name, "source '%s' is part of an "
			    "'after' cycle: %s", c->srcaux[u].name->str, msg);
			free(msg);
		}
		for (u = (int) s; u >= 0 && walk[u] == (int) s + 1;
		     u = c->t->sources[u].after) {
			walk[u] = -1;
		}
	}
	free(walk);
}

/* Puts the steps in topological order and builds the edges. */
static void
build_plan(ctx *c)
{
	wl_topology *t      = c->t;
	wl_step     *steps  = zalloc(c, t->nsteps, sizeof(wl_step));
	int         *newidx = zalloc(c, t->nsteps, sizeof(int));
	size_t       nedges = 0;

	if (steps == NULL || newidx == NULL) {
		free(steps);
		free(newidx);
		return;
	}
	for (size_t k = 0; k < c->norder; k++) {
		steps[k]             = t->steps[c->order[k]];
		newidx[c->order[k]] = (int) k;
	}
	free(t->steps);
	t->steps = steps;

	for (size_t i = 0; i < t->nsteps; i++) {
		nedges += c->stepaux[i].nin;
	}
	for (size_t i = 0; i < t->nsinks; i++) {
		nedges += c->sinkaux[i].nin;
	}
	if ((t->edges = zalloc(c, nedges, sizeof(wl_edge))) == NULL) {
		free(newidx);
		return;
	}
	for (size_t k = 0; k < c->norder; k++) {
		aux *a = &c->stepaux[c->order[k]];
		for (size_t j = 0; j < a->nin; j++) {
			wl_edge *e   = &t->edges[t->nedges++];
			e->from_type = a->in[j].type;
			e->from      = a->in[j].type == WL_NODE_STEP
			         ? newidx[a->in[j].idx] : a->in[j].idx;
			e->to_type   = WL_NODE_STEP;
			e->to        = (int) k;
		}
	}
	for (size_t i = 0; i < t->nsinks; i++) {
		aux *a = &c->sinkaux[i];
		for (size_t j = 0; j < a->nin; j++) {
			wl_edge *e   = &t->edges[t->nedges++];
			e->from_type = a->in[j].type;
			e->from      = a->in[j].type == WL_NODE_STEP
			         ? newidx[a->in[j].idx] : a->in[j].idx;
			e->to_type   = WL_NODE_SINK;
			e->to        = (int) i;
		}
	}
	free(newidx);
}

static void
ctx_fini(ctx *c)
{
	const wl_topology *t = c->t;

	for (size_t i = 0; c->srcaux != NULL && i < t->nsources; i++) {
		free(c->srcaux[i].in);
	}
	for (size_t i = 0; c->stepaux != NULL && i < t->nsteps; i++) {
		free(c->stepaux[i].in);
	}
	for (size_t i = 0; c->sinkaux != NULL && i < t->nsinks; i++) {
		free(c->sinkaux[i].in);
	}
	free(c->srcaux);
	free(c->stepaux);
	free(c->sinkaux);
	free(c->names.v);
	free(c->programs.v);
	free(c->order);
	for (size_t i = 0; i < c->ndiags; i++) {
		free(c->diags[i].msg);
	}
	free(c->diags);
}

static wl_err
topology_parse(wl_topology **out, const char *name, const char *file,
    const char *dir, const char *text, size_t len, FILE *errs)
{
	ctx                c;
	wl_topology       *t;
	wl_yamltree       *tree = NULL;
	const wl_yamlnode *root = NULL;
	wl_err             rv;

	memset(&c, 0, sizeof(c));
	c.name = name != NULL ? name : "<topology>";
	if ((t = calloc(1, sizeof(*t))) == NULL) {
		return (WL_ERR_NOMEM);
	}
	c.t           = t;
	t->file       = dupstr(&c, file != NULL ? file : c.name);
	t->dir        = dupstr(&c, dir != NULL && *dir != '\0' ? dir : ".");
	t->partitions = 1024;
	wl_limit_defaults(&t->limits);

	if (wl_yamltree_new(&tree, text, len, tree_report, &c) != WL_OK) {
		c.nomem = true;
	} else {
		root = wl_yamltree_root(tree);
	}
	if (root == NULL) {
		if (c.ndiags == 0 && !c.nomem) {
			report_at(&c, 1, 1, "file is empty");
		}
	} else if (wl_yamltree_is_null(root)) {
		report(&c, root, "file is empty");
	} else if (root->type != WL_YAML_MAP) {
		report(&c, root, "the top level must be a map, not %s",
		    wl_yamltree_kind(root));
	} else if (!c.nomem) {
		if (wl_yamltree_check_keys(tree) != WL_OK) {
			c.nomem = true;
		}
		parse_root(&c, root);
		if (!c.nomem) {
			check_names(&c);
			resolve(&c);
			check_consumers(&c);
			check_paths(&c);
			check_after_cycles(&c);
			sort_steps(&c);
		}
		if (c.ndiags == 0 && !c.nomem) {
			build_plan(&c);
		}
	}

	if (c.nomem) {
		rv = WL_ERR_NOMEM;
	} else if (c.ndiags > 0) {
		print_diags(&c, errs);
		rv = WL_ERR_CONFIG;
	} else {
		rv = WL_OK;
	}
	ctx_fini(&c);
	wl_yamltree_free(tree);
	if (rv != WL_OK) {
		wl_topology_free(t);
		return (rv);
	}
	*out = t;
	return (WL_OK);
}

wl_err
wl_topology_parse(wl_topology **out, const char *name, const char *dir,
    const char *text, size_t len, FILE *errs)
{
	return (topology_parse(out, name, name, dir, text, len, errs));
}

/*
 * The directory of `file`, made absolute: the engine and the programs it
 * starts may run elsewhere, and a path that depends on the current
 * directory at load time would then point somewhere else.
 */
static char *
file_dir(const char *file)
{
	const char *slash = strrchr(file, '/');
	size_t      dl    = slash == NULL ? 0 : (size_t) (slash - file);
	char        cwd[4096];
	char       *d;

	if (slash == file) {
		return (strdup("/"));
	}
	if (file[0] == '/') {
		return (strndup(file, dl));
	}
	/* "./topo.yaml" is in the current directory, not in "cwd/.". */
	while (dl >= 2 && file[0] == '.' && file[1] == '/') {
		file += 2;
		dl -= 2;
		while (dl > 0 && file[0] == '/') {
			file++;
			dl--;
		}
	}
	if (dl == 1 && file[0] == '.') {
		dl = 0;
	}
	if (getcwd(cwd, sizeof(cwd)) == NULL) {
		/* Not fatal: a relative directory still works from here. */
		return (dl == 0 ? strdup(".") : strndup(file, dl));
	}
	if (dl == 0) {
		return (strdup(cwd));
	}
	if ((d = malloc(strlen(cwd) + dl + 2)) == NULL) {
		return (NULL);
	}
	sprintf(d, "%s/%.*s", strcmp(cwd, "/") == 0 ? "" : cwd, (int) dl, file);
	return (d);
}

wl_err
wl_topology_load(wl_topology **out, const char *file, FILE *errs)
{
	FILE  *f;
	char  *text = NULL;
	size_t len  = 0;
	size_t cap  = 0;
	char  *dir;
	wl_err rv;

	if ((f = fopen(file, "rb")) == NULL) {
		if (errs != NULL) {
			fprintf(errs, "%s: %s\n", file, strerror(errno));
		}
		return (WL_ERR_IO);
	}
	for (;;) {
		size_t n;

		if (len == cap) {
			char *p;
			cap = cap ? cap * 2 : 8192;
			if ((p = realloc(text, cap)) == NULL) {
				free(text);
				fclose(f);
				return (WL_ERR_NOMEM);
			}
			text = p;
		}
		if (len > MAX_FILE_BYTES) {
			if (errs != NULL) {
				fprintf(errs, "%s: larger than %u MiB: not a "
				    "topology file\n", file, MAX_FILE_BYTES >> 20);
			}
			free(text);
			fclose(f);
			return (WL_ERR_CONFIG);
		}
		n = fread(text + len, 1, cap - len, f);
		len += n;
		if (n == 0) {
			break;
		}
	}
	if (ferror(f)) {
		if (errs != NULL) {
			fprintf(errs, "%s: %s\n", file, strerror(errno));
		}
		free(text);
		fclose(f);
		return (WL_ERR_IO);
	}
	fclose(f);
	if ((dir = file_dir(file)) == NULL) {
		free(text);
		return (WL_ERR_NOMEM);
	}
	rv = topology_parse(out, file, file, dir, text, len, errs);
	free(dir);
	free(text);
	return (rv);
}

/* ------------------------------------------------------------------ */
/* Freeing and lookup                                                  */
/* ------------------------------------------------------------------ */

static void
io_fini(wl_io *io)
{
	free(io->name);
	free(io->path);
	free(io->host);
	free(io->url);
	free(io->token_env);
}

void
wl_topology_free(wl_topology *t)
{
	if (t == NULL) {
		return;
	}
	for (size_t i = 0; i < t->nprograms; i++) {
		wl_program *p = &t->programs[i];
		for (size_t j = 0; j < p->argc; j++) {
			free(p->argv[j]);
		}
		for (size_t j = 0; j < p->envc; j++) {
			free(p->env[j]);
		}
		free(p->argv);
		free(p->env);
		free(p->name);
		free(p->cwd);
	}
	for (size_t i = 0; i < t->nsources; i++) {
		io_fini(&t->sources[i]);
	}
	for (size_t i = 0; i < t->nsteps; i++) {
		free(t->steps[i].name);
		free(t->steps[i].function);
		free(t->steps[i].state_name);
	}
	for (size_t i = 0; i < t->nsinks; i++) {
		io_fini(&t->sinks[i]);
	}
	free(t->programs);
	free(t->sources);
	free(t->steps);
	free(t->sinks);
	free(t->edges);
	free(t->application);
	free(t->file);
	free(t->dir);
	free(t);
}

bool
wl_topology_env_is_engines(const char *name)
{
	return strncmp(name, "WALLAROO_", 9) == 0 &&
	    strncmp(name, "WALLAROO_SDK_", 13) != 0;
}

int
wl_topology_find_step(const wl_topology *t, const char *name)
{
	for (size_t i = 0; i < t->nsteps; i++) {
		if (strcmp(t->steps[i].name, name) == 0) {
			return ((int) i);
		}
	}
	return (-1);
}

int
wl_topology_find_source(const wl_topology *t, const char *name)
{
	for (size_t i = 0; i < t->nsources; i++) {
		if (strcmp(t->sources[i].name, name) == 0) {
			return ((int) i);
		}
	}
	return (-1);
}

int
wl_topology_find_sink(const wl_topology *t, const char *name)
{
	for (size_t i = 0; i < t->nsinks; i++) {
		if (strcmp(t->sinks[i].name, name) == 0) {
			return ((int) i);
		}
	}
	return (-1);
}
