"""Client, log, metric, stats, close and packaging, against a real collector."""

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from conftest import LIB, MULT, ROOT


def test_log_and_metric_are_stored_with_their_attributes(collector, telltale):
    with telltale.Client(collector.endpoint, agent="py-log", session="s-1") as c:
        assert c.log("hello", user="ann", n=3, ratio=0.5, ok=True) == 0
        assert c.log("careful", "warn", session="s-2") == 0
        assert c.metric("latency", 12.5, unit="ms", route="/a") == 0
        assert c.metric("requests", 1, "counter") == 0
        assert c.close(5 * MULT) is True
    ev = collector.events(agent="py-log")
    assert [e["kind"] for e in ev] == ["log", "log", "metric", "metric"]
    assert ev[0]["message"] == "hello" and ev[0]["session"] == "s-1"
    assert ev[0]["attrs"] == {"user": "ann", "n": 3, "ratio": 0.5, "ok": True}
    assert ev[1]["severity"] == "warn" and ev[1]["session"] == "s-2"
    assert ev[2]["name"] == "latency" and ev[2]["value"] == 12.5 and ev[2]["unit"] == "ms"
    assert ev[3]["metric_kind"] == "counter"


def test_bad_arguments_raise_and_emit_nothing(collector, telltale):
    with pytest.raises(ValueError, match="ring_bytes"):
        telltale.Client(collector.endpoint, agent="py-bad", ring_bytes=3)
    with pytest.raises(ValueError, match="no_such_key"):
        telltale.Client(collector.endpoint, agent="py-bad", no_such_key=1)
    with telltale.Client(collector.endpoint, agent="py-bad") as c:
        with pytest.raises(ValueError):
            c.log("x", "loud")
        with pytest.raises(ValueError):
            c.metric("m", 1, "pie")
        with pytest.raises(ValueError):
            c.step("dance")
        assert c.stats().emitted == 0


def test_stats_balance_after_flush(collector, telltale):
    with telltale.Client(collector.endpoint, agent="py-stats") as c:
        for i in range(1000):
            c.log("event %d" % i)
        assert c.flush(10 * MULT) is True
        s = c.stats()
        assert s.emitted == 1000 and s.acked == 1000 and s.dropped_total == 0
        assert s.emitted == s.acked + s.possibly_delivered + s.buffered + s.dropped_total
        assert s.connected is True and set(s.dropped) >= {"buffer_full", "shutdown"}
        assert len(c.instance_id) == 32
    assert c.closed
    assert collector.get("/api/v1/events/count", agent="py-stats")["count"] == 1000
    assert c.log("after close") != 0  # a closed client drops, never crashes


def test_full_ring_drops_and_counts_instead_of_blocking(collector, telltale):
    with telltale.Client(collector.endpoint, agent="py-full", ring_bytes=8192, max_event_bytes=512,
                         flush_interval_ms=1000) as c:
        codes = [c.log("x" * 200) for _ in range(200)]
        assert min(codes) < 0 and codes.count(0) > 0
        s = c.stats()
        assert s.dropped["buffer_full"] == codes.count(min(codes))


def _blackhole(sockdir):
    """A unix socket that accepts connections into its backlog and never reads or answers."""
    path = os.path.join(sockdir, "blackhole.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(16)
    return s, "unix:" + path


def test_close_with_blackholed_collector_returns_within_deadline(sockdir, telltale):
    hole, endpoint = _blackhole(sockdir)
    c = telltale.Client(endpoint, agent="py-hole", ack_timeout_ms=60000)
    for i in range(5000):
        c.log("into the void %d" % i)
    t0 = time.monotonic()
    assert c.close(0.5) is False
    took = time.monotonic() - t0
    assert took < 0.5 + 1.0 * MULT, took
    assert c.closed
    hole.close()


def test_interpreter_exit_closes_within_deadline_with_blackholed_collector(sockdir):
    hole, endpoint = _blackhole(sockdir)
    # The child prints the monotonic clock (system-wide) once its events are emitted: the time
    # measured is from there to its exit, not the interpreter's start-up and imports (seconds on
    # a loaded machine).
    code = ("import telltale, time\n"
            "c = telltale.Client(%r, agent='py-exit', close_timeout=0.5, ack_timeout_ms=60000)\n"
            "for i in range(1000): c.log('x')\n"
            "print(time.monotonic(), flush=True)\n" % endpoint)
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
    r = subprocess.run([sys.executable, "-c", code], env=env, timeout=30 * MULT,
                       stdout=subprocess.PIPE, text=True)
    took = time.monotonic() - float(r.stdout.split()[-1])
    assert r.returncode == 0
    assert took < 0.5 + 3.0 * MULT, took
    hole.close()


def test_fork_child_streams_as_new_instance_without_parent_events(collector, telltale):
    if "thread" in os.environ.get("TT_SANITIZE", ""):
        # The child starts the library's worker thread; ThreadSanitizer cannot follow a thread
        # started after a multi-threaded fork ("dup thread with used id"). The normal and the
        # ASan/UBSan suites run this test.
        pytest.skip("ThreadSanitizer does not support threads started after a multi-threaded "
                    "fork")
    c = telltale.Client(collector.endpoint, agent="py-fork")
    for i in range(100):
        c.log("before fork %d" % i)
    parent_instance = c.instance_id
    if os.environ.get("TT_SANITIZE"):
        # The sanitizers' allocators (GCC 12) take no lock around fork(): a child forked while
        # the worker thread is inside malloc waits forever for that lock. Let the worker idle.
        assert c.flush(10 * MULT)
    pid = os.fork()
    if pid == 0:
        rc = 1
        try:
            assert c.instance_id != parent_instance
            for i in range(10):
                c.log("child %d" % i)
            rc = 0 if c.close(10 * MULT) else 2
        finally:
            os._exit(rc)
    for i in range(5):
        c.log("parent after fork %d" % i)
    deadline = time.monotonic() + 30 * MULT
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child did not finish within %.0f s" % (30 * MULT))
        time.sleep(0.01)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert c.close(10 * MULT) is True
    ev = collector.events(agent="py-fork")
    by = {}
    for e in ev:
        by.setdefault(e["instance"], []).append(e["message"])
    assert by[parent_instance] == (["before fork %d" % i for i in range(100)]
                                   + ["parent after fork %d" % i for i in range(5)])
    others = [v for k, v in by.items() if k != parent_instance]
    assert others == [["child %d" % i for i in range(10)]]


def _pip_install(tmp_path, site, **env):
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps",
                        "--disable-pip-version-check", "--no-build-isolation", "-v", "--target",
                        str(site), os.path.join(ROOT, "python")], capture_output=True, text=True,
                       cwd=str(tmp_path), timeout=180 * MULT, env=dict(os.environ, **env))
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def _run_installed(tmp_path, site, lib, code, impl=None):
    env = dict(os.environ, PYTHONPATH=str(site), TELLTALE_LIBRARY=lib)
    env.pop("TELLTALE_IMPL", None)
    if impl:
        env["TELLTALE_IMPL"] = impl
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=str(tmp_path), timeout=30 * MULT)


def test_pip_installs_offline_with_the_compiled_core(tmp_path, collector):
    # A fresh install: pip builds the wheel offline (python/_backend), compiling the core with
    # the system's compiler and python3-dev; the installed package runs it by default.
    site = tmp_path / "site"
    _pip_install(tmp_path, site)
    built = [n for n in os.listdir(site / "telltale") if n.startswith("_ext")]
    assert len(built) == 1 and built[0].endswith(".so"), os.listdir(site / "telltale")
    code = ("import telltale\n"
            "assert telltale.__file__.startswith(%r), telltale.__file__\n"
            "assert telltale.implementation == 'ext', telltale._ext_error\n"
            "assert telltale._core.__file__.startswith(%r), telltale._core.__file__\n"
            "with telltale.Client(%r, agent='py-pip') as c:\n"
            "    c.log('from the wheel', user='ann', n=3)\n"
            "    with c.step('tool', name='t'): pass\n"
            % (str(site), str(site), collector.endpoint))
    r = _run_installed(tmp_path, site, LIB, code)
    assert r.returncode == 0, r.stderr
    ev = collector.events(agent="py-pip")
    assert [e["kind"] for e in ev] == ["log", "step_begin", "step_end"]
    assert ev[0]["message"] == "from the wheel" and ev[0]["attrs"] == {"user": "ann", "n": 3}


def test_pip_installs_without_a_compiler_and_runs_the_ctypes_core(tmp_path, collector):
    # A machine where the core cannot be compiled (here: a compiler that always fails): the
    # install still succeeds, pure Python, and the package runs its ctypes core; asking for the
    # extension explicitly is then a clear ImportError, not a silent fallback.
    site = tmp_path / "site"
    r = _pip_install(tmp_path, site, CC="false")
    assert "without the compiled core" in r.stdout + r.stderr
    assert not [n for n in os.listdir(site / "telltale") if n.startswith("_ext")]
    # The library alone in a directory, as installed: no extension built beside it either.
    libdir = tmp_path / "lib"
    libdir.mkdir()
    shutil.copy(LIB, libdir / "libtelltale.so")
    lib = str(libdir / "libtelltale.so")
    code = ("import telltale\n"
            "assert telltale.implementation == 'ctypes', telltale.implementation\n"
            "assert 'not built' in telltale._ext_error, telltale._ext_error\n"
            "with telltale.Client(%r, agent='py-pure') as c:\n"
            "    c.log('from the pure wheel', user='ann', n=3)\n" % collector.endpoint)
    r = _run_installed(tmp_path, site, lib, code)
    assert r.returncode == 0, r.stderr
    ev = collector.events(agent="py-pure")
    assert [(e["message"], e["attrs"]) for e in ev] == [("from the pure wheel",
                                                         {"user": "ann", "n": 3})]
    r = _run_installed(tmp_path, site, lib, "import telltale", impl="ext")
    assert r.returncode != 0 and "TELLTALE_IMPL=ext" in r.stderr, r.stderr


def test_library_is_found_in_the_build_tree_and_a_wrong_path_is_a_clear_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TELLTALE_LIBRARY"}
    env["PYTHONPATH"] = os.path.join(ROOT, "python")
    r = subprocess.run([sys.executable, "-c", "import telltale; print(telltale.library_path)"],
                       env=env, capture_output=True, text=True, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == os.path.join(ROOT, "build", "libtelltale.so")
    env["TELLTALE_LIBRARY"] = str(tmp_path / "nope.so")
    r = subprocess.run([sys.executable, "-c", "import telltale"], env=env, capture_output=True,
                       text=True, cwd=str(tmp_path))
    assert r.returncode != 0
    assert "TELLTALE_LIBRARY" in r.stderr and "nope.so" in r.stderr


def test_repeated_and_spelled_out_keywords_give_the_same_events(collector, telltale):
    # The extension's fast path remembers a call site's keyword names: the first call and the
    # later ones store the same events, a keyword spelled by a built string still means the
    # parameter of that name, and whatever the fast path declines (non-ASCII text, an int
    # subclass, a 64-bit-wide int, an unknown level) converts or raises as the general path does.
    import enum

    class Color(enum.IntEnum):
        RED = 1

    sess, lvl, unit = "".join(["sess", "ion"]), "".join(["lev", "el"]), "".join(["un", "it"])
    with telltale.Client(collector.endpoint, agent="py-kw", session="s-1") as c:
        for i in range(3):
            assert c.log("again", level="error", user="ann", n=i, wide=-(1 << 62), flag=False,
                         ratio=0.5) == 0
        for _ in range(2):
            assert c.log("spelled", **{sess: "s-2", lvl: "warn", "k": 1}) == 0
            assert c.metric("m", 1.5, **{unit: "ms", "k": "v"}) == 0
        assert c.log("é", clé="vé", color=Color.RED) == 0
        assert c.metric("latency", 2.5, unit="ms", route="/a") == 0
        with pytest.raises(ValueError):
            c.log("x", level="loud", k=1)
        with pytest.raises(TypeError):
            c.log("x", message="twice")
        assert c.close(5 * MULT)
    ev = collector.events(agent="py-kw")
    assert [e.get("message", e.get("name")) for e in ev] == \
        ["again"] * 3 + ["spelled", "m"] * 2 + ["é", "latency"]
    for i in range(3):
        assert ev[i]["severity"] == "error" and ev[i]["session"] == "s-1"
        assert ev[i]["attrs"] == {"user": "ann", "n": i, "wide": -(1 << 62), "flag": False,
                                  "ratio": 0.5}
    for e in (ev[3], ev[5]):
        assert e["session"] == "s-2" and e["severity"] == "warn" and e["attrs"] == {"k": 1}
    for e in (ev[4], ev[6]):
        assert e["unit"] == "ms" and e["value"] == 1.5 and e["attrs"] == {"k": "v"}
        assert e["metric_kind"] == "gauge"
    assert ev[7]["attrs"] == {"clé": "vé", "color": 1}
    assert ev[8]["unit"] == "ms" and ev[8]["attrs"] == {"route": "/a"}


def test_attribute_values_of_every_type_are_stored_as_documented(collector, telltale):
    # Both cores convert alike: bool, 64-bit int and float as such; str and bytes as text; None
    # as an empty text; any other value (an int beyond 64 bits, a numpy scalar) as its str().
    import numpy as np
    with telltale.Client(collector.endpoint, agent="py-attrs", session="s-1") as c:
        assert c.log("types", t=True, neg=-3, big=1 << 70, ratio=0.25, raw=b"bytes", text="é",
                     none=None, np_int=np.int64(5), np_float=np.float64(0.5)) == 0
        many = {"k%02d" % i: i for i in range(20)}
        assert c.log("many", **many) == 0
        assert c.log("too many", **{"k%02d" % i: i for i in range(65)}) < 0
        c.session = "s-2"
        assert c.metric("m", 2, "counter", unit="ms", session=None, route="/a") == 0
        assert c.log(message="by keyword", level="WARN") == 0
        with pytest.raises(TypeError):
            c.log()
        with pytest.raises(TypeError):
            c.log("x", "info", "extra positional")
        assert c.close(5 * MULT)
    ev = collector.events(agent="py-attrs")
    assert [e.get("message", e.get("name")) for e in ev] == ["types", "many", "m", "by keyword"]
    assert ev[0]["attrs"] == {"t": True, "neg": -3, "big": str(1 << 70), "ratio": 0.25,
                              "raw": "bytes", "text": "é", "none": "", "np_int": "5",
                              "np_float": 0.5}
    assert ev[0]["session"] == "s-1"
    assert ev[1]["attrs"] == many
    assert ev[2]["session"] == "s-2" and ev[2]["attrs"] == {"route": "/a"}
    assert ev[2]["unit"] == "ms" and ev[2]["metric_kind"] == "counter"
    assert ev[3]["severity"] == "warn" and ev[3]["session"] == "s-2"
