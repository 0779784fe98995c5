/*
 * tap.h -- the few lines of TAP the C unit tests print (automake's
 * tap-driver reads them). Header-only so each test is one file.
 */
#ifndef WL_TAP_H
#define WL_TAP_H

#include <stdio.h>

static int tap_n, tap_failed;

#define TAP_OK(cond, ...) do { \
	int tap_c_ = (cond) ? 1 : 0; \
	tap_n++; \
	if (tap_c_) { printf("ok %d - ", tap_n); } \
	else { tap_failed++; printf("not ok %d - ", tap_n); } \
	printf(__VA_ARGS__); printf("\n"); \
	if (!tap_c_) printf("#   at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
} while (0)

#define TAP_DONE() (printf("1..%d\n", tap_n), tap_failed ? 1 : 0)

#endif
