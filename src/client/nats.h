/*
 * nats.h - publishing to NATS JetStream instead of a native connection (endpoint
 * "nats://HOST:PORT[,HOST:PORT...]"; the contract with the collector is the NATS section of
 * docs/wire-format.md). The worker calls these in place of conn.c's functions when the
 * endpoint is nats://; everything else of the worker (batches, window, spool, flush, close)
 * is the same.
 *
 * libnats runs threads of its own (connection, subscriptions, timers). They never touch the
 * worker's state: PubAcks, connection changes and control messages go through a small
 * mutex-protected mailbox shared with them (nats.c), and the worker's eventfd wakes it.
 */
#ifndef TT_CLIENT_NATS_H
#define TT_CLIENT_NATS_H

#include <stddef.h>
#include <stdint.h>

#define TT_NATS_SERVERS_MAX 16
#define TT_NATS_URL_MAX 280
#define TT_NATS_SUBJECT_MAX 200
#define TT_NATS_TOKEN_MAX 256

struct tt__worker;

/* 1 when s names a NATS endpoint (starts with "nats://"). */
int tt__nats_is_endpoint(const char *s);

/* Parse "nats://HOST:PORT[,HOST:PORT...]" (each element may repeat the nats:// scheme) into
 * up to TT_NATS_SERVERS_MAX URLs "nats://HOST:PORT" (servers may be NULL to only check).
 * A user or password in the URL is refused: the token goes in nats_token_file. Returns the
 * number of servers, or -EINVAL with the reason in err. */
int tt__nats_endpoint_parse(const char *s, char (*servers)[TT_NATS_URL_MAX], char *err,
                            size_t errlen);

/* Check a subject prefix (nats_subject): tokens of [A-Za-z0-9_-] separated by dots, no
 * wildcard. 0, or -EINVAL with the reason in err. */
int tt__nats_subject_check(const char *s, char *err, size_t errlen);

/* Read the token file (nats_token_file): a regular file that group and others cannot read,
 * at most TT_NATS_TOKEN_MAX - 1 bytes, one line. 0 with the token in out, or a negative
 * errno (-EACCES for a file others may read) with the reason in err. */
int tt__nats_token_load(const char *path, char *out, size_t cap, char *err, size_t errlen);

/* FNV-1a over n bytes: 32-bit (the ingest partition) and 64-bit (the control subject). */
uint32_t tt__fnv1a32(const void *p, size_t n);
uint64_t tt__fnv1a64(const void *p, size_t n);

/* Worker side (worker.c). init at worker start (0 or TT_ENOMEM); step once per loop turn:
 * connect when due, take in PubAcks and control messages, publish what the window holds;
 * timeout_ns says when the next step is due without any wakeup (-1: none); close at the end
 * of the worker (after the window was settled); forget in a forked child (libnats's threads
 * are not there: its objects are abandoned, never called). */
int tt__nats_init(struct tt__worker *w);
void tt__nats_step(struct tt__worker *w, uint64_t now);
int64_t tt__nats_timeout_ns(const struct tt__worker *w, uint64_t now);
void tt__nats_close(struct tt__worker *w);
void tt__nats_forget(struct tt__worker *w);

#endif
