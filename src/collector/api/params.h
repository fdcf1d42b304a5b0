/*
 * params.h - parsers of query parameter values (params.c); http_parse_time is declared in
 * http.h and defined in params.c.
 */
#ifndef TT_COLLECTOR_API_PARAMS_H
#define TT_COLLECTOR_API_PARAMS_H

#include <stdint.h>

/* A comma-separated list of event kind names (and "alert") into a bit mask; 0 or -1. */
int params_kinds(const char *s, uint32_t *mask);

/* A severity name (trace ... fatal) or number 1-24; 0 or -1. */
int params_severity(const char *s, uint32_t *out);

/* Exactly 32 hex digits into 16 bytes; 0 or -1. */
int params_hex16(const char *s, uint8_t out[16]);

/* A decimal integer in [0, max], or dflt when v is NULL; 0 or -1. */
int params_limit(const char *v, uint64_t dflt, uint64_t max, uint64_t *out);

#endif
