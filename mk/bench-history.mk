# The console's history query (bench/history.c): a store holding the rollups of 10^8 events
# (20 agents, 7 days), a real collector on it, p95 of GET /api/v1/series over 24 h (goal:
# <= 100 ms), 7 d and 1 h, against GET /healthz measured in the same run.
BENCH_BINS += $(BENCH_DIR)/history
BENCH_CMDS += $(BENCH_DIR)/history
