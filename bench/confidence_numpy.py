#!/usr/bin/python3
"""Lean numpy baseline for bench/confidence.c: entropy and log-prob of one logits row.

    confidence_numpy.py VOCAB...

For each vocabulary size and dtype (f32, bf16) it times, per row, the lean numpy version
(max, exp, logsumexp, sum of e*d: no softmax array, no log of every p) and prints one JSON line
{"vocab": V, "dtype": "f32", "hot_us": median, "cold_us": median}. Hot repeats one row; cold
visits rows of a pool larger than the last-level cache in a fixed shuffled order. numpy has no
bfloat16, so bf16 rows are widened (uint16 << 16 viewed as float32) inside the timed call.
Fixed seeds; medians of the per-call times.
"""
import json
import sys
import time

import numpy as np

HOT_REPS = 201
POOL_BYTES = 128 << 20
K_CHOSEN = 12345


def stats_f32(x, chosen):
    m = x.max()
    d = x - m
    e = np.exp(d)
    s = e.sum(dtype=np.float64)
    log_s = np.log(s)
    entropy = log_s - np.dot(e, d) / s
    return entropy, d[chosen] - log_s


def stats_bf16(raw, chosen):
    return stats_f32((raw.astype(np.uint32) << 16).view(np.float32), chosen)


def median_us(fn, rows, order):
    times = []
    for i in order:
        row = rows[i]
        t0 = time.perf_counter_ns()
        fn(row, K_CHOSEN)
        times.append(time.perf_counter_ns() - t0)
    return float(np.median(times)) / 1000.0


def main():
    rng = np.random.default_rng(20240611)
    for vocab in (int(v) for v in sys.argv[1:]):
        master = (2.0 * rng.standard_normal(vocab)).astype(np.float32)
        spikes = rng.random(vocab) < 0.001
        master[spikes] += (12.0 * rng.random(int(spikes.sum()))).astype(np.float32)
        for dtype in ("f32", "bf16"):
            row = master if dtype == "f32" else (master.view(np.uint32) >> 16).astype(np.uint16)
            fn = stats_f32 if dtype == "f32" else stats_bf16
            nrows = max(16, POOL_BYTES // row.nbytes)
            pool = [np.roll(row, 7919 * r) for r in range(nrows)]
            order = rng.permutation(nrows)
            hot = median_us(fn, [row], [0] * HOT_REPS)
            median_us(fn, pool, order)  # one pass so that every row was last touched a pool ago
            cold = median_us(fn, pool, order)
            print(json.dumps({"vocab": vocab, "dtype": dtype, "hot_us": hot, "cold_us": cold}),
                  flush=True)
            del pool


if __name__ == "__main__":
    main()
