/*
 * main.c - the telltale binary: one verb per subcommand, each in its own cmd_<verb>.c.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "telltale.h"

static const char usage[] =
    "usage: telltale COMMAND [options]\n"
    "\n"
    "Commands:\n"
    "  serve     run the collector (store, HTTP API, live stream)\n"
    "  emit      send events given as JSON lines on stdin\n"
    "  tail      follow new events live\n"
    "  query     print stored events as JSON lines, or count them\n"
    "  top       a live view of the agents: rates, confidence, loss, alerts\n"
    "  demo      run a synthetic agent that streams into a collector\n"
    "  halt      halt a session: its agent sees TT_HALT at its next token\n"
    "  resume    lift a halt: the session's later responses pass again\n"
    "  version   print the version\n"
    "\n"
    "Run 'telltale COMMAND --help' for a command's options and exit statuses.\n";

struct verb {
    const char *name;
    int (*fn)(int, char **);
};

static const struct verb verbs[] = {
    {"serve", cmd_serve}, {"emit", cmd_emit}, {"tail", cmd_tail}, {"query", cmd_query},
    {"demo", cmd_demo},   {"top", cmd_top},   {"halt", cmd_halt}, {"resume", cmd_resume},
};

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage, stderr);
        return EXIT_USAGE;
    }
    const char *v = argv[1];
    if (!strcmp(v, "--help") || !strcmp(v, "-h") || !strcmp(v, "help")) {
        fputs(usage, stdout);
        return EXIT_OK;
    }
    if (!strcmp(v, "version") || !strcmp(v, "--version")) {
        printf("telltale %s\n", tt_version());
        return EXIT_OK;
    }
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
        if (!strcmp(v, verbs[i].name)) {
            return verbs[i].fn(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "telltale: unknown command \"%s\"\n\n%s", v, usage);
    return EXIT_USAGE;
}
