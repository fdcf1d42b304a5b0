"""W3C trace context from Python (issue 17, point 3): traceparent= on steps and responses, the
trace inherited by nested steps, and the current OpenTelemetry span taken for root steps and
responses outside any step when the application uses the opentelemetry API.

The opentelemetry API package is not installed on this machine (Debian 12 has no
python3-opentelemetry package and PyPI is not reachable), so the OpenTelemetry path is exercised
with a minimal stand-in module that this test writes and puts on sys.path: it has only what
telltale reads (opentelemetry.trace.get_current_span().get_span_context() with trace_id, span_id,
trace_flags and is_valid, as the real API defines them)."""

import importlib
import sys

import pytest

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TP = "00-%s-%s-01" % (TRACE, PARENT)


def _steps(collector, session, agent):
    """{step id (int): step} of a session, flattened from the tree."""
    out = {}

    def walk(steps):
        for s in steps:
            out[int(s["step_id"], 16)] = s
            walk(s["children"])

    walk(collector.get("/api/v1/sessions/" + session, agent=agent)["steps"])
    return out


def _response(collector, rid):
    return collector.get("/api/v1/responses/%016x" % rid)


def test_traceparent_on_steps_and_responses_is_what_the_api_returns(collector, telltale):
    with telltale.Client(collector.endpoint, agent="py-trace") as c:
        with c.step("agent", "turn", session="t-1", traceparent=TP) as root:
            with c.step("tool", "search") as child:
                with c.response(model="m") as r:
                    r.token_logprobs(-0.1)
        with c.step("tool", "alone", session="t-2") as alone:
            pass
        with c.response(session="t-3", model="m", traceparent=TP) as r2:
            r2.token_logprobs(-0.2)
        span_root, span_child = telltale.span_id(root), telltale.span_id(child)
        assert c.flush(10)
    assert span_root and span_child and span_root != span_child
    steps = _steps(collector, "t-1", "py-trace")
    s = steps[root.id]
    assert (s["trace_id"], s["parent_span_id"], s["span_id"]) == (TRACE, PARENT,
                                                                  "%016x" % span_root)
    s = steps[child.id]
    assert (s["trace_id"], s["parent_span_id"], s["span_id"]) == (TRACE, "%016x" % span_root,
                                                                  "%016x" % span_child)
    got = _response(collector, r.id)
    assert (got["trace_id"], got["parent_span_id"], got["span_id"]) == (
        TRACE, "%016x" % span_child, "%016x" % r.id)
    # A root without any context has a trace of its own and no parent span.
    s = _steps(collector, "t-2", "py-trace")[alone.id]
    assert len(s["trace_id"]) == 32 and s["trace_id"] != TRACE and "parent_span_id" not in s
    got = _response(collector, r2.id)
    assert (got["trace_id"], got["parent_span_id"]) == (TRACE, PARENT)


@pytest.mark.parametrize("bad", [
    "", "00-%s-%s" % (TRACE, PARENT), "00-%s-%s-01" % (TRACE.upper(), PARENT),
    "00-%s-%s-01" % ("0" * 32, PARENT), "00-%s-%s-01" % (TRACE, "0" * 16),
    "ff-%s-%s-01" % (TRACE, PARENT), "00-%s0-%s-01" % (TRACE, PARENT)])
def test_invalid_traceparent_raises_and_emits_nothing(collector, telltale, bad):
    with telltale.Client(collector.endpoint, agent="py-trace-bad") as c:
        with pytest.raises(ValueError):
            with c.step("tool", "x", session="b", traceparent=bad):
                pass
        with pytest.raises(ValueError):
            with c.response(session="b", model="m", traceparent=bad):
                pass
        assert c.stats().emitted == 0


FAKE_OTEL = '''
class TraceFlags(int):
    pass


class SpanContext:
    def __init__(self, trace_id, span_id, flags):
        self.trace_id, self.span_id, self.trace_flags = trace_id, span_id, TraceFlags(flags)

    @property
    def is_valid(self):
        return self.trace_id != 0 and self.span_id != 0


class Span:
    def __init__(self, ctx):
        self._ctx = ctx

    def get_span_context(self):
        return self._ctx


INVALID_SPAN = Span(SpanContext(0, 0, 0))
current = [INVALID_SPAN]


def get_current_span(context=None):
    return current[-1]
'''


@pytest.fixture
def fake_otel(tmp_path, monkeypatch):
    """A stand-in for the opentelemetry API (see the module's docstring), imported as the
    application would import the real one."""
    pkg = tmp_path / "otel" / "opentelemetry"
    (pkg / "trace").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "trace" / "__init__.py").write_text(FAKE_OTEL)
    monkeypatch.syspath_prepend(str(tmp_path / "otel"))
    for m in ("opentelemetry", "opentelemetry.trace"):
        monkeypatch.delitem(sys.modules, m, raising=False)
    t = importlib.import_module("opentelemetry.trace")
    yield t
    for m in ("opentelemetry", "opentelemetry.trace"):
        sys.modules.pop(m, None)


def test_current_opentelemetry_span_is_taken_for_roots(collector, telltale, fake_otel):
    app_trace, app_span = 0x0af7651916cd43dd8448eb211c80319c, 0xb7ad6b7169203331
    with telltale.Client(collector.endpoint, agent="py-otel") as c:
        fake_otel.current.append(fake_otel.Span(fake_otel.SpanContext(app_trace, app_span, 1)))
        with c.step("agent", "turn", session="o-1") as root:
            with c.step("tool", "inner") as inner:
                pass
        with c.response(session="o-2", model="m") as r:
            r.token_logprobs(-0.1)
        # An explicit traceparent wins over the current span.
        with c.step("tool", "explicit", session="o-3", traceparent=TP) as explicit:
            pass
        fake_otel.current.pop()
        # No current span (the invalid one): a trace of telltale's own.
        with c.step("tool", "own", session="o-4") as own:
            pass
        span_root = telltale.span_id(root)
        assert c.flush(10)
    s = _steps(collector, "o-1", "py-otel")
    assert (s[root.id]["trace_id"], s[root.id]["parent_span_id"]) == (
        "%032x" % app_trace, "%016x" % app_span)
    # a nested step follows its telltale parent, not the application's span
    assert (s[inner.id]["trace_id"], s[inner.id]["parent_span_id"]) == (
        "%032x" % app_trace, "%016x" % span_root)
    got = _response(collector, r.id)
    assert (got["trace_id"], got["parent_span_id"]) == ("%032x" % app_trace, "%016x" % app_span)
    assert _steps(collector, "o-3", "py-otel")[explicit.id]["trace_id"] == TRACE
    s = _steps(collector, "o-4", "py-otel")[own.id]
    assert s["trace_id"] != "%032x" % app_trace and "parent_span_id" not in s
