/*
 * addr.h -- "HOST:PORT" strings, as topology files and the bench tools
 * write them: split at the last colon so "[::1]:80" works, the brackets of
 * an IPv6 host removed, the port checked as a decimal number in range
 * (getaddrinfo would take 65537 as port 1).
 */
#ifndef WL_ADDR_H
#define WL_ADDR_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Splits `s`. On WL_OK, *host points into `s` (not NUL-terminated: *hostlen
 * bytes, possibly 0) and *port is from `min_port` to 65535. Returns
 * WL_ERR_CONFIG when `s` is not HOST:PORT or the port is out of range. */
wl_err wl_addr_split(const char *s, unsigned min_port, const char **host,
    size_t *hostlen, uint16_t *port);

#endif
