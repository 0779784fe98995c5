/*
 * fuzz.h -- what each harness in tests/fuzz defines, for libFuzzer
 * (scripts/fuzz) and for the corpus replay that `make check` runs
 * (replay.c).
 */
#ifndef WL_FUZZ_H
#define WL_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Runs one input; returns 0. A finding aborts (WL_FUZZ_FAIL) or is a
 * sanitizer's report. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The harness's corpus, tests/fuzz/corpus/<name>. */
extern const char wl_fuzz_corpus[];

/* An input broke a property the harness checks: say which, then abort so
 * that libFuzzer keeps the input and the replay fails. */
#define WL_FUZZ_FAIL(msg) do { \
	fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, (msg)); \
	abort(); \
} while (0)

#endif
