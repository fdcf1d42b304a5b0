/*
 * response.c - responses token by token: per-token statistics into packed arrays, a Tokens
 * event every chunk_tokens tokens and at the end, the guard's decision on every token, the
 * summary at the end, and optional sampling of full rows under a byte budget.
 *
 * Allocation happens in tt_response_begin only: the handle holds the packed arrays of one
 * chunk and the sliding window. A token call computes the statistics (confidence.c), appends
 * them, applies the guard and, when the chunk is full, encodes it straight into the thread's
 * ring (TT_REC_ENCODED), so the token path neither allocates nor makes a system call (the
 * clock is read through the vDSO). Sums are kept in double so the summary matches a
 * double-precision reference to float rounding.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/client.h"
#include "client/trace.h"
#include "common/half.h"
#include "common/pb.h"

/* Flags per token beyond TT_STATS_* (docs/wire-format.md). */
#define TT_TOK_GUARD_FLAG 0x100u
#define TT_TOK_GUARD_HALT 0x200u
#define TT_TOK_OPERATOR_HALT 0x400u

/* Token text (since 0.2): each distinct text travels once per response. Texts go into a table
 * per response, numbered in the order they were first sent; a Tokens chunk carries the texts it
 * adds (field 14, from table index text_base, field 17) and per token the index of its text
 * (field 15) and of its alternatives' (field 16), -1 for none. The client remembers up to
 * DICT_MAX distinct texts (DICT_ARENA bytes) to refer back to; beyond, a text is sent again. */
#define TEXT_MAX 255u
#define DICT_SLOTS 4096u /* a power of two, twice DICT_MAX: probes stay short */
#define DICT_MAX 2048u
#define DICT_ARENA (64u << 10)

struct text_ent {
    uint32_t off, wire, len;
};

/* Allocated at the first token with text, then reused for the response's life. */
struct text_state {
    uint32_t slot[DICT_SLOTS]; /* entry + 1, 0: empty */
    struct text_ent ent[DICT_MAX];
    uint32_t n_ent, arena_len;
    uint32_t n_texts;  /* texts sent (or pending) so far: the wire table's length */
    uint32_t n_pend;   /* texts first seen in the chunk being filled */
    size_t pend_len;   /* their encoded fields (14) in pend */
    size_t room;       /* bytes a chunk has for texts beside its tokens */
    int chunk_has;     /* the chunk being filled has text refs (text_ref valid) */
    int chunk_tk;      /* ... and alternatives' text refs (tk_ref valid) */
    int32_t *text_ref; /* cap */
    int32_t *tk_ref;   /* cap * k */
    uint8_t *pend;     /* room bytes */
    char arena[DICT_ARENA];
};

/* Guard events recorded per response at most; later trips are counted in the summary reason. */
#define GUARD_EVENTS_MAX 256

/* Bytes a token may take in a Tokens message: id, rank, latency, flags as varints (5 each), three
 * floats, and k top entries (a varint id and at most 2 value bytes). */
#define TOKEN_BYTES(k) (5u * 4u + 12u + 7u * (k))
#define MSG_SLACK 256u

struct tt_response {
    tt_client *c;
    uint64_t id;
    uint64_t step_id; /* the step the response was opened in, or 0 */
    char session[256];
    size_t session_len;
    tt_guard_policy pol;
    float low_prob;
    uint32_t k, enc, cap; /* top-k per token, its encoding, tokens per chunk */
    /* the chunk being filled */
    uint32_t n_chunk, first_index;
    int32_t *ids;
    float *lp, *ent, *margin;
    uint32_t *rank, *flags;
    uint64_t *ticks;
    int32_t *tk_ids;    /* cap * k */
    float *tk_lp;       /* cap * k: log-probabilities of the top entries */
    uint64_t prev_tick; /* the previous token's tick (begin's for the first) */
    uint64_t begin_tick, begin_mono;
    /* running statistics */
    uint32_t n;
    double sum_lp, sum_ent, min_lp;
    uint32_t low;
    float *win; /* the last pol.window probabilities */
    double win_sum, min_win;
    int have_window;
    int estimated;
    /* the guard */
    tt_verdict verdict;
    char reason[128];
    int halted;
    uint64_t seen_gen, begin_gen;
    int begin_halt; /* the session was halted before the response began */
    char begin_halt_reason[128];
    uint32_t guard_events, guard_suppressed;
    /* row sampling */
    uint64_t sample_left, sample_every;
    /* token text: NULL until a token has some */
    struct text_state *ts;
    size_t text_room;
};

/* --- encoding --------------------------------------------------------------------------------- */

static size_t vsz(uint64_t v)
{
    return tt__pb_varint_size(v);
}

static size_t len_field(size_t n)
{
    return 1 + vsz(n) + n; /* every field number here is below 16 */
}

/* Reserve an event of kind (the Event field number) whose body is body_len bytes; returns where
 * to write the body, or NULL (the drop is counted by the ring). */
static uint8_t *ev_begin(tt_response *r, uint32_t kind, size_t body_len, tt__ring **ring,
                         uint64_t *nh)
{
    size_t payload = (r->session_len ? len_field(r->session_len) : 0) + len_field(body_len);
    int rc;
    uint8_t *p = tt__emit_encoded_begin(r->c, payload, ring, nh, &rc);
    if (!p) {
        return NULL;
    }
    if (r->session_len) {
        p = tt__pb_put_bytes(p, 2, r->session, r->session_len);
    }
    p = tt__pb_put_tag(p, kind, TT_PB_LEN);
    return tt__pb_put_varint(p, body_len);
}

static size_t packed_sint_size(const int32_t *v, size_t n)
{
    size_t s = 0;
    for (size_t i = 0; i < n; i++) {
        s += vsz(tt__pb_zigzag(v[i]));
    }
    return s;
}

static size_t packed_uint_size(const uint32_t *v, size_t n)
{
    size_t s = 0;
    for (size_t i = 0; i < n; i++) {
        s += vsz(v[i]);
    }
    return s;
}

static uint8_t *put_packed_sint(uint8_t *p, uint32_t field, const int32_t *v, size_t n, size_t sz)
{
    p = tt__pb_put_tag(p, field, TT_PB_LEN);
    p = tt__pb_put_varint(p, sz);
    for (size_t i = 0; i < n; i++) {
        p = tt__pb_put_varint(p, tt__pb_zigzag(v[i]));
    }
    return p;
}

static uint8_t *put_packed_uint(uint8_t *p, uint32_t field, const uint32_t *v, size_t n, size_t sz)
{
    p = tt__pb_put_tag(p, field, TT_PB_LEN);
    p = tt__pb_put_varint(p, sz);
    for (size_t i = 0; i < n; i++) {
        p = tt__pb_put_varint(p, v[i]);
    }
    return p;
}

static uint8_t *put_packed_float(uint8_t *p, uint32_t field, const float *v, size_t n)
{
    p = tt__pb_put_tag(p, field, TT_PB_LEN);
    p = tt__pb_put_varint(p, 4 * n);
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        p[0] = (uint8_t)u;
        p[1] = (uint8_t)(u >> 8);
        p[2] = (uint8_t)(u >> 16);
        p[3] = (uint8_t)(u >> 24);
        p += 4;
    }
    return p;
}

/* Ticks to microseconds, with the rate measured since the response began (vDSO clock). */
static double us_per_tick(const tt_response *r, uint64_t now_tick)
{
    if (!tt__clock_tsc) {
        return 1e-3;
    }
    uint64_t mono = tt__mono_ns();
    if (now_tick <= r->begin_tick || mono <= r->begin_mono) {
        return 1e-3 / 3.0; /* no interval measured yet: assume a 3 GHz counter */
    }
    return (double)(mono - r->begin_mono) * 1e-3 / (double)(now_tick - r->begin_tick);
}

/* Encode and emit the chunk being filled as a Tokens event, then empty it. */
static void flush_chunk(tt_response *r)
{
    uint32_t n = r->n_chunk;
    if (n == 0) {
        return;
    }
    double upt = us_per_tick(r, r->ticks[n - 1]);
    uint32_t lat[1024];
    uint64_t prev = r->prev_tick;
    for (uint32_t i = 0; i < n; i++) {
        double us = (double)(r->ticks[i] - prev) * upt;
        lat[i] = us >= 4294967295.0 ? UINT32_MAX : (uint32_t)(us + 0.5);
        prev = r->ticks[i];
    }
    size_t nk = (size_t)n * r->k;
    size_t s_ids = packed_sint_size(r->ids, n);
    size_t s_rank = packed_uint_size(r->rank, n);
    size_t s_lat = packed_uint_size(lat, n);
    size_t s_flags = packed_uint_size(r->flags, n);
    size_t s_tk = packed_sint_size(r->tk_ids, nk);
    size_t vbytes = r->enc == TT_ENC_F16 ? 2 * nk : nk;
    size_t body = 9 + 1 + vsz(r->first_index) + len_field(s_ids) + 3 * len_field(4 * (size_t)n) +
                  len_field(s_rank) + len_field(s_lat) + len_field(s_flags);
    if (r->k) {
        body += 1 + vsz(r->k) + len_field(s_tk) + len_field(vbytes) + 2;
    }
    struct text_state *ts = r->ts;
    size_t s_tref = 0, s_tkref = 0;
    uint32_t text_base = 0;
    if (ts && ts->chunk_has) {
        text_base = ts->n_texts - ts->n_pend;
        s_tref = packed_sint_size(ts->text_ref, n);
        body += ts->pend_len + len_field(s_tref) + 2 + vsz(text_base);
        if (ts->chunk_tk) {
            s_tkref = packed_sint_size(ts->tk_ref, nk);
            body += 1 + len_field(s_tkref); /* field 16: a two-byte tag */
        }
    }
    tt__ring *ring;
    uint64_t nh;
    uint8_t *p = ev_begin(r, 7, body, &ring, &nh);
    if (p) {
        uint8_t *start = p;
        p = tt__pb_put_fixed64(p, 1, r->id);
        p = tt__pb_put_uint(p, 2, r->first_index);
        p = put_packed_sint(p, 3, r->ids, n, s_ids);
        p = put_packed_float(p, 4, r->lp, n);
        p = put_packed_float(p, 5, r->ent, n);
        p = put_packed_float(p, 6, r->margin, n);
        p = put_packed_uint(p, 7, r->rank, n, s_rank);
        p = put_packed_uint(p, 8, lat, n, s_lat);
        p = put_packed_uint(p, 9, r->flags, n, s_flags);
        if (r->k) {
            p = tt__pb_put_uint(p, 10, r->k);
            p = put_packed_sint(p, 11, r->tk_ids, nk, s_tk);
            p = tt__pb_put_tag(p, 12, TT_PB_LEN);
            p = tt__pb_put_varint(p, vbytes);
            for (size_t i = 0; i < nk; i++) {
                if (r->enc == TT_ENC_F16) {
                    uint16_t h = tt__f32_to_f16(expf(r->tk_lp[i]));
                    p[0] = (uint8_t)h;
                    p[1] = (uint8_t)(h >> 8);
                    p += 2;
                } else {
                    *p++ = tt__u8log_encode(r->tk_lp[i]);
                }
            }
            p = tt__pb_put_uint(p, 13, r->enc);
        }
        if (ts && ts->chunk_has) {
            memcpy(p, ts->pend, ts->pend_len);
            p += ts->pend_len;
            p = put_packed_sint(p, 15, ts->text_ref, n, s_tref);
            if (ts->chunk_tk) {
                p = put_packed_sint(p, 16, ts->tk_ref, nk, s_tkref);
            }
            p = tt__pb_put_tag(p, 17, TT_PB_VARINT);
            p = tt__pb_put_varint(p, text_base);
        }
        (void)start; /* p - start == body: the sizes above are exact */
        tt__emit_encoded_commit(ring, p, nh);
    }
    r->prev_tick = r->ticks[n - 1];
    r->first_index += n;
    r->n_chunk = 0;
    if (ts) {
        ts->chunk_has = ts->chunk_tk = 0;
        ts->n_pend = 0;
        ts->pend_len = 0;
    }
}

/* --- token text -------------------------------------------------------------------------------- */

/* A text's length, cut to TEXT_MAX bytes at a UTF-8 character boundary. */
static size_t text_len(const char *s)
{
    size_t n = strnlen(s, TEXT_MAX + 1);
    if (n > TEXT_MAX) {
        n = TEXT_MAX;
        while (n && ((unsigned char)s[n] & 0xC0) == 0x80) {
            n--;
        }
    }
    return n;
}

static uint32_t text_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    }
    return h;
}

/* The table index of text s (n bytes): known, or added to the chunk's new texts; -1 when the
 * chunk has no room left for it (text_prepare makes room for every text of one token). */
static int32_t text_ref(struct text_state *t, const char *s, size_t n)
{
    uint32_t mask = DICT_SLOTS - 1, p = text_hash(s, n) & mask;
    while (t->slot[p]) {
        const struct text_ent *x = &t->ent[t->slot[p] - 1];
        if (x->len == n && memcmp(t->arena + x->off, s, n) == 0) {
            return (int32_t)x->wire;
        }
        p = (p + 1) & mask;
    }
    size_t field = len_field(n);
    if (t->pend_len + field > t->room) {
        return -1;
    }
    uint8_t *q = tt__pb_put_tag(t->pend + t->pend_len, 14, TT_PB_LEN);
    q = tt__pb_put_varint(q, n);
    memcpy(q, s, n);
    t->pend_len = (size_t)(q + n - t->pend);
    t->n_pend++;
    uint32_t wire = t->n_texts++;
    if (t->n_ent < DICT_MAX && t->arena_len + n <= DICT_ARENA) {
        t->ent[t->n_ent] = (struct text_ent){t->arena_len, wire, (uint32_t)n};
        memcpy(t->arena + t->arena_len, s, n);
        t->arena_len += (uint32_t)n;
        t->slot[p] = ++t->n_ent;
    }
    return (int32_t)wire;
}

/* Before a token with text: the text state exists (allocated once, at the response's first
 * token with text) and the chunk has room for every new text of this token (else it is sent
 * first). 0, or TT_ENOMEM (the token then goes without its text). */
static int text_prepare(tt_response *r, size_t need)
{
    if (TT_UNLIKELY(!r->ts)) {
        size_t nk = (size_t)r->cap * (r->k ? r->k : 1);
        struct text_state *t = calloc(1, sizeof *t);
        int32_t *refs = malloc(((size_t)r->cap + nk) * sizeof *refs);
        uint8_t *pend = malloc(r->text_room ? r->text_room : 1);
        if (!t || !refs || !pend) {
            free(t);
            free(refs);
            free(pend);
            return TT_ENOMEM;
        }
        t->text_ref = refs;
        t->tk_ref = refs + r->cap;
        t->pend = pend;
        t->room = r->text_room;
        r->ts = t;
    }
    if (r->ts->pend_len + need > r->ts->room && r->n_chunk) {
        flush_chunk(r);
    }
    return 0;
}

/* The refs of token i of the chunk: its text's and its alternatives' (k of them). */
static void text_store(tt_response *r, uint32_t i, const char *text, const char *const *tk)
{
    struct text_state *t = r->ts;
    size_t k = r->k;
    if (!t->chunk_has) {
        for (uint32_t j = 0; j < i; j++) {
            t->text_ref[j] = -1;
        }
        t->chunk_has = 1;
    }
    t->text_ref[i] = text ? text_ref(t, text, text_len(text)) : -1;
    if (tk && !t->chunk_tk) {
        for (size_t j = 0; j < (size_t)i * k; j++) {
            t->tk_ref[j] = -1;
        }
        t->chunk_tk = 1;
    }
    if (t->chunk_tk) {
        for (size_t j = 0; j < k; j++) {
            const char *s = tk ? tk[j] : NULL;
            t->tk_ref[(size_t)i * k + j] = s ? text_ref(t, s, text_len(s)) : -1;
        }
    }
}

static void emit_guard(tt_response *r, uint32_t index, tt_verdict v, const char *reason,
                       float value, float threshold)
{
    if (r->guard_events >= GUARD_EVENTS_MAX) {
        r->guard_suppressed++;
        return;
    }
    r->guard_events++;
    size_t rl = strlen(reason);
    size_t body = 9 + 1 + vsz(index) + 2 + len_field(rl) + 5 + 5;
    tt__ring *ring;
    uint64_t nh;
    uint8_t *p = ev_begin(r, 11, body, &ring, &nh);
    if (!p) {
        return;
    }
    p = tt__pb_put_fixed64(p, 1, r->id);
    p = tt__pb_put_uint(p, 2, index);
    p = tt__pb_put_uint(p, 3, (uint64_t)v);
    p = tt__pb_put_bytes(p, 4, reason, rl);
    p = tt__pb_put_float(p, 5, value);
    p = tt__pb_put_float(p, 6, threshold);
    tt__emit_encoded_commit(ring, p, nh);
}

/* Record a decision: the token's (or the end's) verdict, the response's worst, the event. */
static void decide(tt_response *r, uint32_t index, tt_verdict v, const char *reason, float value,
                   float threshold, tt_verdict *tok)
{
    if (v > *tok) {
        *tok = v;
    }
    if (v > r->verdict) {
        r->verdict = v;
        snprintf(r->reason, sizeof r->reason, "%s", reason);
    }
    if (v == TT_HALT) {
        r->halted = 1;
    }
    emit_guard(r, index, v, reason, value, threshold);
}

/* Whether an order in the guard's tables halts r: a halt of every response begun before it,
 * or a (sticky) halt of r's session. g->lock held. */
static int halt_lookup_locked(const tt__guard *g, const tt_response *r, char *reason, size_t cap)
{
    if (g->halt_all_gen > r->begin_gen) {
        snprintf(reason, cap, "operator halt: %s", g->halt_all_reason);
        return 1;
    }
    for (uint32_t i = 0; r->session_len && i < g->n_halted; i++) {
        if (strlen(g->halted[i].session) == r->session_len &&
            memcmp(g->halted[i].session, r->session, r->session_len) == 0) {
            snprintf(reason, cap, "operator halt: %s", g->halted[i].reason);
            return 1;
        }
    }
    return 0;
}

/* An operator halt that reached this response since its last token: 1 with reason filled. The
 * lock is taken only when an order arrived since (gen moved), never on an ordinary token: the
 * session's own sticky halt was looked up once, at tt_response_begin. */
static int operator_halt(tt_response *r, char *reason, size_t cap)
{
    tt__guard *g = &r->c->guard;
    /* Pairs with the release store in tt__guard_halt and tt__guard_resume. */
    uint64_t gen = atomic_load_explicit(&g->gen, memory_order_acquire);
    if (TT_UNLIKELY(r->begin_halt)) {
        r->begin_halt = 0;
        if (gen == r->seen_gen) {
            snprintf(reason, cap, "%s", r->begin_halt_reason);
            return 1;
        }
        /* An order arrived since the response began (a resume, perhaps): look again. */
    } else if (TT_LIKELY(gen == r->seen_gen)) {
        return 0;
    }
    r->seen_gen = gen;
    pthread_mutex_lock(&g->lock);
    int hit = halt_lookup_locked(g, r, reason, cap);
    pthread_mutex_unlock(&g->lock);
    return hit;
}

/* --- row sampling ---------------------------------------------------------------------------- */

static float row_at(const void *row, size_t i, size_t stride, tt_dtype dtype)
{
    size_t j = i * stride;
    if (dtype == TT_DTYPE_F32) {
        return ((const float *)row)[j];
    }
    uint16_t h;
    memcpy(&h, (const uint8_t *)row + 2 * j, 2);
    if (dtype == TT_DTYPE_F16) {
        return tt__f16_to_f32(h);
    }
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Emit the row's log-probabilities as Tensor events (slices that fit an event). */
static void sample_row(tt_response *r, uint32_t index, const void *row, size_t n, size_t stride,
                       tt_dtype dtype)
{
    size_t bpe = r->enc == TT_ENC_F16 ? 2 : 1;
    if (n * bpe > r->sample_left) {
        return;
    }
    float mx = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        float x = row_at(row, i, stride, dtype);
        if (x > mx) {
            mx = x; /* NaN compares false */
        }
    }
    if (!isfinite(mx)) {
        return; /* no distribution, or +inf entries: nothing meaningful to sample */
    }
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) {
        float x = row_at(row, i, stride, dtype);
        if (x == x) {
            sum += exp((double)x - (double)mx);
        }
    }
    double lse = (double)mx + log(sum);
    r->sample_left -= n * bpe;
    size_t max_slice =
        (r->c->max_record > 1024 ? r->c->max_record - 512 - r->session_len : 256) / bpe;
    for (size_t first = 0; first < n; first += max_slice) {
        size_t len = n - first < max_slice ? n - first : max_slice;
        size_t body =
            9 + 1 + vsz(index) + 2 + 1 + vsz(n) + len_field(len * bpe) + 5 + 5 + 1 + vsz(first);
        tt__ring *ring;
        uint64_t nh;
        uint8_t *p = ev_begin(r, 10, body, &ring, &nh);
        if (!p) {
            return;
        }
        p = tt__pb_put_fixed64(p, 1, r->id);
        p = tt__pb_put_uint(p, 2, index);
        p = tt__pb_put_uint(p, 3, r->enc);
        p = tt__pb_put_uint(p, 4, n);
        p = tt__pb_put_tag(p, 5, TT_PB_LEN);
        p = tt__pb_put_varint(p, len * bpe);
        for (size_t i = first; i < first + len; i++) {
            float x = row_at(row, i, stride, dtype);
            float lp = x == x ? (float)((double)x - lse) : -INFINITY;
            if (bpe == 2) {
                uint16_t h = tt__f32_to_f16(lp);
                p[0] = (uint8_t)h;
                p[1] = (uint8_t)(h >> 8);
                p += 2;
            } else {
                *p++ = tt__u8log_encode(lp);
            }
        }
        p = tt__pb_put_float(p, 6, bpe == 2 ? 1.0f : TT_U8LOG_STEP);
        p = tt__pb_put_float(p, 7, 0.0f);
        p = tt__pb_put_uint(p, 8, first);
        tt__emit_encoded_commit(ring, p, nh);
    }
}

/* --- the token path ---------------------------------------------------------------------------- */

static tt_verdict add_token(tt_response *r, const tt_token_stats *st, const char *text,
                            const char *const *tk)
{
    int with_text = 0;
    if (TT_UNLIKELY(text || tk)) {
        size_t need = text ? len_field(text_len(text)) : 0;
        for (uint32_t j = 0; tk && j < r->k; j++) {
            need += tk[j] ? len_field(text_len(tk[j])) : 0;
        }
        with_text = r->text_room && text_prepare(r, need) == 0;
    }
    uint64_t now = tt__ticks();
    uint32_t index = r->n;
    uint32_t i = r->n_chunk;
    tt_verdict v = TT_PASS;
    char why[128];
    double p = st->prob, lp = st->logprob;

    r->n++;
    r->sum_lp += lp;
    r->sum_ent += st->entropy;
    r->min_lp = lp < r->min_lp ? lp : r->min_lp;
    r->low += p < r->low_prob;
    if (st->flags & TT_STATS_ESTIMATED) {
        r->estimated = 1;
    }
    uint32_t w = r->pol.window;
    double wconf = 0.0;
    uint32_t slot = index % w;
    if (index >= w) {
        r->win_sum -= r->win[slot];
    }
    r->win[slot] = (float)p;
    r->win_sum += (float)p;
    if (r->n >= w) {
        wconf = r->win_sum / w;
        if (!r->have_window || wconf < r->min_win) {
            r->min_win = wconf;
        }
        r->have_window = 1;
    }

    uint32_t tflags = st->flags;
    if (operator_halt(r, why, sizeof why)) {
        if (!r->halted || r->verdict != TT_HALT || strncmp(r->reason, "operator", 8) != 0) {
            /* The order overrides whatever the response's verdict was. */
            r->verdict = TT_HALT;
            snprintf(r->reason, sizeof r->reason, "%s", why);
            r->halted = 1;
            emit_guard(r, index, TT_HALT, why, 0.0f, 0.0f);
        }
        tflags |= TT_TOK_OPERATOR_HALT;
        v = TT_HALT;
    } else if (r->halted) {
        v = TT_HALT; /* a halted response stays halted; no new decision is recorded */
    } else {
        tt_verdict act = (tt_verdict)r->pol.action;
        if (r->pol.token_min_prob > 0.0f && p < r->pol.token_min_prob) {
            snprintf(why, sizeof why, "token p=%.3g < %.3g", p, (double)r->pol.token_min_prob);
            decide(r, index, act, why, (float)p, r->pol.token_min_prob, &v);
        }
        if (!r->halted && r->pol.window_min_confidence > 0.0f && r->n >= w &&
            wconf < r->pol.window_min_confidence) {
            snprintf(why, sizeof why, "window mean p=%.3g < %.3g over %u tokens", wconf,
                     (double)r->pol.window_min_confidence, w);
            decide(r, index, act, why, (float)wconf, r->pol.window_min_confidence, &v);
        }
    }
    if (v == TT_FLAG) {
        tflags |= TT_TOK_GUARD_FLAG;
    } else if (v == TT_HALT) {
        tflags |= TT_TOK_GUARD_HALT;
    }

    r->ids[i] = st->chosen;
    r->lp[i] = st->logprob;
    r->ent[i] = st->entropy;
    r->margin[i] = st->margin;
    r->rank[i] = st->rank < 0 ? 0 : (uint32_t)st->rank;
    r->flags[i] = tflags;
    r->ticks[i] = now;
    if (TT_UNLIKELY(with_text || (r->ts && r->ts->chunk_has))) {
        text_store(r, i, with_text ? text : NULL, with_text ? tk : NULL);
    }
    for (uint32_t j = 0; j < r->k; j++) {
        size_t at = (size_t)i * r->k + j;
        if (j < st->k) { /* the row may have fewer entries than k */
            r->tk_ids[at] = st->topk_ids[j];
            r->tk_lp[at] = st->topk_probs[j] > 0.0f ? logf(st->topk_probs[j]) : -INFINITY;
        } else {
            r->tk_ids[at] = -1;
            r->tk_lp[at] = -INFINITY;
        }
    }
    if (++r->n_chunk == r->cap) {
        flush_chunk(r);
    }
    return v;
}

TT_API int tt_response_token(tt_response *r, const void *logits, size_t n, size_t stride,
                             tt_dtype dtype, int32_t chosen, tt_verdict *verdict,
                             tt_token_stats *stats)
{
    return tt_response_token_text(r, logits, n, stride, dtype, chosen, NULL, verdict, stats);
}

TT_API int tt_response_token_logprobs(tt_response *r, int32_t chosen, float chosen_logprob,
                                      const int32_t *top_ids, const float *top_logprobs, size_t k,
                                      tt_verdict *verdict, tt_token_stats *stats)
{
    if (!r) {
        return TT_EINVAL;
    }
    tt_token_stats st;
    int rc = tt_token_stats_from_logprobs(chosen, chosen_logprob, top_ids, top_logprobs, k, &st);
    if (rc) {
        return rc;
    }
    tt_verdict v = add_token(r, &st, NULL, NULL);
    if (verdict) {
        *verdict = v;
    }
    if (stats) {
        *stats = st;
    }
    return 0;
}

TT_API int tt_response_token_text(tt_response *r, const void *logits, size_t n, size_t stride,
                                  tt_dtype dtype, int32_t chosen, const char *text,
                                  tt_verdict *verdict, tt_token_stats *stats)
{
    if (!r) {
        return TT_EINVAL;
    }
    tt_token_stats st;
    int rc = tt_token_stats_compute(logits, n, stride, dtype, chosen, r->k, &st);
    if (rc) {
        return rc;
    }
    uint32_t index = r->n;
    tt_verdict v = add_token(r, &st, text, NULL);
    if (r->sample_left && index % r->sample_every == 0) {
        sample_row(r, index, logits, n, stride ? stride : 1, dtype);
    }
    if (verdict) {
        *verdict = v;
    }
    if (stats) {
        *stats = st;
    }
    return 0;
}

TT_API int tt_response_token_logprobs_text(tt_response *r, int32_t chosen, const char *text,
                                           float chosen_logprob, const int32_t *top_ids,
                                           const char *const *top_texts, const float *top_logprobs,
                                           size_t k, tt_verdict *verdict, tt_token_stats *stats)
{
    if (!r || k > TT_TOPK_MAX) {
        return TT_EINVAL;
    }
    /* Without ids, the alternatives are told apart by their place in the arguments (and the
     * chosen token found among them by its text), so that each keeps its text once sorted. */
    int32_t place[TT_TOPK_MAX];
    const int32_t *ids = top_ids;
    int32_t ch = chosen;
    int by_place = top_texts && !top_ids;
    if (by_place) {
        for (size_t i = 0; i < k; i++) {
            place[i] = (int32_t)i;
            if (ch == chosen && chosen < 0 && text && top_texts[i] && !strcmp(top_texts[i], text)) {
                ch = (int32_t)i;
            }
        }
        ids = place;
        if (ch == chosen) {
            ch = -1 - (int32_t)TT_TOPK_MAX; /* matches no place */
        }
    }
    tt_token_stats st;
    int rc = tt_token_stats_from_logprobs(ch, chosen_logprob, ids, top_logprobs, k, &st);
    if (rc) {
        return rc;
    }
    const char *tk[TT_TOPK_MAX];
    for (uint32_t j = 0; j < TT_TOPK_MAX; j++) {
        tk[j] = NULL;
        if (!top_texts || j >= st.k) {
            continue;
        }
        for (size_t i = 0; i < k; i++) {
            if (ids[i] == st.topk_ids[j]) {
                tk[j] = top_texts[i];
                break;
            }
        }
        if (by_place) {
            st.topk_ids[j] = -1; /* the provider gave no ids */
        }
    }
    st.chosen = chosen;
    tt_verdict v = add_token(r, &st, text, top_texts ? tk : NULL);
    if (verdict) {
        *verdict = v;
    }
    if (stats) {
        *stats = st;
    }
    return 0;
}

TT_API int tt_response_token_batch(tt_response *const *responses, size_t batch, const void *logits,
                                   size_t n, size_t stride, size_t row_stride, tt_dtype dtype,
                                   const int32_t *chosen, tt_verdict *verdicts,
                                   tt_token_stats *stats)
{
    if (batch == 0) {
        return 0;
    }
    size_t esize = dtype == TT_DTYPE_F32 ? 4 : 2, span;
    if (!responses || !chosen || !logits || __builtin_mul_overflow(batch - 1, row_stride, &span) ||
        __builtin_mul_overflow(span, esize, &span) || span > UINTPTR_MAX - (uintptr_t)logits) {
        return TT_EINVAL;
    }
    /* The row's shape is the same for every row: check it once, as tt_token_stats_compute
     * does, before any token is counted, so that a refused batch counts none. */
    if (n == 0 || n > INT32_MAX ||
        (dtype != TT_DTYPE_F32 && dtype != TT_DTYPE_F16 && dtype != TT_DTYPE_BF16) ||
        (stride > 1 && (n - 1) > (SIZE_MAX / esize) / stride)) {
        return TT_EINVAL;
    }
    int rc;
    const uint8_t *base = logits;
    for (size_t b = 0; b < batch; b++) {
        tt_verdict *v = verdicts ? &verdicts[b] : NULL;
        if (!responses[b]) {
            if (v) {
                *v = TT_PASS; /* a finished sequence */
            }
            continue;
        }
        rc = tt_response_token_text(responses[b], base + b * row_stride * esize, n, stride, dtype,
                                    chosen[b], NULL, v, stats ? &stats[b] : NULL);
        if (rc) {
            return rc; /* not reached: every row has the shape checked above */
        }
    }
    return 0;
}

/* The statistics a caller computed are checked as tt_token_stats_compute would produce them. */
static int stats_valid(const tt_token_stats *st)
{
    if (st->k > TT_TOPK_MAX || (st->flags & ~0x1fu) || st->rank < -1 || !(st->prob >= 0.0f) ||
        !(st->prob <= 1.0f) || !(st->logprob <= 0.0f) || !(st->entropy >= 0.0f) ||
        !(st->margin >= 0.0f) || !(st->margin <= 1.0f)) {
        return 0; /* NaN fails every comparison above */
    }
    for (uint32_t i = 0; i < st->k; i++) {
        if (!(st->topk_probs[i] >= 0.0f) || !(st->topk_probs[i] <= 1.0f) || st->topk_ids[i] < 0) {
            return 0;
        }
    }
    return 1;
}

TT_API int tt_response_token_stats(tt_response *r, const tt_token_stats *computed, const char *text,
                                   tt_verdict *verdict, tt_token_stats *stats)
{
    if (!r || !computed || !stats_valid(computed)) {
        return TT_EINVAL;
    }
    tt_token_stats st = *computed;
    if (st.k > r->k) {
        st.k = r->k; /* what the response keeps */
    }
    tt_verdict v = add_token(r, &st, text, NULL);
    if (verdict) {
        *verdict = v;
    }
    if (stats) {
        *stats = st;
    }
    return 0;
}

/* --- begin and end ------------------------------------------------------------------------------ */

static size_t attr_size(const tt_attr *a)
{
    size_t kl = strlen(a->key), inner = len_field(kl);
    switch (a->type) {
    case TT_ATTR_STR:
        inner += len_field(a->v.s ? strlen(a->v.s) : 0);
        break;
    case TT_ATTR_INT:
        inner += 1 + vsz(tt__pb_zigzag(a->v.i));
        break;
    case TT_ATTR_DOUBLE:
        inner += 9;
        break;
    case TT_ATTR_BOOL:
        inner += 2;
        break;
    }
    return inner;
}

static uint8_t *put_attr(uint8_t *p, const tt_attr *a)
{
    p = tt__pb_put_tag(p, 3, TT_PB_LEN);
    p = tt__pb_put_varint(p, attr_size(a));
    p = tt__pb_put_bytes(p, 1, a->key, strlen(a->key));
    switch (a->type) {
    case TT_ATTR_STR:
        return tt__pb_put_bytes(p, 2, a->v.s ? a->v.s : "", a->v.s ? strlen(a->v.s) : 0);
    case TT_ATTR_INT:
        return tt__pb_put_sint(p, 3, a->v.i);
    case TT_ATTR_DOUBLE:
        return tt__pb_put_double(p, 4, a->v.d);
    case TT_ATTR_BOOL:
        return tt__pb_put_uint(p, 5, a->v.b != 0);
    }
    return p;
}

static void response_free(tt_response *r)
{
    if (!r) {
        return;
    }
    free(r->ids);
    free(r->lp);
    free(r->ent);
    free(r->margin);
    free(r->rank);
    free(r->flags);
    free(r->ticks);
    free(r->tk_ids);
    free(r->tk_lp);
    free(r->win);
    if (r->ts) {
        free(r->ts->text_ref); /* tk_ref shares it */
        free(r->ts->pend);
        free(r->ts);
    }
    free(r);
}

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static _Atomic uint64_t response_counter;

static int response_begin(tt_client *c, tt_response **out, uint64_t step_id, const char *session,
                          const char *model, const tt_attr *params, size_t n_params,
                          const char *traceparent)
{
    if (out) {
        *out = NULL;
    }
    uint8_t ctx[TT_TRACE_CTX_BYTES];
    if (!c || !out || (n_params && !params) || n_params > 64 ||
        (traceparent && tt__traceparent_parse(traceparent, ctx) != 0)) {
        return TT_EINVAL;
    }
    size_t slen = session ? strlen(session) : 0, mlen = model ? strlen(model) : 0;
    if (slen > 255 || mlen > 255) {
        return TT_EINVAL;
    }
    for (size_t i = 0; i < n_params; i++) {
        if (!params[i].key || params[i].type < TT_ATTR_STR || params[i].type > TT_ATTR_BOOL ||
            strlen(params[i].key) > 255 ||
            (params[i].type == TT_ATTR_STR && params[i].v.s && strlen(params[i].v.s) > 4096)) {
            return TT_EINVAL;
        }
    }
    if (atomic_load_explicit(&c->closing, memory_order_acquire)) {
        return TT_ESHUTDOWN;
    }
    tt_response *r = calloc(1, sizeof *r);
    if (!r) {
        return TT_ENOMEM;
    }
    r->c = c;
    r->step_id = step_id;
    memcpy(r->session, session ? session : "", slen + 1);
    r->session_len = slen;
    pthread_mutex_lock(&c->guard.lock);
    r->pol = c->guard.policy;
    r->begin_gen = atomic_load_explicit(&c->guard.gen, memory_order_relaxed);
    r->seen_gen = r->begin_gen;
    /* A session halted earlier stays halted (sticky): looked up here, once, so that no token
     * takes the lock unless a new order arrives. */
    r->begin_halt =
        halt_lookup_locked(&c->guard, r, r->begin_halt_reason, sizeof r->begin_halt_reason);
    pthread_mutex_unlock(&c->guard.lock);
    r->low_prob = c->cfg.response_low_prob;
    r->k = (uint32_t)c->cfg.response_topk;
    r->enc = (uint32_t)c->cfg.response_topk_encoding;
    r->sample_left = c->cfg.response_sample_budget;
    r->sample_every = c->cfg.response_sample_every;
    /* A chunk must fit one event. */
    size_t room = c->max_record > MSG_SLACK + slen ? c->max_record - MSG_SLACK - slen : 0;
    size_t cap = room / TOKEN_BYTES(r->k);
    if (cap > c->cfg.response_chunk_tokens) {
        cap = c->cfg.response_chunk_tokens;
    }
    r->cap = cap ? (uint32_t)cap : 1;
    /* What a chunk has beside its tokens for token text: the texts it adds, and a ref (at most
     * 5 bytes) per token and per alternative. */
    size_t tokens_room = (size_t)r->cap * (TOKEN_BYTES(r->k) + 5u * (1u + r->k)) + 16;
    r->text_room = room > tokens_room ? room - tokens_room : 0;
    size_t nk = (size_t)r->cap * (r->k ? r->k : 1);
    r->ids = malloc(r->cap * sizeof *r->ids);
    r->lp = malloc(r->cap * sizeof *r->lp);
    r->ent = malloc(r->cap * sizeof *r->ent);
    r->margin = malloc(r->cap * sizeof *r->margin);
    r->rank = malloc(r->cap * sizeof *r->rank);
    r->flags = malloc(r->cap * sizeof *r->flags);
    r->ticks = malloc(r->cap * sizeof *r->ticks);
    r->tk_ids = malloc(nk * sizeof *r->tk_ids);
    r->tk_lp = malloc(nk * sizeof *r->tk_lp);
    r->win = calloc(r->pol.window, sizeof *r->win);
    if (!r->ids || !r->lp || !r->ent || !r->margin || !r->rank || !r->flags || !r->ticks ||
        !r->tk_ids || !r->tk_lp || !r->win) {
        response_free(r);
        return TT_ENOMEM;
    }
    r->min_lp = INFINITY;
    uint8_t seed[8];
    memcpy(seed, c->instance, 8);
    uint64_t s;
    memcpy(&s, seed, 8);
    r->id = mix64(s ^ mix64(atomic_fetch_add(&response_counter, 1) + 1));
    if (r->id == 0) {
        r->id = 1;
    }
    r->begin_tick = r->prev_tick = tt__ticks();
    r->begin_mono = tt__mono_ns();

    /* response_begin: id, model, params, the step, then the trace context (trace.h), always
     * last and always the same size: without a traceparent the worker fills it in. */
    size_t body = 9 + (mlen ? len_field(mlen) : 0) + (step_id ? 9 : 0) + TT_RESP_TRACE_BYTES;
    for (size_t i = 0; i < n_params; i++) {
        body += len_field(attr_size(&params[i]));
    }
    tt__ring *ring;
    uint64_t nh;
    size_t payload = (r->session_len ? len_field(r->session_len) : 0) + len_field(body);
    int erc;
    uint8_t *p = tt__emit_encoded_begin_aux(
        c, payload, traceparent ? 0 : 8, traceparent ? 0 : TT_ENC_AUX_TRACE_FILL, &ring, &nh, &erc);
    if (p) {
        if (r->session_len) {
            p = tt__pb_put_bytes(p, 2, r->session, r->session_len);
        }
        p = tt__pb_put_tag(p, 8, TT_PB_LEN);
        p = tt__pb_put_varint(p, body);
        p = tt__pb_put_fixed64(p, 1, r->id);
        if (mlen) {
            p = tt__pb_put_bytes(p, 2, model, mlen);
        }
        for (size_t i = 0; i < n_params; i++) {
            p = put_attr(p, &params[i]);
        }
        if (step_id) {
            p = tt__pb_put_fixed64(p, 4, step_id);
        }
        uint64_t pspan = 0;
        if (traceparent) {
            memcpy(&pspan, ctx + 16, 8);
        }
        p = tt__pb_put_bytes(p, 5, traceparent ? ctx : (const uint8_t[16]){0}, 16);
        p = tt__pb_put_fixed64(p, 6, r->id);
        p = tt__pb_put_fixed64(p, 7, pspan);
        if (!traceparent) {
            memcpy(p, &step_id, 8);
        }
        tt__emit_encoded_commit(ring, p, nh);
    }
    *out = r;
    return 0;
}

TT_API int tt_response_begin(tt_client *c, tt_response **out, const char *session,
                             const char *model, const tt_attr *params, size_t n_params)
{
    return response_begin(c, out, 0, session, model, params, n_params, NULL);
}

TT_API int tt_response_begin_in(tt_client *c, tt_response **out, const tt_step *step,
                                const char *session, const char *model, const tt_attr *params,
                                size_t n_params)
{
    return response_begin(c, out, step ? step->id : 0, session, model, params, n_params, NULL);
}

TT_API int tt_response_begin_ctx(tt_client *c, tt_response **out, const tt_step *step,
                                 const char *traceparent, const char *session, const char *model,
                                 const tt_attr *params, size_t n_params)
{
    return response_begin(c, out, step ? step->id : 0, session, model, params, n_params,
                          traceparent);
}

TT_API uint64_t tt_response_id(const tt_response *r)
{
    return r ? r->id : 0;
}

TT_API int tt_response_end(tt_response *r, tt_response_summary *summary)
{
    if (!r) {
        return TT_EINVAL;
    }
    flush_chunk(r);
    tt_response_summary s;
    memset(&s, 0, sizeof s);
    s.tokens = r->n;
    tt_verdict endv = TT_PASS;
    if (r->n) {
        double mean = r->sum_lp / r->n;
        s.mean_logprob = (float)mean;
        s.min_logprob = (float)r->min_lp;
        s.perplexity = (float)exp(-mean);
        s.mean_entropy = (float)(r->sum_ent / r->n);
        s.low_confidence_share = (float)((double)r->low / r->n);
        /* Fewer tokens than the window: the window is the whole response. */
        s.min_window_confidence = (float)(r->have_window ? r->min_win : r->win_sum / (double)r->n);
        double conf = exp(mean);
        if (!r->halted && r->pol.response_min_confidence > 0.0f &&
            conf < r->pol.response_min_confidence) {
            char why[128];
            snprintf(why, sizeof why, "response confidence %.3g < %.3g", conf,
                     (double)r->pol.response_min_confidence);
            decide(r, r->n, (tt_verdict)r->pol.action, why, (float)conf,
                   r->pol.response_min_confidence, &endv);
        }
    }
    s.verdict = r->verdict;
    s.estimated = (uint32_t)r->estimated;
    if (r->guard_suppressed) {
        snprintf(s.reason, sizeof s.reason, "%.80s (+%u guard events not recorded)", r->reason,
                 r->guard_suppressed);
    } else {
        snprintf(s.reason, sizeof s.reason, "%s", r->reason);
    }
    uint64_t now = tt__ticks();
    double dur_ns = (double)(now - r->begin_tick) * us_per_tick(r, now) * 1e3;
    size_t rl = strlen(s.reason);
    size_t body = 9 + 1 + vsz(s.tokens) + 6 * 5 + 1 + vsz(s.verdict) + (rl ? len_field(rl) : 0) +
                  1 + vsz((uint64_t)dur_ns) + 1 + vsz(s.estimated);
    tt__ring *ring;
    uint64_t nh;
    uint8_t *p = ev_begin(r, 9, body, &ring, &nh);
    if (p) {
        p = tt__pb_put_fixed64(p, 1, r->id);
        p = tt__pb_put_uint(p, 2, s.tokens);
        p = tt__pb_put_float(p, 3, s.mean_logprob);
        p = tt__pb_put_float(p, 4, s.min_logprob);
        p = tt__pb_put_float(p, 5, s.perplexity);
        p = tt__pb_put_float(p, 6, s.mean_entropy);
        p = tt__pb_put_float(p, 7, s.low_confidence_share);
        p = tt__pb_put_float(p, 8, s.min_window_confidence);
        p = tt__pb_put_uint(p, 9, s.verdict);
        if (rl) {
            p = tt__pb_put_bytes(p, 10, s.reason, rl);
        }
        p = tt__pb_put_uint(p, 11, (uint64_t)dur_ns);
        p = tt__pb_put_uint(p, 12, s.estimated);
        tt__emit_encoded_commit(ring, p, nh);
    }
    if (summary) {
        *summary = s;
    }
    response_free(r);
    return 0;
}
