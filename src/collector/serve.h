/*
 * serve.h - the entry point of `telltale serve`.
 */
#ifndef TT_COLLECTOR_SERVE_H
#define TT_COLLECTOR_SERVE_H

/* Run the collector with the arguments after "serve"; returns the exit status. */
int serve_main(int argc, char **argv);

#endif
