/*
 * frame_fuzz.c -- what a runner or connector sends, fed to the engine's
 * decoders as it arrives off the wire.
 *
 * Two checks beyond "no crash, no leak" (the sanitizers' part):
 * - wire.c's hand decoder must agree with protobuf-c. Whenever it accepts
 *   bytes, protobuf-c must accept them too, and both decoded frames must
 *   pack to the same bytes: the engine would otherwise read a different
 *   reply depending on which decoder took it.
 * - wl_frame_decode (the engine's entry point, arenas included) must accept
 *   exactly what protobuf-c accepts with a body set.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "fuzz.h"
#include "testalloc.h"
#include "wire.h"

const char wl_fuzz_corpus[] = "frame";

/* The bytes protobuf-c packs for f; the caller frees them. */
static uint8_t *
packed(const Wallaroo__V1__Frame *f, size_t *n)
{
	uint8_t *p;

	*n = wallaroo__v1__frame__get_packed_size(f);
	p = malloc(*n ? *n : 1);
	if (p == NULL)
		abort();
	if (wallaroo__v1__frame__pack(f, p) != *n)
		WL_FUZZ_FAIL("protobuf-c packed a size other than it said");
	return p;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	block *blocks = NULL;
	ProtobufCAllocator a = { t_alloc, t_free, &blocks };
	Wallaroo__V1__Frame *hand = NULL, *ref;
	wl_frame *f = NULL;
	wl_err rv;

	ref = wallaroo__v1__frame__unpack(NULL, size, data);
	if (wl_wire_reply_decode(&a, data, size, &hand)) {
		uint8_t *x, *y;
		size_t nx, ny;

		if (ref == NULL)
			WL_FUZZ_FAIL("the hand decoder took bytes protobuf-c "
			    "refuses");
		x = packed(hand, &nx);
		y = packed(ref, &ny);
		if (nx != ny || memcmp(x, y, nx) != 0)
			WL_FUZZ_FAIL("the hand decoder read another reply than "
			    "protobuf-c");
		free(x);
		free(y);
	}
	t_release(&blocks);

	rv = wl_frame_decode(&f, data, size);
	if ((rv == WL_OK) != (ref != NULL &&
	    ref->body_case != WALLAROO__V1__FRAME__BODY__NOT_SET))
		WL_FUZZ_FAIL("wl_frame_decode and protobuf-c disagree on "
		    "whether this is a frame");
	if (rv == WL_OK && wl_frame_name(f) == NULL)
		WL_FUZZ_FAIL("a decoded frame has no name");
	wl_frame_free(f);
	if (ref != NULL)
		wallaroo__v1__frame__free_unpacked(ref, NULL);
	return 0;
}
