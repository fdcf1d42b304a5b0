/*
 * wire_agent.c - an agent that speaks the wire protocol by hand, for tests that run it as
 * another user (setpriv) against a real collector: it connects, says hello under any agent name
 * and instance id, sends batches with chosen sequence numbers and prints what came back.
 *
 *   wire_agent ENDPOINT AGENT INSTANCE(32 hex) FIRST_SEQ BATCHES EVENTS [TOKEN]
 *
 * The ingest token, when needed, comes from $TT_WIRE_TOKEN (never the command line).
 * Output, one line each: "connect failed: ERR", "hello refused: ERR", "hello ok AGENT",
 * "ack N", "reject N: REASON", "closed". Every event is a log record whose message is "poison";
 * with $TT_WIRE_STEPS set, a StepBegin as a client before 0.5 sent it (step id = its sequence
 * number, kind tool, name "old", session "old-client", no trace context).
 * Exit status 0 when the exchange ran to its end (whatever the collector decided), 1 otherwise.
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/pb.h"
#include "common/wire.h"

static int connect_to(const tt__endpoint *ep)
{
    if (ep->is_unix) {
        struct sockaddr_un un = {.sun_family = AF_UNIX};
        snprintf(un.sun_path, sizeof un.sun_path, "%s", ep->path);
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&un, sizeof un) != 0) {
            close(fd);
            return -1;
        }
        return fd;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(ep->host, ep->port, &hints, &res) != 0) {
        errno = EHOSTUNREACH;
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

static int send_all(int fd, const tt__buf *b)
{
    size_t off = 0;
    while (off < b->len) {
        ssize_t n = send(fd, b->data + off, b->len - off, MSG_NOSIGNAL);
        if (n <= 0) {
            return -1;
        }
        off += (size_t)n;
    }
    return 0;
}

/* The next frame from fd into f (payload in rb); -1 when the connection ended. */
static int read_frame(int fd, tt__buf *rb, size_t *used, tt__frame *f)
{
    if (*used) {
        memmove(rb->data, rb->data + *used, rb->len - *used);
        rb->len -= *used;
        *used = 0;
    }
    for (;;) {
        size_t need;
        int pr = tt__frame_parse(rb->data, rb->len, 1u << 20, f, &need);
        if (pr == TT_FRAME_OK) {
            *used = f->frame_len;
            return 0;
        }
        if (pr != TT_FRAME_NEED_MORE || tt__buf_reserve(rb, 65536) != 0) {
            return -1;
        }
        ssize_t n = recv(fd, rb->data + rb->len, rb->cap - rb->len, 0);
        if (n <= 0) {
            return -1;
        }
        rb->len += (size_t)n;
    }
}

static void batch_payload(tt__buf *out, const uint8_t inst[16], uint64_t first_seq, int n)
{
    uint8_t log[32], ev[64], head[64], *p;
    p = tt__pb_put_uint(log, 1, 9); /* Log.severity: info */
    p = tt__pb_put_bytes(p, 2, "poison", 6);
    size_t ln = (size_t)(p - log);
    p = tt__pb_put_sint(ev, 1, 0); /* Event.time_delta */
    p = tt__pb_put_bytes(p, 3, log, ln);
    size_t en = (size_t)(p - ev);
    p = tt__pb_put_bytes(head, 1, inst, 16); /* Batch.instance, first_seq, base time */
    p = tt__pb_put_uint(p, 2, first_seq);
    p = tt__pb_put_fixed64(p, 3, 1700000000000000000ull);
    tt__buf_reset(out);
    tt__buf_append(out, head, (size_t)(p - head));
    int steps = getenv("TT_WIRE_STEPS") != NULL;
    for (int i = 0; i < n; i++) {
        uint8_t one[128], sb[64];
        if (steps) { /* StepBegin { step_id 1, kind 3, name 4 }, Event.session 2, body 5 */
            uint8_t *b = tt__pb_put_fixed64(sb, 1, first_seq + (uint64_t)i);
            b = tt__pb_put_uint(b, 3, 2);
            b = tt__pb_put_bytes(b, 4, "old", 3);
            p = tt__pb_put_sint(ev, 1, 0);
            p = tt__pb_put_bytes(p, 2, "old-client", 10);
            p = tt__pb_put_bytes(p, 5, sb, (size_t)(b - sb));
            en = (size_t)(p - ev);
        }
        uint8_t *q = tt__pb_put_bytes(one, 4, ev, en); /* Batch.events */
        tt__buf_append(out, one, (size_t)(q - one));
    }
}

static int parse_hex16(const char *s, uint8_t out[16])
{
    if (strlen(s) != 32) {
        return -1;
    }
    for (int i = 0; i < 16; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1) {
            return -1;
        }
        out[i] = (uint8_t)v;
    }
    return 0;
}

/* Send the hello and print the verdict: 0 accepted, 1 refused or cut. */
static int hello(int fd, const char *agent, const uint8_t inst[16], tt__buf *rb, size_t *used)
{
    tt__hello h;
    memset(&h, 0, sizeof h);
    h.protocol = TT_PROTOCOL_VERSION;
    memcpy(h.instance, inst, 16);
    snprintf(h.agent, sizeof h.agent, "%s", agent);
    const char *tok = getenv("TT_WIRE_TOKEN");
    snprintf(h.token, sizeof h.token, "%s", tok ? tok : "");
    h.pid = (uint32_t)getpid();
    snprintf(h.host, sizeof h.host, "wire-agent");
    snprintf(h.library, sizeof h.library, "wire-agent");
    tt__buf p, fr;
    tt__buf_init(&p, 4096);
    tt__buf_init(&fr, 8192);
    tt__hello_encode(&h, &p);
    tt__frame_append(&fr, TT_FT_HELLO, p.data, p.len);
    int rc = send_all(fd, &fr);
    tt__buf_fini(&p);
    tt__buf_fini(&fr);
    tt__frame f;
    tt__hello_reply r;
    if (rc != 0 || read_frame(fd, rb, used, &f) != 0 || f.type != TT_FT_HELLO_REPLY ||
        tt__hello_reply_decode(f.payload, f.payload_len, &r) != 0) {
        printf("hello refused: connection closed\n");
        return 1;
    }
    if (r.error[0]) {
        printf("hello refused: %s\n", r.error);
        return 1;
    }
    printf("hello ok %s\n", r.agent);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: wire_agent ENDPOINT AGENT INSTANCE FIRST_SEQ BATCHES EVENTS\n");
        return 2;
    }
    tt__endpoint ep;
    char err[256];
    uint8_t inst[16];
    if (tt__endpoint_parse(argv[1], &ep, err, sizeof err) != 0 || parse_hex16(argv[3], inst)) {
        fprintf(stderr, "wire_agent: bad endpoint or instance\n");
        return 2;
    }
    uint64_t seq = strtoull(argv[4], NULL, 10);
    int batches = atoi(argv[5]), events = atoi(argv[6]);
    setvbuf(stdout, NULL, _IOLBF, 0);
    int fd = connect_to(&ep);
    if (fd < 0) {
        printf("connect failed: %s\n", strerror(errno));
        return 0;
    }
    tt__buf rb, p, fr;
    tt__buf_init(&rb, 1u << 21);
    tt__buf_init(&p, 1u << 20);
    tt__buf_init(&fr, 1u << 21);
    size_t used = 0;
    int rc = 0;
    if (hello(fd, argv[2], inst, &rb, &used) == 0) {
        for (int b = 0; b < batches && rc == 0; b++, seq += (uint64_t)events) {
            batch_payload(&p, inst, seq, events);
            tt__buf_reset(&fr);
            tt__frame_append(&fr, TT_FT_BATCH, p.data, p.len);
            tt__frame f;
            int got = send_all(fd, &fr) == 0 ? read_frame(fd, &rb, &used, &f) : -1;
            while (got == 0 && f.type == TT_FT_CONTROL) {
                got = read_frame(fd, &rb, &used, &f); /* orders are not answers */
            }
            if (got != 0) {
                printf("closed\n");
                rc = 1;
            } else if (f.type == TT_FT_ACK) {
                uint64_t no = 0;
                tt__ack_decode(f.payload, f.payload_len, &no);
                printf("ack %llu\n", (unsigned long long)no);
            } else if (f.type == TT_FT_REJECT) {
                tt__reject rj;
                memset(&rj, 0, sizeof rj);
                tt__reject_decode(f.payload, f.payload_len, &rj);
                printf("reject %llu: %s\n", (unsigned long long)rj.frame_no, rj.reason);
            }
        }
    }
    close(fd);
    tt__buf_fini(&rb);
    tt__buf_fini(&p);
    tt__buf_fini(&fr);
    return rc;
}
