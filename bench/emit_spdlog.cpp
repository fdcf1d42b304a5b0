/*
 * emit_spdlog.cpp - the spdlog baseline of the emit benchmark: per-call latency of an async,
 * non-blocking spdlog logger (Debian libspdlog-dev) with the same payload and the same method
 * as bench/emit.c (bench/emit_harness.h).
 *
 *   emit_spdlog --file PATH [--queue N] [harness options]
 *
 * The logger is spdlog::create_async_nb (overrun_oldest: a full queue overwrites, never
 * blocks) with one backend thread and a basic file sink to PATH, and each call is
 * logger->info("example {} {} {}", a, b, x): the message is formatted on the calling thread and
 * queued; the backend adds the pattern (time, level, name) and writes the file. The queue has
 * 262144 slots by default, as in the measurement of research/performance-anchors.md.
 */
#include <spdlog/async.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/spdlog.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "emit_harness.h"

static inline void call_spdlog(void *ctx, int64_t a, int64_t b, double x)
{
    static_cast<spdlog::logger *>(ctx)->info("example {} {} {}", a, b, x);
}

EH_DEFINE_LOOP(loop_spdlog, call_spdlog)

static void spdlog_extra(void *ctx, char *out, size_t n)
{
    static_cast<spdlog::logger *>(ctx)->flush();
    std::snprintf(out, n, ",\"overrun\":%zu", spdlog::thread_pool()->overrun_counter());
}

int main(int argc, char **argv)
{
    eh_opts o;
    eh_defaults(&o);
    const char *file = nullptr;
    long queue = 262144;
    for (int i = 1; i < argc; i += 2) {
        int r = i + 1 < argc ? eh_option(&o, argv[i], argv[i + 1]) : 0;
        if (r < 0) {
            return 2;
        } else if (r > 0) {
            continue;
        } else if (i + 1 < argc && std::strcmp(argv[i], "--file") == 0) {
            file = argv[i + 1];
        } else if (i + 1 < argc && std::strcmp(argv[i], "--queue") == 0) {
            queue = std::strtol(argv[i + 1], nullptr, 10);
        } else {
            file = nullptr;
            break;
        }
    }
    if (!file || queue <= 0) {
        std::fprintf(stderr, "usage: emit_spdlog --file PATH [--queue N] " EH_USAGE "\n");
        return 2;
    }
    o.contender = "spdlog";
    spdlog::init_thread_pool(static_cast<size_t>(queue), 1);
    auto logger = spdlog::create_async_nb<spdlog::sinks::basic_file_sink_mt>("bench", file, true);
    int rc = eh_run(&o, loop_spdlog, logger.get(), spdlog_extra);
    spdlog::shutdown();
    return rc ? 1 : 0;
}
