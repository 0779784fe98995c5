/*
 * addr.c -- splitting "HOST:PORT" (see addr.h).
 */
#include "addr.h"

#include <string.h>

wl_err
wl_addr_split(const char *s, unsigned min_port, const char **host,
    size_t *hostlen, uint16_t *port)
{
	const char *colon = strrchr(s, ':');
	size_t      digits;
	size_t      hl;
	unsigned    p = 0;

	if (colon == NULL) {
		return (WL_ERR_CONFIG);
	}
	digits = strlen(colon + 1);
	/* At most 5 digits, so the sum below cannot overflow. */
	if (digits == 0 || digits > 5 ||
	    strspn(colon + 1, "0123456789") != digits) {
		return (WL_ERR_CONFIG);
	}
	for (size_t i = 0; i < digits; i++) {
		p = p * 10 + (unsigned) (colon[1 + i] - '0');
	}
	if (p < min_port || p > 65535) {
		return (WL_ERR_CONFIG);
	}
	hl = (size_t) (colon - s);
	*host = s;
	if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') {
		(*host)++;
		hl -= 2;
	}
	*hostlen = hl;
	*port    = (uint16_t) p;
	return (WL_OK);
}
