/*
 * faultproxy.c - the fault proxy of faultproxy.h.
 */
#include "faultproxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

struct tt_fault_proxy {
    int lfd;
    struct sockaddr_in up;
    char endpoint[64];
    pthread_t accept_th;
    _Atomic int stop;
    _Atomic uint32_t latency_ms;
    _Atomic uint64_t rate;
    _Atomic int blackhole;
    _Atomic uint64_t reset_gen;
    _Atomic uint64_t accepted;
    _Atomic uint64_t bytes_up;
    _Atomic int live; /* connection threads running */
};

struct pconn {
    struct tt_fault_proxy *p;
    int fd[2]; /* 0: the agent's side, 1: the collector's side */
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void rst_close(int fd)
{
    struct linger l = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close(fd);
}

/* Sleep ms in small steps; returns 1 if a reset or stop came meanwhile. */
static int wait_ms(struct tt_fault_proxy *p, double ms, uint64_t gen)
{
    double until = now_ms() + ms;
    while (now_ms() < until) {
        if (atomic_load(&p->stop) || atomic_load(&p->reset_gen) != gen) {
            return 1;
        }
        usleep(2000);
    }
    return 0;
}

static int write_all(int fd, const uint8_t *b, size_t n)
{
    while (n) {
        ssize_t k = send(fd, b, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            return -1;
        }
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Pass one chunk from side `from` on, as the settings say. 0 to go on, -1 to end. */
static int pass(struct pconn *c, int from, uint64_t gen, uint8_t *buf, size_t cap, int *eof)
{
    struct tt_fault_proxy *p = c->p;
    uint64_t rate = atomic_load(&p->rate);
    size_t want = cap;
    if (rate && rate / 20 < want) {
        want = rate / 20 ? rate / 20 : 1; /* chunks of 50 ms at the cap */
    }
    ssize_t k = recv(c->fd[from], buf, want, 0);
    if (k == 0 || (k < 0 && errno != EINTR && errno != EAGAIN)) {
        shutdown(c->fd[!from], SHUT_WR);
        eof[from] = 1;
        return eof[!from] ? -1 : 0;
    }
    if (k < 0 || atomic_load(&p->blackhole)) {
        return 0; /* a black hole takes the bytes and says nothing */
    }
    uint32_t lat = atomic_load(&p->latency_ms);
    if (lat && wait_ms(p, lat, gen)) {
        return -1;
    }
    if (write_all(c->fd[!from], buf, (size_t)k) != 0) {
        return -1;
    }
    if (from == 0) {
        atomic_fetch_add(&p->bytes_up, (uint64_t)k);
    }
    if (rate && wait_ms(p, (double)k * 1000.0 / (double)rate, gen)) {
        return -1;
    }
    return 0;
}

static void *conn_main(void *arg)
{
    struct pconn *c = arg;
    struct tt_fault_proxy *p = c->p;
    uint64_t gen = atomic_load(&p->reset_gen);
    uint8_t *buf = malloc(65536);
    int eof[2] = {0, 0};
    while (buf && !atomic_load(&p->stop) && atomic_load(&p->reset_gen) == gen) {
        struct pollfd pf[2] = {{c->fd[0], eof[0] ? 0 : POLLIN, 0},
                               {c->fd[1], eof[1] ? 0 : POLLIN, 0}};
        if (poll(pf, 2, 20) <= 0) {
            continue;
        }
        int end = 0;
        for (int i = 0; i < 2 && !end; i++) {
            if (pf[i].revents & (POLLIN | POLLHUP | POLLERR)) {
                end = pass(c, i, gen, buf, 65536, eof) != 0;
            }
        }
        if (end) {
            break;
        }
    }
    rst_close(c->fd[0]);
    rst_close(c->fd[1]);
    free(buf);
    free(c);
    atomic_fetch_sub(&p->live, 1);
    return NULL;
}

static void *accept_main(void *arg)
{
    struct tt_fault_proxy *p = arg;
    while (!atomic_load(&p->stop)) {
        struct pollfd pf = {p->lfd, POLLIN, 0};
        if (poll(&pf, 1, 50) <= 0) {
            continue;
        }
        int a = accept4(p->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (a < 0) {
            continue;
        }
        int u = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (u < 0 || connect(u, (struct sockaddr *)&p->up, sizeof p->up) != 0) {
            if (u >= 0) {
                close(u);
            }
            rst_close(a); /* the collector is down: so is the link */
            continue;
        }
        int one = 1;
        setsockopt(a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(u, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct pconn *c = malloc(sizeof *c);
        pthread_t th;
        atomic_fetch_add(&p->live, 1);
        if (!c) {
            atomic_fetch_sub(&p->live, 1);
            close(a);
            close(u);
            continue;
        }
        c->p = p;
        c->fd[0] = a;
        c->fd[1] = u;
        if (pthread_create(&th, NULL, conn_main, c) != 0) {
            atomic_fetch_sub(&p->live, 1);
            close(a);
            close(u);
            free(c);
            continue;
        }
        pthread_detach(th);
        atomic_fetch_add(&p->accepted, 1);
    }
    return NULL;
}

struct tt_fault_proxy *tt_fault_proxy_start(const char *upstream)
{
    struct tt_fault_proxy *p = calloc(1, sizeof *p);
    CHECK(p);
    const char *colon = strrchr(upstream, ':');
    CHECK(colon);
    p->up.sin_family = AF_INET;
    p->up.sin_port = htons((uint16_t)atoi(colon + 1));
    p->up.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(p->lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    CHECK(bind(p->lfd, (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(listen(p->lfd, 128) == 0);
    CHECK(getsockname(p->lfd, (struct sockaddr *)&a, &len) == 0);
    snprintf(p->endpoint, sizeof p->endpoint, "tcp://127.0.0.1:%d", ntohs(a.sin_port));
    CHECK(pthread_create(&p->accept_th, NULL, accept_main, p) == 0);
    return p;
}

const char *tt_fault_proxy_endpoint(const struct tt_fault_proxy *p)
{
    return p->endpoint;
}

void tt_fault_proxy_latency(struct tt_fault_proxy *p, uint32_t ms)
{
    atomic_store(&p->latency_ms, ms);
}

void tt_fault_proxy_rate(struct tt_fault_proxy *p, uint64_t bytes_per_s)
{
    atomic_store(&p->rate, bytes_per_s);
}

void tt_fault_proxy_blackhole(struct tt_fault_proxy *p, int on)
{
    atomic_store(&p->blackhole, on);
}

void tt_fault_proxy_reset(struct tt_fault_proxy *p)
{
    atomic_fetch_add(&p->reset_gen, 1);
}

uint64_t tt_fault_proxy_accepted(struct tt_fault_proxy *p)
{
    return atomic_load(&p->accepted);
}

uint64_t tt_fault_proxy_bytes_up(struct tt_fault_proxy *p)
{
    return atomic_load(&p->bytes_up);
}

void tt_fault_proxy_stop(struct tt_fault_proxy *p)
{
    if (!p) {
        return;
    }
    atomic_store(&p->stop, 1);
    pthread_join(p->accept_th, NULL);
    close(p->lfd);
    for (int i = 0; i < 1000 && atomic_load(&p->live) > 0; i++) {
        usleep(10000);
    }
    CHECK_EQ(atomic_load(&p->live), 0);
    free(p);
}
