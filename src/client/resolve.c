/*
 * resolve.c - a host name resolved in a detached thread (resolve.h says why). The thread
 * blocks every signal, like the worker, and owns nothing but the request.
 *
 * INVARIANTS
 * - refs counts the holders of a request: 2 while both the worker and the thread hold it; the
 *   holder whose release brings it to 0 frees it. The thread's last access to the request is
 *   its release.
 * - The thread writes addr and err before its release store of state; the worker reads them
 *   only after an acquire load of state that saw it done.
 */
#include "client/resolve.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "telltale.h"

enum { RESOLVE_PENDING = 0, RESOLVE_DONE = 1 };

struct tt__resolve {
    _Atomic int refs;
    _Atomic int state; /* release by the thread when done, acquire by tt__resolve_poll */
    char host[256];
    char port[8];
    tt__addr addr; /* written by the thread before state is DONE */
    int err;       /* idem: 0, or a negative code */
};

int tt__resolve_numeric(const char *host, const char *port, tt__addr *out)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    if (getaddrinfo(host, port, &hints, &res) != 0 || !res) {
        return -1;
    }
    int rc = -1;
    if (res->ai_addrlen <= sizeof out->sa) {
        memcpy(&out->sa, res->ai_addr, res->ai_addrlen);
        out->len = res->ai_addrlen;
        out->family = res->ai_family;
        rc = 0;
    }
    freeaddrinfo(res);
    return rc;
}

static void release(tt__resolve *r)
{
    if (atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) == 1) {
        free(r);
    }
}

static void *resolve_main(void *arg)
{
    tt__resolve *r = arg;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    int rc = getaddrinfo(r->host, r->port, &hints, &res);
    if (rc == 0 && res && res->ai_addrlen <= sizeof r->addr.sa) {
        memcpy(&r->addr.sa, res->ai_addr, res->ai_addrlen);
        r->addr.len = res->ai_addrlen;
        r->addr.family = res->ai_family;
        r->err = 0;
    } else {
        r->err = rc == EAI_MEMORY ? TT_ENOMEM : TT_ENOENT;
    }
    if (res) {
        freeaddrinfo(res);
    }
    /* Pairs with the acquire load in tt__resolve_poll. */
    atomic_store_explicit(&r->state, RESOLVE_DONE, memory_order_release);
    release(r);
    return NULL;
}

tt__resolve *tt__resolve_start(const char *host, const char *port)
{
    size_t hl = strlen(host), pl = strlen(port);
    if (hl >= sizeof((tt__resolve *)0)->host || pl >= sizeof((tt__resolve *)0)->port) {
        return NULL;
    }
    tt__resolve *r = calloc(1, sizeof *r);
    if (!r) {
        return NULL;
    }
    memcpy(r->host, host, hl + 1);
    memcpy(r->port, port, pl + 1);
    atomic_init(&r->refs, 2);
    atomic_init(&r->state, RESOLVE_PENDING);
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0) {
        free(r);
        return NULL;
    }
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    /* The thread takes no signal: block them all while it is created. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    int rc = pthread_create(&t, &attr, resolve_main, r);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        free(r);
        return NULL;
    }
    return r;
}

int tt__resolve_poll(tt__resolve *r, tt__addr *out, int *err)
{
    /* Pairs with the release store in resolve_main. */
    if (atomic_load_explicit(&r->state, memory_order_acquire) != RESOLVE_DONE) {
        return 0;
    }
    *err = r->err;
    if (r->err == 0) {
        *out = r->addr;
    }
    return 1;
}

void tt__resolve_release(tt__resolve *r)
{
    if (r) {
        release(r);
    }
}
