/*
 * frame.c -- thin helpers over protobuf-c so that the rest of the engine
 * deals in wl_err and nng messages, never in protobuf-c's conventions.
 */
#include "frame.h"

wl_err
wl_frame_decode(wl_frame **out, const void *buf, size_t len)
{
	wl_frame *f = wallaroo__v1__frame__unpack(NULL, len, buf);

	if (f == NULL)
		return WL_ERR_PROTO;
	if (f->body_case == WALLAROO__V1__FRAME__BODY__NOT_SET) {
		wallaroo__v1__frame__free_unpacked(f, NULL);
		return WL_ERR_PROTO;
	}
	*out = f;
	return WL_OK;
}

void
wl_frame_free(wl_frame *f)
{
	if (f != NULL)
		wallaroo__v1__frame__free_unpacked(f, NULL);
}

wl_err
wl_frame_encode(nng_msg **out, const wl_frame *f)
{
	size_t n = wallaroo__v1__frame__get_packed_size(f);
	nng_msg *m;

	if (nng_msg_alloc(&m, n) != 0)
		return WL_ERR_NOMEM;
	wallaroo__v1__frame__pack(f, nng_msg_body(m));
	*out = m;
	return WL_OK;
}

const char *
wl_frame_name(const wl_frame *f)
{
	switch (f->body_case) {
	case WALLAROO__V1__FRAME__BODY_HELLO: return "hello";
	case WALLAROO__V1__FRAME__BODY_WELCOME: return "welcome";
	case WALLAROO__V1__FRAME__BODY_REFUSE: return "refuse";
	case WALLAROO__V1__FRAME__BODY_ASSIGN: return "assign";
	case WALLAROO__V1__FRAME__BODY_READY: return "ready";
	case WALLAROO__V1__FRAME__BODY_BATCH: return "batch";
	case WALLAROO__V1__FRAME__BODY_REPLY: return "reply";
	case WALLAROO__V1__FRAME__BODY_CREDIT: return "credit";
	case WALLAROO__V1__FRAME__BODY_HEARTBEAT: return "heartbeat";
	case WALLAROO__V1__FRAME__BODY_ERROR: return "error";
	case WALLAROO__V1__FRAME__BODY_GOODBYE: return "goodbye";
	case WALLAROO__V1__FRAME__BODY_OPEN_STREAM: return "open_stream";
	case WALLAROO__V1__FRAME__BODY_STREAM_OPENED: return "stream_opened";
	case WALLAROO__V1__FRAME__BODY_ACK: return "ack";
	case WALLAROO__V1__FRAME__BODY_END_STREAM: return "end_stream";
	case WALLAROO__V1__FRAME__BODY_STREAM_ENDED: return "stream_ended";
	case WALLAROO__V1__FRAME__BODY_RECONNECT: return "reconnect";
	case WALLAROO__V1__FRAME__BODY_PREPARE: return "prepare";
	case WALLAROO__V1__FRAME__BODY_PREPARED: return "prepared";
	case WALLAROO__V1__FRAME__BODY_COMMIT: return "commit";
	case WALLAROO__V1__FRAME__BODY_ABORT: return "abort";
	case WALLAROO__V1__FRAME__BODY_RESOLVED: return "resolved";
	case WALLAROO__V1__FRAME__BODY_IN_DOUBT: return "in_doubt";
	default: return "unknown";
	}
}
