/*
 * agent.c - the demo agent loop in C, on libtelltale: plan, real tool calls (SQL on SQLite, a
 * file read, a calculator), then an answer generated token by token by a toy character-level
 * bigram model (trained at start on a licence text that Debian ships), each token's logits
 * row passed to telltale with the guard on. The model is a toy; the numbers are real.
 *
 *   build/examples/agent [--endpoint E] [--agent NAME] [--turns N] [--drift] [--corpus FILE]
 *
 * --drift raises the sampling temperature to 2.5 and makes the SQL tool query a missing table.
 */
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "telltale.h"

#define V 256 /* the vocabulary: bytes */

struct model {
    float logp[V][V]; /* log P(next | prev), add-0.1 smoothed */
};

static int train(struct model *m, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    static double counts[V][V];
    int prev = ' ', ch;
    while ((ch = fgetc(f)) != EOF) {
        ch = ch == '\n' ? ' ' : ch;
        counts[prev][ch] += 1.0;
        prev = ch;
    }
    fclose(f);
    for (int a = 0; a < V; a++) {
        double total = 0;
        for (int b = 0; b < V; b++) {
            total += counts[a][b] + 0.1;
        }
        for (int b = 0; b < V; b++) {
            m->logp[a][b] = (float)log((counts[a][b] + 0.1) / total);
        }
    }
    return 0;
}

/* Sample from softmax(row) with a uniform draw. */
static int sample(const float *row, unsigned *seed)
{
    float mx = row[0];
    for (int i = 1; i < V; i++) {
        mx = row[i] > mx ? row[i] : mx;
    }
    double p[V], total = 0;
    for (int i = 0; i < V; i++) {
        p[i] = exp((double)(row[i] - mx));
        total += p[i];
    }
    double u = (double)rand_r(seed) / ((double)RAND_MAX + 1.0) * total;
    for (int i = 0; i < V; i++) {
        if ((u -= p[i]) <= 0) {
            return i;
        }
    }
    return V - 1;
}

static int sql_rows(void *arg, int n, char **vals, char **cols)
{
    (void)vals;
    (void)cols;
    *(long *)arg += n;
    return 0;
}

/* The calculator tool: "A op B" with op in + - * /. */
static int calculator(const char *expr, double *out)
{
    char *end;
    double a = strtod(expr, &end);
    while (*end == ' ') {
        end++;
    }
    char op = *end++;
    double b = strtod(end, NULL);
    if (op == '+') {
        *out = a + b;
    } else if (op == '-') {
        *out = a - b;
    } else if (op == '*') {
        *out = a * b;
    } else if (op == '/' && b != 0) {
        *out = a / b;
    } else {
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *endpoint = "tcp://127.0.0.1:7370", *agent = "c-demo-agent";
    const char *corpus = "/usr/share/common-licenses/GPL-3";
    long turns = 5;
    int drift = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--endpoint") == 0 && i + 1 < argc) {
            endpoint = argv[++i];
        } else if (strcmp(argv[i], "--agent") == 0 && i + 1 < argc) {
            agent = argv[++i];
        } else if (strcmp(argv[i], "--turns") == 0 && i + 1 < argc) {
            turns = strtol(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--corpus") == 0 && i + 1 < argc) {
            corpus = argv[++i];
        } else if (strcmp(argv[i], "--drift") == 0) {
            drift = 1;
        } else {
            fprintf(stderr,
                    "usage: %s [--endpoint E] [--agent NAME] [--turns N] [--drift] "
                    "[--corpus FILE]\n",
                    argv[0]);
            return 2;
        }
    }
    static struct model m;
    if (train(&m, corpus) != 0) {
        return 1;
    }
    sqlite3 *db = NULL;
    if (sqlite3_open(":memory:", &db) != SQLITE_OK ||
        sqlite3_exec(db,
                     "CREATE TABLE licenses(name TEXT, words INT);"
                     "INSERT INTO licenses VALUES ('GPL-3', 5644), ('Apache-2.0', 1581),"
                     "('Artistic', 970);",
                     NULL, NULL, NULL) != SQLITE_OK) {
        fprintf(stderr, "sqlite: %s\n", sqlite3_errmsg(db));
        return 1;
    }

    tt_config *cfg = NULL;
    tt_client *c = NULL;
    if (tt_config_new(&cfg) != 0 || tt_config_set(cfg, "endpoint", endpoint) != 0 ||
        tt_config_set(cfg, "agent", agent) != 0 || tt_open(&c, cfg) != 0) {
        fprintf(stderr, "telltale: %s\n", cfg ? tt_config_error(cfg) : "out of memory");
        return 1;
    }
    tt_config_free(cfg);
    tt_guard_policy policy = {.token_min_prob = 0.0005f,
                              .window_min_confidence = 0.02f,
                              .window = 16,
                              .response_min_confidence = 0.03f,
                              .action = TT_FLAG};
    tt_guard_policy_set(c, &policy);

    unsigned seed = 1;
    float temperature = drift ? 2.5f : 0.7f;
    float row[V];
    for (long t = 1; t <= turns; t++) {
        char session[32];
        snprintf(session, sizeof session, "c-session-%ld", t);
        tt_step turn, plan, tool;
        tt_step_begin(c, &turn, NULL, TT_STEP_AGENT, session, "turn", "how long is the gpl");
        tt_step_begin(c, &plan, &turn, TT_STEP_REASONING, session, "plan", NULL);
        tt_step_end(c, &plan, TT_STATUS_OK, -1, NULL);

        /* Tool 1: SQL. */
        const char *q = drift ? "SELECT words FROM licenses_gone" : "SELECT words FROM licenses";
        long rows = 0;
        char *err = NULL;
        tt_step_begin(c, &tool, &turn, TT_STEP_RETRIEVAL, session, "sql", q);
        int rc = sqlite3_exec(db, q, sql_rows, &rows, &err);
        tt_step_end(c, &tool, rc == SQLITE_OK ? TT_STATUS_OK : TT_STATUS_ERROR, rows,
                    rc == SQLITE_OK ? NULL : err);
        sqlite3_free(err);

        /* Tool 2: read a file. */
        tt_step_begin(c, &tool, &turn, TT_STEP_TOOL, session, "read_file", corpus);
        FILE *f = fopen(corpus, "rb");
        long bytes = -1;
        if (f) {
            fseek(f, 0, SEEK_END);
            bytes = ftell(f);
            fclose(f);
        }
        tt_step_end(c, &tool, f ? TT_STATUS_OK : TT_STATUS_ERROR, bytes, f ? NULL : "open failed");

        /* Tool 3: the calculator. */
        char expr[64];
        double value = 0;
        snprintf(expr, sizeof expr, "%ld * %d", bytes, (int)t);
        tt_step_begin(c, &tool, &turn, TT_STEP_TOOL, session, "calculator", expr);
        rc = calculator(expr, &value);
        tt_step_end(c, &tool, rc == 0 ? TT_STATUS_OK : TT_STATUS_ERROR, 8, NULL);

        /* The answer, one character per token. */
        tt_step llm;
        tt_step_begin(c, &llm, &turn, TT_STEP_LLM, session, "generate", NULL);
        tt_attr params[] = {TT_DOUBLE("temperature", temperature)};
        tt_response *r = NULL;
        char answer[81];
        size_t len = 0;
        if (tt_response_begin(c, &r, session, "char-bigram", params, 1) == 0) {
            int prev = ' ';
            while (len < sizeof answer - 1) {
                for (int i = 0; i < V; i++) {
                    row[i] = m.logp[prev][i] / temperature;
                }
                int ch = sample(row, &seed);
                tt_verdict v = TT_PASS;
                tt_response_token(r, row, V, 1, TT_DTYPE_F32, ch, &v, NULL);
                if (v == TT_HALT) {
                    break;
                }
                answer[len++] = (char)(ch >= 32 && ch < 127 ? ch : '?');
                prev = ch;
            }
            answer[len] = 0;
            tt_response_summary s;
            tt_response_end(r, &s);
            tt_attr a[] = {TT_STR("text", answer), TT_DOUBLE("confidence", exp(s.mean_logprob)),
                           TT_INT("verdict", s.verdict)};
            tt_log(c, session, TT_INFO, "answer", a, 3);
            printf("turn %ld: confidence %.3f, verdict %d: %s\n", t, exp(s.mean_logprob), s.verdict,
                   answer);
        }
        tt_step_end(c, &llm, TT_STATUS_OK, (int64_t)len, NULL);
        tt_step_end(c, &turn, TT_STATUS_OK, -1, NULL);
    }
    sqlite3_close(db);
    int rc = tt_close(c, 5000);
    return rc == 0 ? 0 : 3;
}
