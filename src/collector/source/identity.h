/*
 * identity.h - who is on the other end of an agent connection (identity.c): the peer's
 * credentials on a Unix socket (SO_PEERCRED), the local user behind a loopback TCP peer, and the
 * collector's policy on who may ingest (--ingest-uids, --ingest-gids, --ingest-open).
 *
 * A connection's identity is one short string, fixed once at hello time and carried with every
 * batch to the store, which gives each agent name and instance id to the identity that used it
 * first (store/sqlite.c). Its forms, strongest first:
 *   "cert:SUBJECT"  the subject of a verified client certificate (set by the TLS layer before
 *                   the hello through conn_set_identity; the hello keeps it)
 *   "token:AGENT"   a valid ingest token, which names its agent (api/auth.c)
 *   "uid:N"         the peer's user: SO_PEERCRED on a Unix socket, or, with --ingest-open on a
 *                   loopback TCP listener, the owner of the peer's socket (sock_diag)
 *   "tcp:ADDR"      --ingest-open and no owner found: only the peer's address (documented weak)
 */
#ifndef TT_COLLECTOR_IDENTITY_H
#define TT_COLLECTOR_IDENTITY_H

#include <stddef.h>
#include <sys/types.h>

#include "collector/collector.h"

/* What the loop learns about a peer when it accepts it. */
struct peer {
    int is_unix;
    int has_cred; /* unix: SO_PEERCRED answered */
    uid_t uid;
    gid_t gid;
    pid_t pid;
    gid_t groups[32]; /* supplementary groups (SO_PEERGROUPS), the first 32 */
    int n_groups;
};

/* Fill p for the connected socket fd (family, and credentials on a Unix socket). */
void peer_probe(int fd, struct peer *p);

/* Whether a Unix-socket peer may ingest: the collector's own uid, or a uid of --ingest-uids, or
 * a group of --ingest-gids among its primary and supplementary groups. 0 allowed; -1 refused with the reason in err. */
int peer_unix_allowed(const struct collector_opts *o, const struct peer *p, char *err,
                      size_t errlen);

/* The identity of a peer without token or certificate, into out ("uid:N" or "tcp:ADDR"); for a
 * TCP peer, -1 with the reason in err unless o->ingest_open. */
int peer_identity(const struct collector_opts *o, int fd, const struct peer *p, char *out, size_t n,
                  char *err, size_t errlen);

/* Parse a comma-separated list of user (uids 1) or group (uids 0) names or numbers into ids
 * (at most cap). Returns the count, or -1 naming the bad entry in err. */
int identity_parse_ids(const char *list, int uids, unsigned *ids, int cap, char *err,
                       size_t errlen);

/* Whether every TCP listener of o that takes agents without a client certificate (tls://
 * listeners with --tls-client-ca do not) is on a loopback address (what --ingest-open requires). */
int identity_tcp_all_loopback(const struct collector_opts *o);

#endif
