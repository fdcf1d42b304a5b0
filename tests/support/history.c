/*
 * history.c - events with chosen timestamps for a real collector (history.h). Field numbers
 * from proto/telltale.proto.
 */
#include "history.h"

#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/pb.h"
#include "common/wire.h"
#include "serve.h"
#include "test.h"

#define PER_FRAME 1000

static int connect_unix(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    CHECK_MSG(connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "connect %s", path);
    return fd;
}

static void send_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        CHECK(w > 0);
        p += w;
        n -= (size_t)w;
    }
}

/* One Event with body field `field` (a message of len bytes) at delta from the base. */
static void put_event(tt__buf *b, int64_t delta, const char *session, uint32_t field,
                      const uint8_t *body, size_t len)
{
    uint8_t ev[512], one[600], *p;
    CHECK(len < 400);
    p = tt__pb_put_sint(ev, 1, delta);
    p = tt__pb_put_bytes(p, 2, session, strlen(session));
    p = tt__pb_put_bytes(p, field, body, len);
    uint8_t *q = tt__pb_put_bytes(one, 4, ev, (size_t)(p - ev)); /* Batch.events */
    CHECK_OK(tt__buf_append(b, one, (size_t)(q - one)));
}

static void grow(double **v, uint64_t n)
{
    if ((n & (n - 1)) == 0) {
        *v = realloc(*v, (size_t)(n ? n * 2 : 1) * sizeof **v);
        CHECK(*v);
    }
}

/* Read frames until an Ack of frame_no arrives (acks are cumulative). */
static void wait_ack(int fd, uint64_t frame_no, double timeout_ms, uint8_t *in, size_t cap,
                     size_t *have)
{
    double end = tt_test_now_ms() + timeout_ms;
    for (;;) {
        tt__frame f;
        size_t need;
        int rc = tt__frame_parse(in, *have, TT_FRAME_DEFAULT_MAX, &f, &need);
        if (rc == TT_FRAME_OK) {
            uint64_t acked = 0;
            if (f.type == TT_FT_ACK) {
                CHECK_OK(tt__ack_decode(f.payload, f.payload_len, &acked));
            }
            CHECK_MSG(f.type != TT_FT_REJECT, "the collector rejected a history frame");
            memmove(in, in + f.frame_len, *have - f.frame_len);
            *have -= f.frame_len;
            if (f.type == TT_FT_ACK && acked >= frame_no) {
                return;
            }
            continue;
        }
        CHECK_EQ(rc, TT_FRAME_NEED_MORE);
        double left = end - tt_test_now_ms();
        CHECK_MSG(left > 0, "no acknowledgement of frame %llu", (unsigned long long)frame_no);
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, (int)left) == 1) {
            CHECK(*have < cap);
            ssize_t r = read(fd, in + *have, cap - *have);
            CHECK_MSG(r > 0, "the collector closed the history connection");
            *have += (size_t)r;
        }
    }
}

void tt_test_feed_history(const char *sock, const char *agent, int n, int64_t start_ns,
                          int64_t span_ns, double timeout_ms, struct tt_test_history *out)
{
    memset(out, 0, sizeof *out);
    out->start_ns = start_ns;
    out->span_ns = span_ns;
    int fd = connect_unix(sock);
    tt__hello h;
    memset(&h, 0, sizeof h);
    h.protocol = TT_PROTOCOL_VERSION;
    uint64_t ah = 1469598103934665603ull; /* the agent's name in the instance too */
    for (const char *c = agent; *c; c++) {
        ah = (ah ^ (uint8_t)*c) * 1099511628211ull;
    }
    for (int i = 0; i < 16; i++) {
        h.instance[i] = (uint8_t)(0xa0 + i) ^ (uint8_t)(start_ns >> (i % 8 * 8)) ^
                        (uint8_t)(i < 8 ? ah >> (i * 8) : 0);
    }
    snprintf(h.agent, sizeof h.agent, "%s", agent);
    snprintf(h.library, sizeof h.library, "test-history");
    h.pid = (uint32_t)getpid();
    h.start_unix_ns = (uint64_t)start_ns;
    tt__buf payload, frame;
    tt__buf_init(&payload, 1 << 24);
    tt__buf_init(&frame, 1 << 24);
    CHECK_OK(tt__hello_encode(&h, &payload));
    CHECK_OK(tt__frame_append(&frame, TT_FT_HELLO, payload.data, payload.len));
    send_all(fd, frame.data, frame.len);
    static uint8_t in[1 << 16];
    size_t have = 0;
    uint64_t frames = 0, step_id = 0, response_id = 0;
    for (int i0 = 0; i0 < n; i0 += PER_FRAME) {
        int64_t base = start_ns + (int64_t)((double)span_ns * i0 / n);
        uint8_t head[64], *p = tt__pb_put_bytes(head, 1, h.instance, 16);
        p = tt__pb_put_uint(p, 2, (uint64_t)i0 + 1);
        p = tt__pb_put_fixed64(p, 3, (uint64_t)base);
        tt__buf_reset(&payload);
        CHECK_OK(tt__buf_append(&payload, head, (size_t)(p - head)));
        for (int i = i0; i < n && i < i0 + PER_FRAME; i++) {
            int64_t t = start_ns + (int64_t)((double)span_ns * i / n);
            char session[32];
            snprintf(session, sizeof session, "hist-%d", i / 1000);
            uint8_t body[256];
            int slot = i % 10;
            if (slot == 7) { /* a tool step begins */
                step_id++;
                p = tt__pb_put_fixed64(body, 1, step_id);
                p = tt__pb_put_uint(p, 3, 2); /* kind: tool */
                const char *name = step_id % 2 ? "search" : "fetch";
                p = tt__pb_put_bytes(p, 4, name, strlen(name));
                put_event(&payload, t - base, session, 5, body, (size_t)(p - body));
            } else if (slot == 8) { /* and ends */
                int err = step_id % 7 == 0;
                uint64_t dur = (1 + (step_id * 37) % 200) * 1000000ull;
                p = tt__pb_put_fixed64(body, 1, step_id);
                p = tt__pb_put_uint(p, 2, err ? 1 : 0);
                p = tt__pb_put_uint(p, 3, dur);
                put_event(&payload, t - base, session, 6, body, (size_t)(p - body));
                out->tool_calls++;
                out->tool_errors += (uint64_t)err;
                grow(&out->tool_ms, out->tool_calls - 1);
                out->tool_ms[out->tool_calls - 1] = (double)dur / 1e6;
            } else if (slot == 9) { /* a response ends */
                response_id++;
                double c = 0.001 + 0.9 * (double)((response_id * 7919) % 1000) / 1000.0;
                int flagged = response_id % 11 == 0;
                p = tt__pb_put_fixed64(body, 1, response_id);
                p = tt__pb_put_uint(p, 2, 20);
                p = tt__pb_put_float(p, 3, (float)log(c));
                p = tt__pb_put_uint(p, 9, flagged ? 1 : 0);
                put_event(&payload, t - base, session, 9, body, (size_t)(p - body));
                grow(&out->confidence, out->responses);
                /* the confidence as the collector computes it, from the float sent */
                out->confidence[out->responses++] = exp((double)(float)log(c));
                out->flagged += (uint64_t)flagged;
                out->tokens += 20;
            } else {
                p = tt__pb_put_uint(body, 1, 9); /* Log: info, "history" */
                p = tt__pb_put_bytes(p, 2, "history", 7);
                put_event(&payload, t - base, session, 3, body, (size_t)(p - body));
                out->logs++;
            }
            out->events++;
        }
        tt__buf_reset(&frame);
        CHECK_OK(tt__frame_append(&frame, TT_FT_BATCH, payload.data, payload.len));
        send_all(fd, frame.data, frame.len);
        frames++;
        if (frames % 16 == 0) {
            wait_ack(fd, frames, timeout_ms, in, sizeof in, &have);
        }
    }
    wait_ack(fd, frames, timeout_ms, in, sizeof in, &have);
    close(fd);
    tt__buf_fini(&payload);
    tt__buf_fini(&frame);
}

void tt_test_history_free(struct tt_test_history *h)
{
    free(h->confidence);
    free(h->tool_ms);
    h->confidence = h->tool_ms = NULL;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double tt_test_quantile(double *v, uint64_t n, double q)
{
    if (n == 0) {
        return NAN;
    }
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    double want = ceil(q * (double)n);
    uint64_t rank = want < 1 ? 1 : (uint64_t)want;
    return v[rank - 1];
}
