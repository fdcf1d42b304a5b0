/*
 * comply.h - compliance rules over the execution path: a policy (rules read from a text file,
 * docs/compliance.md) and the checks it runs on a step before it begins (its kind, name and
 * query) and on free text (logs, results). The same code runs in the agent, where a blocking
 * rule stops the call before it runs, and in the collector, which applies the rules to agents
 * that enforce nothing.
 *
 * The checks are recognisers, not substring searches:
 * - SQL: a tokenizer that knows comments, string literals, quoted identifiers and dollar
 *   quotes splits the query into statements and classifies each by its leading keywords:
 *   DROP/TRUNCATE/ALTER/GRANT/REVOKE of a database object, and DELETE or UPDATE without a WHERE
 *   at the statement's own level (or with a WHERE that is always true: TRUE, 1=1, 'a'='a').
 *   Natural language ("drop the ball", "update me") is not SQL: the keywords must be followed
 *   by the grammar's next element.
 * - Hosts: the host of an http(s) URL (or a bare host[:port]) against an allow list of names
 *   and "*.suffix" patterns.
 * - PII and secrets: e-mail addresses, card numbers (13-19 digits, single spaces or dashes
 *   between groups, Luhn check), API keys by their documented prefixes (sk-, sk_live_, AKIA,
 *   ghp_/gho_/ghs_, github_pat_, xox[abpr]-, AIza, glpat-), JSON Web Tokens (three base64url
 *   parts, the first a JSON header) and IBANs (country, check digits, mod-97 check).
 *
 * Thread safety: a policy is immutable once parsed; every check is a pure function of its
 * arguments and may run on any thread. Nothing here allocates except tt__comply_parse.
 */
#ifndef TT_COMMON_COMPLY_H
#define TT_COMMON_COMPLY_H

#include <stddef.h>
#include <stdint.h>

#define TT_COMPLY_MAX_RULES 64
#define TT_COMPLY_MAX_ITEMS 32     /* names or hosts per rule */
#define TT_COMPLY_MAX_POLICY 65536 /* bytes of policy text */
#define TT_COMPLY_MAX_LIMITS 8     /* limit rules per policy */

/* What a rule matches. */
enum tt__comply_match {
    TT_COMPLY_SQL = 1,   /* a destructive SQL statement in the query */
    TT_COMPLY_TOOL = 2,  /* a step whose name is listed */
    TT_COMPLY_KIND = 3,  /* a step of a listed kind */
    TT_COMPLY_HOST = 4,  /* a URL or host in the query outside the allow list */
    TT_COMPLY_PII = 5,   /* PII or a secret in the query (or in text checked by the caller) */
    TT_COMPLY_LIMIT = 6, /* more calls per session than allowed */
};

/* Kinds of sensitive data, as bits. */
enum tt__comply_pii {
    TT_PII_EMAIL = 1u << 0,
    TT_PII_CARD = 1u << 1,
    TT_PII_API_KEY = 1u << 2,
    TT_PII_JWT = 1u << 3,
    TT_PII_IBAN = 1u << 4,
    TT_PII_ALL = (1u << 5) - 1,
};

/* What a destructive statement was, as bits (tt__comply_sql's result). */
enum tt__comply_sql {
    TT_SQL_DROP = 1u << 0,
    TT_SQL_TRUNCATE = 1u << 1,
    TT_SQL_ALTER = 1u << 2,
    TT_SQL_GRANT = 1u << 3, /* GRANT or REVOKE */
    TT_SQL_DELETE_ALL = 1u << 4,
    TT_SQL_UPDATE_ALL = 1u << 5,
    TT_SQL_ALL = (1u << 6) - 1,
};

enum tt__comply_action { TT_COMPLY_FLAG = 1, TT_COMPLY_BLOCK = 2 };

struct tt__comply_rule {
    char name[64];
    uint8_t match;    /* enum tt__comply_match */
    uint8_t action;   /* enum tt__comply_action */
    uint8_t redact;   /* PII rules: mask matches in what the agent sends */
    uint32_t kinds;   /* bit (1 << tt_step_kind) of the step kinds looked at; 0 = every kind */
    uint32_t what;    /* SQL: enum tt__comply_sql bits; PII: enum tt__comply_pii bits */
    uint32_t n_items; /* names (TOOL), kinds are in `kinds`, hosts (HOST) */
    uint64_t limit;   /* LIMIT: calls per session of the kinds looked at */
    uint8_t slot;     /* LIMIT: its counter, 0 .. n_limits - 1 */
    char items[TT_COMPLY_MAX_ITEMS][128];
};

struct tt__comply_policy {
    uint32_t n_rules;
    uint32_t redact_pii; /* union of the `what` of PII rules with redact on */
    uint32_t n_limits;   /* LIMIT rules (each has a slot) */
    struct tt__comply_rule rules[TT_COMPLY_MAX_RULES];
};

/* Parse a policy. Returns 0, or -EINVAL with a message naming the line in err; -E2BIG for more
 * than TT_COMPLY_MAX_POLICY bytes. *out is written only on success. */
int tt__comply_parse(struct tt__comply_policy *out, const char *text, size_t len, char *err,
                     size_t errlen);

/* The decision about one step. */
struct tt__comply_verdict {
    int action;       /* 0 allowed, or the strongest enum tt__comply_action that matched */
    int rule;         /* index of the rule that decided (the first of the strongest), -1 none */
    uint32_t matched; /* how many rules matched */
    char why[160];    /* what was found, e.g. "DELETE without WHERE", "host evil.example" */
};

/* Check a step about to begin: kind (tt_step_kind), name and query (either may be NULL),
 * calls[slot] = how many earlier steps of this session each LIMIT rule counted (the caller
 * keeps the counters; NULL: none yet), *v filled. Returns v->action. */
int tt__comply_step(const struct tt__comply_policy *p, int kind, const char *name, size_t name_len,
                    const char *query, size_t query_len, const uint64_t *calls,
                    struct tt__comply_verdict *v);

/* Whether rule r looks at steps of this kind. */
int tt__comply_sees_kind(const struct tt__comply_rule *r, int kind);

/* The destructive statements of a query (enum tt__comply_sql bits; 0 none or not SQL); why
 * (may be NULL) names the first one. */
uint32_t tt__comply_sql(const char *q, size_t n, char *why, size_t whylen);

/* Whether the host named by s (a URL, host:port or host) is allowed by the list; a text that
 * names no host is allowed. host (may be NULL) receives the host found. */
int tt__comply_host_allowed(const char *s, size_t n, const char (*items)[128], uint32_t n_items,
                            char *host, size_t hostlen);

/* A sensitive value found in text. */
struct tt__comply_find {
    size_t off, len;
    uint32_t kind; /* one enum tt__comply_pii bit */
};

/* Find the first value of the kinds in `kinds` at or after `from`. Returns 1 and fills *f, or
 * 0. */
int tt__comply_pii_find(const char *s, size_t n, size_t from, uint32_t kinds,
                        struct tt__comply_find *f);

/* Copy s into out (cap bytes) with every value of `kinds` masked ("[card]", "[email]", ...).
 * Returns the length written (at most cap; text beyond cap is cut) and adds the number of
 * values masked to *masked. */
size_t tt__comply_redact(const char *s, size_t n, uint32_t kinds, char *out, size_t cap,
                         uint64_t *masked);

const char *tt__comply_pii_name(uint32_t kind);

#endif
