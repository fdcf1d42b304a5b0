# OTLP ingest against the native path (bench/otlp.c, issue 17 point 5): spans/s stored from
# OTLP/HTTP protobuf exports, and tool steps/s from native agents, into the same collector build,
# same run. docs/otel.md quotes it.
BENCH_BINS += $(BENCH_DIR)/otlp
BENCH_CMDS += $(BENCH_DIR)/otlp
