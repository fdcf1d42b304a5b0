# The change detectors' benchmark (bench/detect_cost.c): per-sample cost of CUSUM, Page-Hinkley
# and ADWIN against a sum loop, then detection delay, false alarms and missed detections on
# Gaussian shift streams. docs/detectors.md quotes its figures.
BENCH_BINS += $(BENCH_DIR)/detect_cost
BENCH_CMDS += $(BENCH_DIR)/detect_cost
