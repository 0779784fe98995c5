/* addr_test.c -- HOST:PORT splitting for topology files and bench tools. */
#include <string.h>

#include "addr.h"
#include "tap.h"

int
main(void)
{
	static const struct {
		const char *s;
		unsigned    min_port;
		wl_err      rc;
		const char *host;
		unsigned    port;
	} cases[] = {
		{ "127.0.0.1:7000", 1, WL_OK, "127.0.0.1", 7000 },
		{ "localhost:0", 0, WL_OK, "localhost", 0 },
		{ "localhost:0", 1, WL_ERR_CONFIG, NULL, 0 },
		{ "[::1]:80", 1, WL_OK, "::1", 80 },
		{ "::1:80", 1, WL_OK, "::1", 80 }, /* last colon */
		{ ":9000", 0, WL_OK, "", 9000 },   /* empty host: the caller decides */
		{ "h:65535", 1, WL_OK, "h", 65535 },
		/* getaddrinfo would take these modulo 65536. */
		{ "h:65536", 1, WL_ERR_CONFIG, NULL, 0 },
		{ "h:99999", 0, WL_ERR_CONFIG, NULL, 0 },
		{ "h:000080", 1, WL_ERR_CONFIG, NULL, 0 },
		{ "localhost", 0, WL_ERR_CONFIG, NULL, 0 },
		{ "h:", 0, WL_ERR_CONFIG, NULL, 0 },
		{ "h:8o", 0, WL_ERR_CONFIG, NULL, 0 },
		{ "h:-1", 0, WL_ERR_CONFIG, NULL, 0 },
		{ "h: 80", 0, WL_ERR_CONFIG, NULL, 0 },
		{ "", 0, WL_ERR_CONFIG, NULL, 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *host = NULL;
		size_t      hl   = 0;
		uint16_t    port = 0;
		wl_err      rc;

		rc = wl_addr_split(cases[i].s, cases[i].min_port, &host, &hl,
		    &port);
		if (cases[i].rc != WL_OK) {
			TAP_OK(rc == cases[i].rc, "'%s' (ports from %u) refused",
			    cases[i].s, cases[i].min_port);
			continue;
		}
		TAP_OK(rc == WL_OK && hl == strlen(cases[i].host) &&
		    memcmp(host, cases[i].host, hl) == 0 &&
		    port == cases[i].port, "'%s' is host '%s' port %u",
		    cases[i].s, cases[i].host, cases[i].port);
	}
	return TAP_DONE();
}
