/*
 * test_store.c - the store seam (src/collector/store/store.h) on a real SQLite store in a
 * temporary data directory: choice by URL, completions in submission order, the readers,
 * alerts and their acknowledgement, the error classes, the rollups' histogram and refusals,
 * and retention (by age and size, dedup after pruning).
 */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "batches.h"
#include "collector/retain.h"
#include "collector/store/store.h"
#include "test.h"

static struct store *open_store(void)
{
    struct store_config cfg = {NULL, tt_test_tmpdir(), SYNC_FULL};
    struct store *s = NULL;
    char err[512] = "";
    int rc = store_open(&s, &cfg, err, sizeof err);
    CHECK_MSG(rc == 0 && s, "store_open: %d %s", rc, err);
    return s;
}

/* A heartbeat (a batch without events) from instance number k of agent. */
static struct store_item *heartbeat(const char *agent, uint8_t k)
{
    struct store_item *it = calloc(1, sizeof *it);
    CHECK(it);
    snprintf(it->ident.agent, sizeof it->ident.agent, "%s", agent);
    memset(it->ident.instance, k, sizeof it->ident.instance);
    it->ident.pid = 1000u + k;
    it->received_ns = 1;
    return it;
}

/* Take n items back, waiting on the store's fd; returns them in the order they came. */
static int take(struct store *s, struct store_item **got, int n)
{
    int have = 0;
    for (int tries = 0; have < n && tries < 200; tries++) {
        struct pollfd p = {store_done_fd(s), POLLIN, 0};
        poll(&p, 1, 50);
        for (struct store_item *it = store_take_done(s), *next; it; it = next) {
            next = it->next;
            CHECK(have < n);
            got[have++] = it;
        }
    }
    return have;
}

TEST(store_open_picks_sqlite_by_default_and_refuses_unknown_schemes)
{
    struct store *s = open_store();
    char line[1024];
    store_describe(s, line, sizeof line);
    CHECK_MSG(strstr(line, "telltale.db") && strstr(line, "sync=full") &&
                  strstr(line, "power failure"),
              "%s", line);
    store_close(s);
    struct stat st;
    char path[4096];
    snprintf(path, sizeof path, "%s/telltale.db", tt_test_tmpdir());
    CHECK(stat(path, &st) == 0);

    /* (postgres:// is a known scheme since the PostgreSQL store: tests/integration/
     * test_postgres.c) */
    const char *bad[] = {"mysql://db.example/telltale", "mysql", "sqlite:/elsewhere.db", "sqlitex",
                         "postgresx://db.example/telltale"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct store_config cfg = {bad[i], tt_test_tmpdir(), SYNC_FULL};
        char err[512] = "";
        s = (struct store *)1;
        CHECK(store_open(&s, &cfg, err, sizeof err) < 0);
        CHECK(s == NULL);
        CHECK_MSG(strstr(err, "sqlite") != NULL, "%s: %s", bad[i], err);
    }
}

TEST(store_items_come_back_once_each_in_submission_order)
{
    struct store *s = open_store();
    CHECK_OK(store_start(s));
    enum { N = 40 };
    struct store_item *sent[N], *got[N];
    for (int i = 0; i < N; i++) {
        sent[i] = heartbeat(i % 2 ? "beta" : "alpha", (uint8_t)(1 + i % 5));
        sent[i]->frame_no = (uint64_t)i;
        store_submit(s, sent[i]);
    }
    CHECK_EQ(take(s, got, N), N);
    for (int i = 0; i < N; i++) {
        CHECK(got[i] == sent[i]);
        CHECK_EQ(got[i]->result, STORE_OK);
    }
    CHECK_EQ(store_pending_bytes(s), 0);
    char why[256] = "x";
    CHECK_EQ(store_failure(s, why, sizeof why), 0);
    CHECK_STR(why, "");
    for (int i = 0; i < N; i++) {
        store_item_free(got[i]);
    }
    store_close(s);
}

struct agents_seen {
    int n;
    char names[4][32];
    int64_t instances[4];
};

static int agent_seen(void *ctx, const struct store_agent *a)
{
    struct agents_seen *w = ctx;
    if (w->n < 4) {
        snprintf(w->names[w->n], sizeof w->names[0], "%s", a->name);
        w->instances[w->n] = a->instances;
    }
    w->n++;
    return 0;
}

TEST(store_readers_list_what_was_committed)
{
    struct store *s = open_store();
    CHECK_OK(store_start(s));
    struct store_item *got[3];
    store_submit(s, heartbeat("beta", 1));
    store_submit(s, heartbeat("alpha", 2));
    store_submit(s, heartbeat("alpha", 3));
    CHECK_EQ(take(s, got, 3), 3);
    for (int i = 0; i < 3; i++) {
        store_item_free(got[i]);
    }
    struct store_read *rd;
    CHECK_OK(store_read_open(s, &rd));
    struct agents_seen w = {0};
    CHECK_EQ(store_agents(rd, NULL, agent_seen, &w), 2);
    CHECK_EQ(w.n, 2);
    CHECK_STR(w.names[0], "alpha"); /* by name */
    CHECK_EQ(w.instances[0], 2);
    CHECK_STR(w.names[1], "beta");
    memset(&w, 0, sizeof w);
    CHECK_EQ(store_agents(rd, "beta", agent_seen, &w), 1);
    CHECK_EQ(w.instances[0], 1);
    CHECK_EQ(store_agents(rd, "gamma", agent_seen, &w), 0);
    store_read_close(rd);

    struct store_filter f;
    store_filter_init(&f);
    char err[256];
    CHECK_EQ(store_events_count(s, &f, err, sizeof err), 0); /* heartbeats hold no events */
    store_close(s);
}

struct alert_seen {
    int n;
    int64_t id, acked;
    char agent[32], session[32];
};

static int alert_seen(void *ctx, const struct store_alert *a)
{
    struct alert_seen *w = ctx;
    w->n++;
    w->id = a->id;
    w->acked = a->acked_ns;
    snprintf(w->agent, sizeof w->agent, "%s", a->agent);
    snprintf(w->session, sizeof w->session, "%s", a->session);
    return 0;
}

TEST(store_alert_ack_keeps_the_first_acknowledgement)
{
    struct store *s = open_store();
    struct store_alert al = {.time_ns = 5,
                             .agent = "alpha",
                             .detector = "conf",
                             .type = "drift",
                             .severity = "warning",
                             .message = "confidence fell",
                             .session = "",
                             .value = 0.25,
                             .threshold = 0.5};
    int64_t id1 = 0, id2 = 0;
    CHECK_OK(store_alert_add(s, &al, &id1));
    al.session = "s1";
    CHECK_OK(store_alert_add(s, &al, &id2));
    CHECK(id1 > 0 && id2 > id1);

    struct alert_seen w = {0};
    CHECK_OK(store_alert_ack(s, id1, 1000, alert_seen, &w));
    CHECK_EQ(w.n, 1);
    CHECK_EQ(w.id, id1);
    CHECK_EQ(w.acked, 1000);
    CHECK_STR(w.session, ""); /* none stored: "" in rows */
    CHECK_OK(store_alert_ack(s, id1, 2000, alert_seen, &w));
    CHECK_EQ(w.acked, 1000);
    CHECK_EQ(store_alert_ack(s, id2 + 100, 3000, alert_seen, &w), -ENOENT);

    struct store_read *rd;
    CHECK_OK(store_read_open(s, &rd));
    struct store_alert_filter open_only = {NULL, STORE_ALERTS_OPEN, INT64_MAX, 10, 0, 0};
    memset(&w, 0, sizeof w);
    CHECK_EQ(store_alerts(rd, &open_only, alert_seen, &w), 1);
    CHECK_EQ(w.id, id2);
    CHECK_STR(w.session, "s1");
    struct store_alert_filter all = {"alpha", STORE_ALERTS_ALL, INT64_MAX, 10, 0, 0};
    memset(&w, 0, sizeof w);
    CHECK_EQ(store_alerts(rd, &all, alert_seen, &w), 2);
    CHECK_EQ(w.id, id1); /* newest first: the last row is the oldest */
    store_read_close(rd);
    store_close(s);
}

static int rollup_seen(void *ctx, const struct store_rollup *row)
{
    (void)row;
    ++*(int *)ctx;
    return 0;
}

TEST(store_sqlite_rollups_refuse_a_step_that_is_no_level_and_answer_nothing_when_empty)
{
    struct store *s = open_store();
    struct store_read *rd;
    CHECK_OK(store_read_open(s, &rd));
    int rows = 0;
    struct store_rollup_query bad_level = {NULL, 0, INT64_MAX, 7, 7};
    CHECK_EQ(store_rollups(rd, &bad_level, rollup_seen, &rows), -EINVAL);
    struct store_rollup_query bad_bucket = {NULL, 0, INT64_MAX, 60, 90};
    CHECK_EQ(store_rollups(rd, &bad_bucket, rollup_seen, &rows), -EINVAL);
    struct store_rollup_query q = {NULL, 0, INT64_MAX, 60, 300};
    CHECK_EQ(store_rollups(rd, &q, rollup_seen, &rows), 0);
    CHECK_EQ(rows, 0);
    store_read_close(rd);
    store_close(s);
}

TEST(store_hist_quantiles_are_within_half_a_bin_and_survive_encoding)
{
    static struct store_hist h, back;
    memset(&h, 0, sizeof h);
    memset(&back, 0, sizeof back);
    for (int i = 1; i <= 1000; i++) {
        store_hist_add(&h, i * 0.001, 1); /* 0.001 .. 1 */
    }
    CHECK_EQ_U64(h.total, 1000);
    double p50 = store_hist_quantile(&h, 0.5), p95 = store_hist_quantile(&h, 0.95);
    CHECK_MSG(fabs(p50 - 0.5) <= 0.045 * 0.5, "p50 %g", p50);
    CHECK_MSG(fabs(p95 - 0.95) <= 0.045 * 0.95, "p95 %g", p95);
    static uint8_t enc[STORE_HIST_BINS * 15];
    size_t n = store_hist_encode(&h, enc, sizeof enc);
    CHECK(n > 0 && n < 400); /* sparse: 80 bins hold the values */
    CHECK_OK(store_hist_merge_encoded(&back, enc, n));
    CHECK_OK(memcmp(&h, &back, sizeof h));
    CHECK_EQ(store_hist_merge_encoded(&back, enc, n - 1), -1); /* a cut pair */
    CHECK(isnan(store_hist_quantile(&(struct store_hist){0}, 0.5)));
    CHECK_EQ(store_hist_bin(-1), 0);
    CHECK_EQ(store_hist_bin(1e300), STORE_HIST_BINS - 1);
    CHECK_EQ(store_hist_bin(1.0), STORE_HIST_OFFSET);
}

TEST(store_sqlite_retention_without_limits_changes_nothing)
{
    struct store *s = open_store();
    struct store_alert al = {.time_ns = 1,
                             .agent = "alpha",
                             .detector = "d",
                             .type = "t",
                             .severity = "info",
                             .message = "m"};
    int64_t id;
    CHECK_OK(store_alert_add(s, &al, &id));

    struct store_retention none = {0};
    struct store_retention_report rep;
    memset(&rep, 0xff, sizeof rep);
    CHECK_OK(store_retention_run(s, &none, INT64_MAX, &rep));
    CHECK_EQ_U64(rep.batches, 0);
    CHECK_EQ_U64(rep.bytes, 0);
    CHECK_EQ(rep.pruned_through_ns, 0);
    CHECK(rep.disk_bytes > 0);

    struct store_read *rd;
    CHECK_OK(store_read_open(s, &rd));
    struct alert_seen w = {0};
    struct store_alert_filter all = {NULL, STORE_ALERTS_ALL, INT64_MAX, 10, 0, 0};
    CHECK_EQ(store_alerts(rd, &all, alert_seen, &w), 1); /* nothing pruned */
    store_read_close(rd);
    store_close(s);
}

/* A batch of n log events of instance k (agent "aged"), at 2023 + first_seq ns. */
static struct store_item *events_item(uint8_t k, uint64_t first_seq, int n)
{
    struct store_item *it = heartbeat("aged", k);
    tt__buf b;
    tt__buf_init(&b, 1u << 20);
    /* Events at 2023 + first_seq ns, received 1000 s later: ordered by sequence. */
    tt_test_batch_payload_at(&b, it->ident.instance, first_seq, n,
                             1700000000000000000ull + first_seq);
    it->received_ns = 1700000000000000000ull + 1000000000000ull;
    it->raw = malloc(b.len);
    CHECK(it->raw);
    memcpy(it->raw, b.data, b.len);
    it->raw_len = b.len;
    tt__buf_fini(&b);
    tt__batch_limits lim = {1u << 20, 256};
    const char *why = NULL;
    CHECK_MSG(tt__batch_parse(&it->batch, it->raw, it->raw_len, &lim, &why) == 0, "%s", why);
    return it;
}

static int commit_one(struct store *s, struct store_item *it)
{
    store_submit(s, it);
    struct store_item *got[1];
    CHECK_EQ(take(s, got, 1), 1);
    int result = got[0]->result;
    store_item_free(got[0]);
    return result;
}

TEST(store_sqlite_retention_removes_old_batches_and_dedup_survives_it)
{
    struct store *s = open_store();
    CHECK_OK(store_start(s));
    for (int i = 0; i < 10; i++) {
        CHECK_EQ(commit_one(s, events_item(7, 1 + 100u * (uint64_t)i, 100)), STORE_OK);
    }
    /* Now is 2023 + 1 h: the age limit of 2 h removes nothing, 30 min everything. */
    int64_t t = 1700000000000000000ll;
    struct store_retention keep = {.max_age_ns = 7200000000000ll};
    struct store_retention_report rep;
    CHECK_OK(store_retention_run(s, &keep, t + 3600000000000ll, &rep));
    CHECK_EQ_U64(rep.batches, 0);
    struct store_retention age = {.max_age_ns = 1800000000000ll};
    CHECK_OK(store_retention_run(s, &age, t + 3600000000000ll, &rep));
    CHECK_EQ_U64(rep.batches, 10);
    CHECK_EQ_U64(rep.events, 1000);
    CHECK(rep.bytes > 0);
    CHECK(rep.pruned_through_ns >= t && rep.pruned_through_ns < t + 1000000);
    CHECK_EQ(rep.oldest_kept_ns, 0);
    struct store_filter f;
    store_filter_init(&f);
    char err[256];
    CHECK_EQ(store_events_count(s, &f, err, sizeof err), 0);
    /* A resend of a removed batch is a duplicate; a range across what went is refused; the
     * next range is new. */
    CHECK_EQ(commit_one(s, events_item(7, 201, 100)), STORE_DUP);
    CHECK_EQ(commit_one(s, events_item(7, 950, 100)), STORE_REJECT);
    CHECK_EQ(commit_one(s, events_item(7, 1001, 100)), STORE_OK);
    CHECK_EQ(store_events_count(s, &f, err, sizeof err), 100);
    store_close(s);
}

TEST(store_sqlite_retention_by_size_removes_the_oldest_first)
{
    struct store *s = open_store();
    CHECK_OK(store_start(s));
    struct store_retention none = {0};
    struct store_retention_report rep;
    CHECK_OK(store_retention_run(s, &none, 0, &rep));
    uint64_t empty = rep.used_bytes;
    int batches = 0;
    for (; batches < 400; batches++) {
        CHECK_EQ(commit_one(s, events_item(9, 1 + 1000u * (uint64_t)batches, 1000)), STORE_OK);
    }
    CHECK_OK(store_retention_run(s, &none, 0, &rep));
    char wal[600];
    snprintf(wal, sizeof wal, "%s/telltale.db-wal", tt_test_tmpdir());
    struct stat sb;
    uint64_t full = rep.used_bytes - (stat(wal, &sb) == 0 ? (uint64_t)sb.st_size : 0);
    CHECK_MSG(full > empty + (2u << 20), "%llu bytes in pages", (unsigned long long)full);
    struct store_retention size = {.max_bytes = full / 2};
    CHECK_OK(store_retention_run(s, &size, 0, &rep));
    CHECK_MSG(rep.batches > 0 && rep.batches < 400, "%llu batches went",
              (unsigned long long)rep.batches);
    /* The pages in use end under the target (3/4 of the limit, less the WAL's eighth). */
    uint64_t pages = rep.used_bytes - (stat(wal, &sb) == 0 ? (uint64_t)sb.st_size : 0);
    CHECK_MSG(pages <= full / 2 * 3 / 4 && pages >= full / 8,
              "%llu bytes in pages for a limit of %llu (%llu batches went)",
              (unsigned long long)pages, (unsigned long long)(full / 2),
              (unsigned long long)rep.batches);
    /* The oldest went: sequence 1 is not stored, the last batch is. */
    struct store_filter f;
    store_filter_init(&f);
    char err[256];
    CHECK_EQ(store_events_count(s, &f, err, sizeof err), (int64_t)(400 - rep.batches) * 1000);
    CHECK_EQ(commit_one(s, events_item(9, 1, 1000)), STORE_DUP);
    CHECK_EQ(commit_one(s, events_item(9, 1 + 1000u * 399, 1000)), STORE_DUP);
    store_close(s);
}

TEST(store_error_classes_split_transient_from_fatal)
{
    CHECK_EQ(store_error_class(0), STORE_ERR_NONE);
    CHECK_EQ(store_error_class(-EBUSY), STORE_ERR_TRANSIENT);
    CHECK_EQ(store_error_class(-EAGAIN), STORE_ERR_TRANSIENT);
    CHECK_EQ(store_error_class(-ENOSPC), STORE_ERR_TRANSIENT);
    CHECK_EQ(store_error_class(-EIO), STORE_ERR_FATAL);
    CHECK_EQ(store_error_class(-EINVAL), STORE_ERR_FATAL);
}

/* Another writer holds the database (the test's own connection): the commit times out busy,
 * a transient error: the item comes back STORE_RETRY, the store is refusing (not failed), and
 * the same batch commits once the lock is gone, which ends the episode. */
TEST_T(store_busy_database_is_a_transient_error_and_the_retry_commits, 120)
{
    struct store *s = open_store();
    CHECK_OK(store_start(s));
    char path[4096];
    snprintf(path, sizeof path, "%s/telltale.db", tt_test_tmpdir());
    sqlite3 *other = NULL;
    CHECK(sqlite3_open_v2(path, &other, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK);
    CHECK(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK);
    struct store_item *got[1];
    store_submit(s, heartbeat("alpha", 1));
    int n = 0;
    for (int tries = 0; n == 0 && tries < 400; tries++) { /* the busy timeout is 5 s */
        n = take(s, got, 1);
    }
    CHECK_EQ(n, 1);
    CHECK_EQ(got[0]->result, STORE_RETRY);
    char why[256];
    /* Refusing for now (a transient episode), not failed. */
    CHECK_EQ(store_failure(s, why, sizeof why), STORE_REFUSING);
    CHECK(strstr(why, "locked"));
    CHECK(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(other);
    store_submit(s, got[0]);
    CHECK_EQ(take(s, got, 1), 1);
    CHECK_EQ(got[0]->result, STORE_OK);
    CHECK_EQ(store_failure(s, why, sizeof why), STORE_HEALTHY);
    store_item_free(got[0]);
    store_close(s);
}

TEST(serve_refuses_an_unknown_store_at_startup)
{
    const char *bin = getenv("TT_BIN");
    CHECK(bin);
    char cmd[8192], out[4096];
    snprintf(out, sizeof out, "%s/stderr", tt_test_tmpdir());
    snprintf(cmd, sizeof cmd,
             "'%s' serve --data '%s/d' --no-http --listen unix:'%s/s.sock' "
             "--store mysql://127.0.0.1/x 2>'%s' >/dev/null",
             bin, tt_test_tmpdir(), tt_test_tmpdir(), out);
    int st = system(cmd);
    CHECK(WIFEXITED(st));
    CHECK_EQ(WEXITSTATUS(st), 1);
    FILE *f = fopen(out, "r");
    CHECK(f);
    char line[1024] = "";
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = 0;
    CHECK_MSG(strstr(line, "unknown store") && strstr(line, "sqlite, postgres"), "%s", line);
}

/* S14 on the collector: retention's clock follows the wall clock, except a step forward (a
 * collector whose clock jumps +1 h or +10 y purges nothing fresh: it goes on with the elapsed
 * time); a step back is followed (it keeps more). */
TEST(retention_clock_does_not_follow_a_wall_clock_jump_forward)
{
    struct retain_clock c = {0};
    int jumped;
    int64_t t = 1700000000000000000ll, s = 1000000000ll;
    CHECK_EQ(retain_clock_now(&c, t, 5 * s, &jumped), t);
    CHECK_EQ(jumped, 0);
    CHECK_EQ(retain_clock_now(&c, t + 2 * s, 7 * s, &jumped), t + 2 * s); /* in step */
    CHECK_EQ(jumped, 0);
    int64_t ten_years = 10ll * 365 * 86400 * s;
    CHECK_EQ(retain_clock_now(&c, t + 3 * s + ten_years, 8 * s, &jumped), t + 3 * s);
    CHECK_EQ(jumped, 1);
    CHECK_EQ(retain_clock_now(&c, t + 4 * s + ten_years, 9 * s, &jumped), t + 4 * s);
    CHECK_EQ(jumped, 1);
    CHECK_EQ(retain_clock_now(&c, t - 3600 * s, 10 * s, &jumped), t - 3600 * s); /* back */
    CHECK_EQ(jumped, 0);
    CHECK_EQ(retain_clock_now(&c, t - 3599 * s, 11 * s, &jumped), t - 3599 * s);
}

TEST(retention_options_parse_durations_and_sizes)
{
    int64_t ns;
    uint64_t b;
    CHECK_OK(retain_parse_duration("90s", &ns));
    CHECK_EQ(ns, 90000000000ll);
    CHECK_OK(retain_parse_duration("30d", &ns));
    CHECK_EQ(ns, 30ll * 86400 * 1000000000ll);
    CHECK_OK(retain_parse_duration("1.5h", &ns));
    CHECK_EQ(ns, 5400000000000ll);
    CHECK_OK(retain_parse_duration("500ms", &ns));
    CHECK_EQ(ns, 500000000ll);
    CHECK_EQ(retain_parse_duration("0", &ns), -1);
    CHECK_EQ(retain_parse_duration("-5s", &ns), -1);
    CHECK_EQ(retain_parse_duration("5x", &ns), -1);
    CHECK_EQ(retain_parse_duration("1e300d", &ns), -1);
    CHECK_OK(retain_parse_size("64M", &b));
    CHECK_EQ_U64(b, 64ull << 20);
    CHECK_OK(retain_parse_size("2GiB", &b));
    CHECK_EQ_U64(b, 2ull << 30);
    CHECK_EQ(retain_parse_size("512K", &b), -1); /* under 1 MiB */
    CHECK_EQ(retain_parse_size("nan", &b), -1);
    CHECK_EQ(retain_parse_size("1Q", &b), -1);
}

/* One heartbeat from identity: its result and reason after the store had it. */
static int submit_as(struct store *s, const char *agent, uint8_t k, const char *identity,
                     const char **reason)
{
    struct store_item *it = heartbeat(agent, k), *got[1];
    snprintf(it->ident.identity, sizeof it->ident.identity, "%s", identity);
    store_submit(s, it);
    CHECK_EQ(take(s, got, 1), 1);
    int r = got[0]->result;
    *reason = got[0]->reason;
    store_item_free(got[0]);
    return r;
}

TEST(store_agent_names_and_instances_belong_to_their_first_identity_across_a_reopen)
{
    for (int round = 0; round < 2; round++) {
        struct store *s = open_store();
        CHECK_OK(store_start(s));
        const char *why = NULL;
        CHECK_EQ(submit_as(s, "victim", 1, "uid:0", &why), STORE_OK);
        /* Another identity: neither the victim's name (with a new instance) nor its instance
         * (under a name of its own). */
        CHECK_EQ(submit_as(s, "victim", 2, "uid:65534", &why), STORE_REJECT);
        CHECK(store_reason_is_ownership(why));
        CHECK_EQ(submit_as(s, "mallory", 1, "uid:65534", &why), STORE_REJECT);
        CHECK(store_reason_is_ownership(why));
        CHECK_EQ(submit_as(s, "victim", 1, "token:victim", &why), STORE_REJECT);
        CHECK_EQ(submit_as(s, "victim", 1, "uid:0", &why), STORE_OK);
        struct store_read *rd;
        CHECK_OK(store_read_open(s, &rd));
        char owner[IDENTITY_MAX];
        CHECK_EQ(store_agent_owner(rd, "victim", owner, sizeof owner), 1);
        CHECK_STR(owner, "uid:0");
        CHECK_EQ(store_agent_owner(rd, "mallory", owner, sizeof owner), 1);
        CHECK_STR(owner, "uid:65534");
        CHECK_EQ(store_agent_owner(rd, "nobody-yet", owner, sizeof owner), 0);
        struct agents_seen w = {0};
        CHECK_EQ(store_agents(rd, "victim", agent_seen, &w), 1);
        CHECK_EQ(w.instances[0], 1); /* the refused instance 2 left no row */
        store_read_close(rd);
        store_close(s); /* the second round reopens the same database */
    }
}

/* At open, a telltale.db that is not an SQLite database (junk, or cut before its header ends)
 * is refused with a message naming the file and the way out; the file is left as it was. */
TEST(store_open_refuses_a_file_without_an_sqlite_header_naming_it)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/telltale.db", tt_test_tmpdir());
    static const size_t sizes[] = {8192, 60};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        FILE *f = fopen(path, "wb");
        CHECK(f);
        for (size_t k = 0; k < sizes[i]; k++) {
            fputc((int)(k * 37 % 251), f);
        }
        fclose(f);
        struct store_config cfg = {NULL, tt_test_tmpdir(), SYNC_FULL};
        struct store *s = NULL;
        char err[1024] = "";
        CHECK(store_open(&s, &cfg, err, sizeof err) != 0);
        CHECK(s == NULL);
        CHECK_MSG(strstr(err, path) && strstr(err, "is damaged (no SQLite header)") &&
                      strstr(err, "Store failures"),
                  "%s", err);
        struct stat st;
        CHECK_OK(stat(path, &st));
        CHECK_EQ((long long)st.st_size, (long long)sizes[i]);
    }
}

/* A store whose file is deleted while open fails for good at its next commit: the batch comes
 * back STORE_RETRY (never acknowledged), store_failure says why, and later batches are refused
 * too. */
TEST(store_deleted_file_fails_the_next_commit_and_every_later_one)
{
    struct store *s = open_store();
    CHECK_OK(store_start(s));
    struct store_item *got[1];
    store_submit(s, heartbeat("alpha", 1));
    CHECK_EQ(take(s, got, 1), 1);
    CHECK_EQ(got[0]->result, STORE_OK);
    store_item_free(got[0]);
    char path[4096];
    snprintf(path, sizeof path, "%s/telltale.db", tt_test_tmpdir());
    CHECK_OK(unlink(path));
    for (int i = 0; i < 2; i++) {
        store_submit(s, heartbeat("alpha", 1));
        CHECK_EQ(take(s, got, 1), 1);
        CHECK_EQ(got[0]->result, STORE_RETRY);
        store_item_free(got[0]);
    }
    char why[512];
    CHECK_EQ(store_failure(s, why, sizeof why), STORE_FAILED);
    CHECK_MSG(strstr(why, path) && strstr(why, "was deleted while open"), "%s", why);
    store_close(s);
}
