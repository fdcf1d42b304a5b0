# The TLS benchmark (issue 14): bench/tls.c measures stored events per second from one agent
# over a tls:// listener against plain TCP into the same real `$(BIN) serve` child, medians of
# several runs in the same run, the TCP rate as the baseline. Its certificate comes from
# scripts/make-test-pki (certtool: gnutls-bin), so it needs the test group's packages.
BENCH_BINS += $(BENCH_DIR)/tls
BENCH_CMDS += $(BENCH_DIR)/tls

$(BENCH_DIR)/tls: bench/tls.c bench/pipeline_util.h $(LIB_A) | $(DEPS_TEST)
	@mkdir -p $(@D)
	$(CC) $(BENCH_CFLAGS) $(SANFLAGS) -o $@ $< $(LIB_A) $(BIN_LDLIBS)

# tests/integration/test_bench_smoke.c runs it with --smoke: build it with the tests.
test: $(BENCH_DIR)/tls
