/*
 * tls_io.h - what a GnuTLS record call's result means to a caller that speaks errno, the same
 * on both ends of a tls:// link: the agent's (src/client/tls.c) and the collector's
 * (src/collector/source/tls.c). Only their fatal errors differ (the agent names the
 * collector's alert; the collector just ends the connection), so that part stays theirs.
 */
#ifndef TT_COMMON_TLS_IO_H
#define TT_COMMON_TLS_IO_H

#include <errno.h>
#include <sys/types.h>

#include <gnutls/gnutls.h>

/* A gnutls_record_send result k: k when bytes went, else -1 with errno EAGAIN or EINTR (the
 * record waits inside GnuTLS: *again is set, and the next send must flush it with NULL, 0) or
 * EPIPE (the session is broken). */
static inline ssize_t tt__tls_send_result(ssize_t k, int *again)
{
    if (k >= 0) {
        return k;
    }
    if (k == GNUTLS_E_AGAIN || k == GNUTLS_E_INTERRUPTED) {
        *again = 1;
        errno = k == GNUTLS_E_AGAIN ? EAGAIN : EINTR;
    } else {
        errno = EPIPE;
    }
    return -1;
}

/* A gnutls_record_recv result k that is not a count: 0 for an end (the peer closed without
 * close_notify: frames say where they end, so an end is an end), -1 with errno EAGAIN or EINTR
 * for a retry, -2 for a fatal error, whose errno the caller sets. */
static inline int tt__tls_recv_soft(ssize_t k)
{
    if (k == GNUTLS_E_AGAIN || k == GNUTLS_E_INTERRUPTED) {
        errno = k == GNUTLS_E_AGAIN ? EAGAIN : EINTR;
        return -1;
    }
    return k == GNUTLS_E_PREMATURE_TERMINATION ? 0 : -2;
}

#endif
