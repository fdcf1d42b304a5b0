"""Steps: latency, failure, nesting (also across asyncio tasks), and the event loop."""

import asyncio
import time

import pytest

from conftest import MULT


def _steps(collector, agent):
    ev = collector.events(agent=agent, kind="step_begin,step_end")
    begins = {e["step_id"]: e for e in ev if e["kind"] == "step_begin"}
    ends = {e["step_id"]: e for e in ev if e["kind"] == "step_end"}
    assert set(begins) == set(ends)
    return begins, ends


def test_step_measures_latency_and_nests(collector, telltale):
    with telltale.Client(collector.endpoint, agent="py-step", session="sess") as c:
        with c.step("reasoning", name="plan") as outer:
            assert c.current_step is outer
            with c.step("tool", name="search", query="weather in Oslo") as inner:
                time.sleep(0.02)
                inner.result_bytes = 42
            assert inner.parent is outer and c.current_step is outer
        assert c.current_step is None
    b, e = _steps(collector, "py-step")
    o, i = "%016x" % outer.id, "%016x" % inner.id
    assert b[o]["step_kind"] == "reasoning" and "parent_id" not in b[o]
    assert b[i]["parent_id"] == o and b[i]["name"] == "search"
    assert b[i]["query"] == "weather in Oslo" and b[i]["session"] == "sess"
    assert e[i]["status"] == "ok" and e[i]["result_bytes"] == 42
    assert 20e6 <= e[i]["duration_ns"] < 5e9
    assert e[o]["duration_ns"] >= e[i]["duration_ns"]


def test_step_records_failure_when_the_block_raises(collector, telltale):
    with telltale.Client(collector.endpoint, agent="py-fail") as c:
        with pytest.raises(KeyError):
            with c.step("tool", name="lookup") as s1:
                raise KeyError("missing")
        with pytest.raises(TimeoutError):
            with c.step("api", name="slow") as s2:
                raise TimeoutError("too slow")
        with c.step("tool", name="soft") as s3:
            s3.fail("no rows")
        assert c.current_step is None
    _, e = _steps(collector, "py-fail")
    assert e["%016x" % s1.id]["status"] == "error"
    assert "KeyError" in e["%016x" % s1.id]["error"]
    assert e["%016x" % s2.id]["status"] == "timeout"
    assert e["%016x" % s3.id]["status"] == "error" and e["%016x" % s3.id]["error"] == "no rows"


def test_async_steps_nest_per_task_and_never_block_the_loop(collector, telltale):
    ids = {}

    async def worker(c, name):
        async with c.step("agent", name=name) as top:
            await asyncio.sleep(0.01)
            async with c.step("tool", name=name + "-tool") as child:
                await asyncio.sleep(0.01)
            ids[name] = (top.id, child.id, child.parent.id)

    async def main():
        async with telltale.Client(collector.endpoint, agent="py-async") as c:
            async with c.step("reasoning", name="root") as root:
                await asyncio.gather(worker(c, "a"), worker(c, "b"))
            ids["root"] = root.id
            assert c.current_step is None
        return c

    asyncio.run(main())
    b, e = _steps(collector, "py-async")
    root = "%016x" % ids["root"]
    for name in "ab":
        top, child, parent = ids[name]
        assert parent == top
        assert b["%016x" % top]["parent_id"] == root
        assert b["%016x" % child]["parent_id"] == "%016x" % top
        assert b["%016x" % child]["name"] == name + "-tool"


def test_async_close_keeps_the_event_loop_running(sockdir, telltale):
    import os
    import socket
    path = os.path.join(sockdir, "hole.sock")
    hole = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    hole.bind(path)
    hole.listen(4)

    async def main():
        c = telltale.Client("unix:" + path, agent="py-aclose", ack_timeout_ms=60000)
        for i in range(100):
            c.log("x")
        ticks = 0
        done = asyncio.Event()

        async def ticker():
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        t = asyncio.create_task(ticker())
        t0 = time.monotonic()
        ok = await c.aclose(0.5)
        took = time.monotonic() - t0
        done.set()
        await t
        return ok, took, ticks

    ok, took, ticks = asyncio.run(main())
    hole.close()
    assert ok is False and took < 0.5 + 1.0 * MULT
    assert ticks >= 10, ticks  # the loop ran while close waited (0.5 s / 10 ms)


def test_step_end_carries_session_name_and_kind(collector, telltale):
    with telltale.Client(collector.endpoint, agent="py-ends") as c:
        with c.step("agent", name="turn", session="s-ends"):
            with c.step("retrieval", name="sql", query="SELECT 1") as s:
                s.fail("no such table: orders")
    # A reader of the ends alone (by session) sees which step each closes, and how it went.
    ends = collector.events(session="s-ends", kind="step_end")
    by_name = {e["name"]: e for e in ends}
    assert set(by_name) == {"turn", "sql"}
    sql = by_name["sql"]
    assert sql["session"] == "s-ends" and sql["step_kind"] == "retrieval"
    assert sql["status"] == "error" and sql["error"] == "no such table: orders"
    assert sql["step_id"] == "%016x" % s.id and sql["duration_ns"] >= 0


def test_response_opened_in_a_step_belongs_to_the_step_and_its_session(collector, telltale):
    with telltale.Client(collector.endpoint, agent="py-rstep") as c:
        with c.step("agent", name="turn", session="s-rstep"):
            with c.step("llm", name="generate") as gen:
                with c.response(model="m") as r:
                    r.token_logprobs(-0.2)
        with c.response(session="s-other", model="m") as loose:
            loose.token_logprobs(-0.1)
    assert r.session == "s-rstep" and r.step is gen and loose.step is None
    got = collector.get("/api/v1/responses/%016x" % r.id)
    got = got.get("response", got)
    assert got["session"] == "s-rstep" and got["step_id"] == "%016x" % gen.id
    # The session's view lists it, and an operator halt of the session would reach it.
    view = collector.get("/api/v1/sessions/s-rstep", agent="py-rstep")
    assert "%016x" % r.id in [x if isinstance(x, str) else x.get("id") for x in view["responses"]]
    other = collector.get("/api/v1/responses/%016x" % loose.id)
    assert "step_id" not in other.get("response", other)
