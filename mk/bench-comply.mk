# The compliance decision in the agent (bench/comply.c): a step begin/end pair under a typical
# policy against the same pair with no policy, same run. docs/compliance.md quotes it. Built
# like the pipeline benches (the library only, sanitizers included) because the smoke test runs it.
BENCH_BINS += $(BENCH_DIR)/comply
BENCH_CMDS += $(BENCH_DIR)/comply

$(BENCH_DIR)/comply: bench/comply.c $(LIB_A) | $(DEPS_BUILD)
	@mkdir -p $(@D)
	$(CC) $(BENCH_CFLAGS) $(SANFLAGS) -o $@ $< $(LIB_A) $(BIN_LDLIBS)

test: $(BENCH_DIR)/comply
