/*
 * tls.c - the native source's TLS transport (GnuTLS, the library libmicrohttpd already uses
 * for HTTPS: docs/design.md). The server credentials are read once at start-up; each tls://
 * connection gets a non-blocking server session whose handshake the epoll loop steps like any
 * other read or write, and whose records then carry the same frames as plain TCP into the
 * same decoder (native_conn.c).
 *
 * With a client CA (mTLS) the handshake requires a client certificate and GnuTLS checks its
 * chain against that CA during the handshake: a connection without one, or with one from
 * another CA, never reaches the frame decoder. The certificate's name then fixes the agent's
 * name (tls_conn_peer_name).
 */
#include "collector/source/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "common/tls_io.h"

#define PEM_MAX (1u << 20) /* a certificate chain or key file larger than this is refused */

struct tls_server {
    gnutls_certificate_credentials_t cred;
    int require_client; /* mTLS: a verified client certificate is required */
    char *cert_pem;
    char *key_pem;
    size_t key_len;
};

struct tls_conn {
    gnutls_session_t s;
    int send_again; /* the last send met EAGAIN: its record waits inside GnuTLS */
    int verified;   /* the handshake verified a client certificate */
};

/* Read a PEM file whole, checking its size first. With is_key, the file must be private to its
 * owner: a key others can read is no secret (chmod 600). */
static char *read_pem(const char *path, int is_key, size_t *len, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    char *buf = NULL;
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        goto out;
    }
    if (is_key && (st.st_mode & 077)) {
        snprintf(err, errlen, "key file %s is readable by group or others: chmod 600 %s", path,
                 path);
        goto out;
    }
    if (!S_ISREG(st.st_mode) || st.st_size <= 0 || (uint64_t)st.st_size > PEM_MAX) {
        snprintf(err, errlen, "%s: not a PEM file of at most %u bytes", path, PEM_MAX);
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    ssize_t n = buf ? read(fd, buf, (size_t)st.st_size) : -1;
    if (n != st.st_size) {
        snprintf(err, errlen, "%s: cannot read it", path);
        free(buf);
        buf = NULL;
        goto out;
    }
    buf[n] = 0;
    *len = (size_t)n;
out:
    if (fd >= 0) {
        close(fd);
    }
    return buf;
}

static int load_pair(struct tls_server *s, const char *cert_file, const char *key_file, char *err,
                     size_t errlen)
{
    size_t cert_len = 0;
    s->cert_pem = read_pem(cert_file, 0, &cert_len, err, errlen);
    s->key_pem = s->cert_pem ? read_pem(key_file, 1, &s->key_len, err, errlen) : NULL;
    if (!s->key_pem) {
        return -1;
    }
    gnutls_datum_t c = {(unsigned char *)s->cert_pem, (unsigned)cert_len};
    gnutls_datum_t k = {(unsigned char *)s->key_pem, (unsigned)s->key_len};
    int rc = gnutls_certificate_set_x509_key_mem(s->cred, &c, &k, GNUTLS_X509_FMT_PEM);
    if (rc < 0) {
        snprintf(err, errlen, "certificate %s with key %s: %s", cert_file, key_file,
                 gnutls_strerror(rc));
        return -1;
    }
    return 0;
}

int tls_server_open(struct tls_server **out, const char *cert_file, const char *key_file,
                    const char *client_ca, char *err, size_t errlen)
{
    *out = NULL;
    struct tls_server *s = calloc(1, sizeof *s);
    if (!s || gnutls_certificate_allocate_credentials(&s->cred) != GNUTLS_E_SUCCESS) {
        free(s);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (load_pair(s, cert_file, key_file, err, errlen) != 0) {
        tls_server_free(s);
        return -1;
    }
    if (client_ca && client_ca[0]) {
        int rc = gnutls_certificate_set_x509_trust_file(s->cred, client_ca, GNUTLS_X509_FMT_PEM);
        if (rc <= 0) {
            snprintf(err, errlen, "client CA %s: %s", client_ca,
                     rc < 0 ? gnutls_strerror(rc) : "no certificate in it");
            tls_server_free(s);
            return -1;
        }
        s->require_client = 1;
    }
    *out = s;
    return 0;
}

void tls_server_free(struct tls_server *s)
{
    if (!s) {
        return;
    }
    gnutls_certificate_free_credentials(s->cred);
    free(s->cert_pem);
    if (s->key_pem) {
        explicit_bzero(s->key_pem, s->key_len);
        free(s->key_pem);
    }
    free(s);
}

const char *tls_server_cert_pem(const struct tls_server *s)
{
    return s->cert_pem;
}

const char *tls_server_key_pem(const struct tls_server *s)
{
    return s->key_pem;
}

struct tls_conn *tls_conn_new(struct tls_server *s, int fd)
{
    struct tls_conn *t = calloc(1, sizeof *t);
    if (!t || gnutls_init(&t->s, GNUTLS_SERVER | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL) != 0) {
        free(t);
        return NULL;
    }
    if (gnutls_set_default_priority(t->s) != 0 ||
        gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, s->cred) != 0) {
        gnutls_deinit(t->s);
        free(t);
        return NULL;
    }
    if (s->require_client) {
        gnutls_certificate_server_set_request(t->s, GNUTLS_CERT_REQUIRE);
        /* The client's chain is checked against the client CA inside the handshake. */
        gnutls_session_set_verify_cert(t->s, NULL, 0);
    }
    gnutls_transport_set_int(t->s, fd);
    gnutls_handshake_set_timeout(t->s, 0); /* the loop's hello timeout bounds it */
    return t;
}

void tls_conn_free(struct tls_conn *t)
{
    if (t) {
        gnutls_deinit(t->s);
        free(t);
    }
}

int tls_conn_handshake(struct tls_conn *t, char *err, size_t errlen)
{
    int rc;
    do {
        rc = gnutls_handshake(t->s);
    } while (rc == GNUTLS_E_INTERRUPTED);
    if (rc == GNUTLS_E_SUCCESS) {
        unsigned status = 0;
        t->verified = gnutls_certificate_get_peers(t->s, NULL) != NULL &&
                      gnutls_certificate_verify_peers2(t->s, &status) == 0 && status == 0;
        return 1;
    }
    if (rc == GNUTLS_E_AGAIN || !gnutls_error_is_fatal(rc)) {
        return 0;
    }
    snprintf(err, errlen, "%s", gnutls_strerror(rc));
    /* Tell the agent why (certificate required, unknown CA) before the socket closes: one
     * try, a full socket loses it. */
    gnutls_alert_send_appropriate(t->s, rc);
    return -1;
}

int tls_conn_wants_write(const struct tls_conn *t)
{
    return gnutls_record_get_direction(t->s) == 1;
}

ssize_t tls_conn_recv(struct tls_conn *t, void *buf, size_t n)
{
    ssize_t k = gnutls_record_recv(t->s, buf, n);
    if (k >= 0) {
        return k;
    }
    int soft = tt__tls_recv_soft(k);
    if (soft > -2) {
        return soft;
    }
    errno = EPROTO;
    return -1;
}

ssize_t tls_conn_send(struct tls_conn *t, const void *buf, size_t n)
{
    /* After EAGAIN the record is already encrypted inside GnuTLS: flush it (NULL, 0); the
     * count returned is the one of that record, whose bytes the caller still holds first. */
    ssize_t k =
        t->send_again ? gnutls_record_send(t->s, NULL, 0) : gnutls_record_send(t->s, buf, n);
    t->send_again = 0;
    return tt__tls_send_result(k, &t->send_again);
}

size_t tls_conn_pending(const struct tls_conn *t)
{
    return gnutls_record_check_pending(t->s);
}

/* Certificate names are attacker-chosen text: keep printable ASCII only. */
static void clean_copy(char *out, size_t n, const char *prefix, const char *name, size_t len)
{
    size_t o = (size_t)snprintf(out, n, "%s", prefix);
    for (size_t i = 0; i < len && o + 1 < n; i++) {
        unsigned char ch = (unsigned char)name[i];
        out[o++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    out[o < n ? o : n - 1] = 0;
}

int tls_conn_peer_name(const struct tls_conn *t, char *out, size_t n)
{
    unsigned count = 0;
    const gnutls_datum_t *der = gnutls_certificate_get_peers(t->s, &count);
    gnutls_x509_crt_t crt;
    if (!t->verified || !der || count == 0 || gnutls_x509_crt_init(&crt) != 0) {
        return -1;
    }
    int rc = -1;
    char name[256];
    if (gnutls_x509_crt_import(crt, &der[0], GNUTLS_X509_FMT_DER) == 0) {
        for (unsigned seq = 0; rc != 0 && seq < 16; seq++) {
            size_t len = sizeof name;
            int type = gnutls_x509_crt_get_subject_alt_name(crt, seq, name, &len, NULL);
            if (type < 0) {
                break;
            }
            if (type == GNUTLS_SAN_DNSNAME) {
                clean_copy(out, n, "", name, len);
                rc = 0;
            }
        }
        size_t len = sizeof name;
        if (rc != 0 && gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, name,
                                                     &len) == 0) {
            clean_copy(out, n, "", name, len);
            rc = 0;
        }
    }
    gnutls_x509_crt_deinit(crt);
    return rc;
}
