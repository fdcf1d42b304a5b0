"""Scores of responses (tt_score): from Python, tied to the response they judge, and from the
command line with `telltale emit`; both stored as metrics of kind "score" with the response's id,
which the collector's detectors watch as "score:NAME"."""

import json
import subprocess

from conftest import BIN, MULT


def _scores(collector, agent):
    return [e for e in collector.events(agent=agent, kind="metric")
            if e["metric_kind"] == "score"]


def test_python_score_is_tied_to_its_response(collector, telltale):
    with telltale.Client(collector.endpoint, agent="py-judge", session="s-9") as c:
        with c.response(model="m") as r:
            r.token_logprobs(-0.25)
        assert r.id != 0
        assert c.score("judge", 4.5, r, rubric="helpful") == 0
        assert c.score("reward", -0.75, "%016x" % r.id) == 0
        assert c.score("provider_confidence", 0.9) == 0  # tied to no response
        assert c.flush(10 * MULT) is True
    got = {e["name"]: e for e in _scores(collector, "py-judge")}
    assert set(got) == {"judge", "reward", "provider_confidence"}
    assert got["judge"]["value"] == 4.5 and got["judge"]["session"] == "s-9"
    rid = "%016x" % r.id
    assert got["judge"]["attrs"] == {"response_id": rid, "rubric": "helpful"}
    assert got["reward"]["attrs"]["response_id"] == rid
    assert got["provider_confidence"]["attrs"]["response_id"] == ""
    responses = collector.get("/api/v1/responses", agent="py-judge")["responses"]
    assert responses[0]["id"] == "%016x" % r.id


def test_emit_command_sends_scores(collector):
    lines = [{"kind": "score", "name": "judge", "value": 3, "response": "00000000000000ff",
              "attrs": {"judge": "gpt-x"}},
             {"kind": "score", "name": "judge", "value": 2},
             {"kind": "score", "name": "judge", "value": 1, "response": "xyz"}]
    r = subprocess.run([BIN, "emit", "--endpoint", collector.endpoint, "--agent", "cli-judge"],
                       input="\n".join(json.dumps(x) for x in lines) + "\n", text=True,
                       capture_output=True, timeout=30 * MULT)
    assert r.returncode == 1, r.stderr  # the third line is refused, the others sent
    assert "response" in r.stderr and "hex" in r.stderr
    got = _scores(collector, "cli-judge")
    assert sorted(e["value"] for e in got) == [2, 3]
    assert {e["attrs"]["response_id"] for e in got} == {"00000000000000ff", ""}
