/*
 * cpp_agent.cpp - include/telltale.hpp in use, built twice by mk/cpp.mk (g++ -std=c++17 -Wall
 * -Wextra -Werror, with exceptions and with -fno-exceptions) and run by tests/integration/
 * test_cpp.c against a real collector, which then checks what the store holds.
 *
 *   cpp_agent ENDPOINT SESSION
 *
 * In SESSION it emits: a log with one attribute of each kind (from attr() and from an attrs
 * that copies std::string_view keys and values), a gauge, a reasoning step "plan" with three
 * tool steps under it ("search" left normally after set_result_bytes, "fetch" left after
 * fail(), "parse" left by an exception, or in the -fno-exceptions build by an early return
 * with set_status(TT_STATUS_TIMEOUT)), and a response of 5 tokens ended by its scope. It checks
 * on the spot what needs no collector (errors of bad arguments, a second end) and exits 0 when
 * every check held and every event was acknowledged; otherwise 1, with the reason on stderr.
 */
#include <telltale.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#if defined(__cpp_exceptions)
#include <stdexcept>
#define CPP_AGENT_MODE "exceptions"
#else
#define CPP_AGENT_MODE "no-exceptions"
#endif

namespace
{

int failures = 0;

void expect(bool ok, const char *what)
{
    if (!ok) {
        std::fprintf(stderr, "cpp_agent: FAILED: %s\n", what);
        failures++;
    }
}

/* The type mapping of attr(), checked at compile time. */
static_assert(std::is_same_v<decltype(telltale::attr("k", 1)), tt_attr>);

void check_attr_types()
{
    const std::string s = "str";
    tt_attr a[] = {telltale::attr("b", true),  telltale::attr("i", -7),
                   telltale::attr("u", 7u),    telltale::attr("l", int64_t{1} << 40),
                   telltale::attr("f", 0.25f), telltale::attr("d", 2.5),
                   telltale::attr("c", "lit"), telltale::attr("s", s)};
    expect(a[0].type == TT_ATTR_BOOL && a[0].v.b == 1, "attr(bool) is TT_ATTR_BOOL");
    expect(a[1].type == TT_ATTR_INT && a[1].v.i == -7, "attr(int) is TT_ATTR_INT");
    expect(a[2].type == TT_ATTR_INT && a[2].v.i == 7, "attr(unsigned) is TT_ATTR_INT");
    expect(a[3].type == TT_ATTR_INT && a[3].v.i == (int64_t{1} << 40), "attr(int64_t)");
    expect(a[4].type == TT_ATTR_DOUBLE && a[4].v.d == 0.25, "attr(float) is TT_ATTR_DOUBLE");
    expect(a[5].type == TT_ATTR_DOUBLE && a[5].v.d == 2.5, "attr(double) is TT_ATTR_DOUBLE");
    expect(a[6].type == TT_ATTR_STR && std::string_view(a[6].v.s) == "lit", "attr(literal)");
    expect(a[7].type == TT_ATTR_STR && a[7].v.s == s.c_str(), "attr(std::string) borrows");
}

/* Bad arguments are refused before anything is emitted: the caller checks the store has none. */
void check_refusals(telltale::client &c, const char *session)
{
    telltale::attrs<2, 16> small;
    small.add("a", 1).add("b", 2).add("c", 3); /* a third slot: too many */
    expect(small.error() == TT_E2BIG && small.size() == 2, "attrs beyond N: TT_E2BIG");
    expect(c.log(session, TT_INFO, "refused: too many attributes", small) == TT_E2BIG,
           "log with an overflowing attrs returns TT_E2BIG");

    telltale::attrs<4, 8> tiny;
    tiny.add(std::string_view("key"), std::string_view("a value too long for 8 bytes"));
    expect(tiny.error() == TT_E2BIG && tiny.size() == 0, "attrs storage overflow: TT_E2BIG");

    telltale::attrs<> big;
    big.add("too_big", UINT64_MAX);
    expect(big.error() == TT_EINVAL, "a uint64_t above INT64_MAX: TT_EINVAL");
    expect(c.log(session, TT_INFO, "refused: out of range", big) == TT_EINVAL,
           "log with an out-of-range attribute returns TT_EINVAL");
    telltale::attrs<> fits;
    fits.add("fits", uint64_t{1} << 62);
    expect(fits.error() == 0 && fits.data()[0].v.i == (int64_t{1} << 62), "a uint64_t that fits");

    const char *null_str = nullptr;
    telltale::attrs<> nul;
    nul.add("null", null_str);
    expect(nul.error() == TT_EINVAL, "a NULL string attribute: TT_EINVAL");

    telltale::zbuf<8> long_name(std::string_view("a step name longer than eight bytes"));
    expect(!long_name.ok(), "zbuf too small: not ok");
    telltale::step refused(c, TT_STEP_TOOL, long_name, nullptr, session);
    expect(refused.begin_error() == TT_E2BIG && refused.id() == 0, "a step name too long");
    expect(refused.end() == TT_EINVAL, "ending a step that never began: TT_EINVAL");
}

void tool_parse(telltale::client &c, const char *session, const telltale::step &plan)
{
    telltale::step parse(c, TT_STEP_TOOL, "parse", "doc=<7 KiB>", session, &plan);
#if defined(__cpp_exceptions)
    throw std::runtime_error("parser gave up");
#else
    parse.set_status(TT_STATUS_TIMEOUT, "parser took too long");
    return; /* an early return: the scope ends the step */
#endif
}

} // namespace

int main(int argc, char **argv)
{
    if (argc != 3) {
        std::fprintf(stderr, "usage: cpp_agent ENDPOINT SESSION\n");
        return 2;
    }
    const char *session = argv[2];
    std::printf("cpp_agent: %s build, telltale %s\n", CPP_AGENT_MODE, tt_version());

    telltale::config cfg;
    expect(cfg.error() == 0, "config");
    expect(cfg.set("endpoint", argv[1]) == 0, "config endpoint");
    expect(cfg.set("agent", "cpp-agent") == 0, "config agent");
    expect(cfg.set("no_such_key", "1") == TT_EINVAL && *cfg.last_error(), "unknown key refused");

    telltale::client c;
    expect(!c, "a client is closed until open()");
    expect(c.log(session, TT_INFO, "nowhere") == TT_EINVAL, "log on a closed client");
    int rc = c.open(cfg);
    if (rc != 0) {
        std::fprintf(stderr, "cpp_agent: open: %s\n", telltale::strerror(rc));
        return 1;
    }

    check_attr_types();
    check_refusals(c, session);

    /* A log with every attribute kind; the string_view key and value are not NUL-terminated. */
    const std::string model_name = "toy-bigram";
    const std::string_view text = "view-key=view-value;rest";
    telltale::attrs<> a;
    a.add("count", 42)
        .add("ratio", 0.5)
        .add("cached", true)
        .add("model", model_name)
        .add(text.substr(0, 8), text.substr(9, 10))
        .add("temp", std::string("rvalue-copied"))
        .add("big", uint64_t{9000000000});
    expect(a.error() == 0 && a.size() == 7, "seven attributes");
    expect(c.log(session, TT_INFO, "hello from C++", a) == 0, "log");
    expect(c.log(session, TT_WARN, std::string("braced list"),
                 {telltale::attr("n", 3), telltale::attr("flag", false)}) == 0,
           "log with a braced list");
    expect(c.metric(session, TT_GAUGE, "queue_depth", 7.0, "1", {telltale::attr("q", "main")}) == 0,
           "metric");

    {
        /* The turn joins the application's trace (W3C traceparent, since 0.5). */
        telltale::step plan(
            c, telltale::traceparent{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
            TT_STEP_REASONING, "plan", nullptr, session);
        expect(plan.begin_error() == 0 && plan.id() != 0 && plan.span_id() != 0, "plan begins");
        telltale::step bad(c, telltale::traceparent{"00-bad"}, TT_STEP_TOOL, "bad", nullptr,
                           session);
        expect(bad.begin_error() == TT_EINVAL && bad.id() == 0, "an invalid traceparent");
        {
            telltale::step search(c, TT_STEP_TOOL, "search", "q=telltale c++", session, &plan);
            search.set_result_bytes(123);
        }
        {
            telltale::step fetch(c, TT_STEP_API, "fetch", "GET /v1/items", session, &plan);
            fetch.fail("HTTP 503 from upstream");
        }
#if defined(__cpp_exceptions)
        bool caught = false;
        try {
            tool_parse(c, session, plan);
        } catch (const std::exception &e) {
            caught = std::string_view(e.what()) == "parser gave up";
        }
        expect(caught, "the exception reached its handler");
#else
        tool_parse(c, session, plan);
#endif
        int ended = plan.end(TT_STATUS_OK, 2048);
        expect(ended == 0, "plan ends");
        expect(plan.end() == TT_EINVAL, "a second end is refused");
    }

    {
        telltale::response r(c, session, "toy-model", {telltale::attr("temperature", 0.7)});
        expect(r.begin_error() == 0 && static_cast<bool>(r), "response begins");
        float row[16];
        for (int t = 0; t < 5; t++) {
            for (int v = 0; v < 16; v++) {
                row[v] = v == t ? 6.0f : 0.0f;
            }
            tt_verdict verdict = TT_HALT;
            tt_token_stats st;
            expect(r.token(row, 16, t, &verdict, &st) == 0 && verdict == TT_PASS && st.rank == 0,
                   "token");
        }
    } /* the scope ends the response: its summary is emitted */

    tt_stats st;
    rc = c.close(10000, st);
    expect(!c, "closed");
    std::printf("cpp_agent: emitted %llu acked %llu dropped %llu\n",
                static_cast<unsigned long long>(st.emitted),
                static_cast<unsigned long long>(st.acked),
                static_cast<unsigned long long>(st.dropped_total));
    expect(rc == 0 && st.dropped_total == 0 && st.acked == st.emitted,
           "every event acknowledged at close");
    if (failures) {
        std::fprintf(stderr, "cpp_agent: %d check(s) failed\n", failures);
        return 1;
    }
    std::printf("cpp_agent: ok\n");
    return 0;
}
