/*
 * cmd_top.c - `telltale top`: a terminal view of the live agents, refreshed every second from
 * the collector's HTTP API (GET /api/v1/agents and GET /api/v1/incidents?state=open): events
 * and responses per second, confidence, loss, open alerts, how near the nearest drift detector
 * is to its threshold, and the newest incidents not acknowledged (FIRING or resolved, with
 * their detector, key, repeats and how long they lasted). Agent names
 * and alert messages come from telemetry, so control characters are replaced before printing.
 * NO_COLOR (or output that is not a terminal) turns colour off; the columns shrink to the
 * terminal's width.
 */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

static const char usage[] =
    "usage: telltale top [options]\n"
    "\n"
    "A live view of the agents a collector sees: events and responses per second, mean\n"
    "response confidence over 10 s, events lost, open alerts, and DRIFT: how near the\n"
    "agent's nearest drift detector is to alerting (100% alerts). Below 60 columns\n"
    "RESP/S and DRIFT are left out.\n"
    "\n"
    "  --http HOST:PORT     the collector's HTTP API (default $TELLTALE_HTTP or "
    "127.0.0.1:7371)\n" CLI_AUTH_HELP
    "  --once               print one view and exit (for scripts)\n"
    "  --interval-ms MS     refresh period (default 1000)\n"
    "  --width N            columns (default: the terminal's, or $COLUMNS, or 80)\n"
    "  --help               this text\n"
    "\n"
    "Colour is off when NO_COLOR is set or the output is not a terminal.\n"
    "Exit status: 0 after --once or when interrupted; 1 the collector refused the request\n"
    "(printed); 2 usage error; 3 the collector could not be reached.\n";

#define BODY_MAX (8u << 20)
#define TOP_ALERTS 5

struct body {
    char *p;
    size_t n;
};

static int sink(void *ctx, const char *data, size_t n)
{
    struct body *b = ctx;
    if (b->n + n > BODY_MAX) {
        return -1;
    }
    char *q = realloc(b->p, b->n + n + 1);
    if (!q) {
        return -1;
    }
    memcpy(q + b->n, data, n);
    b->n += n;
    q[b->n] = 0;
    b->p = q;
    return 0;
}

struct top {
    const char *http, *token;
    const struct cli_auth *auth; /* where the token came from */
    int width, color;
};

/* GET path as JSON; *status the HTTP status (-1 unreachable). */
static json_t *get_json(const struct top *t, const char *path, const char *qs, long *status,
                        char *err, size_t errlen)
{
    struct body b = {NULL, 0};
    *status = cli_http_get(t->http, path, qs, t->token, 10, sink, &b, err, errlen);
    json_t *o = NULL;
    if (*status == 200 && b.p) {
        json_error_t jerr;
        o = json_loads(b.p, 0, &jerr);
    }
    free(b.p);
    return o;
}

/* Append s to line (width-limited, never splitting a UTF-8 sequence). */
static void put(char *line, size_t cap, size_t width, const char *s)
{
    size_t len = strlen(line), cols = 0;
    for (const unsigned char *p = (const unsigned char *)line; *p; p++) {
        cols += (*p & 0xc0) != 0x80;
    }
    for (const unsigned char *p = (const unsigned char *)s; *p && len + 4 < cap; p++) {
        if ((*p & 0xc0) != 0x80) {
            if (cols == width) {
                break;
            }
            cols++;
        }
        line[len++] = (char)*p;
    }
    line[len] = 0;
}

static double num(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

static void agent_row(const struct top *t, json_t *a, int name_w, int wide)
{
    char name[512], cell[256], line[2048] = "";
    json_t *n = json_object_get(a, "name");
    snprintf(name, sizeof name, "%s", json_is_string(n) ? json_string_value(n) : "?");
    cli_sanitize(name);
    json_t *live = json_object_get(a, "live"), *loss = json_object_get(a, "loss");
    double conf = json_is_object(live) ? num(live, "confidence") : NAN;
    double lost = num(loss, "proven") + num(loss, "reported_dropped");
    int64_t open = (int64_t)num(a, "open_alerts");
    snprintf(cell, sizeof cell, "%-*.*s", name_w, name_w, name);
    put(line, sizeof line, (size_t)t->width, cell);
    snprintf(cell, sizeof cell, " %8.1f", json_is_object(live) ? num(live, "events_per_s") : 0.0);
    put(line, sizeof line, (size_t)t->width, cell);
    if (wide) {
        snprintf(cell, sizeof cell, " %7.1f",
                 json_is_object(live) ? num(live, "responses_per_s") : 0.0);
        put(line, sizeof line, (size_t)t->width, cell);
    }
    if (isnan(conf)) {
        snprintf(cell, sizeof cell, " %6s", "-");
    } else {
        snprintf(cell, sizeof cell, " %6.3f", conf);
    }
    put(line, sizeof line, (size_t)t->width, cell);
    snprintf(cell, sizeof cell, " %7.0f", isnan(lost) ? 0.0 : lost);
    put(line, sizeof line, (size_t)t->width, cell);
    snprintf(cell, sizeof cell, " %6lld", (long long)open);
    put(line, sizeof line, (size_t)t->width, cell);
    if (wide) {
        /* The drift detector nearest its threshold, as a percentage of it. */
        json_t *dets = json_is_object(live) ? json_object_get(live, "detectors") : NULL;
        double fill = NAN;
        size_t k;
        json_t *d;
        json_array_foreach(dets, k, d)
        {
            double f = num(d, "stat") / num(d, "threshold");
            fill = isnan(fill) || f > fill ? f : fill;
        }
        if (isnan(fill)) {
            snprintf(cell, sizeof cell, " %6s", "-");
        } else {
            snprintf(cell, sizeof cell, " %5.0f%%", fill * 100 > 999 ? 999 : fill * 100);
        }
        put(line, sizeof line, (size_t)t->width, cell);
    }
    const char *on = t->color && open > 0 ? "\x1b[31m" : t->color && conf < 0.5 ? "\x1b[33m" : "";
    printf("%s%s%s\n", on, line, *on ? "\x1b[0m" : "");
}

static void alert_rows(const struct top *t, json_t *alerts)
{
    size_t i;
    json_t *al;
    json_array_foreach(alerts, i, al)
    {
        if (i == TOP_ALERTS) {
            printf("... %zu more open alerts\n", json_array_size(alerts) - TOP_ALERTS);
            break;
        }
        char text[1400], line[1600] = "", key[160] = "", span[64] = "";
        json_t *agent = json_object_get(al, "agent"), *msg = json_object_get(al, "message");
        json_t *sev = json_object_get(al, "severity"), *det = json_object_get(al, "detector");
        json_t *status = json_object_get(al, "status"), *k = json_object_get(al, "key");
        int firing = json_is_string(status) && !strcmp(json_string_value(status), "firing");
        if (json_is_string(k) && json_string_length(k)) {
            snprintf(key, sizeof key, "[%s]", json_string_value(k));
        }
        /* How long it has lasted (firing) or lasted (resolved), from its first and last time. */
        double first = num(al, "time_unix_ns"),
               until = firing ? (double)time(NULL) * 1e9 : num(al, "resolved_unix_ns");
        double secs = (until - first) / 1e9;
        if (isfinite(secs) && secs >= 0) {
            snprintf(span, sizeof span, secs < 120 ? " %.0fs" : " %.0fm",
                     secs < 120 ? secs : secs / 60);
        }
        snprintf(text, sizeof text, "#%lld %s %s %s %s%s x%.0f%s: %s", (long long)num(al, "id"),
                 firing ? "FIRING" : "resolved", json_is_string(sev) ? json_string_value(sev) : "?",
                 json_is_string(agent) ? json_string_value(agent) : "?",
                 json_is_string(det) ? json_string_value(det) : "?", key,
                 isnan(num(al, "count")) ? 1.0 : num(al, "count"), span,
                 json_is_string(msg) ? json_string_value(msg) : "");
        cli_sanitize(text);
        put(line, sizeof line, (size_t)t->width, text);
        printf("%s\n", line);
    }
}

static void header(const struct top *t, size_t agents, size_t alerts, int name_w, int wide)
{
    char line[1024] = "", head[512], host[300];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    char clock[16];
    strftime(clock, sizeof clock, "%H:%M:%S", &tm);
    snprintf(host, sizeof host, "%s", t->http);
    cli_sanitize(host);
    snprintf(head, sizeof head, "telltale top  %s  %s  %zu agents  %zu open alerts", clock, host,
             agents, alerts);
    put(line, sizeof line, (size_t)t->width, head);
    printf("%s%s%s\n", t->color ? "\x1b[1m" : "", line, t->color ? "\x1b[0m" : "");
    line[0] = 0;
    snprintf(head, sizeof head, "%-*s %8s%s %6s %7s %6s%s", name_w, "AGENT", "EV/S",
             wide ? "  RESP/S" : "", "CONF", "LOSS", "ALERTS", wide ? "  DRIFT" : "");
    put(line, sizeof line, (size_t)t->width, head);
    printf("%s\n", line);
}

/* One view. Returns an exit status (0 fine). */
static int draw(const struct top *t)
{
    char err[512] = "";
    long st1, st2;
    json_t *agents = get_json(t, "/api/v1/agents", NULL, &st1, err, sizeof err);
    json_t *alerts =
        agents ? get_json(t, "/api/v1/incidents", "state=open&limit=100", &st2, err, sizeof err)
               : NULL;
    if (!agents || !alerts) {
        long st = agents ? st2 : st1;
        cli_http_failed("telltale top", st, err[0] ? err : "unreadable answer", t->auth);
        json_decref(agents);
        json_decref(alerts);
        return st1 < 0 ? EXIT_UNREACHABLE : EXIT_FAIL;
    }
    json_t *list = json_object_get(agents, "agents"), *al = json_object_get(alerts, "incidents");
    int wide = t->width >= 60;
    /* Numbers take 8+1+8+1+... columns; the name gets what is left, 8 to 32. */
    int name_w = t->width - (wide ? 8 + 7 : 0) - 9 - 7 - 8 - 7;
    name_w = name_w < 8 ? 8 : name_w > 32 ? 32 : name_w;
    header(t, json_array_size(list), json_array_size(al), name_w, wide);
    size_t i;
    json_t *a;
    json_array_foreach(list, i, a)
    {
        agent_row(t, a, name_w, wide);
    }
    if (json_array_size(al)) {
        char line[256] = "";
        put(line, sizeof line, (size_t)t->width, "OPEN ALERTS: incidents not acknowledged");
        printf("\n%s\n", line);
        alert_rows(t, al);
    }
    json_decref(agents);
    json_decref(alerts);
    return EXIT_OK;
}

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static int terminal_width(void)
{
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
        return ws.ws_col;
    }
    const char *c = getenv("COLUMNS");
    long v = c ? strtol(c, NULL, 10) : 0;
    return v >= 20 && v <= 1000 ? (int)v : 80;
}

int cmd_top(int argc, char **argv)
{
    static const struct option longopts[] = {{"http", required_argument, NULL, 'H'},
                                             CLI_AUTH_LONGOPTS,
                                             {"once", no_argument, NULL, '1'},
                                             {"interval-ms", required_argument, NULL, 'i'},
                                             {"width", required_argument, NULL, 'w'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    struct top t = {.http = cli_http_default()};
    struct cli_auth auth = {0};
    int once = 0, opt;
    long interval = 1000, width = 0;
    char *end;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'H':
            t.http = optarg;
            break;
        case 't':
        case 'F':
        case 'D':
            cli_auth_option(&auth, opt, optarg);
            break;
        case '1':
            once = 1;
            break;
        case 'i':
            interval = strtol(optarg, &end, 10);
            if (*end || interval < 100 || interval > 3600000) {
                fprintf(stderr, "telltale top: --interval-ms: 100 to 3600000\n");
                return EXIT_USAGE;
            }
            break;
        case 'w':
            width = strtol(optarg, &end, 10);
            if (*end || width < 20 || width > 1000) {
                fprintf(stderr, "telltale top: --width: 20 to 1000\n");
                return EXIT_USAGE;
            }
            break;
        case 'h':
            fputs(usage, stdout);
            return EXIT_OK;
        default:
            fprintf(stderr, "telltale top: unknown option or missing value: %s\n",
                    argv[optind - 1]);
            return EXIT_USAGE;
        }
    }
    int failed;
    t.token = cli_auth_token(&auth, "telltale top", &failed);
    t.auth = &auth;
    if (failed) {
        return EXIT_FAIL;
    }
    const char *nc = getenv("NO_COLOR");
    t.color = isatty(STDOUT_FILENO) && !(nc && *nc);
    t.width = width ? (int)width : terminal_width();
    if (once) {
        return draw(&t);
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    while (!stop) {
        if (isatty(STDOUT_FILENO)) {
            fputs("\x1b[H\x1b[2J", stdout);
        }
        int rc = draw(&t);
        fflush(stdout);
        if (rc == EXIT_FAIL) {
            return rc;
        }
        t.width = width ? (int)width : terminal_width();
        for (long ms = 0; ms < interval && !stop; ms += 50) {
            usleep(50000);
        }
    }
    return EXIT_OK;
}
