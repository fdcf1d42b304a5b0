/*
 * query.h - reading stored events back: a filter, an iterator over matching events in storage
 * order (frame by frame), with a cursor to resume from, and counting.
 */
#ifndef TT_COLLECTOR_QUERY_H
#define TT_COLLECTOR_QUERY_H

#include <stddef.h>
#include <stdint.h>

#include "common/batch.h"

struct query_filter {
    char agent[256];       /* empty: all */
    char session[256];     /* empty: all */
    uint32_t kinds;        /* 0: all */
    uint32_t min_severity; /* logs below are left out */
    int64_t since;         /* Unix ns, inclusive */
    int64_t until;         /* Unix ns, inclusive */
    int64_t after_frame;   /* cursor: resume after event after_index of this frame */
    uint32_t after_index;
    uint8_t instance[16];
    int has_instance;
};

void query_filter_init(struct query_filter *f);

/* Parse a cursor "FRAME.INDEX" into f. Returns 0 or -1. */
int query_cursor_parse(struct query_filter *f, const char *s);

struct query;

int query_open(struct query **out, const char *db_path, const struct query_filter *f, char *err,
               size_t errlen);

/* The next matching event: 1, 0 at the end, -1 on a storage error. agent and instance point
 * into the query and stay valid until the next call. */
int query_next(struct query *q, tt__event *ev, const char **agent, const uint8_t **instance);

/* The cursor after the last event returned, "FRAME.INDEX". */
void query_cursor(const struct query *q, char *out, size_t n);

void query_close(struct query *q);

/* Count matching events; -1 on error. */
int64_t query_count(const char *db_path, const struct query_filter *f, char *err, size_t errlen);

#endif
