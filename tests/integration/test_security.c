/*
 * test_security.c - secure by default (docs/security.md), against a real `telltale serve`: the
 * operator token generated at first start and kept private, the data directory and its files
 * private, secret files that others may read refused, no token in the log, the CLI finding the
 * token by itself, DNS rebinding and cross-origin requests refused, and another local user
 * (nobody, through setpriv) unable to read the stored data, halt a session or change a guard
 * policy.
 */
#include "test.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "operator.h"
#include "serve.h"

static const char *bin(void)
{
    const char *b = getenv("TT_BIN");
    return b ? b : "build/telltale";
}

/* Run cmd with sh, its stdout and stderr into out (NUL-terminated); returns the exit status. */
static int run(const char *cmd, char *out, size_t cap)
{
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static unsigned mode_of(const char *path)
{
    struct stat st;
    CHECK_MSG(stat(path, &st) == 0, "%s: %s", path, strerror(errno));
    return st.st_mode & 0777;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    CHECK_MSG(f != NULL, "cannot read %s", path);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

/* An HTTP request with chosen headers (NULL-terminated); the status, and the response headers
 * into hdrs when not NULL. */
struct resp_headers {
    char text[8192];
    size_t len;
};

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct resp_headers *h = ud;
    size_t len = size * n;
    if (h && h->len + len < sizeof h->text) {
        memcpy(h->text + h->len, p, len);
        h->len += len;
        h->text[h->len] = 0;
    }
    return len;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

static long request(const char *http, const char *method, const char *path, const char *body,
                    struct resp_headers *rh, ...)
{
    char url[600];
    snprintf(url, sizeof url, "http://%s%s", http, path);
    CURL *c = curl_easy_init();
    CHECK(c);
    struct curl_slist *sl = NULL;
    va_list ap;
    va_start(ap, rh);
    const char *h;
    while ((h = va_arg(ap, const char *))) {
        sl = curl_slist_append(sl, h);
    }
    va_end(ap);
    if (rh) {
        memset(rh, 0, sizeof *rh);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, sl);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, rh);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    long status = -1;
    if (curl_easy_perform(c) == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    }
    curl_slist_free_all(sl);
    curl_easy_cleanup(c);
    return status;
}

TEST(security_generated_token_is_private_kept_and_never_logged)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "first", NULL);
    char path[800];
    snprintf(path, sizeof path, "%s/operator.token", s.dir);
    /* 256 bits from getrandom as 64 hex digits, in a file only the collector's user reads. */
    CHECK_EQ(strlen(s.token), 64);
    CHECK_EQ(strspn(s.token, "0123456789abcdef"), 64);
    CHECK_EQ(mode_of(path), 0600);
    CHECK_EQ(mode_of(s.dir), 0700);
    tt_client *c = tt_test_client(s.endpoint, "private-agent", NULL);
    CHECK_OK(tt_log(c, NULL, TT_INFO, "my password is hunter2", NULL, 0));
    CHECK_OK(tt_flush(c, 10000));
    tt_close(c, 10000);
    const char *files[] = {"telltale.db", "telltale.db-wal", "telltale.db-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", s.dir, files[i]);
        CHECK_MSG(mode_of(path) == 0600, "%s is mode %03o", path, mode_of(path));
    }
    /* Without the token nothing of the API answers; with it, everything. */
    char *body = NULL;
    CHECK_EQ(tt_test_http_auth(s.http, "GET", "/api/v1/events", NULL, &body), 401);
    CHECK(strstr(body, "hunter2") == NULL);
    free(body);
    CHECK_EQ(tt_test_http_auth(s.http, "GET", "/api/v1/events", s.token, &body), 200);
    CHECK(strstr(body, "hunter2") != NULL);
    free(body);
    char token[300];
    snprintf(token, sizeof token, "%s", s.token);
    tt_test_serve_stop(&s);
    tt_test_serve_restart(&s);
    CHECK_MSG(strcmp(s.token, token) == 0, "the token changed across a restart");
    tt_test_serve_stop(&s);
    /* The log (a file here, as under a service manager) names the file, never the token. */
    const char *log = slurp(s.log);
    CHECK_MSG(strstr(log, "operator.token") != NULL, "%s", log);
    CHECK_MSG(strstr(log, token) == NULL, "the operator token is in the log %s", s.log);
}

TEST(security_open_data_dir_or_token_file_is_refused_with_the_chmod)
{
    char dir[600], cmd[2400], out[8192];
    snprintf(dir, sizeof dir, "%s/open-dir", tt_test_tmpdir());
    CHECK_OK(mkdir(dir, 0755));
    CHECK_OK(chmod(dir, 0755));
    snprintf(cmd, sizeof cmd,
             "'%s' serve --data '%s' --listen unix:%s/s.sock --http 127.0.0.1:0 2>&1", bin(), dir,
             dir);
    CHECK_EQ(run(cmd, out, sizeof out), 1);
    CHECK_MSG(strstr(out, "chmod 700") != NULL, "%s", out);
    CHECK_MSG(access(dir, F_OK) == 0, "%s", dir);
    char db[700];
    snprintf(db, sizeof db, "%s/telltale.db", dir);
    CHECK_MSG(access(db, F_OK) != 0, "a database was created in a directory others can read");

    /* A database left 0644 by an older version in a now-private directory becomes 0600. */
    CHECK_OK(chmod(dir, 0700));
    tt_test_write_file(db, "");
    CHECK_OK(chmod(db, 0644));
    struct tt_test_serve s;
    tt_test_serve_start(&s, "open-dir", NULL);
    CHECK_EQ(mode_of(db), 0600);
    tt_test_serve_stop(&s);

    /* A generated token that others may read is refused, and so is a symbolic link. */
    char tok[700];
    snprintf(tok, sizeof tok, "%s/operator.token", dir);
    CHECK_OK(chmod(tok, 0644));
    snprintf(cmd, sizeof cmd,
             "'%s' serve --data '%s' --listen unix:%s/s.sock --http 127.0.0.1:0 --no-http 2>&1",
             bin(), dir, dir);
    CHECK_EQ(run(cmd, out, sizeof out), 1);
    CHECK_MSG(strstr(out, "chmod 600") != NULL, "%s", out);
    CHECK_OK(unlink(tok));
    char elsewhere[700];
    snprintf(elsewhere, sizeof elsewhere, "%s/elsewhere.token", tt_test_tmpdir());
    tt_test_write_file(elsewhere, "attacker-chosen-token\n");
    CHECK_OK(symlink(elsewhere, tok));
    CHECK_EQ(run(cmd, out, sizeof out), 1);
    CHECK_MSG(strstr(out, "symbolic link") != NULL, "%s", out);

    /* --operator-token-file readable by others: refused too. */
    CHECK_OK(chmod(elsewhere, 0640));
    snprintf(cmd, sizeof cmd,
             "'%s' serve --data '%s/d2' --listen unix:%s/s2.sock --http 127.0.0.1:0 "
             "--operator-token-file '%s' 2>&1",
             bin(), tt_test_tmpdir(), tt_test_tmpdir(), elsewhere);
    CHECK_EQ(run(cmd, out, sizeof out), 1);
    CHECK_MSG(strstr(out, "chmod 600") != NULL, "%s", out);
}

TEST(security_no_auth_warns_at_start_and_creates_no_token)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "noauth", "--no-auth", NULL);
    CHECK_EQ(s.token[0], 0);
    char path[800];
    snprintf(path, sizeof path, "%s/operator.token", s.dir);
    CHECK(access(path, F_OK) != 0);
    char *body = NULL;
    CHECK_EQ(tt_test_http_auth(s.http, "GET", "/api/v1/agents", NULL, &body), 200);
    free(body);
    /* The browser defences stay on without a token. */
    CHECK_EQ(request(s.http, "POST", "/api/v1/sessions/x/halt", "{}", NULL,
                     "Content-Type: application/json", "Origin: http://evil.example", NULL),
             403);
    tt_test_serve_stop(&s);
    const char *log = slurp(s.log);
    CHECK_MSG(strstr(log, "--no-auth: no operator token") != NULL, "%s", log);
}

TEST(security_rebinding_host_is_refused_and_allowed_hosts_accepted)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "rebind", "--allowed-hosts", "telltale.example,proxy.example:8443",
                        NULL);
    char auth[400], host[400];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", s.token);
    const char *port = strchr(s.http, ':') + 1;
    /* A page of evil.example whose name now resolves to 127.0.0.1: the browser sends its own
     * name as Host; with the token or without, for the API or the dashboard, refused. */
    snprintf(host, sizeof host, "Host: evil.example:%s", port);
    CHECK_EQ(request(s.http, "GET", "/api/v1/agents", NULL, NULL, host, auth, NULL), 421);
    CHECK_EQ(request(s.http, "GET", "/", NULL, NULL, host, NULL), 421);
    CHECK_EQ(request(s.http, "POST", "/api/v1/sessions/x/halt", "{}", NULL, host, auth,
                     "Content-Type: application/json", NULL),
             421);
    CHECK_EQ(request(s.http, "GET", "/", NULL, NULL, "Host: evil.example", NULL), 421);
    /* The listening address, localhost on a loopback listener, and the configured names. */
    CHECK_EQ(request(s.http, "GET", "/api/v1/agents", NULL, NULL, auth, NULL), 200);
    snprintf(host, sizeof host, "Host: localhost:%s", port);
    CHECK_EQ(request(s.http, "GET", "/api/v1/agents", NULL, NULL, host, auth, NULL), 200);
    snprintf(host, sizeof host, "Host: 127.0.0.1:%d", atoi(port) + 1);
    CHECK_EQ(request(s.http, "GET", "/api/v1/agents", NULL, NULL, host, auth, NULL), 421);
    CHECK_EQ(
        request(s.http, "GET", "/api/v1/agents", NULL, NULL, "Host: telltale.example", auth, NULL),
        200);
    CHECK_EQ(request(s.http, "GET", "/api/v1/agents", NULL, NULL, "Host: proxy.example:8443", auth,
                     NULL),
             200);
    CHECK_EQ(request(s.http, "GET", "/api/v1/agents", NULL, NULL, "Host: proxy.example:9000", auth,
                     NULL),
             421);
    tt_test_serve_stop(&s);
}

TEST(security_cross_origin_post_is_refused_and_no_cors_is_granted)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "cors", NULL);
    tt_client *c = tt_test_client(s.endpoint, "cors-agent", NULL);
    CHECK_OK(tt_test_emit_response(c, "cors-session", 0.9));
    CHECK_OK(tt_flush(c, 10000));
    char auth[400], self[400];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", s.token);
    snprintf(self, sizeof self, "Origin: http://%s", s.http);
    const char *halt = "/api/v1/sessions/cors-session/halt";
    const char *policy = "/api/v1/agents/cors-agent/guard-policy";
    const char *pbody = "{\"token_min_prob\": 0.99, \"action\": \"halt\"}";
    struct resp_headers rh;
    /* Another origin, even with the token: refused, and never told it may read the answer. */
    CHECK_EQ(request(s.http, "POST", halt, "{}", &rh, auth, "Content-Type: application/json",
                     "Origin: http://evil.example", NULL),
             403);
    CHECK(strcasestr(rh.text, "Access-Control-Allow") == NULL);
    CHECK_EQ(request(s.http, "POST", policy, pbody, NULL, auth, "Content-Type: application/json",
                     "Origin: null", NULL),
             403);
    /* What an HTML form can send (no custom header, a form body): no token, no JSON. */
    CHECK_EQ(request(s.http, "POST", halt, "reason=x", NULL,
                     "Content-Type: application/x-www-form-urlencoded",
                     "Origin: http://evil.example", NULL),
             403);
    CHECK_EQ(request(s.http, "POST", halt, "{}", NULL, auth, "Content-Type: text/plain", NULL),
             415);
    /* A cookie is no credential. */
    char cookie[400];
    snprintf(cookie, sizeof cookie, "Cookie: token=%s", s.token);
    CHECK_EQ(
        request(s.http, "POST", halt, "{}", NULL, cookie, "Content-Type: application/json", NULL),
        401);
    /* A CORS preflight gets no permission either. */
    long st = request(s.http, "OPTIONS", halt, NULL, &rh, "Origin: http://evil.example",
                      "Access-Control-Request-Method: POST", NULL);
    CHECK(st >= 400);
    CHECK(strcasestr(rh.text, "Access-Control-Allow") == NULL);
    CHECK_EQ(request(s.http, "GET", "/api/v1/agents", NULL, &rh, auth,
                     "Origin: http://evil.example", NULL),
             200);
    CHECK(strcasestr(rh.text, "Access-Control-Allow") == NULL);
    /* Nothing of the above changed the guard policy: the agent is not halted at p = 0.9 (a
     * policy reaches an agent within 100 ms, test_responses.c). */
    usleep(300000);
    tt_response *r;
    CHECK_OK(tt_response_begin(c, &r, "cors-session-2", "m", NULL, 0));
    tt_verdict v = TT_PASS;
    for (int i = 0; i < 50; i++) {
        CHECK_OK(tt_response_token_logprobs(r, i, logf(0.9f), NULL, NULL, 0, &v, NULL));
        CHECK_EQ(v, TT_PASS);
    }
    tt_response_summary sum;
    CHECK_OK(tt_response_end(r, &sum));
    /* The dashboard's own origin, with the token and JSON: accepted. */
    CHECK_EQ(request(s.http, "POST", halt, "{}", NULL, auth, "Content-Type: application/json", self,
                     NULL),
             202);
    tt_close(c, 10000);
    tt_test_serve_stop(&s);
}

TEST(security_cli_finds_the_token_and_warns_about_token_on_argv)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "cli", NULL);
    char cmd[2400], out[8192], file[700];
    /* --data DIR */
    snprintf(cmd, sizeof cmd,
             "env -u TELLTALE_TOKEN -u TELLTALE_TOKEN_FILE '%s' query --http %s "
             "--data '%s' --count 2>&1",
             bin(), s.http, s.dir);
    CHECK_MSG(run(cmd, out, sizeof out) == 0, "%s", out);
    /* TELLTALE_TOKEN_FILE */
    snprintf(file, sizeof file, "%s/cli.token", tt_test_tmpdir());
    char line[400];
    snprintf(line, sizeof line, "%s\n", s.token);
    tt_test_write_file(file, line);
    snprintf(cmd, sizeof cmd, "TELLTALE_TOKEN_FILE='%s' '%s' query --http %s --count 2>&1", file,
             bin(), s.http);
    CHECK_MSG(run(cmd, out, sizeof out) == 0, "%s", out);
    /* The default data directory ($TELLTALE_DATA) */
    snprintf(cmd, sizeof cmd,
             "env -u TELLTALE_TOKEN_FILE TELLTALE_DATA='%s' '%s' top --once --http %s 2>&1", s.dir,
             bin(), s.http);
    CHECK_MSG(run(cmd, out, sizeof out) == 0, "%s", out);
    /* A token file others may read: refused by the CLI too. */
    CHECK_OK(chmod(file, 0644));
    snprintf(cmd, sizeof cmd, "'%s' query --http %s --token-file '%s' --count 2>&1", bin(), s.http,
             file);
    CHECK_EQ(run(cmd, out, sizeof out), 1);
    CHECK_MSG(strstr(out, "chmod 600") != NULL, "%s", out);
    /* No token anywhere: the collector's 401. */
    snprintf(cmd, sizeof cmd,
             "cd '%s' && env -u TELLTALE_TOKEN -u TELLTALE_TOKEN_FILE -u TELLTALE_DATA '%s' query "
             "--http %s --count 2>&1",
             tt_test_tmpdir(), bin(), s.http);
    CHECK_EQ(run(cmd, out, sizeof out), 1);
    CHECK_MSG(strstr(out, "401") != NULL, "%s", out);
    /* --token still works, with a warning. */
    snprintf(cmd, sizeof cmd, "'%s' query --http %s --token %s --count 2>&1", bin(), s.http,
             s.token);
    CHECK_MSG(run(cmd, out, sizeof out) == 0, "%s", out);
    CHECK_MSG(strstr(out, "deprecated") != NULL, "%s", out);
    tt_test_serve_stop(&s);
}

/* --- another local user ------------------------------------------------------------------ */

/* A victim agent generating tokens at p = 0.95 until it sees TT_HALT. */
struct victim {
    tt_client *c;
    _Atomic int running, halted, stop;
};

static void *victim_main(void *arg)
{
    struct victim *v = arg;
    tt_response *r;
    CHECK_OK(tt_response_begin(v->c, &r, "victim-session", "m", NULL, 0));
    for (int i = 0; !atomic_load(&v->stop); i++) {
        tt_verdict verdict;
        CHECK_OK(tt_response_token_logprobs(r, i, -0.05f, NULL, NULL, 0, &verdict, NULL));
        if (verdict == TT_HALT) {
            atomic_store(&v->halted, 1);
            break;
        }
        if (i == 10) {
            CHECK_OK(tt_flush(v->c, 20000));
            atomic_store(&v->running, 1);
        }
        usleep(500);
    }
    tt_response_summary s;
    CHECK_OK(tt_response_end(r, &s));
    return NULL;
}

/* cmd run as nobody:nogroup with no supplementary groups. */
static int as_nobody(const char *cmd, char *out, size_t cap)
{
    char full[4096];
    snprintf(full, sizeof full,
             "cd / && setpriv --reuid=nobody --regid=nogroup --clear-groups -- "
             "env -u TELLTALE_TOKEN -u TELLTALE_TOKEN_FILE -u TELLTALE_DATA sh -c \"%s\" 2>&1",
             cmd);
    return run(full, out, cap);
}

TEST_T(security_another_uid_cannot_read_halt_or_change_policy, 90)
{
    CHECK_MSG(geteuid() == 0, "switching to nobody with setpriv needs root (the test runs as root "
                              "in CI)");
    CHECK_MSG(access("/usr/bin/setpriv", X_OK) == 0, "setpriv (util-linux) is missing");
    struct tt_test_serve s;
    tt_test_serve_start(&s, "victim", NULL);
    struct victim v;
    memset(&v, 0, sizeof v);
    v.c = tt_test_client(s.endpoint, "victim-agent", NULL);
    CHECK_OK(tt_log(v.c, "victim-session", TT_INFO, "my password is hunter2", NULL, 0));
    pthread_t th;
    CHECK_OK(pthread_create(&th, NULL, victim_main, &v));
    while (!atomic_load(&v.running)) {
        usleep(1000);
    }
    char cmd[3000], out[8192];
    /* The files: the directory is closed to others. */
    snprintf(cmd, sizeof cmd, "cat '%s/telltale.db' '%s/telltale.db-wal' '%s/operator.token'",
             s.dir, s.dir, s.dir);
    CHECK_MSG(as_nobody(cmd, out, sizeof out) != 0, "nobody read the files: %.200s", out);
    CHECK_MSG(strstr(out, "hunter2") == NULL && strstr(out, s.token) == NULL, "%.300s", out);
    CHECK_MSG(strstr(out, "Permission denied") != NULL, "%s", out);
    /* The API through the CLI, which looks for the token where the owner's CLI finds it. */
    snprintf(cmd, sizeof cmd, "'%s' query --http %s --data '%s' --limit 100", bin(), s.http, s.dir);
    CHECK(as_nobody(cmd, out, sizeof out) != 0);
    CHECK_MSG(strstr(out, "hunter2") == NULL, "%s", out);
    snprintf(cmd, sizeof cmd, "'%s' query --http %s --limit 100", bin(), s.http);
    CHECK(as_nobody(cmd, out, sizeof out) != 0);
    CHECK_MSG(strstr(out, "hunter2") == NULL && strstr(out, "401") != NULL, "%s", out);
    /* Halt the victim's session; replace its guard policy with one that halts it. */
    snprintf(cmd, sizeof cmd, "'%s' halt --http %s --session victim-session", bin(), s.http);
    CHECK(as_nobody(cmd, out, sizeof out) != 0);
    CHECK_MSG(strstr(out, "401") != NULL, "%s", out);
    snprintf(cmd, sizeof cmd,
             "curl -s -o /dev/null -w '%%{http_code}' -X POST -H 'Content-Type: application/json' "
             "-d '{\\\"token_min_prob\\\": 0.99, \\\"action\\\": \\\"halt\\\"}' "
             "http://%s/api/v1/agents/victim-agent/guard-policy",
             s.http);
    CHECK_EQ(as_nobody(cmd, out, sizeof out), 0);
    CHECK_MSG(strcmp(out, "401") == 0, "guard-policy as nobody answered %s", out);
    /* The victim keeps running (a halt or that policy would show at its next token). */
    usleep(500000);
    CHECK_MSG(!atomic_load(&v.halted), "another user halted the victim");
    /* The owner can: the same halt with the token found in the data directory. */
    snprintf(cmd, sizeof cmd, "'%s' halt --http %s --data '%s' --session victim-session 2>&1",
             bin(), s.http, s.dir);
    CHECK_MSG(run(cmd, out, sizeof out) == 0, "%s", out);
    for (int i = 0; i < 500 && !atomic_load(&v.halted); i++) {
        usleep(10000);
    }
    CHECK_MSG(atomic_load(&v.halted), "the owner's halt did not reach the victim");
    atomic_store(&v.stop, 1);
    pthread_join(th, NULL);
    tt_close(v.c, 10000);
    tt_test_serve_stop(&s);
}

TEST(security_emit_reads_its_ingest_token_from_a_private_file)
{
    char toks[600], tokfile[600], cmd[2400], out[8192];
    snprintf(toks, sizeof toks, "%s/ingest.tokens", tt_test_tmpdir());
    tt_test_write_file(toks, "file-agent ingest-tok-0123\n");
    snprintf(tokfile, sizeof tokfile, "%s/emit.token", tt_test_tmpdir());
    tt_test_write_file(tokfile, "ingest-tok-0123\n");
    struct tt_test_serve s;
    tt_test_serve_start(&s, "emit", "--ingest-tokens", toks, NULL);
    snprintf(cmd, sizeof cmd,
             "echo '{\"kind\":\"log\",\"message\":\"from a file token\"}' | env -u TELLTALE_TOKEN "
             "'%s' emit --endpoint %s --agent whoever --token-file '%s' --timeout-ms 10000 2>&1",
             bin(), s.endpoint, tokfile);
    CHECK_MSG(run(cmd, out, sizeof out) == 0, "%s", out);
    char *body = NULL;
    CHECK_EQ(tt_test_http(s.http, "GET", "/api/v1/events?agent=file-agent", NULL, &body), 200);
    CHECK_MSG(strstr(body, "from a file token") != NULL, "%s", body);
    free(body);
    /* Others may read it: refused before anything is sent. */
    CHECK_OK(chmod(tokfile, 0644));
    CHECK_EQ(run(cmd, out, sizeof out), 2);
    CHECK_MSG(strstr(out, "chmod 600") != NULL, "%s", out);
    tt_test_serve_stop(&s);
}

TEST(security_ready_file_in_a_shared_directory_never_follows_a_planted_link)
{
    char shared[600], victim[700], planted[760], ready[700], data[700];
    snprintf(shared, sizeof shared, "%s/shared", tt_test_tmpdir());
    CHECK_OK(mkdir(shared, 0777));
    CHECK_OK(chmod(shared, 01777)); /* like /tmp */
    snprintf(victim, sizeof victim, "%s/victim.conf", tt_test_tmpdir());
    tt_test_write_file(victim, "precious\n");
    snprintf(ready, sizeof ready, "%s/ready.json", shared);
    /* What another user could plant beside the ready file before the collector starts: the
     * names a careless writer would use for its temporary file. */
    snprintf(planted, sizeof planted, "%s.tmp", ready);
    CHECK_OK(symlink(victim, planted));
    snprintf(data, sizeof data, "%s/data", tt_test_tmpdir());
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        char sock[800];
        snprintf(sock, sizeof sock, "unix:%s/s.sock", data);
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 2);
        execl(bin(), bin(), "serve", "--data", data, "--listen", sock, "--no-http", "--ready-file",
              ready, (char *)NULL);
        _exit(127);
    }
    struct stat st;
    for (int i = 0; i < 1000 && lstat(ready, &st) != 0; i++) {
        usleep(10000);
    }
    kill(pid, SIGTERM);
    int status;
    waitpid(pid, &status, 0);
    CHECK_OK(lstat(ready, &st));
    CHECK_MSG(S_ISREG(st.st_mode) && (st.st_mode & 0777) == 0600, "ready file mode %o",
              (unsigned)st.st_mode);
    CHECK_STR(slurp(victim), "precious\n");
    CHECK_MSG(strstr(slurp(ready), "\"pid\"") != NULL, "%s", slurp(ready));
}
