/*
 * test_cpp.c - include/telltale.hpp end to end: tests/drivers/cpp_agent.cpp, built by g++ with
 * -std=c++17 -Wall -Wextra -Werror once with exceptions and once with -fno-exceptions
 * (mk/cpp.mk), runs against a real `telltale serve`; the store then holds exactly what its
 * RAII scopes and attribute helpers should have made of it: every attribute with its C++ type,
 * the steps nested and ended by their scopes (normally, after fail(), by an exception or an
 * early return), the response ended by its scope, and nothing of the calls it refused. The
 * C++ example of docs/api.md compiles the same way (-fno-exceptions) and does what it says, and
 * so does the README's C example, built with the link lines the README and docs/api.md give.
 */
#include <jansson.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "operator.h"
#include "serve.h"
#include "test.h"

#define MAX_EVENTS 64

static int run_agent(const char *prog, const char *endpoint, const char *session)
{
    char path[4096];
    const char *build = getenv("TT_BUILD");
    snprintf(path, sizeof path, "%s/tests/%s", build && *build ? build : "build", prog);
    CHECK_MSG(access(path, X_OK) == 0, "%s is missing (make test builds it)", path);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        execl(path, path, endpoint, session, (char *)NULL);
        _exit(127);
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Every stored event of the agent, oldest first, parsed; the count. */
static size_t fetch_events(const char *http, const char *agent, json_t **ev)
{
    char *body = NULL, path[256];
    snprintf(path, sizeof path, "/api/v1/events?agent=%s&format=ndjson", agent);
    CHECK_EQ(tt_test_http(http, "GET", path, NULL, &body), 200);
    CHECK(body);
    size_t n = 0;
    for (char *line = strtok(body, "\n"); line; line = strtok(NULL, "\n")) {
        CHECK(n < MAX_EVENTS);
        json_error_t err;
        ev[n] = json_loads(line, 0, &err);
        CHECK_MSG(ev[n], "bad event JSON: %s", err.text);
        n++;
    }
    free(body);
    return n;
}

static const char *str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

/* The event of kind with field key equal to value, or NULL. */
static json_t *find(json_t **ev, size_t n, const char *kind, const char *key, const char *value)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(str(ev[i], "kind"), kind) == 0 && strcmp(str(ev[i], key), value) == 0) {
            return ev[i];
        }
    }
    return NULL;
}

/* A step's end: checks its status, error and result size; returns its seq. */
static json_int_t check_step_end(json_t **ev, size_t n, json_t *begin, const char *status,
                                 const char *error, json_int_t result_bytes)
{
    CHECK(begin);
    json_t *end = find(ev, n, "step_end", "step_id", str(begin, "step_id"));
    CHECK_MSG(end, "no step_end for step %s", str(begin, "name"));
    CHECK_STR(str(end, "status"), status);
    CHECK_STR(str(end, "error"), error);
    CHECK_EQ(json_integer_value(json_object_get(end, "result_bytes")), result_bytes);
    return json_integer_value(json_object_get(end, "seq"));
}

static void check_agent(const char *prog, int with_exceptions)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "serve", NULL);
    const char *session = with_exceptions ? "cpp-exceptions" : "cpp-no-exceptions";
    CHECK_MSG(run_agent(prog, s.endpoint, session) == 0, "%s failed (its output is above)", prog);

    json_t *ev[MAX_EVENTS];
    size_t n = fetch_events(s.http, "cpp-agent", ev);
    /* 2 logs, 1 metric, 4 steps (begin + end), response begin, tokens, end: the refused calls
     * (too many attributes, an out-of-range one, a step name too long) emitted nothing. */
    CHECK_EQ(n, 14);
    for (size_t i = 0; i < n; i++) {
        CHECK(strncmp(str(ev[i], "message"), "refused", 7) != 0);
    }

    json_t *log = find(ev, n, "log", "message", "hello from C++");
    CHECK(log);
    CHECK_STR(str(log, "session"), session);
    CHECK_STR(str(log, "severity"), "info");
    json_t *a = json_object_get(log, "attrs");
    CHECK_EQ(json_object_size(a), 7);
    CHECK(json_is_integer(json_object_get(a, "count")));
    CHECK_EQ(json_integer_value(json_object_get(a, "count")), 42);
    CHECK(json_is_real(json_object_get(a, "ratio")));
    CHECK_NEAR(json_real_value(json_object_get(a, "ratio")), 0.5, 0);
    CHECK(json_is_true(json_object_get(a, "cached")));
    CHECK_STR(str(a, "model"), "toy-bigram");
    CHECK_STR(str(a, "view-key"), "view-value"); /* from std::string_view, not NUL-terminated */
    CHECK_STR(str(a, "temp"), "rvalue-copied");
    CHECK(json_integer_value(json_object_get(a, "big")) == 9000000000LL);

    json_t *braced = find(ev, n, "log", "message", "braced list");
    CHECK(braced);
    CHECK_STR(str(braced, "severity"), "warn");
    a = json_object_get(braced, "attrs");
    CHECK_EQ(json_integer_value(json_object_get(a, "n")), 3);
    CHECK(json_is_false(json_object_get(a, "flag")));

    json_t *metric = find(ev, n, "metric", "name", "queue_depth");
    CHECK(metric);
    CHECK_STR(str(metric, "metric_kind"), "gauge");
    CHECK_NEAR(json_number_value(json_object_get(metric, "value")), 7.0, 0);
    CHECK_STR(str(metric, "unit"), "1");
    CHECK_STR(str(json_object_get(metric, "attrs"), "q"), "main");

    json_t *plan = find(ev, n, "step_begin", "name", "plan");
    json_t *search = find(ev, n, "step_begin", "name", "search");
    json_t *fetch = find(ev, n, "step_begin", "name", "fetch");
    json_t *parse = find(ev, n, "step_begin", "name", "parse");
    CHECK(plan && search && fetch && parse);
    CHECK_STR(str(plan, "step_kind"), "reasoning");
    CHECK(!json_object_get(plan, "parent_id"));
    CHECK_STR(str(search, "step_kind"), "tool");
    CHECK_STR(str(search, "query"), "q=telltale c++");
    CHECK_STR(str(fetch, "step_kind"), "api");
    CHECK_STR(str(parse, "query"), "doc=<7 KiB>");
    CHECK_STR(str(search, "parent_id"), str(plan, "step_id"));
    CHECK_STR(str(fetch, "parent_id"), str(plan, "step_id"));
    CHECK_STR(str(parse, "parent_id"), str(plan, "step_id"));
    /* The traceparent of telltale::step: the plan joins the trace, its children inherit it. */
    CHECK_STR(str(plan, "trace_id"), "4bf92f3577b34da6a3ce929d0e0e4736");
    CHECK_STR(str(plan, "parent_span_id"), "00f067aa0ba902b7");
    CHECK_STR(str(search, "trace_id"), "4bf92f3577b34da6a3ce929d0e0e4736");
    CHECK_STR(str(search, "parent_span_id"), str(plan, "span_id"));
    CHECK(find(ev, n, "step_begin", "name", "bad") == NULL);

    json_int_t s1 = check_step_end(ev, n, search, "ok", "", 123);
    json_int_t s2 = check_step_end(ev, n, fetch, "error", "HTTP 503 from upstream", -1);
    json_int_t s3 = with_exceptions
                        ? check_step_end(ev, n, parse, "error", "exception", -1)
                        : check_step_end(ev, n, parse, "timeout", "parser took too long", -1);
    json_int_t s4 = check_step_end(ev, n, plan, "ok", "", 2048);
    /* Each scope ended its step when it was left, the children before their parent. */
    CHECK(s1 < s2 && s2 < s3 && s3 < s4);

    json_t *rb = find(ev, n, "response_begin", "model", "toy-model");
    CHECK(rb);
    CHECK_STR(str(rb, "session"), session);
    CHECK_NEAR(json_real_value(json_object_get(json_object_get(rb, "params"), "temperature")), 0.7,
               1e-12);
    json_t *re = find(ev, n, "response_end", "response_id", str(rb, "response_id"));
    CHECK_MSG(re, "the response's scope did not end it");
    CHECK_EQ(json_integer_value(json_object_get(re, "tokens")), 5);
    CHECK_STR(str(re, "verdict"), "pass");
    json_t *tokens = find(ev, n, "tokens", "response_id", str(rb, "response_id"));
    CHECK(tokens);
    CHECK_EQ(json_array_size(json_object_get(tokens, "token_ids")), 5);

    for (size_t i = 0; i < n; i++) {
        json_decref(ev[i]);
    }
    tt_test_serve_stop(&s);
}

TEST(cpp_header_scopes_and_attributes_reach_the_store_with_exceptions)
{
    check_agent("cpp_agent", 1);
}

TEST(cpp_header_scopes_and_attributes_reach_the_store_without_exceptions)
{
    check_agent("cpp_agent_noexcept", 0);
}

/* Run argv; its exit status. */
static int run(char *const argv[])
{
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        execvp(argv[0], argv);
        _exit(127);
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

TEST_T(cpp_example_of_the_api_doc_compiles_without_exceptions_and_runs, 120)
{
    const char *src = getenv("TT_SRCDIR"), *build = getenv("TT_BUILD");
    const char *san = getenv("TT_SANITIZE");
    src = src && *src ? src : ".";
    build = build && *build ? build : "build";
    char doc[4096], cpp[4096], exe[4096], inc[4096], lib[4096], sanflag[256];
    snprintf(doc, sizeof doc, "%s/docs/api.md", src);
    snprintf(cpp, sizeof cpp, "%s/example.cpp", tt_test_tmpdir());
    snprintf(exe, sizeof exe, "%s/example", tt_test_tmpdir());
    snprintf(inc, sizeof inc, "-I%s/include", src);
    snprintf(lib, sizeof lib, "%s/libtelltale.a", build);

    /* The first ```cpp block after the "## C++" heading. */
    FILE *in = fopen(doc, "r");
    CHECK_MSG(in, "cannot read %s", doc);
    FILE *out = fopen(cpp, "w");
    CHECK(out);
    char line[1024];
    int state = 0; /* 0: before the heading, 1: before the block, 2: in it, 3: done */
    while (state < 3 && fgets(line, sizeof line, in)) {
        if (state == 0 && strncmp(line, "## C++", 6) == 0) {
            state = 1;
        } else if (state == 1 && strcmp(line, "```cpp\n") == 0) {
            state = 2;
        } else if (state == 2 && strcmp(line, "```\n") == 0) {
            state = 3;
        } else if (state == 2) {
            fputs(line, out);
        }
    }
    fclose(in);
    fclose(out);
    CHECK_MSG(state == 3, "docs/api.md has no ```cpp block under \"## C++\"");

    char *argv[24];
    int n = 0;
    argv[n++] = "g++";
    argv[n++] = "-std=c++17";
    argv[n++] = "-Wall";
    argv[n++] = "-Wextra";
    argv[n++] = "-Werror";
    argv[n++] = "-fno-exceptions";
    if (san && *san) {
        snprintf(sanflag, sizeof sanflag, "-fsanitize=%s", san);
        argv[n++] = sanflag;
    }
    argv[n++] = inc;
    argv[n++] = "-o";
    argv[n++] = exe;
    argv[n++] = cpp;
    argv[n++] = lib;
    argv[n++] = "-lzstd";
    argv[n++] = "-lgnutls";
    argv[n++] = "-lnats";
    argv[n++] = "-lm";
    argv[n++] = "-pthread";
    argv[n] = NULL;
    CHECK_MSG(run(argv) == 0, "g++ refused the example of docs/api.md (%s)", cpp);

    struct tt_test_serve s;
    tt_test_serve_start(&s, "serve", NULL);
    setenv("TELLTALE_ENDPOINT", s.endpoint, 1);
    setenv("TELLTALE_AGENT", "cpp-doc", 1);
    char *eargv[] = {exe, NULL};
    CHECK_MSG(run(eargv) == 0, "the example of docs/api.md failed");

    json_t *ev[MAX_EVENTS];
    size_t nev = fetch_events(s.http, "cpp-doc", ev);
    CHECK_EQ(nev, 8); /* log, 2 step begins and ends, response begin, tokens and end */
    json_t *log = find(ev, nev, "log", "message", "turn started");
    CHECK(log);
    json_t *a = json_object_get(log, "attrs");
    CHECK_STR(str(a, "user"), "ada");
    CHECK_EQ(json_integer_value(json_object_get(a, "attempt")), 2);
    CHECK(json_is_false(json_object_get(a, "cached")));
    json_t *turn = find(ev, nev, "step_begin", "name", "turn");
    json_t *search = find(ev, nev, "step_begin", "name", "search");
    CHECK(turn && search);
    CHECK_STR(str(search, "parent_id"), str(turn, "step_id"));
    json_int_t s1 = check_step_end(ev, nev, search, "error", "no answer", -1);
    json_int_t s2 = check_step_end(ev, nev, turn, "ok", "", -1);
    CHECK(s1 < s2);
    json_t *re = find(ev, nev, "response_end", "session", "s-42");
    CHECK(re);
    CHECK_EQ(json_integer_value(json_object_get(re, "tokens")), 1);
    for (size_t i = 0; i < nev; i++) {
        json_decref(ev[i]);
    }
    tt_test_serve_stop(&s);
}

/* g++ -fsyntax-only on a program whose main holds stmt: 0 when it compiles; its messages go
 * to snippetI.log in the test's output directory, returned in *log (malloc'd). */
static int compiles(const char *stmt, int i, char **log)
{
    const char *src = getenv("TT_SRCDIR");
    char path[4096], inc[4096], logpath[4200];
    snprintf(path, sizeof path, "%s/snippet%d.cpp", tt_test_outdir(), i);
    snprintf(inc, sizeof inc, "-I%s/include", src && *src ? src : ".");
    snprintf(logpath, sizeof logpath, "%s/snippet%d.log", tt_test_outdir(), i);
    FILE *f = fopen(path, "w");
    CHECK(f);
    fprintf(f,
            "#include <telltale.hpp>\n#include <string>\n#include <string_view>\n"
            "int main()\n{\n    %s;\n    return 0;\n}\n",
            stmt);
    fclose(f);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        if (!freopen(logpath, "w", stderr)) {
            _exit(126);
        }
        execlp("g++", "g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", inc,
               path, (char *)NULL);
        _exit(127);
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) < 126, "cannot run g++");
    FILE *l = fopen(logpath, "r");
    CHECK(l);
    *log = calloc(1, 1 << 16);
    CHECK(*log);
    size_t n = fread(*log, 1, (1 << 16) - 1, l);
    (*log)[n] = 0;
    fclose(l);
    return WEXITSTATUS(st);
}

TEST_T(cpp_attr_refuses_at_compile_time_what_it_cannot_keep_exactly, 240)
{
    char *log;
    /* The harness itself: a snippet with the types attr() takes compiles. */
    CHECK_MSG(compiles("tt_attr a[] = {telltale::attr(\"k\", true), "
                       "telltale::attr(\"k\", uint32_t{1}), telltale::attr(\"k\", int64_t{-1})}; "
                       "(void)a",
                       0, &log) == 0,
              "a valid snippet does not compile:\n%s", log);
    free(log);
    /* Each refusal for its own reason, which g++ names. */
    static const struct {
        const char *stmt, *why;
    } refused[] = {
        {"telltale::attr(\"k\", std::string_view(\"x\"))", "not NUL-terminated"},
        {"telltale::attr(\"k\", uint64_t{1})", "may not fit int64_t"},
        {"telltale::attr(\"k\", 'c')", "a character attribute"},
        {"telltale::attr(\"k\", nullptr)", "no tt_attr type"},
        {"telltale::attr(\"k\", std::string(\"tmp\"))", "deleted"},
        {"telltale::zstr z = std::string_view(\"x\"); (void)z", "deleted"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        CHECK_MSG(compiles(refused[i].stmt, (int)i + 1, &log) != 0, "g++ accepted: %s",
                  refused[i].stmt);
        CHECK_MSG(strstr(log, refused[i].why), "%s refused, but not for \"%s\":\n%s",
                  refused[i].stmt, refused[i].why, log);
        free(log);
    }
}

/* The text between the first "`" at or after the first occurrence of after in doc and the next
 * "`", its line breaks as spaces (malloc'd). */
static char *code_span(const char *doc, const char *after, const char *name)
{
    const char *p = strstr(doc, after);
    CHECK_MSG(p, "%s no longer says \"%s\"", name, after);
    const char *a = strchr(p, '`'), *b = a ? strchr(a + 1, '`') : NULL;
    CHECK_MSG(a && b, "%s: no `code` after \"%s\"", name, after);
    char *s = strndup(a + 1, (size_t)(b - a - 1));
    CHECK(s);
    for (char *q = s; *q; q++) {
        *q = *q == '\n' ? ' ' : *q;
    }
    return s;
}

/* Run cmd with sh -c in dir; its exit status. */
static int run_in(const char *dir, const char *cmd)
{
    char line[20000];
    CHECK((size_t)snprintf(line, sizeof line, "cd '%s' && %s", dir, cmd) < sizeof line);
    char *argv[] = {"sh", "-c", line, NULL};
    return run(argv);
}

/* The README's C example, built in a checkout-like directory (include/, build/) with the link
 * line the README gives, and again with the static link line of docs/api.md, then run against
 * a real collector where `make run` puts its socket (run-data/telltale.sock): it exits 0 and its
 * four events are stored as written. */
TEST_T(readme_c_example_builds_as_documented_and_is_stored, 120)
{
    const char *src = getenv("TT_SRCDIR"), *build = getenv("TT_BUILD");
    const char *san = getenv("TT_SANITIZE");
    src = src && *src ? src : ".";
    build = build && *build ? build : "build";
    char path[4200], dir[4096], link[4200], real[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/checkout", tt_test_tmpdir());
    CHECK(mkdir(dir, 0700) == 0);
    snprintf(path, sizeof path, "%s/include", src);
    snprintf(link, sizeof link, "%s/include", dir);
    CHECK(symlink(path, link) == 0);
    CHECK(realpath(build, real));
    snprintf(link, sizeof link, "%s/build", dir);
    CHECK(symlink(real, link) == 0);

    snprintf(path, sizeof path, "%s/README.md", src);
    char *readme = tt_test_read_file(path);
    const char *c = strstr(readme, "## Using the library from C");
    CHECK_MSG(c, "README.md has no \"## Using the library from C\"");
    const char *begin = strstr(c, "```c\n"), *end = begin ? strstr(begin, "\n```\n") : NULL;
    CHECK_MSG(begin && end, "README.md has no ```c block under \"## Using the library from C\"");
    begin += 5;
    snprintf(path, sizeof path, "%s/app.c", dir);
    FILE *f = fopen(path, "w");
    CHECK(f);
    CHECK(fwrite(begin, 1, (size_t)(end + 1 - begin), f) == (size_t)(end + 1 - begin));
    fclose(f);

    /* "`cc -Iinclude app.c build/libtelltale.a ...`" as written, and "cc -Iinclude app.c build/"
     * followed by what docs/api.md says a static link takes. */
    char *readme_cmd = code_span(readme, "or against the build tree with", "README.md");
    CHECK_MSG(strstr(readme_cmd, "build/libtelltale.a") && strstr(readme_cmd, "app.c"),
              "README.md's build-tree command is now `%s`", readme_cmd);
    snprintf(path, sizeof path, "%s/docs/api.md", src);
    char *api = tt_test_read_file(path);
    char *api_libs = code_span(api, "or statically with", "docs/api.md");
    CHECK_MSG(strncmp(api_libs, "libtelltale.a ", 14) == 0, "docs/api.md's static line is `%s`",
              api_libs);
    char sanflag[256] = "";
    if (san && *san) {
        snprintf(sanflag, sizeof sanflag, " -fsanitize=%s", san);
    }
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "%s%s -o app 2>'%s/readme-cc.log'", readme_cmd, sanflag,
             tt_test_outdir());
    CHECK_MSG(run_in(dir, cmd) == 0, "README.md's command failed in %s: %s (readme-cc.log)", dir,
              readme_cmd);
    snprintf(cmd, sizeof cmd, "cc -Iinclude app.c build/%s%s -o app_api 2>'%s/api-cc.log'",
             api_libs, sanflag, tt_test_outdir());
    CHECK_MSG(run_in(dir, cmd) == 0, "docs/api.md's static link line failed in %s: %s (api-cc.log)",
              dir, cmd);

    struct tt_test_serve s;
    tt_test_serve_start(&s, "serve", NULL);
    snprintf(path, sizeof path, "%s/run-data", dir);
    CHECK(mkdir(path, 0700) == 0);
    snprintf(link, sizeof link, "%s/run-data/telltale.sock", dir);
    CHECK(symlink(s.sock, link) == 0);
    CHECK_MSG(run_in(dir, "./app") == 0, "the README's example failed");

    json_t *ev[MAX_EVENTS];
    size_t nev = fetch_events(s.http, "my-agent", ev);
    CHECK_EQ(nev, 4); /* the log, the step's begin and end, the metric */
    json_t *log = find(ev, nev, "log", "message", "turn started");
    CHECK(log);
    CHECK_STR(str(log, "session"), "conversation-42");
    CHECK_STR(str(json_object_get(log, "attrs"), "user"), "alice");
    CHECK_EQ(json_integer_value(json_object_get(json_object_get(log, "attrs"), "turn")), 3);
    json_t *step = find(ev, nev, "step_begin", "name", "sql");
    CHECK(step);
    CHECK_STR(str(step, "query"), "SELECT name FROM products WHERE stock > 0");
    check_step_end(ev, nev, step, "ok", "", 512);
    json_t *metric = find(ev, nev, "metric", "name", "answer.tokens");
    CHECK(metric);
    CHECK_STR(str(metric, "metric_kind"), "histogram");
    CHECK_NEAR(json_number_value(json_object_get(metric, "value")), 128.0, 0);
    CHECK_STR(str(metric, "unit"), "{token}");
    for (size_t i = 0; i < nev; i++) {
        json_decref(ev[i]);
    }
    tt_test_serve_stop(&s);
    free(readme_cmd);
    free(api_libs);
    free(readme);
    free(api);
}
