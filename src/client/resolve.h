/*
 * resolve.h - name resolution off the worker's loop: a host name is resolved by a detached
 * thread of its own, so a resolver that hangs (a dead DNS server, 30 s and more) never holds
 * the worker, and through it tt_flush and tt_close, beyond their deadlines. A numeric address
 * is converted at once, without a thread.
 *
 * The request is shared by the worker and the resolving thread and freed by whichever of the
 * two lets go of it last (a reference count): the worker may give up on a request that still
 * hangs, and the thread then frees it when getaddrinfo finally returns.
 */
#ifndef TT_CLIENT_RESOLVE_H
#define TT_CLIENT_RESOLVE_H

#include <sys/socket.h>

typedef struct tt__resolve tt__resolve;

/* A resolved address. */
typedef struct tt__addr {
    struct sockaddr_storage sa;
    socklen_t len;
    int family;
} tt__addr;

/* Convert a numeric host (IPv4 or IPv6) and port without any lookup: 0, or -1 when host is a
 * name (or invalid). */
int tt__resolve_numeric(const char *host, const char *port, tt__addr *out);

/* Start resolving host:port in a thread of its own. Returns the request, or NULL when no
 * memory or no thread could be had (the caller retries later). Worker only. */
tt__resolve *tt__resolve_start(const char *host, const char *port);

/* 1 when the request is done (*out filled, or *err set to a negative code when the name did
 * not resolve), 0 while it is still running. */
int tt__resolve_poll(tt__resolve *r, tt__addr *out, int *err);

/* The worker lets go of the request (NULL is accepted). Never waits for the thread. */
void tt__resolve_release(tt__resolve *r);

#endif
