"""Fixtures of the Python tests: a real `telltale serve` on private endpoints in a temporary
directory, and helpers to read what it stored through its HTTP API.

The binary and the library come from the build tree (make test sets TT_BIN and TT_LIB_SO;
run by hand, they default to build/ next to python/). TELLTALE_IMPL (ext or ctypes, set by the
runner) selects the implementation of the package's hot calls; the compiled one is found next to
the library (build/python/telltale/)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("TT_BIN") or os.path.join(ROOT, "build", "telltale")
LIB = os.environ.get("TT_LIB_SO") or os.path.join(ROOT, "build", "libtelltale.so")
os.environ.setdefault("TELLTALE_LIBRARY", LIB)
sys.path.insert(0, os.path.join(ROOT, "python"))
MULT = float(os.environ.get("TT_TEST_TIMEOUT_MULT", "1") or 1)


class Collector:
    def __init__(self, tmp, sockdir, extra=()):
        self.dir = str(tmp)
        self.sock = os.path.join(sockdir, "tt.sock")
        self.endpoint = "unix:" + self.sock
        ready = os.path.join(self.dir, "ready.json")
        self.log = open(os.path.join(self.dir, "serve.log"), "wb")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--data", os.path.join(self.dir, "data"), "--listen", self.endpoint,
             "--http", "127.0.0.1:0", "--ready-file", ready] + list(extra), stdout=self.log,
            stderr=self.log)
        deadline = time.monotonic() + 10 * MULT
        while not os.path.exists(ready):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("telltale serve did not start: " + self.serve_log())
            time.sleep(0.02)
        time.sleep(0.01)
        with open(ready) as f:
            self.http = json.load(f)["http"]
        # The operator token the collector generated at its first start (docs/security.md).
        with open(os.path.join(self.dir, "data", "operator.token")) as f:
            self.token = f.readline().strip()
        self.auth = {"Authorization": "Bearer " + self.token}

    def serve_log(self):
        with open(os.path.join(self.dir, "serve.log"), errors="replace") as f:
            return f.read()

    def get(self, path, **params):
        q = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        url = "http://%s%s%s" % (self.http, path, "?" + q if q else "")
        with urllib.request.urlopen(urllib.request.Request(url, headers=self.auth),
                                    timeout=10) as r:
            return json.load(r)

    def post(self, path, body=None):
        req = urllib.request.Request("http://%s%s" % (self.http, path), method="POST",
                                     data=json.dumps(body or {}).encode(),
                                     headers=dict(self.auth, **{"Content-Type": "application/json"}))
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.load(r)

    def events(self, **params):
        """Every stored event that matches (follows the pages)."""
        out = []
        params.setdefault("limit", 1000)
        while True:
            page = self.get("/api/v1/events", **params)
            out += page["events"]
            if not page.get("next"):
                return out
            params["cursor"] = page["next"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15 * MULT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def sockdir():
    """A short directory for unix sockets (a socket path has at most 107 bytes, and the
    runner's temporary directories are long)."""
    d = tempfile.mkdtemp(prefix="ttpy-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def collector(tmp_path, sockdir):
    c = Collector(tmp_path, sockdir)
    yield c
    c.stop()


@pytest.fixture
def telltale():
    import telltale as tt
    # The runner names the implementation under test (TELLTALE_IMPL=ext or ctypes): make sure it
    # is the one these tests exercise.
    want = os.environ.get("TELLTALE_IMPL")
    if want in ("ext", "ctypes"):
        assert tt.implementation == want, (tt.implementation, tt._ext_error)
    return tt
