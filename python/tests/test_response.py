"""Responses and the guard: token rows read in place, hosted-model log-probs, verdicts, HALT."""

import math
import time
import tracemalloc

import numpy as np
import pytest

from conftest import MULT


@pytest.fixture(autouse=True)
def response_api(telltale):
    # Not a skip: a library without the response API fails these tests, loudly.
    if not telltale._lib.HAVE_RESPONSES:
        pytest.fail("libtelltale (%s) has no response API (tt_response_begin): these tests "
                    "cannot run" % telltale.library_path)


def _row(probs, dtype=np.float32):
    return np.log(np.asarray(probs, dtype=np.float64)).astype(dtype)


def test_token_returns_the_verdict_and_the_statistics_of_the_row(collector, telltale):
    with telltale.Client(collector.endpoint, agent="py-resp") as c:
        with c.response(session="s-r", model="toy", temperature=0.7) as r:
            assert r.token(_row([0.7, 0.2, 0.1]), 0) is telltale.Verdict.PASS
            last = r.last
            assert abs(last.prob - 0.7) < 1e-5 and last.rank == 0
            ent = -sum(p * math.log(p) for p in (0.7, 0.2, 0.1))
            assert abs(last.entropy - ent) < 1e-4
            assert last.topk[0][0] == 0 and abs(last.topk[1][1] - 0.2) < 1e-5
            assert r.token(_row([0.7, 0.2, 0.1]), 2) is telltale.Verdict.PASS
            assert abs(r.last.prob - 0.1) < 1e-5 and r.last.rank == 2
        s = r.summary
        assert s.tokens == 2 and s.verdict is telltale.Verdict.PASS and not s.estimated
        assert abs(s.mean_logprob - (math.log(0.7) + math.log(0.1)) / 2) < 1e-4
        assert c.close(5 * MULT)
    kinds = [e["kind"] for e in collector.events(agent="py-resp")]
    assert kinds[0] == "response_begin" and kinds[-1] == "response_end"
    assert all(e.get("session") == "s-r" for e in collector.events(agent="py-resp",
                                                                   kind="response_begin"))


def test_float16_and_bfloat16_rows_give_the_float32_statistics(collector, telltale):
    rng = np.random.default_rng(7)
    f32 = rng.normal(0, 2, 4096).astype(np.float32)
    bf16 = (f32.view(np.uint32) >> 16).astype(np.uint16)  # truncated: compare to its own f32
    bf16_as_f32 = (bf16.astype(np.uint32) << 16).view(np.float32)
    with telltale.Client(collector.endpoint, agent="py-dtypes") as c:
        with c.response(model="toy") as r:
            r.token(f32, 11)
            p32 = r.last.prob
            r.token(f32.astype(np.float16), 11)
            assert abs(r.last.prob - p32) < 2e-3 * max(p32, 1e-3) + 1e-6
            r.token(bf16_as_f32, 11)
            pb_ref = r.last.prob
            r.token(bf16, 11)
            assert abs(r.last.prob - pb_ref) < 1e-6 + 1e-5 * pb_ref
        assert r.summary.tokens == 4


def test_token_reads_the_array_in_place_without_a_copy(collector, telltale):
    n = 32768
    row = np.zeros(n, np.float32)
    with telltale.Client(collector.endpoint, agent="py-zerocopy") as c:
        with c.response(model="toy") as r:
            r.token(row, 5)
            assert abs(r.last.prob - 1.0 / n) < 1e-9
            # The library reads the array's own buffer: a change made in place shows at once.
            row[5] = 30.0
            r.token(row, 5)
            assert r.last.prob > 0.99
            # A strided view (every third entry of a larger buffer) is read through its stride.
            base = np.zeros(3 * n, np.float32)
            view = base[::3]
            assert not view.flags.c_contiguous
            base[3 * 7] = 30.0  # entry 7 of the view
            base[3 * 7 + 1] = 1e6  # between two view entries: never read
            r.token(view, 7)
            assert r.last.prob > 0.99 and r.last.rank == 0
            # No copy: 200 tokens of a 128 KiB row allocate far less than one row.
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(100):
                r.token(row, 5)
                r.token(view, 7)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert peak - before < n * 4 // 4, peak - before
            assert r.tokens == 203


def test_token_reads_buffer_protocol_rows_in_place(collector, telltale):
    import array
    probs = [0.6, 0.3, 0.1]
    row = array.array("f", _row(probs).tolist())
    with telltale.Client(collector.endpoint, agent="py-buffer") as c:
        with c.response(model="toy") as r:
            assert r.token(row, 1) is telltale.Verdict.PASS
            assert abs(r.last.prob - 0.3) < 1e-5 and r.last.rank == 1
            row[1] = 30.0  # the array's own memory is read: a change shows at the next call
            r.token(memoryview(row), 1)
            assert r.last.prob > 0.99 and r.last.rank == 0
            with pytest.raises(TypeError):
                r.token(array.array("d", [0.1, 0.2]), 0)
        assert r.summary.tokens == 2


def test_token_rejects_rows_it_cannot_read_in_place(collector, telltale):
    with telltale.Client(collector.endpoint, agent="py-reject") as c:
        with c.response(model="toy") as r:
            with pytest.raises(TypeError, match="float32"):
                r.token(np.zeros(8, np.float64), 0)
            with pytest.raises(TypeError):
                r.token(np.zeros(8, ">f4"), 0)
            with pytest.raises(ValueError, match="1-D"):
                r.token(np.zeros((2, 8), np.float32), 0)
            with pytest.raises(ValueError, match="stride"):
                r.token(np.zeros(8, np.float32)[::-1], 0)
            with pytest.raises(ValueError, match="empty"):
                r.token(np.zeros(0, np.float32), 0)
            with pytest.raises(TypeError):
                r.token([0.1, 0.2], 0)
            assert r.tokens == 0
        assert r.summary.tokens == 0


def test_token_logprobs_of_a_hosted_model(collector, telltale):
    lp = [math.log(0.6), math.log(0.3), math.log(0.05)]
    with telltale.Client(collector.endpoint, agent="py-lp") as c:
        with c.response(model="hosted") as r:
            assert r.token_logprobs(lp[0], lp, chosen=10, top_ids=[10, 11, 12]) == 0
            assert abs(r.last.prob - 0.6) < 1e-5 and r.last.rank == 0
            assert r.token_logprobs(lp[1], {10: lp[0], 11: lp[1], 12: lp[2]}, chosen=11) == 0
            assert r.last.rank == 1
            assert r.token_logprobs(math.log(0.9)) is telltale.Verdict.PASS
            with pytest.raises(ValueError):
                r.token_logprobs(0.5)  # a log-prob above 0 is refused
        assert r.summary.tokens == 3 and r.summary.estimated


def test_guard_flags_a_low_confidence_token(collector, telltale):
    policy = telltale.GuardPolicy(token_min_prob=0.05, action=telltale.Verdict.FLAG)
    with telltale.Client(collector.endpoint, agent="py-flag", guard=policy) as c:
        got = c.guard_policy
        assert abs(got.token_min_prob - 0.05) < 1e-7 and got.action is telltale.Verdict.FLAG
        with c.response(session="s-f", model="toy") as r:
            assert r.token(_row([0.9, 0.09, 0.01]), 0) is telltale.Verdict.PASS
            assert r.token(_row([0.9, 0.09, 0.01]), 2) is telltale.Verdict.FLAG
            assert r.token(_row([0.9, 0.09, 0.01]), 0) is telltale.Verdict.PASS
        assert r.verdict is telltale.Verdict.FLAG
        assert r.summary.verdict is telltale.Verdict.FLAG and r.summary.reason
        assert c.close(5 * MULT)
    assert collector.events(agent="py-flag", kind="guard")


def test_guard_halt_raises_halted_when_asked(collector, telltale):
    with telltale.Client(collector.endpoint, agent="py-halt", raise_on_halt=True,
                         **{"guard.token_min_prob": 0.05, "guard.action": "halt"}) as c:
        assert c.guard_policy.action is telltale.Verdict.HALT
        with pytest.raises(telltale.Halted) as info:
            with c.response(session="s-h", model="toy") as r:
                for i in range(10):
                    r.token(_row([0.98, 0.01, 0.01]), 0 if i < 3 else 1)
        assert r.tokens == 4  # the fourth token tripped the guard
        assert info.value.response is r and info.value.reason == r.summary.reason
        assert r.summary.verdict is telltale.Verdict.HALT
        with pytest.raises(RuntimeError):
            r.token(_row([0.5, 0.5]), 0)  # a halted response is over
        # Without raise_on_halt the verdict is returned.
        with c.response(session="s-h2", model="toy", raise_on_halt=False) as r2:
            assert r2.token(_row([0.98, 0.02]), 1) is telltale.Verdict.HALT
        with pytest.raises(ValueError):
            c.guard_policy = telltale.GuardPolicy(token_min_prob=1.5)


def test_operator_halt_of_a_session_reaches_its_response(collector, telltale):
    with telltale.Client(collector.endpoint, agent="py-op", raise_on_halt=True) as c:
        with pytest.raises(telltale.Halted) as info:
            with c.response(session="s-op", model="toy") as r:
                r.token(_row([0.9, 0.1]), 0)
                assert c.flush(5 * MULT)
                status, _ = collector.post("/api/v1/sessions/s-op/halt", {"reason": "enough"})
                assert status in (200, 202)
                deadline = time.monotonic() + 10 * MULT
                while time.monotonic() < deadline:
                    r.token(_row([0.9, 0.1]), 0)
                    time.sleep(0.01)
        assert "operator" in info.value.reason


def test_a_long_row_lets_other_threads_run_only_with_the_extension(collector, telltale):
    # The extension releases the GIL while the statistics of a long row are computed (rows of
    # GIL_RELEASE_MIN_ELEMS entries or more), so another thread runs meanwhile; the ctypes core
    # keeps it (PyDLL). With a switch interval of 10 s the interpreter never takes the GIL from
    # this thread by itself within the loop, so the other thread runs only where a call releases
    # it.
    import sys
    import threading
    row = np.zeros(1 << 22, np.float32)
    count = [0]
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            count[0] += 1
            time.sleep(0)  # hands the GIL back at once (the switch interval is long)

    with telltale.Client(collector.endpoint, agent="py-gil") as c:
        with c.response(model="toy") as r:
            r.token(row, 1)  # warm: the first call pays the row's page faults
            old = sys.getswitchinterval()
            t = threading.Thread(target=spin)
            t.start()
            sys.setswitchinterval(10.0)
            progressed = 0
            try:
                for _ in range(10):
                    before = count[0]
                    r.token(row, 1)
                    progressed += count[0] != before
            finally:
                sys.setswitchinterval(old)
                stop.set()
                t.join()
            assert r.tokens == 11 and abs(r.last.prob - 1.0 / len(row)) < 1e-12
    if telltale.implementation == "ext":
        assert telltale._core.GIL_RELEASE_MIN_ELEMS <= len(row)
        assert progressed > 0
    # The ctypes core releases nothing on purpose, but whether another thread gets the GIL
    # around its Python-level work depends on the interpreter's scheduling (seen once under
    # ThreadSanitizer), so for it only the values above are checked.


def test_token_text_beside_ids_and_provider_string_keys(collector, telltale):
    words = ["The", " cat", " sat", " on", " the", " mat", "."]
    with telltale.Client(collector.endpoint, agent="py-text") as c:
        with c.response(session="s-text", model="local") as r:
            for i in range(100):
                row = _row([0.7 if v == i % 7 else 0.3 / 6 for v in range(7)])
                r.token(row, i % 7, text=words[i % 7])
        # A hosted model's answer as a provider returns it: alternatives keyed by their text.
        with c.response(session="s-text", model="hosted") as h:
            h.token_logprobs(-0.2, {"Hello": -0.2, "Hi": -1.5, "Hey": -2.5}, text="Hello")
            assert h.last.rank == 0  # the chosen token found among them by its text
            h.token_logprobs(-0.7, [{"token": " world", "logprob": -0.7},
                                    {"token": " there", "logprob": -1.2}], text=" world")
            h.token_logprobs(-0.1, text="!")
    got = collector.get("/api/v1/responses/%016x" % r.id)
    texts = got["token_data"]["texts"]
    assert len(texts) == 100 and texts[:3] == ["The", " cat", " sat"]
    assert got["text"] == "".join(words[i % 7] for i in range(100))
    # Each distinct text travels once per response (the stored Tokens chunks).
    chunks = [e for e in collector.events(agent="py-text", kind="tokens")
              if e["response_id"] == "%016x" % r.id]
    assert len(chunks) >= 2 and sum(len(e.get("texts", [])) for e in chunks) == 7
    hosted = collector.get("/api/v1/responses/%016x" % h.id)
    assert hosted["text"] == "Hello world!"
    top = hosted["token_data"]["topk_texts"]
    assert top[0] == ["Hello", "Hi", "Hey"] and top[1] == [" world", " there"]


def test_token_text_must_be_a_str(collector, telltale):
    with telltale.Client(collector.endpoint, agent="py-text-bad") as c:
        with c.response(model="m") as r:
            with pytest.raises(TypeError):
                r.token_logprobs(-0.1, text=b"bytes")
            with pytest.raises(TypeError):
                r.token(_row([0.5, 0.5]), 0, text=3)
