/* position_test.c -- a stream's processed position advances only over a
 * leading run of done messages, whatever order they finish in. */
#include "position.h"
#include "tap.h"

int
main(void)
{
	wl_stream_pos *s;
	wl_origin *o[10];

	TAP_OK(wl_stream_pos_new(&s, 100) == WL_OK && wl_stream_pos_done(s) == 100,
	    "a new stream starts at its start position");
	for (int i = 0; i < 5; i++)
		o[i] = wl_stream_pos_track(s, 101 + (uint64_t)i);
	TAP_OK(wl_stream_pos_last(s) == 105 && wl_stream_pos_pending(s) == 5,
	    "tracking five messages");
	wl_origin_unref(o[1]);
	TAP_OK(wl_stream_pos_done(s) == 100, "a later message done first does "
	    "not move the position");
	wl_origin_ref(o[0]);       /* a fan-out copy */
	wl_origin_unref(o[0]);
	TAP_OK(wl_stream_pos_done(s) == 100, "one of two references dropped: "
	    "not done");
	wl_origin_unref(o[0]);
	TAP_OK(wl_stream_pos_done(s) == 102, "the first done carries the "
	    "position over the one already done (102)");
	wl_origin_unref(o[3]);
	wl_origin_unref(o[4]);
	TAP_OK(wl_stream_pos_done(s) == 102 && wl_stream_pos_pending(s) == 3,
	    "103 still pending holds the position");
	wl_origin_unref(o[2]);
	TAP_OK(wl_stream_pos_done(s) == 105 && wl_stream_pos_pending(s) == 0,
	    "everything done: position 105");
	/* Ids need not be contiguous, only increasing. */
	o[5] = wl_stream_pos_track(s, 200);
	o[6] = wl_stream_pos_track(s, 350);
	wl_origin_unref(o[5]);
	TAP_OK(wl_stream_pos_done(s) == 200, "gaps in ids are fine");
	/* Freeing the stream while an event still holds an origin. */
	wl_stream_pos_free(s);
	wl_origin_unref(o[6]);
	TAP_OK(1, "the stream goes with its last origin (ASan checks)");
	/* Many messages, finishing in reverse. */
	{
		wl_stream_pos *t;
		enum { N = 10000 };
		static wl_origin *m[N];
		wl_stream_pos_new(&t, 0);
		for (int i = 0; i < N; i++)
			m[i] = wl_stream_pos_track(t, (uint64_t)i + 1);
		for (int i = N - 1; i > 0; i--)
			wl_origin_unref(m[i]);
		TAP_OK(wl_stream_pos_done(t) == 0, "all but the first done: 0");
		wl_origin_unref(m[0]);
		TAP_OK(wl_stream_pos_done(t) == N, "then all of them: %d", N);
		wl_stream_pos_free(t);
	}
	wl_stream_pos_free(NULL);
	wl_origin_unref(NULL);
	wl_origin_ref(NULL);
	TAP_OK(1, "NULL is accepted everywhere");
	return TAP_DONE();
}
