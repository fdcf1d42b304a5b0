#!/usr/bin/python3
"""Cost per Python call of the telltale package, for both implementations of its hot calls (the
compiled extension telltale._ext and the ctypes core), beside the standard library's
logging.handlers.QueueHandler and the bare cost of a call from Python into C, all measured in
the same run.

    bench/python.py [--quick]

Starts a real collector (TT_BIN, default build/telltale) on a private unix socket, then runs
this script as a child per implementation (TELLTALE_IMPL=ext, then ctypes, twice, keeping the
better median of each), each with its own client (TELLTALE_LIBRARY, default libtelltale.so next
to TT_BIN, the default ring of 1 MiB). A child times, in bursts of 2000 calls with a flush
between two bursts (untimed), the median of the per-call CPU time of the calling thread over the
bursts (time.thread_time_ns: the worker, the QueueListener and the collector run in other
threads, and the other load of a shared machine does not count):
  log            client.log("message")
  log_attrs      client.log("message", user="ann", n=3)
  log_attrs8     client.log("message", 8 attributes: str, int, float, bool)
  metric         client.metric("latency", 12.5, unit="ms", route="/a")
  step           `with client.step("tool", name=.., query=..)` (begin + end events)
  token_32k      r.token(row, chosen), a row of 32768 float32 (and float16) logits
  token_logprobs r.token_logprobs(lp, top 5 log-probs, chosen=.., top_ids=..)
and the baselines: QueueHandler logger.info (with extra= for the attributes), numpy's lean
max/exp/sum of the row, and, in the extension's child, bare_call() and bare_call(message,
user=, n=) (a METH_FASTCALL C function of the same extension that does nothing: the limit of
any call into C) and log_floor(client) (the same log call with its arguments converted in
advance: the call plus the library's own work). QueueHandler puts each record on a
queue.SimpleQueue drained by a QueueListener thread into a NullHandler: the standard library's
own non-blocking logging path. Prints JSON lines
{"bench":"python","metric":..,"value":..,"unit":"ns","baseline":..,"ratio":..}.
"""

import json
import logging
import logging.handlers
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The library next to the binary that `make bench` names (TT_BIN), else the default build tree.
_bin_dir = os.path.dirname(os.environ["TT_BIN"]) if os.environ.get("TT_BIN") else \
    os.path.join(ROOT, "build")
os.environ.setdefault("TELLTALE_LIBRARY", os.path.join(_bin_dir, "libtelltale.so"))
sys.path.insert(0, os.path.join(ROOT, "python"))

QUICK = "--quick" in sys.argv
BATCHES = 9 if QUICK else 31
N = 2000  # calls per batch: a burst that the default ring (1 MiB) holds without a drop


def per_call(fn, n=N, batches=BATCHES, between=None):
    """Median over batches of the per-call CPU time of fn(n) (which makes n calls), in ns;
    between() runs after each batch, untimed (the client's flush: the next burst starts with the
    ring drained, as in an agent between two bursts of events)."""
    fn(n)  # warm up
    if between:
        between()
    ts = []
    for _ in range(batches):
        t0 = time.thread_time_ns()
        fn(n)
        ts.append((time.thread_time_ns() - t0) / n)
        if between:
            between()
    ts.sort()
    return ts[len(ts) // 2]


def child(endpoint):
    """Measure every call with the implementation TELLTALE_IMPL names; print a JSON dict."""
    import telltale
    impl = telltale.implementation
    assert impl == os.environ["TELLTALE_IMPL"], (impl, telltale._ext_error)
    q = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(q, logging.NullHandler())
    listener.start()
    logger = logging.getLogger("bench")
    logger.propagate = False
    logger.addHandler(logging.handlers.QueueHandler(q))
    logger.setLevel(logging.INFO)

    c = telltale.Client(endpoint, agent="bench-python-" + impl)  # the default ring, 1 MiB
    # Touch the whole ring once, so that no candidate pays the first write of its pages.
    for i in range(4):
        for _ in range(N):
            c.log("warm-up", user="ann", n=i)
        c.flush(10.0)

    attrs8 = {"user": "ann", "n": 3, "ratio": 0.5, "ok": True, "route": "/a", "status": 200,
              "region": "eu", "cached": False}

    def qh_log(n):
        info = logger.info
        for _ in range(n):
            info("tool call finished")

    def qh_log_attrs(n):
        info = logger.info
        extra = {"user": "ann", "n": 3}
        for _ in range(n):
            info("tool call finished", extra=extra)

    def qh_log_attrs8(n):
        info = logger.info
        for _ in range(n):
            info("tool call finished", extra=attrs8)

    def tt_log(n):
        log = c.log
        for _ in range(n):
            log("tool call finished")

    def tt_log_attrs(n):
        log = c.log
        for _ in range(n):
            log("tool call finished", user="ann", n=3)

    def tt_log_attrs8(n):
        log = c.log
        for _ in range(n):
            log("tool call finished", user="ann", n=3, ratio=0.5, ok=True, route="/a",
                status=200, region="eu", cached=False)

    def tt_metric(n):
        metric = c.metric
        for _ in range(n):
            metric("latency", 12.5, unit="ms", route="/a")

    def tt_step(n):
        step = c.step
        for _ in range(n):
            with step("tool", name="search", query="weather in Oslo"):
                pass

    cands = [("qh_log", qh_log), ("tt_log", tt_log), ("qh_log_attrs", qh_log_attrs),
             ("tt_log_attrs", tt_log_attrs), ("qh_log_attrs8", qh_log_attrs8),
             ("tt_log_attrs8", tt_log_attrs8), ("tt_metric", tt_metric), ("tt_step", tt_step)]
    if impl == "ext":
        core = telltale._core

        def bare_call(n):
            f = core.bare_call
            for _ in range(n):
                f()

        def bare_call_args(n):
            f = core.bare_call
            for _ in range(n):
                f("tool call finished", user="ann", n=3)

        def log_floor(n):
            f = core.log_floor
            for _ in range(n):
                f(c)

        cands += [("bare_call", bare_call), ("bare_call_args", bare_call_args),
                  ("log_floor", log_floor)]

    def settle():
        if not c.flush(10.0):
            sys.exit("bench/python: the collector did not acknowledge a batch in 10 s")

    results = {}
    for name, fn in cands:
        emits = name.startswith("tt_") or name == "log_floor"
        results[name] = per_call(fn, between=settle if emits else None)

    vocab = 32768
    rng = np.random.default_rng(1)
    row = rng.normal(0, 3, vocab).astype(np.float32)
    row16 = row.astype(np.float16)
    top = sorted(rng.normal(-3, 1, 5).tolist(), reverse=True)
    top = [min(x, -0.01) for x in top]
    top_ids = [11, 12, 13, 14, 15]

    def tt_token(arr):
        def f(n):
            with c.response(model="bench") as r:
                tok = r.token
                for i in range(n):
                    tok(arr, i & 1023)
        return f

    def tt_token_logprobs(n):
        with c.response(model="bench") as r:
            tok = r.token_logprobs
            lp = top[1]
            for _ in range(n):
                tok(lp, top, chosen=12, top_ids=top_ids)

    def np_lean(n):
        for i in range(n):
            m = row.max()
            e = np.exp(row - m)
            s = e.sum(dtype=np.float64)
            _ = np.log(s) + m - row[i & 1023]

    results["tt_token_f32"] = per_call(tt_token(row), n=N // 10, between=settle)
    results["tt_token_f16"] = per_call(tt_token(row16), n=N // 10, between=settle)
    results["tt_token_logprobs"] = per_call(tt_token_logprobs, between=settle)
    results["np_token"] = per_call(np_lean, n=N // 10)
    st = c.stats()
    c.close(10.0)
    listener.stop()
    results["dropped"] = st.dropped_total
    print(json.dumps(results), flush=True)


def emit(metric, value, baseline_name, baseline, note):
    print(json.dumps({"bench": "python", "metric": metric, "value": round(value, 1), "unit": "ns",
                      "baseline": baseline_name, "baseline_value": round(baseline, 1),
                      "ratio": round(value / baseline, 3), "note": note}), flush=True)


def emit_value(metric, value, note):
    print(json.dumps({"bench": "python", "metric": metric, "value": round(value, 1), "unit": "ns",
                      "note": note}), flush=True)


def report(ext, ct):
    """The JSON lines: each call with the extension and with ctypes, and their baselines."""
    base = {k: min(ext[k], ct[k]) for k in ext if k.startswith(("qh_", "np_"))}
    emit_value("bare_call_ns", ext["bare_call"],
               "bare_call(): a METH_FASTCALL C function that does nothing")
    emit_value("bare_call_args_ns", ext["bare_call_args"],
               "bare_call(msg, user=, n=): the same, with log_attrs' arguments")
    emit("log_floor_ns", ext["log_floor"], "bare_call(msg, user=, n=)", ext["bare_call_args"],
         "log_floor(client): tt_log with 2 attributes converted in advance (call + library)")
    rows = [("log", "tt_log", "qh_log", "QueueHandler logger.info", "client.log(msg)"),
            ("log_attrs", "tt_log_attrs", "qh_log_attrs", "QueueHandler logger.info extra=",
             "client.log(msg, user=str, n=int)"),
            ("log_attrs8", "tt_log_attrs8", "qh_log_attrs8", "QueueHandler extra= (8 keys)",
             "client.log(msg, 8 attributes: str, int, float, bool)"),
            ("metric", "tt_metric", "qh_log", "QueueHandler logger.info",
             "client.metric(name, value, unit=, route=)"),
            ("step", "tt_step", "qh_log", "QueueHandler logger.info",
             "with client.step(kind, name=, query=): begin + end events"),
            ("token_32k_f32", "tt_token_f32", "np_token", "numpy max/exp/sum of the row",
             "r.token(row, chosen): 32768 float32 logits, stats + guard"),
            ("token_32k_f16", "tt_token_f16", "np_token", "numpy max/exp/sum of the f32 row",
             "r.token(row, chosen): 32768 float16 logits"),
            ("token_logprobs", "tt_token_logprobs", None, None,
             "r.token_logprobs(lp, 5 top log-probs, chosen=, top_ids=)")]
    for metric, key, bkey, bname, note in rows:
        if bkey:
            emit("%s_ext_ns" % metric, ext[key], bname, base[bkey], note + "; extension")
            emit("%s_ctypes_ns" % metric, ct[key], bname, base[bkey], note + "; ctypes")
        emit("%s_ext_ns" % metric, ext[key], "the same call with ctypes", ct[key],
             "extension vs ctypes (< 1: faster)")
    emit("log_attrs_ext_ns", ext["tt_log_attrs"], "bare_call(msg, user=, n=)",
         ext["bare_call_args"], "the goal: <= 2x the bare call with the same arguments")
    emit("log_attrs_ext_ns", ext["tt_log_attrs"], "bare_call()", ext["bare_call"],
         "against the bare call without arguments")
    emit("log_attrs_ext_ns", ext["tt_log_attrs"], "log_floor(client)", ext["log_floor"],
         "against the call plus the library's own work")


def run_child(impl, endpoint):
    env = dict(os.environ, TELLTALE_IMPL=impl)
    args = [sys.executable, os.path.abspath(__file__), "--child", endpoint]
    if QUICK:
        args.append("--quick")
    out = subprocess.run(args, env=env, stdout=subprocess.PIPE, check=True).stdout
    res = json.loads(out.decode().strip().splitlines()[-1])
    if res.pop("dropped"):
        sys.exit("bench/python: events were dropped during the %s run" % impl)
    return res


def main():
    if "--child" in sys.argv:
        child(sys.argv[sys.argv.index("--child") + 1])
        return
    tmp = tempfile.mkdtemp(prefix="ttpybench-")
    binary = os.environ.get("TT_BIN") or os.path.join(ROOT, "build", "telltale")
    ready = os.path.join(tmp, "ready.json")
    sock = "unix:" + os.path.join(tmp, "s.sock")
    serve = subprocess.Popen([binary, "serve", "--data", os.path.join(tmp, "data"), "--listen",
                              sock, "--no-http", "--sync", "off", "--ready-file", ready],
                             stderr=subprocess.DEVNULL)
    try:
        while not os.path.exists(ready):
            if serve.poll() is not None:
                sys.exit("bench/python: the collector did not start")
            time.sleep(0.02)
        # Alternate the implementations, twice, keeping the better median of each, so that a
        # burst of load on the shared machine hits both sides alike.
        best = {"ext": {}, "ctypes": {}}
        for _ in range(1 if QUICK else 2):
            for impl in ("ext", "ctypes"):
                for k, v in run_child(impl, sock).items():
                    best[impl][k] = min(v, best[impl].get(k, v))
        report(best["ext"], best["ctypes"])
    finally:
        serve.terminate()
        serve.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
