# The spool benchmark: bench/spool.c times the disk spool's append and replay against a raw
# sequential write and read of the same bytes in the same directory (build/bench-tmp, or
# $TT_BENCH_DIR), in the same run. Built by the pattern rule of mk/00-bench.mk.
BENCH_BINS += $(BENCH_DIR)/spool
BENCH_CMDS += $(BENCH_DIR)/spool
