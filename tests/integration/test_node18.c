/*
 * test_node18.c - every npm package that `make test` installs (web/, tests/browser/ and
 * tests/otel/, by their lock files) declares that it runs on Debian 12's Node (18.20.4): its "engines.node"
 * range, read with npm's range grammar, holds 18.20.4. On a machine with a newer Node, npm ci
 * --engine-strict would not notice a package that needs Node 20; this test does, in every
 * `make test`. CI also installs and runs the trees under Node 18 itself (.ci/run).
 */
#include <ctype.h>
#include <jansson.h>

#include "test.h"

#define DEBIAN12_NODE "18.20.4"

struct ver {
    long v[3];
    int parts; /* how many were given: 0 for "*" or "x" */
};

/* A version or partial version ("18", "18.2", "v18.2.0", "18.x", "*"); the end, or NULL. */
static const char *parse_ver(const char *p, struct ver *out)
{
    memset(out, 0, sizeof *out);
    if (*p == 'v' || *p == '=') {
        p++;
    }
    for (int i = 0; i < 3; i++) {
        if (*p == '*' || *p == 'x' || *p == 'X') {
            p++;
            break;
        }
        if (!isdigit((unsigned char)*p)) {
            return i == 0 ? NULL : p;
        }
        char *end;
        out->v[i] = strtol(p, &end, 10);
        out->parts = i + 1;
        p = end;
        if (*p != '.') {
            break;
        }
        p++;
    }
    /* A pre-release or build tag: compared as the release (enough for engines ranges). */
    while (*p == '-' || *p == '+' || isalnum((unsigned char)*p) || *p == '.') {
        p++;
    }
    return p;
}

static int cmp(const long a[3], const long b[3])
{
    for (int i = 0; i < 3; i++) {
        if (a[i] != b[i]) {
            return a[i] < b[i] ? -1 : 1;
        }
    }
    return 0;
}

/* The smallest version above every version that the partial v matches ("18.2" -> 18.3.0). */
static void next_after(const struct ver *v, long out[3])
{
    out[0] = v->v[0];
    out[1] = v->parts >= 2 ? v->v[1] : 0;
    out[2] = v->parts >= 3 ? v->v[2] : 0;
    if (v->parts == 1) {
        out[0]++, out[1] = 0, out[2] = 0;
    } else if (v->parts == 2) {
        out[1]++, out[2] = 0;
    } else {
        out[2]++;
    }
}

/* One comparator (">=18", "^14.17.0", "~18.1", "18.x", "<20") against have: 1, 0, or -1 when
 * it cannot be read. *pp advances past it. */
static int comparator(const char **pp, const long have[3])
{
    const char *p = *pp;
    char op[3] = {0};
    if (*p == '>' || *p == '<') {
        op[0] = *p++;
        if (*p == '=') {
            op[1] = *p++;
        }
    } else if (*p == '^' || *p == '~') {
        op[0] = *p++;
    }
    while (*p == ' ') {
        p++;
    }
    struct ver v;
    if (!(p = parse_ver(p, &v))) {
        return -1;
    }
    *pp = p;
    if (v.parts == 0) {
        return op[0] == '<' ? 0 : 1; /* "*": anything ("<*": nothing) */
    }
    long lo[3] = {v.v[0], v.v[1], v.v[2]}, hi[3];
    next_after(&v, hi);
    int c_lo = cmp(have, lo), c_hi = cmp(have, hi);
    if (!strcmp(op, ">=")) {
        return c_lo >= 0;
    }
    if (!strcmp(op, ">")) {
        return c_hi >= 0;
    }
    if (!strcmp(op, "<")) {
        return c_lo < 0;
    }
    if (!strcmp(op, "<=")) {
        return c_hi < 0;
    }
    if (op[0] == '~') {
        struct ver t = v;
        t.parts = v.parts >= 2 ? 2 : 1;
        next_after(&t, hi);
        return c_lo >= 0 && cmp(have, hi) < 0;
    }
    if (op[0] == '^') {
        /* The left-most non-zero part stays fixed. */
        struct ver t = v;
        t.parts = v.v[0] || v.parts == 1 ? 1 : v.v[1] || v.parts == 2 ? 2 : 3;
        next_after(&t, hi);
        return c_lo >= 0 && cmp(have, hi) < 0;
    }
    return c_lo >= 0 && c_hi < 0; /* "18", "18.2", "18.2.0": that version or series */
}

/* Does the npm range hold the version have? 1, 0, or -1 when it cannot be read. */
static int range_holds(const char *range, const char *have_s)
{
    struct ver hv;
    CHECK(parse_ver(have_s, &hv));
    const long *have = hv.v;
    const char *p = range;
    int any = 0;
    while (1) { /* alternatives separated by "||" */
        int all = 1, n = 0;
        while (*p == ' ') {
            p++;
        }
        while (*p && *p != '|') {
            /* A hyphen range "A - B". */
            const char *q = p;
            struct ver a, b;
            const char *e = parse_ver(q, &a);
            if (e && strncmp(e, " - ", 3) == 0) {
                const char *e2 = parse_ver(e + 3, &b);
                if (!e2) {
                    return -1;
                }
                long hi[3];
                next_after(&b, hi);
                all &=
                    cmp(have, a.v) >= 0 && (b.parts == 3 ? cmp(have, b.v) <= 0 : cmp(have, hi) < 0);
                p = e2;
            } else {
                int r = comparator(&p, have);
                if (r < 0) {
                    return -1;
                }
                all &= r;
            }
            n++;
            while (*p == ' ' || *p == ',') {
                p++;
            }
        }
        any |= n > 0 && all;
        if (*p == '\0') {
            break;
        }
        if (strncmp(p, "||", 2) != 0) {
            return -1;
        }
        p += 2;
    }
    return any;
}

TEST(node18_range_reader_reads_npm_ranges)
{
    /* What engines fields say, and what they mean for Node 18.20.4. */
    static const struct {
        const char *range;
        int holds;
    } cases[] = {
        {">=18", 1},
        {">=20", 0},
        {">= 18.0.0", 1},
        {">=18.21", 0},
        {"^14.17.0 || ^16.13.0 || >=18.0.0", 1},
        {"^20.17.0 || >=22.9.0", 0},
        {"^18.12.0", 1},
        {"^18.21.0", 0},
        {"~18.20.0", 1},
        {"~18.19", 0},
        {"18.x", 1},
        {"18", 1},
        {"20", 0},
        {"*", 1},
        {">=12 <19", 1},
        {">=12 <18.20.4", 0},
        {"16 - 18", 1},
        {"16 - 18.19", 0},
        {">=16.14 || 14 >= 14.17", 1},
        {"^0.10.0", 0},
        {"<18.20.4", 0},
        {"<=18.20.4", 1},
        {">18", 0},
        {">18.20.3", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int r = range_holds(cases[i].range, DEBIAN12_NODE);
        CHECK_MSG(r == cases[i].holds, "\"%s\": %d, expected %d", cases[i].range, r,
                  cases[i].holds);
    }
    CHECK_EQ(range_holds("=>18 !!", DEBIAN12_NODE), -1);
}

static void check_lock(const char *rel)
{
    const char *src = getenv("TT_SRCDIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", src && *src ? src : ".", rel);
    json_error_t err;
    json_t *lock = json_load_file(path, 0, &err);
    CHECK_MSG(lock, "%s: %s", path, err.text);
    json_t *pkgs = json_object_get(lock, "packages");
    CHECK_MSG(json_is_object(pkgs) && json_object_size(pkgs) > 1,
              "%s: no \"packages\" (lockfileVersion 2 or 3 expected)", rel);
    const char *name;
    json_t *pkg;
    int checked = 0;
    json_object_foreach(pkgs, name, pkg)
    {
        const char *range =
            json_string_value(json_object_get(json_object_get(pkg, "engines"), "node"));
        if (!range) {
            continue;
        }
        int r = range_holds(range, DEBIAN12_NODE);
        CHECK_MSG(r >= 0, "%s: %s: cannot read engines.node \"%s\"", rel, name, range);
        CHECK_MSG(r == 1,
                  "%s: %s %s needs Node \"%s\", Debian 12 has %s: pin a version that runs on "
                  "it (make test must pass on a fresh Debian 12 machine)",
                  rel, name, json_string_value(json_object_get(pkg, "version")), range,
                  DEBIAN12_NODE);
        checked++;
    }
    printf("%s: %zu packages, %d with an engines.node range, all hold %s\n", rel,
           json_object_size(pkgs) - 1, checked, DEBIAN12_NODE);
    json_decref(lock);
}

TEST(node18_every_locked_npm_package_runs_on_debian_12_node)
{
    check_lock("web/package-lock.json");
    check_lock("tests/browser/package-lock.json");
    check_lock("tests/otel/package-lock.json");
}
