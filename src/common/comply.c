/*
 * comply.c - the compliance checks of comply.h: the SQL tokenizer and classifier, the host
 * allow list, the PII and secret recognisers, redaction, and the policy's parser.
 */
#include "common/comply.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- characters ---------------------------------------------------------------------------- */

static int is_alpha(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static int is_alnum(int c)
{
    return is_alpha(c) || is_digit(c);
}

static int is_space(int c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static int upper(int c)
{
    return c >= 'a' && c <= 'z' ? c - 32 : c;
}

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* --- SQL ----------------------------------------------------------------------------------- */

enum tok_type { T_END, T_WORD, T_IDENT, T_NUMBER, T_STRING, T_PUNCT };

struct tok {
    int type;
    const char *s; /* for T_WORD: the word; T_PUNCT: the character */
    size_t n;
};

struct lexer {
    const char *s;
    size_t n, i;
};

/* Skip a quoted run that starts at s[i] == q and ends at the next unescaped q (doubled quotes
 * escape, as SQL has it; backslash escapes too, as MySQL has it). Unterminated: to the end. */
static size_t skip_quoted(const char *s, size_t n, size_t i, char q)
{
    for (i++; i < n; i++) {
        if (s[i] == '\\' && q != '"' && i + 1 < n) {
            i++;
        } else if (s[i] == q) {
            if (i + 1 < n && s[i + 1] == q) {
                i++;
            } else {
                return i + 1;
            }
        }
    }
    return n;
}

/* PostgreSQL's dollar quotes: $$...$$ or $tag$...$tag$. Returns the end, or 0 if s[i] does not
 * start one. */
static size_t skip_dollar(const char *s, size_t n, size_t i)
{
    size_t j = i + 1;
    while (j < n && (is_alnum((unsigned char)s[j]) || s[j] == '_')) {
        j++;
    }
    if (j >= n || s[j] != '$' || (j > i + 1 && is_digit((unsigned char)s[i + 1]))) {
        return 0;
    }
    size_t tag = j + 1 - i; /* "$tag$" */
    for (size_t k = j + 1; k + tag <= n; k++) {
        if (s[k] == '$' && memcmp(s + k, s + i, tag) == 0) {
            return k + tag;
        }
    }
    return n;
}

static struct tok lex(struct lexer *L)
{
    const char *s = L->s;
    size_t n = L->n;
    for (;;) {
        while (L->i < n && is_space((unsigned char)s[L->i])) {
            L->i++;
        }
        if (L->i >= n) {
            return (struct tok){T_END, s + n, 0};
        }
        size_t i = L->i;
        if (s[i] == '-' && i + 1 < n && s[i + 1] == '-') {
            while (L->i < n && s[L->i] != '\n') {
                L->i++;
            }
            continue;
        }
        if (s[i] == '#') { /* MySQL's line comment */
            while (L->i < n && s[L->i] != '\n') {
                L->i++;
            }
            continue;
        }
        if (s[i] == '/' && i + 1 < n && s[i + 1] == '*') {
            const char *e = NULL;
            for (size_t k = i + 2; k + 1 < n; k++) {
                if (s[k] == '*' && s[k + 1] == '/') {
                    e = s + k + 2;
                    break;
                }
            }
            L->i = e ? (size_t)(e - s) : n;
            continue;
        }
        break;
    }
    size_t i = L->i;
    unsigned char c = (unsigned char)s[i];
    if (c == '\'') {
        L->i = skip_quoted(s, n, i, '\'');
        return (struct tok){T_STRING, s + i, L->i - i};
    }
    if (c == '"' || c == '`') {
        L->i = skip_quoted(s, n, i, (char)c);
        return (struct tok){T_IDENT, s + i, L->i - i};
    }
    if (c == '[') {
        size_t k = i + 1;
        while (k < n && s[k] != ']') {
            k++;
        }
        L->i = k < n ? k + 1 : n;
        return (struct tok){T_IDENT, s + i, L->i - i};
    }
    if (c == '$') {
        size_t e = skip_dollar(s, n, i);
        if (e) {
            L->i = e;
            return (struct tok){T_STRING, s + i, e - i};
        }
    }
    if (is_alpha(c) || c == '_' || c >= 0x80) {
        size_t k = i;
        while (k < n && (is_alnum((unsigned char)s[k]) || s[k] == '_' || s[k] == '$' ||
                         (unsigned char)s[k] >= 0x80)) {
            k++;
        }
        L->i = k;
        return (struct tok){T_WORD, s + i, k - i};
    }
    if (is_digit(c)) {
        size_t k = i;
        while (k < n && (is_alnum((unsigned char)s[k]) || s[k] == '.')) {
            k++;
        }
        L->i = k;
        return (struct tok){T_NUMBER, s + i, k - i};
    }
    L->i = i + 1;
    return (struct tok){T_PUNCT, s + i, 1};
}

static int word_is(const struct tok *t, const char *w)
{
    if (t->type != T_WORD) {
        return 0;
    }
    size_t n = strlen(w);
    if (t->n != n) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (upper((unsigned char)t->s[i]) != w[i]) {
            return 0;
        }
    }
    return 1;
}

static int word_in(const struct tok *t, const char *const *list)
{
    for (; *list; list++) {
        if (word_is(t, *list)) {
            return 1;
        }
    }
    return 0;
}

static int is_punct(const struct tok *t, char c)
{
    return t->type == T_PUNCT && t->s[0] == c;
}

/* Object types that DROP, ALTER and TRUNCATE name (PostgreSQL, MySQL, SQLite, SQL Server). */
static const char *const object_types[] = {
    "TABLE",    "DATABASE",  "SCHEMA",       "INDEX",        "VIEW",      "USER",
    "ROLE",     "SEQUENCE",  "FUNCTION",     "PROCEDURE",    "TRIGGER",   "TYPE",
    "DOMAIN",   "EXTENSION", "MATERIALIZED", "TABLESPACE",   "COLUMN",    "CONSTRAINT",
    "OWNED",    "TEMPORARY", "TEMP",         "FOREIGN",      "SERVER",    "POLICY",
    "RULE",     "EVENT",     "PUBLICATION",  "SUBSCRIPTION", "COLLATION", "AGGREGATE",
    "OPERATOR", "LOGIN",     "VIRTUAL",      "KEYSPACE",     "IF",        NULL};

/* A name: a word, a quoted identifier, possibly qualified (a.b."c"). */
static int is_name(const struct tok *t)
{
    return t->type == T_WORD || t->type == T_IDENT;
}

/* The tautologies a WHERE may hide an unbounded DELETE behind: TRUE, 1, 1=1, 'a'='a', x=x.
 * t holds the condition's first k tokens (k <= 4: more tokens are not a tautology here). */
static int where_always_true(const struct tok *t, size_t k)
{
    if (k == 1 &&
        (word_is(&t[0], "TRUE") || (t[0].type == T_NUMBER && !(t[0].n == 1 && t[0].s[0] == '0')))) {
        return 1;
    }
    if (k == 3 && is_punct(&t[1], '=') && t[0].type == t[2].type && t[0].n == t[2].n &&
        t[0].type != T_PUNCT && memcmp(t[0].s, t[2].s, t[0].n) == 0) {
        return 1;
    }
    return 0;
}

#define HEAD 16 /* tokens of a statement the verbs are judged on */

/* Fill head with up to HEAD tokens of [pos, end); returns how many. */
static size_t lex_head(const char *q, size_t pos, size_t end, struct tok *head)
{
    struct lexer L = {q, end, pos};
    size_t k = 0;
    while (k < HEAD) {
        head[k] = lex(&L);
        if (head[k].type == T_END) {
            break;
        }
        k++;
    }
    return k;
}

/* DELETE or UPDATE from `from` (the byte after the target's name): whether a WHERE at the
 * statement's own level bounds it. Returns 0 bounded, 1 no WHERE, 2 WHERE always true. */
static int unbounded(const char *q, size_t from, size_t end)
{
    struct lexer L = {q, end, from};
    int depth = 0;
    for (;;) {
        struct tok t = lex(&L);
        if (t.type == T_END) {
            return 1;
        }
        if (is_punct(&t, '(')) {
            depth++;
        } else if (is_punct(&t, ')')) {
            depth--;
        } else if (depth == 0 && word_is(&t, "WHERE")) {
            struct tok c[5];
            size_t k = 0;
            for (;;) {
                struct tok x = lex(&L);
                if (x.type == T_END || word_is(&x, "RETURNING") || word_is(&x, "LIMIT") ||
                    word_is(&x, "ORDER")) {
                    break;
                }
                if (k == 5) {
                    return 0;
                }
                c[k++] = x;
            }
            return k && where_always_true(c, k) ? 2 : 0;
        }
    }
}

static size_t tok_end(const char *q, const struct tok *t)
{
    return (size_t)(t->s - q) + t->n;
}

/* A possibly qualified name at v[j] (a.b."c"): the index after it, or 0 if v[j] is none. */
static size_t skip_name(const struct tok *v, size_t rest, size_t j)
{
    if (j >= rest || !is_name(&v[j])) {
        return 0;
    }
    j++;
    while (j + 1 < rest && is_punct(&v[j], '.') &&
           (is_name(&v[j + 1]) || is_punct(&v[j + 1], '*'))) {
        j += 2;
    }
    return j;
}

/* Whether v[j] may follow a statement's target: the end, a punctuation mark, or one of the
 * words. Natural language ("delete from my calendar the meeting") fails here. */
static int target_ends(const struct tok *v, size_t rest, size_t j, const char *const *words)
{
    return j >= rest || v[j].type == T_PUNCT || word_in(&v[j], words);
}

static const char *const privileges[] = {
    "ALL",     "SELECT",      "INSERT",    "UPDATE", "DELETE",     "USAGE",   "EXECUTE",
    "CREATE",  "CONNECT",     "TEMPORARY", "TEMP",   "REFERENCES", "TRIGGER", "TRUNCATE",
    "ALTER",   "DROP",        "INDEX",     "SUPER",  "PROXY",      "RELOAD",  "FILE",
    "PROCESS", "REPLICATION", "MAINTAIN",  "SET",    NULL};

/* One statement [b, e) of q. */
static uint32_t classify(const char *q, size_t b, size_t e, char *why, size_t whylen)
{
    struct tok h[HEAD];
    size_t k = lex_head(q, b, e, h), i = 0;
    while (i < k && is_punct(&h[i], '(')) {
        i++;
    }
    if (i >= k) {
        return 0;
    }
    /* WITH ...: the statement's verb is the first DELETE/UPDATE/INSERT/SELECT/MERGE at depth
     * 0 after the common table expressions. */
    if (word_is(&h[i], "WITH")) {
        struct lexer L = {q, e, tok_end(q, &h[i])};
        int depth = 0;
        for (;;) {
            struct tok t = lex(&L);
            if (t.type == T_END) {
                return 0;
            }
            if (is_punct(&t, '(')) {
                depth++;
            } else if (is_punct(&t, ')')) {
                depth--;
            } else if (depth == 0 &&
                       (word_is(&t, "DELETE") || word_is(&t, "UPDATE") || word_is(&t, "SELECT") ||
                        word_is(&t, "INSERT") || word_is(&t, "MERGE"))) {
                k = lex_head(q, (size_t)(t.s - q), e, h);
                i = 0;
                break;
            }
        }
    }
    const struct tok *v = &h[i];
    size_t rest = k - i;
    if (word_is(v, "DROP") || word_is(v, "ALTER")) {
        if (rest >= 3 && word_in(&v[1], object_types) &&
            (is_name(&v[2]) || v[2].type == T_STRING || word_is(&v[2], "ALL"))) {
            int drop = word_is(v, "DROP");
            snprintf(why, whylen, "%s %.*s", drop ? "DROP" : "ALTER", (int)v[1].n, v[1].s);
            for (char *c = why; *c; c++) {
                *c = (char)upper((unsigned char)*c);
            }
            return drop ? TT_SQL_DROP : TT_SQL_ALTER;
        }
        return 0;
    }
    if (word_is(v, "TRUNCATE")) {
        size_t j = 1;
        if (j < rest && word_is(&v[j], "TABLE")) {
            j++;
        }
        if (j < rest && word_is(&v[j], "ONLY")) {
            j++;
        }
        static const char *const after[] = {"RESTART",  "CONTINUE",  "CASCADE",
                                            "RESTRICT", "IMMEDIATE", "DROP",
                                            "REUSE",    "PARTITION", NULL};
        size_t x = skip_name(v, rest, j);
        if (x && target_ends(v, rest, x, after)) {
            snprintf(why, whylen, "TRUNCATE");
            return TT_SQL_TRUNCATE;
        }
        return 0;
    }
    if (word_is(v, "GRANT") || word_is(v, "REVOKE")) {
        /* GRANT privileges ON object TO name, GRANT role[, role] TO name (REVOKE ... FROM):
         * what follows the verb is a privilege or a list of single names. */
        int grant = word_is(v, "GRANT");
        size_t x = 1;
        if (!(x < rest && word_in(&v[x], privileges))) {
            while ((x = skip_name(v, rest, x)) != 0 && x < rest && is_punct(&v[x], ',')) {
                x++;
            }
            if (!x || x >= rest || !word_is(&v[x], grant ? "TO" : "FROM")) {
                return 0;
            }
        }
        struct lexer L = {q, e, tok_end(q, v)};
        struct tok prev = {T_END, q, 0};
        for (;;) {
            struct tok t = lex(&L);
            if (t.type == T_END) {
                return 0;
            }
            if (word_is(&prev, grant ? "TO" : "FROM") && is_name(&t)) {
                snprintf(why, whylen, "%s", grant ? "GRANT" : "REVOKE");
                return TT_SQL_GRANT;
            }
            prev = t;
        }
    }
    int del = word_is(v, "DELETE");
    if (del || word_is(v, "UPDATE")) {
        size_t j = 1;
        if (del) {
            /* DELETE FROM name, or MySQL's DELETE name (and DELETE t FROM t ...). */
            if (j < rest && word_is(&v[j], "FROM")) {
                j++;
            }
            static const char *const after[] = {"WHERE", "USING", "RETURNING", "ORDER", "LIMIT",
                                                "AS",    "FROM",  "OUTPUT",    NULL};
            size_t x = skip_name(v, rest, j);
            if (!x) {
                return 0;
            }
            /* an alias: one more name */
            if (!target_ends(v, rest, x, after) &&
                !(is_name(&v[x]) && target_ends(v, rest, x + 1, after))) {
                return 0;
            }
            j = x - 1;
        } else {
            /* UPDATE [ONLY] name [[AS] alias] SET ... */
            size_t x = 1;
            while (x < rest && x < 8 && !word_is(&v[x], "SET")) {
                x++;
            }
            if (!(x < rest && word_is(&v[x], "SET") && x >= 2 && is_name(&v[1]))) {
                return 0;
            }
            j = x;
        }
        int u = unbounded(q, tok_end(q, &v[j]), e);
        if (!u) {
            return 0;
        }
        snprintf(why, whylen, "%s %s", del ? "DELETE" : "UPDATE",
                 u == 1 ? "without WHERE" : "with a WHERE that is always true");
        return del ? TT_SQL_DELETE_ALL : TT_SQL_UPDATE_ALL;
    }
    return 0;
}

uint32_t tt__comply_sql(const char *q, size_t n, char *why, size_t whylen)
{
    char scratch[96];
    if (!why || whylen == 0) {
        why = scratch;
        whylen = sizeof scratch;
    }
    why[0] = 0;
    if (!q || n == 0) {
        return 0;
    }
    struct lexer L = {q, n, 0};
    uint32_t found = 0;
    size_t b = 0;
    for (;;) {
        struct tok t = lex(&L);
        if (t.type == T_END || is_punct(&t, ';')) {
            size_t e = t.type == T_END ? n : (size_t)(t.s - q);
            char w[96] = "";
            uint32_t f = e > b ? classify(q, b, e, w, sizeof w) : 0;
            if (f && !found) {
                snprintf(why, whylen, "%s", w);
            }
            found |= f;
            if (t.type == T_END) {
                break;
            }
            b = L.i;
        }
    }
    return found;
}

/* --- hosts --------------------------------------------------------------------------------- */

static int host_char(int c)
{
    return is_alnum(c) || c == '-' || c == '.' || c == '_';
}

/* Finds the host a text names: after "scheme://" (and any user@), else the text itself when it
 * is a bare host[:port][/path]. Returns its length (0: none) and its start in *start. */
static size_t find_host(const char *s, size_t n, size_t *start)
{
    size_t i = 0;
    while (i < n && is_space((unsigned char)s[i])) {
        i++;
    }
    const char *sep = NULL;
    for (size_t k = i; k + 2 < n; k++) {
        if (s[k] == ':' && s[k + 1] == '/' && s[k + 2] == '/') {
            sep = s + k;
            break;
        }
        if (!(is_alnum((unsigned char)s[k]) || s[k] == '+' || s[k] == '-' || s[k] == '.')) {
            break;
        }
    }
    if (sep) {
        i = (size_t)(sep - s) + 3;
        /* userinfo@ */
        for (size_t k = i; k < n && s[k] != '/' && s[k] != '?' && s[k] != '#'; k++) {
            if (s[k] == '@') {
                i = k + 1;
            }
        }
    }
    if (i < n && s[i] == '[') { /* an IPv6 literal */
        size_t k = i + 1;
        while (k < n && s[k] != ']') {
            k++;
        }
        *start = i + 1;
        return k < n ? k - i - 1 : 0;
    }
    size_t k = i;
    while (k < n && host_char((unsigned char)s[k])) {
        k++;
    }
    if (k == i) {
        return 0;
    }
    /* A bare text names a host only if it looks like one: a dot, and nothing but a port or a
     * path after it. */
    if (!sep) {
        if (!memchr(s + i, '.', k - i) ||
            (k < n && s[k] != ':' && s[k] != '/' && !is_space((unsigned char)s[k]))) {
            return 0;
        }
    }
    *start = i;
    while (k > i && s[k - 1] == '.') {
        k--; /* "example.com." is example.com */
    }
    return k - i;
}

static int host_matches(const char *h, size_t hn, const char *pat)
{
    size_t pn = strlen(pat);
    if (pn >= 2 && pat[0] == '*' && pat[1] == '.') {
        /* *.example.com: any name below example.com, not example.com itself */
        if (hn <= pn - 1) {
            return 0;
        }
        const char *tail = h + hn - (pn - 1);
        for (size_t i = 0; i < pn - 1; i++) {
            if (lower((unsigned char)tail[i]) != lower((unsigned char)pat[i + 1])) {
                return 0;
            }
        }
        return 1;
    }
    if (hn != pn) {
        return 0;
    }
    for (size_t i = 0; i < hn; i++) {
        if (lower((unsigned char)h[i]) != lower((unsigned char)pat[i])) {
            return 0;
        }
    }
    return 1;
}

int tt__comply_host_allowed(const char *s, size_t n, const char (*items)[128], uint32_t n_items,
                            char *host, size_t hostlen)
{
    size_t start = 0;
    size_t hn = s ? find_host(s, n, &start) : 0;
    if (host && hostlen) {
        snprintf(host, hostlen, "%.*s", (int)hn, hn ? s + start : "");
    }
    if (hn == 0) {
        return 1;
    }
    for (uint32_t i = 0; i < n_items; i++) {
        if (host_matches(s + start, hn, items[i])) {
            return 1;
        }
    }
    return 0;
}

/* --- PII and secrets ----------------------------------------------------------------------- */

static int email_local(int c)
{
    return is_alnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-';
}

/* s[at] == '@': the address around it, if any. */
static int find_email(const char *s, size_t n, size_t at, size_t from, struct tt__comply_find *f)
{
    size_t b = at;
    while (b > from && email_local((unsigned char)s[b - 1])) {
        b--;
    }
    while (b < at && s[b] == '.') {
        b++;
    }
    if (b == at) {
        return 0;
    }
    size_t e = at + 1, last_dot = 0;
    while (e < n && (is_alnum((unsigned char)s[e]) || s[e] == '-' || s[e] == '.')) {
        if (s[e] == '.') {
            last_dot = e;
        }
        e++;
    }
    while (e > at + 1 && s[e - 1] == '.') {
        e--;
        last_dot = 0;
        for (size_t k = at + 1; k < e; k++) {
            last_dot = s[k] == '.' ? k : last_dot;
        }
    }
    if (!last_dot || last_dot == at + 1 || e - last_dot - 1 < 2) {
        return 0;
    }
    for (size_t k = last_dot + 1; k < e; k++) {
        if (!is_alpha((unsigned char)s[k])) {
            return 0;
        }
    }
    *f = (struct tt__comply_find){b, e - b, TT_PII_EMAIL};
    return 1;
}

/* Digits from s[i], with single spaces or dashes between groups: a card number of 13-19 digits
 * passing the Luhn check. Nothing before s[from] is looked at. */
static int find_card(const char *s, size_t n, size_t from, size_t i, struct tt__comply_find *f)
{
    if (i > 0 && (is_alnum((unsigned char)s[i - 1]))) {
        return 0;
    }
    int d[19];
    size_t nd = 0, k = i, end = i;
    while (k < n) {
        if (is_digit((unsigned char)s[k])) {
            if (nd == 19) {
                return 0; /* too long for a card */
            }
            d[nd++] = s[k] - '0';
            end = ++k;
        } else if ((s[k] == ' ' || s[k] == '-') && k + 1 < n && is_digit((unsigned char)s[k + 1]) &&
                   k > i && is_digit((unsigned char)s[k - 1])) {
            k++;
        } else {
            break;
        }
    }
    if (nd < 13 || (end < n && is_alnum((unsigned char)s[end]))) {
        return 0;
    }
    int sum = 0;
    for (size_t j = 0; j < nd; j++) {
        int x = d[nd - 1 - j];
        if (j & 1) {
            x *= 2;
            x = x > 9 ? x - 9 : x;
        }
        sum += x;
    }
    if (sum % 10 != 0) {
        return 0;
    }
    /* A card that ends a longer run of digit groups ("00000000000000000-4111111111111111"):
     * the run as a whole is masked, or masking the card alone would leave its head standing as a
     * number of card length that the run hid. */
    size_t b = i;
    while (b >= from + 2 && (s[b - 1] == ' ' || s[b - 1] == '-') &&
           is_digit((unsigned char)s[b - 2])) {
        b -= 2;
        while (b > from && is_digit((unsigned char)s[b - 1])) {
            b--;
        }
    }
    *f = (struct tt__comply_find){b, end - b, TT_PII_CARD};
    return 1;
}

static int b64url(int c)
{
    return is_alnum(c) || c == '-' || c == '_';
}

static int key_char(int c)
{
    return is_alnum(c) || c == '-' || c == '_';
}

/* Documented key prefixes and the shortest body after them. */
static const struct {
    const char *prefix;
    size_t min_body;
    int upper_alnum; /* body of A-Z0-9 only (AWS) */
} key_kinds[] = {
    {"sk-", 20, 0},    {"sk_live_", 16, 0}, {"sk_test_", 16, 0},    {"rk_live_", 16, 0},
    {"AKIA", 16, 1},   {"ASIA", 16, 1},     {"ghp_", 30, 0},        {"gho_", 30, 0},
    {"ghs_", 30, 0},   {"ghu_", 30, 0},     {"github_pat_", 30, 0}, {"xoxb-", 10, 0},
    {"xoxa-", 10, 0},  {"xoxp-", 10, 0},    {"xoxr-", 10, 0},       {"AIza", 30, 0},
    {"glpat-", 20, 0},
};

static int find_key(const char *s, size_t n, size_t i, struct tt__comply_find *f)
{
    if (i > 0 && key_char((unsigned char)s[i - 1])) {
        return 0;
    }
    for (size_t k = 0; k < sizeof key_kinds / sizeof key_kinds[0]; k++) {
        const char *pre = key_kinds[k].prefix;
        size_t pl = 0;
        while (pre[pl] && i + pl < n && s[i + pl] == pre[pl]) {
            pl++;
        }
        if (pre[pl]) {
            continue;
        }
        size_t e = i + pl;
        while (e < n && (key_kinds[k].upper_alnum
                             ? (is_digit((unsigned char)s[e]) || (s[e] >= 'A' && s[e] <= 'Z'))
                             : key_char((unsigned char)s[e]))) {
            e++;
        }
        if (e - i - pl >= key_kinds[k].min_body) {
            *f = (struct tt__comply_find){i, e - i, TT_PII_API_KEY};
            return 1;
        }
    }
    return 0;
}

/* eyJ... . ... . ...: a JSON Web Token (the header, base64url of '{"', starts with eyJ). */
static int find_jwt(const char *s, size_t n, size_t i, struct tt__comply_find *f)
{
    if (n - i < 3 || memcmp(s + i, "eyJ", 3) != 0 || (i > 0 && b64url((unsigned char)s[i - 1]))) {
        return 0;
    }
    size_t e = i, parts = 0, len[3] = {0, 0, 0};
    for (;;) {
        size_t b = e;
        while (e < n && b64url((unsigned char)s[e])) {
            e++;
        }
        len[parts++] = e - b;
        if (parts == 3 || e >= n || s[e] != '.') {
            break;
        }
        e++;
    }
    if (parts < 3 || len[0] < 10 || len[1] < 4) {
        return 0;
    }
    *f = (struct tt__comply_find){i, e - i, TT_PII_JWT};
    return 1;
}

/* Two letters, two check digits, 11-30 letters or digits (spaces between groups of four
 * allowed), and the ISO 13616 mod-97 check. */
static int find_iban(const char *s, size_t n, size_t i, struct tt__comply_find *f)
{
    if (n - i < 15 || !(s[i] >= 'A' && s[i] <= 'Z') || !(s[i + 1] >= 'A' && s[i + 1] <= 'Z') ||
        !is_digit((unsigned char)s[i + 2]) || !is_digit((unsigned char)s[i + 3]) ||
        (i > 0 && is_alnum((unsigned char)s[i - 1]))) {
        return 0;
    }
    char c[34];
    size_t nc = 0, k = i, end = i;
    while (k < n && nc < 34) {
        int ch = (unsigned char)s[k];
        if (is_digit(ch) || (ch >= 'A' && ch <= 'Z')) {
            c[nc++] = (char)ch;
            end = ++k;
        } else if (ch == ' ' && nc >= 4 && nc % 4 == 0 && k + 1 < n &&
                   is_alnum((unsigned char)s[k + 1])) {
            k++;
        } else {
            break;
        }
    }
    if (nc < 15 || (end < n && is_alnum((unsigned char)s[end]))) {
        return 0;
    }
    /* Move the first four characters to the end, letters as 10..35, the number mod 97. */
    unsigned rem = 0;
    for (size_t j = 0; j < nc; j++) {
        int ch = c[(j + 4) % nc];
        if (is_digit(ch)) {
            rem = (rem * 10 + (unsigned)(ch - '0')) % 97;
        } else {
            rem = (rem * 100 + (unsigned)(ch - 'A' + 10)) % 97;
        }
    }
    if (rem != 1) {
        return 0;
    }
    *f = (struct tt__comply_find){i, end - i, TT_PII_IBAN};
    return 1;
}

int tt__comply_pii_find(const char *s, size_t n, size_t from, uint32_t kinds,
                        struct tt__comply_find *f)
{
    if (!s) {
        return 0;
    }
    /* Every value but an e-mail address starts a word: only the first character of a word is
     * looked at closely, and only for the kinds its first character can start. */
    int prev_alnum = from > 0 && is_alnum((unsigned char)s[from - 1]);
    for (size_t i = from; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int alnum = is_alnum(c);
        if (alnum && !prev_alnum) {
            if (is_digit(c)) {
                if ((kinds & TT_PII_CARD) && find_card(s, n, from, i, f)) {
                    return 1;
                }
            } else {
                if ((kinds & TT_PII_API_KEY) &&
                    (c == 's' || c == 'r' || c == 'A' || c == 'g' || c == 'x') &&
                    find_key(s, n, i, f)) {
                    return 1;
                }
                if ((kinds & TT_PII_JWT) && c == 'e' && find_jwt(s, n, i, f)) {
                    return 1;
                }
                if ((kinds & TT_PII_IBAN) && c >= 'A' && c <= 'Z' && find_iban(s, n, i, f)) {
                    return 1;
                }
            }
        } else if (c == '@' && (kinds & TT_PII_EMAIL) && find_email(s, n, i, from, f)) {
            return 1;
        }
        prev_alnum = alnum;
    }
    return 0;
}

const char *tt__comply_pii_name(uint32_t kind)
{
    switch (kind) {
    case TT_PII_EMAIL:
        return "email";
    case TT_PII_CARD:
        return "card";
    case TT_PII_API_KEY:
        return "api_key";
    case TT_PII_JWT:
        return "jwt";
    case TT_PII_IBAN:
        return "iban";
    default:
        return "?";
    }
}

static size_t redact_pass(const char *s, size_t n, uint32_t kinds, char *out, size_t cap,
                          uint64_t *masked)
{
    size_t o = 0, i = 0;
    struct tt__comply_find f;
    while (o < cap && tt__comply_pii_find(s, n, i, kinds, &f)) {
        size_t take = f.off - i < cap - o ? f.off - i : cap - o;
        memcpy(out + o, s + i, take);
        o += take;
        char mark[24];
        int ml = snprintf(mark, sizeof mark, "[%s]", tt__comply_pii_name(f.kind));
        size_t m = (size_t)ml < cap - o ? (size_t)ml : cap - o;
        memcpy(out + o, mark, m);
        o += m;
        i = f.off + f.len;
        if (masked) {
            (*masked)++;
        }
    }
    if (o < cap && i < n) {
        size_t take = n - i < cap - o ? n - i : cap - o;
        memcpy(out + o, s + i, take);
        o += take;
    }
    return o;
}

/* Passes over what the first one left, at most: enough for any chain of neighbours seen. */
#define REDACT_PASSES 8

size_t tt__comply_redact(const char *s, size_t n, uint32_t kinds, char *out, size_t cap,
                         uint64_t *masked)
{
    uint64_t count = 0;
    size_t o = redact_pass(s, n, kinds, out, cap, &count);
    /* Masking a value changes what its neighbours look like: "1234 5698 76554 3u@host.example"
     * holds no card (the digits run into the address), but once the address is masked the
     * digits stand alone and are one. The output is redacted again until nothing is found. */
    struct tt__comply_find f;
    for (int pass = 0; count && tt__comply_pii_find(out, o, 0, kinds, &f); pass++) {
        char *prev = pass < REDACT_PASSES ? malloc(o) : NULL;
        if (!prev) {
            /* out of memory or of passes: nothing of the text rather than a value in it */
            static const char all[] = "[redacted]";
            o = sizeof all - 1 < cap ? sizeof all - 1 : cap;
            memcpy(out, all, o);
            count++;
            break;
        }
        memcpy(prev, out, o);
        o = redact_pass(prev, o, kinds, out, cap, &count);
        free(prev);
    }
    if (masked) {
        *masked += count;
    }
    return o;
}

/* --- the decision -------------------------------------------------------------------------- */

int tt__comply_sees_kind(const struct tt__comply_rule *r, int kind)
{
    return r->kinds == 0 || (kind >= 0 && kind < 32 && (r->kinds & (1u << kind)));
}

static int name_listed(const struct tt__comply_rule *r, const char *name, size_t n)
{
    for (uint32_t i = 0; i < r->n_items; i++) {
        if (strlen(r->items[i]) == n && memcmp(r->items[i], name, n) == 0) {
            return 1;
        }
    }
    return 0;
}

int tt__comply_step(const struct tt__comply_policy *p, int kind, const char *name, size_t name_len,
                    const char *query, size_t query_len, const uint64_t *calls,
                    struct tt__comply_verdict *v)
{
    *v = (struct tt__comply_verdict){.action = 0, .rule = -1};
    if (!p) {
        return 0;
    }
    for (uint32_t i = 0; i < p->n_rules; i++) {
        const struct tt__comply_rule *r = &p->rules[i];
        if (!tt__comply_sees_kind(r, kind)) {
            continue;
        }
        char why[160];
        int hit = 0;
        switch (r->match) {
        case TT_COMPLY_SQL: {
            char w[96];
            hit = (tt__comply_sql(query, query_len, w, sizeof w) & r->what) != 0;
            if (hit) {
                snprintf(why, sizeof why, "%s", w);
            }
            break;
        }
        case TT_COMPLY_TOOL:
            hit = name && name_listed(r, name, name_len);
            if (hit) {
                snprintf(why, sizeof why, "tool %.*s is not allowed", (int)name_len, name);
            }
            break;
        case TT_COMPLY_KIND:
            hit = r->kinds != 0;
            if (hit) {
                snprintf(why, sizeof why, "steps of this kind are not allowed");
            }
            break;
        case TT_COMPLY_HOST: {
            char host[128];
            hit = query && !tt__comply_host_allowed(query, query_len, r->items, r->n_items, host,
                                                    sizeof host);
            if (hit) {
                snprintf(why, sizeof why, "host %s is not allowed", host);
            }
            break;
        }
        case TT_COMPLY_PII: {
            struct tt__comply_find f;
            hit = query && tt__comply_pii_find(query, query_len, 0, r->what, &f);
            if (hit) {
                snprintf(why, sizeof why, "%s in the query", tt__comply_pii_name(f.kind));
            }
            break;
        }
        case TT_COMPLY_LIMIT:
            hit = (calls ? calls[r->slot] : 0) >= r->limit;
            if (hit) {
                snprintf(why, sizeof why, "more than %llu calls in the session",
                         (unsigned long long)r->limit);
            }
            break;
        default:
            break;
        }
        if (!hit) {
            continue;
        }
        v->matched++;
        if (r->action > v->action) {
            v->action = r->action;
            v->rule = (int)i;
            snprintf(v->why, sizeof v->why, "%s", why);
        }
    }
    return v->action;
}

/* --- the policy file ----------------------------------------------------------------------- */

static const char *const kind_names[] = {NULL,  "reasoning", "tool",      "api",
                                         "llm", "agent",     "retrieval", "other"};

static int parse_kind(const char *s, size_t n)
{
    for (int k = 1; k < 8; k++) {
        if (strlen(kind_names[k]) == n && memcmp(kind_names[k], s, n) == 0) {
            return k;
        }
    }
    return -1;
}

static void trim(const char **s, size_t *n)
{
    while (*n && is_space((unsigned char)**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n && is_space((unsigned char)(*s)[*n - 1])) {
        (*n)--;
    }
}

static int eq(const char *s, size_t n, const char *w)
{
    return strlen(w) == n && memcmp(s, w, n) == 0;
}

/* Calls fn for each comma-separated item of a value; stops at the first non-zero result. */
typedef int (*item_fn)(struct tt__comply_rule *r, const char *s, size_t n, char *err,
                       size_t errlen);

static int each_item(struct tt__comply_rule *r, const char *v, size_t vn, item_fn fn, char *err,
                     size_t errlen)
{
    size_t i = 0;
    while (i <= vn) {
        size_t j = i;
        while (j < vn && v[j] != ',') {
            j++;
        }
        const char *s = v + i;
        size_t n = j - i;
        trim(&s, &n);
        if (n) {
            int rc = fn(r, s, n, err, errlen);
            if (rc) {
                return rc;
            }
        }
        i = j + 1;
    }
    return 0;
}

static int add_kind(struct tt__comply_rule *r, const char *s, size_t n, char *err, size_t errlen)
{
    int k = parse_kind(s, n);
    if (k < 0) {
        snprintf(err, errlen,
                 "unknown step kind \"%.*s\" (reasoning, tool, api, llm, agent, "
                 "retrieval, other)",
                 (int)(n > 40 ? 40 : n), s);
        return -EINVAL;
    }
    r->kinds |= 1u << k;
    return 0;
}

static int add_name(struct tt__comply_rule *r, const char *s, size_t n, char *err, size_t errlen)
{
    if (r->n_items == TT_COMPLY_MAX_ITEMS || n >= sizeof r->items[0]) {
        snprintf(err, errlen, "too many items or an item longer than %zu bytes",
                 sizeof r->items[0] - 1);
        return -EINVAL;
    }
    memcpy(r->items[r->n_items], s, n);
    r->items[r->n_items][n] = 0;
    r->n_items++;
    return 0;
}

static int add_pii(struct tt__comply_rule *r, const char *s, size_t n, char *err, size_t errlen)
{
    static const char *const names[] = {"email", "card", "api_key", "jwt", "iban"};
    for (int k = 0; k < 5; k++) {
        if (eq(s, n, names[k])) {
            r->what |= 1u << k;
            return 0;
        }
    }
    if (eq(s, n, "all")) {
        r->what |= TT_PII_ALL;
        return 0;
    }
    snprintf(err, errlen, "unknown data type \"%.*s\" (email, card, api_key, jwt, iban, all)",
             (int)(n > 40 ? 40 : n), s);
    return -EINVAL;
}

static int add_sql(struct tt__comply_rule *r, const char *s, size_t n, char *err, size_t errlen)
{
    static const char *const names[] = {"drop",  "truncate",   "alter",
                                        "grant", "delete_all", "update_all"};
    for (int k = 0; k < 6; k++) {
        if (eq(s, n, names[k])) {
            r->what |= 1u << k;
            return 0;
        }
    }
    if (eq(s, n, "all")) {
        r->what |= TT_SQL_ALL;
        return 0;
    }
    snprintf(err, errlen,
             "unknown statement class \"%.*s\" (drop, truncate, alter, grant, delete_all, "
             "update_all, all)",
             (int)(n > 40 ? 40 : n), s);
    return -EINVAL;
}

static int finish_rule(struct tt__comply_policy *p, struct tt__comply_rule *r, char *err,
                       size_t errlen)
{
    if (r->match == TT_COMPLY_LIMIT) {
        uint32_t slot = 0;
        for (struct tt__comply_rule *x = p->rules; x < r; x++) {
            slot += x->match == TT_COMPLY_LIMIT;
        }
        r->slot = (uint8_t)(slot < 255 ? slot : 255);
    }
    if (!r->match) {
        snprintf(err, errlen, "rule %s has no match", r->name);
        return -EINVAL;
    }
    if (!r->action) {
        r->action = TT_COMPLY_FLAG;
    }
    if (r->match == TT_COMPLY_SQL && !r->what) {
        r->what = TT_SQL_ALL;
    }
    if (r->match == TT_COMPLY_PII && !r->what) {
        r->what = TT_PII_ALL;
    }
    if ((r->match == TT_COMPLY_TOOL || r->match == TT_COMPLY_HOST) && !r->n_items) {
        snprintf(err, errlen, "rule %s needs %s", r->name,
                 r->match == TT_COMPLY_TOOL ? "names = ..." : "allow = ...");
        return -EINVAL;
    }
    if (r->match == TT_COMPLY_KIND && !r->kinds) {
        snprintf(err, errlen, "rule %s needs kinds = ...", r->name);
        return -EINVAL;
    }
    if (r->match == TT_COMPLY_LIMIT && !r->limit) {
        snprintf(err, errlen, "rule %s needs calls = N (N >= 1)", r->name);
        return -EINVAL;
    }
    if (r->match == TT_COMPLY_LIMIT && r->slot >= TT_COMPLY_MAX_LIMITS) {
        snprintf(err, errlen, "more than %d limit rules", TT_COMPLY_MAX_LIMITS);
        return -EINVAL;
    }
    if (r->redact && r->match != TT_COMPLY_PII) {
        snprintf(err, errlen, "rule %s: redact applies to match = pii only", r->name);
        return -EINVAL;
    }
    return 0;
}

int tt__comply_parse(struct tt__comply_policy *out, const char *text, size_t len, char *err,
                     size_t errlen)
{
    char e[200] = "";
    if (len > TT_COMPLY_MAX_POLICY) {
        snprintf(err, errlen, "policy larger than %d bytes", TT_COMPLY_MAX_POLICY);
        return -E2BIG;
    }
    /* Parsed into a scratch copy (large: the rules' item lists), published only on success. */
    struct tt__comply_policy *pp = calloc(1, sizeof *pp);
    if (!pp) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
#define p (*pp)
    struct tt__comply_rule *r = NULL;
    size_t i = 0;
    int line = 0, rc = 0;
    while (i < len && rc == 0) {
        line++;
        size_t j = i;
        while (j < len && text[j] != '\n') {
            j++;
        }
        const char *s = text + i;
        size_t n = j - i;
        i = j + 1;
        const char *hash = memchr(s, '#', n);
        if (hash) {
            n = (size_t)(hash - s);
        }
        trim(&s, &n);
        if (n == 0) {
            continue;
        }
        if (memchr(s, 0, n)) {
            snprintf(e, sizeof e, "a NUL byte");
            rc = -EINVAL;
            break;
        }
        if (s[0] == '[') {
            if (r && (rc = finish_rule(&p, r, e, sizeof e)) != 0) {
                break;
            }
            if (n < 8 || s[n - 1] != ']' || memcmp(s, "[rule.", 6) != 0 || n - 7 >= 64) {
                snprintf(e, sizeof e, "expected [rule.NAME] (NAME up to 63 bytes)");
                rc = -EINVAL;
                break;
            }
            if (p.n_rules == TT_COMPLY_MAX_RULES) {
                snprintf(e, sizeof e, "more than %d rules", TT_COMPLY_MAX_RULES);
                rc = -EINVAL;
                break;
            }
            r = &p.rules[p.n_rules++];
            memcpy(r->name, s + 6, n - 7);
            r->name[n - 7] = 0;
            for (uint32_t k = 0; k + 1 < p.n_rules; k++) {
                if (strcmp(p.rules[k].name, r->name) == 0) {
                    snprintf(e, sizeof e, "rule %s defined twice", r->name);
                    rc = -EINVAL;
                }
            }
            continue;
        }
        const char *eqs = memchr(s, '=', n);
        if (!eqs || !r) {
            snprintf(e, sizeof e, r ? "expected key = value" : "a key before any [rule.NAME]");
            rc = -EINVAL;
            break;
        }
        const char *k = s, *v = eqs + 1;
        size_t kn = (size_t)(eqs - s), vn = n - kn - 1;
        trim(&k, &kn);
        trim(&v, &vn);
        if (eq(k, kn, "match")) {
            static const char *const m[] = {NULL, "sql", "tool", "kind", "host", "pii", "limit"};
            r->match = 0;
            for (int x = 1; x < 7; x++) {
                r->match = eq(v, vn, m[x]) ? (uint8_t)x : r->match;
            }
            if (!r->match) {
                snprintf(e, sizeof e, "match must be sql, tool, kind, host, pii or limit");
                rc = -EINVAL;
            }
        } else if (eq(k, kn, "action")) {
            r->action = eq(v, vn, "block")  ? TT_COMPLY_BLOCK
                        : eq(v, vn, "flag") ? TT_COMPLY_FLAG
                                            : 0;
            if (!r->action) {
                snprintf(e, sizeof e, "action must be block or flag");
                rc = -EINVAL;
            }
        } else if (eq(k, kn, "kinds")) {
            rc = each_item(r, v, vn, add_kind, e, sizeof e);
        } else if (eq(k, kn, "names") || eq(k, kn, "allow")) {
            rc = each_item(r, v, vn, add_name, e, sizeof e);
        } else if (eq(k, kn, "types")) {
            rc = each_item(r, v, vn, add_pii, e, sizeof e);
        } else if (eq(k, kn, "statements")) {
            rc = each_item(r, v, vn, add_sql, e, sizeof e);
        } else if (eq(k, kn, "redact")) {
            r->redact = eq(v, vn, "on") || eq(v, vn, "true");
            if (!r->redact && !eq(v, vn, "off") && !eq(v, vn, "false")) {
                snprintf(e, sizeof e, "redact must be on or off");
                rc = -EINVAL;
            }
        } else if (eq(k, kn, "calls")) {
            unsigned long long x = 0;
            size_t d = 0;
            while (d < vn && is_digit((unsigned char)v[d]) && x <= 1000000000000ull) {
                x = x * 10 + (unsigned)(v[d++] - '0');
            }
            if (d == 0 || d != vn || x == 0 || x > 1000000000000ull) {
                snprintf(e, sizeof e, "calls must be an integer from 1 to 10^12");
                rc = -EINVAL;
            }
            r->limit = x;
        } else {
            snprintf(e, sizeof e, "unknown key \"%.*s\"", (int)(kn > 40 ? 40 : kn), k);
            rc = -EINVAL;
        }
    }
    if (rc == 0 && r) {
        rc = finish_rule(&p, r, e, sizeof e);
    }
    if (rc) {
        if (err && errlen) {
            snprintf(err, errlen, "line %d: %s", line, e);
        }
        free(pp);
        return rc;
    }
    for (uint32_t k = 0; k < p.n_rules; k++) {
        if (p.rules[k].match == TT_COMPLY_LIMIT) {
            p.n_limits++;
        }
        if (p.rules[k].match == TT_COMPLY_PII && p.rules[k].redact) {
            p.redact_pii |= p.rules[k].what;
        }
    }
    *out = p;
    free(pp);
    return 0;
#undef p
}
