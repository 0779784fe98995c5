/*
 * yamltree.c -- builds a tree of positioned nodes from libyaml's events.
 *
 * Every node is also kept in one flat array, in document order: freeing
 * is then a loop, and so is checking the keys of every map. Nothing here
 * recurses on the input's shape, so no input can exhaust the stack.
 */
#include "yamltree.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#define CORE_TAG "tag:yaml.org,2002:"

/*
 * Deepest nesting of sequences and maps accepted. A topology needs five
 * levels; the cap is there because libyaml's scanner takes time quadratic
 * in the depth of open flow collections ("[[[[..." of 100 KB takes it 20
 * seconds), so a broken or hostile file is refused at once instead.
 */
#define MAX_DEPTH 64

/* A node as the builder sees it: the public part, and room to grow. */
typedef struct {
	wl_yamlnode n;      /* first, so that a wl_yamlnode * is a tnode * */
	size_t      cap;    /* room in n.kids */
} tnode;

struct wl_yamltree {
	wl_yamltree_report report;
	void              *arg;
	const char        *text;    /* while parsing only */
	size_t             len;
	tnode            **nodes;   /* every node, in document order */
	size_t             nnodes;
	size_t             nodecap;
	wl_yamlnode       *root;
	bool               nomem;
};

static void yreport_at(wl_yamltree *t, int line, int col, const char *fmt,
    ...) __attribute__((format(printf, 4, 5)));
static void yreport(wl_yamltree *t, const wl_yamlnode *n, const char *fmt,
    ...) __attribute__((format(printf, 3, 4)));

static void
vyreport_at(wl_yamltree *t, int line, int col, const char *fmt, va_list ap)
{
	char buf[1024];

	if (vsnprintf(buf, sizeof(buf), fmt, ap) < 0) {
		buf[0] = '\0';
	}
	t->report(t->arg, line, col, buf);
}

static void
yreport_at(wl_yamltree *t, int line, int col, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vyreport_at(t, line, col, fmt, ap);
	va_end(ap);
}

static void
yreport(wl_yamltree *t, const wl_yamlnode *n, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vyreport_at(t, n->line, n->col, fmt, ap);
	va_end(ap);
}

static tnode *
node_new(wl_yamltree *t, wl_yamltype type, yaml_mark_t mark)
{
	tnode *n;

	if (t->nnodes == t->nodecap) {
		size_t  cap = t->nodecap ? t->nodecap * 2 : 64;
		tnode **a   = realloc(t->nodes, cap * sizeof(*a));
		if (a == NULL) {
			t->nomem = true;
			return (NULL);
		}
		t->nodes   = a;
		t->nodecap = cap;
	}
	if ((n = calloc(1, sizeof(*n))) == NULL) {
		t->nomem = true;
		return (NULL);
	}
	n->n.type              = type;
	n->n.line              = (int) mark.line + 1;
	n->n.col               = (int) mark.column + 1;
	t->nodes[t->nnodes++] = n;
	return (n);
}

static bool
node_add(wl_yamltree *t, tnode *parent, tnode *kid)
{
	if (parent->n.nkids == parent->cap) {
		size_t        cap = parent->cap ? parent->cap * 2 : 8;
		wl_yamlnode **a   = realloc(parent->n.kids, cap * sizeof(*a));
		if (a == NULL) {
			t->nomem = true;
			return (false);
		}
		parent->n.kids = a;
		parent->cap    = cap;
	}
	parent->n.kids[parent->n.nkids++] = &kid->n;
	return (true);
}

/*
 * Checks the anchor and tag of a node. Only the YAML core tags are
 * accepted: anything else would ask for a type we do not have, and
 * anchors only exist to be aliased, which we do not support.
 */
static void
check_props(wl_yamltree *t, wl_yamlnode *n, const yaml_char_t *anchor,
    const yaml_char_t *tag)
{
	static const char *const core[] = { "str", "int", "float", "bool",
		"null", "seq", "map", NULL };
	const char *tg = (const char *) tag;
	const char *s;
	int         i;

	if (anchor != NULL) {
		yreport(t, n, "anchors are not supported (&%s)", anchor);
	}
	if (tg == NULL) {
		return;
	}
	if (strncmp(tg, CORE_TAG, strlen(CORE_TAG)) != 0) {
		yreport(t, n, "tag '%s' is not supported; only the YAML core "
		    "tags are", tg);
		return;
	}
	s = tg + strlen(CORE_TAG);
	for (i = 0; core[i] != NULL; i++) {
		if (strcmp(s, core[i]) == 0) {
			break;
		}
	}
	if (core[i] == NULL) {
		yreport(t, n, "tag '!!%s' is not supported; only the YAML core "
		    "tags are", s);
		return;
	}
	if (n->type == WL_YAML_SCALAR) {
		if (strcmp(s, "seq") == 0 || strcmp(s, "map") == 0) {
			yreport(t, n, "tag '!!%s' is on a scalar", s);
		}
		/* An explicit tag decides whether a scalar is a string. */
		n->plain = strcmp(s, "str") != 0;
	} else if ((n->type == WL_YAML_SEQ) != (strcmp(s, "seq") == 0) ||
	    (n->type == WL_YAML_MAP) != (strcmp(s, "map") == 0)) {
		yreport(t, n, "tag '!!%s' is on a %s", s,
		    n->type == WL_YAML_SEQ ? "list" : "map");
	}
}

/* Line and column of a byte offset, for errors libyaml gives no mark. */
static void
offset_pos(const wl_yamltree *t, size_t off, int *line, int *col)
{
	*line = 1;
	*col  = 1;
	for (size_t i = 0; i < off && i < t->len; i++) {
		if (t->text[i] == '\n') {
			(*line)++;
			*col = 1;
		} else {
			(*col)++;
		}
	}
}

static void
report_syntax(wl_yamltree *t, const yaml_parser_t *p)
{
	const char *problem = p->problem ? p->problem : "invalid YAML";
	int         line;
	int         col;

	if (p->error == YAML_MEMORY_ERROR) {
		t->nomem = true;
		return;
	}
	if (p->error == YAML_READER_ERROR) {
		/* The reader (encoding) stage sets an offset but no mark. */
		offset_pos(t, p->problem_offset, &line, &col);
		if (p->problem_value != -1) {
			yreport_at(t, line, col, "%s (byte 0x%02x)", problem,
			    (unsigned) p->problem_value & 0xffu);
		} else {
			yreport_at(t, line, col, "%s", problem);
		}
		return;
	}
	line = (int) p->problem_mark.line + 1;
	col  = (int) p->problem_mark.column + 1;
	if (p->context != NULL) {
		yreport_at(t, line, col, "%s (%s at line %d, column %d)",
		    problem, p->context, (int) p->context_mark.line + 1,
		    (int) p->context_mark.column + 1);
	} else {
		yreport_at(t, line, col, "%s", problem);
	}
}

/*
 * Builds the tree of the only document in the text. Returns its root, or
 * NULL after reporting why there is none (or with t->nomem set).
 */
static wl_yamlnode *
tree_build(wl_yamltree *t)
{
	yaml_parser_t p;
	yaml_event_t  ev;
	tnode       **stack = NULL;
	size_t        depth = 0;
	size_t        cap   = 0;
	tnode        *root  = NULL;
	int           ndocs = 0;
	bool          done  = false;
	bool          ok    = true;

	if (!yaml_parser_initialize(&p)) {
		t->nomem = true;
		return (NULL);
	}
	yaml_parser_set_input_string(&p,
	    (const unsigned char *) (t->text ? t->text : ""), t->len);

	while (!done && ok) {
		tnode *n = NULL;

		if (!yaml_parser_parse(&p, &ev)) {
			report_syntax(t, &p);
			ok = false;
			break;
		}
		switch (ev.type) {
		case YAML_DOCUMENT_START_EVENT:
			if (++ndocs > 1) {
				yreport_at(t, (int) ev.start_mark.line + 1,
				    (int) ev.start_mark.column + 1,
				    "only one YAML document is allowed");
				ok = false;
			}
			break;
		case YAML_STREAM_END_EVENT:
			done = true;
			break;
		case YAML_SCALAR_EVENT:
			if ((n = node_new(t, WL_YAML_SCALAR, ev.start_mark)) ==
			    NULL ||
			    (n->n.str = malloc(ev.data.scalar.length + 1)) ==
			    NULL) {
				t->nomem = true;
				ok       = false;
				break;
			}
			memcpy(n->n.str, ev.data.scalar.value,
			    ev.data.scalar.length);
			n->n.str[ev.data.scalar.length] = '\0';
			n->n.len   = ev.data.scalar.length;
			n->n.plain = ev.data.scalar.style ==
			    YAML_PLAIN_SCALAR_STYLE;
			check_props(t, &n->n, ev.data.scalar.anchor,
			    ev.data.scalar.tag);
			break;
		case YAML_SEQUENCE_START_EVENT:
			if ((n = node_new(t, WL_YAML_SEQ, ev.start_mark)) ==
			    NULL) {
				ok = false;
				break;
			}
			check_props(t, &n->n, ev.data.sequence_start.anchor,
			    ev.data.sequence_start.tag);
			break;
		case YAML_MAPPING_START_EVENT:
			if ((n = node_new(t, WL_YAML_MAP, ev.start_mark)) ==
			    NULL) {
				ok = false;
				break;
			}
			check_props(t, &n->n, ev.data.mapping_start.anchor,
			    ev.data.mapping_start.tag);
			break;
		case YAML_ALIAS_EVENT:
			if ((n = node_new(t, WL_YAML_BAD, ev.start_mark)) ==
			    NULL) {
				ok = false;
				break;
			}
			yreport(t, &n->n, "aliases are not supported (*%s)",
			    ev.data.alias.anchor);
			break;
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			if (depth > 0) {
				depth--;
			}
			break;
		default:
			break;
		}
		if (n != NULL && ok) {
			if (depth == 0) {
				if (root == NULL) {
					root = n;
				}
			} else if (!node_add(t, stack[depth - 1], n)) {
				ok = false;
			}
			if (ok && (n->n.type == WL_YAML_SEQ ||
			    n->n.type == WL_YAML_MAP)) {
				if (depth == cap) {
					size_t  nc = cap ? cap * 2 : 16;
					tnode **s  = realloc(stack,
					    nc * sizeof(*s));
					if (s == NULL) {
						t->nomem = true;
						ok       = false;
					} else {
						stack = s;
						cap   = nc;
					}
				}
				if (ok && depth == MAX_DEPTH) {
					yreport(t, &n->n,
					    "nested more than %d levels deep",
					    MAX_DEPTH);
					ok = false;
				}
				if (ok) {
					stack[depth++] = n;
				}
			}
		}
		yaml_event_delete(&ev);
	}
	free(stack);
	yaml_parser_delete(&p);
	if (!ok || root == NULL) {
		return (NULL);
	}
	return (&root->n);
}

wl_err
wl_yamltree_new(wl_yamltree **out, const char *text, size_t len,
    wl_yamltree_report report, void *arg)
{
	wl_yamltree *t;

	if ((t = calloc(1, sizeof(*t))) == NULL) {
		return (WL_ERR_NOMEM);
	}
	t->report = report;
	t->arg    = arg;
	t->text   = text;
	t->len    = len;
	t->root   = tree_build(t);
	t->text   = NULL;
	if (t->nomem) {
		wl_yamltree_free(t);
		return (WL_ERR_NOMEM);
	}
	*out = t;
	return (WL_OK);
}

const wl_yamlnode *
wl_yamltree_root(const wl_yamltree *t)
{
	return (t->root);
}

bool
wl_yamltree_is_null(const wl_yamlnode *n)
{
	return (n->type == WL_YAML_SCALAR && n->plain &&
	    (n->len == 0 || strcmp(n->str, "~") == 0 ||
	        strcmp(n->str, "null") == 0 || strcmp(n->str, "Null") == 0 ||
	        strcmp(n->str, "NULL") == 0));
}

bool
wl_yamltree_is_decimal(const wl_yamlnode *n)
{
	const char *s = n->str;

	if (n->len == 0 || n->len != strlen(s)) {
		return (false);
	}
	if (*s == '-') {
		s++;
	}
	if (*s == '\0' || (s[0] == '0' && s[1] != '\0')) {
		return (false);
	}
	return (strspn(s, "0123456789") == strlen(s));
}

const char *
wl_yamltree_kind(const wl_yamlnode *n)
{
	switch (n->type) {
	case WL_YAML_SEQ:
		return ("a list");
	case WL_YAML_MAP:
		return ("a map");
	case WL_YAML_BAD:
		return ("an alias");
	case WL_YAML_SCALAR:
		break;
	}
	if (wl_yamltree_is_null(n)) {
		return ("null");
	}
	if (n->plain && wl_yamltree_is_decimal(n)) {
		return ("an integer");
	}
	return ("a string");
}

int
wl_yamltree_strcmp(const wl_yamlnode *a, const wl_yamlnode *b)
{
	int d = memcmp(a->str, b->str, a->len < b->len ? a->len : b->len);

	if (d != 0) {
		return (d);
	}
	return (a->len < b->len ? -1 : a->len > b->len);
}

int
wl_yamltree_poscmp(const wl_yamlnode *a, const wl_yamlnode *b)
{
	if (a->line != b->line) {
		return (a->line < b->line ? -1 : 1);
	}
	return (a->col < b->col ? -1 : a->col > b->col);
}

/* A key of the map being checked, and its index among the map's kids. */
typedef struct {
	wl_yamlnode *key;
	size_t       idx;
} keyref;

/* By string, ties in file order: the first of a run is the original. */
static int
keyref_cmp(const void *a, const void *b)
{
	const keyref *x = a;
	const keyref *y = b;
	int           d = wl_yamltree_strcmp(x->key, y->key);

	return (d != 0 ? d : wl_yamltree_poscmp(x->key, y->key));
}

wl_err
wl_yamltree_check_keys(wl_yamltree *t)
{
	for (size_t i = 0; i < t->nnodes; i++) {
		wl_yamlnode *m = &t->nodes[i]->n;
		keyref      *v;
		size_t       n = 0;

		if (m->type != WL_YAML_MAP || m->nkids == 0) {
			continue;
		}
		if ((v = calloc(m->nkids / 2 ? m->nkids / 2 : 1,
		    sizeof(*v))) == NULL) {
			return (WL_ERR_NOMEM);
		}
		for (size_t k = 0; k + 1 < m->nkids; k += 2) {
			wl_yamlnode *key = m->kids[k];

			if (key->type == WL_YAML_BAD) {
				key->skip = true;
			} else if (key->type != WL_YAML_SCALAR ||
			    wl_yamltree_is_null(key)) {
				yreport(t, key, "a map key must be a string, "
				    "not %s", wl_yamltree_kind(key));
				key->skip = true;
			} else {
				v[n].key   = key;
				v[n++].idx = k;
			}
		}
		qsort(v, n, sizeof(*v), keyref_cmp);
		for (size_t k = 1, first = 0; k < n; k++) {
			if (wl_yamltree_strcmp(v[k].key, v[first].key) != 0) {
				first = k;
				continue;
			}
			yreport(t, v[k].key, "duplicate key '%s' (first at "
			    "line %d)", v[k].key->str, v[first].key->line);
			m->kids[v[k].idx]->skip = true;
		}
		free(v);
	}
	return (WL_OK);
}

const wl_yamlnode *
wl_yamltree_find(const wl_yamlnode *map, const char *key,
    const wl_yamlnode **keyp)
{
	if (map == NULL || map->type != WL_YAML_MAP) {
		return (NULL);
	}
	for (size_t k = 0; k + 1 < map->nkids; k += 2) {
		const wl_yamlnode *kn = map->kids[k];
		if (!kn->skip && kn->len == strlen(key) &&
		    strcmp(kn->str, key) == 0) {
			if (keyp != NULL) {
				*keyp = kn;
			}
			return (map->kids[k + 1]);
		}
	}
	return (NULL);
}

void
wl_yamltree_free(wl_yamltree *t)
{
	if (t == NULL) {
		return;
	}
	for (size_t i = 0; i < t->nnodes; i++) {
		free(t->nodes[i]->n.str);
		free(t->nodes[i]->n.kids);
		free(t->nodes[i]);
	}
	free(t->nodes);
	free(t);
}
