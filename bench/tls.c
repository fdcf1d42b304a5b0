/*
 * tls.c - what TLS costs on ingest: stored events per second from one agent over a tls://
 * listener against the same agent over plain TCP, into one real `telltale serve` child that
 * has both listeners (the certificate from scripts/make-test-pki, certtool's throwaway CA).
 *
 *   tls [--smoke] [--runs N] [--events N]
 *
 * Each run opens a client per transport in turn (alternating which goes first, so a drift of
 * the shared machine does not favour one), waits until it is connected (the TLS handshake is
 * outside the figure: an agent makes it once per connection), emits N log events with three
 * attributes as fast as the ring takes them (a full ring waits 200 us), and flushes: the rate is
 * N divided by the time from the first emit to the last ack, so every event counted is
 * committed to SQLite. Medians of the runs; the figure is the TLS rate with the TCP rate of
 * the same runs as its baseline (ratio = tls / tcp).
 */
#include <inttypes.h>

#include "pipeline_util.h"

#define MAX_RUNS 15

static const char *const messages[4] = {"tool call finished", "retrieved 12 documents",
                                        "model answered", "step budget checked"};

struct opts {
    int smoke;
    int runs;
    uint64_t events;
};

/* Emit o->events on endpoint and wait for every ack; the rate in events/s, or -1. */
static double one_rate(const struct opts *o, const char *endpoint, const char *agent,
                       const char *const *extra)
{
    tt_client *c;
    if (bu_client_open(&c, endpoint, agent, extra) != 0) {
        return -1;
    }
    if (bu_wait_connected(&c, 1, 10000) != 0) {
        char why[512];
        tt_connection_error(c, why, sizeof why);
        fprintf(stderr, "bench tls: %s not connected after 10 s: %s\n", endpoint, why);
        tt_close(c, 0);
        return -1;
    }
    uint64_t x = 0x9e3779b97f4a7c15ull, t0 = bu_now_ns();
    for (uint64_t i = 0; i < o->events;) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t r = (uint32_t)(x >> 33);
        tt_attr attrs[3] = {TT_STR("tool", "search"), TT_INT("step", (int64_t)i),
                            TT_DOUBLE("latency_ms", (double)(r & 0xffff) / 64.0)};
        int rc = tt_log(c, "session-0001", TT_INFO, messages[r >> 30], attrs, 3);
        if (rc == TT_ENOBUFS) {
            bu_sleep_ns(200000);
            continue;
        }
        i++;
    }
    int rc = tt_flush(c, 120000);
    double secs = (double)(bu_now_ns() - t0) / 1e9;
    tt_stats st;
    tt_close_stats(c, 5000, &st, sizeof st);
    if (rc != 0 || st.acked != o->events) {
        fprintf(stderr, "bench tls: %s: %" PRIu64 " of %" PRIu64 " acked\n", endpoint, st.acked,
                o->events);
        return -1;
    }
    return (double)o->events / secs;
}

/* The tls:// endpoint the collector bound (its ready file lists every listener). */
static int tls_endpoint(const struct bu_collector *col, char *out, size_t n)
{
    char ready[400];
    snprintf(ready, sizeof ready, "%s/ready.json", col->dir);
    json_t *r = json_load_file(ready, 0, NULL);
    size_t i;
    json_t *v;
    out[0] = 0;
    json_array_foreach(json_object_get(r, "listen"), i, v)
    {
        const char *s = json_string_value(v);
        if (s && strncmp(s, "tls://", 6) == 0) {
            snprintf(out, n, "%s", s);
        }
    }
    json_decref(r);
    return out[0] ? 0 : -1;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    o->runs = 5;
    o->events = 400000;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--smoke") == 0) {
            o->smoke = 1;
            o->runs = 1;
            o->events = 5000;
        } else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
            o->runs = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--events") == 0 && i + 1 < argc) {
            o->events = strtoull(argv[++i], NULL, 10);
        } else {
            return -1;
        }
    }
    if (o->runs < 1 || o->runs > MAX_RUNS || o->events < 1) {
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct opts o = {0};
    if (parse_args(argc, argv, &o) != 0) {
        fprintf(stderr, "usage: tls [--smoke] [--runs N (1..%d)] [--events N]\n", MAX_RUNS);
        return 2;
    }
    bu_mark_start();
    char dir[200], pki[240], cmd[800], data[240];
    if (bu_tmpdir(dir, sizeof dir, "tls") != 0) {
        return 1;
    }
    const char *src = getenv("TT_SRCDIR");
    snprintf(pki, sizeof pki, "%s/pki", dir);
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(cmd, sizeof cmd, "%s/scripts/make-test-pki %s", src && *src ? src : ".", pki);
    if (system(cmd) != 0 || mkdir(data, 0700) != 0) {
        fprintf(stderr, "bench tls: cannot make the test PKI (certtool, gnutls-bin)\n");
        bu_rmtree(dir);
        return 1;
    }
    char cert[300], key[300], ca[300];
    snprintf(cert, sizeof cert, "%s/server.pem", pki);
    snprintf(key, sizeof key, "%s/server.key", pki);
    snprintf(ca, sizeof ca, "%s/ca.pem", pki);
    const char *extra[] = {"--listen", "tls://127.0.0.1:0", "--tls-cert", cert, "--tls-key", key,
                           NULL};
    struct bu_collector col;
    char tls_ep[160];
    if (bu_collector_start(&col, data, "normal", 0, extra) != 0 ||
        tls_endpoint(&col, tls_ep, sizeof tls_ep) != 0) {
        bu_collector_stop(&col, 1);
        bu_rmtree(dir);
        return 1;
    }
    const char *tls_extra[] = {"tls.ca", ca, NULL};
    double tcp[MAX_RUNS], tls[MAX_RUNS];
    int ok = 1;
    for (int r = 0; r < o.runs && ok; r++) {
        char agent[64];
        snprintf(agent, sizeof agent, "bench-%d", r);
        if (r % 2 == 0) {
            tcp[r] = one_rate(&o, col.tcp_ep, agent, NULL);
            tls[r] = one_rate(&o, tls_ep, agent, tls_extra);
        } else {
            tls[r] = one_rate(&o, tls_ep, agent, tls_extra);
            tcp[r] = one_rate(&o, col.tcp_ep, agent, NULL);
        }
        ok = tcp[r] > 0 && tls[r] > 0;
    }
    bu_collector_stop(&col, 0);
    bu_rmtree(dir);
    if (!ok) {
        return 1;
    }
    double m_tcp = bu_median(tcp, (size_t)o.runs), m_tls = bu_median(tls, (size_t)o.runs);
    char note[200];
    snprintf(note, sizeof note,
             "1 agent, %" PRIu64 " events per run, median of %d runs, sync=normal", o.events,
             o.runs);
    bu_result("tls", "tcp_stored_events_per_s", m_tcp, "events/s", NULL, 0, note);
    bu_result("tls", "tls_stored_events_per_s", m_tls, "events/s", "tcp", m_tls / m_tcp, note);
    return 0;
}
