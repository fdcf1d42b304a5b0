/*
 * test_nats_stall.c - the stalled-durable check of the NATS source (nats.h, nats_stall_look):
 * when the durable's leader counts nothing pending while the stream's leader holds a message
 * past what it delivered, twice in a row with no delivery between, the leader is asked to step
 * down; anything else resets the check, and step-downs back off.
 */
#include "collector/source/nats.h"
#include "test.h"

TEST(nats_stall_two_looks_in_a_row_at_the_same_point_ask_for_a_step_down)
{
    struct nats_stall st;
    nats_stall_reset(&st);
    CHECK_EQ(st.wait_ms, NATS_STALL_IDLE_MS);
    /* Message 3467 waits while the durable delivered up to 3466 and counts nothing pending. */
    CHECK_EQ(nats_stall_look(&st, 3467, 3466, 0, 0), 0); /* once: it may be on its way */
    CHECK_EQ(nats_stall_look(&st, 3467, 3466, 0, 0), 1); /* twice, no delivery: stuck */
    CHECK_EQ(st.wait_ms, 2 * NATS_STALL_IDLE_MS);
    /* After the step-down the check starts over: two more looks before the next one. */
    CHECK_EQ(nats_stall_look(&st, 3467, 3466, 0, 0), 0);
    CHECK_EQ(nats_stall_look(&st, 3467, 3466, 0, 0), 1);
    CHECK_EQ(st.wait_ms, 4 * NATS_STALL_IDLE_MS);
}

TEST(nats_stall_a_healthy_durable_is_never_stepped_down)
{
    struct nats_stall st;
    nats_stall_reset(&st);
    for (int i = 0; i < 10; i++) {
        /* Nothing past what it delivered (0: the stream's leader found none). */
        CHECK_EQ(nats_stall_look(&st, 0, 5000, 0, 0), 0);
        /* Messages pending: it is delivering them. */
        CHECK_EQ(nats_stall_look(&st, 5001, 5000, 7, 0), 0);
        /* Delivered, awaiting a collector's ack (a slow store): not stuck. */
        CHECK_EQ(nats_stall_look(&st, 5001, 5000, 0, 3), 0);
        /* Only a message at or before what it delivered (a stale copy): not for it. */
        CHECK_EQ(nats_stall_look(&st, 4990, 5000, 0, 0), 0);
    }
    CHECK_EQ(st.wait_ms, NATS_STALL_IDLE_MS);
}

TEST(nats_stall_a_delivery_between_two_looks_starts_the_check_over)
{
    struct nats_stall st;
    nats_stall_reset(&st);
    CHECK_EQ(nats_stall_look(&st, 101, 100, 0, 0), 0);
    CHECK_EQ(nats_stall_look(&st, 201, 200, 0, 0), 0); /* it moved: suspect anew */
    CHECK_EQ(nats_stall_look(&st, 201, 200, 0, 0), 1);
    /* A healthy look between two stuck ones: no step-down, and the wait is back to its base. */
    CHECK_EQ(nats_stall_look(&st, 301, 300, 0, 0), 0);
    CHECK_EQ(nats_stall_look(&st, 0, 301, 0, 0), 0);
    CHECK_EQ(st.wait_ms, NATS_STALL_IDLE_MS);
    CHECK_EQ(nats_stall_look(&st, 302, 301, 0, 0), 0);
    CHECK_EQ(nats_stall_look(&st, 302, 301, 0, 0), 1);
}

TEST(nats_stall_step_downs_back_off_to_the_cap)
{
    struct nats_stall st;
    nats_stall_reset(&st);
    unsigned prev = st.wait_ms;
    for (int i = 0; i < 20; i++) {
        CHECK_EQ(nats_stall_look(&st, 10, 9, 0, 0), 0);
        CHECK_EQ(nats_stall_look(&st, 10, 9, 0, 0), 1);
        CHECK(st.wait_ms >= prev && st.wait_ms <= NATS_STALL_WAIT_MAX_MS);
        prev = st.wait_ms;
    }
    CHECK_EQ(st.wait_ms, NATS_STALL_WAIT_MAX_MS);
}
