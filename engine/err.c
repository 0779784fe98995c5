/*
 * err.c -- descriptions of the engine's error codes.
 */
#include "err.h"

const char *
wl_strerror(wl_err e)
{
	/*
	 * A switch rather than a table indexed by the code: the compiler then
	 * warns (-Wswitch) when a code is added to err.h without a text here,
	 * and a value outside the enum cannot index past the end of anything.
	 */
	switch (e) {
	case WL_OK:
		return ("ok");
	case WL_ERR_NOMEM:
		return ("out of memory");
	case WL_ERR_IO:
		return ("input/output error");
	case WL_ERR_CONFIG:
		return ("invalid configuration");
	case WL_ERR_PROTO:
		return ("protocol error");
	case WL_ERR_TOOBIG:
		return ("over a configured limit");
	case WL_ERR_AGAIN:
		return ("try again");
	case WL_ERR_CLOSED:
		return ("closed");
	case WL_ERR_NNG:
		return ("messaging error");
	case WL_ERR_STATE:
		return ("not allowed in the current state");
	}
	return ("unknown error");
}
