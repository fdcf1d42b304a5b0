/*
 * serve.c - `telltale serve`: options, then the collector's parts started in order (store,
 * fan-out, listeners, store writer, HTTP), the ready file, the loop, and an orderly stop.
 */
#include "collector/serve.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "collector/alerting/alerts.h"
#include "collector/api/auth.h"
#include "collector/api/http.h"
#include "collector/alerting/follow.h"
#include "collector/alerting/monitor.h"
#include "collector/alerting/comply_watch.h"
#include "collector/export.h"
#include "collector/hub.h"
#include "collector/source/identity.h"
#include "collector/source/native.h"
#include "collector/source/nats.h"
#include "collector/source/otlp.h"
#include "collector/source/otlp_decode.h"
#include "collector/source/source.h"
#include "collector/source/tls.h"
#include "collector/log.h"
#include "collector/secure.h"
#include "collector/retain.h"
#include "collector/store/store.h"
#include "common/json.h"

#define DEFAULT_TCP "tcp://127.0.0.1:7370"
#define DEFAULT_HTTP "127.0.0.1:7371"

static const char usage[] =
    "usage: telltale serve [options]\n"
    "\n"
    "Run the collector: accept agents' streams, store them in SQLite under the data\n"
    "directory, acknowledge each batch after it is committed, and serve the HTTP API.\n"
    "\n"
    "  --data DIR            data directory (default $TELLTALE_DATA or ./telltale-data)\n"
    "  --listen ENDPOINT     unix:PATH, tcp://HOST:PORT or tls://HOST:PORT (TLS: needs\n"
    "                        --tls-cert and --tls-key); repeatable (default\n"
    "                        unix:DIR/telltale.sock and " DEFAULT_TCP ")\n"
    "  --http HOST:PORT      HTTP API and live stream (default " DEFAULT_HTTP
    "; port 0 picks one)\n"
    "  --no-http             no HTTP API\n"
    "  --otlp-http HOST:PORT also take OTLP/HTTP (/v1/traces, /v1/logs, /v1/metrics)\n"
    "                        on a listener of its own, 4318 by convention (the --http\n"
    "                        port takes it too; same TLS and ingest token rules)\n"
    "  --sync LEVEL          full (default), normal or off: what an ack survives\n"
    "                        (docs/operations.md)\n"
    "  --store URL           where batches are stored: sqlite (default; telltale.db in\n"
    "                        the data directory) or postgres://USER@HOST:PORT/DB (a\n"
    "                        first version; password from PGPASSFILE, not the URL)\n"
    "  --retain DURATION     remove events older than this (90s, 15m, 12h, 30d; default:\n"
    "                        keep everything), in short steps between commits\n"
    "  --max-bytes SIZE      keep the store's files (database + WAL; PostgreSQL: the live\n"
    "                        rows of its tables) under SIZE (64M, 2G; at least 1M) by\n"
    "                        removing the oldest events first\n"
    "  --retain-keep-factor F  keep flagged, halted and low-confidence responses and\n"
    "                        sessions with alerts F times longer (default 4); by size they\n"
    "                        go only after every ordinary event\n"
    "  --retain-confidence P a response whose min_window_confidence is below P is kept\n"
    "                        longer (default 0.5; 0: none)\n"
    "  --max-frame BYTES     largest frame accepted (default 16777216)\n"
    "  --max-connections N   agent connections at most (default 4096)\n"
    "  --queue-bytes BYTES   ingest budget: partial frames and batches not yet stored\n"
    "                        (default 268435456; see docs/operations.md, Memory bound)\n"
    "  --grace-ms MS         on SIGTERM, drain, commit and ack within this (default 5000)\n"
    "  --ready-file FILE     write the bound endpoints there as JSON once accepting\n"
    "  --operator-token-file FILE\n"
    "                        require this token (first line of FILE, mode 0600) as\n"
    "                        'Authorization: Bearer TOKEN' on /api/* and /metrics\n"
    "                        (default $TELLTALE_OPERATOR_TOKEN, else DIR/operator.token,\n"
    "                        generated at first start; the dashboard URL with it is\n"
    "                        printed when stderr is a terminal)\n"
    "  --no-auth             no operator token: anyone who reaches the HTTP port reads\n"
    "                        everything and may halt agents (throwaway local use only)\n"
    "  --allowed-hosts LIST  Host header values accepted besides the listening address,\n"
    "                        comma-separated NAME or NAME:PORT (a proxy's or DNS name)\n"
    "  --ingest-tokens FILE  lines 'AGENT TOKEN': an agent must present a token, and\n"
    "                        its name is the token's, whatever its hello says\n"
    "  --ingest-open         TCP and TLS agents without an ingest token (loopback\n"
    "                        listeners only; each is known by its local user); without\n"
    "                        it and without --ingest-tokens, they are refused; with\n"
    "                        --ingest-tokens, every agent needs a token anyway (or,\n"
    "                        on tls:// with --tls-client-ca, its certificate)\n"
    "  --ingest-uids LIST    users (names or uids, comma-separated) who may ingest on\n"
    "                        the Unix sockets besides the collector's own\n"
    "  --ingest-gids LIST    the same for members of the listed groups\n"
    "  --tls-cert FILE       TLS certificate (PEM, the leaf first, then its chain) for\n"
    "                        tls:// listeners and --https\n"
    "  --tls-key FILE        its private key (PEM; refused unless mode 0600 or stricter)\n"
    "  --tls-client-ca FILE  mTLS: tls:// agents must present a certificate signed by\n"
    "                        this CA; its name (DNS SAN, else CN) is the agent's name\n"
    "                        and identity, no ingest token needed\n"
    "  --https               serve the HTTP API and dashboard over TLS (same cert and key)\n"
    "  --config FILE         detectors and webhooks (docs/detectors.md); default: the\n"
    "                        built-in detectors, no webhooks\n"
    "  --comply-policy FILE  compliance rules the collector applies to the steps and\n"
    "                        logs of agents that did not decide themselves: decisions\n"
    "                        recorded, incidents raised (docs/compliance.md); FILE at\n"
    "                        most 64 KiB, writable by its owner only\n"
    "  --otlp-export URL     export committed steps and responses (as GenAI spans), logs\n"
    "                        and metrics to this OTLP/HTTP endpoint (protobuf; /v1/traces,\n"
    "                        /v1/logs, /v1/metrics appended); default: the standard\n"
    "                        OTEL_EXPORTER_OTLP_* variables, none when unset (docs/otel.md)\n"
    "  --otlp-export-queue BYTES  committed batches waiting for export at most (default\n"
    "                        67108864): above it, batches are not exported (counted)\n"
    "  --otlp-export-retry MS  retry a request the receiver may take later for this\n"
    "                        long, then drop it (counted; default 60000)\n"
    "  --nats URLS           also consume ingest messages from NATS JetStream:\n"
    "                        nats://HOST:PORT[,HOST:PORT...] (one cluster); agents need\n"
    "                        an ingest token (--ingest-tokens); docs/operations.md\n"
    "  --nats-stream NAME    the stream (default TELLTALE; created at start if missing)\n"
    "  --nats-subject PREFIX ingest subjects PREFIX.> (default telltale.ingest)\n"
    "  --nats-durable NAME   the durable pull consumer, shared by every collector that\n"
    "                        names it (default telltale)\n"
    "  --nats-replicas N     replicas of a stream created here (default 1; 3 in a cluster)\n"
    "  --nats-ack-wait MS    redelivery of a message not acked within this (default 30000)\n"
    "  --nats-token-file FILE  the NATS token (first line of FILE, mode 0600); never a\n"
    "                        user or password in the URL\n"
    "  --verbose             log each refused connection\n"
    "  --help                this text\n"
    "\n"
    "Exit status: 0 after SIGTERM or SIGINT and a complete drain, 1 on a startup error\n"
    "(bad option, port in use, unusable data directory or one in use by another\n"
    "collector: each holds an flock on DIR/lock), 2 on a usage error.\n";

static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        return -1;
    }
    *out = v;
    return 0;
}

static void opts_defaults(struct collector_opts *o)
{
    memset(o, 0, sizeof *o);
    const char *env = getenv("TELLTALE_DATA");
    snprintf(o->data_dir, sizeof o->data_dir, "%s", env && *env ? env : "telltale-data");
    snprintf(o->http, sizeof o->http, "%s", DEFAULT_HTTP);
    o->sync_level = SYNC_FULL;
    o->max_frame = TT_FRAME_DEFAULT_MAX;
    o->max_raw = TT_FRAME_RAW_MAX;
    o->max_conns = 4096;
    o->queue_bytes = 256u << 20;
    o->max_events = 1u << 20;
    o->max_attrs = 256;
    o->hello_timeout_ms = 10000;
    o->idle_timeout_ms = 300000;
    o->grace_ms = 5000;
    o->retain_keep_factor = RETAIN_DEFAULT_KEEP_FACTOR;
    o->retain_confidence = RETAIN_DEFAULT_CONFIDENCE;
    o->otlp_export_queue = 64u << 20;
    o->otlp_export_retry_ms = 60000;
    snprintf(o->nats_stream, sizeof o->nats_stream, "TELLTALE");
    snprintf(o->nats_subject, sizeof o->nats_subject, "telltale.ingest");
    snprintf(o->nats_durable, sizeof o->nats_durable, "telltale");
    o->nats_replicas = 1;
    o->nats_ack_wait_ms = 30000;
}

static int parse_f64(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        return -1;
    }
    *out = v;
    return 0;
}

static int add_listen(struct collector_opts *o, const char *s)
{
    char err[256];
    if (o->n_listen == COLLECTOR_MAX_LISTEN) {
        fprintf(stderr, "telltale serve: at most %d --listen\n", COLLECTOR_MAX_LISTEN);
        return -1;
    }
    if (tt__endpoint_parse(s, &o->listen[o->n_listen], err, sizeof err) != 0) {
        fprintf(stderr, "telltale serve: --listen %s\n", err);
        return -1;
    }
    o->n_listen++;
    return 0;
}

static int parse_ids(struct collector_opts *o, int uids, const char *list)
{
    char err[256];
    int n =
        identity_parse_ids(list, uids, uids ? o->ingest_uids : o->ingest_gids, 32, err, sizeof err);
    if (n < 0) {
        fprintf(stderr, "telltale serve: --ingest-%s: %s\n", uids ? "uids" : "gids", err);
        return -1;
    }
    *(uids ? &o->n_ingest_uids : &o->n_ingest_gids) = n;
    return 0;
}

/* Long options without a letter (codes above any character): --otlp-export URL, its queue, its
 * retry time; the --nats options. */
enum { OXU = 0x4f01, OXQ, OXR, NSV, NST, NSJ, NDU, NRP, NAW, NTF };

/* A name of the NATS options: no space, no wildcard, no dot unless dots (a subject). */
static int bad_nats_name(const char *v, size_t cap, int dots)
{
    return !*v || strlen(v) >= cap || strpbrk(v, dots ? " \t*>" : " \t*>.") != NULL ||
           (dots && (v[0] == '.' || v[strlen(v) - 1] == '.' || strstr(v, "..")));
}

/* Returns 0 to run, 1 for --help, 2 on a usage error. */
static int parse_args(int argc, char **argv, struct collector_opts *o)
{
    static const struct option longopts[] = {{"data", required_argument, NULL, 'd'},
                                             {"listen", required_argument, NULL, 'l'},
                                             {"http", required_argument, NULL, 'H'},
                                             {"no-http", no_argument, NULL, 'N'},
                                             {"otlp-http", required_argument, NULL, 'L'},
                                             {"sync", required_argument, NULL, 's'},
                                             {"store", required_argument, NULL, 'S'},
                                             {"max-frame", required_argument, NULL, 'f'},
                                             {"max-connections", required_argument, NULL, 'c'},
                                             {"queue-bytes", required_argument, NULL, 'Q'},
                                             {"grace-ms", required_argument, NULL, 'g'},
                                             {"ready-file", required_argument, NULL, 'r'},
                                             {"verbose", no_argument, NULL, 'v'},
                                             {"operator-token-file", required_argument, NULL, 'O'},
                                             {"ingest-tokens", required_argument, NULL, 'I'},
                                             {"config", required_argument, NULL, 'C'},
                                             {"comply-policy", required_argument, NULL, 'y'},
                                             {"no-auth", no_argument, NULL, 'A'},
                                             {"allowed-hosts", required_argument, NULL, 'a'},
                                             {"retain", required_argument, NULL, 'R'},
                                             {"max-bytes", required_argument, NULL, 'B'},
                                             {"retain-keep-factor", required_argument, NULL, 'K'},
                                             {"retain-confidence", required_argument, NULL, 'P'},
                                             {"ingest-open", no_argument, NULL, 'o'},
                                             {"ingest-uids", required_argument, NULL, 'u'},
                                             {"ingest-gids", required_argument, NULL, 'G'},
                                             {"tls-cert", required_argument, NULL, 'T'},
                                             {"tls-key", required_argument, NULL, 'k'},
                                             {"tls-client-ca", required_argument, NULL, 'X'},
                                             {"https", no_argument, NULL, 'p'},
                                             {"otlp-export", required_argument, NULL, OXU},
                                             {"otlp-export-queue", required_argument, NULL, OXQ},
                                             {"otlp-export-retry", required_argument, NULL, OXR},
                                             {"nats", required_argument, NULL, NSV},
                                             {"nats-stream", required_argument, NULL, NST},
                                             {"nats-subject", required_argument, NULL, NSJ},
                                             {"nats-durable", required_argument, NULL, NDU},
                                             {"nats-replicas", required_argument, NULL, NRP},
                                             {"nats-ack-wait", required_argument, NULL, NAW},
                                             {"nats-token-file", required_argument, NULL, NTF},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    int opt, idx = 0;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", longopts, &idx)) != -1) {
        int bad = 0;
        switch (opt) {
        case 'd':
            bad = strlen(optarg) >= sizeof o->data_dir;
            snprintf(o->data_dir, sizeof o->data_dir, "%s", optarg);
            break;
        case 'l':
            bad = add_listen(o, optarg) != 0;
            break;
        case 'H':
            bad = strlen(optarg) >= sizeof o->http;
            snprintf(o->http, sizeof o->http, "%s", optarg);
            break;
        case 'N':
            o->http[0] = 0;
            break;
        case 'L':
            bad = strlen(optarg) >= sizeof o->otlp_http;
            snprintf(o->otlp_http, sizeof o->otlp_http, "%s", optarg);
            break;
        case 's':
            o->sync_level = !strcmp(optarg, "full")     ? SYNC_FULL
                            : !strcmp(optarg, "normal") ? SYNC_NORMAL
                            : !strcmp(optarg, "off")    ? SYNC_OFF
                                                        : -1;
            bad = o->sync_level < 0;
            break;
        case 'S':
            bad = strlen(optarg) >= sizeof o->store || !*optarg;
            snprintf(o->store, sizeof o->store, "%s", optarg);
            break;
        case 'f':
            bad = parse_u64(optarg, 4096, 1u << 30, &o->max_frame) != 0;
            break;
        case 'c':
            bad = parse_u64(optarg, 1, 1u << 20, &o->max_conns) != 0;
            break;
        case 'Q':
            bad = parse_u64(optarg, 1u << 20, 1ull << 40, &o->queue_bytes) != 0;
            break;
        case 'g':
            bad = parse_u64(optarg, 0, 600000, &o->grace_ms) != 0;
            break;
        case 'r':
            bad = strlen(optarg) >= sizeof o->ready_file;
            snprintf(o->ready_file, sizeof o->ready_file, "%s", optarg);
            break;
        case 'v':
            o->verbose = 1;
            break;
        case 'O':
            bad = strlen(optarg) >= sizeof o->operator_token_file;
            snprintf(o->operator_token_file, sizeof o->operator_token_file, "%s", optarg);
            break;
        case 'I':
            bad = strlen(optarg) >= sizeof o->ingest_tokens;
            snprintf(o->ingest_tokens, sizeof o->ingest_tokens, "%s", optarg);
            break;
        case 'C':
            bad = strlen(optarg) >= sizeof o->config;
            snprintf(o->config, sizeof o->config, "%s", optarg);
            break;
        case 'y':
            bad = strlen(optarg) >= sizeof o->comply_policy;
            snprintf(o->comply_policy, sizeof o->comply_policy, "%s", optarg);
            break;
        case 'A':
            o->no_auth = 1;
            break;
        case 'a':
            bad = strlen(optarg) >= sizeof o->allowed_hosts;
            snprintf(o->allowed_hosts, sizeof o->allowed_hosts, "%s", optarg);
            break;
        case 'R':
            bad = retain_parse_duration(optarg, &o->retain_ns) != 0;
            break;
        case 'B':
            bad = retain_parse_size(optarg, &o->max_bytes) != 0;
            break;
        case 'K':
            bad = parse_f64(optarg, 1, 1000, &o->retain_keep_factor) != 0;
            break;
        case 'P':
            bad = parse_f64(optarg, 0, 1, &o->retain_confidence) != 0;
            break;
        case 'o':
            o->ingest_open = 1;
            break;
        case 'u':
        case 'G':
            bad = parse_ids(o, opt == 'u', optarg) != 0;
            break;
        case 'T':
            bad = strlen(optarg) >= sizeof o->tls_cert || !*optarg;
            snprintf(o->tls_cert, sizeof o->tls_cert, "%s", optarg);
            break;
        case 'k':
            bad = strlen(optarg) >= sizeof o->tls_key || !*optarg;
            snprintf(o->tls_key, sizeof o->tls_key, "%s", optarg);
            break;
        case 'X':
            bad = strlen(optarg) >= sizeof o->tls_client_ca || !*optarg;
            snprintf(o->tls_client_ca, sizeof o->tls_client_ca, "%s", optarg);
            break;
        case 'p':
            o->https = 1;
            break;
        case OXU:
            bad = strlen(optarg) >= sizeof o->otlp_export || !*optarg;
            snprintf(o->otlp_export, sizeof o->otlp_export, "%s", optarg);
            break;
        case OXQ:
            bad = parse_u64(optarg, 1u << 16, 1ull << 40, &o->otlp_export_queue) != 0;
            break;
        case OXR:
            bad = parse_u64(optarg, 0, 86400000, &o->otlp_export_retry_ms) != 0;
            break;
        case NSV:
            bad = strlen(optarg) >= sizeof o->nats || !*optarg;
            snprintf(o->nats, sizeof o->nats, "%s", optarg);
            break;
        case NST:
            bad = bad_nats_name(optarg, sizeof o->nats_stream, 0);
            if (!bad) {
                memcpy(o->nats_stream, optarg, strlen(optarg) + 1);
            }
            break;
        case NSJ:
            bad = bad_nats_name(optarg, sizeof o->nats_subject, 1);
            if (!bad) {
                memcpy(o->nats_subject, optarg, strlen(optarg) + 1);
            }
            break;
        case NDU:
            bad = bad_nats_name(optarg, sizeof o->nats_durable, 0);
            if (!bad) {
                memcpy(o->nats_durable, optarg, strlen(optarg) + 1);
            }
            break;
        case NRP:
            bad = parse_u64(optarg, 1, 5, &o->nats_replicas) != 0;
            break;
        case NAW:
            bad = parse_u64(optarg, 1000, 3600000, &o->nats_ack_wait_ms) != 0;
            break;
        case NTF:
            bad = strlen(optarg) >= sizeof o->nats_token_file || !*optarg;
            snprintf(o->nats_token_file, sizeof o->nats_token_file, "%s", optarg);
            break;
        case 'h':
            fputs(usage, stdout);
            return 1;
        default:
            fprintf(stderr, "telltale serve: unknown option or missing value: %s\n",
                    argv[optind - 1]);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "telltale serve: bad value for --%s: \"%s\" (see --help)\n",
                    longopts[idx].name, optarg);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "telltale serve: unexpected argument: %s\n", argv[optind]);
        return 2;
    }
    if (o->no_auth && o->operator_token_file[0]) {
        fprintf(stderr, "telltale serve: --no-auth and --operator-token-file exclude each other\n");
        return 2;
    }
    if (!o->tls_cert[0] != !o->tls_key[0] ||
        ((o->https || o->tls_client_ca[0]) && !o->tls_cert[0])) {
        fprintf(stderr, "telltale serve: --tls-cert and --tls-key go together, and --https and "
                        "--tls-client-ca need them\n");
        return 2;
    }
    if (o->nats[0]) {
        char err[512];
        if (nats_check_opts(o, err, sizeof err) != 0) {
            fprintf(stderr, "telltale serve: %s\n", err);
            return 2;
        }
    }
    return 0;
}

static int add_default_listeners(struct collector_opts *o)
{
    if (o->n_listen) {
        return 0;
    }
    char sock[PATH_MAX + 32];
    if (strlen(o->data_dir) + 20 >= sizeof sock) {
        return -1;
    }
    snprintf(sock, sizeof sock, "unix:%s/telltale.sock", o->data_dir);
    if (strlen(sock) - 5 >= sizeof o->listen[0].path) {
        fprintf(stderr, "telltale serve: the data directory path is too long for a Unix socket "
                        "under it; give --listen explicitly\n");
        return -1;
    }
    return add_listen(o, sock) || add_listen(o, DEFAULT_TCP) ? -1 : 0;
}

/* --ingest-open is for loopback only: a remote agent must present a token. */
static int check_ingest_open(const struct collector_opts *o)
{
    if (o->ingest_open && !identity_tcp_all_loopback(o)) {
        fprintf(stderr, "telltale serve: --ingest-open is allowed only when every TCP listener "
                        "is on a loopback address; give remote agents ingest tokens "
                        "(--ingest-tokens)\n");
        return -1;
    }
    return 0;
}

/* Say at start who may ingest, so an operator sees what an open option opened. */
static void announce_ingest(const struct collector_opts *o)
{
    int tcp = 0, mtls = 0;
    for (int i = 0; i < o->n_listen; i++) {
        int cert = o->listen[i].is_tls && o->tls_client_ca[0]; /* authenticated by certificate */
        tcp |= !o->listen[i].is_unix && !cert;
        mtls |= cert;
    }
    if (mtls) {
        log_info("tls:// agents present a certificate of --tls-client-ca; it names them");
    }
    if (o->ingest_open && !o->ingest_tokens[0] && tcp) {
        log_warn("--ingest-open: local processes ingest over TCP without a token; each is known "
                 "by its user, any user of this machine may connect");
    } else if (tcp && !o->ingest_tokens[0]) {
        log_info("TCP agents need an ingest token (--ingest-tokens) and none is configured: "
                 "they are refused (--ingest-open allows them on loopback)");
    }
    if (o->n_ingest_uids || o->n_ingest_gids) {
        log_info("Unix-socket agents: the collector's user and %d listed users, %d listed groups",
                 o->n_ingest_uids, o->n_ingest_gids);
    }
}

static int write_ready(const struct collector_opts *o, const char *http_bound,
                       const char *otlp_bound, int nats_on)
{
    tt__buf b;
    tt__buf_init(&b, 1u << 16);
    tt__json j;
    tt__json_init(&j, &b);
    tt__json_obj_begin(&j);
    tt__json_kv_i64(&j, "pid", getpid());
    tt__json_kv_cstr(&j, "data", o->data_dir);
    tt__json_key(&j, "listen");
    tt__json_arr_begin(&j);
    for (int i = 0; i < o->n_listen; i++) {
        char ep[400];
        tt__endpoint_format(&o->listen[i], ep, sizeof ep);
        tt__json_cstr(&j, ep);
    }
    tt__json_arr_end(&j);
    tt__json_kv_cstr(&j, "http", http_bound);
    tt__json_kv_cstr(&j, "otlp_http", otlp_bound);
    tt__json_kv_cstr(&j, "nats", nats_on ? o->nats : ""); /* never a secret: refused in it */
    tt__json_kv_bool(&j, "https", o->https);
    tt__json_kv_cstr(&j, "sync", store_sync_name(o->sync_level));
    tt__json_obj_end(&j);
    tt__json_raw(&j, "\n", 1);
    /* A new file of a random name, never one that is there already: the ready file may be
     * in a directory others can write (/tmp), where a planted FILE.tmp symbolic link would
     * otherwise have the collector overwrite what it points to. */
    char tmp[PATH_MAX + 16];
    snprintf(tmp, sizeof tmp, "%s.XXXXXX", o->ready_file);
    int fd = mkstemp(tmp);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (fd >= 0 && !f) {
        close(fd);
    }
    int ok = f && fwrite(b.data, 1, b.len, f) == b.len;
    ok = f && fclose(f) == 0 && ok;
    ok = ok && rename(tmp, o->ready_file) == 0;
    if (!ok && fd >= 0) {
        unlink(tmp);
    }
    tt__buf_fini(&b);
    return ok ? 0 : -1;
}

struct running {
    struct store *store;
    struct hub *hub;
    struct pipeline *pipeline;
    struct ingest *ingest;
    struct otlp *otlp;     /* OTLP/HTTP ingest on the HTTP port (source/otlp.h) */
    struct nats_src *nats; /* --nats: NATS JetStream ingest (source/nats.h), or NULL */
    struct http *http;
    struct http *otlp_http; /* --otlp-http's listener, or NULL */
    struct auth *auth;
    struct alerts *alerts;
    struct monitor *monitor;
    struct follow *follow;          /* several collectors on one store: the monitor follows it */
    struct tls_server *tls;         /* --tls-cert and --tls-key, or NULL */
    struct watch *watch;            /* the collector's compliance checks */
    struct store_read *reader;      /* the loop thread's, for hook_owner_ok */
    char token_path[PATH_MAX + 32]; /* where the operator token came from, for the log */
    uint64_t grace_ms;              /* --grace-ms, for the exporter at stop */
    char otlp_bound[300];           /* --otlp-http's address once bound */
};

static void stop_all(struct running *r)
{
    if (r->hub) {
        hub_shutdown(r->hub);
    }
    otlp_shutdown(r->otlp);         /* its waiting requests answer, so the HTTP threads can end */
    http_drain_otlp(r->http, 2000); /* and their answers are out before the sockets close */
    http_drain_otlp(r->otlp_http, 2000);
    http_stop(r->http);
    http_stop(r->otlp_http);
    watch_stop(r->watch);   /* submits no more records */
    nats_shutdown(r->nats); /* the acks queued go out; the rest stays unacked (redelivered) */
    ingest_close(r->ingest);
    retain_stop(); /* no pass under way when the store closes */
    pipeline_free(r->pipeline);
    follow_stop(r->follow);    /* the monitor is fed no more (the lead is kept) */
    monitor_close(r->monitor); /* no more alerts raised */
    alerts_close(r->alerts);   /* stores, streams and posts what was raised */
    follow_free(r->follow);    /* then another collector may lead */
    store_read_close(r->reader);
    store_close(r->store); /* commits what was submitted; no user is left */

    /* The exporter posts what was committed, within the grace. */
    export_stop(r->grace_ms);
    otlp_free(r->otlp);
    nats_free(r->nats);
    watch_free(r->watch); /* its source outlives the items it submitted */
    hub_free(r->hub);
    auth_free(r->auth);
    tls_server_free(r->tls);
}

/* Retention (retain.c): a first pass now, then a thread when there is a limit. */
static int start_retention(const struct collector_opts *o, struct store *s)
{
    struct retain_opts ro = {o->retain_ns, o->max_bytes, o->retain_keep_factor,
                             o->retain_confidence, 0};
    int rc = retain_start(s, &ro);
    if (rc != 0) {
        fprintf(stderr, "telltale serve: retention (--retain, --max-bytes): %s\n",
                rc == -ENOTSUP ? "this store does not support it" : strerror(-rc));
        return -1;
    }
    if (o->retain_ns || o->max_bytes) {
        char age[32] = "none", size[32] = "none";
        if (o->retain_ns) {
            snprintf(age, sizeof age, "%.0f s", (double)o->retain_ns / 1e9);
        }
        if (o->max_bytes) {
            snprintf(size, sizeof size, "%.1f MiB", (double)o->max_bytes / 1048576.0);
        }
        log_info("retention: age limit %s, size limit %s; flagged, halted, below-%.2f-confidence "
                 "responses and alerted sessions kept %.1fx longer",
                 age, size, o->retain_confidence, o->retain_keep_factor);
    }
    return 0;
}

/* The hooks: the ingest tokens decide identity, the monitor watches commits. */
static int hook_authorize(void *ctx, const tt__hello *h, char *agent, char *err, size_t errlen)
{
    const struct running *r = ctx;
    return auth_authorize(r->auth, h, agent, err, errlen);
}

/* At a hello (loop thread): the agent name must not belong to another identity. The store
 * decides for good at commit; this refuses early, so a connection under another identity's name
 * never gets that agent's orders. A store that cannot answer leaves the decision to the commit. */
static int hook_owner_ok(void *ctx, const char *agent, const char *identity, char *err,
                         size_t errlen)
{
    struct running *r = ctx;
    char owner[IDENTITY_MAX];
    if (!r->reader && store_read_open(r->store, &r->reader) != 0) {
        r->reader = NULL;
        return 0;
    }
    if (store_agent_owner(r->reader, agent, owner, sizeof owner) == 1 &&
        strcmp(owner, identity) != 0) {
        snprintf(err, errlen, "agent name %.200s belongs to another identity (docs/security.md)",
                 agent);
        return -1;
    }
    return 0;
}

static void hook_drain(void *ctx)
{
    const struct running *r = ctx;
    nats_drain(r->nats);
}

static uint64_t hook_pending(void *ctx)
{
    const struct running *r = ctx;
    return nats_pending(r->nats);
}

static void hook_commit(void *ctx, const struct store_item *it)
{
    const struct running *r = ctx;
    if (!r->follow) { /* else the follower feeds it every collector's commits */
        monitor_on_commit(r->monitor, it);
    }
    watch_on_commit(r->watch, it);
    export_on_commit(it);
}

/* The operator token: --operator-token-file, else $TELLTALE_OPERATOR_TOKEN, else the one of the
 * data directory (generated at first start); none with --no-auth. */
static int set_operator_token(struct collector_opts *o, struct running *r, char *err, size_t errlen)
{
    const char *env = getenv("TELLTALE_OPERATOR_TOKEN");
    if (o->no_auth) {
        log_warn("--no-auth: no operator token; anyone who can reach %s reads every stored "
                 "prompt and may halt agents. For throwaway local use only.",
                 o->http[0] ? o->http : "the HTTP API");
        return 0;
    }
    if (o->operator_token_file[0]) {
        return auth_set_operator(r->auth, o->operator_token_file, 1, err, errlen);
    }
    if (env && *env) {
        snprintf(r->token_path, sizeof r->token_path, "$TELLTALE_OPERATOR_TOKEN");
        return auth_set_operator(r->auth, env, 0, err, errlen);
    }
    int created;
    if (secure_operator_token(o->data_dir, r->token_path, sizeof r->token_path, &created, err,
                              errlen) != 0) {
        return -1;
    }
    if (created) {
        log_info("generated an operator token in %s", r->token_path);
    }
    return auth_set_operator(r->auth, r->token_path, 1, err, errlen);
}

/* Tokens and the alerting configuration, before anything listens. */
static int start_operator(struct collector_opts *o, struct running *r, char *err, size_t errlen)
{
    r->auth = auth_new();
    if (!r->auth) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (set_operator_token(o, r, err, errlen) != 0) {
        return -1;
    }
    if (o->ingest_tokens[0] && auth_load_ingest(r->auth, o->ingest_tokens, err, errlen) != 0) {
        return -1;
    }
    static struct mon_config cfg; /* large; read once at startup */
    if (o->config[0] ? mon_config_load(&cfg, o->config, err, errlen) != 0
                     : mon_config_defaults(&cfg) != 0) {
        return -1;
    }
    for (int i = 0; i < cfg.n_hooks; i++) {
        if (!cfg.hooks[i].secret_len) {
            log_warn("webhook %s posts unsigned: give it a secret_file so its receiver can check "
                     "the sender (docs/detectors.md)",
                     cfg.hooks[i].name);
        }
    }
    if (alerts_open(&r->alerts, r->store, r->hub, cfg.hooks, cfg.n_hooks, err, errlen) != 0 ||
        monitor_open(&r->monitor, &cfg, r->alerts, err, errlen) != 0) {
        return -1;
    }
    int rc = follow_start(&r->follow, r->store, r->monitor, r->hub, err, errlen);
    if (rc != 0 && rc != -ENOTSUP) {
        return -1;
    }
    if (r->follow) {
        log_info("incidents: the detectors and the live stream follow every commit to the shared "
                 "store, whichever collector made it; one collector leads and raises incidents");
    }
    log_info("%d detectors, %d webhooks%s%s", cfg.n_units, cfg.n_hooks,
             auth_operator_required(r->auth) ? ", operator token required" : "",
             o->ingest_tokens[0] ? ", ingest tokens required" : "");
    return 0;
}

static int start_all(struct collector_opts *o, struct running *r, char *http_bound, size_t hblen)
{
    char err[1024];
    if (secure_data_dir(o->data_dir, err, sizeof err) != 0) {
        fprintf(stderr, "telltale serve: %s\n", err);
        return -1;
    }
    struct store_config sc = {o->store, o->data_dir, o->sync_level};
    if (store_open(&r->store, &sc, err, sizeof err) != 0) {
        fprintf(stderr, "telltale serve: %s\n", err);
        return -1;
    }
    store_describe(r->store, err, sizeof err);
    log_info("%s", err);
    if (*store_lacks(r->store)) {
        log_warn("store: not available with this store yet: %s (docs/operations.md)",
                 store_lacks(r->store));
    }
    r->hub = hub_new(64, 4u << 20);
    if (!r->hub) {
        fprintf(stderr, "telltale serve: out of memory\n");
        return -1;
    }
    if (start_operator(o, r, err, sizeof err) != 0) {
        fprintf(stderr, "telltale serve: %s\n", err);
        return -1;
    }
    struct export_config ec;
    int rc = export_configure(&ec, o->otlp_export[0] ? o->otlp_export : NULL, o->otlp_export_queue,
                              o->otlp_export_retry_ms, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "telltale serve: OTLP export: %s\n", err);
        return -1;
    }
    r->grace_ms = o->grace_ms;
    if (rc > 0 && export_start(&ec) != 0) {
        fprintf(stderr, "telltale serve: cannot start the OTLP exporter\n");
        return -1;
    }
    explicit_bzero(&ec, sizeof ec);
    struct pipeline_hooks ph = {r, hook_commit};
    if (pipeline_new(&r->pipeline, r->store, r->follow ? NULL : r->hub, &ph, o->queue_bytes) != 0) {
        fprintf(stderr, "telltale serve: out of memory\n");
        return -1;
    }
    if (o->tls_cert[0] &&
        tls_server_open(&r->tls, o->tls_cert, o->tls_key, o->tls_client_ca, err, sizeof err) != 0) {
        fprintf(stderr, "telltale serve: TLS: %s\n", err);
        return -1;
    }
    struct tt__comply_policy *policy = NULL;
    if (o->comply_policy[0] && watch_policy_load(o->comply_policy, &policy, err, sizeof err) != 0) {
        fprintf(stderr, "telltale serve: --comply-policy %s\n", err);
        return -1;
    }
    if (policy) {
        log_info("compliance: the collector applies %u rules of %s to agents that do not decide",
                 policy->n_rules, o->comply_policy);
    }
    if (watch_open(&r->watch, r->pipeline, policy, err, sizeof err) != 0) {
        fprintf(stderr, "telltale serve: %s\n", err);
        return -1;
    }
    struct ingest_hooks hooks = {r, hook_authorize, hook_owner_ok, NULL, hook_drain, hook_pending};
    if (ingest_open(&r->ingest, o, r->pipeline, &hooks, r->tls, err, sizeof err) != 0) {
        fprintf(stderr, "telltale serve: %s\n", err);
        return -1;
    }
    if (store_start(r->store) != 0) {
        fprintf(stderr, "telltale serve: cannot start the store thread\n");
        return -1;
    }
    /* The loop's reader (hook_owner_ok), opened now: opened at the first hello, it could wait
     * on the loop thread for a PostgreSQL reader connection that API requests hold. */
    if (store_read_open(r->store, &r->reader) != 0) {
        r->reader = NULL; /* opened at the first hello instead */
    }
    if (start_retention(o, r->store) != 0) {
        return -1;
    }
    if (o->nats[0] && nats_open(&r->nats, o, r->pipeline, r->auth, err, sizeof err) != 0) {
        fprintf(stderr, "telltale serve: %s\n", err);
        return -1;
    }
    if (o->http[0] || o->otlp_http[0]) {
        struct http_ctx ctx;
        memset(&ctx, 0, sizeof ctx);
        ctx.store = r->store;
        ctx.hub = r->hub;
        ctx.ingest = r->ingest;
        ctx.auth = r->auth;
        ctx.monitor = r->monitor;
        ctx.follow = r->follow;
        ctx.alerts = r->alerts;
        ctx.watch = r->watch;
        if (otlp_open(&r->otlp, o, r->pipeline, r->auth) != 0) {
            fprintf(stderr, "telltale serve: cannot start OTLP ingest\n");
            return -1;
        }
        ctx.otlp = r->otlp;
        ctx.nats = r->nats;
        snprintf(ctx.allowed_hosts, sizeof ctx.allowed_hosts, "%s", o->allowed_hosts);
        if (o->https) {
            ctx.tls_cert_pem = tls_server_cert_pem(r->tls);
            ctx.tls_key_pem = tls_server_key_pem(r->tls);
            snprintf(ctx.scheme, sizeof ctx.scheme, "https");
        }
        if (o->http[0] &&
            http_start(&r->http, o->http, &ctx, http_bound, hblen, err, sizeof err) != 0) {
            fprintf(stderr, "telltale serve: %s\n", err);
            return -1;
        }
        ctx.otlp_only = 1;
        if (o->otlp_http[0] && http_start(&r->otlp_http, o->otlp_http, &ctx, r->otlp_bound,
                                          sizeof r->otlp_bound, err, sizeof err) != 0) {
            fprintf(stderr, "telltale serve: %s\n", err);
            return -1;
        }
    }
    return 0;
}

/* One collector per data directory: an exclusive flock on DIR/lock, held until the process
 * exits (the kernel releases it however the process ends, so a crash leaves no stale lock). The
 * file holds the holder's pid so a refused second collector can name it. Returns the fd to keep
 * open, or -1 after saying why on stderr. */
static int lock_data_dir(const char *dir)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "telltale serve: cannot create data directory %s: %s\n", dir,
                strerror(errno));
        return -1;
    }
    char path[PATH_MAX + 8];
    if ((size_t)snprintf(path, sizeof path, "%s/lock", dir) >= sizeof path) {
        fprintf(stderr, "telltale serve: data directory path too long\n");
        return -1;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        fprintf(stderr, "telltale serve: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = 0;
        pid[strcspn(pid, "\n")] = 0;
        if (e == EWOULDBLOCK) {
            fprintf(stderr,
                    "telltale serve: data directory %s is in use by another collector "
                    "(pid %s, lock %s); stop it or give another --data\n",
                    dir, pid[0] ? pid : "unknown", path);
        } else {
            fprintf(stderr, "telltale serve: cannot lock %s: %s\n", path, strerror(e));
        }
        close(fd);
        return -1;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        fprintf(stderr, "telltale serve: cannot write %s: %s\n", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* Raise the descriptor limit to its hard maximum: every agent connection, HTTP client and
 * live-stream subscriber holds one, and the default soft limit (1024) is far below
 * --max-connections. Logged at start so an operator sees the figure in effect. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return;
    }
    rlim_t before = rl.rlim_cur;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            rl.rlim_cur = before;
        }
    }
    if (rl.rlim_cur != before) {
        log_info("descriptor limit raised from %llu to %llu", (unsigned long long)before,
                 (unsigned long long)rl.rlim_cur);
    } else {
        log_info("descriptor limit %llu (the hard limit; raise it to serve more connections)",
                 (unsigned long long)rl.rlim_cur);
    }
}

int serve_main(int argc, char **argv)
{
    struct collector_opts o;
    opts_defaults(&o);
    int rc = parse_args(argc, argv, &o);
    if (rc) {
        return rc == 1 ? 0 : 2;
    }
    if (add_default_listeners(&o) != 0 || check_ingest_open(&o) != 0) {
        return 2;
    }
    log_verbose = o.verbose;
    /* Whatever the collector creates (the database, its WAL and SHM, the token, the ready file,
     * the socket) is for its user alone (docs/security.md). */
    umask(077);
    int lock_fd = lock_data_dir(o.data_dir);
    if (lock_fd < 0) {
        return 1;
    }
    raise_fd_limit();
    otlp_decode_init(); /* before any thread uses jansson */
    /* Signals arrive through the loop's signalfd: block them in every thread. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT); /* before any thread: webhooks use libcurl */
    struct running r;
    memset(&r, 0, sizeof r);
    char http_bound[300] = "";
    if (start_all(&o, &r, http_bound, sizeof http_bound) != 0) {
        stop_all(&r);
        return 1;
    }
    for (int i = 0; i < o.n_listen; i++) {
        char ep[400];
        tt__endpoint_format(&o.listen[i], ep, sizeof ep);
        log_info("listening on %s", ep);
    }
    announce_ingest(&o);
    if (http_bound[0]) {
        log_info("HTTP API on %s://%s/", o.https ? "https" : "http", http_bound);
        secure_announce(o.https ? "https" : "http", http_bound, auth_operator_token(r.auth),
                        r.token_path[0] ? r.token_path : o.operator_token_file);
    }
    if (r.otlp_bound[0]) {
        log_info("OTLP/HTTP on %s://%s/v1/ (traces, logs, metrics)", o.https ? "https" : "http",
                 r.otlp_bound);
    }
    if (o.ready_file[0] && write_ready(&o, http_bound, r.otlp_bound, r.nats != NULL) != 0) {
        fprintf(stderr, "telltale serve: cannot write %s: %s\n", o.ready_file, strerror(errno));
        stop_all(&r);
        return 1;
    }
    ingest_run(r.ingest);
    stop_all(&r);
    log_info("stopped");
    close(lock_fd); /* after everything that writes the directory has stopped */
    return 0;
}
