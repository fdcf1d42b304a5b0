# The compliance decision in the agent (bench/comply.c): a step begin/end pair under a typical
# policy against the same pair with no policy, same run. docs/compliance.md quotes it.
BENCH_BINS += $(BENCH_DIR)/comply
BENCH_CMDS += $(BENCH_DIR)/comply
test: $(BENCH_DIR)/comply
