# Benchmarks: programs, not timed tests. Each bench/<name>.c builds to $(BUILD)/bench/<name>
# and prints JSON lines {"bench":..,"metric":..,"value":..,"unit":..,"baseline":..,"ratio":..}
# with its baselines measured in the same run. A bench registers the command that runs it by
# adding to BENCH_BINS and BENCH_CMDS in its own mk/bench-<name>.mk; `make bench` runs them all and writes
# docs/benchmarks.md. BENCH=name runs only the commands whose text contains name.

BENCH_DIR := $(BUILD)/bench
BENCH_CFLAGS := -std=c11 -O2 -g -D_GNU_SOURCE -Iinclude -Isrc -pthread $(WARN)
BENCH_LDLIBS := $(BIN_LDLIBS) -lm

$(BENCH_DIR)/%: bench/%.c $(LIB_A) $(COLLECTOR_OBJ) | $(DEPS_BENCH)
	@mkdir -p $(@D)
	$(CC) $(BENCH_CFLAGS) -Itests/support -o $@ $< $(COLLECTOR_OBJ) $(LIB_A) $(BENCH_LDLIBS)

