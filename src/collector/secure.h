/*
 * secure.h - the collector's files and secrets (docs/security.md): a private data directory,
 * private files in it, secret files that only their owner can read, and the operator token
 * generated at first start.
 */
#ifndef TT_COLLECTOR_SECURE_H
#define TT_COLLECTOR_SECURE_H

#include <stddef.h>

#define SECURE_TOKEN_FILE "operator.token"
#define SECURE_TOKEN_BYTES 32 /* 256 bits of getrandom, written as 64 hex digits */

/* Make dir the collector's private data directory: created 0700 when missing; when it exists it
 * must be a directory owned by this user with no group or other permissions (refused otherwise,
 * err giving the chmod to run). The store's files there (the database, its WAL and SHM) that
 * group or others may access are set to 0600. 0 or -1. */
int secure_data_dir(const char *dir, char *err, size_t errlen);

/* Whether fd (an open secret file) is refused because group or others may read or write it;
 * 0 when private, -1 with err naming path and the chmod to run. */
int secure_private_fd(int fd, const char *path, char *err, size_t errlen);

/* The generated operator token DIR/operator.token: read when it exists (it must be private),
 * else created from getrandom with O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600. path receives the
 * file's path; *created says whether this call made it. 0 or -1 with err set. */
int secure_operator_token(const char *dir, char *path, size_t pathlen, int *created, char *err,
                          size_t errlen);

/* Tell the user who started the collector where the dashboard is. The URL with the token in its
 * fragment goes only to a terminal (stderr when it is one); the log gets the URL and the token
 * file's path, never the token. token NULL: no token (--no-auth). scheme: "http" or "https". */
void secure_announce(const char *scheme, const char *http_bound, const char *token,
                     const char *token_path);

#endif
