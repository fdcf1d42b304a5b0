/*
 * test_dashboard.c - the web dashboard: the embedded assets are what the generator makes of
 * web/ today, GET / and GET /assets/{name} answer with the right types and strict security and
 * cache headers, and the end-to-end browser tests (tests/browser/dashboard.test.mjs,
 * history.test.mjs and resume.test.mjs: chromium driven by playwright-core against a real
 * collector and agent) pass.
 */
#include <curl/curl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "collector/api/assets.h"
#include "history.h"
#include "serve.h"
#include "test.h"

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    CHECK_MSG(f, "cannot open %s", path);
    CHECK_OK(fseek(f, 0, SEEK_END));
    long n = ftell(f);
    CHECK(n >= 0 && n < (64L << 20));
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    CHECK(buf);
    CHECK_EQ(fread(buf, 1, (size_t)n, f), n);
    buf[n] = 0;
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Run argv (NULL-terminated) with its output appended to the test's log; the exit status. */
static int run(char *const argv[])
{
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        execvp(argv[0], argv);
        fprintf(stderr, "cannot run %s\n", argv[0]);
        _exit(127);
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

TEST(assets_generated_file_is_up_to_date)
{
    const char *src = env_or("TT_SRCDIR", ".");
    char tool[4096], manifest[4096], committed[4096], fresh[4096];
    snprintf(tool, sizeof tool, "%s/tools/embed_assets", env_or("TT_BUILD", "build"));
    snprintf(manifest, sizeof manifest, "%s/web/assets.txt", src);
    snprintf(committed, sizeof committed, "%s/web/assets_gen.c", src);
    snprintf(fresh, sizeof fresh, "%s/assets_gen.c", tt_test_tmpdir());
    char *argv[] = {tool, manifest, fresh, NULL};
    CHECK_MSG(run(argv) == 0, "%s failed (web/node_modules missing? `make assets`)", tool);
    size_t na, nb;
    char *a = slurp(committed, &na), *b = slurp(fresh, &nb);
    CHECK_MSG(na == nb && memcmp(a, b, na) == 0,
              "web/assets_gen.c is stale: web/ changed; run `make assets` and commit");
    free(a);
    free(b);
}

TEST(assets_embed_every_manifest_entry_with_a_type)
{
    CHECK(asset_find("index.html"));
    CHECK(asset_find("app.js"));
    CHECK(asset_find("uPlot.iife.min.js"));
    CHECK(!asset_find("../index.html"));
    for (size_t i = 0; i < assets_count; i++) {
        CHECK(assets[i].len > 0);
        CHECK(assets[i].content_type && assets[i].content_type[0]);
        CHECK(strlen(assets[i].etag) == 18);
    }
}

struct hdrs {
    char text[8192];
    size_t n;
};

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct hdrs *h = ud;
    size_t len = size * n;
    if (h->n + len < sizeof h->text) {
        memcpy(h->text + h->n, p, len);
        h->n += len;
        h->text[h->n] = 0;
    }
    return len;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    *(size_t *)ud += size * n;
    return size * n;
}

/* GET url with an optional extra header; status, headers and the body's length. */
static long get(const char *url, const char *extra, struct hdrs *h, size_t *body_len)
{
    CURL *c = curl_easy_init();
    CHECK(c);
    struct curl_slist *sl = extra ? curl_slist_append(NULL, extra) : NULL;
    memset(h, 0, sizeof *h);
    *body_len = 0;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, sl);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, body_len);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    CHECK_EQ(curl_easy_perform(c), CURLE_OK);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(sl);
    curl_easy_cleanup(c);
    return status;
}

static int has_header(const struct hdrs *h, const char *line)
{
    return strcasestr(h->text, line) != NULL;
}

TEST(dashboard_routes_serve_assets_with_csp_nosniff_and_etag)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "assets", NULL);
    char url[512];
    struct hdrs h;
    size_t n;
    snprintf(url, sizeof url, "http://%s/", s.http);
    CHECK_EQ(get(url, NULL, &h, &n), 200);
    CHECK_EQ(n, asset_find("index.html")->len);
    CHECK(has_header(&h, "Content-Type: text/html; charset=utf-8\r\n"));
    CHECK(has_header(&h, "Content-Security-Policy: default-src 'none'; script-src 'self';"));
    CHECK(!has_header(&h, "unsafe-inline") && !has_header(&h, "unsafe-eval"));
    CHECK(has_header(&h, "frame-ancestors 'none'"));
    CHECK(has_header(&h, "X-Content-Type-Options: nosniff\r\n"));
    CHECK(has_header(&h, "Cache-Control: no-cache\r\n"));
    CHECK(!has_header(&h, "Access-Control-Allow-Origin"));

    const struct asset *js = asset_find("app.js");
    snprintf(url, sizeof url, "http://%s/assets/app.js", s.http);
    CHECK_EQ(get(url, NULL, &h, &n), 200);
    CHECK_EQ(n, js->len);
    CHECK(has_header(&h, "Content-Type: text/javascript; charset=utf-8\r\n"));
    char etag[128];
    snprintf(etag, sizeof etag, "ETag: %s\r\n", js->etag);
    CHECK(has_header(&h, etag));
    snprintf(etag, sizeof etag, "If-None-Match: %s", js->etag);
    CHECK_EQ(get(url, etag, &h, &n), 304);
    CHECK_EQ(n, 0);
    CHECK_EQ(get(url, "If-None-Match: \"0000000000000000\"", &h, &n), 200);

    snprintf(url, sizeof url, "http://%s/assets/style.css", s.http);
    CHECK_EQ(get(url, NULL, &h, &n), 200);
    CHECK(has_header(&h, "Content-Type: text/css; charset=utf-8\r\n"));

    snprintf(url, sizeof url, "http://%s/assets/missing.js", s.http);
    CHECK_EQ(get(url, NULL, &h, &n), 404);
    snprintf(url, sizeof url, "http://%s/assets/%%2e%%2e%%2fserve.c", s.http);
    CHECK(get(url, NULL, &h, &n) >= 400);
    snprintf(url, sizeof url, "http://%s/assets/app.js?x=1", s.http);
    CHECK_EQ(get(url, NULL, &h, &n), 400);
    char *body = NULL;
    CHECK_EQ(tt_test_http(s.http, "POST", "/", "", &body), 405);
    free(body);
    tt_test_serve_stop(&s);
}

/* Run tests/browser/NAME.test.mjs with node against the dashboard feeder (it starts its own
 * collector and Chromium); what names the test in the failure message. */
static void run_browser_test(const char *name, const char *what)
{
    const char *src = env_or("TT_SRCDIR", ".");
    const char *build = env_or("TT_BUILD", "build");
    char script[4096], feeder[4096], tmp[4096];
    snprintf(script, sizeof script, "%s/tests/browser/%s.test.mjs", src, name);
    snprintf(feeder, sizeof feeder, "%s/tests/dashboard_feeder", build);
    snprintf(tmp, sizeof tmp, "%s/browser", tt_test_tmpdir());
    CHECK_MSG(access("/usr/bin/chromium", X_OK) == 0,
              "/usr/bin/chromium is missing: scripts/install-deps test");
    setenv("TT_FEEDER", feeder, 1);
    setenv("TT_TEST_TMP", tmp, 1);
    setenv("TT_TEST_OUT", tt_test_outdir(), 1);
    setenv("TT_BIN", env_or("TT_BIN", "build/telltale"), 1);
    char *argv[] = {"node", script, NULL};
    int rc = run(argv);
    CHECK_MSG(rc == 0, "the %s failed with status %d (log and failure.png in %s)", what, rc,
              tt_test_outdir());
}

TEST_T(dashboard_browser_shows_live_agents_sessions_and_hostile_text, 240)
{
    run_browser_test("dashboard", "browser test");
}

TEST_T(dashboard_browser_halts_and_resumes_a_live_session, 240)
{
    run_browser_test("resume", "resume browser test");
}

TEST_T(dashboard_browser_shows_history_of_ten_minutes_as_the_store_holds_it, 300)
{
    const char *src = env_or("TT_SRCDIR", ".");
    char script[4096];
    snprintf(script, sizeof script, "%s/tests/browser/history.test.mjs", src);
    CHECK_MSG(access("/usr/bin/chromium", X_OK) == 0,
              "/usr/bin/chromium is missing: scripts/install-deps test");
    struct tt_test_serve s;
    tt_test_serve_start(&s, "history-browser", NULL);
    /* 10^5 events over 10 whole minutes that ended at least a minute ago, and 20 more agents. */
    int64_t now_s = (int64_t)time(NULL);
    int64_t start = ((now_s - 720) / 60 * 60) * 1000000000ll;
    struct tt_test_history h;
    tt_test_feed_history(s.sock, "hist", 100000, start, 600 * 1000000000ll, 60000, &h);
    for (int i = 0; i < 20; i++) {
        char name[32];
        snprintf(name, sizeof name, "agent-%02d", i);
        struct tt_test_history small;
        tt_test_feed_history(s.sock, name, 200 + 50 * i, start, 600 * 1000000000ll, 60000, &small);
        tt_test_history_free(&small);
    }
    char v[64];
    setenv("TT_HTTP", s.http, 1);
    setenv("TT_TOKEN", tt_test_token(s.http), 1);
    snprintf(v, sizeof v, "%lld", (long long)(start / 1000000));
    setenv("TT_FROM_MS", v, 1);
    snprintf(v, sizeof v, "%lld", (long long)(start / 1000000 + 600000));
    setenv("TT_TO_MS", v, 1);
    snprintf(v, sizeof v, "%llu", (unsigned long long)h.events);
    setenv("TT_EXPECT_EVENTS", v, 1);
    snprintf(v, sizeof v, "%llu", (unsigned long long)h.responses);
    setenv("TT_EXPECT_RESPONSES", v, 1);
    snprintf(v, sizeof v, "%llu", (unsigned long long)h.tool_calls);
    setenv("TT_EXPECT_TOOL_CALLS", v, 1);
    setenv("TT_TEST_OUT", tt_test_outdir(), 1);
    char *argv[] = {"node", script, NULL};
    int rc = run(argv);
    tt_test_history_free(&h);
    tt_test_serve_stop(&s);
    CHECK_MSG(rc == 0, "the history browser test failed with status %d (log and failure.png in %s)",
              rc, tt_test_outdir());
}
