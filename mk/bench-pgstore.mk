# The PostgreSQL store's write speed (issue 19): bench/pgstore.c measures stored events per
# second of one agent into a real `$(BIN) serve --store postgres://...` on a private cluster it
# starts (initdb, the postgresql package of the test group) against the same on SQLite, medians
# of several runs in the same run, SQLite as the baseline.
BENCH_BINS += $(BENCH_DIR)/pgstore
BENCH_CMDS += $(BENCH_DIR)/pgstore

$(BENCH_DIR)/pgstore: bench/pgstore.c bench/pipeline_util.h $(LIB_A) | $(DEPS_TEST)
	@mkdir -p $(@D)
	$(CC) $(BENCH_CFLAGS) $(PG_CPPFLAGS) $(SANFLAGS) -o $@ $< $(LIB_A) $(BIN_LDLIBS)

# tests/integration/test_bench_smoke.c runs it with --smoke: build it with the tests.
test: $(BENCH_DIR)/pgstore
