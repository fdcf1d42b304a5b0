# The change detectors' benchmark (bench/detect_cost.c): per-sample cost of CUSUM, Page-Hinkley
# and ADWIN against a sum loop, then detection delay, false alarms and missed detections on
# Gaussian shift streams. docs/detectors.md quotes its figures.
BENCH_BINS += $(BENCH_DIR)/detect_cost
BENCH_CMDS += $(BENCH_DIR)/detect_cost

# The alerting path end to end (bench/detect.c): a real collector with the drift detector,
# agents at 100 responses/s whose confidence falls by one sigma: time from the shift to the
# alert on the live stream, and false alarms per 100,000 in-control responses.
BENCH_BINS += $(BENCH_DIR)/detect
BENCH_CMDS += $(BENCH_DIR)/detect

# The public change-case suite (bench/change_cases.c, tests/support/change_cases.h): the table
# of docs/detectors.md, spliced in by scripts/gen-change-table.
BENCH_BINS += $(BENCH_DIR)/change_cases
BENCH_CMDS += $(BENCH_DIR)/change_cases
