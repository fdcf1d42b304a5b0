"""Compliance in the agent (docs/compliance.md): a blocked step raises telltale.Blocked before its
body runs and is recorded as cancelled with the rule; a flagged one runs; secrets are masked
before they leave the process."""

import pytest

POLICY = """
[rule.destructive_sql]
match = sql
kinds = tool, retrieval
action = block

[rule.secrets]
match = pii
types = card, email
redact = on
"""


def test_blocked_step_never_runs_and_is_recorded(collector, telltale):
    ran = []
    with telltale.Client(collector.endpoint, agent="py-comply", session="s1") as c:
        c.comply_policy(POLICY)
        with pytest.raises(telltale.Blocked) as info:
            with c.step("retrieval", name="sql", query="DROP TABLE customers"):
                ran.append("drop")
        assert info.value.code == -1000 and "retrieval step 'sql'" in info.value.reason
        with c.step("retrieval", name="sql", query="SELECT * FROM customers WHERE id = 3"):
            ran.append("select")
        with c.step("tool", name="mail", query="to dana@example.com"):
            ran.append("mail")
        c.log("charged 4111 1111 1111 1111")
        assert c.current_step is None
        c.flush(10000)
        st = c.stats()
        assert (st.comply_blocked, st.comply_flagged, st.comply_masked) == (1, 1, 2)
        c.comply_policy(None)
        with c.step("tool", name="sql", query="DROP TABLE t"):
            ran.append("after clear")
    assert ran == ["select", "mail", "after clear"]
    ev = collector.events(agent="py-comply")
    ends = [e for e in ev if e["kind"] == "step_end" and e.get("error", "").startswith("blocked")]
    assert len(ends) == 1 and ends[0]["status"] == "cancelled"
    assert "rule destructive_sql: DROP TABLE" in ends[0]["error"]
    decisions = [e for e in ev if e["kind"] == "log" and "comply.verdict" in e.get("attrs", {})]
    assert sorted(d["attrs"]["comply.verdict"] for d in decisions) == ["block", "flag"]
    texts = [e.get("query", "") for e in ev] + [e.get("message", "") for e in ev]
    assert "to [email]" in texts and "charged [card]" in texts
    assert not any("dana@example.com" in t or "4111 1111" in t for t in texts)


def test_bad_policy_names_the_line(collector, telltale):
    with telltale.Client(collector.endpoint, agent="py-comply-bad") as c:
        with pytest.raises(ValueError, match="line 3: action must be block or flag"):
            c.comply_policy("[rule.x]\nmatch = sql\naction = stop\n")
