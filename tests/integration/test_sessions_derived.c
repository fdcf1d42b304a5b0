/*
 * test_sessions_derived.c - the derived sessions table of a real `telltale serve` counts
 * every event of every session, whichever way the store gets them: from the batch's session
 * summary (logs only), by decoding the events (batches with steps), or when a batch names more
 * sessions than the summary holds.
 */
#include <sqlite3.h>
#include <stdio.h>

#include "serve.h"
#include "test.h"

static int64_t session_events(const char *db, const char *name, int64_t *first, int64_t *last)
{
    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;
    int64_t n = -1;
    CHECK(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    CHECK(sqlite3_prepare_v2(h, "SELECT events, first_seen, last_seen FROM sessions WHERE name=?1",
                             -1, &st, NULL) == SQLITE_OK);
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        n = sqlite3_column_int64(st, 0);
        *first = sqlite3_column_int64(st, 1);
        *last = sqlite3_column_int64(st, 2);
    }
    sqlite3_finalize(st);
    sqlite3_close(h);
    return n;
}

TEST_T(sessions_table_counts_every_event_by_summary_by_decoding_and_on_overflow, 60)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "sessions", NULL);
    tt_client *c = tt_test_client(s.endpoint, "sessions", NULL);
    /* Logs only, two sessions: the summary path. */
    for (int i = 0; i < 300; i++) {
        CHECK_OK(tt_log(c, i % 3 ? "s-a" : "s-b", TT_INFO, "log", NULL, 0));
    }
    CHECK_OK(tt_flush(c, 10000));
    /* With steps in the batch: the decoding path. */
    for (int i = 0; i < 50; i++) {
        tt_step st;
        tt_step_begin(c, &st, NULL, TT_STEP_TOOL, "s-c", "tool", NULL);
        tt_step_end(c, &st, TT_STATUS_OK, 1, NULL);
        CHECK_OK(tt_log(c, "s-c", TT_INFO, "log", NULL, 0));
    }
    CHECK_OK(tt_flush(c, 10000));
    /* Twelve sessions in one batch: more than the summary holds. */
    char name[32];
    for (int i = 0; i < 120; i++) {
        snprintf(name, sizeof name, "s-many-%02d", i % 12);
        CHECK_OK(tt_log(c, name, TT_INFO, "log", NULL, 0));
    }
    CHECK_OK(tt_flush(c, 10000));
    tt_close(c, 5000);
    tt_test_serve_stop(&s);
    int64_t f = 0, l = 0;
    CHECK_EQ(session_events(s.db, "s-a", &f, &l), 200);
    CHECK(f > 0 && f <= l);
    CHECK_EQ(session_events(s.db, "s-b", &f, &l), 100);
    CHECK(f > 0 && f <= l);
    /* A step end names its step's session (since 0.2): begins, ends and logs count. */
    CHECK_EQ(session_events(s.db, "s-c", &f, &l), 150);
    for (int i = 0; i < 12; i++) {
        snprintf(name, sizeof name, "s-many-%02d", i);
        CHECK_EQ(session_events(s.db, name, &f, &l), 10);
        CHECK(f > 0 && f <= l);
    }
}
