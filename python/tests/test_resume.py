"""An operator halt and its resume, seen from Python: what a halted session raises (Halted with
raise_on_halt, Verdict.HALT without), that its steps are not refused, and that after
POST /api/v1/sessions/{id}/resume the session's new responses pass and everything reaches the
store."""

import time

import numpy as np
import pytest

from conftest import MULT


def _row(probs):
    return np.log(np.asarray(probs, dtype=np.float64)).astype(np.float32)


def _first_verdict(tt, c, session):
    """A new response in session: the verdict of its first token, or "raised:REASON"."""
    try:
        with c.response(session=session, model="toy") as r:
            v = r.token(_row([0.9, 0.1]), 0)
            r.token(_row([0.9, 0.1]), 0)
            return v
    except tt.Halted as e:
        return "raised:" + e.reason


def _until(tt, c, session, want):
    """Orders reach the agent's worker asynchronously: new responses until one gives want."""
    deadline = time.monotonic() + 10 * MULT
    while True:
        got = _first_verdict(tt, c, session)
        if got == want:
            return
        assert time.monotonic() < deadline, "%s: %r, not %r" % (session, got, want)
        time.sleep(0.005)


def test_halted_session_raises_and_recovers_after_resume(collector, telltale):
    with telltale.Client(collector.endpoint, agent="py-resume", raise_on_halt=True) as c:
        with c.step("tool", name="before", session="s-res"):
            pass
        assert _first_verdict(telltale, c, "s-res") is telltale.Verdict.PASS
        assert c.flush(5 * MULT)
        status, answer = collector.post("/api/v1/sessions/s-res/halt", {"reason": "hold on"})
        assert status == 202 and answer["connections"] == 1 and answer["order"] == "halt"
        _until(telltale, c, "s-res", "raised:operator halt: hold on")

        # Halted: a response raises Halted at its first token, ended with the reason ...
        with pytest.raises(telltale.Halted) as info:
            with c.response(session="s-res", model="toy") as r:
                r.token(_row([0.9, 0.1]), 0)
        assert info.value.reason == "operator halt: hold on"
        assert r.summary.verdict is telltale.Verdict.HALT and r.tokens == 1
        # ... or returns Verdict.HALT without raise_on_halt; steps are not refused.
        with c.response(session="s-res", model="toy", raise_on_halt=False) as r2:
            assert r2.token(_row([0.9, 0.1]), 0) is telltale.Verdict.HALT
        with c.step("tool", name="while-halted", session="s-res"):
            pass

        status, answer = collector.post("/api/v1/sessions/s-res/resume", {"reason": "go on"})
        assert status == 202 and answer["connections"] == 1 and answer["order"] == "resume"
        _until(telltale, c, "s-res", telltale.Verdict.PASS)
        with c.response(session="s-res", model="toy") as r3:
            for _ in range(5):
                assert r3.token(_row([0.9, 0.1]), 0) is telltale.Verdict.PASS
        assert r3.summary.verdict is telltale.Verdict.PASS
        with c.step("tool", name="after", session="s-res"):
            pass
        assert c.flush(5 * MULT)
        s = c.stats()
        assert s.dropped_total == 0 and s.acked == s.emitted
    ends = collector.events(session="s-res", kind="step_end")
    assert len(ends) == 3
    verdicts = [x["verdict"] for x in collector.get("/api/v1/responses", session="s-res",
                                                      limit=1000)["responses"]]
    assert verdicts[0] == "pass" and "halt" in verdicts
