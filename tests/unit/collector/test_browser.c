/*
 * test_browser.c - the Host header check of api/browser.c (DNS rebinding): which values name
 * the collector, on a loopback, a wildcard and a specific address, with --allowed-hosts.
 */
#include <string.h>

#include "collector/api/http.h"
#include "test.h"

static struct http_ctx ctx(const char *self, unsigned port, const char *allowed)
{
    struct http_ctx c;
    memset(&c, 0, sizeof c);
    snprintf(c.self_host, sizeof c.self_host, "%s", self);
    c.self_port = port;
    snprintf(c.allowed_hosts, sizeof c.allowed_hosts, "%s", allowed ? allowed : "");
    return c;
}

TEST(browser_host_must_name_the_loopback_listener_and_its_port)
{
    struct http_ctx c = ctx("127.0.0.1", 7371, NULL);
    CHECK(browser_host_ok(&c, "127.0.0.1:7371"));
    CHECK(browser_host_ok(&c, "localhost:7371"));
    CHECK(browser_host_ok(&c, "LOCALHOST:7371"));
    CHECK(browser_host_ok(&c, "[::1]:7371"));
    CHECK(!browser_host_ok(&c, NULL));
    CHECK(!browser_host_ok(&c, ""));
    CHECK(!browser_host_ok(&c, "127.0.0.1")); /* port 80 */
    CHECK(!browser_host_ok(&c, "127.0.0.1:7372"));
    CHECK(!browser_host_ok(&c, "evil.example:7371")); /* a rebound name */
    CHECK(!browser_host_ok(&c, "localhost.evil.example:7371"));
    CHECK(!browser_host_ok(&c, "10.0.0.5:7371"));
    CHECK(!browser_host_ok(&c, "127.0.0.1:7371x"));
    CHECK(!browser_host_ok(&c, "127.0.0.1:07371x"));
    CHECK(!browser_host_ok(&c, "127.0.0.1:99999999999"));
    CHECK(!browser_host_ok(&c, "127.0.0.1:"));
    CHECK(!browser_host_ok(&c, ":7371"));
    CHECK(!browser_host_ok(&c, "[::1:7371"));
    CHECK(!browser_host_ok(&c, "[::1]x7371"));
    char longname[600];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    CHECK(!browser_host_ok(&c, longname));
}

TEST(browser_host_on_a_wildcard_accepts_ip_literals_and_allowed_names_only)
{
    struct http_ctx c = ctx("0.0.0.0", 8080, "telltale.example, proxy.example:443");
    CHECK(browser_host_ok(&c, "192.168.1.20:8080"));
    CHECK(browser_host_ok(&c, "[fe80::1]:8080"));
    CHECK(!browser_host_ok(&c, "192.168.1.20:8081"));
    CHECK(!browser_host_ok(&c, "evil.example:8080"));
    CHECK(browser_host_ok(&c, "telltale.example"));
    CHECK(browser_host_ok(&c, "telltale.example:8080"));
    CHECK(browser_host_ok(&c, "proxy.example:443"));
    CHECK(!browser_host_ok(&c, "proxy.example"));
    CHECK(!browser_host_ok(&c, "proxy.example:444"));
    struct http_ctx d = ctx("10.1.2.3", 7371, NULL);
    CHECK(browser_host_ok(&d, "10.1.2.3:7371"));
    CHECK(!browser_host_ok(&d, "localhost:7371"));
    CHECK(!browser_host_ok(&d, "127.0.0.1:7371"));
}
