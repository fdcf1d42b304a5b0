/*
 * test_overload.c - reliability scenarios S24 (overload) and S19 (long outage and restarts)
 * against a real `telltale serve`. S24: agents offer about 5 x what the store sustains; the
 * collector stops reading (admission, backpressure) instead of growing, its RSS stays within
 * docs/operations.md's bound, every event is stored exactly once or counted by its agent
 * (spooled, then replayed), and a fresh agent is served normally soon after. S19: the collector
 * is down while an agent is restarted twice, so its spool holds three instances; once the
 * collector is back the replay stores each event once (0 duplicates, 0 gaps) at the configured
 * pace, and live events of the running process are acknowledged while the replay goes on.
 * TT_SOAK=1 (make soak) runs the long variants.
 */
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <unistd.h>

#include "operator.h"
#include "serve.h"
#include "test.h"

static int soak(void)
{
    const char *v = getenv("TT_SOAK");
    return v && *v && strcmp(v, "0") != 0;
}

static uint64_t peak_rss(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f) && sscanf(line, "VmHWM: %llu kB", &kb) != 1) {
    }
    fclose(f);
    return (uint64_t)kb << 10;
}

/* A client's events until quiescence: fails after ms. */
static void settle(tt_client *c, double ms, tt_stats *st)
{
    double t0 = tt_test_now_ms();
    for (;;) {
        tt_flush(c, 200);
        CHECK_OK(tt_stats_get(c, st, sizeof *st));
        if (st->buffered == 0) {
            return;
        }
        CHECK_MSG(tt_test_now_ms() - t0 < ms * tt_test_mult(),
                  "not settled after %.0f ms: buffered %llu (spooled %llu), acked %llu", ms,
                  (unsigned long long)st->buffered, (unsigned long long)st->spooled,
                  (unsigned long long)st->acked);
    }
}

static uint64_t dir_bytes(const char *path)
{
    DIR *d = opendir(path);
    uint64_t n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char p[1200];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
            n += (uint64_t)st.st_size;
        }
    }
    if (d) {
        closedir(d);
    }
    return n;
}

/* --- S24 overload ------------------------------------------------------------------------- */

#define AGENTS 4

struct offer {
    tt_client *c;
    uint8_t inst[16];
    double rate; /* events per second to offer */
    double seconds;
    uint64_t emitted;
    pthread_t th;
};

static void *offer_run(void *arg)
{
    struct offer *o = arg;
    char msg[128];
    double t0 = tt_test_now_ms();
    for (;;) {
        double el = (tt_test_now_ms() - t0) / 1000;
        if (el >= o->seconds) {
            break;
        }
        while ((double)o->emitted < el * o->rate) {
            snprintf(msg, sizeof msg,
                     "overload event %llu of an agent offering more than the "
                     "store can take",
                     (unsigned long long)o->emitted);
            tt_log(o->c, NULL, TT_INFO, msg, NULL, 0); /* a refusal is counted as dropped */
            o->emitted++;
        }
        usleep(1000);
    }
    return NULL;
}

TEST_T(overload_s24_five_times_the_sustainable_ingest_stays_bounded_and_loses_nothing, 600)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "s24", "--max-connections", "64", NULL);
    char spool[700];
    snprintf(spool, sizeof spool, "spool_dir=%s/spool", tt_test_tmpdir());
    /* What the store sustains: one agent as fast as it can for 2 s. */
    struct offer base = {0};
    base.c = tt_test_client(s.endpoint, "s24-base", spool, NULL);
    tt_instance_id(base.c, base.inst);
    base.rate = 5e6;
    base.seconds = 2;
    uint64_t e0 = tt_test_metric(s.http, "telltale_ingest_events_total");
    double t0 = tt_test_now_ms();
    offer_run(&base);
    tt_stats st;
    settle(base.c, 60000, &st);
    double sustained = (double)(tt_test_metric(s.http, "telltale_ingest_events_total") - e0) *
                       1000 / (tt_test_now_ms() - t0);
    printf("sustained: %.0f events/s stored\n", sustained);
    CHECK(sustained > 0);
    /* Five times that, from AGENTS agents with a spool, for 10 s (10 min in soak). */
    struct offer o[AGENTS];
    for (int i = 0; i < AGENTS; i++) {
        char name[32];
        snprintf(name, sizeof name, "s24-%d", i);
        o[i] = (struct offer){0};
        o[i].c = tt_test_client(s.endpoint, name, spool, NULL);
        tt_instance_id(o[i].c, o[i].inst);
        o[i].rate = 5 * sustained / AGENTS;
        o[i].seconds = soak() ? 600 : 10;
        CHECK_OK(pthread_create(&o[i].th, NULL, offer_run, &o[i]));
    }
    uint64_t offered = 0;
    for (int i = 0; i < AGENTS; i++) {
        pthread_join(o[i].th, NULL);
        offered += o[i].emitted;
    }
    double ratio = (double)offered / o[0].seconds / sustained;
    printf("offered %.1f x the sustained rate (%llu events in %.0f s)\n", ratio,
           (unsigned long long)offered, o[0].seconds);
    /* Under a sanitizer the agents' own calls cost about what the store does, and four of them
     * share two cores with the collector (one ThreadSanitizer run in CI offered 1.49 x): there
     * the run shows the overload paths race-free and bounded at a smaller factor, still above
     * what the store took from one agent alone. */
    const char *sanitized = getenv("TT_SANITIZE");
    double need = sanitized && *sanitized ? 1.2 : 3;
    CHECK_MSG(ratio >= need, "the agents could not offer the overload (%.2f x)", ratio);
    /* Normal again: a fresh agent is served within 60 s of the end of the overload. */
    double t_end = tt_test_now_ms();
    tt_client *probe = tt_test_client(s.endpoint, "s24-probe", NULL);
    CHECK_OK(tt_log(probe, NULL, TT_INFO, "probe", NULL, 0));
    CHECK_OK(tt_flush(probe, (uint32_t)(60000 * tt_test_mult())));
    printf("a fresh agent served %.1f s after the overload\n", (tt_test_now_ms() - t_end) / 1000);
    CHECK_OK(tt_close(probe, 2000));
    /* Every event stored once, or counted by its agent. */
    uint64_t spooled_peak = 0, dropped = 0;
    for (int i = 0; i < AGENTS; i++) {
        settle(o[i].c, 300000, &st);
        struct tt_store_check sc;
        tt_test_check_store(s.db, o[i].inst, &sc);
        tt_test_check_conservation(&st, &sc);
        CHECK_EQ_U64(st.emitted, o[i].emitted);
        CHECK_EQ_U64(sc.overlaps, 0);
        CHECK_EQ_U64(sc.events, st.acked);
        spooled_peak += st.spooled;
        dropped += st.dropped_total;
        CHECK_OK(tt_close(o[i].c, 5000));
    }
    CHECK_OK(tt_close(base.c, 5000));
    uint64_t hwm = peak_rss(s.pid);
    /* docs/operations.md: 64 MiB + --queue-bytes + max_connections x (64 KiB + 1 MiB + 4 KiB) */
    uint64_t bound = (64ull << 20) + (256ull << 20) + 64 * ((64ull << 10) + (1ull << 20) + 4096);
    printf("peak RSS %.1f MiB (bound %.1f MiB); agents dropped %llu (counted); %llu admission "
           "waits\n",
           hwm / 1048576.0, bound / 1048576.0, (unsigned long long)dropped,
           (unsigned long long)tt_test_metric(s.http, "telltale_ingest_budget_waits_total"));
    if (!sanitized || !*sanitized) { /* under a sanitizer RSS holds its shadow memory */
        CHECK(hwm <= bound);
    }
    tt_test_serve_stop(&s);
}

/* --- S19 long outage and restarts --------------------------------------------------------- */

static void emit_n(tt_client *c, uint64_t n, uint64_t *next)
{
    char msg[160];
    for (uint64_t i = 0; i < n; i++) {
        /* Text that does not repeat, so the spool's size follows the event count. */
        snprintf(msg, sizeof msg, "outage event %llu %016llx %016llx", (unsigned long long)*next,
                 (unsigned long long)(*next * 0x9e3779b97f4a7c15ull),
                 (unsigned long long)(*next * 0xc2b2ae3d27d4eb4full));
        CHECK_OK(tt_log(c, NULL, TT_INFO, msg, NULL, 0));
        (*next)++;
    }
}

/* How long the collector stays down: the three processes of the agent share it. 0 in `make
 * test` (the processes follow each other at once), the scenario's 2 hours in `make soak`;
 * TT_S19_OUTAGE_S sets another length. */
static double outage_s(void)
{
    const char *v = getenv("TT_S19_OUTAGE_S");
    if (v && *v) {
        return strtod(v, NULL);
    }
    return soak() ? 7200 : 0;
}

TEST_T(overload_s19_restarts_during_an_outage_replay_once_and_paced, 600)
{
    struct tt_test_serve s;
    tt_test_serve_start(&s, "s19", NULL);
    tt_test_serve_stop(&s); /* the outage */
    char spool[700], dir[800];
    snprintf(spool, sizeof spool, "spool_dir=%s/spool", tt_test_tmpdir());
    snprintf(dir, sizeof dir, "%s/spool/s19", tt_test_tmpdir());
    const uint64_t per = soak() ? 100000 : 4000, rate = soak() ? (1u << 20) : (96u << 10);
    const double outage = outage_s();
    double t_down = tt_test_now_ms();
    char rate_kv[64];
    snprintf(rate_kv, sizeof rate_kv, "replay_bytes_per_s=%llu", (unsigned long long)rate);
    /* Two processes of the agent run and end during the outage; the third is running when the
     * collector comes back. */
    uint8_t inst[3][16];
    uint64_t next = 0;
    tt_client *c = NULL;
    uint64_t spool_bytes = 0; /* what the first two processes left: the replay */
    for (int k = 0; k < 3; k++) {
        if (k == 2) {
            spool_bytes = dir_bytes(dir);
        }
        c = tt_test_client(s.endpoint, "s19", spool, rate_kv, "compression_level=0",
                           "batch_bytes=65536", "backoff_min_ms=20", "backoff_max_ms=200", NULL);
        tt_instance_id(c, inst[k]);
        /* Each process emits its share in 100 steps spread over its third of the outage,
         * reconnecting in vain all along (every 200 ms at most). */
        for (int step = 0; step < 100; step++) {
            emit_n(c, per / 100, &next);
            if (outage > 0) {
                usleep((useconds_t)(outage / 3 / 100 * 1e6));
            }
        }
        usleep(300000);
        if (k < 2) {
            tt_stats cs;
            CHECK(tt_close_stats(c, 500, &cs, sizeof cs) == TT_ETIMEDOUT); /* all spooled */
            CHECK_MSG(cs.spooled > 0, "process %d spooled nothing", k);
        }
    }
    printf("outage: %.0f s; spool: %.0f KiB left by 2 earlier instances, replay paced at %llu "
           "KiB/s\n",
           (tt_test_now_ms() - t_down) / 1000, spool_bytes / 1024.0,
           (unsigned long long)rate >> 10);
    tt_test_serve_restart(&s);
    double t0 = tt_test_now_ms();
    /* Live events while the replay goes on: acknowledged without waiting for all of it. */
    usleep(500000);
    uint64_t live_first = next;
    double t_live = tt_test_now_ms();
    emit_n(c, 100, &next);
    CHECK_OK(tt_flush(c, (uint32_t)(5000 * tt_test_mult())));
    double live_ms = tt_test_now_ms() - t_live;
    /* The replay is over when the store holds every event of the three instances (a spooled
     * segment of an earlier process counts in the client's figures only once read). */
    uint64_t stored = 0;
    while (stored < next) {
        CHECK_MSG(tt_test_now_ms() - t0 < 600000 * tt_test_mult(), "%llu of %llu stored",
                  (unsigned long long)stored, (unsigned long long)next);
        usleep(100000);
        stored = 0;
        for (int k = 0; k < 3; k++) {
            struct tt_store_check sc;
            tt_test_check_store(s.db, inst[k], &sc);
            stored += sc.events;
        }
    }
    double replay_s = (tt_test_now_ms() - t0) / 1000;
    tt_stats st;
    settle(c, 60000, &st);
    double paced = spool_bytes / replay_s;
    printf("replay took %.1f s (%.0f KiB/s); live events acked after %.0f ms\n", replay_s,
           paced / 1024, live_ms);
    /* Paced: never faster than the rate plus its quarter-second burst and one frame. */
    CHECK_MSG(spool_bytes <= rate * replay_s + rate / 4 + (64u << 10),
              "replayed %llu bytes in %.1f s at %llu B/s", (unsigned long long)spool_bytes,
              replay_s, (unsigned long long)rate);
    /* The live events were acknowledged while the replay still had most of its way to go. */
    CHECK_MSG(500 + live_ms < replay_s * 1000 / 2,
              "live events waited %.0f ms behind a %.1f s replay", live_ms, replay_s);
    CHECK(live_first < next);
    /* 0 duplicates, 0 gaps, every event of the three instances stored once. */
    struct tt_store_check all = {0};
    for (int k = 0; k < 3; k++) {
        struct tt_store_check sc;
        tt_test_check_store(s.db, inst[k], &sc);
        printf("instance %d: %llu events, %llu overlaps, %llu gaps\n", k,
               (unsigned long long)sc.events, (unsigned long long)sc.overlaps,
               (unsigned long long)sc.gaps);
        CHECK_EQ_U64(sc.overlaps, 0);
        CHECK_EQ_U64(sc.gaps, 0);
        all.frames += sc.frames;
        all.events += sc.events;
        all.decoded += sc.decoded;
    }
    CHECK_EQ_U64(all.events, next);
    tt_test_check_conservation(&st, &all);
    CHECK_OK(tt_close(c, 5000));
    /* The collector restarted again: nothing is replayed a second time. */
    tt_test_serve_stop(&s);
    tt_test_serve_restart(&s);
    c = tt_test_client(s.endpoint, "s19", spool, NULL);
    CHECK_OK(tt_flush(c, 2000));
    CHECK_OK(tt_stats_get(c, &st, sizeof st));
    CHECK_EQ_U64(st.inherited, 0);
    CHECK_OK(tt_close(c, 2000));
    tt_test_serve_stop(&s);
}
