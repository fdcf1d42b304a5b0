/*
 * auth.h - who may talk to the collector: the operator token that guards the /api/ routes and /metrics,
 * and the per-agent ingest tokens that decide an agent's identity from its hello's token
 * (never from the name the agent sends). The operator token is always configured unless the
 * collector runs with --no-auth (serve.c generates one at first start); token files that group
 * or others may read are refused (docs/security.md).
 */
#ifndef TT_COLLECTOR_AUTH_H
#define TT_COLLECTOR_AUTH_H

#include <stddef.h>

#include "common/wire.h"

#define AUTH_TOKEN_MAX 255       /* bytes in a token */
#define AUTH_FILE_MAX (1u << 20) /* bytes in a token file */
#define AUTH_INGEST_MAX 4096     /* entries in an ingest token file */

struct auth;

/* A new, empty configuration (no token required anywhere). NULL when out of memory. */
struct auth *auth_new(void);
void auth_free(struct auth *a);

/* The operator token: the first line of file (surrounding whitespace trimmed), or the value
 * itself with from_file 0 (from TELLTALE_OPERATOR_TOKEN). Returns 0, or -1 with err set for an
 * unreadable file, a file that group or others may access, or a token that is empty, too long
 * or holds control characters. The ingest token file must be private too. */
int auth_set_operator(struct auth *a, const char *value, int from_file, char *err, size_t errlen);

/* Ingest tokens from file: lines "AGENT TOKEN", '#' comments and blank lines ignored. Returns
 * 0, or -1 with err naming the bad line. */
int auth_load_ingest(struct auth *a, const char *path, char *err, size_t errlen);

/* Whether an operator token is configured. */
int auth_operator_required(const struct auth *a);

/* The operator token (NUL-terminated), NULL when none is configured. */
const char *auth_operator_token(const struct auth *a);

/* Check an Authorization header value ("Bearer T"; NULL when absent) against the operator
 * token in constant time (for tokens of equal length). 1 allowed, 0 refused. Thread-safe (the
 * configuration is read-only once the collector runs). */
int auth_operator_ok(const struct auth *a, const char *authorization);

/* The ingest hook (ingest_hooks.authorize): with ingest tokens configured, the agent's name
 * is the one the token belongs to, whatever the hello says, and 1 is returned (the connection's
 * identity is then the token's, "token:AGENT"); an unknown or missing token is refused (-1).
 * Without them every hello is accepted under its own name (0). ctx is the struct auth. */
int auth_authorize(void *ctx, const tt__hello *h, char *agent, char *err, size_t errlen);

/* Compare two byte strings in time that depends only on their lengths: 1 equal, 0 not. */
int auth_equal(const char *a, size_t an, const char *b, size_t bn);

#endif
