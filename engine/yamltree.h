/*
 * yamltree.h -- one YAML document as a tree of nodes that keep their
 * position in the text, for checkers that report problems by line and
 * column.
 *
 * The tree is built from libyaml's event parser rather than from
 * yaml_parser_load(), because the document API silently resolves aliases
 * and drops anchors, and we want to reject both with their position. Only
 * the YAML core tags are accepted.
 *
 * Problems are not collected here: each one is handed to the caller's
 * report hook as it is found, so that the caller can merge them with its
 * own, in one order. Like the plan in topology.h, the tree is a read-only
 * value once built, so its node struct is declared here.
 */
#ifndef WL_YAMLTREE_H
#define WL_YAMLTREE_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

typedef enum {
	WL_YAML_SCALAR,
	WL_YAML_SEQ,
	WL_YAML_MAP,
	WL_YAML_BAD, /* an alias: already reported; every check skips it */
} wl_yamltype;

typedef struct wl_yamlnode wl_yamlnode;
struct wl_yamlnode {
	wl_yamltype type;
	int line;     /* 1-based, from the libyaml start mark */
	int col;
	char *str;    /* scalars: the value, NUL-terminated */
	size_t len;   /* scalars: its length, which may count NUL bytes */
	bool plain;   /* no quotes nor !!str: may be an int or null */
	bool skip;    /* map key already reported (duplicate, not a string) */
	wl_yamlnode **kids; /* seq: the items; map: key, value, key, value... */
	size_t nkids;
};

typedef struct wl_yamltree wl_yamltree;

/* Receives one problem: its position and a one-line message, which may
 * quote bytes of the text as they are (control characters included). */
typedef void (*wl_yamltree_report)(void *arg, int line, int col,
    const char *msg);

/*
 * Parses the only document of `text` (`len` bytes, which need not end in
 * NUL; the text is not kept). Problems go to `report`, with `arg`, now
 * and from wl_yamltree_check_keys. Problems that leave a usable tree
 * (anchors, aliases, tags other than the core ones) are reported and the
 * tree is still built, so that the caller can go on checking; a syntax
 * error or a second document leaves no root (see wl_yamltree_root). On
 * success *out is a new tree, freed with wl_yamltree_free(); WL_ERR_NOMEM
 * leaves *out untouched.
 */
wl_err wl_yamltree_new(wl_yamltree **out, const char *text, size_t len,
    wl_yamltree_report report, void *arg);

/* The root node, owned by the tree; NULL when the text holds no document
 * or could not be parsed (the reason, if any, was reported). */
const wl_yamlnode *wl_yamltree_root(const wl_yamltree *t);

/*
 * Checks the keys of every map in the tree, used or not: a key must be a
 * string and appear once in its map. Offending keys are reported, and
 * marked `skip` so that wl_yamltree_find and the caller neither use nor
 * report them again. Returns WL_OK or WL_ERR_NOMEM (checking stopped).
 */
wl_err wl_yamltree_check_keys(wl_yamltree *t);

/* The value of `key` in `map` (which may be NULL or not a map), or NULL;
 * keys marked `skip` do not count. *keyp, when keyp is not NULL, gets the
 * key node. Both belong to the tree. */
const wl_yamlnode *wl_yamltree_find(const wl_yamlnode *map, const char *key,
    const wl_yamlnode **keyp);

/* True for a plain null scalar: empty, '~', null, Null or NULL. */
bool wl_yamltree_is_null(const wl_yamlnode *n);

/* True when a scalar's text is a decimal integer as we accept it: an
 * optional '-', no leading zero, no '_', no NUL bytes. */
bool wl_yamltree_is_decimal(const wl_yamlnode *n);

/* What a node looks like to a reader, for "must be X, not Y" messages:
 * "a list", "a map", "an alias", "null", "an integer" or "a string". A
 * static string. */
const char *wl_yamltree_kind(const wl_yamlnode *n);

/* Orders two scalars by their bytes (a prefix first); 0 when they hold
 * the same string. */
int wl_yamltree_strcmp(const wl_yamlnode *a, const wl_yamlnode *b);

/* Orders two nodes by their position in the text; 0 at the same place. */
int wl_yamltree_poscmp(const wl_yamlnode *a, const wl_yamlnode *b);

/* Frees the tree and every node in it; accepts NULL. */
void wl_yamltree_free(wl_yamltree *t);

#endif
