/*
 * topology_fuzz.c -- a topology file, as an operator might get it wrong.
 *
 * Beyond the sanitizers: a file is either loaded with nothing said, or
 * refused with WL_ERR_CONFIG and only lines of the form
 * "fuzz.yaml:LINE:COL: message" (LINE, COL >= 1), the operator's pointer
 * to what is wrong; a loaded plan must print.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "topology.h"

const char wl_fuzz_corpus[] = "topology";

#define NAME "fuzz.yaml"

static bool
errors_named(const char *out)
{
	size_t nl = strlen(NAME);

	if (*out == '\0')
		return false;
	for (const char *p = out; *p;) {
		const char *end = strchr(p, '\n');
		int line, col, n = 0;

		if (end == NULL || strncmp(p, NAME, nl) != 0 || p[nl] != ':' ||
		    sscanf(p + nl + 1, "%d:%d: %n", &line, &col, &n) != 2 ||
		    n == 0 || line < 1 || col < 1 || p + nl + 1 + n >= end)
			return false;
		p = end + 1;
	}
	return true;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *out = NULL;
	size_t outlen = 0;
	FILE *errs = open_memstream(&out, &outlen);
	wl_topology *t = NULL;
	wl_err rv;

	if (errs == NULL)
		abort();
	rv = wl_topology_parse(&t, NAME, "/srv", (const char *)data, size,
	    errs);
	fclose(errs);
	if (rv == WL_OK) {
		FILE *null = fopen("/dev/null", "w");

		if (*out != '\0')
			WL_FUZZ_FAIL("a loaded topology printed errors");
		wl_topology_print(t, null);
		fclose(null);
	} else if (rv != WL_ERR_CONFIG) {
		/* Running out of memory is the one other answer, and a
		 * fuzzer's inputs are small. */
		WL_FUZZ_FAIL("a refused topology is not WL_ERR_CONFIG");
	} else if (!errors_named(out)) {
		fprintf(stderr, "%s", out);
		WL_FUZZ_FAIL("an error line does not point at file:line:col");
	}
	wl_topology_free(t);
	free(out);
	return 0;
}
