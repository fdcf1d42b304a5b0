/*
 * tls.c - TLS for the worker's connection (tls:// endpoints), with GnuTLS: the credentials
 * (trust anchors, an optional client certificate for mTLS), a non-blocking handshake that
 * checks the collector's certificate chain and host name, and record reads and writes with
 * the errno conventions of recv and send, so conn.c treats a TLS link like a socket.
 *
 * Everything here runs on the worker thread only, never on an event call: the credentials are
 * loaded at the first tls:// connection attempt (reading the system trust store takes
 * milliseconds), and every handshake and record operation happens in the worker's poll loop.
 */
#include "client/tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <arpa/inet.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "common/tls_io.h"

struct tt__tls_creds {
    gnutls_certificate_credentials_t cred;
};

struct tt__tls_link {
    gnutls_session_t s;
    int send_again;  /* the last send met EAGAIN: the record waits inside GnuTLS */
    char error[200]; /* why the session broke after the handshake (an alert), or empty */
};

/* A private key readable by others is refused, like the collector's (docs/security.md). */
static int key_file_private(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "tls: key file %s: %s", path, strerror(errno));
        return -1;
    }
    if (st.st_mode & 077) {
        snprintf(err, errlen, "tls: key file %s is readable by group or others (chmod 600 %s)",
                 path, path);
        return -1;
    }
    return 0;
}

int tt__tls_creds_open(tt__tls_creds **out, const tt__cfg *cfg, char *err, size_t errlen)
{
    *out = NULL;
    tt__tls_creds *t = calloc(1, sizeof *t);
    if (!t || gnutls_certificate_allocate_credentials(&t->cred) != GNUTLS_E_SUCCESS) {
        free(t);
        snprintf(err, errlen, "tls: out of memory");
        return TT_ENOMEM;
    }
    int rc;
    if (cfg->tls_ca[0]) {
        rc = gnutls_certificate_set_x509_trust_file(t->cred, cfg->tls_ca, GNUTLS_X509_FMT_PEM);
        if (rc <= 0) {
            snprintf(err, errlen, "tls: CA file %s: %s", cfg->tls_ca,
                     rc < 0 ? gnutls_strerror(rc) : "no certificate in it");
            goto fail;
        }
    } else {
        rc = gnutls_certificate_set_x509_system_trust(t->cred);
        if (rc <= 0) {
            snprintf(err, errlen, "tls: no system trust store (%s); set tls.ca",
                     rc < 0 ? gnutls_strerror(rc) : "empty");
            goto fail;
        }
    }
    if (cfg->tls_cert[0] || cfg->tls_key[0]) {
        if (!cfg->tls_cert[0] || !cfg->tls_key[0]) {
            snprintf(err, errlen, "tls: a client certificate needs both tls.cert and tls.key");
            goto fail;
        }
        if (key_file_private(cfg->tls_key, err, errlen) != 0) {
            goto fail;
        }
        rc = gnutls_certificate_set_x509_key_file(t->cred, cfg->tls_cert, cfg->tls_key,
                                                  GNUTLS_X509_FMT_PEM);
        if (rc < 0) {
            snprintf(err, errlen, "tls: client certificate %s / key %s: %s", cfg->tls_cert,
                     cfg->tls_key, gnutls_strerror(rc));
            goto fail;
        }
    }
    *out = t;
    return 0;
fail:
    gnutls_certificate_free_credentials(t->cred);
    free(t);
    return TT_EINVAL;
}

void tt__tls_creds_free(tt__tls_creds *t)
{
    if (t) {
        gnutls_certificate_free_credentials(t->cred);
        free(t);
    }
}

static int is_ip_literal(const char *host)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

int tt__tls_link_open(tt__tls_link **out, tt__tls_creds *creds, const char *name, int fd, char *err,
                      size_t errlen)
{
    *out = NULL;
    tt__tls_link *t = calloc(1, sizeof *t);
    if (!t || gnutls_init(&t->s, GNUTLS_CLIENT | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL) != 0) {
        free(t);
        snprintf(err, errlen, "tls: out of memory");
        return TT_ENOMEM;
    }
    int rc = gnutls_set_default_priority(t->s);
    rc = rc ? rc : gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, creds->cred);
    /* SNI carries names only, never addresses (RFC 6066). */
    if (rc == 0 && !is_ip_literal(name)) {
        rc = gnutls_server_name_set(t->s, GNUTLS_NAME_DNS, name, strlen(name));
    }
    if (rc != 0) {
        snprintf(err, errlen, "tls: session setup: %s", gnutls_strerror(rc));
        gnutls_deinit(t->s);
        free(t);
        return TT_EPROTO;
    }
    /* The chain must lead to a trusted CA and the certificate must name the host (a DNS name,
     * or an IP address in its SAN when the endpoint is an address): checked in the handshake,
     * which fails otherwise. */
    gnutls_session_set_verify_cert(t->s, name, 0);
    gnutls_transport_set_int(t->s, fd);
    gnutls_handshake_set_timeout(t->s, 0); /* conn.c's ack_timeout bounds the attempt */
    *out = t;
    return 0;
}

/* Why verification failed, in GnuTLS's words ("The certificate is NOT trusted. The
 * certificate issuer is unknown."). */
static void verify_reason(tt__tls_link *t, char *err, size_t errlen)
{
    unsigned status = gnutls_session_get_verify_cert_status(t->s);
    gnutls_datum_t out = {NULL, 0};
    if (gnutls_certificate_verification_status_print(status, gnutls_certificate_type_get(t->s),
                                                     &out, 0) == 0 &&
        out.data) {
        snprintf(err, errlen, "tls: the collector's certificate was refused: %s",
                 (const char *)out.data);
        gnutls_free(out.data);
    } else {
        snprintf(err, errlen, "tls: the collector's certificate was refused (status 0x%x)", status);
    }
}

int tt__tls_link_handshake(tt__tls_link *t, char *err, size_t errlen)
{
    int rc;
    do {
        rc = gnutls_handshake(t->s);
    } while (rc == GNUTLS_E_INTERRUPTED);
    if (rc == GNUTLS_E_SUCCESS) {
        return 1;
    }
    if (rc == GNUTLS_E_AGAIN || !gnutls_error_is_fatal(rc)) {
        return 0;
    }
    if (rc == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
        verify_reason(t, err, errlen);
    } else {
        snprintf(err, errlen, "tls: handshake failed: %s", gnutls_strerror(rc));
    }
    return -1;
}

int tt__tls_link_wants_write(const tt__tls_link *t)
{
    return gnutls_record_get_direction(t->s) == 1;
}

ssize_t tt__tls_link_send(tt__tls_link *t, const void *buf, size_t n)
{
    /* After EAGAIN the record is already encrypted inside GnuTLS: flush it (NULL, 0), which
     * returns the length it carried; the caller's bytes at the same offset are that record. */
    ssize_t k =
        t->send_again ? gnutls_record_send(t->s, NULL, 0) : gnutls_record_send(t->s, buf, n);
    t->send_again = 0;
    return tt__tls_send_result(k, &t->send_again);
}

ssize_t tt__tls_link_recv(tt__tls_link *t, void *buf, size_t n)
{
    ssize_t k = gnutls_record_recv(t->s, buf, n);
    if (k >= 0) {
        return k;
    }
    int soft = tt__tls_recv_soft(k);
    if (soft > -2) {
        return soft;
    }
    /* In TLS 1.3 the collector checks our certificate (mTLS) after our side of the handshake
     * is done: its refusal arrives here, as an alert. */
    if (k == GNUTLS_E_FATAL_ALERT_RECEIVED) {
        const char *a = gnutls_alert_get_name(gnutls_alert_get(t->s));
        snprintf(t->error, sizeof t->error, "tls: the collector refused the session: %s",
                 a ? a : "fatal alert");
        errno = EPROTO;
    } else {
        errno = ECONNRESET; /* a broken link, as with a plain socket */
    }
    return -1;
}

const char *tt__tls_link_error(const tt__tls_link *t)
{
    return t->error;
}

void tt__tls_link_close(tt__tls_link *t)
{
    if (t) {
        gnutls_deinit(t->s);
        free(t);
    }
}
