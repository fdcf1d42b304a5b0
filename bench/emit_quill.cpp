/*
 * emit_quill.cpp - the Quill baseline of the emit benchmark (issue 21): per-call latency of
 * Quill's LOG_INFO with the same payload and the same method as bench/emit.c
 * (bench/emit_harness.h). Quill is not packaged: it is built only when QUILL_DIR names a
 * checkout (make bench QUILL_DIR=...), for measuring; nothing of it is in this project.
 *
 *   emit_quill --file PATH [harness options]
 *
 * The logger is Quill's default frontend (FrontendOptions: an unbounded queue per thread that
 * grows, then blocks at its limit) with a file sink to PATH, and each call is
 * LOG_INFO(logger, "example {} {} {}", a, b, x): the arguments are copied on the calling
 * thread with a TSC timestamp and formatted by the backend thread. The backend runs as in
 * Quill's own hot-path benchmark: it never sleeps between polls (sleep_duration 0), on the
 * CPU the producers are not pinned to. The harness's untimed warm-up creates each producer's
 * queue, as the untimed first call of Quill's benchmark does.
 */
#include "quill/Backend.h"
#include "quill/Frontend.h"
#include "quill/LogMacros.h"
#include "quill/sinks/FileSink.h"

#include <cstdio>
#include <cstring>

#include "emit_harness.h"

static inline void call_quill(void *ctx, int64_t a, int64_t b, double x)
{
    quill::Logger *logger = static_cast<quill::Logger *>(ctx);
    LOG_INFO(logger, "example {} {} {}", a, b, x);
}

EH_DEFINE_LOOP(loop_quill, call_quill)

static void quill_extra(void *ctx, char *out, size_t n)
{
    static_cast<quill::Logger *>(ctx)->flush_log();
    out[0] = 0;
    (void)n;
}

int main(int argc, char **argv)
{
    eh_opts o;
    eh_defaults(&o);
    const char *file = nullptr;
    for (int i = 1; i < argc; i += 2) {
        int r = i + 1 < argc ? eh_option(&o, argv[i], argv[i + 1]) : 0;
        if (r < 0) {
            return 2;
        } else if (r > 0) {
            continue;
        } else if (i + 1 < argc && std::strcmp(argv[i], "--file") == 0) {
            file = argv[i + 1];
        } else {
            file = nullptr;
            break;
        }
    }
    if (!file) {
        std::fprintf(stderr, "usage: emit_quill --file PATH " EH_USAGE "\n");
        return 2;
    }
    o.contender = "quill";
    quill::BackendOptions bo;
    bo.sleep_duration = std::chrono::nanoseconds{0};
    quill::Backend::start(bo);
    quill::FileSinkConfig fc;
    fc.set_open_mode('w');
    auto sink =
        quill::Frontend::create_or_get_sink<quill::FileSink>(file, fc, quill::FileEventNotifier{});
    quill::Logger *logger = quill::Frontend::create_or_get_logger("bench", std::move(sink));
    int rc = eh_run(&o, loop_quill, logger, quill_extra);
    quill::Backend::stop();
    return rc ? 1 : 0;
}
