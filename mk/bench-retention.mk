# Retention at work (bench/retention.c): ingest latency (a batch's write to its ack) of a real
# collector with --retain and --max-bytes pruning, against the same without retention, in the
# same run; docs/benchmarks.md and docs/operations.md quote the ratio (goal: p99 within 2x).
BENCH_BINS += $(BENCH_DIR)/retention
BENCH_CMDS += $(BENCH_DIR)/retention
