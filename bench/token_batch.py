#!/usr/bin/python3
"""One decode step over a batch from Python (docs/python.md "PyTorch"): a [64, 131072] float32
torch tensor on the CPU through telltale.token_batch (one call, read in place) against 64
r.token(t[b], chosen) calls on the same rows, in the same run, per row, for each core (ext and
ctypes, each in its own interpreter). Also the accelerator path's torch code run on the CPU
(forced), against the same host batch: what that code costs here, not an accelerator figure
(none is measured: no GPU on the development machine). Seven alternating runs of a few steps,
medians. No collector: the client's rings are large and nobody listens, so what is timed is the
call. JSON lines on stdout (the token_batch section of docs/benchmarks.md).

    bench/token_batch.py [--smoke]
"""

import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = "--smoke" in sys.argv
B, V = 64, (4096 if SMOKE else 131072)
RUNS, STEPS = (3, 1) if SMOKE else (7, 4)


def child():
    sys.path.insert(0, os.path.join(ROOT, "python"))
    os.environ.setdefault("TELLTALE_LIBRARY", os.path.join(ROOT, os.environ.get("BUILD", "build"),
                                                           "libtelltale.so"))
    import torch
    import telltale
    torch.manual_seed(0)
    mats = [torch.randn(B, V) * 3 for _ in range(2)]  # alternate: no step finds its rows cached
    chosen = torch.randint(0, V, (B,))
    ids = chosen.tolist()
    c = telltale.Client("unix:/nonexistent/telltale.sock", agent="bench-torch-batch",
                        ring_bytes=1 << 27)
    rs = [c.response(model="m").__enter__() for _ in range(B)]

    def batched(steps):
        t0 = time.perf_counter_ns()
        for s in range(steps):
            telltale.token_batch(rs, mats[s & 1], chosen)
        return (time.perf_counter_ns() - t0) / (steps * B)

    def single(steps):
        t0 = time.perf_counter_ns()
        for s in range(steps):
            m = mats[s & 1]
            for b in range(B):
                rs[b].token(m[b], ids[b])
        return (time.perf_counter_ns() - t0) / (steps * B)

    def device(steps):
        telltale._torch.force_device_path = True
        try:
            return batched(steps)
        finally:
            telltale._torch.force_device_path = False

    for f in (batched, single, device):
        f(1)  # warm up
    res = {"batched": [], "single": [], "device": [], "device_base": []}
    for r in range(RUNS):
        order = [("batched", batched), ("single", single)]
        for name, f in order if r % 2 else order[::-1]:
            res[name].append(f(STEPS))
        res["device"].append(device(1))
        res["device_base"].append(batched(1))
    for r in rs:
        r.end()
    c.close(0)
    print(json.dumps({k: statistics.median(v) for k, v in res.items()}
                     | {"impl": telltale.implementation}))


def main():
    if "--child" in sys.argv:
        child()
        return
    for impl in ("ext", "ctypes"):
        args = [sys.executable, os.path.abspath(__file__), "--child"] + \
            (["--smoke"] if SMOKE else [])
        out = subprocess.run(args, env=dict(os.environ, TELLTALE_IMPL=impl),
                             stdout=subprocess.PIPE, check=True).stdout
        res = json.loads(out.decode().strip().splitlines()[-1])
        if res["impl"] != impl:
            sys.exit("bench/token_batch.py: asked for %s, ran %s" % (impl, res["impl"]))
        print(json.dumps({
            "bench": "token_batch", "metric": "py_%s_torch_batch_64x%d_per_row_ns" % (impl, V),
            "value": round(res["batched"], 1), "unit": "ns",
            "baseline": "64 r.token(t[b]) calls on the same rows: %.1f ns per row"
                        % res["single"],
            "ratio": round(res["batched"] / res["single"], 3),
            "note": "telltale.token_batch of a CPU tensor, read in place; median of %d runs of "
                    "%d steps" % (RUNS, STEPS)}))
        print(json.dumps({
            "bench": "token_batch",
            "metric": "py_%s_device_code_on_cpu_64x%d_per_row_ns" % (impl, V),
            "value": round(res["device"], 1), "unit": "ns",
            "baseline": "the host batch: %.1f ns per row" % res["device_base"],
            "ratio": round(res["device"] / res["device_base"], 3),
            "note": "the accelerator path's torch code forced on the CPU (float64); the "
                    "accelerator figure is not measured (no GPU)"}))


if __name__ == "__main__":
    main()
