/*
 * spool.c - placeholder until the disk spool lands (issue: reliable delivery). Opening a spool
 * fails with ENOTSUP, so a configured spool_dir is reported, never silently ignored.
 */
#include "client/spool.h"

#include <errno.h>

int tt__spool_open(struct tt_spool **out, const char *dir, uint64_t max_bytes, int policy,
                   const char *agent, const uint8_t instance[16])
{
    (void)dir; (void)max_bytes; (void)policy; (void)agent; (void)instance;
    *out = NULL;
    return -ENOTSUP;
}
void tt__spool_close(struct tt_spool *s) { (void)s; }
void tt__spool_bind(struct tt_spool *s, tt__wstats *ws) { (void)s; (void)ws; }
void tt__spool_after_fork(struct tt_spool *s, const uint8_t instance[16]) { (void)s; (void)instance; }
int tt__spool_append(struct tt_spool *s, const tt__frame_out *f) { (void)s; (void)f; return -ENOTSUP; }
int tt__spool_sync(struct tt_spool *s) { (void)s; return 0; }
tt__frame_out *tt__spool_next(struct tt_spool *s) { (void)s; return NULL; }
void tt__spool_ack(struct tt_spool *s, uint64_t id) { (void)s; (void)id; }
void tt__spool_rewind(struct tt_spool *s) { (void)s; }
uint64_t tt__spool_events(const struct tt_spool *s) { (void)s; return 0; }
uint64_t tt__spool_bytes(const struct tt_spool *s) { (void)s; return 0; }
