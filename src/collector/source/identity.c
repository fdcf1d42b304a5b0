/*
 * identity.c - peers' credentials and the ingest policy (identity.h).
 *
 * A loopback TCP peer is a process on this machine: the kernel knows its socket, with the uid
 * that owns it, under the peer's address and port as the local end and ours as the remote end.
 * One sock_diag request over netlink finds it directly (what `ss` uses); /proc/net/tcp{,6},
 * which lists every socket, is read only if netlink cannot answer. That is how --ingest-open
 * still tells local users apart, so one user cannot claim the instances of another over TCP.
 */
#include "collector/source/identity.h"

#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <errno.h>
#include <grp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* The peer's supplementary groups as they were when it connected (a peer in more than 256
 * groups is judged by its primary group alone: the kernel refuses a short buffer). */
static void peer_groups(int fd, struct peer *p)
{
    gid_t all[256];
    socklen_t len = sizeof all;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, all, &len) != 0) {
        return;
    }
    int n = (int)(len / sizeof all[0]);
    p->n_groups = n < 32 ? n : 32;
    memcpy(p->groups, all, (size_t)p->n_groups * sizeof all[0]);
}

void peer_probe(int fd, struct peer *p)
{
    memset(p, 0, sizeof *p);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0 && ss.ss_family == AF_UNIX) {
        p->is_unix = 1;
        struct ucred cr;
        socklen_t cl = sizeof cr;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) == 0 && cl == sizeof cr) {
            p->has_cred = 1;
            p->uid = cr.uid;
            p->gid = cr.gid;
            p->pid = cr.pid;
            peer_groups(fd, p);
        }
    }
}

static int id_listed(const unsigned *ids, int n, unsigned id)
{
    for (int i = 0; i < n; i++) {
        if (ids[i] == id) {
            return 1;
        }
    }
    return 0;
}

int peer_unix_allowed(const struct collector_opts *o, const struct peer *p, char *err,
                      size_t errlen)
{
    if (!p->has_cred) {
        snprintf(err, errlen, "the peer's credentials are unknown (SO_PEERCRED failed)");
        return -1;
    }
    if (p->uid == geteuid() || id_listed(o->ingest_uids, o->n_ingest_uids, p->uid) ||
        id_listed(o->ingest_gids, o->n_ingest_gids, p->gid)) {
        return 0;
    }
    for (int i = 0; i < p->n_groups; i++) {
        if (id_listed(o->ingest_gids, o->n_ingest_gids, p->groups[i])) {
            return 0;
        }
    }
    snprintf(err, errlen,
             "uid %u (gid %u) may not ingest on this socket: only the collector's own user "
             "and --ingest-uids/--ingest-gids may",
             (unsigned)p->uid, (unsigned)p->gid);
    return -1;
}

/* The kernel's /proc/net/tcp spelling of an address and port: each 32-bit word of the address
 * as the hexadecimal of its value in memory, then the port in host order. */
static int proc_addr(const struct sockaddr_storage *ss, char *out, size_t n)
{
    uint32_t w[4];
    unsigned port;
    int words;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        memcpy(w, &a->sin_addr, 4);
        port = ntohs(a->sin_port);
        words = 1;
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        memcpy(w, &a->sin6_addr, 16);
        port = ntohs(a->sin6_port);
        words = 4;
    } else {
        return -1;
    }
    size_t off = 0;
    for (int i = 0; i < words; i++) {
        off += (size_t)snprintf(out + off, n - off, "%08X", w[i]);
    }
    snprintf(out + off, n - off, ":%04X", port);
    return 0;
}

static int is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss->ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a)) {
            return a->s6_addr[12] == 127;
        }
        return IN6_IS_ADDR_LOOPBACK(a);
    }
    return 0;
}

/* The uid owning the socket whose local end is peer and remote end is self, from the kernel's
 * table; -1 if not found. Lines: "sl local rem st queues tr retrnsmt uid ...". */
static long proc_owner(const char *table, const char *peer, const char *self)
{
    FILE *f = fopen(table, "re");
    if (!f) {
        return -1;
    }
    char line[512];
    long uid = -1;
    while (uid < 0 && fgets(line, sizeof line, f)) {
        char local[64], rem[64];
        unsigned long u;
        if (sscanf(line, " %*s %63s %63s %*s %*s %*s %*s %lu", local, rem, &u) == 3 &&
            strcmp(local, peer) == 0 && strcmp(rem, self) == 0) {
            uid = (long)u;
        }
    }
    fclose(f);
    return uid;
}

/* The uid owning the TCP socket whose local end is ps and remote end ls, asked of the kernel's
 * sock_diag by exact 4-tuple; -1 if it does not say. */
static long diag_owner(const struct sockaddr_storage *ps, const struct sockaddr_storage *ls)
{
    struct {
        struct nlmsghdr nlh;
        struct inet_diag_req_v2 r;
    } req;
    memset(&req, 0, sizeof req);
    req.nlh.nlmsg_len = sizeof req;
    req.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    req.nlh.nlmsg_flags = NLM_F_REQUEST;
    req.r.sdiag_family = (uint8_t)ps->ss_family;
    req.r.sdiag_protocol = IPPROTO_TCP;
    req.r.idiag_states = ~0u;
    req.r.id.idiag_cookie[0] = req.r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
    if (ps->ss_family == AF_INET) {
        const struct sockaddr_in *p = (const void *)ps, *l = (const void *)ls;
        req.r.id.idiag_sport = p->sin_port;
        req.r.id.idiag_dport = l->sin_port;
        memcpy(req.r.id.idiag_src, &p->sin_addr, 4);
        memcpy(req.r.id.idiag_dst, &l->sin_addr, 4);
    } else {
        const struct sockaddr_in6 *p = (const void *)ps, *l = (const void *)ls;
        req.r.id.idiag_sport = p->sin6_port;
        req.r.id.idiag_dport = l->sin6_port;
        memcpy(req.r.id.idiag_src, &p->sin6_addr, 16);
        memcpy(req.r.id.idiag_dst, &l->sin6_addr, 16);
    }
    int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (nl < 0) {
        return -1;
    }
    struct timeval tv = {1, 0}; /* the kernel answers at once; never hang the loop */
    setsockopt(nl, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    long uid = -1;
    union {
        struct nlmsghdr h;
        char buf[8192];
    } ans;
    if (send(nl, &req, sizeof req, 0) == (ssize_t)sizeof req) {
        ssize_t n = recv(nl, ans.buf, sizeof ans.buf, 0);
        if (n >= (ssize_t)NLMSG_LENGTH(sizeof(struct inet_diag_msg)) &&
            ans.h.nlmsg_type == SOCK_DIAG_BY_FAMILY && ans.h.nlmsg_len <= (size_t)n) {
            const struct inet_diag_msg *m = NLMSG_DATA(&ans.h);
            uid = (long)m->idiag_uid;
        }
    }
    close(nl);
    return uid;
}

int peer_identity(const struct collector_opts *o, int fd, const struct peer *p, char *out, size_t n,
                  char *err, size_t errlen)
{
    if (p->is_unix) {
        snprintf(out, n, "uid:%u", (unsigned)p->uid);
        return 0;
    }
    if (!o->ingest_open) {
        snprintf(err, errlen,
                 "this collector requires an ingest token on TCP (--ingest-tokens; "
                 "--ingest-open allows agents without one on loopback)");
        return -1;
    }
    struct sockaddr_storage ps, ls;
    socklen_t pl = sizeof ps, ll = sizeof ls;
    char peer[64], self[64];
    if (getpeername(fd, (struct sockaddr *)&ps, &pl) != 0 ||
        getsockname(fd, (struct sockaddr *)&ls, &ll) != 0 || proc_addr(&ps, peer, sizeof peer) ||
        proc_addr(&ls, self, sizeof self)) {
        snprintf(err, errlen, "the peer's address is unknown");
        return -1;
    }
    long uid = -1;
    if (is_loopback(&ps) && ps.ss_family == ls.ss_family) {
        uid = diag_owner(&ps, &ls);
        if (uid < 0) {
            uid = proc_owner(ps.ss_family == AF_INET ? "/proc/net/tcp" : "/proc/net/tcp6", peer,
                             self);
        }
    }
    if (uid >= 0) {
        snprintf(out, n, "uid:%ld", uid);
    } else {
        snprintf(out, n, "tcp:%s", peer);
    }
    return 0;
}

static int one_id(const char *s, int uids, unsigned *id)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (*s && !*end && !errno && v < 0xffffffffu) {
        *id = (unsigned)v;
        return 0;
    }
    if (uids) {
        struct passwd *pw = getpwnam(s);
        if (pw) {
            *id = pw->pw_uid;
            return 0;
        }
    } else {
        struct group *gr = getgrnam(s);
        if (gr) {
            *id = gr->gr_gid;
            return 0;
        }
    }
    return -1;
}

int identity_parse_ids(const char *list, int uids, unsigned *ids, int cap, char *err, size_t errlen)
{
    char buf[1024];
    if (strlen(list) >= sizeof buf) {
        snprintf(err, errlen, "list too long");
        return -1;
    }
    snprintf(buf, sizeof buf, "%s", list);
    int count = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (count == cap) {
            snprintf(err, errlen, "more than %d entries", cap);
            return -1;
        }
        if (one_id(t, uids, &ids[count]) != 0) {
            snprintf(err, errlen, "no such %s: %s", uids ? "user" : "group", t);
            return -1;
        }
        count++;
    }
    if (count == 0) {
        snprintf(err, errlen, "empty list");
        return -1;
    }
    return count;
}

int identity_tcp_all_loopback(const struct collector_opts *o)
{
    for (int i = 0; i < o->n_listen; i++) {
        if (o->listen[i].is_unix || (o->listen[i].is_tls && o->tls_client_ca[0])) {
            continue; /* an mTLS listener takes no agent without a certificate */
        }
        struct addrinfo hints, *res = NULL;
        memset(&hints, 0, sizeof hints);
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE;
        const char *host = o->listen[i].host[0] ? o->listen[i].host : NULL;
        if (!host || getaddrinfo(host, NULL, &hints, &res) != 0 || !res) {
            return 0; /* no host: every address */
        }
        int ok = 1;
        for (struct addrinfo *a = res; a; a = a->ai_next) {
            struct sockaddr_storage ss;
            memset(&ss, 0, sizeof ss);
            memcpy(&ss, a->ai_addr, a->ai_addrlen);
            ok = ok && is_loopback(&ss);
        }
        freeaddrinfo(res);
        if (!ok) {
            return 0;
        }
    }
    return 1;
}
