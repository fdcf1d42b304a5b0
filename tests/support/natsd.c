/*
 * natsd.c - private nats-server processes for tests (natsd.h).
 */
#include "natsd.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "serve.h"
#include "test.h"

static const char *server_path(void)
{
    static const char *const where[] = {"/usr/sbin/nats-server", "/usr/bin/nats-server",
                                        "/usr/local/bin/nats-server"};
    for (size_t i = 0; i < sizeof where / sizeof where[0]; i++) {
        if (access(where[i], X_OK) == 0) {
            return where[i];
        }
    }
    return NULL;
}

static void write_conf(const struct tt_nats *ns, int i)
{
    const struct tt_nats_node *nd = &ns->node[i];
    char store[700];
    snprintf(store, sizeof store, "%s/nats%d", tt_test_tmpdir(), i);
    if (mkdir(store, 0700) != 0) {
        CHECK(access(store, F_OK) == 0);
    }
    int fd = open(nd->conf, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CHECK(fd >= 0);
    FILE *f = fdopen(fd, "w");
    CHECK(f != NULL);
    fprintf(f,
            "server_name: n%d\n"
            "listen: 127.0.0.1:%d\n"
            "http: 127.0.0.1:%d\n"
            "authorization { token: \"%s\" }\n"
            "jetstream { store_dir: \"%s\", max_memory_store: 64MB, max_file_store: 1GB }\n",
            i + 1, nd->port, nd->http_port, ns->token, store);
    if (ns->n > 1) {
        fprintf(f, "cluster {\n  name: tt\n  listen: 127.0.0.1:%d\n  routes: [\n",
                nd->cluster_port);
        for (int j = 0; j < ns->n; j++) {
            if (j != i) {
                fprintf(f, "    nats-route://127.0.0.1:%d\n", ns->node[j].cluster_port);
            }
        }
        fprintf(f, "  ]\n}\n");
    }
    CHECK(fclose(f) == 0);
}

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

int tt_nats_healthy(const struct tt_nats *ns, int i)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/healthz", ns->node[i].http_port);
    CURL *c = curl_easy_init();
    CHECK(c != NULL);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 2000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    }
    curl_easy_cleanup(c);
    return status == 200;
}

void tt_nats_explain(const struct tt_nats *ns)
{
    for (int i = 0; i < ns->n; i++) {
        const struct tt_nats_node *nd = &ns->node[i];
        if (!nd->pid) {
            printf("n%d: down\n", i + 1);
        } else {
            char addr[64];
            snprintf(addr, sizeof addr, "127.0.0.1:%d", nd->http_port);
            char *body = NULL;
            tt_test_http(addr, "GET", "/jsz?accounts=true&streams=true&consumers=true", NULL,
                         &body);
            /* One line: whitespace squeezed, the account's streams and consumers as JetStream
             * sees them on this node. */
            char *w = body;
            for (char *r = body; *r; r++) {
                if ((*r == ' ' || *r == '\n' || *r == '\t') &&
                    (w == body || w[-1] == ' ' || w[-1] == '{' || w[-1] == '[' || w[-1] == ':')) {
                    continue;
                }
                *w++ = *r == '\n' || *r == '\t' ? ' ' : *r;
            }
            *w = 0;
            const char *from = strstr(body, "\"account_details\"");
            printf("n%d /jsz: %s\n", i + 1, from ? from : body);
            free(body);
        }
        /* The node's warnings and errors, the last 12. */
        FILE *f = fopen(nd->log, "r");
        if (!f) {
            continue;
        }
        static char lines[12][400];
        int k = 0;
        char line[400];
        while (fgets(line, sizeof line, f)) {
            if (strstr(line, "[WRN]") || strstr(line, "[ERR]")) {
                snprintf(lines[k++ % 12], sizeof lines[0], "%s", line);
            }
        }
        fclose(f);
        for (int j = k > 12 ? k - 12 : 0; j < k; j++) {
            printf("n%d log: %s", i + 1, lines[j % 12]);
        }
    }
    fflush(stdout);
}

static void spawn(struct tt_nats *ns, int i)
{
    struct tt_nats_node *nd = &ns->node[i];
    const char *exe = server_path();
    CHECK(exe != NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int fd = open(nd->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execl(exe, exe, "-c", nd->conf, (char *)NULL);
        _exit(127);
    }
    nd->pid = pid;
}

/* Whether the log at path has needle in its first 64 KiB. */
static int log_says(const char *path, const char *needle)
{
    static char buf[65536];
    FILE *f = fopen(path, "r");
    if (!f) {
        return 0;
    }
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strstr(buf, needle) != NULL;
}

/* Wait for node i's health: 0, or 1 when it exited because a port was taken meanwhile. */
static int wait_up(struct tt_nats *ns, int i)
{
    double t0 = tt_test_now_ms();
    while (!tt_nats_healthy(ns, i)) {
        int st;
        if (waitpid(ns->node[i].pid, &st, WNOHANG) == ns->node[i].pid) {
            ns->node[i].pid = 0;
            CHECK_MSG(log_says(ns->node[i].log, "address already in use"),
                      "nats-server n%d exited at start (see %s)", i + 1, ns->node[i].log);
            return 1;
        }
        CHECK_MSG(tt_test_now_ms() - t0 < 30000, "nats-server n%d not healthy after 30 s (see %s)",
                  i + 1, ns->node[i].log);
        usleep(50000);
    }
    return 0;
}

static void wait_healthy(struct tt_nats *ns, int i)
{
    CHECK_MSG(wait_up(ns, i) == 0, "nats-server n%d: a port is taken (see %s)", i + 1,
              ns->node[i].log);
}

static void pick_ports(struct tt_nats *ns, int i)
{
    struct tt_nats_node *nd = &ns->node[i];
    nd->port = tt_test_free_port();
    nd->http_port = tt_test_free_port();
    nd->cluster_port = ns->n > 1 ? tt_test_free_port() : 0;
}

void tt_nats_start(struct tt_nats *ns, int n)
{
    memset(ns, 0, sizeof *ns);
    if (!server_path()) {
        SKIP("no nats-server (scripts/install-deps test installs it)");
    }
    CHECK(n >= 1 && n <= TT_NATS_MAX);
    ns->n = n;
    unsigned char rnd[16];
    FILE *u = fopen("/dev/urandom", "rb");
    CHECK(u && fread(rnd, 1, sizeof rnd, u) == sizeof rnd);
    fclose(u);
    for (int i = 0; i < 16; i++) {
        snprintf(ns->token + 2 * i, 3, "%02x", rnd[i]);
    }
    snprintf(ns->token_file, sizeof ns->token_file, "%s/nats.token", tt_test_tmpdir());
    int fd = open(ns->token_file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    CHECK(fd >= 0 && write(fd, ns->token, strlen(ns->token)) == (ssize_t)strlen(ns->token));
    close(fd);

    for (int i = 0; i < n; i++) {
        struct tt_nats_node *nd = &ns->node[i];
        pick_ports(ns, i);
        snprintf(nd->conf, sizeof nd->conf, "%s/nats%d.conf", tt_test_tmpdir(), i);
        snprintf(nd->log, sizeof nd->log, "%s/nats%d.log", tt_test_outdir(), i);
    }
    for (int i = 0; i < n; i++) {
        write_conf(ns, i);
        spawn(ns, i);
    }
    /* A node whose port another process took between the pick and its bind starts again on
     * new ports (its routes to the others find the cluster; theirs to it are retried in vain). */
    for (int i = 0; i < n; i++) {
        for (int tries = 0; wait_up(ns, i) != 0; tries++) {
            CHECK_MSG(tries < 5, "nats-server n%d: its ports keep being taken (see %s)", i + 1,
                      ns->node[i].log);
            pick_ports(ns, i);
            write_conf(ns, i);
            CHECK(truncate(ns->node[i].log, 0) == 0); /* a new try, a new log */
            spawn(ns, i);
        }
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        off += (size_t)snprintf(ns->urls + off, sizeof ns->urls - off, "%snats://127.0.0.1:%d",
                                i ? "," : "", ns->node[i].port);
    }
}

void tt_nats_kill(struct tt_nats *ns, int i, int hard)
{
    struct tt_nats_node *nd = &ns->node[i];
    if (!nd->pid) {
        return;
    }
    CHECK(kill(nd->pid, hard ? SIGKILL : SIGTERM) == 0);
    int st;
    CHECK(waitpid(nd->pid, &st, 0) == nd->pid);
    nd->pid = 0;
}

void tt_nats_restart(struct tt_nats *ns, int i)
{
    CHECK(ns->node[i].pid == 0);
    spawn(ns, i);
    wait_healthy(ns, i);
}

int tt_nats_restart_wait(struct tt_nats *ns, int i, int wait_ms)
{
    CHECK(ns->node[i].pid == 0);
    spawn(ns, i);
    double t0 = tt_test_now_ms();
    while (!tt_nats_healthy(ns, i)) {
        int st;
        CHECK_MSG(waitpid(ns->node[i].pid, &st, WNOHANG) == 0, "nats-server n%d exited (see %s)",
                  i + 1, ns->node[i].log);
        if (tt_test_now_ms() - t0 >= wait_ms) {
            return 0;
        }
        usleep(50000);
    }
    return 1;
}

void tt_nats_connect(struct tt_nats_conn *t, const struct tt_nats *ns, int64_t js_wait_ms)
{
    char urls[sizeof ns->urls];
    snprintf(urls, sizeof urls, "%s", ns->urls);
    const char *list[TT_NATS_MAX];
    int n = 0;
    for (char *save = NULL, *u = strtok_r(urls, ",", &save); u && n < TT_NATS_MAX;
         u = strtok_r(NULL, ",", &save)) {
        list[n++] = u;
    }
    natsOptions *o;
    CHECK(natsOptions_Create(&o) == NATS_OK);
    CHECK(natsOptions_SetServers(o, list, n) == NATS_OK);
    CHECK(natsOptions_SetToken(o, ns->token) == NATS_OK);
    CHECK(natsOptions_SetMaxReconnect(o, -1) == NATS_OK);
    CHECK(natsOptions_SetReconnectWait(o, 100) == NATS_OK);
    CHECK_MSG(natsConnection_Connect(&t->nc, o) == NATS_OK, "cannot connect to %s", ns->urls);
    natsOptions_Destroy(o);
    jsOptions jo;
    CHECK(jsOptions_Init(&jo) == NATS_OK);
    if (js_wait_ms > 0) {
        jo.Wait = js_wait_ms;
    }
    CHECK(natsConnection_JetStream(&t->js, t->nc, &jo) == NATS_OK);
}

void tt_nats_disconnect(struct tt_nats_conn *t)
{
    jsCtx_Destroy(t->js);
    natsConnection_Destroy(t->nc);
}
