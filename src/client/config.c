/*
 * config.c - tt_config: string keys with typed values, defaults and limits. One table
 * describes every key, so tt_config_set, tt_config_get, the environment and docs/api.md agree.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/client.h"
#include "client/nats.h"

enum opt_type {
    OPT_U64,
    OPT_I64,
    OPT_STR,
    OPT_ENDPOINT,
    OPT_POLICY,
    OPT_PROB,
    OPT_ACTION,
    OPT_ENCODING,
    OPT_SUBJECT,    /* a NATS subject prefix */
    OPT_SECRET_FILE /* a file that only its owner may read */
};

struct opt {
    const char *key;
    enum opt_type type;
    size_t offset;
    size_t size; /* for strings: the field's capacity */
    int64_t min;
    int64_t max;
};

#define U64(k, field, lo, hi)                                                                      \
    {                                                                                              \
        k, OPT_U64, offsetof(tt__cfg, field), 0, lo, hi                                            \
    }
#define STR(k, field)                                                                              \
    {                                                                                              \
        k, OPT_STR, offsetof(tt__cfg, field), sizeof(((tt__cfg *)0)->field), 0, 0                  \
    }

static const struct opt opts[] = {
    {"endpoint", OPT_ENDPOINT, offsetof(tt__cfg, endpoint), sizeof(((tt__cfg *)0)->endpoint), 0, 0},
    STR("agent", agent),
    STR("token", token),
    STR("spool_dir", spool_dir),
    STR("tls.ca", tls_ca),
    STR("tls.cert", tls_cert),
    STR("tls.key", tls_key),
    STR("tls.server_name", tls_server_name),
    U64("ring_bytes", ring_bytes, 4096, 1 << 30),
    U64("max_threads", max_threads, 1, 65536),
    U64("max_event_bytes", max_event_bytes, 256, 1 << 20),
    U64("batch_bytes", batch_bytes, 1024, 8 << 20),
    U64("flush_interval_ms", flush_interval_ms, 1, 60000),
    U64("window_bytes", window_bytes, 65536, (int64_t)1 << 34),
    U64("ack_timeout_ms", ack_timeout_ms, 10, 3600000),
    U64("backoff_min_ms", backoff_min_ms, 1, 3600000),
    U64("backoff_max_ms", backoff_max_ms, 1, 3600000),
    U64("spool_max_bytes", spool_max_bytes, 65536, (int64_t)1 << 40),
    U64("replay_bytes_per_s", replay_bytes_per_s, 4096, (int64_t)1 << 32),
    {"spool_policy", OPT_POLICY, offsetof(tt__cfg, spool_policy), 0, 0, 0},
    /* the same three under dotted names, like guard.* and response.* */
    STR("spool.dir", spool_dir),
    U64("spool.max_bytes", spool_max_bytes, 65536, (int64_t)1 << 40),
    {"spool.policy", OPT_POLICY, offsetof(tt__cfg, spool_policy), 0, 0, 0},
    {"compression_level", OPT_I64, offsetof(tt__cfg, compression_level), 0, -7, 19},
    U64("stats_interval_ms", stats_interval_ms, 10, 3600000),
    {"guard.token_min_prob", OPT_PROB, offsetof(tt__cfg, guard_token_min_prob), 0, 0, 0},
    {"guard.window_min_confidence", OPT_PROB, offsetof(tt__cfg, guard_window_min_confidence), 0, 0,
     0},
    U64("guard.window", guard_window, 1, 4096),
    {"guard.response_min_confidence", OPT_PROB, offsetof(tt__cfg, guard_response_min_confidence), 0,
     0, 0},
    {"guard.action", OPT_ACTION, offsetof(tt__cfg, guard_action), 0, 0, 0},
    U64("response.topk", response_topk, 0, TT_TOPK_MAX),
    {"response.topk_encoding", OPT_ENCODING, offsetof(tt__cfg, response_topk_encoding), 0, 0, 0},
    U64("response.chunk_tokens", response_chunk_tokens, 1, 1024),
    {"response.low_confidence_prob", OPT_PROB, offsetof(tt__cfg, response_low_prob), 0, 0, 0},
    U64("response.sample_budget_bytes", response_sample_budget, 0, (int64_t)1 << 30),
    U64("response.sample_every", response_sample_every, 1, 1000000),
    STR("comply.policy_file", comply_policy_file),
    {"nats_subject", OPT_SUBJECT, offsetof(tt__cfg, nats_subject),
     sizeof(((tt__cfg *)0)->nats_subject), 0, 0},
    {"nats_token_file", OPT_SECRET_FILE, offsetof(tt__cfg, nats_token_file),
     sizeof(((tt__cfg *)0)->nats_token_file), 0, 0},
};

void tt__cfg_defaults(tt__cfg *v)
{
    memset(v, 0, sizeof *v);
    snprintf(v->endpoint, sizeof v->endpoint, "tcp://127.0.0.1:7370");
    const char *prog = program_invocation_short_name;
    snprintf(v->agent, sizeof v->agent, "%s", prog && *prog ? prog : "agent");
    v->ring_bytes = 1u << 20;
    v->max_threads = 256;
    v->max_event_bytes = 65536;
    v->batch_bytes = 256u << 10;
    v->flush_interval_ms = 5;
    v->window_bytes = 16u << 20;
    v->ack_timeout_ms = 5000;
    v->backoff_min_ms = 50;
    v->backoff_max_ms = 5000;
    v->spool_max_bytes = 1u << 30;
    v->replay_bytes_per_s = 32u << 20;
    v->spool_policy = TT_SPOOL_DROP_OLDEST;
    v->compression_level = 1;
    v->stats_interval_ms = 1000;
    v->guard_window = 16;
    v->guard_action = TT_HALT;
    v->response_topk = 5;
    v->response_topk_encoding = TT_ENC_F16;
    v->response_chunk_tokens = 64;
    v->response_low_prob = 0.1f;
    v->response_sample_every = 64;
    snprintf(v->nats_subject, sizeof v->nats_subject, "telltale.ingest");
}

/* An endpoint of any scheme: native (wire.h) or nats:// (nats.h). */
static int endpoint_check(const char *s, char *err, size_t errlen)
{
    if (tt__nats_is_endpoint(s)) {
        int n = tt__nats_endpoint_parse(s, NULL, err, errlen);
        return n < 0 ? n : 0;
    }
    tt__endpoint ep;
    return tt__endpoint_parse(s, &ep, err, errlen);
}

static int is_pow2(uint64_t x)
{
    return x && !(x & (x - 1));
}

int tt__cfg_validate(const tt__cfg *v, char *err, size_t errlen)
{
    if (!is_pow2(v->ring_bytes)) {
        snprintf(err, errlen, "ring_bytes must be a power of two, not %llu",
                 (unsigned long long)v->ring_bytes);
        return -EINVAL;
    }
    if (v->ring_bytes < 4 * (v->max_event_bytes + 64)) {
        snprintf(err, errlen, "ring_bytes (%llu) must hold 4 events of max_event_bytes (%llu)",
                 (unsigned long long)v->ring_bytes, (unsigned long long)v->max_event_bytes);
        return -EINVAL;
    }
    if (v->backoff_min_ms > v->backoff_max_ms) {
        snprintf(err, errlen, "backoff_min_ms above backoff_max_ms");
        return -EINVAL;
    }
    if (v->agent[0] == 0) {
        snprintf(err, errlen, "agent must not be empty");
        return -EINVAL;
    }
    if (!v->tls_cert[0] != !v->tls_key[0]) {
        snprintf(err, errlen,
                 "tls.cert and tls.key go together (a client certificate and its key)");
        return -EINVAL;
    }
    if (tt__nats_subject_check(v->nats_subject, err, errlen) != 0) {
        return -EINVAL;
    }
    return endpoint_check(v->endpoint, err, errlen);
}

static const struct opt *find_opt(const char *key)
{
    for (size_t i = 0; i < TT_ARRAY_LEN(opts); i++) {
        if (strcmp(opts[i].key, key) == 0) {
            return &opts[i];
        }
    }
    return NULL;
}

static int parse_int(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s) {
        return -1;
    }
    /* Accept the suffixes k, M, G (powers of 1024) for sizes. */
    int64_t mul = 1;
    if (*end == 'k' || *end == 'K') {
        mul = 1024;
        end++;
    } else if (*end == 'M') {
        mul = 1024 * 1024;
        end++;
    } else if (*end == 'G') {
        mul = 1024 * 1024 * 1024;
        end++;
    }
    if (*end != 0 || (v && (v * mul) / mul != v)) {
        return -1;
    }
    *out = v * mul;
    return 0;
}

static int set_value(tt_config *cfg, const struct opt *o, const char *value)
{
    char *field = (char *)&cfg->v + o->offset;
    int64_t n;
    switch (o->type) {
    case OPT_STR:
    case OPT_ENDPOINT:
    case OPT_SUBJECT:
    case OPT_SECRET_FILE:
        if (strlen(value) >= o->size) {
            snprintf(cfg->error, sizeof cfg->error, "%s: value longer than %zu bytes", o->key,
                     o->size - 1);
            return -EINVAL;
        }
        if (o->type == OPT_ENDPOINT) {
            char why[200];
            if (endpoint_check(value, why, sizeof why) != 0) {
                snprintf(cfg->error, sizeof cfg->error, "endpoint: %s", why);
                return -EINVAL;
            }
        }
        if (o->type == OPT_SUBJECT &&
            tt__nats_subject_check(value, cfg->error, sizeof cfg->error) != 0) {
            return -EINVAL;
        }
        if (o->type == OPT_SECRET_FILE && value[0]) {
            /* Checked now for a clear message (tt_config_error), and read again at tt_open. */
            char token[TT_NATS_TOKEN_MAX];
            int rc = tt__nats_token_load(value, token, sizeof token, cfg->error, sizeof cfg->error);
            explicit_bzero(token, sizeof token);
            if (rc) {
                return -EINVAL;
            }
        }
        memcpy(field, value, strlen(value) + 1);
        return 0;
    case OPT_POLICY:
        if (strcmp(value, "drop_oldest") == 0) {
            cfg->v.spool_policy = TT_SPOOL_DROP_OLDEST;
        } else if (strcmp(value, "drop_newest") == 0) {
            cfg->v.spool_policy = TT_SPOOL_DROP_NEWEST;
        } else {
            snprintf(cfg->error, sizeof cfg->error,
                     "spool_policy: \"%s\" is neither drop_oldest nor drop_newest", value);
            return -EINVAL;
        }
        return 0;
    case OPT_PROB: {
        char *end;
        errno = 0;
        double d = strtod(value, &end);
        if (errno || end == value || *end || !(d >= 0.0 && d <= 1.0)) {
            snprintf(cfg->error, sizeof cfg->error, "%s: \"%s\" is not a number in [0, 1]", o->key,
                     value);
            return -EINVAL;
        }
        float f = (float)d;
        memcpy(field, &f, sizeof f);
        return 0;
    }
    case OPT_ACTION:
    case OPT_ENCODING: {
        const char *a = o->type == OPT_ACTION ? "flag" : "fp16";
        const char *b = o->type == OPT_ACTION ? "halt" : "uint8";
        uint64_t u;
        if (strcmp(value, a) == 0) {
            u = o->type == OPT_ACTION ? TT_FLAG : TT_ENC_F16;
        } else if (strcmp(value, b) == 0) {
            u = o->type == OPT_ACTION ? TT_HALT : TT_ENC_U8LOG;
        } else {
            snprintf(cfg->error, sizeof cfg->error, "%s: \"%s\" is neither %s nor %s", o->key,
                     value, a, b);
            return -EINVAL;
        }
        memcpy(field, &u, sizeof u);
        return 0;
    }
    case OPT_U64:
    case OPT_I64:
        if (parse_int(value, &n) != 0 || n < o->min || n > o->max) {
            snprintf(cfg->error, sizeof cfg->error, "%s: \"%s\" is not an integer in [%lld, %lld]",
                     o->key, value, (long long)o->min, (long long)o->max);
            return -EINVAL;
        }
        if (o->type == OPT_U64) {
            uint64_t u = (uint64_t)n;
            memcpy(field, &u, sizeof u);
        } else {
            memcpy(field, &n, sizeof n);
        }
        return 0;
    }
    return -EINVAL;
}

TT_API int tt_config_new(tt_config **out)
{
    if (!out) {
        return TT_EINVAL;
    }
    *out = calloc(1, sizeof **out);
    if (!*out) {
        return TT_ENOMEM;
    }
    tt__cfg_defaults(&(*out)->v);
    return 0;
}

TT_API int tt_config_set(tt_config *cfg, const char *key, const char *value)
{
    if (!cfg || !key || !value) {
        return TT_EINVAL;
    }
    const struct opt *o = find_opt(key);
    if (!o) {
        snprintf(cfg->error, sizeof cfg->error, "unknown key \"%.200s\"", key);
        return TT_EINVAL;
    }
    tt__cfg saved = cfg->v;
    int rc = set_value(cfg, o, value);
    if (rc) {
        cfg->v = saved;
        return rc;
    }
    cfg->error[0] = 0;
    return 0;
}

TT_API int tt_config_from_env(tt_config *cfg)
{
    if (!cfg) {
        return TT_EINVAL;
    }
    for (size_t i = 0; i < TT_ARRAY_LEN(opts); i++) {
        char name[64] = "TELLTALE_";
        size_t n = strlen(name);
        for (const char *k = opts[i].key; *k && n < sizeof name - 1; k++) {
            name[n++] = (char)(*k >= 'a' && *k <= 'z' ? *k - 32 : *k == '.' ? '_' : *k);
        }
        name[n] = 0;
        const char *v = getenv(name);
        if (v) {
            int rc = tt_config_set(cfg, opts[i].key, v);
            if (rc) {
                return rc;
            }
        }
    }
    return 0;
}

TT_API const char *tt_config_get(const tt_config *cfg, const char *key)
{
    if (!cfg || !key) {
        return NULL;
    }
    const struct opt *o = find_opt(key);
    if (!o) {
        return NULL;
    }
    tt_config *m = (tt_config *)cfg; /* the formatting buffer is scratch space */
    const char *field = (const char *)&cfg->v + o->offset;
    uint64_t u;
    int64_t i;
    switch (o->type) {
    case OPT_STR:
    case OPT_ENDPOINT:
    case OPT_SUBJECT:
    case OPT_SECRET_FILE:
        return field;
    case OPT_POLICY:
        return cfg->v.spool_policy == TT_SPOOL_DROP_NEWEST ? "drop_newest" : "drop_oldest";
    case OPT_PROB: {
        float f;
        memcpy(&f, field, sizeof f);
        snprintf(m->strval, sizeof m->strval, "%.9g", (double)f);
        return m->strval;
    }
    case OPT_ACTION:
        return cfg->v.guard_action == TT_FLAG ? "flag" : "halt";
    case OPT_ENCODING:
        return cfg->v.response_topk_encoding == TT_ENC_U8LOG ? "uint8" : "fp16";
    case OPT_U64:
        memcpy(&u, field, sizeof u);
        snprintf(m->strval, sizeof m->strval, "%llu", (unsigned long long)u);
        return m->strval;
    case OPT_I64:
        memcpy(&i, field, sizeof i);
        snprintf(m->strval, sizeof m->strval, "%lld", (long long)i);
        return m->strval;
    }
    return NULL;
}

TT_API const char *tt_config_error(const tt_config *cfg)
{
    return cfg ? cfg->error : "";
}

TT_API void tt_config_free(tt_config *cfg)
{
    free(cfg);
}
