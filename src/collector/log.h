/*
 * log.h - the collector's own log lines on stderr, one line each, with a level. Telemetry
 * content never goes into them unescaped.
 */
#ifndef TT_COLLECTOR_LOG_H
#define TT_COLLECTOR_LOG_H

extern int log_verbose;

void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
