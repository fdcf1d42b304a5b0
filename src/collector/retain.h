/*
 * retain.h - retention in `telltale serve` (--retain, --max-bytes): a thread that asks the store
 * to prune (store.h's store_retention_run) every interval, and what it did for the API
 * (/api/v1/status's "retention" section, the "pruned_through_ns" of event queries).
 * One per process, like the counters of collector.h.
 */
#ifndef TT_COLLECTOR_RETAIN_H
#define TT_COLLECTOR_RETAIN_H

#include <stdint.h>

#include "common/json.h"

struct store;

struct retain_opts {
    int64_t max_age_ns; /* --retain; 0: no age limit */
    uint64_t max_bytes; /* --max-bytes; 0: no size limit */
    double keep_factor; /* --retain-keep-factor: kept classes live this many times longer */
    double keep_below_confidence; /* --retain-confidence */
    uint64_t interval_ms;         /* between passes */
};

#define RETAIN_DEFAULT_KEEP_FACTOR 4.0
#define RETAIN_DEFAULT_CONFIDENCE 0.5

/* Run a first pass (or, without limits, read what earlier runs pruned), then start the thread
 * when there is a limit. 0, or negative when the store cannot (the collector then refuses to
 * start with limits, and runs without the report when there are none). */
int retain_start(struct store *s, const struct retain_opts *o);

/* Stop the thread (before the store closes). */
void retain_stop(void);

/* The "retention" object of /api/v1/status (key included). */
void retain_status_json(tt__json *j);

/* Every event removed by retention is at or before this time (Unix ns); 0 when none was. */
int64_t retain_pruned_through(void);

/* The clock retention measures age with: the wall clock, but never ahead of the monotonic
 * time elapsed since the previous reading by more than RETAIN_CLOCK_SLACK_NS. A collector clock
 * stepped forward (+1 h, +10 y) therefore purges nothing fresh; stepped back, it keeps more for
 * the time of the step. *jumped is set when the wall clock was not followed. */
#define RETAIN_CLOCK_SLACK_NS (1000ll * 1000 * 1000)
struct retain_clock {
    int set;
    int64_t last;  /* the last time given */
    uint64_t mono; /* the monotonic clock then */
};
int64_t retain_clock_now(struct retain_clock *c, int64_t wall_ns, uint64_t mono_ns, int *jumped);

/* Parsers for the options: "90s", "15m", "2h", "7d", "500ms" (a number alone is seconds);
 * "64M", "1G", "512K", bytes alone. 0 or -1. */
int retain_parse_duration(const char *s, int64_t *ns);
int retain_parse_size(const char *s, uint64_t *bytes);

#endif
