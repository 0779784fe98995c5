/*
 * replay.c -- runs a harness (tests/fuzz/*_fuzz.c) over its saved corpus,
 * so that `make check` keeps every input the fuzzer found interesting, and
 * every input that once broke the engine, passing. libFuzzer is not
 * needed: this main stands in for it (scripts/fuzz runs the fuzzer).
 *
 * Prints TAP: one line for the corpus (an input that breaks a check aborts
 * the program, after naming itself on stderr).
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "tap.h"

static int
by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The whole file at path, in a buffer of exactly its size (so that the
 * sanitizers see a read past its end); NULL when it cannot be read. */
static uint8_t *
slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	long n;

	if (f == NULL)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 &&
	    fseek(f, 0, SEEK_SET) == 0 && (buf = malloc(n ? (size_t)n : 1)) &&
	    fread(buf, 1, (size_t)n, f) == (size_t)n) {
		*len = (size_t)n;
	} else {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	return buf;
}

int
main(void)
{
	const char *src = getenv("srcdir");
	char dir[4096];
	char **names = NULL;
	size_t n = 0, cap = 0, ran = 0;
	struct dirent *e;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/tests/fuzz/corpus/%s",
	    src ? src : ".", wl_fuzz_corpus);
	d = opendir(dir);
	TAP_OK(d != NULL, "corpus %s opens", dir);
	if (d == NULL)
		return TAP_DONE();
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			names = realloc(names, cap * sizeof(*names));
			if (names == NULL)
				abort();
		}
		names[n++] = strdup(e->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof(*names), by_name);
	for (size_t i = 0; i < n; i++) {
		char path[8192];
		size_t len = 0;
		uint8_t *buf;

		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		buf = slurp(path, &len);
		if (buf == NULL) {
			TAP_OK(0, "%s cannot be read", path);
		} else {
			/* A finding aborts, naming the input first. */
			fprintf(stderr, "# %s\n", names[i]);
			LLVMFuzzerTestOneInput(buf, len);
			ran++;
		}
		free(buf);
		free(names[i]);
	}
	TAP_OK(ran > 0 && ran == n, "%zu of %zu inputs in corpus %s run "
	    "clean", ran, n, wl_fuzz_corpus);
	free(names);
	return TAP_DONE();
}
