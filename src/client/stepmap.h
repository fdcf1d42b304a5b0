/*
 * stepmap.h - the worker's table of open steps: what a step's begin said (session, name, kind),
 * kept until its end is encoded, so that the StepEnd event carries them too and every reader
 * (queries by session, tail, the live stream) shows a step's status, latency and error with its
 * session and name, whatever thread ended it. Worker thread only; bounded (TT_STEPMAP_MAX open
 * steps, strings of at most TT_STEPMAP_STR bytes): a step beyond the bound ends without them.
 */
#ifndef TT_CLIENT_STEPMAP_H
#define TT_CLIENT_STEPMAP_H

#include <stddef.h>
#include <stdint.h>

#define TT_STEPMAP_MAX 16384u
#define TT_STEPMAP_STR 255u

typedef struct tt__stepmap tt__stepmap;

typedef struct tt__step_info {
    struct tt__step_info *next;
    uint64_t id;
    uint32_t kind;
    uint32_t session_len, name_len;
    uint8_t trace[16]; /* the step's W3C trace id (trace.h) */
    uint8_t data[];    /* session, then name */
} tt__step_info;

/* A table, or NULL when memory is short (steps then end without their begin's fields). */
tt__stepmap *tt__stepmap_new(void);
void tt__stepmap_free(tt__stepmap *m);
/* Remember step id's begin; nothing when the table is full, a string too long or memory short. */
void tt__stepmap_put(tt__stepmap *m, uint64_t id, uint32_t kind, const uint8_t *session,
                     uint32_t session_len, const uint8_t *name, uint32_t name_len,
                     const uint8_t trace[16]);
/* Step id's entry, left in the table (NULL if unknown). */
const tt__step_info *tt__stepmap_get(const tt__stepmap *m, uint64_t id);
/* Take step id's entry out of the table (NULL if unknown); free it with tt__step_info_free. */
tt__step_info *tt__stepmap_take(tt__stepmap *m, uint64_t id);
void tt__step_info_free(tt__step_info *s);

#endif
