# Fuzzers (libFuzzer, clang): tests/fuzz/fuzz_<name>.c, each with a committed corpus in
# tests/fuzz/corpus/<name>/. `make fuzz` builds them; `make fuzz-run FUZZ_SECONDS=N` runs each
# for N seconds over its corpus (CI runs a short pass); `make fuzz-seeds` rewrites the seeds
# made by the library's own encoders.

FUZZ_DIR := build/fuzz
FUZZ_CC := clang
FUZZ_FLAGS := -std=c11 -g -O1 -D_GNU_SOURCE -Iinclude -Isrc $(PG_CPPFLAGS) -fsanitize=fuzzer,address,undefined \
	-fno-sanitize-recover=all
FUZZ_SRC := $(COMMON_SRC) src/collector/api/render.c src/collector/api/render_event.c \
	src/collector/api/render_response.c src/collector/api/params.c src/collector/alerting/config.c \
	src/collector/alerting/units.c src/collector/alerting/detect.c src/collector/alerting/cusum.c \
	src/collector/alerting/page_hinkley.c src/collector/alerting/adwin.c \
	src/collector/api/browser.c src/collector/secure.c src/collector/log.c \
	src/collector/store/store_hist.c
FUZZ_NAMES := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS := $(addprefix $(FUZZ_DIR)/fuzz_,$(FUZZ_NAMES))
FUZZ_SECONDS ?= 60

$(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_SRC) $(wildcard src/*/*.h include/*.h) | $(DEPS_FUZZ)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(FUZZ_SRC) -lzstd -lmicrohttpd -lm -pthread

# fuzz_conn drives the native source's connection state machine: it links that and what it
# uses of the collector (counters, the store item's release; log.c is in FUZZ_SRC), and the TLS
# transport (source/tls.c, GnuTLS) that some of its connections go through.
FUZZ_CONN_SRC := src/collector/source/native_conn.c src/collector/source/identity.c \
	src/collector/source/budget.c src/collector/source/tls.c src/collector/stats.c \
	$(filter-out src/collector/store/store_hist.c,$(wildcard src/collector/store/*.c))

$(FUZZ_DIR)/fuzz_conn: tests/fuzz/fuzz_conn.c $(FUZZ_SRC) $(FUZZ_CONN_SRC) \
		$(wildcard src/*/*.h src/collector/*/*.h include/*.h) | $(DEPS_FUZZ)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(FUZZ_SRC) $(FUZZ_CONN_SRC) -lzstd -lsqlite3 -lpq -lmicrohttpd -lgnutls -lm -pthread

# fuzz_watch runs the collector's compliance checks detached from a pipeline; it links the
# pipeline's and the store's code for the calls the watch makes when attached.
FUZZ_WATCH_SRC := src/collector/alerting/comply_watch.c src/collector/source/source.c \
	src/collector/hub.c src/collector/stats.c \
	$(filter-out src/collector/store/store_hist.c,$(wildcard src/collector/store/*.c))

$(FUZZ_DIR)/fuzz_watch: tests/fuzz/fuzz_watch.c $(FUZZ_SRC) $(FUZZ_WATCH_SRC) \
		$(wildcard src/*/*.h src/collector/*/*.h include/*.h) | $(DEPS_FUZZ)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(FUZZ_SRC) $(FUZZ_WATCH_SRC) -lzstd -lsqlite3 -lpq -lmicrohttpd -lm -pthread

# fuzz_otlp: the OTLP trace, log and metric decoders and the mappings (source/otlp_decode.c: jansson, zlib).
$(FUZZ_DIR)/fuzz_otlp: tests/fuzz/fuzz_otlp.c $(FUZZ_SRC) src/collector/source/otlp_decode.c \
		$(wildcard src/*/*.h src/collector/*/*.h include/*.h) | $(DEPS_FUZZ)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(FUZZ_SRC) src/collector/source/otlp_decode.c -lzstd -lmicrohttpd -ljansson -lz -lm -pthread

# fuzz_monitor feeds the detectors (the monitor and every unit) detached from alerting's
# threads; it links the alerting layer and what its alert queue would call.
FUZZ_MONITOR_SRC := src/collector/alerting/monitor.c src/collector/alerting/alerts.c \
	src/collector/hub.c src/collector/stats.c \
	$(filter-out src/collector/store/store_hist.c,$(wildcard src/collector/store/*.c))

$(FUZZ_DIR)/fuzz_monitor: tests/fuzz/fuzz_monitor.c $(FUZZ_SRC) $(FUZZ_MONITOR_SRC) \
		$(wildcard src/*/*.h src/collector/*/*.h include/*.h) | $(DEPS_FUZZ)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(FUZZ_SRC) $(FUZZ_MONITOR_SRC) -lzstd -lsqlite3 -lpq -lmicrohttpd -lcurl -lgnutls -lm -pthread

# fuzz_client feeds the agent's decoders and orders what a collector may send; it links the
# client library's sources (a real client is opened once, on an endpoint where no one listens).
FUZZ_CLIENT_SRC := $(CLIENT_SRC)

$(FUZZ_DIR)/fuzz_client: tests/fuzz/fuzz_client.c $(FUZZ_SRC) $(FUZZ_CLIENT_SRC) \
		$(wildcard src/*/*.h include/*.h) | $(DEPS_FUZZ)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -DTT_BUILDING_LIBRARY -o $@ $< $(FUZZ_SRC) $(FUZZ_CLIENT_SRC) -lzstd -lmicrohttpd -lgnutls -lnats -lm -pthread

fuzz: $(FUZZ_BINS)

fuzz-run: $(FUZZ_BINS)
	@set -o pipefail; for n in $(FUZZ_NAMES); do \
		mkdir -p build/fuzz/new-$$n; \
		echo "fuzz_$$n: $(FUZZ_SECONDS) s over tests/fuzz/corpus/$$n"; \
		$(FUZZ_DIR)/fuzz_$$n -artifact_prefix=build/fuzz/ -max_total_time=$(FUZZ_SECONDS) -timeout=2 -rss_limit_mb=1024 \
			-max_len=65536 -print_final_stats=1 build/fuzz/new-$$n tests/fuzz/corpus/$$n \
			2>&1 | tail -n 12 || exit 1; \
	done

$(FUZZ_DIR)/make_seeds: tests/fuzz/make_seeds.c $(LIB_A)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS_ALL) -std=c11 -O1 -g -o $@ $< $(LIB_A) -lzstd -lgnutls -lnats -lm -pthread

fuzz-seeds: $(FUZZ_DIR)/make_seeds
	$(FUZZ_DIR)/make_seeds tests/fuzz/corpus/frame tests/fuzz/corpus/batch tests/fuzz/corpus/client tests/fuzz/corpus/nats_msg

.PHONY: fuzz fuzz-run fuzz-seeds

# fuzz_export: the OTLP export mapping of committed batches (export_encode.c), on the batch corpus.
$(FUZZ_DIR)/fuzz_export: tests/fuzz/fuzz_export.c $(FUZZ_SRC) src/collector/export_encode.c \
		$(wildcard src/*/*.h src/collector/*.h include/*.h) | $(DEPS_FUZZ)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(FUZZ_SRC) src/collector/export_encode.c -lzstd -lmicrohttpd -lm -pthread

# fuzz_nats_msg: the NATS source's message decoder (source/nats_msg.c: hello + batch body and
# the Nats-Msg-Id header); it links the store's item release.
FUZZ_NATS_SRC := src/collector/source/nats_msg.c src/collector/stats.c \
	$(filter-out src/collector/store/store_hist.c,$(wildcard src/collector/store/*.c))

$(FUZZ_DIR)/fuzz_nats_msg: tests/fuzz/fuzz_nats_msg.c $(FUZZ_SRC) $(FUZZ_NATS_SRC) \
		$(wildcard src/*/*.h src/collector/*/*.h include/*.h) | $(DEPS_FUZZ)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(FUZZ_SRC) $(FUZZ_NATS_SRC) -lzstd -lsqlite3 -lpq -lmicrohttpd -lm -pthread

# fuzz_nats_stored: the decoder of STREAM.MSG.GET replies the NATS source's sweep reads
# (source/nats_stored.c: jansson, GnuTLS's base64).
$(FUZZ_DIR)/fuzz_nats_stored: tests/fuzz/fuzz_nats_stored.c $(FUZZ_SRC) \
		src/collector/source/nats_stored.c $(wildcard src/*/*.h src/collector/*/*.h include/*.h) \
		| $(DEPS_FUZZ)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(FUZZ_SRC) src/collector/source/nats_stored.c -ljansson \
		-lgnutls -lzstd -lmicrohttpd -lm -pthread
