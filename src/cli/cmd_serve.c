/*
 * cmd_serve.c - `telltale serve`: the collector, whose code lives in src/collector.
 */
#include "cli/cli.h"
#include "collector/serve.h"

int cmd_serve(int argc, char **argv)
{
    return serve_main(argc, argv);
}
