/*
 * hot_path_syscalls.c - the program that tests/integration/test_hot_path_syscalls.c runs
 * under `strace -ff`: producer threads emit events in a loop between two marker system calls,
 * so that the test can check, in each thread's own trace, that nothing was called between them.
 *
 *   hot_path_syscalls [--endpoint E] [--threads N] [--events TOTAL] [--inject-syscall EVERY]
 *                     [--tokens 1]
 *
 * Each producer thread makes its first event before the start marker (the first event of a
 * thread creates its ring: that one may allocate), then marks the start with
 * write(-1, "tt-hot-path-begin", 17), emits its share of TOTAL events (default 10,000,000) as a
 * mix of tt_log with attributes (half of them through a TT_LOG call site, registered by a
 * call before the start marker: a site's first call allocates), tt_metric and
 * tt_step_begin/end (tt_step_begin_ctx for half the steps), marks the end with
 * write(-1, "tt-hot-path-end", 15) and exits. Both markers fail with EBADF and have no other
 * effect. --inject-syscall makes a getppid() every EVERY events of the loop, so the test can
 * show that its check catches a system call. --tokens 1 makes the loop add tokens to one
 * response per thread instead (tt_response_token over a 1024-entry logits row, the guard's
 * token rule on, so chunks and guard events are emitted); the response begins before the start
 * marker and ends after the end marker. --tokens 2 adds them with tt_response_token_batch
 * instead: a batch of three sequences {the response, a finished one (NULL), the response} over
 * the same row (row stride 0), two tokens per loop event.
 *
 * Prints one JSON line with the client's counters once the producers are done.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "telltale.h"

#define MARK_BEGIN "tt-hot-path-begin"
#define MARK_END "tt-hot-path-end"

typedef struct producer {
    tt_client *c;
    uint64_t events;
    uint64_t inject_every;
    uint64_t refused; /* calls that returned an error (ring full, ...) */
    int tokens;       /* response tokens instead of the event mix */
} producer;

#define ROW 1024

static void mark(const char *what)
{
    ssize_t n = write(-1, what, strlen(what));
    (void)n;
}

/* One event of the mix; i selects which. */
static int emit_one(tt_client *c, uint64_t i)
{
    switch (i % 4) {
    case 0: {
        if (i % 8 == 4) {
            return TT_LOG(c, "session-1", TT_INFO, "example", TT_LOG_INT("i", (int64_t)i),
                          TT_LOG_STR("tool", "search"), TT_LOG_DOUBLE("score", (double)i * 0.5));
        }
        tt_attr a[3] = {TT_INT("i", (int64_t)i), TT_STR("tool", "search"),
                        TT_DOUBLE("score", (double)i * 0.5)};
        return tt_log(c, "session-1", TT_INFO, "example", a, 3);
    }
    case 1:
        return tt_metric(c, "session-1", TT_GAUGE, "queue_depth", (double)(i & 1023), "1", NULL, 0);
    default: {
        /* A step is two events: begin (i % 4 == 2) and end (i % 4 == 3); every other one is
         * begun with a traceparent (the trace context's parse and copy are on the hot path). */
        static __thread tt_step step;
        if (i % 8 == 2) {
            return tt_step_begin_ctx(c, &step, NULL,
                                     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                                     TT_STEP_TOOL, "session-1", "search", "q=x");
        }
        if (i % 4 == 2) {
            return tt_step_begin(c, &step, NULL, TT_STEP_TOOL, "session-1", "search", "q=x");
        }
        return tt_step_end(c, &step, TT_STATUS_OK, 128, NULL);
    }
    }
}

static void *producer_main(void *arg)
{
    producer *p = arg;
    /* The thread's first event creates its ring, outside the measured loop. */
    tt_log(p->c, NULL, TT_DEBUG, "producer start", NULL, 0);
    emit_one(p->c, 4); /* and registers the TT_LOG site (its first call allocates) */
    tt_response *r = NULL;
    static __thread float row[ROW];
    if (p->tokens && tt_response_begin(p->c, &r, "session-1", "model", NULL, 0) != 0) {
        return NULL;
    }
    for (int i = 0; i < ROW; i++) {
        row[i] = (float)((i * 7919) % 1000) / 100.0f;
    }
    mark(MARK_BEGIN);
    uint64_t refused = 0;
    for (uint64_t i = 0; i < p->events; i++) {
        if (r && p->tokens == 2) {
            tt_response *batch[3] = {r, NULL, r};
            int32_t chosen[3] = {(int32_t)((i * 31) % ROW), 0, (int32_t)((i * 17) % ROW)};
            tt_verdict v[3];
            row[i % ROW] += 0.5f;
            if (tt_response_token_batch(batch, 3, row, ROW, 1, 0, TT_DTYPE_F32, chosen, v, NULL) !=
                0) {
                refused++;
            }
        } else if (r) {
            tt_verdict v;
            row[i % ROW] += 0.5f;
            if (tt_response_token(r, row, ROW, 1, TT_DTYPE_F32, (int32_t)((i * 31) % ROW), &v,
                                  NULL) != 0) {
                refused++;
            }
        } else if (emit_one(p->c, i) != 0) {
            refused++;
        }
        if (p->inject_every && i % p->inject_every == p->inject_every - 1) {
            (void)getppid();
        }
    }
    mark(MARK_END);
    if (r) {
        tt_response_end(r, NULL);
    }
    p->refused = refused;
    return NULL;
}

static int atoi_safe(const char *s)
{
    return (int)strtol(s, NULL, 10);
}

static int usage(void)
{
    fprintf(stderr, "usage: hot_path_syscalls [--endpoint E] [--threads N] [--events TOTAL] "
                    "[--inject-syscall EVERY]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *endpoint = NULL;
    long threads = 4;
    uint64_t total = 10000000, inject = 0;
    int tokens = 0;
    for (int i = 1; i < argc; i += 2) {
        if (i + 1 >= argc) {
            return usage();
        }
        if (strcmp(argv[i], "--endpoint") == 0) {
            endpoint = argv[i + 1];
        } else if (strcmp(argv[i], "--threads") == 0) {
            threads = strtol(argv[i + 1], NULL, 10);
        } else if (strcmp(argv[i], "--events") == 0) {
            total = strtoull(argv[i + 1], NULL, 10);
        } else if (strcmp(argv[i], "--tokens") == 0) {
            tokens = atoi_safe(argv[i + 1]);
        } else if (strcmp(argv[i], "--inject-syscall") == 0) {
            inject = strtoull(argv[i + 1], NULL, 10);
        } else {
            return usage();
        }
    }
    if (threads < 1 || threads > 64) {
        return usage();
    }
    tt_config *cfg = NULL;
    tt_client *c = NULL;
    int rc = tt_config_new(&cfg);
    if (rc == 0) {
        rc = tt_config_set(cfg, "agent", "hot-path-syscalls");
    }
    if (rc == 0 && endpoint) {
        rc = tt_config_set(cfg, "endpoint", endpoint);
    }
    if (rc == 0 && tokens) {
        rc = tt_config_set(cfg, "guard.token_min_prob", "0.01");
    }
    if (rc == 0 && tokens) {
        rc = tt_config_set(cfg, "guard.action", "flag");
    }
    if (rc == 0) {
        rc = tt_open(&c, cfg);
    }
    tt_config_free(cfg);
    if (rc != 0) {
        fprintf(stderr, "hot_path_syscalls: %s\n", tt_strerror(rc));
        return 1;
    }
    producer p[64];
    pthread_t tid[64];
    for (long i = 0; i < threads; i++) {
        p[i] = (producer){c, total / (uint64_t)threads + (i < (long)(total % (uint64_t)threads)),
                          inject, 0, tokens};
        if (pthread_create(&tid[i], NULL, producer_main, &p[i]) != 0) {
            fprintf(stderr, "hot_path_syscalls: pthread_create failed\n");
            return 1;
        }
    }
    uint64_t loop_events = 0, refused = 0;
    for (long i = 0; i < threads; i++) {
        pthread_join(tid[i], NULL);
        loop_events += p[i].events;
        refused += p[i].refused;
    }
    tt_stats s;
    tt_stats_get(c, &s, sizeof s);
    printf("{\"threads\":%ld,\"loop_events\":%" PRIu64 ",\"refused\":%" PRIu64
           ",\"emitted\":%" PRIu64 ",\"dropped\":%" PRIu64 ",\"dropped_buffer_full\":%" PRIu64
           ",\"connected\":%" PRIu64 "}\n",
           threads, loop_events, refused, s.emitted, s.dropped_total,
           s.dropped[TT_DROP_BUFFER_FULL], s.connected);
    fflush(stdout);
    tt_close(c, 1000);
    return 0;
}
