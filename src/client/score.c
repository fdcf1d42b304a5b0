/*
 * score.c - tt_score: a named score of one response (a provider's confidence, an evaluator's or
 * judge's score, a reward), sent as a Metric event of kind TT_SCORE whose first attribute,
 * response_id, is the response's id in 16 hex digits (as /api/v1/responses/{id} names it; "" for
 * none), so that it takes the metric's hot path and older collectors store it as a metric.
 */
#include <stdio.h>
#include <string.h>

#include "telltale.h"

#define SCORE_ATTRS_MAX 63 /* the metric's 64, less the response_id */

TT_API int tt_score(tt_client *c, const char *session, uint64_t response_id, const char *name,
                    double value, const tt_attr *attrs, size_t nattrs)
{
    if (!c || !name || nattrs > SCORE_ATTRS_MAX || (nattrs && !attrs)) {
        return TT_EINVAL;
    }
    tt_attr all[SCORE_ATTRS_MAX + 1];
    char hex[17] = "";
    if (response_id) {
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)response_id);
    }
    all[0] = TT_STR("response_id", hex);
    if (nattrs) {
        memcpy(all + 1, attrs, nattrs * sizeof *attrs);
    }
    return tt_metric(c, session, TT_SCORE, name, value, NULL, all, nattrs + 1);
}
