"""The demo agent of `make run` (python/telltale_demo): a real model in a real agent loop."""

import os
import subprocess
import sys
import time

from conftest import LIB, MULT, ROOT


def _run(collector, *args):
    env = dict(os.environ, TELLTALE_LIBRARY=LIB, PYTHONPATH=os.path.join(ROOT, "python"))
    r = subprocess.run([sys.executable, "-m", "telltale_demo", "--endpoint", collector.endpoint,
                        "--rate", "100"] + list(args), env=env, capture_output=True, text=True,
                       timeout=60 * MULT)
    assert r.returncode == 0, r.stderr
    return r.stderr


def _answers(collector, agent):
    return [e for e in collector.events(agent=agent, kind="log") if e["message"] == "answer"]


def test_demo_agent_runs_tools_and_streams_token_confidence(collector):
    _run(collector, "--agent", "demo-ok", "--turns", "4")
    steps = collector.events(agent="demo-ok", kind="step_begin")
    names = {e["name"] for e in steps}
    assert {"turn", "plan", "sql", "read_file", "calculator", "generate"} <= names
    ends = collector.events(agent="demo-ok", kind="step_end")
    assert ends and all(e["status"] == "ok" for e in ends)
    answers = _answers(collector, "demo-ok")
    assert len(answers) == 4
    assert all(a["attrs"]["tokens"] > 0 and 0 < a["attrs"]["confidence"] <= 1 for a in answers)
    assert len(collector.events(agent="demo-ok", kind="response_end")) == 4


def test_demo_agent_drift_fails_the_tool_and_lowers_confidence(collector):
    _run(collector, "--agent", "demo-calm", "--turns", "6", "--seed", "3")
    _run(collector, "--agent", "demo-drift", "--turns", "6", "--seed", "3", "--drift")
    failed = [e for e in collector.events(agent="demo-drift", kind="step_end")
              if e["status"] == "error"]
    assert failed and any("no such table" in e.get("error", "") for e in failed)

    def mean_conf(agent):
        a = _answers(collector, agent)
        return sum(x["attrs"]["confidence"] for x in a) / len(a)
    calm, drift = mean_conf("demo-calm"), mean_conf("demo-drift")
    assert drift < calm / 3, (calm, drift)
    assert all(a["attrs"]["verdict"] == "FLAG" for a in _answers(collector, "demo-drift"))


def test_c_example_agent_streams_steps_and_responses(collector):
    exe = os.path.join(os.environ.get("TT_BUILD") or os.path.join(ROOT, "build"), "examples",
                       "agent")
    r = subprocess.run([exe, "--endpoint", collector.endpoint, "--agent", "c-demo", "--turns",
                        "2"], capture_output=True, text=True, timeout=60 * MULT)
    assert r.returncode == 0, r.stderr
    names = [e["name"] for e in collector.events(agent="c-demo", kind="step_begin")]
    assert names.count("sql") == 2 and names.count("generate") == 2
    assert len(collector.events(agent="c-demo", kind="response_end")) == 2
    r = subprocess.run([exe, "--endpoint", collector.endpoint, "--agent", "c-drift", "--turns",
                        "1", "--drift"], capture_output=True, text=True, timeout=60 * MULT)
    assert r.returncode == 0, r.stderr
    errors = [e for e in collector.events(agent="c-drift", kind="step_end")
              if e["status"] == "error"]
    assert len(errors) == 1 and "no such table" in errors[0]["error"]


def test_demo_agent_drifting_cleanup_is_blocked_before_it_runs(collector):
    """The drifting demo attempts DELETE without WHERE; its policy blocks it in the agent: the
    stream shows the blocked step and the decision, and no DELETE ever ran (every sql step that
    ran is a SELECT)."""
    _run(collector, "--agent", "demo-comply", "--turns", "20", "--seed", "4", "--drift")
    ev = collector.events(agent="demo-comply")
    blocked = [e for e in ev if e["kind"] == "step_end"
               and e.get("error", "").startswith("blocked by rule destructive_sql")]
    assert blocked and all(e["status"] == "cancelled" for e in blocked)
    decisions = [e for e in ev if e["kind"] == "log"
                 and e.get("attrs", {}).get("comply.verdict") == "block"]
    assert len(decisions) == len(blocked)
    assert all(d["attrs"]["comply.why"] == "DELETE without WHERE" for d in decisions)
    refused = [e for e in ev if e["kind"] == "log" and e["message"].startswith("cleanup refused")]
    assert len(refused) == len(blocked)
    begins = {e["step_id"]: e for e in ev if e["kind"] == "step_begin" and e["name"] == "sql"}
    ran = [begins[e["step_id"]] for e in ev if e["kind"] == "step_end" and e["step_id"] in begins
           and not e.get("error", "").startswith("blocked")]
    assert ran and all(b["query"].lstrip().upper().startswith("SELECT") for b in ran)


def test_demo_agent_without_policy_runs_the_cleanup(collector):
    _run(collector, "--agent", "demo-nopolicy", "--turns", "20", "--seed", "4", "--drift",
         "--no-policy")
    ev = collector.events(agent="demo-nopolicy")
    deletes = [e for e in ev if e["kind"] == "step_begin" and e["name"] == "sql"
               and e["query"].startswith("DELETE")]
    assert deletes
    assert not any(e.get("attrs", {}).get("comply.verdict") for e in ev if e["kind"] == "log")
def test_demo_session_ids_are_unique_across_runs(collector):
    _run(collector, "--agent", "demo-runs", "--turns", "2")
    _run(collector, "--agent", "demo-runs", "--turns", "2")
    turns = [e for e in collector.events(agent="demo-runs", kind="step_begin")
             if e["name"] == "turn"]
    sessions = [e["session"] for e in turns]
    assert len(sessions) == 4 and len(set(sessions)) == 4, sessions


def test_demo_failing_retrieval_raises_the_error_rate_alert(collector):
    # Early in a drift the demo's SQL step (a retrieval, not a tool) fails most turns.
    _run(collector, "--agent", "demo-sqlfail", "--turns", "16", "--drift-after", "0")
    deadline = time.monotonic() + 10 * MULT  # the detectors run beside the store
    while True:
        alerts = collector.get("/api/v1/alerts", agent="demo-sqlfail")["alerts"]
        err = [a for a in alerts if a["type"] == "error_rate"]
        if err or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert err, alerts
    a = err[0]
    assert a["key"] == "sql" and '"sql"' in a["message"], a
    # It names the failed step in hex, as the events do, and links to its session.
    failed = {e["step_id"] for e in collector.events(agent="demo-sqlfail", kind="step_end")
              if e.get("name") == "sql" and e["status"] == "error"}
    assert a["step_id"] in failed, (a, failed)
    assert a["session"].startswith("session-") and a["links"]["step"].startswith(
        "/api/v1/sessions/" + a["session"] + "#step-")


def test_demo_answers_carry_their_text_and_belong_to_the_generate_step(collector):
    _run(collector, "--agent", "demo-text", "--turns", "2")
    answers = _answers(collector, "demo-text")
    responses = collector.get("/api/v1/responses", agent="demo-text")["responses"]
    assert len(responses) == 2
    gens = {e["step_id"]: e for e in collector.events(agent="demo-text", kind="step_begin")
            if e["name"] == "generate"}
    for row in responses:
        full = collector.get("/api/v1/responses/" + row["id"])
        # The answer the demo logs is the response's text, token by token.
        assert full["text"] and any(a["attrs"]["text"] == full["text"][:400] for a in answers)
        assert full["step_id"] in gens and full["session"] == gens[full["step_id"]]["session"]
