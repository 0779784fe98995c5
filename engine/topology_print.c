/*
 * topology_print.c -- prints the resolved plan in YAML syntax, for
 * --check-config: every default filled in, every path resolved, steps in
 * topological order, and each node's inputs and consumers spelled out.
 * It reads only the public plan, so it needs nothing from the loader.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "limit.h"
#include "topology.h"

/* Prints a string plain when that reads unambiguously, else quoted. */
static void
put_str(FILE *f, const char *s)
{
	static const char safe[] = "abcdefghijklmnopqrstuvwxyz"
	                           "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	                           "_.-/+=@%";

	if (s == NULL) {
		fputs("null", f);
		return;
	}
	if (*s != '\0' && *s != '-' && strspn(s, safe) == strlen(s)) {
		fputs(s, f);
		return;
	}
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
		if (*p == '"' || *p == '\\') {
			fprintf(f, "\\%c", *p);
		} else if (*p < 0x20 || *p == 0x7f) {
			fprintf(f, "\\x%02x", *p);
		} else {
			fputc(*p, f);
		}
	}
	fputc('"', f);
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

/* Prints "[a, b]": the inputs of a node (`to`) or its consumers. */
static void
put_links(const wl_topology *t, FILE *f, const char *key, wl_node_type type,
    int idx, bool inputs)
{
	bool first = true;

	fprintf(f, "    %s: [", key);
	for (size_t i = 0; i < t->nedges; i++) {
		const wl_edge *e = &t->edges[i];
		if (inputs && e->to_type == type && e->to == idx) {
			fputs(first ? "" : ", ", f);
			put_str(f, node_name(t, e->from_type, e->from));
			first = false;
		} else if (!inputs && e->from_type == type && e->from == idx) {
			fputs(first ? "" : ", ", f);
			put_str(f, node_name(t, e->to_type, e->to));
			first = false;
		}
	}
	fputs("]\n", f);
}

static void
put_io(const wl_topology *t, FILE *f, const wl_io *io, bool source, int idx)
{
	fputs("  ", f);
	put_str(f, io->name);
	fputs(":\n", f);
	if (io->type == WL_IO_CONNECTOR) {
		fputs("    type: connector\n", f);
		if (io->program >= 0) {
			fputs("    program: ", f);
			put_str(f, t->programs[io->program].name);
			fputc('\n', f);
		} else {
			fputs("    listen: ", f);
			put_str(f, io->url);
			fputs("\n    token_env: ", f);
			put_str(f, io->token_env);
			fputc('\n', f);
		}
		if (source && io->after >= 0) {
			fputs("    after: ", f);
			put_str(f, t->sources[io->after].name);
			fputc('\n', f);
		}
		if (source)
			put_links(t, f, "consumers", WL_NODE_SOURCE, idx, false);
		else
			put_links(t, f, "inputs", WL_NODE_SINK, idx, true);
		return;
	}
	fprintf(f, "    type: %s\n", io->type == WL_IO_TCP ? "tcp" : "file");
	if (io->type == WL_IO_TCP) {
		fprintf(f, "    %s: ", source ? "listen" : "connect");
		/* A bare IPv6 host needs its brackets back, and then quotes,
		 * as '[' would start a YAML list. */
		if (strchr(io->host, ':') != NULL) {
			fprintf(f, "\"[%s]:%u\"\n", io->host, io->port);
		} else {
			fprintf(f, "%s:%u\n", io->host, io->port);
		}
	} else {
		fputs("    path: ", f);
		put_str(f, io->path);
		fputc('\n', f);
	}
	fprintf(f, "    framing: %s\n",
	    io->framing == WL_FRAMING_LINE ? "line" : "length");
	if (source) {
		fprintf(f, "    max_frame_bytes: %u\n", io->max_frame_bytes);
		if (io->after >= 0) {
			fputs("    after: ", f);
			put_str(f, t->sources[io->after].name);
			fputc('\n', f);
		}
		put_links(t, f, "consumers", WL_NODE_SOURCE, idx, false);
	} else {
		put_links(t, f, "inputs", WL_NODE_SINK, idx, true);
	}
}

static const char *
prio_name(wl_priority p)
{
	return p == WL_PRIORITY_REALTIME ? "realtime" :
	    p == WL_PRIORITY_NORMAL ? "normal" : "auto";
}

void
wl_topology_print(const wl_topology *t, FILE *f)
{
	static const char *const kinds[] = { "?", "stateless", "key_by",
		"state" };
	const wl_limit_spec     *ls;

	fputs("application: ", f);
	put_str(f, t->application);
	fputs("\nfile: ", f);
	put_str(f, t->file);
	fputs("\ndir: ", f);
	put_str(f, t->dir);
	fprintf(f, "\npartitions: %u\npriority: %s\n", t->partitions,
	    prio_name(t->priority));

	fputs("limits:\n", f);
	for (size_t i = 0; (ls = wl_limit_at(i)) != NULL; i++) {
		fprintf(f, "  %s: %llu\n", ls->key,
		    (unsigned long long) wl_limit_get(&t->limits, ls));
	}

	fprintf(f, "programs:%s\n", t->nprograms == 0 ? " {}" : "");
	for (size_t i = 0; i < t->nprograms; i++) {
		const wl_program *p = &t->programs[i];
		fputs("  ", f);
		put_str(f, p->name);
		fputs(":\n    argv: [", f);
		for (size_t j = 0; j < p->argc; j++) {
			fputs(j ? ", " : "", f);
			put_str(f, p->argv[j]);
		}
		fprintf(f, "]\n    instances: %u\n    priority: %s\n    env: [",
		    p->instances, prio_name(p->priority));
		for (size_t j = 0; j < p->envc; j++) {
			fputs(j ? ", " : "", f);
			put_str(f, p->env[j]);
		}
		fputs("]\n    cwd: ", f);
		put_str(f, p->cwd != NULL ? p->cwd : t->dir);
		fputc('\n', f);
	}

	fputs("sources:\n", f);
	for (size_t i = 0; i < t->nsources; i++) {
		put_io(t, f, &t->sources[i], true, (int) i);
	}

	fprintf(f, "steps:%s\n", t->nsteps == 0 ? " {}" : "  # in topological order");
	for (size_t i = 0; i < t->nsteps; i++) {
		const wl_step *s = &t->steps[i];
		fputs("  ", f);
		put_str(f, s->name);
		fprintf(f, ":\n    kind: %s\n", kinds[s->kind]);
		if (s->program >= 0) {
			fputs("    program: ", f);
			put_str(f, t->programs[s->program].name);
			fputs("\n    function: ", f);
			put_str(f, s->function);
			fputc('\n', f);
		} else {
			fprintf(f, "    key: {offset: %u, length: %u}\n",
			    s->key_offset, s->key_length);
		}
		if (s->state_name != NULL) {
			fputs("    state: ", f);
			put_str(f, s->state_name);
			fputc('\n', f);
		}
		put_links(t, f, "inputs", WL_NODE_STEP, (int) i, true);
		put_links(t, f, "consumers", WL_NODE_STEP, (int) i, false);
	}

	fputs("sinks:\n", f);
	for (size_t i = 0; i < t->nsinks; i++) {
		put_io(t, f, &t->sinks[i], false, (int) i);
	}
}
