/*
 * detect.c - what the detectors share: finding one by name, applying a "key=value ..." list from
 * a configuration file, the heap-allocated convenience form, and the strict number parsers the
 * detectors' set() functions use. The algorithms live in cusum.c, page_hinkley.c and
 * adwin.c.
 */
#include "collector/alerting/detect.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const struct detect_ops *const all_detectors[] = {&detect_cusum, &detect_ph, &detect_adwin};

const struct detect_ops *detect_find(const char *name)
{
    if (!name) {
        return NULL;
    }
    for (size_t i = 0; i < sizeof all_detectors / sizeof all_detectors[0]; i++) {
        if (strcmp(all_detectors[i]->name, name) == 0) {
            return all_detectors[i];
        }
    }
    return NULL;
}

/* Keys and values are short; anything longer than this is a configuration mistake. */
#define DETECT_ITEM_MAX 128

static int is_separator(char c)
{
    return c == ' ' || c == ',' || c == '\t' || c == '\n';
}

/* Split one "key=value" item of length n and hand it to ops->set(). */
static int parse_item(const struct detect_ops *ops, union detect_params *p, const char *item,
                      size_t n)
{
    char buf[DETECT_ITEM_MAX];
    if (n >= sizeof buf) {
        return -EINVAL;
    }
    memcpy(buf, item, n);
    buf[n] = '\0';
    char *eq = strchr(buf, '=');
    if (!eq || eq == buf || eq[1] == '\0') {
        return -EINVAL;
    }
    *eq = '\0';
    return ops->set(p, buf, eq + 1);
}

int detect_parse(const struct detect_ops *ops, union detect_params *p, const char *spec)
{
    if (!ops || !p || !spec) {
        return -EINVAL;
    }
    const char *s = spec;
    while (*s) {
        while (*s && is_separator(*s)) {
            s++;
        }
        size_t n = 0;
        while (s[n] && !is_separator(s[n])) {
            n++;
        }
        if (n > 0) {
            int rc = parse_item(ops, p, s, n);
            if (rc) {
                return rc;
            }
        }
        s += n;
    }
    return ops->check(p);
}

int detect_new(struct detector **out, const struct detect_ops *ops, const union detect_params *p)
{
    *out = NULL;
    if (!ops || !p || ops->check(p)) {
        return -EINVAL;
    }
    struct detector *d = malloc(sizeof *d + ops->size(p));
    if (!d) {
        return -ENOMEM;
    }
    d->ops = ops;
    int rc = ops->init(d->state, p);
    if (rc) {
        free(d);
        return rc;
    }
    *out = d;
    return 0;
}

void detect_free(struct detector *d)
{
    free(d);
}

int detect_parse_double(const char *s, double *out)
{
    if (!s || !*s) {
        return -EINVAL;
    }
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    /* Infinities and NaN are refused here: "auto" is how a parameter asks to be estimated. */
    if (*end != '\0' || errno == ERANGE || !isfinite(v)) {
        return -EINVAL;
    }
    *out = v;
    return 0;
}

int detect_parse_u64(const char *s, uint64_t *out)
{
    /* strtoull accepts a sign and leading spaces; a count in a config file has neither. */
    if (!s || *s < '0' || *s > '9') {
        return -EINVAL;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != '\0' || errno == ERANGE) {
        return -EINVAL;
    }
    *out = (uint64_t)v;
    return 0;
}

int detect_parse_u32(const char *s, uint32_t *out)
{
    uint64_t v;
    if (detect_parse_u64(s, &v) || v > UINT32_MAX) {
        return -EINVAL;
    }
    *out = (uint32_t)v;
    return 0;
}

int detect_parse_mode(const char *s, enum detect_mode *out)
{
    static const struct {
        const char *name;
        enum detect_mode mode;
    } modes[] = {{"both", DETECT_BOTH}, {"up", DETECT_UP}, {"down", DETECT_DOWN}};
    for (size_t i = 0; s && i < sizeof modes / sizeof modes[0]; i++) {
        if (strcmp(s, modes[i].name) == 0) {
            *out = modes[i].mode;
            return 0;
        }
    }
    return -EINVAL;
}
