/*
 * test_source.c - the source seam (src/collector/source/source.h) with the real store and hub:
 * a source that submits from its own thread, as OTLP and NATS sources will, gets every result
 * back once, in submission order, on the loop thread, and committed batches reach the commit
 * hook.
 */
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "batches.h"
#include "collector/hub.h"
#include "collector/source/source.h"
#include "collector/store/store.h"
#include "common/pb.h"
#include "test.h"

#define N_ITEMS 4

struct test_source {
    struct source src;
    pthread_t loop_thread;
    int n_done;
    enum source_result results[N_ITEMS];
    uint64_t cookies[N_ITEMS];
    int wrong_thread;
    int ends;
    int commits;
};

static struct store_item *item(const uint8_t inst[16], uint64_t first_seq, int n, uint64_t no)
{
    tt__buf payload;
    tt__buf_init(&payload, 1 << 20);
    tt_test_batch_payload(&payload, inst, first_seq, n);
    struct store_item *it = calloc(1, sizeof *it);
    CHECK(it);
    it->raw_len = payload.len;
    it->raw = malloc(it->raw_len);
    CHECK(it->raw);
    memcpy(it->raw, payload.data, it->raw_len);
    tt__buf_fini(&payload);
    tt__batch_limits lim = {1024, 64};
    const char *why = NULL;
    CHECK_MSG(tt__batch_parse(&it->batch, it->raw, it->raw_len, &lim, &why) == 0, "%s", why);
    snprintf(it->ident.agent, sizeof it->ident.agent, "threaded");
    memcpy(it->ident.instance, inst, 16);
    it->frame_no = no;
    return it;
}

static void complete(struct source *src, struct store_item *it, enum source_result r,
                     const char *reason)
{
    struct test_source *t = (struct test_source *)src;
    if (!pthread_equal(pthread_self(), t->loop_thread)) {
        t->wrong_thread = 1;
    }
    CHECK(t->n_done < N_ITEMS);
    CHECK((r == SOURCE_COMMITTED || r == SOURCE_DUPLICATE) == (reason == NULL));
    t->results[t->n_done] = r;
    t->cookies[t->n_done++] = (uint64_t)(uintptr_t)it->cookie;
}

static void complete_end(struct source *src)
{
    ((struct test_source *)src)->ends++;
}

static void on_commit(void *ctx, const struct store_item *it)
{
    (void)it;
    ((struct test_source *)ctx)->commits++;
}

static const struct source_ops ops = {"test", complete, complete_end};

/* The source's own thread: a batch, its resend, one overlapping it, then the next batch. */
static void *submitter(void *arg)
{
    struct test_source *t = arg;
    const uint8_t inst[16] = "threaded-inst-01";
    source_submit(&t->src, item(inst, 1, 2, 1), (void *)(uintptr_t)101);
    source_submit(&t->src, item(inst, 1, 2, 2), (void *)(uintptr_t)102);
    source_submit(&t->src, item(inst, 2, 2, 3), (void *)(uintptr_t)103);
    source_submit(&t->src, item(inst, 3, 2, 4), (void *)(uintptr_t)104);
    return NULL;
}

TEST(source_results_come_back_in_order_on_the_loop_thread_for_a_threaded_source)
{
    char err[512];
    struct store *store;
    struct store_config sc = {.url = NULL, .data_dir = tt_test_tmpdir(), .sync_level = SYNC_NORMAL};
    CHECK_MSG(store_open(&store, &sc, err, sizeof err) == 0, "%s", err);
    CHECK_OK(store_start(store));
    struct hub *hub = hub_new(4, 1 << 20);
    CHECK(hub);
    static struct test_source t;
    t.loop_thread = pthread_self();
    struct pipeline_hooks hooks = {&t, on_commit};
    struct pipeline *pl;
    CHECK_OK(pipeline_new(&pl, store, hub, &hooks, 1 << 20));
    CHECK_OK(pipeline_attach(pl, &t.src, &ops));
    pthread_t th;
    CHECK_OK(pthread_create(&th, NULL, submitter, &t));
    pthread_join(th, NULL);
    for (int i = 0; i < 200 && t.n_done < N_ITEMS; i++) {
        struct pollfd p = {pipeline_fd(pl), POLLIN, 0};
        if (poll(&p, 1, 50) == 1) {
            pipeline_dispatch(pl);
        }
    }
    CHECK_EQ(t.n_done, N_ITEMS);
    CHECK_EQ(t.wrong_thread, 0);
    CHECK_EQ(t.results[0], SOURCE_COMMITTED);
    CHECK_EQ(t.results[1], SOURCE_DUPLICATE);
    CHECK_EQ(t.results[2], SOURCE_REFUSED);
    CHECK_EQ(t.results[3], SOURCE_COMMITTED);
    for (int i = 0; i < N_ITEMS; i++) {
        CHECK_EQ(t.cookies[i], 101 + i);
    }
    CHECK(t.ends >= 1);
    CHECK_EQ(t.commits, 2);
    CHECK_EQ(source_in_flight(&t.src), 0);
    CHECK_EQ(source_backlog(&t.src), 0);
    CHECK_STR(source_result_name(SOURCE_FATAL), "fatal");
    store_close(store);
    pipeline_free(pl);
    hub_free(hub);
}
