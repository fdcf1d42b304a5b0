/*
 * cmd_resume.c - `telltale resume (--session ID | --agent NAME) [--reason R]`: lift a halt
 * (POST /api/v1/sessions/{id}/resume or /api/v1/agents/{agent}/resume). The options, the token
 * and the exit statuses are those of `telltale halt` (cli_order in cmd_halt.c).
 */
#include "cli/cli.h"

static const char usage[] =
    "usage: telltale resume (--session ID | --agent NAME) [options]\n"
    "\n"
    "Lift a halt: the collector sends the order to the connected agents that own the session,\n"
    "and their responses in it begun afterwards pass again (a response already halted stays\n"
    "halted). With --agent, every session halt of that agent is lifted. Prints the collector's\n"
    "answer (agents and connections reached) as JSON.\n"
    "\n"
    "  --session ID         the session to resume\n"
    "  --agent NAME         lift every session halt of this agent instead\n"
    "  --reason R           why, for the collector's log (at most 100 bytes)\n"
    "  --http HOST:PORT     the collector's HTTP API (default $TELLTALE_HTTP or "
    "127.0.0.1:7371)\n" CLI_AUTH_HELP "  --help               this text\n"
    "\n" CLI_ORDER_EXIT_HELP;

int cmd_resume(int argc, char **argv)
{
    return cli_order(argc, argv, "resume", usage);
}
