/*
 * test_monitor_lead.c - a monitor that follows (several collectors on one store, alerting/
 * follow.h) reaches its incidents and holds their notices; once it leads, it raises those the
 * earlier leader had not stored and stays quiet about those taken over.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batches.h"
#include "collector/alerting/alerts.h"
#include "collector/alerting/monitor.h"
#include "collector/store/store.h"
#include "common/buf.h"
#include "test.h"

/* One committed batch of agent's instance inst: n events from first_seq. */
static void commit(struct monitor *m, const char *agent, const uint8_t inst[16], uint64_t first,
                   int n)
{
    tt__buf b;
    tt__buf_init(&b, 1 << 16);
    tt_test_batch_payload(&b, inst, first, n);
    struct store_item it;
    memset(&it, 0, sizeof it);
    tt__batch_limits lim = {UINT32_MAX, UINT32_MAX};
    const char *why = "";
    CHECK_MSG(tt__batch_parse(&it.batch, b.data, b.len, &lim, &why) == 0, "%s", why);
    snprintf(it.ident.agent, sizeof it.ident.agent, "%s", agent);
    memcpy(it.ident.instance, inst, 16);
    it.received_ns = 1700000000000000000ull;
    monitor_on_commit(m, &it);
    tt__buf_fini(&b);
}

static uint64_t held_notices(struct monitor *m)
{
    tt__buf b;
    tt__buf_init(&b, 1 << 16);
    monitor_metrics(m, &b);
    tt__buf_append(&b, "", 1);
    const char *p = strstr((const char *)b.data, "\ntelltale_incident_events_held_total ");
    uint64_t v = p ? strtoull(p + 37, NULL, 10) : UINT64_MAX;
    tt__buf_fini(&b);
    return v;
}

static int count_row(void *ctx, const struct store_alert *a)
{
    (void)a;
    (*(int *)ctx)++;
    return 0;
}

TEST(monitor_following_holds_incidents_and_leading_raises_what_was_not_taken_over)
{
    struct store_config sc = {NULL, tt_test_tmpdir(), SYNC_FULL};
    struct store *s = NULL;
    char err[512] = "";
    CHECK_MSG(store_open(&s, &sc, err, sizeof err) == 0, "%s", err);
    CHECK_OK(store_start(s));
    struct alerts *al = NULL;
    CHECK_MSG(alerts_open(&al, s, NULL, NULL, 0, err, sizeof err) == 0, "%s", err);
    static struct mon_config cfg;
    const char *text = "[detector.holes]\ntype = gap\nmin_events = 10\n";
    CHECK_MSG(mon_config_parse(&cfg, text, strlen(text), "t.conf", err, sizeof err) == 0, "%s",
              err);
    struct monitor *m = NULL;
    CHECK_MSG(monitor_open(&m, &cfg, al, err, sizeof err) == 0, "%s", err);
    CHECK_EQ(monitor_leading(m), 1);

    monitor_follow(m);
    CHECK_EQ(monitor_leading(m), 0);
    uint8_t ia[16] = {1, 2, 3}, ib[16] = {4, 5, 6};
    commit(m, "a", ia, 1, 10);
    commit(m, "a", ia, 100, 10); /* a hole of 89 events: an incident */
    commit(m, "b", ib, 1, 10);
    commit(m, "b", ib, 200, 10);
    commit(m, "c", ib, 1, 10); /* no hole: none */
    struct alerts_counters ac;
    alerts_counters(al, &ac);
    CHECK_EQ_U64(ac.raised, 0); /* following: held */
    CHECK_EQ_U64(held_notices(m), 2);

    struct mon_incident_ref *refs = NULL;
    int n = monitor_incidents(m, &refs);
    CHECK_EQ(n, 2);
    int64_t id_b = 0;
    for (int i = 0; i < n; i++) {
        CHECK_STR(refs[i].detector, "holes");
        CHECK_EQ(refs[i].resolved, 0);
        refs[i].taken = strcmp(refs[i].agent, "a") == 0; /* the earlier leader stored a's */
        if (!refs[i].taken) {
            id_b = refs[i].id;
        }
    }
    CHECK(id_b > 0);
    monitor_lead(m, refs, n);
    free(refs);
    CHECK_EQ(monitor_leading(m), 1);
    alerts_counters(al, &ac);
    CHECK_EQ_U64(ac.raised, 1); /* b's only: a's is the earlier leader's row, taken over */

    /* Leading: a new hole raises at once. */
    commit(m, "c", ib, 500, 10);
    alerts_counters(al, &ac);
    CHECK_EQ_U64(ac.raised, 2);
    CHECK_EQ_U64(held_notices(m), 2);

    monitor_close(m);
    alerts_close(al); /* stores what was raised */
    struct store_read *rd;
    CHECK_OK(store_read_open(s, &rd));
    struct store_alert_filter f = {.before = INT64_MAX, .limit = 10};
    int rows = 0;
    CHECK(store_alerts(rd, &f, count_row, &rows) >= 0);
    store_read_close(rd);
    CHECK_EQ(rows, 2);
    store_close(s);
}
