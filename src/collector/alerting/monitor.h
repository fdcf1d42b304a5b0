/*
 * monitor.h - the operator's view of live agents: per-agent figures (rates, confidence, tool
 * latency, loss) kept from every committed batch, and the detectors that watch them.
 *
 * A detector is a unit: a small ops table (unit_ops) fed with signals drawn from the events of
 * one agent (a response's confidence, a tool call's begin or end, a sequence gap) and ticked a
 * few times a second (for silence). Each unit keeps a block of state per agent, zeroed when the
 * agent first appears. When a unit says so, the monitor raises an alert (alerts.h): stored,
 * streamed, counted, posted to webhooks. Units are configured in the file given to serve
 * --config (docs/detectors.md, "Alerting configuration"); config.c parses it.
 *
 * Threads: monitor_on_commit runs on the ingest thread; the tick runs on the monitor's timer
 * thread; the views are read by HTTP threads. One mutex (monitor.lock) guards every agent's
 * state; none of these paths waits for I/O while holding it.
 */
#ifndef TT_COLLECTOR_MONITOR_H
#define TT_COLLECTOR_MONITOR_H

#include <stddef.h>
#include <stdint.h>

#include "collector/collector.h"
#include "collector/alerting/detect.h"
#include "common/batch.h"
#include "common/buf.h"

#define MON_NAME_MAX 64
#define MON_UNITS_MAX 32
#define MON_HOOKS_MAX 8
#define MON_AGENTS_MAX 8192

enum mon_sig_type {
    SIG_CONFIDENCE = 1, /* a response ended: value = exp(mean log-prob), in [0, 1] */
    SIG_TOOL_BEGIN = 2, /* a tool step began: name, query */
    SIG_TOOL_END = 3,   /* a tool step ended: value = latency in seconds, error */
    SIG_GAP = 4,        /* value = events never received (a hole in the sequence numbers) */
    SIG_METRIC = 5,     /* a metric sample: name, value, unit (query holds the unit) */
    SIG_SCORE = 6,      /* a named score of a response (metric kind 4): name, value, id */
    SIG_DECISION = 7    /* a compliance decision (a log with comply.* attributes): name = the
                         * rule, query = why, step = the step's name, value = 2 block or 1 flag,
                         * id = the step, error = 1 when the collector made it */
};

/* Metric kind 4 on the wire: a named per-response score (tt_score; response_id attribute). */
#define MON_METRIC_SCORE 4

struct mon_signal {
    int type;
    int64_t time_ns; /* the event's time, Unix ns */
    double value;
    int error;      /* SIG_TOOL_END: status other than ok */
    tt__bstr name;  /* SIG_TOOL_BEGIN: the tool; SIG_TOOL_END: the tool, when the end says */
    tt__bstr query; /* SIG_TOOL_BEGIN: its arguments */
    tt__bstr session;
    tt__bstr step; /* SIG_DECISION: the step's name */
    uint64_t id;   /* response id, step id, or first missing seq */
    uint64_t n;    /* SIG_GAP: the events never received, exactly (value rounds it) */
};

/* What happened to an incident (alert.event). */
enum incident_event {
    INC_FIRING = 0,  /* opened, or reopened within the flap window */
    INC_UPDATED = 1, /* the condition repeated (count, last value, last seen moved) */
    INC_RESOLVED = 2 /* clear for the unit's resolve time */
};

/* One incident, as raised by a unit, then as stored and sent at each of its events. A unit's
 * feed/tick fills message, value, threshold, key and the explanation fields; the monitor
 * fills the rest. The alerts table holds one row per incident (alerts.c), so "alert" and
 * "incident" name the same row: /api/v1/alerts and /api/v1/incidents list it. */
struct alert {
    int64_t id;          /* the incident's id (alerts_next_id), the same for all its events */
    int64_t time_ns;     /* when it was first raised, Unix ns */
    int event;           /* enum incident_event */
    int64_t last_ns;     /* the condition's last repeat */
    int64_t resolved_ns; /* 0 while firing */
    uint64_t count;      /* repeats of the condition since it opened */
    uint32_t flaps;      /* times it reopened within the flap window */
    char key[128];       /* what the unit keys the condition by within the agent: signal, tool */
    char agent[256];
    char detector[MON_NAME_MAX]; /* the unit's name in the configuration */
    char type[16];               /* the unit's type: drift, threshold, ... */
    char severity[16];           /* info, warning, critical (a unit may set it: comply) */
    char session[256];
    char message[1024];
    double value; /* what crossed the threshold */
    double threshold;
    char unit[16];       /* the value's unit: "ms", "", "events", ... */
    uint64_t example_id; /* a response (drift, threshold) or step id; 0 none */
    int example_is_response;
};

struct unit;

struct unit_ops {
    const char *type; /* as the configuration names it */
    int64_t default_cooldown_ms;
    /* Apply one key of the unit's section (the framework handles type, severity, cooldown_ms).
     * Returns 0, -ENOENT for an unknown key, -EINVAL for a bad value. */
    int (*set)(struct unit *u, const char *key, const char *value);
    /* Check the unit once configured and set u->state_size. 0, or -EINVAL with err set. */
    int (*ready)(struct unit *u, char *err, size_t errlen);
    /* One signal for one agent's state: 1 and *a filled (message, value, threshold) to raise. */
    int (*feed)(const struct unit *u, void *state, const struct mon_signal *s, struct alert *a);
    /* A periodic look (every MON_TICK_MS; NULL if the unit needs none); last_seen_ns is when the
     * agent's last batch arrived (Unix ns). 1 and *a filled to raise. */
    int (*tick)(const struct unit *u, void *state, int64_t now_ns, int64_t last_seen_ns,
                struct alert *a);
    /* The unit's statistic for display (NULL if it has none): 0 and *out filled, or -1 while
     * it has seen nothing. */
    int (*read)(const struct unit *u, const void *state, struct detect_reading *out);
    /* 1 while the condition of the unit's last raise still holds without a new raise (silence:
     * still silent), so its incident does not resolve. NULL: clear once nothing is raised. */
    int (*active)(const struct unit *u, const void *state, int64_t last_seen_ns);
};

/* What a drift or threshold unit watches ("signal = ..." in the configuration). */
enum drift_signal {
    DRIFT_CONFIDENCE = 0,   /* confidence: a response's exp(mean log-prob) */
    DRIFT_TOOL_LATENCY = 1, /* tool_latency: a tool call's duration */
    DRIFT_METRIC = 2,       /* metric:NAME: every sample of the metric NAME (e.g. loss) */
    DRIFT_SCORE = 3         /* score:NAME: the score NAME of each response (tt_score) */
};

/* What a drift unit's CUSUM starts from before its `warmup`, direction and `params` apply:
 * chosen with the change-case suite (tests/support/change_cases.h, docs/detectors.md). */
#define DRIFT_CUSUM_DEFAULTS                                                                       \
    "baseline=robust k=0.25 h=25 clip=3 scale_h=20 window=1000 delay=64 warmup=200"

struct unit {
    char name[MON_NAME_MAX];
    const struct unit_ops *ops;
    char severity[16];
    int64_t cooldown_ns; /* between two "updated" notices of one incident (cooldown_ms) */
    int cooldown_set;
    int64_t resolve_ns; /* an incident resolves once clear this long (resolve_ms) */
    int64_t flap_ns;    /* a condition back within this of resolving reopens it (flap_ms) */
    size_t state_size;  /* bytes of per-agent state */
    size_t state_off;   /* where in the agent's block (set by the monitor) */
    union {
        struct {
            double min, max; /* raise below min (has_min) or above max (has_max) */
            int has_min, has_max;
            int signal; /* enum drift_signal */
            char name[MON_NAME_MAX];
        } threshold;
        struct {
            int signal;              /* enum drift_signal */
            char name[MON_NAME_MAX]; /* metric:NAME, score:NAME */
            const struct detect_ops *algo;
            union detect_params p;
            char params[256];
            uint32_t warmup;
        } drift;
        struct {
            uint32_t window, min_calls;
            double max_rate;
        } error_rate;
        struct {
            uint32_t repeats;
        } loop;
        struct {
            double seconds;
        } silence;
        struct {
            uint64_t min_events;
        } gap;
        struct {
            int flags; /* flagged decisions raise incidents too (default on) */
        } comply;
        struct {
            int signal;              /* enum drift_signal: DRIFT_METRIC or DRIFT_SCORE */
            char name[MON_NAME_MAX]; /* the metric or score; "*": any of them */
        } nonfinite;
        struct {
            int signal; /* enum drift_signal */
            char name[MON_NAME_MAX];
            int direction;        /* enum detect_mode: up (default), down, both */
            uint32_t window;      /* in-range samples the median and MAD are taken over (50) */
            uint32_t min_samples; /* before the first test (20, at most window) */
            uint32_t consecutive; /* out-of-range samples in a row to raise (1) */
            uint32_t relearn;     /* this many in a row become the new level (0: never) */
            double sigmas;        /* distance from the median in robust sigmas (6) */
            double min_change;    /* and at least this share of |median| (0) */
        } spike;
    } cfg;
};

#define MON_TICK_MS 200
#define MON_UPDATE_MS_DEFAULT 10000  /* cooldown_ms: between "updated" notices */
#define MON_RESOLVE_MS_DEFAULT 60000 /* resolve_ms: clear this long resolves an incident */
#define MON_FLAP_MS_DEFAULT 300000   /* flap_ms: back within this reopens the incident */

/* The unit types (units.c). */
const struct unit_ops *unit_find(const char *type);

#define WEBHOOK_SECRET_MAX 255

struct webhook_cfg {
    char name[MON_NAME_MAX];
    char url[1024];          /* for an Alertmanager: its base URL + /api/v2/alerts */
    int alertmanager;        /* [alertmanager.NAME]: Alertmanager's API v2 format */
    char generator_url[512]; /* Alertmanager: this collector's base URL, for generatorURL */
    uint32_t timeout_ms;     /* per attempt; default 2000 */
    uint32_t retries;        /* after the first attempt; default 3 */
    uint32_t backoff_ms;     /* before the first retry, doubling; default 200 */
    char secret_file[1024];  /* the HMAC key's file (0600); empty: unsigned posts */
    char ca_file[1024];      /* CA bundle to verify an https:// receiver; empty: the system's */
    char secret[WEBHOOK_SECRET_MAX + 1]; /* read by mon_config_load from secret_file */
    size_t secret_len;
};

/* The step kinds counted as external calls by default (tool, api, retrieval; bits 1 << kind of
 * telltale.h's tt_step_kind): the tool-error, tool-latency and loop detectors watch them. */
#define MON_CALL_KINDS_DEFAULT ((1u << 2) | (1u << 3) | (1u << 6))

/* [monitor] budget: the detectors' time on one committed batch is at most batch_ms plus
 * signal_us per event of the batch; past it the rest of the batch is not fed to the units
 * (counted), so no input and no configuration holds the ingest thread longer. */
#define MON_BUDGET_BATCH_MS_DEFAULT 50
#define MON_BUDGET_SIGNAL_US_DEFAULT 20
#define MON_BUDGET_MAX 60000 /* either key, in its unit */

struct mon_config {
    uint32_t call_kinds; /* [calls] kinds = ...: step kinds that are external calls */
    uint32_t budget_batch_ms, budget_signal_us; /* [monitor] (0 until finish: the defaults) */
    struct unit units[MON_UNITS_MAX];
    int n_units;
    struct webhook_cfg hooks[MON_HOOKS_MAX];
    int n_hooks;
};

#define MON_CONFIG_MAX (256u << 10) /* bytes in a configuration file */
#define MON_LINE_MAX 1024

/* The detectors that run without a configuration file (docs/detectors.md). */
int mon_config_defaults(struct mon_config *c);
/* Parse configuration text (name is for messages). 0, or -1 with err naming file and line. */
int mon_config_parse(struct mon_config *c, const char *text, size_t n, const char *name, char *err,
                     size_t errlen);
int mon_config_load(struct mon_config *c, const char *path, char *err, size_t errlen);

struct monitor;
struct hub;
struct alerts;

/* Start the monitor and its timer thread; cfg is copied. */
int monitor_open(struct monitor **out, const struct mon_config *cfg, struct alerts *alerts,
                 char *err, size_t errlen);
void monitor_close(struct monitor *m);

/* The ingest hook: every committed batch (ctx is the monitor). */
void monitor_on_commit(void *ctx, const struct store_item *it);

/* Several collectors sharing one store (store.h's store_follow; docs/design.md, "Several
 * collectors"): each follows every batch committed by any of them, so each monitor sees the
 * same stream and reaches the same incidents, and only the leader sends them. A following
 * monitor keeps its incidents and holds their notices (counted); when it takes the lead, the
 * caller takes over in the store what the previous leader stored (mon_incident_ref.taken)
 * and monitor_lead sends what the store lacks. A monitor leads from its open until
 * monitor_follow. */
struct mon_incident_ref {
    char agent[256];
    char detector[MON_NAME_MAX];
    char key[128];
    int64_t id;   /* this monitor's number for it */
    int resolved; /* clear here (kept for the flap time) */
    int taken;    /* set by the caller: the stored incident is this monitor's now */
};
void monitor_follow(struct monitor *m);
int monitor_leading(struct monitor *m);
/* The incidents held now, firing or resolved (a malloc'd array in *out): their count, -1 when
 * out of memory. */
int monitor_incidents(struct monitor *m, struct mon_incident_ref **out);
/* Lead from now on: a firing incident not taken over was never stored and fires now; a
 * resolved one taken over resolves; a taken one with repeats held sends an update. refs is
 * sorted in place. */
void monitor_lead(struct monitor *m, struct mon_incident_ref *refs, int n);

/* What one agent looks like now. */
struct mon_agent_view {
    int64_t last_seen_ns; /* Unix ns of the last batch */
    double events_per_s;  /* over the last 10 s */
    double responses_per_s;
    double tool_calls_per_s;
    double confidence;      /* mean over the last 10 s, NAN without responses */
    double confidence_last; /* NAN before the first response */
    uint64_t events, responses, tool_calls, tool_errors;
    uint64_t loss_gaps;     /* events missing from sequence gaps seen since start */
    uint64_t loss_reported; /* drops the agent's library reported */
    uint64_t alerts;        /* incidents opened since the collector started */
    uint64_t unchecked;     /* signals its detectors skipped, over their time budget */
    int n_incidents;        /* incidents firing now */
    int n_readings;         /* units with a statistic to show (drift) */
    struct {
        const char *detector; /* the unit's name (static for the monitor's life) */
        struct detect_reading r;
    } readings[MON_UNITS_MAX];
};

/* 0 and *out filled, or -1 if the monitor has not seen the agent since it started. */
int monitor_agent(struct monitor *m, const char *agent, struct mon_agent_view *out);

/* Append the per-agent Prometheus series (text format) to out. */
void monitor_metrics(struct monitor *m, tt__buf *out);

#endif
