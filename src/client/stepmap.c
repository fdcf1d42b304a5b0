/*
 * stepmap.c - the worker's table of open steps (stepmap.h): a fixed array of buckets chained
 * through heap entries, one entry per open step, owned by the worker thread alone.
 */
#include "client/stepmap.h"

#include <stdlib.h>
#include <string.h>

#define BUCKETS 4096u

struct tt__stepmap {
    tt__step_info *bucket[BUCKETS];
    uint32_t n;
};

static uint32_t slot(uint64_t id)
{
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdull;
    id ^= id >> 33;
    return (uint32_t)(id & (BUCKETS - 1));
}

tt__stepmap *tt__stepmap_new(void)
{
    return calloc(1, sizeof(tt__stepmap));
}

void tt__stepmap_free(tt__stepmap *m)
{
    if (!m) {
        return;
    }
    for (uint32_t i = 0; i < BUCKETS; i++) {
        tt__step_info *s = m->bucket[i];
        while (s) {
            tt__step_info *next = s->next;
            free(s);
            s = next;
        }
    }
    free(m);
}

void tt__stepmap_put(tt__stepmap *m, uint64_t id, uint32_t kind, const uint8_t *session,
                     uint32_t session_len, const uint8_t *name, uint32_t name_len,
                     const uint8_t trace[16])
{
    if (!m || m->n >= TT_STEPMAP_MAX || session_len > TT_STEPMAP_STR || name_len > TT_STEPMAP_STR) {
        return;
    }
    tt__step_info *s = malloc(sizeof *s + session_len + name_len);
    if (!s) {
        return;
    }
    s->id = id;
    s->kind = kind;
    s->session_len = session_len;
    s->name_len = name_len;
    memcpy(s->trace, trace, 16);
    if (session_len) {
        memcpy(s->data, session, session_len);
    }
    if (name_len) {
        memcpy(s->data + session_len, name, name_len);
    }
    uint32_t b = slot(id);
    s->next = m->bucket[b];
    m->bucket[b] = s;
    m->n++;
}

const tt__step_info *tt__stepmap_get(const tt__stepmap *m, uint64_t id)
{
    if (!m) {
        return NULL;
    }
    for (const tt__step_info *s = m->bucket[slot(id)]; s; s = s->next) {
        if (s->id == id) {
            return s;
        }
    }
    return NULL;
}

tt__step_info *tt__stepmap_take(tt__stepmap *m, uint64_t id)
{
    if (!m) {
        return NULL;
    }
    for (tt__step_info **pp = &m->bucket[slot(id)]; *pp; pp = &(*pp)->next) {
        if ((*pp)->id == id) {
            tt__step_info *s = *pp;
            *pp = s->next;
            m->n--;
            return s;
        }
    }
    return NULL;
}

void tt__step_info_free(tt__step_info *s)
{
    free(s);
}
