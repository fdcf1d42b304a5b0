/*
 * test.h - the test harness: TEST() registers a test function at load time, the runner
 * (tests/support/runner.c) forks each test with a timeout and prints "N passed, N failed".
 *
 * A failed CHECK prints the expression, its file and line, then ends the test's process with
 * status 1; the runner counts it as failed and carries on with the next test.
 */
#ifndef TT_TEST_H
#define TT_TEST_H

#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef void (*tt_test_fn)(void);

void tt_test_register(const char *name, const char *file, tt_test_fn fn, int timeout_s);
void tt_test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));

/* The directory where this test may write its artifacts (logs, screenshots); created by the
 * runner, kept after the run. */
const char *tt_test_outdir(void);

/* A fresh private temporary directory for this test, removed by the runner afterwards. */
const char *tt_test_tmpdir(void);

/* Default timeout in seconds for a test that does not say otherwise. */
#define TT_TEST_TIMEOUT 60

#define TEST_T(name, timeout)                                                                      \
    static void name(void);                                                                        \
    __attribute__((constructor)) static void tt_reg_##name(void)                                   \
    {                                                                                              \
        tt_test_register(#name, __FILE__, name, (timeout));                                        \
    }                                                                                              \
    static void name(void)

#define TEST(name) TEST_T(name, TT_TEST_TIMEOUT)

/* A test that does not apply to this build (a sanitizer that cannot run it) ends with
 * TT_TEST_SKIP_EXIT after saying why; the runner lists it as SKIP, apart from passed and
 * failed, so a skip never counts as a pass. */
#define TT_TEST_SKIP_EXIT 77
#define SKIP(...)                                                                                  \
    do {                                                                                           \
        printf("skipped: ");                                                                       \
        printf(__VA_ARGS__);                                                                       \
        printf("\n");                                                                              \
        fflush(stdout);                                                                            \
        _exit(TT_TEST_SKIP_EXIT);                                                                  \
    } while (0)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            tt_test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);                                  \
        }                                                                                          \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            tt_test_fail(__FILE__, __LINE__, __VA_ARGS__);                                         \
        }                                                                                          \
    } while (0)

#define CHECK_EQ(a, b)                                                                             \
    do {                                                                                           \
        long long tt_a_ = (long long)(a), tt_b_ = (long long)(b);                                  \
        if (tt_a_ != tt_b_) {                                                                      \
            tt_test_fail(__FILE__, __LINE__, "CHECK_EQ(%s, %s): %lld != %lld", #a, #b, tt_a_,      \
                         tt_b_);                                                                   \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_U64(a, b)                                                                         \
    do {                                                                                           \
        uint64_t tt_a_ = (uint64_t)(a), tt_b_ = (uint64_t)(b);                                     \
        if (tt_a_ != tt_b_) {                                                                      \
            tt_test_fail(__FILE__, __LINE__, "CHECK_EQ_U64(%s, %s): %" PRIu64 " != %" PRIu64, #a,  \
                         #b, tt_a_, tt_b_);                                                        \
        }                                                                                          \
    } while (0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *tt_a_ = (a), *tt_b_ = (b);                                                     \
        if (!tt_a_ || !tt_b_ || strcmp(tt_a_, tt_b_) != 0) {                                       \
            tt_test_fail(__FILE__, __LINE__, "CHECK_STR(%s, %s): \"%s\" != \"%s\"", #a, #b,        \
                         tt_a_ ? tt_a_ : "(null)", tt_b_ ? tt_b_ : "(null)");                      \
        }                                                                                          \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                      \
    do {                                                                                           \
        double tt_a_ = (double)(a), tt_b_ = (double)(b), tt_t_ = (double)(tol);                    \
        if (!(tt_a_ - tt_b_ <= tt_t_ && tt_b_ - tt_a_ <= tt_t_)) {                                 \
            tt_test_fail(__FILE__, __LINE__, "CHECK_NEAR(%s, %s, %s): %.17g vs %.17g", #a, #b,     \
                         #tol, tt_a_, tt_b_);                                                      \
        }                                                                                          \
    } while (0)

#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        long long tt_rc_ = (long long)(expr);                                                      \
        if (tt_rc_ != 0) {                                                                         \
            tt_test_fail(__FILE__, __LINE__, "CHECK_OK(%s): returned %lld", #expr, tt_rc_);        \
        }                                                                                          \
    } while (0)

#endif
