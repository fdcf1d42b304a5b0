/*
 * collector.h - what the parts of `telltale serve` share: its options, its counters, and the
 * item that carries one batch from ingest through the store to the live fan-out.
 *
 * Threads:
 *   loop (the main thread)    epoll over listeners and agent connections: frames in, acks out;
 *                             store completions back to their sources (source/source.h)
 *   store                     the only SQLite writer: dedup, insert, commit, then hands items back
 *   http (libmicrohttpd)      queries on read-only connections, live-stream subscribers
 * The counters are atomics, written by whichever thread sees the event, read by /metrics.
 */
#ifndef TT_COLLECTOR_COLLECTOR_H
#define TT_COLLECTOR_COLLECTOR_H

#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>

#include "common/batch.h"
#include "common/wire.h"

#define COLLECTOR_MAX_LISTEN 8

enum sync_level { SYNC_OFF = 0, SYNC_NORMAL = 1, SYNC_FULL = 2 };

struct collector_opts {
    char data_dir[PATH_MAX];
    tt__endpoint listen[COLLECTOR_MAX_LISTEN];
    int n_listen;
    char http[300];      /* HOST:PORT, empty for none */
    char otlp_http[300]; /* --otlp-http HOST:PORT: a listener for OTLP/HTTP alone; empty: none */
    int sync_level;
    char store[512];    /* the store's URL (store.h); empty: the default, sqlite */
    uint64_t max_frame; /* largest frame body accepted */
    uint64_t max_raw;   /* largest decompressed payload */
    uint64_t max_conns;
    uint64_t queue_bytes; /* frames waiting for the store: above this, ingest stops reading */
    uint32_t max_events;  /* events per batch */
    uint32_t max_attrs;   /* attributes per event */
    uint64_t hello_timeout_ms;
    uint64_t idle_timeout_ms;
    uint64_t grace_ms; /* SIGTERM: drain, commit and ack within this */
    char ready_file[PATH_MAX];
    int verbose;
    char
        operator_token_file[PATH_MAX]; /* empty: $TELLTALE_OPERATOR_TOKEN, or DATA/operator.token */
    int no_auth;                       /* --no-auth: no operator token at all */
    char allowed_hosts[1024];          /* --allowed-hosts: extra Host header values */
    char ingest_tokens[PATH_MAX];      /* empty: identity from the hello */
    char config[PATH_MAX];             /* alerting configuration; empty: the defaults */
    char comply_policy[PATH_MAX];      /* --comply-policy: the collector's rules; empty: none */
    int64_t retain_ns;                 /* --retain: events older than this go; 0: kept */
    uint64_t max_bytes;                /* --max-bytes: the store's size on disk; 0: no limit */
    double retain_keep_factor;         /* --retain-keep-factor (retain.h) */
    double retain_confidence;          /* --retain-confidence */
    unsigned ingest_uids[32];          /* --ingest-uids: Unix-socket peers allowed besides us */
    int n_ingest_uids;
    unsigned ingest_gids[32]; /* --ingest-gids: peers whose primary group is one of these */
    int n_ingest_gids;
    int ingest_open; /* --ingest-open: TCP agents without a token (loopback listeners only) */
    /* TLS (docs/security.md): certificate and key for tls:// listeners and --https, and the
     * CA whose client certificates tls:// agents must present (empty: none required) */
    char tls_cert[PATH_MAX];
    char tls_key[PATH_MAX];
    char tls_client_ca[PATH_MAX];
    int https; /* --https: the HTTP API over TLS with tls_cert and tls_key */
    /* OTLP export (export.h): --otlp-export URL (empty: from OTEL_EXPORTER_OTLP_*), its queue's
     * bound in bytes, and how long a request is retried */
    char otlp_export[1024];
    uint64_t otlp_export_queue;
    uint64_t otlp_export_retry_ms;
    /* NATS JetStream ingest (source/nats.h): --nats servers (empty: none), the stream, the
     * subject prefix, the durable consumer, the stream's replicas, the ack wait and the token */
    char nats[1024];
    char nats_stream[64];
    char nats_subject[128];
    char nats_durable[64];
    uint64_t nats_replicas;
    uint64_t nats_ack_wait_ms;
    char nats_token_file[PATH_MAX];
};

/* Why input was refused; each has a counter and a name in /metrics. */
enum reject_reason {
    REJ_FRAME_TOO_LARGE,
    REJ_BAD_CRC,
    REJ_BAD_HEADER,
    REJ_RAW_TOO_LARGE,
    REJ_BAD_COMPRESSION,
    REJ_BAD_PAYLOAD,
    REJ_TRUNCATED,
    REJ_NO_HELLO,
    REJ_BAD_HELLO,
    REJ_PROTOCOL,
    REJ_AUTH,
    REJ_TOO_MANY_CONNS,
    REJ_SEQ_OVERLAP,
    REJ_HELLO_TIMEOUT,
    REJ_IDLE_TIMEOUT,
    REJ_STORE_ERROR,
    REJ_PEER,       /* a Unix-socket peer whose uid may not ingest, or TCP without a token */
    REJ_IDENTITY,   /* an agent name or instance that belongs to another identity */
    REJ_SLOW_FRAME, /* an admitted partial frame that stopped arriving */
    REJ_TLS,        /* TLS handshake failed: not TLS, no or an unknown client certificate (mTLS) */
    REJ__COUNT
};

const char *reject_name(int reason);

/* Upper bounds of the store commit latency histogram in /metrics, in microseconds. */
#define COMMIT_HIST_BUCKETS 12
#define COMMIT_HIST_BOUNDS_US                                                                      \
    {                                                                                              \
        100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000              \
    }

struct collector_stats {
    _Atomic uint64_t frames;       /* batch frames received and valid */
    _Atomic uint64_t events;       /* events stored (after dedup) */
    _Atomic uint64_t bytes;        /* bytes read from agents */
    _Atomic uint64_t dedup_frames; /* frames already stored, acked again */
    _Atomic uint64_t dedup_events;
    _Atomic uint64_t skewed_hellos; /* agents whose clock was off by CLOCK_SKEW_FLAG_MS or more */
    _Atomic uint64_t skewed_frames; /* their batches, stored with the clock_skew_ms flag */
    _Atomic uint64_t conns_open;
    _Atomic uint64_t conns_total;
    _Atomic uint64_t commits;
    _Atomic uint64_t commit_ns_total;
    _Atomic uint64_t commit_ns_max;
    _Atomic uint64_t store_errors;
    _Atomic uint64_t rejected[REJ__COUNT];
    /* The ingest budget (source/budget.h), published by the loop: [0] partial frames,
     * [1] admitted batches. */
    _Atomic uint64_t budget_limit[2], budget_used[2], budget_peak[2];
    _Atomic uint64_t budget_waits; /* admissions that had to wait (a socket left unread) */
    _Atomic uint64_t commit_hist[COMMIT_HIST_BUCKETS + 1]; /* by COMMIT_HIST_BOUNDS_US, +Inf */
};

extern struct collector_stats cstats;

static inline void cstat_add(_Atomic uint64_t *c, uint64_t v)
{
    atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}

/* Count one store commit of dt nanoseconds in the latency histogram (store thread). */
static inline void cstat_commit_observe(uint64_t dt_ns)
{
    static const uint64_t bounds[COMMIT_HIST_BUCKETS] = COMMIT_HIST_BOUNDS_US;
    int i = 0;
    while (i < COMMIT_HIST_BUCKETS && dt_ns > bounds[i] * 1000) {
        i++;
    }
    cstat_add(&cstats.commit_hist[i], 1);
}

#define IDENTITY_MAX 320

/* The identity an agent connection established with its hello. */
struct agent_ident {
    char agent[256];
    char identity[IDENTITY_MAX]; /* who connected: "uid:N", "token:AGENT", ... (identity.h) */
    uint8_t instance[16];
    uint32_t pid;
    char host[256];
    char library[64];
    uint64_t start_unix_ns;
    /* The agent's wall clock minus the collector's at its hello, in ms, when it differs by
     * CLOCK_SKEW_FLAG_MS or more (0 within that, or when the agent did not say): its batches
     * are stored with their own times and this flag (docs/wire-format.md, "Clock skew"). */
    int64_t clock_skew_ms;
};

#define CLOCK_SKEW_FLAG_MS 2000

enum store_result {
    STORE_PENDING = 0,
    STORE_OK = 1,     /* committed */
    STORE_DUP = 2,    /* every event was already stored: ack again */
    STORE_REJECT = 3, /* never storable (overlapping seq range): reject permanently */
    STORE_RETRY = 4   /* storage failed: reject for now, the agent resends later */
};

/*
 * One batch on its way: filled by a source, committed by the store, published to live
 * subscribers, then answered by its source (source/source.h) and freed by the pipeline.
 */
struct source;
struct store_item {
    struct store_item *next;
    struct source *source; /* who submitted it (set by source_submit) */
    void *cookie;          /* the source's own reference, never dereferenced by others */
    uint64_t frame_no;     /* the source's own number for it (native: frame on its connection) */
    uint64_t received_ns;  /* Unix ns */
    struct agent_ident ident;
    tt__batch batch; /* summary and iterator; points into raw */
    uint8_t *raw;    /* the decompressed Batch payload (owned) */
    size_t raw_len;
    uint8_t *blob; /* what is stored: the compressed payload (owned), or NULL to store raw */
    size_t blob_len;
    int replayed;       /* the batch names an instance other than the connection's */
    int result;         /* enum store_result, set by the store */
    const char *reason; /* static text when rejected */
};

void store_item_free(struct store_item *it);

#endif
