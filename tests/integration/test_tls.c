/*
 * test_tls.c - TLS for ingest and HTTP (docs/security.md) against a real `telltale serve`, with
 * a throwaway PKI made by GnuTLS's certtool (scripts/make-test-pki): a tls:// agent that trusts
 * the right CA is accepted and every event is stored (the conservation check of serve.c);
 * the wrong CA, an expired certificate and a certificate for another host are refused, with the
 * reason in tt_connection_error and the count in tt_stats.tls_failures; with --tls-client-ca
 * (mTLS) an agent without a certificate, or with one from another CA, is refused, and the right
 * one is stored under its certificate's name whatever its hello says; --https answers with the
 * operator token and plain HTTP on that port gets no answer; a key file others can read is
 * refused at start. With mTLS the identity is cert:NAME in the store's owners table, no token is
 * needed, a token of another agent and a name another identity owns are refused; without a
 * client CA a tls:// listener needs a token unless --ingest-open on loopback; TLS reads wait for
 * the ingest budget like TCP ones and are resumed without loss.
 */
#include "test.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "batches.h"
#include "common/wire.h"
#include "operator.h"
#include "serve.h"

static double mult(void)
{
    const char *m = getenv("TT_TEST_TIMEOUT_MULT");
    return m ? atof(m) : 1.0;
}

/* The PKI of scripts/make-test-pki in the test's directory; returns that directory. */
static const char *make_pki(void)
{
    static char dir[600];
    char cmd[1400];
    const char *src = getenv("TT_SRCDIR");
    snprintf(dir, sizeof dir, "%s/pki", tt_test_tmpdir());
    snprintf(cmd, sizeof cmd, "%s/scripts/make-test-pki %s", src ? src : ".", dir);
    CHECK_MSG(system(cmd) == 0, "scripts/make-test-pki failed (is certtool, gnutls-bin, there?)");
    return dir;
}

static const char *pki_file(const char *pki, const char *name)
{
    static char bufs[8][700];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, 700, "%s/%s", pki, name);
    return b;
}

/* A collector with a tls:// listener using server certificate NAME (server, expired, ...). */
static void start_tls(struct tt_test_serve *s, const char *test, const char *pki, const char *name,
                      char *tls_ep, size_t n, const char *client_ca)
{
    char cert[64], key[64], listen[64];
    snprintf(cert, sizeof cert, "%s.pem", name);
    snprintf(key, sizeof key, "%s.key", name);
    snprintf(listen, sizeof listen, "tls://127.0.0.1:%d", tt_test_free_port());
    snprintf(tls_ep, n, "%s", listen);
    if (client_ca) {
        tt_test_serve_start(s, test, "--listen", listen, "--tls-cert", pki_file(pki, cert),
                            "--tls-key", pki_file(pki, key), "--tls-client-ca", client_ca, NULL);
    } else {
        tt_test_serve_start(s, test, "--listen", listen, "--tls-cert", pki_file(pki, cert),
                            "--tls-key", pki_file(pki, key), NULL);
    }
}

static void emit_n(tt_client *c, int n)
{
    char msg[64];
    for (int i = 0; i < n; i++) {
        snprintf(msg, sizeof msg, "over tls %d", i);
        while (tt_log(c, "s", TT_INFO, msg, NULL, 0) == TT_ENOBUFS) {
            usleep(1000);
        }
    }
}

/* Wait until the client counts a TLS failure; return its stats and reason. */
static void wait_tls_failure(tt_client *c, tt_stats *st, char *why, size_t n)
{
    double t0 = tt_test_now_ms();
    for (;;) {
        CHECK_OK(tt_stats_get(c, st, sizeof *st));
        if (st->tls_failures > 0) {
            tt_connection_error(c, why, n);
            return;
        }
        CHECK_MSG(tt_test_now_ms() - t0 < 10000 * mult(), "no TLS failure counted after 10 s");
        usleep(10000);
    }
}

static uint64_t stored_events(const char *db)
{
    sqlite3 *h;
    CHECK(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    sqlite3_stmt *st;
    uint64_t n = 0;
    CHECK(sqlite3_prepare_v2(h, "SELECT coalesce(sum(n), 0) FROM frames", -1, &st, NULL) ==
          SQLITE_OK);
    CHECK(sqlite3_step(st) == SQLITE_ROW);
    n = (uint64_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(h);
    return n;
}

/* Whether the store knows an agent of that name. */
static int has_agent(const char *db, const char *name)
{
    sqlite3 *h;
    CHECK(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    sqlite3_stmt *st;
    int found = 0;
    CHECK(sqlite3_prepare_v2(h, "SELECT 1 FROM agents WHERE name = ?", -1, &st, NULL) == SQLITE_OK);
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    found = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    sqlite3_close(h);
    return found;
}

TEST_T(tls_right_ca_stores_every_event_conserved, 60)
{
    const char *pki = make_pki();
    struct tt_test_serve s;
    char ep[64];
    start_tls(&s, "serve", pki, "server", ep, sizeof ep, NULL);
    char ca[800];
    snprintf(ca, sizeof ca, "tls.ca=%s", pki_file(pki, "ca.pem"));
    tt_client *c = tt_test_client(ep, "tls-agent", ca, NULL);
    uint8_t inst[16];
    CHECK_OK(tt_instance_id(c, inst));
    emit_n(c, 20000);
    CHECK_OK(tt_flush(c, (uint32_t)(20000 * mult())));
    tt_stats st;
    CHECK_OK(tt_close_stats(c, 5000, &st, sizeof st));
    CHECK_EQ_U64(st.tls_failures, 0);
    CHECK_EQ_U64(st.acked, 20000);
    CHECK_EQ_U64(st.dropped_total, 0);
    tt_test_serve_stop(&s);
    struct tt_store_check sc;
    tt_test_check_store(s.db, inst, &sc);
    CHECK_EQ_U64(sc.events, 20000);
    tt_test_check_conservation(&st, &sc);
}

/* A client that must refuse the collector: nothing acked, nothing stored, the reason said. */
static void check_refused(const char *test, const char *pki, const char *server_cert,
                          const char *ca_file, const char *expect)
{
    struct tt_test_serve s;
    char ep[64], ca[800];
    start_tls(&s, test, pki, server_cert, ep, sizeof ep, NULL);
    snprintf(ca, sizeof ca, "tls.ca=%s", pki_file(pki, ca_file));
    tt_client *c = tt_test_client(ep, "careful", ca, "backoff_max_ms=200", NULL);
    emit_n(c, 10);
    tt_stats st;
    char why[512] = "";
    wait_tls_failure(c, &st, why, sizeof why);
    CHECK_MSG(strstr(why, expect) != NULL, "%s: reason \"%s\" does not say \"%s\"", test, why,
              expect);
    CHECK_MSG(strstr(why, "certificate") != NULL, "%s: reason \"%s\"", test, why);
    CHECK_EQ_U64(st.acked, 0);
    CHECK_EQ_U64(st.connected, 0);
    tt_close_stats(c, 100, &st, sizeof st);
    CHECK_EQ_U64(st.acked, 0);
    tt_test_serve_stop(&s);
    CHECK_EQ_U64(stored_events(s.db), 0);
}

TEST_T(tls_refuses_wrong_ca_expired_and_wrong_host_saying_why, 90)
{
    const char *pki = make_pki();
    check_refused("wrong_ca", pki, "server", "other-ca.pem", "issuer is unknown");
    check_refused("expired", pki, "expired", "ca.pem", "expired");
    check_refused("wrong_host", pki, "wronghost", "ca.pem", "does not match");
}

TEST_T(tls_mtls_needs_the_right_client_certificate, 60)
{
    const char *pki = make_pki();
    struct tt_test_serve s;
    char ep[64], ca[800], cert[800], key[800];
    start_tls(&s, "mtls", pki, "server", ep, sizeof ep, pki_file(pki, "ca.pem"));
    snprintf(ca, sizeof ca, "tls.ca=%s", pki_file(pki, "ca.pem"));

    /* No client certificate at all. */
    tt_client *c = tt_test_client(ep, "anonymous", ca, "backoff_max_ms=200", NULL);
    emit_n(c, 10);
    tt_stats st;
    char why[512] = "";
    wait_tls_failure(c, &st, why, sizeof why);
    CHECK_MSG(strstr(why, "tls: the collector refused the session") != NULL, "reason \"%s\"", why);
    CHECK_EQ_U64(st.acked, 0);
    tt_close_stats(c, 100, &st, sizeof st);

    /* A certificate from another CA. */
    snprintf(cert, sizeof cert, "tls.cert=%s", pki_file(pki, "intruder.pem"));
    snprintf(key, sizeof key, "tls.key=%s", pki_file(pki, "intruder.key"));
    c = tt_test_client(ep, "intruder", ca, cert, key, "backoff_max_ms=200", NULL);
    emit_n(c, 10);
    wait_tls_failure(c, &st, why, sizeof why);
    CHECK_MSG(strstr(why, "tls: the collector refused the session") != NULL, "reason \"%s\"", why);
    CHECK_EQ_U64(st.acked, 0);
    tt_close_stats(c, 100, &st, sizeof st);
    CHECK_EQ_U64(stored_events(s.db), 0);

    /* The right one: stored under the certificate's name, not the hello's. */
    snprintf(cert, sizeof cert, "tls.cert=%s", pki_file(pki, "client.pem"));
    snprintf(key, sizeof key, "tls.key=%s", pki_file(pki, "client.key"));
    c = tt_test_client(ep, "claims-to-be-someone-else", ca, cert, key, NULL);
    emit_n(c, 100);
    CHECK_OK(tt_flush(c, (uint32_t)(10000 * mult())));
    CHECK_OK(tt_close_stats(c, 5000, &st, sizeof st));
    CHECK_EQ_U64(st.acked, 100);
    CHECK_EQ_U64(st.tls_failures, 0);
    /* The collector counted both refused handshakes. */
    char *metrics = NULL;
    CHECK_EQ(tt_test_http(s.http, "GET", "/metrics", NULL, &metrics), 200);
    const char *line =
        metrics ? strstr(metrics, "telltale_rejected_total{reason=\"tls_handshake\"} ") : NULL;
    CHECK_MSG(line &&
                  atoi(line + strlen("telltale_rejected_total{reason=\"tls_handshake\"} ")) >= 2,
              "no tls_handshake refusals counted in /metrics");
    free(metrics);
    tt_test_serve_stop(&s);
    CHECK_EQ_U64(stored_events(s.db), 100);
    CHECK(has_agent(s.db, "agent-cert"));
    CHECK(!has_agent(s.db, "claims-to-be-someone-else"));
}

/* GET url with curl (ca: the CA file to trust, or NULL); returns the status, -1 if no answer. */
static long get(const char *url, const char *ca, const char *token)
{
    CURL *h = curl_easy_init();
    struct tt_test_body b = {NULL, 0};
    struct curl_slist *hdrs = NULL;
    char auth[600];
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        hdrs = curl_slist_append(hdrs, auth);
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, tt_test_curl_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
    if (ca) {
        curl_easy_setopt(h, CURLOPT_CAINFO, ca);
    }
    long status = -1;
    if (curl_easy_perform(h) == CURLE_OK) {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    }
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    free(b.p);
    return status;
}

TEST_T(tls_https_api_answers_and_plain_http_does_not, 60)
{
    const char *pki = make_pki();
    struct tt_test_serve s;
    tt_test_serve_start(&s, "https", "--https", "--tls-cert", pki_file(pki, "server.pem"),
                        "--tls-key", pki_file(pki, "server.key"), NULL);
    char url[400];
    snprintf(url, sizeof url, "https://%s/api/v1/status", s.http);
    const char *ca = pki_file(pki, "ca.pem");
    CHECK_EQ(get(url, ca, s.token), 200);
    CHECK_EQ(get(url, ca, NULL), 401);
    /* An HTTPS client that does not trust the CA stops before sending anything. */
    CHECK_EQ(get(url, pki_file(pki, "other-ca.pem"), s.token), -1);
    snprintf(url, sizeof url, "http://%s/api/v1/status", s.http);
    CHECK_EQ(get(url, NULL, s.token), -1);
    tt_test_serve_stop(&s);
}

/* Run telltale serve with args; its exit status, its stderr into out. */
static int serve_fails(const char *args, char *out, size_t cap)
{
    char cmd[3000];
    const char *b = getenv("TT_BIN");
    snprintf(cmd, sizeof cmd, "%s serve --data %s/refused --no-http %s 2>&1",
             b ? b : "build/telltale", tt_test_tmpdir(), args);
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

TEST(tls_serve_refuses_readable_key_and_missing_cert)
{
    const char *pki = make_pki();
    char args[2000], out[4096];
    const char *key = pki_file(pki, "server.key");
    CHECK(chmod(key, 0640) == 0);
    snprintf(args, sizeof args, "--listen tls://127.0.0.1:0 --tls-cert %s --tls-key %s",
             pki_file(pki, "server.pem"), key);
    CHECK_EQ(serve_fails(args, out, sizeof out), 1);
    CHECK_MSG(strstr(out, "chmod 600") != NULL, "stderr: %s", out);
    CHECK(chmod(key, 0600) == 0);
    CHECK_EQ(serve_fails("--listen tls://127.0.0.1:0", out, sizeof out), 1);
    CHECK_MSG(strstr(out, "--tls-cert") != NULL, "stderr: %s", out);
    CHECK_EQ(serve_fails("--https", out, sizeof out), 2);
}

/* Poll tt_connection_error until it holds something (a refusal), for at most 10 s. */
static void wait_error(tt_client *c, char *why, size_t n)
{
    double t0 = tt_test_now_ms();
    why[0] = 0;
    while (tt_connection_error(c, why, n) == TT_OK && !why[0]) {
        CHECK_MSG(tt_test_now_ms() - t0 < 10000 * mult(), "no connection error after 10 s");
        usleep(10000);
    }
}

/* The identity a store gives to the owner rows of that identity (docs/security.md). */
static int owner_rows(const char *db, const char *identity)
{
    sqlite3 *h;
    CHECK(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    sqlite3_stmt *st;
    CHECK(sqlite3_prepare_v2(h, "SELECT count(*) FROM owners WHERE identity = ?", -1, &st, NULL) ==
          SQLITE_OK);
    sqlite3_bind_text(st, 1, identity, -1, SQLITE_STATIC);
    CHECK(sqlite3_step(st) == SQLITE_ROW);
    int n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(h);
    return n;
}

/* With --tls-client-ca the certificate authenticates: no --ingest-open, and --ingest-tokens set,
 * yet an agent with a certificate and no token is accepted, its identity is cert:NAME in the
 * owners table, a token naming another agent is refused, and another identity (the Unix socket's
 * uid) cannot write under the certificate's agent name. */
TEST_T(tls_mtls_identity_is_the_certificate_in_the_owners_table, 60)
{
    const char *pki = make_pki();
    char toks[600], listen[64], ep[64], ca[800], cert[800], key[800], why[512];
    snprintf(toks, sizeof toks, "%s/ingest.tokens", tt_test_tmpdir());
    tt_test_write_file(toks, "other tok-other-0123\n");
    snprintf(listen, sizeof listen, "tls://127.0.0.1:%d", tt_test_free_port());
    snprintf(ep, sizeof ep, "%s", listen);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "mtls-ident", TT_TEST_NO_INGEST_OPEN, "--ingest-tokens", toks,
                        "--listen", listen, "--tls-cert", pki_file(pki, "server.pem"), "--tls-key",
                        pki_file(pki, "server.key"), "--tls-client-ca", pki_file(pki, "ca.pem"),
                        NULL);
    snprintf(ca, sizeof ca, "tls.ca=%s", pki_file(pki, "ca.pem"));
    snprintf(cert, sizeof cert, "tls.cert=%s", pki_file(pki, "client.pem"));
    snprintf(key, sizeof key, "tls.key=%s", pki_file(pki, "client.key"));

    tt_client *c = tt_test_client(ep, "whatever", ca, cert, key, NULL);
    emit_n(c, 50);
    CHECK_OK(tt_flush(c, (uint32_t)(10000 * mult())));
    tt_stats st;
    CHECK_OK(tt_close_stats(c, 5000, &st, sizeof st));
    CHECK_EQ_U64(st.acked, 50);

    /* A token of another agent beside the certificate: refused at the hello. */
    c = tt_test_client(ep, "whatever", ca, cert, key, "token=tok-other-0123", "backoff_max_ms=200",
                       NULL);
    emit_n(c, 5);
    wait_error(c, why, sizeof why);
    CHECK_MSG(strstr(why, "not the one of the client certificate") != NULL, "reason \"%s\"", why);
    tt_close_stats(c, 100, &st, sizeof st);
    CHECK_EQ_U64(st.acked, 0);

    /* The collector's own user on the Unix socket needs a token there (--ingest-tokens): the
     * certificate exempts only its own connections. */
    c = tt_test_client(s.endpoint, "agent-cert", "backoff_max_ms=200", NULL);
    emit_n(c, 5);
    wait_error(c, why, sizeof why);
    CHECK_MSG(strstr(why, "requires an ingest token") != NULL, "reason \"%s\"", why);
    tt_close_stats(c, 100, &st, sizeof st);
    CHECK_EQ_U64(st.acked, 0);
    tt_test_serve_stop(&s);
    CHECK_EQ_U64(stored_events(s.db), 50);
    CHECK(has_agent(s.db, "agent-cert"));
    CHECK(!has_agent(s.db, "whatever"));
    CHECK_MSG(owner_rows(s.db, "cert:agent-cert") >= 2, "the agent name and instance are not "
                                                        "owned by cert:agent-cert");
}

/* The certificate's agent name, once owned by cert:NAME, is refused to another identity, and a
 * name another identity owns is refused to the certificate (owner check at the hello). */
TEST_T(tls_mtls_agent_name_owned_by_another_identity_is_refused, 60)
{
    const char *pki = make_pki();
    char listen[64], ep[64], ca[800], cert[800], key[800], why[512];
    snprintf(listen, sizeof listen, "tls://127.0.0.1:%d", tt_test_free_port());
    snprintf(ep, sizeof ep, "%s", listen);
    struct tt_test_serve s;
    tt_test_serve_start(&s, "mtls-owner", "--listen", listen, "--tls-cert",
                        pki_file(pki, "server.pem"), "--tls-key", pki_file(pki, "server.key"),
                        "--tls-client-ca", pki_file(pki, "ca.pem"), NULL);
    /* The collector's user takes "agent-cert" first, over the Unix socket (uid:N). */
    tt_client *c = tt_test_client(s.endpoint, "agent-cert", NULL);
    emit_n(c, 10);
    CHECK_OK(tt_flush(c, (uint32_t)(10000 * mult())));
    tt_stats st;
    CHECK_OK(tt_close_stats(c, 5000, &st, sizeof st));
    CHECK_EQ_U64(st.acked, 10);
    /* The certificate names agent-cert too: another identity, refused at its hello. */
    snprintf(ca, sizeof ca, "tls.ca=%s", pki_file(pki, "ca.pem"));
    snprintf(cert, sizeof cert, "tls.cert=%s", pki_file(pki, "client.pem"));
    snprintf(key, sizeof key, "tls.key=%s", pki_file(pki, "client.key"));
    c = tt_test_client(ep, "anything", ca, cert, key, "backoff_max_ms=200", NULL);
    emit_n(c, 5);
    wait_error(c, why, sizeof why);
    CHECK_MSG(strstr(why, "belongs to another identity") != NULL, "reason \"%s\"", why);
    tt_close_stats(c, 100, &st, sizeof st);
    CHECK_EQ_U64(st.acked, 0);
    tt_test_serve_stop(&s);
    CHECK_EQ_U64(stored_events(s.db), 10);
    CHECK_EQ(owner_rows(s.db, "cert:agent-cert"), 0);
}

/* Without --tls-client-ca a tls:// listener only encrypts: like tcp://, an agent needs an ingest
 * token unless --ingest-open (loopback only; refused at start on a wildcard tls:// listener). */
TEST_T(tls_without_client_ca_needs_a_token_unless_ingest_open, 60)
{
    const char *pki = make_pki();
    char toks[600], listen[64], ep[64], ca[800], why[512], out[4096], cmd[2400];
    snprintf(toks, sizeof toks, "%s/ingest.tokens", tt_test_tmpdir());
    tt_test_write_file(toks, "tokagent tok-agent-0123\n");
    snprintf(listen, sizeof listen, "tls://127.0.0.1:%d", tt_test_free_port());
    snprintf(ep, sizeof ep, "%s", listen);
    snprintf(ca, sizeof ca, "tls.ca=%s", pki_file(pki, "ca.pem"));
    struct tt_test_serve s;
    tt_test_serve_start(&s, "tls-closed", TT_TEST_NO_INGEST_OPEN, "--listen", listen, "--tls-cert",
                        pki_file(pki, "server.pem"), "--tls-key", pki_file(pki, "server.key"),
                        NULL);
    tt_client *c = tt_test_client(ep, "someone", ca, "backoff_max_ms=200", NULL);
    emit_n(c, 5);
    wait_error(c, why, sizeof why);
    CHECK_MSG(strstr(why, "requires an ingest token on TCP") != NULL, "reason \"%s\"", why);
    tt_stats st;
    tt_close_stats(c, 100, &st, sizeof st);
    CHECK_EQ_U64(st.acked, 0);
    CHECK_EQ_U64(st.tls_failures, 0); /* the session was fine; the hello was not */
    tt_test_serve_stop(&s);
    CHECK_EQ_U64(stored_events(s.db), 0);

    /* With a token it is accepted, under the token's agent. */
    snprintf(listen, sizeof listen, "tls://127.0.0.1:%d", tt_test_free_port());
    snprintf(ep, sizeof ep, "%s", listen);
    tt_test_serve_start(&s, "tls-token", TT_TEST_NO_INGEST_OPEN, "--ingest-tokens", toks,
                        "--listen", listen, "--tls-cert", pki_file(pki, "server.pem"), "--tls-key",
                        pki_file(pki, "server.key"), NULL);
    c = tt_test_client(ep, "someone", ca, "token=tok-agent-0123", NULL);
    emit_n(c, 20);
    CHECK_OK(tt_flush(c, (uint32_t)(10000 * mult())));
    CHECK_OK(tt_close_stats(c, 5000, &st, sizeof st));
    CHECK_EQ_U64(st.acked, 20);
    tt_test_serve_stop(&s);
    CHECK(has_agent(s.db, "tokagent"));
    CHECK_MSG(owner_rows(s.db, "token:tokagent") >= 2, "not owned by token:tokagent");

    /* --ingest-open with a tls:// listener others can reach, and no client CA: refused. */
    const char *bin = getenv("TT_BIN");
    snprintf(cmd, sizeof cmd,
             "'%s' serve --data '%s/open-wide' --listen tls://0.0.0.0:0 "
             "--tls-cert '%s' --tls-key '%s' --no-http --ingest-open 2>&1",
             bin ? bin : "build/telltale", tt_test_tmpdir(), pki_file(pki, "server.pem"),
             pki_file(pki, "server.key"));
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    int rc = pclose(p);
    CHECK_MSG(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "exit %d: %s", rc, out);
    CHECK_MSG(strstr(out, "--ingest-open is allowed only when every TCP listener is on a loopback"),
              "%s", out);
}

/* A raw TLS agent of the test's own (GnuTLS), to hold a frame half-sent: connect to the tls://
 * listener, trust ca, say hello as agent and read the reply. */
struct raw_tls {
    int fd;
    gnutls_session_t ses;
    gnutls_certificate_credentials_t cred;
};

static void raw_send(struct raw_tls *t, const void *p, size_t n)
{
    const uint8_t *q = p;
    while (n) {
        ssize_t w = gnutls_record_send(t->ses, q, n > 16384 ? 16384 : n);
        if (w == GNUTLS_E_AGAIN || w == GNUTLS_E_INTERRUPTED) {
            continue;
        }
        CHECK_MSG(w > 0, "gnutls_record_send: %s", gnutls_strerror((int)w));
        q += w;
        n -= (size_t)w;
    }
}

static void raw_tls_hello(struct raw_tls *t, const char *ep, const char *ca, const char *agent)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)atoi(strrchr(ep, ':') + 1));
    t->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(t->fd >= 0 && connect(t->fd, (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(gnutls_certificate_allocate_credentials(&t->cred) == 0);
    CHECK(gnutls_certificate_set_x509_trust_file(t->cred, ca, GNUTLS_X509_FMT_PEM) > 0);
    CHECK(gnutls_init(&t->ses, GNUTLS_CLIENT) == 0);
    CHECK(gnutls_set_default_priority(t->ses) == 0);
    CHECK(gnutls_credentials_set(t->ses, GNUTLS_CRD_CERTIFICATE, t->cred) == 0);
    gnutls_session_set_verify_cert(t->ses, "localhost", 0);
    gnutls_transport_set_int(t->ses, t->fd);
    int rc;
    do {
        rc = gnutls_handshake(t->ses);
    } while (rc < 0 && !gnutls_error_is_fatal(rc));
    CHECK_MSG(rc == 0, "handshake: %s", gnutls_strerror(rc));
    tt__hello h;
    memset(&h, 0, sizeof h);
    h.protocol = TT_PROTOCOL_VERSION;
    memset(h.instance, 0x5a, sizeof h.instance);
    snprintf(h.agent, sizeof h.agent, "%s", agent);
    snprintf(h.library, sizeof h.library, "test");
    tt__buf p, f;
    tt__buf_init(&p, 1 << 16);
    tt__buf_init(&f, 1 << 16);
    CHECK_OK(tt__hello_encode(&h, &p));
    CHECK_OK(tt__frame_append(&f, TT_FT_HELLO, p.data, p.len));
    raw_send(t, f.data, f.len);
    tt__buf_fini(&p);
    tt__buf_fini(&f);
    uint8_t buf[8192];
    size_t n = 0;
    for (;;) {
        tt__frame fr;
        size_t need;
        if (tt__frame_parse(buf, n, sizeof buf, &fr, &need) == TT_FRAME_OK) {
            CHECK_EQ(fr.type, TT_FT_HELLO_REPLY);
            return;
        }
        ssize_t k = gnutls_record_recv(t->ses, buf + n, sizeof buf - n);
        CHECK_MSG(k > 0 || k == GNUTLS_E_AGAIN || k == GNUTLS_E_INTERRUPTED, "recv: %zd", k);
        n += k > 0 ? (size_t)k : 0;
    }
}

static void raw_tls_close(struct raw_tls *t)
{
    gnutls_deinit(t->ses);
    gnutls_certificate_free_credentials(t->cred);
    close(t->fd);
}

/* A frame sent all but its last bytes, so that it sits on the partial-frame budget. The
 * collector drops a partial frame that receives nothing for 10 s (slow_frame: a slow
 * frame may not hold the budget), so while the test waits the holder sends one more byte of it
 * a second (never the last one): slow runs (sanitizers on a loaded machine) keep it held. */
struct holder {
    struct raw_tls *t;
    const uint8_t *frame;
    size_t len, sent;
    double last_ms;
};

static void holder_start(struct holder *h, struct raw_tls *t, const uint8_t *frame, size_t len)
{
    enum { SPARE = 512 }; /* one byte a second: more than 8 minutes of holding */
    h->t = t;
    h->frame = frame;
    h->len = len;
    h->sent = len - SPARE;
    raw_send(t, frame, h->sent);
    h->last_ms = tt_test_now_ms();
}

static void holder_keep(struct holder *h)
{
    if (h->sent + 1 < h->len && tt_test_now_ms() - h->last_ms >= 1000) {
        raw_send(h->t, h->frame + h->sent, 1);
        h->sent++;
        h->last_ms = tt_test_now_ms();
    }
}

static void holder_finish(struct holder *h)
{
    raw_send(h->t, h->frame + h->sent, h->len - h->sent);
    h->sent = h->len;
}

/* TLS reads go through the same admission as TCP (docs/operations.md, "Memory bound"): a raw
 * TLS agent holds a frame of almost the whole partial-frame budget half-sent, so a libtelltale
 * agent's large batches over tls:// cannot be admitted and its connection waits (its records
 * decrypted or not stay in the session and the socket); once the holder finishes its frame the
 * budget returns, the waiting connection is resumed, and every event arrives once. */
TEST_T(tls_reads_wait_for_the_ingest_budget_and_lose_nothing, 120)
{
    const char *pki = make_pki();
    char listen[64], ep[64], ca[800], msg[8192];
    snprintf(listen, sizeof listen, "tls://127.0.0.1:%d", tt_test_free_port());
    snprintf(ep, sizeof ep, "%s", listen);
    snprintf(ca, sizeof ca, "tls.ca=%s", pki_file(pki, "ca.pem"));
    struct tt_test_serve s;
    tt_test_serve_start(&s, "tls-budget", "--queue-bytes", "1048576", "--max-frame", "1048576",
                        "--listen", listen, "--tls-cert", pki_file(pki, "server.pem"), "--tls-key",
                        pki_file(pki, "server.key"), NULL);
    uint64_t limit = 0;
    double t0 = tt_test_now_ms();
    while ((limit = tt_test_metric(s.http,
                                   "telltale_ingest_budget_bytes{pool=\"partial_frames\"}")) == 0) {
        CHECK_MSG(tt_test_now_ms() - t0 < 10000 * mult(), "no budget published");
        usleep(20000);
    }
    CHECK(limit >= (1u << 20) && limit < (2u << 20)); /* one frame of --max-frame */

    /* The holder: a batch frame of 1 MiB, all but its last bytes (struct holder). */
    struct raw_tls h;
    raw_tls_hello(&h, ep, pki_file(pki, "ca.pem"), "holder");
    size_t body = 1u << 20;
    uint8_t *frame = tt_test_blank_batch_frame(body);
    struct holder hold;
    holder_start(&hold, &h, frame, TT_FRAME_PREFIX + body);
    t0 = tt_test_now_ms();
    while (tt_test_metric(s.http, "telltale_ingest_budget_used_bytes{pool=\"partial_frames\"}") <
           limit / 2) {
        CHECK_MSG(tt_test_now_ms() - t0 < 10000 * mult(), "the holder's frame was not admitted");
        holder_keep(&hold);
        usleep(20000);
    }

    /* The agent: large batches that do not fit in what is left. A batch is sealed only when
     * full (or at the flush), so a slow emit loop (sanitizers) cannot ship small frames that fit. */
    enum { EVENTS = 200 };
    tt_client *c =
        tt_test_client(ep, "big", ca, "batch_bytes=600000", "flush_interval_ms=60000", NULL);
    uint8_t inst[16];
    CHECK_OK(tt_instance_id(c, inst));
    uint32_t x = 12345;
    uint64_t refused = 0; /* TT_ENOBUFS: counted as dropped (ring full), emitted again */
    double t_emit = tt_test_now_ms();
    for (int i = 0; i < EVENTS; i++) {
        for (size_t j = 0; j + 1 < sizeof msg; j++) {
            x = x * 1103515245u + 12345u; /* random letters: batches stay large compressed */
            msg[j] = (char)('a' + (x >> 16) % 26);
        }
        msg[sizeof msg - 1] = 0;
        while (tt_log(c, "s", TT_INFO, msg, NULL, 0) == TT_ENOBUFS) {
            refused++;
            holder_keep(&hold);
            usleep(1000);
        }
        holder_keep(&hold);
    }
    tt_stats st;
    t0 = tt_test_now_ms();
    t_emit = t0 - t_emit;
    while (tt_test_metric(s.http, "telltale_ingest_budget_waits_total") == 0) {
        if (tt_test_now_ms() - t0 >= 10000 * mult()) {
            CHECK_OK(tt_stats_get(c, &st, sizeof st));
            CHECK_MSG(0,
                      "the agent's connection never waited: %.0f ms after %llu events (emitted in "
                      "%.0f ms), the agent "
                      "connected %llu, frames sent %llu (%llu bytes, %llu events), acked %llu, "
                      "refused by the ring %llu; partial frames %llu of %llu bytes",
                      (double)(tt_test_now_ms() - t0), (unsigned long long)EVENTS, t_emit,
                      (unsigned long long)st.connected, (unsigned long long)st.frames_sent,
                      (unsigned long long)st.bytes_sent, (unsigned long long)st.sent,
                      (unsigned long long)st.acked, (unsigned long long)refused,
                      (unsigned long long)tt_test_metric(
                          s.http, "telltale_ingest_budget_used_bytes{pool=\"partial_frames\"}"),
                      (unsigned long long)limit);
        }
        holder_keep(&hold);
        usleep(20000);
    }
    CHECK_OK(tt_stats_get(c, &st, sizeof st));
    CHECK_MSG(st.acked < EVENTS, "all %llu acked while blocked", (unsigned long long)st.acked);

    /* The rest of the holder's frame: it is complete (and refused: zeros are no batch), the
     * budget returns, the agent is resumed. */
    holder_finish(&hold);
    free(frame);
    CHECK_OK(tt_flush(c, (uint32_t)(30000 * mult())));
    CHECK_OK(tt_close_stats(c, 5000, &st, sizeof st));
    CHECK_EQ_U64(st.acked, EVENTS);
    CHECK_EQ_U64(st.dropped[TT_DROP_BUFFER_FULL], refused);
    CHECK_EQ_U64(st.dropped_total, refused); /* nothing lost once emitted */
    CHECK_EQ_U64(st.tls_failures, 0);
    raw_tls_close(&h);
    CHECK(tt_test_metric(s.http, "telltale_ingest_budget_peak_bytes{pool=\"partial_frames\"}") <=
          limit);
    t0 = tt_test_now_ms();
    while (tt_test_metric(s.http, "telltale_ingest_budget_used_bytes{pool=\"partial_frames\"}") !=
           0) {
        CHECK_MSG(tt_test_now_ms() - t0 < 10000 * mult(), "partial-frame budget not given back");
        usleep(20000);
    }
    CHECK_EQ_U64(tt_test_metric(s.http, "telltale_ingest_budget_used_bytes{pool=\"batches\"}"), 0);
    tt_test_serve_stop(&s);
    struct tt_store_check sc;
    tt_test_check_store(s.db, inst, &sc);
    CHECK_EQ_U64(sc.events, EVENTS);
}

/* A tls:// endpoint with a host name, not an address: the name is resolved by resolve.c's
 * thread like a tcp:// one, the connection made to what it gave, and the collector's
 * certificate checked against the name dialled (its DNS name localhost). */
TEST_T(tls_endpoint_host_name_resolves_and_names_the_certificate, 60)
{
    const char *pki = make_pki();
    char listen[64], ca[800];
    snprintf(listen, sizeof listen, "tls://localhost:%d", tt_test_free_port());
    snprintf(ca, sizeof ca, "tls.ca=%s", pki_file(pki, "ca.pem"));
    struct tt_test_serve s;
    tt_test_serve_start(&s, "tls-name", "--listen", listen, "--tls-cert",
                        pki_file(pki, "server.pem"), "--tls-key", pki_file(pki, "server.key"),
                        NULL);
    tt_client *c = tt_test_client(listen, "by-name", ca, NULL);
    uint8_t inst[16];
    CHECK_OK(tt_instance_id(c, inst));
    emit_n(c, 100);
    CHECK_OK(tt_flush(c, (uint32_t)(10000 * mult())));
    tt_stats st;
    CHECK_OK(tt_close_stats(c, 5000, &st, sizeof st));
    CHECK_EQ_U64(st.acked, 100);
    CHECK_EQ_U64(st.tls_failures, 0);
    tt_test_serve_stop(&s);
    struct tt_store_check sc;
    tt_test_check_store(s.db, inst, &sc);
    CHECK_EQ_U64(sc.events, 100);
}
