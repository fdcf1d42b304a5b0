/*
 * tls.h - the worker's TLS link (tls.c, GnuTLS): credentials per client, one link per
 * connection. Worker thread only. Reads and writes follow recv/send: a count, or -1 with errno
 * EAGAIN (try after poll), EINTR, or another value for a broken link; recv returns 0 at the end.
 */
#ifndef TT_CLIENT_TLS_H
#define TT_CLIENT_TLS_H

#include <sys/types.h>

#include "client/client.h"

typedef struct tt__tls_creds tt__tls_creds;
typedef struct tt__tls_link tt__tls_link;

/* Trust anchors (cfg->tls_ca, else the system store) and the optional client certificate.
 * Returns 0, or a negative TT_E* with the reason in err. */
int tt__tls_creds_open(tt__tls_creds **out, const tt__cfg *cfg, char *err, size_t errlen);
void tt__tls_creds_free(tt__tls_creds *t);

/* A client session on the connected, non-blocking fd, checking that the server's certificate
 * names `name` (a DNS name or an IP address). The fd stays the caller's. */
int tt__tls_link_open(tt__tls_link **out, tt__tls_creds *creds, const char *name, int fd, char *err,
                      size_t errlen);
/* One step of the handshake: 1 done, 0 in progress (poll for tt__tls_link_wants_write ?
 * POLLOUT : POLLIN), -1 failed with the reason in err (certificate refused, and why). */
int tt__tls_link_handshake(tt__tls_link *t, char *err, size_t errlen);
int tt__tls_link_wants_write(const tt__tls_link *t);
ssize_t tt__tls_link_send(tt__tls_link *t, const void *buf, size_t n);
ssize_t tt__tls_link_recv(tt__tls_link *t, void *buf, size_t n);
/* After tt__tls_link_recv failed with EPROTO: why, as text ("tls: the collector refused the
 * session: Certificate is required"). */
const char *tt__tls_link_error(const tt__tls_link *t);
/* Free the session (sends nothing: the socket is closed right after). NULL is accepted. */
void tt__tls_link_close(tt__tls_link *t);

#endif
