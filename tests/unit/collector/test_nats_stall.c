/*
 * test_nats_stall.c - the stalled-durable check of the NATS source (nats.h, nats_stall_look):
 * two looks in a row that see the same first message on the durable's subjects while the
 * durable counts nothing pending nor awaiting an ack ask for a step-down (the message is past
 * what the durable delivered) or a sweep (it is at or below); anything else resets the check,
 * and step-downs back off. A first message at or below the durable's ack floor, or delivered
 * while nothing awaits an ack, is swept after two looks that see it whatever else moves (the
 * durable delivering, messages pending, fetches between the looks), and never beyond the ack
 * floor while acks are awaited.
 */
#include "collector/source/nats.h"
#include "test.h"

TEST(nats_stall_a_message_past_what_was_delivered_twice_asks_for_a_step_down)
{
    struct nats_stall st;
    nats_stall_reset(&st);
    CHECK_EQ(st.wait_ms, NATS_STALL_IDLE_MS);
    /* Message 3467 waits while the durable delivered up to 3466 and counts nothing pending. */
    CHECK_EQ(nats_stall_look(&st, 3467, 3466, 3466, 0, 0), NATS_STALL_NONE); /* may be on its way */
    CHECK_EQ(nats_stall_look(&st, 3467, 3466, 3466, 0, 0), NATS_STALL_STEPDOWN); /* stuck */
    CHECK_EQ(st.wait_ms, 2 * NATS_STALL_IDLE_MS);
    /* After the step-down the check starts over: two more looks before the next one. */
    CHECK_EQ(nats_stall_look(&st, 3467, 3466, 3466, 0, 0), NATS_STALL_NONE);
    CHECK_EQ(nats_stall_look(&st, 3467, 3466, 3466, 0, 0), NATS_STALL_STEPDOWN);
    CHECK_EQ(st.wait_ms, 4 * NATS_STALL_IDLE_MS);
}

TEST(nats_stall_a_message_left_below_what_was_delivered_twice_is_swept)
{
    struct nats_stall st;
    nats_stall_reset(&st);
    /* Message 700 is still in the work queue though the durable delivered up to 3466 and awaits
     * no ack: skipped by a new leader (or a copy the stream's leader kept). */
    CHECK_EQ(nats_stall_look(&st, 700, 3466, 3466, 0, 0), NATS_STALL_NONE);
    CHECK_EQ(nats_stall_look(&st, 700, 3466, 3466, 0, 0), NATS_STALL_SWEEP);
    CHECK_EQ(st.wait_ms, NATS_STALL_IDLE_MS); /* a sweep is progress: no back-off */
    /* The durable's delivered point equal to the message: still below or at it, swept. */
    CHECK_EQ(nats_stall_look(&st, 3466, 3466, 3466, 0, 0), NATS_STALL_NONE);
    CHECK_EQ(nats_stall_look(&st, 3466, 3466, 3466, 0, 0), NATS_STALL_SWEEP);
}

TEST(nats_stall_a_healthy_durable_is_never_acted_on)
{
    struct nats_stall st;
    nats_stall_reset(&st);
    for (int i = 0; i < 10; i++) {
        /* The stream holds nothing on its subjects (0: the stream's leader found none). */
        CHECK_EQ(nats_stall_look(&st, 0, 5000, 5000, 0, 0), NATS_STALL_NONE);
        /* Messages pending: it is delivering them. */
        CHECK_EQ(nats_stall_look(&st, 5001, 5000, 5000, 7, 0), NATS_STALL_NONE);
        /* Delivered, awaiting a collector's ack (a slow store): not stuck, not orphans. */
        CHECK_EQ(nats_stall_look(&st, 4990, 5000, 4989, 0, 3), NATS_STALL_NONE);
        CHECK_EQ(nats_stall_look(&st, 5001, 5000, 4989, 0, 3), NATS_STALL_NONE);
    }
    CHECK_EQ(st.wait_ms, NATS_STALL_IDLE_MS);
}

TEST(nats_stall_anything_moving_between_two_looks_starts_the_check_over)
{
    struct nats_stall st;
    nats_stall_reset(&st);
    /* The durable delivered more between the looks. */
    CHECK_EQ(nats_stall_look(&st, 101, 100, 100, 0, 0), NATS_STALL_NONE);
    CHECK_EQ(nats_stall_look(&st, 201, 200, 200, 0, 0), NATS_STALL_NONE);
    CHECK_EQ(nats_stall_look(&st, 201, 200, 200, 0, 0), NATS_STALL_STEPDOWN);
    /* The first message changed between the looks (one was acked and removed). */
    CHECK_EQ(nats_stall_look(&st, 50, 300, 300, 0, 0), NATS_STALL_NONE);
    CHECK_EQ(nats_stall_look(&st, 51, 300, 300, 0, 0), NATS_STALL_NONE);
    CHECK_EQ(nats_stall_look(&st, 51, 300, 300, 0, 0), NATS_STALL_SWEEP);
    /* A different verdict on the same message (the durable moved past it). */
    CHECK_EQ(nats_stall_look(&st, 400, 399, 399, 0, 0), NATS_STALL_NONE);
    CHECK_EQ(nats_stall_look(&st, 400, 400, 400, 0, 0), NATS_STALL_NONE);
    CHECK_EQ(nats_stall_look(&st, 400, 400, 400, 0, 0), NATS_STALL_SWEEP);
    /* A healthy look between two stuck ones: nothing, and the wait is back to its base. */
    CHECK_EQ(nats_stall_look(&st, 501, 500, 500, 0, 0), NATS_STALL_NONE);
    CHECK_EQ(nats_stall_look(&st, 501, 500, 500, 0, 0), NATS_STALL_STEPDOWN);
    CHECK_EQ(nats_stall_look(&st, 0, 501, 501, 0, 0), NATS_STALL_NONE);
    CHECK_EQ(st.wait_ms, NATS_STALL_IDLE_MS);
    CHECK_EQ(nats_stall_look(&st, 502, 501, 501, 0, 0), NATS_STALL_NONE);
    CHECK_EQ(nats_stall_look(&st, 502, 501, 501, 0, 0), NATS_STALL_STEPDOWN);
}

TEST(nats_stall_step_downs_back_off_to_the_cap)
{
    struct nats_stall st;
    nats_stall_reset(&st);
    unsigned prev = st.wait_ms;
    for (int i = 0; i < 20; i++) {
        CHECK_EQ(nats_stall_look(&st, 10, 9, 9, 0, 0), NATS_STALL_NONE);
        CHECK_EQ(nats_stall_look(&st, 10, 9, 9, 0, 0), NATS_STALL_STEPDOWN);
        CHECK(st.wait_ms >= prev && st.wait_ms <= NATS_STALL_WAIT_MAX_MS);
        prev = st.wait_ms;
    }
    CHECK_EQ(st.wait_ms, NATS_STALL_WAIT_MAX_MS);
}

TEST(nats_stall_an_orphan_below_the_ack_floor_is_swept_while_the_durable_delivers)
{
    struct nats_stall st;
    nats_stall_reset(&st);
    /* Message 741 is still in the work queue; the durable acknowledged everything up to 7000
     * and goes on delivering (heartbeats): delivered, pending and awaiting-ack move between
     * the looks, and a fetch returned messages in between. */
    CHECK_EQ(nats_stall_look(&st, 741, 7003, 7000, 2, 3), NATS_STALL_NONE);
    nats_stall_moved(&st);
    CHECK_EQ(nats_stall_look(&st, 741, 7010, 7008, 0, 2), NATS_STALL_SWEEP);
    CHECK_EQ(st.sweep_to, 7008); /* up to the ack floor: above it messages are on their way */
    /* After a sweep the check starts over. */
    CHECK_EQ(nats_stall_look(&st, 741, 7010, 7008, 0, 2), NATS_STALL_NONE);
    CHECK_EQ(nats_stall_look(&st, 741, 7012, 7012, 0, 0), NATS_STALL_SWEEP);
    CHECK_EQ(st.sweep_to, 7012);
}

TEST(nats_stall_an_orphan_suspect_needs_the_same_message_twice)
{
    struct nats_stall st;
    nats_stall_reset(&st);
    /* Acknowledged and removed between the looks (the stream's removal lagged the ack): the
     * next first message is another one, so nothing is swept yet. */
    CHECK_EQ(nats_stall_look(&st, 800, 900, 850, 0, 1), NATS_STALL_NONE);
    CHECK_EQ(nats_stall_look(&st, 801, 900, 850, 0, 1), NATS_STALL_NONE);
    /* Above the ack floor (delivered, awaiting its ack): never an orphan, and it clears the
     * suspicion of the look before. */
    CHECK_EQ(nats_stall_look(&st, 851, 900, 850, 0, 1), NATS_STALL_NONE);
    CHECK_EQ(nats_stall_look(&st, 801, 900, 850, 0, 1), NATS_STALL_NONE);
    CHECK_EQ(nats_stall_look(&st, 851, 900, 850, 0, 1), NATS_STALL_NONE);
    CHECK_EQ(nats_stall_look(&st, 851, 900, 850, 0, 1), NATS_STALL_NONE);
    /* An empty stream, or none acknowledged yet (ack floor 0). */
    CHECK_EQ(nats_stall_look(&st, 0, 900, 850, 0, 0), NATS_STALL_NONE);
    CHECK_EQ(nats_stall_look(&st, 1, 10, 0, 9, 1), NATS_STALL_NONE);
    CHECK_EQ(nats_stall_look(&st, 1, 10, 0, 9, 1), NATS_STALL_NONE);
    /* A reset (not a fetch) forgets the suspicion. */
    CHECK_EQ(nats_stall_look(&st, 801, 900, 850, 0, 1), NATS_STALL_NONE);
    nats_stall_reset(&st);
    CHECK_EQ(nats_stall_look(&st, 801, 900, 850, 0, 1), NATS_STALL_NONE);
    CHECK_EQ(nats_stall_look(&st, 801, 900, 850, 0, 1), NATS_STALL_SWEEP);
}

TEST(nats_stall_a_fetch_between_looks_starts_the_idle_check_over_but_keeps_an_orphan)
{
    struct nats_stall st;
    nats_stall_reset(&st);
    /* Past what was delivered, then a delivery: no step-down on the next look. */
    CHECK_EQ(nats_stall_look(&st, 101, 100, 100, 0, 0), NATS_STALL_NONE);
    nats_stall_moved(&st);
    CHECK_EQ(nats_stall_look(&st, 101, 100, 100, 0, 0), NATS_STALL_NONE);
    CHECK_EQ(nats_stall_look(&st, 101, 100, 100, 0, 0), NATS_STALL_STEPDOWN);
    /* A step-down's back-off survives an orphan suspicion, and a delivery resets it. */
    CHECK_EQ(st.wait_ms, 2 * NATS_STALL_IDLE_MS);
    CHECK_EQ(nats_stall_look(&st, 50, 100, 100, 0, 0), NATS_STALL_NONE);
    CHECK_EQ(st.wait_ms, 2 * NATS_STALL_IDLE_MS);
    nats_stall_moved(&st);
    CHECK_EQ(st.wait_ms, NATS_STALL_IDLE_MS);
    CHECK_EQ(nats_stall_look(&st, 50, 120, 118, 1, 2), NATS_STALL_SWEEP);
    CHECK_EQ(st.sweep_to, 118);
}

TEST(nats_stall_a_skipped_message_holding_the_ack_floor_is_swept_while_the_durable_delivers)
{
    struct nats_stall st;
    nats_stall_reset(&st);
    /* Message 1 was given up on (MaxDeliver) or skipped: it holds the ack floor at 0, and the
     * durable goes on delivering past it. Awaiting no ack at both looks: an orphan. */
    CHECK_EQ(nats_stall_look(&st, 1, 50, 0, 0, 0), NATS_STALL_NONE);
    nats_stall_moved(&st);
    CHECK_EQ(nats_stall_look(&st, 1, 60, 0, 4, 0), NATS_STALL_SWEEP);
    CHECK_EQ(st.sweep_to, 60); /* nothing awaits an ack: everything delivered may be swept */
    /* With deliveries awaiting their ack, message 1 may be one of them: nothing. */
    for (int i = 0; i < 4; i++) {
        CHECK_EQ(nats_stall_look(&st, 1, 70, 0, 0, 2), NATS_STALL_NONE);
    }
}

TEST(nats_stall_a_sweep_cut_at_its_cap_goes_on_at_the_next_look)
{
    struct nats_stall st;
    nats_stall_reset(&st);
    /* 725 orphans, 937 to 1661, below what the durable delivered (8291). */
    CHECK_EQ(nats_stall_look(&st, 937, 8291, 8291, 0, 0), NATS_STALL_NONE);
    CHECK_EQ(nats_stall_look(&st, 937, 8291, 8291, 0, 0), NATS_STALL_SWEEP);
    CHECK_EQ(st.more_from, 0); /* the consumer sets it when the sweep stops at its cap */
    st.more_from = 937 + NATS_SWEEP_MAX;
    /* The next look sweeps on at once, a fetch between the looks or not. */
    nats_stall_moved(&st);
    CHECK_EQ(nats_stall_look(&st, 937 + NATS_SWEEP_MAX, 8291, 8291, 0, 0), NATS_STALL_SWEEP);
    CHECK_EQ(st.sweep_to, 8291);
    st.more_from = 937 + 2 * NATS_SWEEP_MAX;
    CHECK_EQ(nats_stall_look(&st, 2000, 8300, 8291, 0, 3), NATS_STALL_SWEEP); /* further on */
    CHECK_EQ(st.sweep_to, 8291); /* awaiting acks: up to the ack floor only */
    /* A first message below where the sweep stopped (its delete not yet applied) is not swept
     * again at once: two looks, as for any orphan. */
    st.more_from = 2000 + NATS_SWEEP_MAX;
    CHECK_EQ(nats_stall_look(&st, 2001, 8300, 8291, 0, 0), NATS_STALL_NONE);
    CHECK_EQ(st.more_from, 0);
    CHECK_EQ(nats_stall_look(&st, 2001, 8300, 8291, 0, 0), NATS_STALL_SWEEP);
    /* Nothing left to sweep, or a message that is no orphan: the continuation ends. */
    st.more_from = 3000;
    CHECK_EQ(nats_stall_look(&st, 0, 8300, 8300, 0, 0), NATS_STALL_NONE);
    CHECK_EQ(st.more_from, 0);
    st.more_from = 3000;
    CHECK_EQ(nats_stall_look(&st, 8301, 8300, 8300, 0, 0), NATS_STALL_NONE);
    CHECK_EQ(st.more_from, 0);
}
