/*
 * tls.h - the TLS transport of the native source (tls.c, GnuTLS): the collector's credentials
 * (certificate, key, optional client CA for mTLS) and one server session per tls:// agent
 * connection. The loop's connection (native_conn.c) reads and writes through it with the
 * conventions of recv and send, so the frame decoder behind it is the one of plain TCP.
 * Loop thread only, except tls_server_open/free (start-up and shutdown).
 */
#ifndef TT_COLLECTOR_TLS_H
#define TT_COLLECTOR_TLS_H

#include <stddef.h>
#include <sys/types.h>

struct tls_server;
struct tls_conn;

/* Load cert_file and key_file (PEM; the key must be mode 0600 or stricter, refused otherwise)
 * and, when client_ca is not empty, require client certificates signed by it. 0, or -1 with
 * the reason in err. */
int tls_server_open(struct tls_server **out, const char *cert_file, const char *key_file,
                    const char *client_ca, char *err, size_t errlen);
void tls_server_free(struct tls_server *s);
/* GnuTLS's credentials for libmicrohttpd's HTTPS: the same files' PEM text (owned by s). */
const char *tls_server_cert_pem(const struct tls_server *s);
const char *tls_server_key_pem(const struct tls_server *s);

/* A server session on fd (accepted, non-blocking; the fd stays the caller's). NULL when out
 * of memory. */
struct tls_conn *tls_conn_new(struct tls_server *s, int fd);
void tls_conn_free(struct tls_conn *t);

/* One step of the handshake: 1 done, 0 in progress (wait for tls_conn_wants_write ? EPOLLOUT
 * : EPOLLIN), -1 failed (why in err: no client certificate, one not signed by the client CA,
 * not TLS at all). */
int tls_conn_handshake(struct tls_conn *t, char *err, size_t errlen);
int tls_conn_wants_write(const struct tls_conn *t);

/* recv and send: a count, 0 at the end (recv), or -1 with errno EAGAIN, EINTR or EPROTO. */
ssize_t tls_conn_recv(struct tls_conn *t, void *buf, size_t n);
ssize_t tls_conn_send(struct tls_conn *t, const void *buf, size_t n);
/* Bytes already decrypted inside the session: readable without any new socket event. */
size_t tls_conn_pending(const struct tls_conn *t);

/* The name a verified client certificate gives (mTLS): its first DNS name in the subject
 * alternative name, else its subject's common name (printable ASCII; the caller makes it the
 * connection's identity "cert:NAME" and the agent's name). Writes out (n bytes) and
 * returns 0; -1 when the peer presented no verified certificate. */
int tls_conn_peer_name(const struct tls_conn *t, char *out, size_t n);

#endif
