# The token-statistics benchmark: bench/confidence.c times tt_token_stats_compute on every SIMD
# path against the memory-read floor, two libm three-pass versions (plain -O2, and
# bench/confidence_libm.c built with -O3 -ffast-math so that expf goes through libmvec) and lean
# numpy (bench/confidence_numpy.py, run by the benchmark itself through /usr/bin/python3).
BENCH_BINS += $(BENCH_DIR)/confidence
BENCH_CMDS += $(BENCH_DIR)/confidence

$(BENCH_DIR)/confidence_libm.o: bench/confidence_libm.c | $(DEPS_BENCH)
	@mkdir -p $(@D)
	$(CC) $(BENCH_CFLAGS) -O3 -ffast-math -c $< -o $@

# This explicit rule replaces the pattern rule of mk/00-bench.mk, to link the object above.
$(BENCH_DIR)/confidence: bench/confidence.c $(BENCH_DIR)/confidence_libm.o $(LIB_A) \
		$(COLLECTOR_OBJ) | $(DEPS_BENCH)
	@mkdir -p $(@D)
	$(CC) $(BENCH_CFLAGS) -o $@ $< $(BENCH_DIR)/confidence_libm.o $(COLLECTOR_OBJ) $(LIB_A) \
		$(BENCH_LDLIBS)
