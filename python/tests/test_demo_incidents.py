"""A drift of the demo agent of `make run` as the operator sees it: one incident per detector
that fires, updated while the drift lasts, resolved once the demo is restarted without it.

The collector runs the detectors of `make run` (scripts/run-demo.conf) with shorter incident
times (an update notice every second, resolved after 3 s clear, times the slow-build
multiplier) so that the test takes
seconds, not minutes."""

import os
import re
import subprocess
import sys
import time

from conftest import LIB, MULT, ROOT, Collector


def _config(tmp_path):
    with open(os.path.join(ROOT, "scripts", "run-demo.conf")) as f:
        text = f.read()
    # Resolved after 3 s clear (longer in slow builds, where the demo's turns take longer).
    text = re.sub(r"(?m)^(type = .*)$",
                  r"\1\ncooldown_ms = 1000\nresolve_ms = %d" % int(3000 * MULT), text)
    path = os.path.join(str(tmp_path), "demo.conf")
    with open(path, "w") as f:
        f.write(text)
    return path


def _demo(c, *args):
    env = dict(os.environ, TELLTALE_LIBRARY=LIB, PYTHONPATH=os.path.join(ROOT, "python"))
    r = subprocess.run([sys.executable, "-m", "telltale_demo", "--endpoint", c.endpoint,
                        "--agent", "demo-agent", "--rate", "1000", "--seed", "5"] + list(args),
                       env=env, capture_output=True, text=True, timeout=120 * MULT)
    assert r.returncode == 0, r.stderr


def _incidents(c):
    return c.get("/api/v1/incidents", agent="demo-agent", limit=1000)["incidents"]


def test_demo_drift_is_one_incident_per_detector_updated_then_resolved_on_restart(tmp_path,
                                                                                  sockdir):
    c = Collector(tmp_path, sockdir, ["--config", _config(tmp_path)])
    try:
        _demo(c, "--turns", "300")  # calm: the detectors learn their baselines
        calm = {i["detector"] for i in _incidents(c)}
        assert "confidence_drift" not in calm and "low_confidence" not in calm, calm
        _demo(c, "--drift", "--duration", str(8 * MULT))
        during = _incidents(c)
        firing = {i["detector"] for i in during if i["status"] == "firing"}
        assert {"confidence_drift", "low_confidence"} <= firing, during
        # One incident per detector (and key), however long the drift lasted.
        keys = [(i["detector"], i["key"]) for i in during]
        assert len(keys) == len(set(keys)), keys
        drift = next(i for i in during if i["detector"] == "confidence_drift")
        assert drift["status"] == "firing" and drift["flaps"] == 0
        assert drift["count"] > 50, drift  # updated with every drifted response
        assert drift["last_unix_ns"] - drift["time_unix_ns"] > 2e9, drift
        assert "fell by" in drift["message"] and "sigma of the baseline" in drift["message"]
        metrics = urllib_get(c, "/metrics")
        assert re.search(r'telltale_incident_events_total\{event="updated"\} [1-9]', metrics)
        # The demo restarted without the drift: the drift's incidents (its answers' confidence,
        # its failing tool, its blocked statements) resolve, none reopens. The demo's tools take
        # microseconds, so their latency on a shared, loaded machine need not come back to its
        # calm level after a restart: a latency_drift incident, if any, is only held to being
        # one incident.
        drifted = (firing - calm) - {"latency_drift"}
        print("calm:", sorted(calm), "firing in the drift:", sorted(firing))
        _demo(c, "--duration", str(10 * MULT))
        deadline = time.monotonic() + 20 * MULT
        while any(i["status"] == "firing" and i["detector"] in drifted for i in _incidents(c)):
            assert time.monotonic() < deadline, _incidents(c)
            _demo(c, "--turns", "50")
        after = _incidents(c)
        after_keys = [(i["detector"], i["key"]) for i in after]
        assert len(after_keys) == len(set(after_keys)), after_keys  # still one per condition
        ids = {i["detector"]: i["id"] for i in during}
        for i in after:
            if i["detector"] in drifted:  # the same incident, now resolved
                assert i["id"] == ids[i["detector"]], (i, during)
                assert i["status"] == "resolved" and i["resolved_unix_ns"], i
    finally:
        c.stop()


def urllib_get(c, path):
    import urllib.request
    req = urllib.request.Request("http://%s%s" % (c.http, path), headers=c.auth)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read().decode()
