/*
 * api/responses.c - responses and the operator's halt:
 *   GET  /api/v1/responses?session=&agent=&limit=   summaries, newest first
 *   GET  /api/v1/responses/{id}                      summary, per-token arrays, top-k, guard
 *   POST /api/v1/sessions/{id}/halt                   Control{Halt} to the agents of the session
 *   POST /api/v1/agents/{agent}/guard-policy          Control{GuardPolicy} to an agent
 * They read the derived tables of derive.c; docs/api.md documents the shapes.
 */
#include <errno.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collector/api/http.h"
#include "collector/source/native.h"
#include "collector/api/render.h"
#include "collector/store/store.h"
#include "common/json.h"
#include "common/pb.h"

#define LIST_LIMIT_DEFAULT 100
#define LIST_LIMIT_MAX 1000
#define CHUNKS_MAX 4096
#define HALT_REASON_MAX 100
#define HALT_WAIT_MS 2000

static const char select_cols[] =
    "SELECT r.response_id, a.name, i.uuid, r.session, r.model, r.begin_ns, r.end_ns, r.tokens,"
    " r.mean_logprob, r.min_logprob, r.perplexity, r.mean_entropy, r.low_confidence_share,"
    " r.min_window_confidence, r.verdict, r.reason, r.duration_ns, r.estimated, r.begin_body,"
    " r.instance_id"
    " FROM responses r JOIN agents a ON a.id = r.agent_id JOIN instances i ON i.id = r.instance_id";

static void col_text(tt__json *j, const char *key, sqlite3_stmt *st, int col)
{
    if (sqlite3_column_type(st, col) == SQLITE_NULL) {
        tt__json_key(j, key);
        tt__json_null(j);
        return;
    }
    tt__json_kv_str(j, key, sqlite3_column_text(st, col), (size_t)sqlite3_column_bytes(st, col));
}

static void col_num(tt__json *j, const char *key, sqlite3_stmt *st, int col, int real)
{
    tt__json_key(j, key);
    if (sqlite3_column_type(st, col) == SQLITE_NULL) {
        tt__json_null(j);
    } else if (real) {
        tt__json_f64(j, sqlite3_column_double(st, col));
    } else {
        tt__json_i64(j, sqlite3_column_int64(st, col));
    }
}

/* The fields of one response row (without the closing brace). */
static void render_row(tt__json *j, sqlite3_stmt *st)
{
    tt__json_obj_begin(j);
    render_response_id(j, "id", (uint64_t)sqlite3_column_int64(st, 0));
    tt__json_kv_cstr(j, "agent", (const char *)sqlite3_column_text(st, 1));
    tt__json_key(j, "instance");
    tt__json_hex(j, sqlite3_column_blob(st, 2), (size_t)sqlite3_column_bytes(st, 2));
    col_text(j, "session", st, 3);
    col_text(j, "model", st, 4);
    if (sqlite3_column_type(st, 18) == SQLITE_BLOB) {
        tt__bstr body = {sqlite3_column_blob(st, 18), (size_t)sqlite3_column_bytes(st, 18)};
        render_attrs(j, body, 3, "params");
    }
    col_num(j, "begin_unix_ns", st, 5, 0);
    col_num(j, "end_unix_ns", st, 6, 0);
    int ended = sqlite3_column_type(st, 6) != SQLITE_NULL;
    tt__json_kv_bool(j, "ended", ended);
    col_num(j, "tokens", st, 7, 0);
    static const char *const reals[] = {"mean_logprob",         "min_logprob",
                                        "perplexity",           "mean_entropy",
                                        "low_confidence_share", "min_window_confidence"};
    for (int i = 0; i < 6; i++) {
        col_num(j, reals[i], st, 8 + i, 1);
    }
    tt__json_key(j, "verdict");
    if (ended) {
        tt__json_cstr(j, render_verdict((uint32_t)sqlite3_column_int(st, 14)));
    } else {
        tt__json_null(j);
    }
    col_text(j, "reason", st, 15);
    col_num(j, "duration_ns", st, 16, 0);
    tt__json_key(j, "estimated");
    if (ended) {
        tt__json_bool(j, sqlite3_column_int(st, 17) != 0);
    } else {
        tt__json_null(j);
    }
}

static enum MHD_Result reply(const struct http_req *r, unsigned status, tt__buf *b, tt__json *j)
{
    enum MHD_Result rc = j->err ? http_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "answer too large")
                                : http_json(r, status, b);
    tt__buf_fini(b);
    return rc;
}

enum MHD_Result api_responses(const struct http_req *r)
{
    static const char *const allowed[] = {"session", "agent", "limit", NULL};
    const char *bad = http_params_check(r, allowed);
    if (bad) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "%s", bad);
    }
    const char *session = http_param(r, "session"), *agent = http_param(r, "agent");
    const char *lim = http_param(r, "limit");
    long limit = LIST_LIMIT_DEFAULT;
    if (lim) {
        char *end;
        errno = 0;
        limit = strtol(lim, &end, 10);
        if (errno || end == lim || *end || limit < 1 || limit > LIST_LIMIT_MAX) {
            return http_error(r, MHD_HTTP_BAD_REQUEST, "limit must be an integer in [1, %d]",
                              LIST_LIMIT_MAX);
        }
    }
    sqlite3 *db;
    if (store_reader_open(r->ctx->db_path, &db) != 0) {
        return http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "cannot open the store");
    }
    char sql[1024];
    snprintf(sql, sizeof sql,
             "%s WHERE (?1 IS NULL OR r.session = ?1) AND (?2 IS NULL OR a.name = ?2)"
             " ORDER BY COALESCE(r.begin_ns, r.end_ns) DESC LIMIT ?3",
             select_cols);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return http_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot query responses");
    }
    if (session) {
        sqlite3_bind_text(st, 1, session, -1, SQLITE_STATIC);
    }
    if (agent) {
        sqlite3_bind_text(st, 2, agent, -1, SQLITE_STATIC);
    }
    sqlite3_bind_int64(st, 3, limit);
    tt__buf b;
    tt__buf_init(&b, 64u << 20);
    tt__json j;
    tt__json_init(&j, &b);
    tt__json_obj_begin(&j);
    tt__json_key(&j, "responses");
    tt__json_arr_begin(&j);
    while (sqlite3_step(st) == SQLITE_ROW) {
        render_row(&j, st);
        tt__json_obj_end(&j);
    }
    tt__json_arr_end(&j);
    tt__json_obj_end(&j);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return reply(r, MHD_HTTP_OK, &b, &j);
}

static int parse_id(const char *s, uint64_t *out)
{
    if (strlen(s) != 16) {
        return -1;
    }
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) {
            return -1;
        }
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return 0;
}

static void render_detail(tt__json *j, sqlite3 *db, int64_t inst, int64_t rid)
{
    sqlite3_stmt *st;
    tt__ev_tokens *toks = NULL;
    void **copies = NULL;
    size_t n = 0, cap = 0;
    if (sqlite3_prepare_v2(db,
                           "SELECT body FROM response_tokens WHERE instance_id = ?1 AND"
                           " response_id = ?2 ORDER BY first_index",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, inst);
        sqlite3_bind_int64(st, 2, rid);
        while (n < CHUNKS_MAX && sqlite3_step(st) == SQLITE_ROW) {
            size_t len = (size_t)sqlite3_column_bytes(st, 0);
            if (n == cap) {
                size_t nc = cap ? 2 * cap : 16;
                tt__ev_tokens *g = realloc(toks, nc * sizeof *toks);
                if (g) {
                    toks = g;
                }
                void **c2 = g ? realloc(copies, nc * sizeof *copies) : NULL;
                if (!c2) {
                    break;
                }
                copies = c2;
                cap = nc;
            }
            void *copy = malloc(len ? len : 1);
            if (!copy) {
                break;
            }
            if (len) {
                memcpy(copy, sqlite3_column_blob(st, 0), len);
            }
            if (tt__ev_tokens_decode((tt__bstr){copy, len}, &toks[n]) != 0) {
                free(copy);
                continue;
            }
            copies[n++] = copy;
        }
        sqlite3_finalize(st);
    }
    tt__json_key(j, "token_data");
    tt__json_obj_begin(j);
    render_tokens_merged(j, toks, n);
    tt__json_obj_end(j);
    for (size_t i = 0; i < n; i++) {
        free(copies[i]);
    }
    free(copies);
    free(toks);

    tt__json_key(j, "guard");
    tt__json_arr_begin(j);
    if (sqlite3_prepare_v2(db,
                           "SELECT token_index, verdict, reason, value, threshold, time_ns FROM"
                           " guard_events WHERE instance_id = ?1 AND response_id = ?2 ORDER BY seq",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, inst);
        sqlite3_bind_int64(st, 2, rid);
        while (sqlite3_step(st) == SQLITE_ROW) {
            tt__json_obj_begin(j);
            tt__json_kv_i64(j, "token_index", sqlite3_column_int64(st, 0));
            tt__json_kv_cstr(j, "verdict", render_verdict((uint32_t)sqlite3_column_int(st, 1)));
            col_text(j, "reason", st, 2);
            col_num(j, "value", st, 3, 1);
            col_num(j, "threshold", st, 4, 1);
            col_num(j, "time_unix_ns", st, 5, 0);
            tt__json_obj_end(j);
        }
        sqlite3_finalize(st);
    }
    tt__json_arr_end(j);
}

enum MHD_Result api_response_get(const struct http_req *r)
{
    static const char *const allowed[] = {NULL};
    const char *bad = http_params_check(r, allowed);
    if (bad) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "%s", bad);
    }
    const char *ids = http_path_param(r, "id");
    uint64_t id;
    if (!ids || parse_id(ids, &id) != 0) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "a response id is 16 hexadecimal digits");
    }
    sqlite3 *db;
    if (store_reader_open(r->ctx->db_path, &db) != 0) {
        return http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "cannot open the store");
    }
    char sql[1024];
    snprintf(sql, sizeof sql,
             "%s WHERE r.response_id = ?1 ORDER BY COALESCE(r.begin_ns, r.end_ns) DESC LIMIT 1",
             select_cols);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return http_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot query responses");
    }
    sqlite3_bind_int64(st, 1, (int64_t)id);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        sqlite3_close(db);
        return http_error(r, MHD_HTTP_NOT_FOUND, "no response %s", ids);
    }
    tt__buf b;
    tt__buf_init(&b, 256u << 20);
    tt__json j;
    tt__json_init(&j, &b);
    render_row(&j, st);
    render_detail(&j, db, sqlite3_column_int64(st, 19), (int64_t)id);
    tt__json_obj_end(&j);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return reply(r, MHD_HTTP_OK, &b, &j);
}

/* --- halt ------------------------------------------------------------------------------------ */

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) {
        p++;
    }
    return p;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* A JSON string at p (after its opening quote) into out (UTF-8, NUL-terminated); returns the
 * position after the closing quote or NULL. Rejects what is longer than cap - 1 bytes. */
static const char *parse_string(const char *p, const char *end, char *out, size_t cap, size_t *len)
{
    size_t n = 0;
    while (p < end && *p != '"') {
        unsigned cp;
        if ((unsigned char)*p < 0x20) {
            return NULL;
        }
        if (*p != '\\') {
            cp = (unsigned char)*p++;
            if (n + 1 >= cap) {
                return NULL;
            }
            out[n++] = (char)cp;
            continue;
        }
        if (++p >= end) {
            return NULL;
        }
        char e = *p++;
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) {
            static const char map[] = "\"\\/\b\f\n\r\t";
            cp = (unsigned char)map[simple - "\"\\/bfnrt"];
        } else if (e == 'u' && end - p >= 4) {
            cp = 0;
            for (int i = 0; i < 4; i++) {
                int h = hexval(p[i]);
                if (h < 0) {
                    return NULL;
                }
                cp = cp << 4 | (unsigned)h;
            }
            p += 4;
            if (cp >= 0xd800 && cp <= 0xdfff) {
                cp = 0xfffd; /* surrogates: not worth pairing in a reason */
            }
        } else {
            return NULL;
        }
        char u[4];
        size_t k = 0;
        if (cp < 0x80) {
            u[k++] = (char)cp;
        } else if (cp < 0x800) {
            u[k++] = (char)(0xc0 | cp >> 6);
            u[k++] = (char)(0x80 | (cp & 0x3f));
        } else {
            u[k++] = (char)(0xe0 | cp >> 12);
            u[k++] = (char)(0x80 | ((cp >> 6) & 0x3f));
            u[k++] = (char)(0x80 | (cp & 0x3f));
        }
        if (n + k >= cap) {
            return NULL;
        }
        memcpy(out + n, u, k);
        n += k;
    }
    if (p >= end) {
        return NULL;
    }
    out[n] = 0;
    *len = n;
    return p + 1;
}

/* The optional body {"reason": "..."}: 0, or -1 with why set. */
static int parse_halt_body(const tt__buf *body, char *reason, size_t cap, const char **why)
{
    const char *p = body ? (const char *)body->data : NULL;
    const char *end = p ? p + body->len : NULL;
    if (!p || skip_ws(p, end) == end) {
        return 0;
    }
    *why = "the body must be a JSON object {\"reason\": \"...\"}";
    p = skip_ws(p, end);
    if (*p++ != '{') {
        return -1;
    }
    p = skip_ws(p, end);
    if (p < end && *p == '}') {
        return skip_ws(p + 1, end) == end ? 0 : -1;
    }
    char key[16];
    size_t kl, rl;
    if (p >= end || *p++ != '"' || !(p = parse_string(p, end, key, sizeof key, &kl)) ||
        strcmp(key, "reason") != 0) {
        *why = "the body may only hold \"reason\"";
        return -1;
    }
    p = skip_ws(p, end);
    if (p >= end || *p++ != ':') {
        return -1;
    }
    p = skip_ws(p, end);
    if (p >= end || *p++ != '"') {
        *why = "reason must be a string";
        return -1;
    }
    if (!(p = parse_string(p, end, reason, cap, &rl))) {
        *why = "reason must be a valid JSON string of at most 100 bytes";
        return -1;
    }
    p = skip_ws(p, end);
    if (p >= end || *p++ != '}' || skip_ws(p, end) != end) {
        return -1;
    }
    return 0;
}

enum MHD_Result api_session_halt(const struct http_req *r)
{
    static const char *const allowed[] = {NULL};
    const char *bad = http_params_check(r, allowed);
    if (bad) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "%s", bad);
    }
    const char *session = http_path_param(r, "id");
    if (!session || !*session || strlen(session) > 255) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "a session id is 1 to 255 bytes");
    }
    char reason[HALT_REASON_MAX + 1] = "";
    const char *why = NULL;
    if (parse_halt_body(r->body, reason, sizeof reason, &why) != 0) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "%s", why);
    }
    if (!reason[0]) {
        snprintf(reason, sizeof reason, "no reason given");
    }
    if (!r->ctx->ingest) {
        return http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "no ingest loop to send the order");
    }
    sqlite3 *db;
    if (store_reader_open(r->ctx->db_path, &db) != 0) {
        return http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "cannot open the store");
    }
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db,
                           "SELECT DISTINCT a.name FROM sessions s JOIN agents a ON a.id ="
                           " s.agent_id WHERE s.name = ?1 ORDER BY a.name LIMIT 64",
                           -1, &st, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return http_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot query sessions");
    }
    sqlite3_bind_text(st, 1, session, -1, SQLITE_STATIC);
    /* Control { halt = 1: Halt { session = 1, reason = 2 } } */
    size_t sl = strlen(session), rl = strlen(reason);
    size_t inner = tt__pb_len_field_size(sl) + tt__pb_len_field_size(rl);
    uint8_t payload[600];
    uint8_t *p = tt__pb_put_tag(payload, 1, TT_PB_LEN);
    p = tt__pb_put_varint(p, inner);
    p = tt__pb_put_bytes(p, 1, session, sl);
    p = tt__pb_put_bytes(p, 2, reason, rl);
    size_t plen = (size_t)(p - payload);
    tt__buf b;
    tt__buf_init(&b, 1u << 20);
    tt__json j;
    tt__json_init(&j, &b);
    tt__json_obj_begin(&j);
    tt__json_kv_cstr(&j, "session", session);
    tt__json_kv_cstr(&j, "reason", reason);
    tt__json_key(&j, "agents");
    tt__json_arr_begin(&j);
    int agents = 0, conns = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *agent = (const char *)sqlite3_column_text(st, 0);
        int n = ingest_post_control_wait(r->ctx->ingest, agent, payload, plen, HALT_WAIT_MS);
        tt__json_obj_begin(&j);
        tt__json_kv_cstr(&j, "agent", agent);
        tt__json_kv_i64(&j, "connections", n < 0 ? 0 : n);
        tt__json_obj_end(&j);
        conns += n > 0 ? n : 0;
        agents++;
    }
    tt__json_arr_end(&j);
    tt__json_kv_i64(&j, "connections", conns);
    tt__json_obj_end(&j);
    sqlite3_finalize(st);
    sqlite3_close(db);
    if (agents == 0) {
        tt__buf_fini(&b);
        return http_error(r, MHD_HTTP_NOT_FOUND, "no session %s", session);
    }
    return reply(r, MHD_HTTP_ACCEPTED, &b, &j);
}

/* --- guard policy ------------------------------------------------------------------------------ */

/* A number in [lo, hi] from obj[key] (absent: def); -1 if present and not such a number. */
static int num_field(json_t *obj, const char *key, double lo, double hi, double def, double *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_number(v)) {
        return -1;
    }
    double d = json_number_value(v);
    if (!(d >= lo && d <= hi)) {
        return -1;
    }
    *out = d;
    return 0;
}

enum MHD_Result api_agent_guard_policy(const struct http_req *r)
{
    static const char *const allowed[] = {NULL};
    const char *bad = http_params_check(r, allowed);
    if (bad) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "%s", bad);
    }
    const char *agent = http_path_param(r, "agent");
    if (!agent || !*agent || strlen(agent) > 255) {
        return http_error(r, MHD_HTTP_BAD_REQUEST, "an agent name is 1 to 255 bytes");
    }
    json_error_t jerr;
    json_t *o = r->body && r->body->len
                    ? json_loadb((const char *)r->body->data, r->body->len, 0, &jerr)
                    : NULL;
    if (!json_is_object(o)) {
        json_decref(o);
        return http_error(r, MHD_HTTP_BAD_REQUEST,
                          "the body must be a JSON object with the policy's fields");
    }
    static const char *const known[] = {"token_min_prob", "window_min_confidence", "window",
                                        "response_min_confidence", "action"};
    const char *key;
    json_t *val;
    json_object_foreach(o, key, val)
    {
        size_t i = 0;
        while (i < 5 && strcmp(key, known[i]) != 0) {
            i++;
        }
        if (i == 5) {
            json_decref(o);
            return http_error(r, MHD_HTTP_BAD_REQUEST, "unknown policy field");
        }
    }
    double tp, wc, w, rc;
    json_t *act = json_object_get(o, "action");
    uint32_t action = 2;
    if (act && json_is_string(act) && strcmp(json_string_value(act), "flag") == 0) {
        action = 1;
    } else if (act && !(json_is_string(act) && strcmp(json_string_value(act), "halt") == 0)) {
        json_decref(o);
        return http_error(r, MHD_HTTP_BAD_REQUEST, "action is \"flag\" or \"halt\"");
    }
    if (num_field(o, "token_min_prob", 0, 1, 0, &tp) ||
        num_field(o, "window_min_confidence", 0, 1, 0, &wc) ||
        num_field(o, "window", 1, 4096, 16, &w) || w != (double)(uint32_t)w ||
        num_field(o, "response_min_confidence", 0, 1, 0, &rc)) {
        json_decref(o);
        return http_error(r, MHD_HTTP_BAD_REQUEST,
                          "thresholds are numbers in [0, 1], window an integer in [1, 4096]");
    }
    json_decref(o);
    if (!r->ctx->ingest) {
        return http_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "no ingest loop to send the order");
    }
    /* Control { policy = 2: GuardPolicy { 1..5 } } */
    uint8_t inner[64], payload[80];
    uint8_t *q = tt__pb_put_float(inner, 1, (float)tp);
    q = tt__pb_put_float(q, 2, (float)wc);
    q = tt__pb_put_uint(q, 3, (uint32_t)w);
    q = tt__pb_put_float(q, 4, (float)rc);
    q = tt__pb_put_uint(q, 5, action);
    uint8_t *p = tt__pb_put_bytes(payload, 2, inner, (size_t)(q - inner));
    int n = ingest_post_control_wait(r->ctx->ingest, agent, payload, (size_t)(p - payload),
                                     HALT_WAIT_MS);
    tt__buf b;
    tt__buf_init(&b, 4096);
    tt__json j;
    tt__json_init(&j, &b);
    tt__json_obj_begin(&j);
    tt__json_kv_cstr(&j, "agent", agent);
    tt__json_key(&j, "policy");
    tt__json_obj_begin(&j);
    tt__json_kv_f64(&j, "token_min_prob", (double)(float)tp);
    tt__json_kv_f64(&j, "window_min_confidence", (double)(float)wc);
    tt__json_kv_u64(&j, "window", (uint64_t)w);
    tt__json_kv_f64(&j, "response_min_confidence", (double)(float)rc);
    tt__json_kv_cstr(&j, "action", action == 1 ? "flag" : "halt");
    tt__json_obj_end(&j);
    tt__json_kv_i64(&j, "connections", n < 0 ? 0 : n);
    tt__json_obj_end(&j);
    return reply(r, MHD_HTTP_ACCEPTED, &b, &j);
}
