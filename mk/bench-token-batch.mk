# One decode step over a batch (bench/token_batch.c): a [64, 128k] fp32 matrix through one
# tt_response_token_batch call against 64 tt_response_token calls on the same rows, same run.
# docs/python.md quotes it. Built like the comply bench (the library only, sanitizers included)
# because the smoke test runs it.
BENCH_BINS += $(BENCH_DIR)/token_batch
BENCH_CMDS += $(BENCH_DIR)/token_batch

$(BENCH_DIR)/token_batch: bench/token_batch.c $(LIB_A) | $(DEPS_BUILD)
	@mkdir -p $(@D)
	$(CC) $(BENCH_CFLAGS) $(SANFLAGS) -o $@ $< $(LIB_A) $(BIN_LDLIBS)

test: $(BENCH_DIR)/token_batch

# The same step from Python (bench/token_batch.py, Debian's /usr/bin/python3 through its first
# line): a CPU torch tensor through telltale.token_batch against 64 r.token calls, per core, and
# the accelerator path's torch code forced on the CPU. It uses the libtelltale.so of $(BUILD).
BENCH_CMDS += bench/token_batch.py
