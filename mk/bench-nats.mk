# The broker path against the direct path (issue 19): bench/nats.c measures stored events per
# second and CPU per event of one agent into a collector on its Unix endpoint and, in the same
# run, through a private nats-server with JetStream (started like tests/support/natsd.c: a
# configuration file holding a token, 127.0.0.1, free ports) into a collector with --nats,
# both on SQLite; medians of several runs, the direct path as the baseline.
BENCH_BINS += $(BENCH_DIR)/nats
BENCH_CMDS += $(BENCH_DIR)/nats

$(BENCH_DIR)/nats: bench/nats.c bench/pipeline_util.h $(LIB_A) | $(DEPS_TEST)
	@mkdir -p $(@D)
	$(CC) $(BENCH_CFLAGS) $(SANFLAGS) -o $@ $< $(LIB_A) $(BIN_LDLIBS)

# tests/integration/test_bench_smoke.c runs it with --smoke: build it with the tests.
test: $(BENCH_DIR)/nats
