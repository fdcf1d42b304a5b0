/*
 * test_valgrind.c - an agent run under Valgrind's memcheck sees no error from the library
 * (its developer would see them as theirs): the events' strings are heap blocks of exactly
 * their size, which the hot path copies 16 bytes at a time on x86-64, reading past their
 * terminator within the page (src/client/emit.c); memcheck must accept those partial loads and
 * find nothing else. The driver is tests/drivers/valgrind_emit.c, built into $TT_BUILD/tests/.
 */
#include "test.h"

#include <sys/wait.h>

TEST_T(emit_under_valgrind_reads_no_byte_past_a_string, 180)
{
    const char *san = getenv("TT_SANITIZE");
    if (san && *san) {
        SKIP("Valgrind cannot run a sanitizer build (%s)", san);
    }
    const char *build = getenv("TT_BUILD");
    CHECK_MSG(build, "TT_BUILD is not set (make test sets it)");
    CHECK_MSG(system("valgrind --version >/dev/null 2>&1") == 0,
              "valgrind is missing (scripts/install-deps test)");
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "valgrind -q --error-exitcode=9 --leak-check=no --track-origins=no "
             "'%s/tests/valgrind_emit' 'unix:%s/nobody-listens.sock' 2>&1",
             build, tt_test_tmpdir());
    printf("running: %s\n", cmd);
    fflush(stdout);
    int rc = system(cmd);
    CHECK_MSG(WIFEXITED(rc), "valgrind did not exit");
    CHECK_MSG(WEXITSTATUS(rc) != 9, "memcheck reported errors (above)");
    CHECK_EQ(WEXITSTATUS(rc), 0);
}
