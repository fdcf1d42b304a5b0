/*
 * test_comply.c - the compliance checks (src/common/comply.c): the SQL corpus with its precision
 * and recall, hosts, PII and secrets with their checksums, redaction, the policy parser and
 * the decision on a step.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/comply.h"
#include "test.h"

TEST(comply_sql_corpus_has_full_precision_and_recall)
{
    const char *root = getenv("TT_SRCDIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/vectors/comply_sql.txt", root ? root : ".");
    FILE *f = fopen(path, "r");
    CHECK_MSG(f != NULL, "cannot open %s", path);
    char line[1024], q[1024];
    unsigned tp = 0, fp = 0, fn = 0, tn = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n' || line[1] != '\t') {
            continue;
        }
        /* "\n" in the file stands for a newline */
        size_t n = 0;
        for (const char *s = line + 2; *s && *s != '\n' && n + 1 < sizeof q; s++) {
            if (s[0] == '\\' && s[1] == 'n') {
                q[n++] = '\n';
                s++;
            } else {
                q[n++] = *s;
            }
        }
        q[n] = 0;
        char why[96];
        int got = tt__comply_sql(q, n, why, sizeof why) != 0;
        int want = line[0] == 'D';
        tp += got && want;
        fp += got && !want;
        fn += !got && want;
        tn += !got && !want;
        if (got != want) {
            fprintf(stderr, "%s: %s (%s)\n", want ? "missed" : "false alarm", q, why);
        }
        CHECK(!got || why[0] != 0);
    }
    fclose(f);
    fprintf(stderr, "corpus: %u destructive, %u benign; precision %.3f, recall %.3f\n", tp + fn,
            tn + fp, tp + fp ? (double)tp / (tp + fp) : 1.0,
            tp + fn ? (double)tp / (tp + fn) : 1.0);
    CHECK(tp + fn >= 40 && tn + fp >= 40);
    CHECK_EQ(fp, 0u);
    CHECK_EQ(fn, 0u);
}

TEST(comply_sql_names_what_it_found)
{
    char why[96];
    CHECK_EQ(tt__comply_sql("drop table users", 16, why, sizeof why), (uint32_t)TT_SQL_DROP);
    CHECK_STR(why, "DROP TABLE");
    CHECK_EQ(tt__comply_sql("DELETE FROM t", 13, why, sizeof why), (uint32_t)TT_SQL_DELETE_ALL);
    CHECK_STR(why, "DELETE without WHERE");
    const char *two = "UPDATE t SET a = 1; TRUNCATE t";
    CHECK_EQ(tt__comply_sql(two, strlen(two), why, sizeof why),
             (uint32_t)(TT_SQL_UPDATE_ALL | TT_SQL_TRUNCATE));
    CHECK_STR(why, "UPDATE without WHERE");
    /* unterminated strings and comments end the text, not the scan's memory */
    CHECK_EQ(tt__comply_sql("SELECT 'abc", 11, why, sizeof why), 0u);
    CHECK_EQ(tt__comply_sql("/* DROP TABLE t", 15, why, sizeof why), 0u);
    CHECK_EQ(tt__comply_sql("SELECT $x$ DROP TABLE t", 23, why, sizeof why), 0u);
    CHECK_EQ(tt__comply_sql(NULL, 0, why, sizeof why), 0u);
    /* a length shorter than the string: only that prefix is read */
    CHECK_EQ(tt__comply_sql("DROP TABLE t", 4, why, sizeof why), 0u);
}

TEST(comply_hosts_match_names_and_suffix_patterns)
{
    const char allow[3][128] = {"api.example.com", "*.internal.example.org", "127.0.0.1"};
    char host[128];
#define ALLOWED(s) tt__comply_host_allowed(s, strlen(s), allow, 3, host, sizeof host)
    CHECK(ALLOWED("https://api.example.com/v1/search?q=1"));
    CHECK(ALLOWED("https://API.Example.COM./x"));
    CHECK(ALLOWED("http://user:pw@db.internal.example.org:8080/"));
    CHECK(ALLOWED("api.example.com:443"));
    CHECK(ALLOWED("http://127.0.0.1:9/"));
    CHECK(ALLOWED("SELECT 1")); /* names no host */
    CHECK(!ALLOWED("https://evil.example.net/steal"));
    CHECK_STR(host, "evil.example.net");
    CHECK(!ALLOWED("https://internal.example.org/")); /* *.x is below x, not x */
    CHECK(!ALLOWED("https://api.example.com.evil.net/"));
    CHECK_STR(host, "api.example.com.evil.net");
    CHECK(!ALLOWED("http://api.example.com@evil.net/")); /* userinfo is not the host */
    CHECK_STR(host, "evil.net");
    CHECK(!ALLOWED("https://[::1]:8443/"));
    CHECK_STR(host, "::1");
    CHECK(!ALLOWED("evil.example.net/path"));
#undef ALLOWED
}

static uint32_t first_kind(const char *s)
{
    struct tt__comply_find f;
    return tt__comply_pii_find(s, strlen(s), 0, TT_PII_ALL, &f) ? f.kind : 0;
}

TEST(comply_pii_recognisers_check_their_checksums)
{
    CHECK_EQ(first_kind("write to ann.lee+x@mail.example.co.uk today"), (uint32_t)TT_PII_EMAIL);
    CHECK_EQ(first_kind("user@localhost"), 0u);
    CHECK_EQ(first_kind("@handle and a@b"), 0u);
    /* Luhn: a valid test number, spaced and dashed; one digit off is not a card */
    CHECK_EQ(first_kind("card 4111 1111 1111 1111 exp"), (uint32_t)TT_PII_CARD);
    CHECK_EQ(first_kind("card 4111-1111-1111-1111"), (uint32_t)TT_PII_CARD);
    CHECK_EQ(first_kind("5500005555555559"), (uint32_t)TT_PII_CARD);
    CHECK_EQ(first_kind("card 4111 1111 1111 1112"), 0u);
    CHECK_EQ(first_kind("order 12345678901234567890123"), 0u); /* too long */
    CHECK_EQ(first_kind("id 123456789012"), 0u);               /* too short */
    CHECK_EQ(first_kind("key sk-proj-abcdefghijklmnopqrstuvwx1234"), (uint32_t)TT_PII_API_KEY);
    CHECK_EQ(first_kind("AKIAIOSFODNN7EXAMPLE"), (uint32_t)TT_PII_API_KEY);
    CHECK_EQ(first_kind("ghp_0123456789abcdefghijklmnopqrstuvwxyz"), (uint32_t)TT_PII_API_KEY);
    CHECK_EQ(first_kind("task-list and sk-short"), 0u);
    CHECK_EQ(first_kind("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"),
             (uint32_t)TT_PII_JWT);
    CHECK_EQ(first_kind("eyJ alone"), 0u);
    CHECK_EQ(first_kind("pay to GB82 WEST 1234 5698 7654 32 please"), (uint32_t)TT_PII_IBAN);
    CHECK_EQ(first_kind("DE89370400440532013000"), (uint32_t)TT_PII_IBAN);
    CHECK_EQ(first_kind("DE89370400440532013001"), 0u); /* mod-97 fails */
    CHECK_EQ(first_kind("the quick brown fox 42"), 0u);
}

TEST(comply_redaction_masks_every_value_and_counts_them)
{
    const char *s = "mail bob@example.com, card 4111 1111 1111 1111, key AKIAIOSFODNN7EXAMPLE.";
    char out[256];
    uint64_t masked = 0;
    size_t n = tt__comply_redact(s, strlen(s), TT_PII_ALL, out, sizeof out, &masked);
    out[n] = 0;
    CHECK_STR(out, "mail [email], card [card], key [api_key].");
    CHECK_EQ_U64(masked, 3);
    /* only the kinds asked for */
    masked = 0;
    n = tt__comply_redact(s, strlen(s), TT_PII_CARD, out, sizeof out, &masked);
    out[n] = 0;
    CHECK_STR(out, "mail bob@example.com, card [card], key AKIAIOSFODNN7EXAMPLE.");
    CHECK_EQ_U64(masked, 1);
    /* a small output is cut, never overrun */
    char tiny[8];
    n = tt__comply_redact(s, strlen(s), TT_PII_ALL, tiny, sizeof tiny, NULL);
    CHECK_EQ(n, sizeof tiny);
    CHECK(memcmp(tiny, "mail [em", 8) == 0);
    /* a card that ends a longer run of digit groups: the whole run goes, or its head (17 zeros,
     * a card by Luhn once the tail is masked) would survive redaction (found by fuzz_comply) */
    const char *run = "ref 00000000000000000-00000000000000 end";
    masked = 0;
    n = tt__comply_redact(run, strlen(run), TT_PII_ALL, out, sizeof out, &masked);
    out[n] = 0;
    CHECK_STR(out, "ref [card] end");
    CHECK_EQ_U64(masked, 1);
    struct tt__comply_find f;
    CHECK(!tt__comply_pii_find(out, n, 0, TT_PII_ALL, &f));
    /* digits that hold no card while they run into an address, but do once it is masked: the
     * output is redacted again (found by fuzz_comply) */
    const char *into = "call 1234 5698 76554 3u@evil.example now";
    masked = 0;
    n = tt__comply_redact(into, strlen(into), TT_PII_ALL, out, sizeof out, &masked);
    out[n] = 0;
    CHECK_STR(out, "call [card] [email] now");
    CHECK_EQ_U64(masked, 2);
    /* a card after a plain number and a word is still a card on its own */
    const char *apart = "ref 12 x 4111 1111 1111 1111";
    n = tt__comply_redact(apart, strlen(apart), TT_PII_ALL, out, sizeof out, NULL);
    out[n] = 0;
    CHECK_STR(out, "ref 12 x [card]");
}

static const char policy_text[] = "# a typical policy\n"
                                  "[rule.destructive_sql]\n"
                                  "match = sql\n"
                                  "kinds = tool, retrieval\n"
                                  "action = block\n"
                                  "\n"
                                  "[rule.apis]\n"
                                  "match = host\n"
                                  "kinds = api\n"
                                  "allow = api.example.com, *.corp.example\n"
                                  "action = block\n"
                                  "[rule.no_shell]\n"
                                  "match = tool\n"
                                  "names = shell, exec   # trailing comment\n"
                                  "action = block\n"
                                  "[rule.pii]\n"
                                  "match = pii\n"
                                  "types = card, email\n"
                                  "redact = on\n"
                                  "[rule.budget]\n"
                                  "match = limit\n"
                                  "kinds = tool\n"
                                  "calls = 3\n"
                                  "action = block\n";

TEST(comply_policy_parses_and_decides_the_strongest_verdict)
{
    static struct tt__comply_policy p;
    char err[256];
    CHECK_OK(tt__comply_parse(&p, policy_text, strlen(policy_text), err, sizeof err));
    CHECK_EQ(p.n_rules, 5u);
    CHECK_EQ(p.redact_pii, (uint32_t)(TT_PII_CARD | TT_PII_EMAIL));
    struct tt__comply_verdict v;
    uint64_t calls[TT_COMPLY_MAX_LIMITS] = {0};
#define STEP(kind, name, q, n)                                                                     \
    (calls[0] = (n), tt__comply_step(&p, kind, name, strlen(name), q, strlen(q), calls, &v))
    CHECK_EQ(STEP(2, "sql", "SELECT * FROM t WHERE id = 1", 0), 0);
    CHECK_EQ(STEP(2, "sql", "DELETE FROM t", 0), TT_COMPLY_BLOCK);
    CHECK_STR(p.rules[v.rule].name, "destructive_sql");
    CHECK_STR(v.why, "DELETE without WHERE");
    CHECK_EQ(STEP(6, "db", "drop table x", 0), TT_COMPLY_BLOCK); /* retrieval too */
    CHECK_EQ(STEP(1, "think", "drop table x", 0), 0);            /* not a kind it looks at */
    CHECK_EQ(STEP(3, "http", "https://api.example.com/x", 0), 0);
    CHECK_EQ(STEP(3, "http", "https://exfil.example.net/x", 0), TT_COMPLY_BLOCK);
    CHECK_STR(v.why, "host exfil.example.net is not allowed");
    CHECK_EQ(STEP(2, "shell", "ls", 0), TT_COMPLY_BLOCK);
    CHECK_EQ(STEP(2, "sql", "SELECT 1 -- 4111 1111 1111 1111", 0), TT_COMPLY_FLAG);
    CHECK_STR(p.rules[v.rule].name, "pii");
    CHECK_EQ(STEP(2, "sql", "SELECT 1", 2), 0);
    CHECK_EQ(STEP(2, "sql", "SELECT 1", 3), TT_COMPLY_BLOCK);
    /* block beats flag, and every match is counted */
    CHECK_EQ(STEP(2, "shell", "rm -rf / # bob@example.com", 5), TT_COMPLY_BLOCK);
    CHECK_EQ(v.matched, 3u);
#undef STEP
}

TEST(comply_policy_errors_name_the_line)
{
    static struct tt__comply_policy p;
    char err[256];
    struct {
        const char *text, *msg;
    } bad[] = {
        {"match = sql\n", "line 1: a key before any [rule.NAME]"},
        {"[rule.a]\nmatch = sq1\n", "line 2: match must be sql"},
        {"[rule.a]\nmatch = tool\naction = block\n", "line 3: rule a needs names = ..."},
        {"[rule.a]\nmatch = sql\nkinds = tool, wizard\n", "line 3: unknown step kind \"wizard\""},
        {"[rule.a]\nmatch = limit\ncalls = 0\n", "line 3: calls must be"},
        {"[rule.a]\nmatch = sql\nredact = on\n", "line 3: rule a: redact applies"},
        {"[rule.a]\nmatch = sql\n[rule.a]\nmatch = sql\n", "line 3: rule a defined twice"},
        {"[rule.a]\nmatch = sql\ncolour = red\n", "line 3: unknown key \"colour\""},
        {"[rules]\n", "line 1: expected [rule.NAME]"},
        {"[rule.a]\nmatch=limit\ncalls=1\n[rule.b]\nmatch=limit\ncalls=1\n[rule.c]\nmatch=limit\n"
         "calls=1\n[rule.d]\nmatch=limit\ncalls=1\n[rule.e]\nmatch=limit\ncalls=1\n[rule.f]\n"
         "match=limit\ncalls=1\n[rule.g]\nmatch=limit\ncalls=1\n[rule.h]\nmatch=limit\ncalls=1\n"
         "[rule.i]\nmatch=limit\ncalls=1\n",
         "line 27: more than 8 limit rules"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        p.n_rules = 99;
        CHECK_EQ(tt__comply_parse(&p, bad[i].text, strlen(bad[i].text), err, sizeof err), -EINVAL);
        CHECK_MSG(strncmp(err, bad[i].msg, strlen(bad[i].msg)) == 0, "%s: got \"%s\"", bad[i].text,
                  err);
        CHECK_EQ(p.n_rules, 99u); /* untouched on failure */
    }
    static char big[TT_COMPLY_MAX_POLICY + 2];
    memset(big, '#', sizeof big);
    CHECK_EQ(tt__comply_parse(&p, big, sizeof big, err, sizeof err), -E2BIG);
    CHECK_OK(tt__comply_parse(&p, "", 0, err, sizeof err));
    CHECK_EQ(p.n_rules, 0u);
}
