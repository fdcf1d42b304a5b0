# The end-to-end benchmarks of the whole stream (issue 8): bench/pipeline.c (throughput stored
# and acked, bytes per event on the wire and at rest, collector CPU per event, against raw
# socket and raw SQLite baselines), bench/latency.c (emit to live-stream subscriber) and
# bench/memory.c (client RSS during a collector outage, collector RSS with 1,000 agents).
# Each starts a real `$(BIN) serve` child. They need only the build packages, and are built
# with the sanitizer flags of the build so that tests/integration/test_bench_smoke.c can run
# them with --smoke in every suite.

PIPELINE_BENCH_BINS := $(BENCH_DIR)/pipeline $(BENCH_DIR)/latency $(BENCH_DIR)/memory

BENCH_BINS += $(PIPELINE_BENCH_BINS)
BENCH_CMDS += $(BENCH_DIR)/pipeline $(BENCH_DIR)/latency $(BENCH_DIR)/memory

$(PIPELINE_BENCH_BINS): $(BENCH_DIR)/%: bench/%.c bench/pipeline_util.h $(LIB_A) | $(DEPS_BUILD)
	@mkdir -p $(@D)
	$(CC) $(BENCH_CFLAGS) $(SANFLAGS) -o $@ $< $(LIB_A) $(BIN_LDLIBS)

# The smoke test runs them: build them with the tests.
test: $(PIPELINE_BENCH_BINS)
