/*
 * test_store_incidents.c - incidents through the store interface: store_alert_put inserts an
 * incident by its id and updates it with its later events (count, last seen, status), the
 * largest id survives a reopen (ids stay unique across restarts), an incident left firing by a
 * stopped collector reads as resolved after the reopen, and the status and id filters list
 * what they should.
 */
#include <stdio.h>
#include <string.h>

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

struct seen {
    int n;
    struct {
        int64_t id, last_ns, resolved_ns;
        uint64_t count;
        uint32_t flaps;
        int resolved;
        char key[64], unit[16];
    } rows[8];
};

static int take(void *ctx, const struct store_alert *a)
{
    struct seen *w = ctx;
    if (w->n < 8) {
        w->rows[w->n].id = a->id;
        w->rows[w->n].last_ns = a->last_ns;
        w->rows[w->n].resolved_ns = a->resolved_ns;
        w->rows[w->n].count = a->count;
        w->rows[w->n].flaps = a->flaps;
        w->rows[w->n].resolved = a->resolved;
        snprintf(w->rows[w->n].key, sizeof w->rows[w->n].key, "%s", a->key);
        snprintf(w->rows[w->n].unit, sizeof w->rows[w->n].unit, "%s", a->unit);
    }
    w->n++;
    return 0;
}

static int list(struct store *s, int status, int64_t id, struct seen *w)
{
    struct store_read *rd;
    CHECK_OK(store_read_open(s, &rd));
    struct store_alert_filter f = {.before = INT64_MAX, .limit = 10, .status = status, .id = id};
    memset(w, 0, sizeof *w);
    int n = store_alerts(rd, &f, take, w);
    store_read_close(rd);
    return n;
}

TEST(store_incidents_insert_update_survive_a_reopen_and_filter)
{
    struct store *s = open_store();
    CHECK_EQ(store_alert_max_id(s), 0);
    struct store_alert in = {.id = 7,
                             .time_ns = 100,
                             .agent = "alpha",
                             .detector = "conf",
                             .type = "drift",
                             .severity = "critical",
                             .message = "fell",
                             .key = "confidence",
                             .unit = "",
                             .last_ns = 100,
                             .count = 1,
                             .example_id = 0xabcdef,
                             .example_is_response = 1};
    CHECK_OK(store_alert_put(s, &in, NULL));
    in.count = 40;
    in.last_ns = 900;
    in.message = "still fallen";
    CHECK_OK(store_alert_put(s, &in, NULL)); /* an update, not a second row */
    struct store_alert other = in;
    other.id = 8;
    other.key = "tool_latency";
    other.unit = "ms";
    other.count = 1;
    CHECK_OK(store_alert_put(s, &other, NULL));
    struct seen w;
    CHECK_EQ(list(s, 0, 0, &w), 2);
    CHECK_EQ(list(s, 1, 7, &w), 1);
    CHECK_EQ(w.rows[0].count, 40);
    CHECK_EQ(w.rows[0].last_ns, 900);
    CHECK_STR(w.rows[0].key, "confidence");
    CHECK_EQ(w.rows[0].resolved, 0);
    /* Resolved: the status filter sees it move. */
    in.resolved = 1;
    in.resolved_ns = 1500;
    in.flaps = 1;
    CHECK_OK(store_alert_put(s, &in, NULL));
    CHECK_EQ(list(s, 2, 0, &w), 1);
    CHECK_EQ(w.rows[0].id, 7);
    CHECK_EQ(w.rows[0].resolved_ns, 1500);
    CHECK_EQ(w.rows[0].flaps, 1);
    CHECK_EQ(list(s, 1, 0, &w), 1);
    CHECK_EQ(w.rows[0].id, 8);
    CHECK_STR(w.rows[0].unit, "ms");
    CHECK_EQ(store_alert_max_id(s), 8);
    store_close(s);
    /* A new collector on the same store: ids go on above 8, and incident 8, left firing by
     * the one that stopped, is resolved. */
    s = open_store();
    CHECK_EQ(store_alert_max_id(s), 8);
    CHECK_EQ(list(s, 1, 0, &w), 0);
    CHECK_EQ(list(s, 2, 8, &w), 1);
    CHECK(w.rows[0].resolved_ns > 0);
    store_close(s);
}
