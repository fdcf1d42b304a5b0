/*
 * test_batch_sessions.c - tt__batch_parse's per-session summary (names, event counts, first
 * and last times), which the store's derived sessions table uses instead of decoding every
 * event a second time.
 */
#include <string.h>

#include "common/batch.h"
#include "common/pb.h"
#include "test.h"

/* One Event: time delta, session (NULL: none), an empty log body. */
static uint8_t *put_event(uint8_t *p, int64_t delta, const char *session)
{
    uint8_t ev[128], *q = ev;
    q = tt__pb_put_sint(q, 1, delta);
    if (session) {
        q = tt__pb_put_bytes(q, 2, session, strlen(session));
    }
    q = tt__pb_put_bytes(q, TT_EV_LOG, "", 0);
    return tt__pb_put_bytes(p, 4, ev, (size_t)(q - ev));
}

/* A batch of n events; event i is in session names[i % nnames] (NULL entries: none) at
 * delta 10 * i ns, after a base time of 1000 that comes last on the wire. */
static size_t make_batch(uint8_t *buf, int n, const char *const *names, int nnames)
{
    static const uint8_t inst[16] = {1, 2, 3};
    uint8_t *p = buf;
    p = tt__pb_put_bytes(p, 1, inst, 16);
    p = tt__pb_put_uint(p, 2, 1);
    for (int i = 0; i < n; i++) {
        p = put_event(p, 10 * i, names[i % nnames]);
    }
    p = tt__pb_put_fixed64(p, 3, 1000);
    return (size_t)(p - buf);
}

static const tt__batch_session *find(const tt__batch *b, const char *name)
{
    for (uint32_t i = 0; i < b->n_sessions; i++) {
        if (b->sessions[i].name.n == strlen(name) &&
            memcmp(b->sessions[i].name.p, name, strlen(name)) == 0) {
            return &b->sessions[i];
        }
    }
    return NULL;
}

TEST(batch_parse_summarises_each_session_with_its_count_and_time_range)
{
    static uint8_t buf[1 << 16];
    const char *names[] = {"alpha", "beta", NULL, "alpha"};
    size_t n = make_batch(buf, 10, names, 4);
    tt__batch b;
    tt__batch_limits lim = {1000, 16};
    const char *why = NULL;
    CHECK_MSG(tt__batch_parse(&b, buf, n, &lim, &why) == 0, "%s", why);
    CHECK_EQ(b.n_events, 10u);
    CHECK_EQ(b.n_sessions, 2u);
    CHECK_EQ(b.sessions_overflow, 0);
    const tt__batch_session *a = find(&b, "alpha"), *be = find(&b, "beta");
    CHECK(a && be);
    /* alpha: events 0, 3, 4, 7, 8; beta: 1, 5, 9; event i at 1000 + 10 i. */
    CHECK_EQ(a->events, 5u);
    CHECK_EQ(a->t_min, 1000);
    CHECK_EQ(a->t_max, 1080);
    CHECK_EQ(be->events, 3u);
    CHECK_EQ(be->t_min, 1010);
    CHECK_EQ(be->t_max, 1090);
}

TEST(batch_parse_marks_overflow_when_sessions_exceed_the_summary)
{
    static uint8_t buf[1 << 16];
    const char *names[TT_BATCH_SESSIONS + 1] = {"s0", "s1", "s2", "s3", "s4",
                                                "s5", "s6", "s7", "s8"};
    size_t n = make_batch(buf, TT_BATCH_SESSIONS + 1, names, TT_BATCH_SESSIONS + 1);
    tt__batch b;
    tt__batch_limits lim = {1000, 16};
    const char *why = NULL;
    CHECK_MSG(tt__batch_parse(&b, buf, n, &lim, &why) == 0, "%s", why);
    CHECK_EQ(b.n_sessions, (uint32_t)TT_BATCH_SESSIONS);
    CHECK_EQ(b.sessions_overflow, 1);
    CHECK(b.has_session);
}
