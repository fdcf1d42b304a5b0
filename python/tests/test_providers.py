"""telltale.providers: hosted models' results (OpenAI Chat Completions and Responses API,
Anthropic Messages; whole and streamed) recorded as responses, read back through the HTTP API.

The documents in data/ are written by hand after the providers' documented shapes; no network."""

import json
import math
import os
import types

import pytest

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def _doc(name):
    with open(os.path.join(DATA, name)) as f:
        return json.load(f)


def _sdk(v):
    """The document as SDK-like objects: fields read as attributes only (not a dict)."""
    if isinstance(v, dict):
        return types.SimpleNamespace(**{k: _sdk(x) for k, x in v.items()})
    if isinstance(v, list):
        return [_sdk(x) for x in v]
    return v


def _stored(collector, r):
    """What the collector keeps of response r, without what differs between two recordings
    (ids, times, the latencies between tokens; each recording is a trace of its own)."""
    got = collector.get("/api/v1/responses/%016x" % r.id)
    assert got["span_id"] == got["id"] and len(got["trace_id"]) == 32
    for k in ("id", "instance", "begin_unix_ns", "end_unix_ns", "duration_ns", "trace_id",
              "span_id"):
        got.pop(k)
    got["token_data"].pop("latency_us")
    return got


def _responses(collector, agent):
    return collector.get("/api/v1/responses", agent=agent, limit=100)["responses"]


@pytest.fixture
def tp(telltale):
    import telltale.providers
    return telltale.providers


def _check_chat_tokens(got, doc_tokens):
    """The stored tokens are the document's: texts, log-probs, their mean, ranks, top-k."""
    lps = [t["logprob"] for t in doc_tokens]
    assert got["tokens"] == len(doc_tokens)
    assert got["token_data"]["texts"] == [t["token"] for t in doc_tokens]
    assert got["text"] == "".join(t["token"] for t in doc_tokens)
    assert got["token_data"]["logprobs"] == pytest.approx(lps, abs=1e-6)
    assert got["mean_logprob"] == pytest.approx(sum(lps) / len(lps), abs=1e-5)
    assert got["min_logprob"] == pytest.approx(min(lps), abs=1e-6)
    assert got["estimated"] is True
    for i, t in enumerate(doc_tokens):
        top = sorted(t["top_logprobs"], key=lambda x: -x["logprob"])
        assert got["token_data"]["topk_texts"][i] == [x["token"] for x in top]
        assert got["token_data"]["topk_probs"][i] == pytest.approx(
            [math.exp(x["logprob"]) for x in top], rel=2e-3)
        assert got["token_data"]["ranks"][i] == [x["token"] for x in top].index(t["token"])


def test_openai_chat_completion_is_stored_with_tokens_top_k_usage_and_model(collector, telltale,
                                                                            tp):
    doc = _doc("openai_chat.json")
    with telltale.Client(collector.endpoint, agent="py-oai") as c:
        rs = tp.record_openai(c, doc, session="s-oai", temperature=0.2)
        assert len(rs) == 1 and isinstance(rs[0], telltale.Response)
        r = rs[0]
        tokens = doc["choices"][0]["logprobs"]["content"]
        lps = [t["logprob"] for t in tokens]
        # The confidence the agent sees: exp of the mean of the given log-probs.
        assert r.summary.tokens == 7
        assert r.summary.confidence == pytest.approx(math.exp(sum(lps) / len(lps)), rel=1e-5)
    got = _stored(collector, r)
    _check_chat_tokens(got, tokens)
    assert got["token_data"]["ranks"][3] == 1  # " France" after " Spain"
    assert got["session"] == "s-oai" and got["model"] == "gpt-4o-mini-2024-07-18"
    assert got["params"] == {"provider": "openai", "api": "chat.completions",
                             "provider_id": "chatcmpl-9xTt0Kq2rLhV3", "finish_reason": "stop",
                             "input_tokens": 14, "output_tokens": 7, "total_tokens": 21,
                             "temperature": 0.2}


def test_openai_sdk_objects_are_stored_as_their_json(collector, telltale, tp):
    doc = _doc("openai_chat.json")
    with telltale.Client(collector.endpoint, agent="py-oai-sdk") as c:
        [a] = tp.record_openai(c, doc, session="s")
        [b] = tp.record_openai(c, _sdk(doc), session="s")
    assert _stored(collector, b) == _stored(collector, a)
    assert _stored(collector, b)["tokens"] == 7


def test_openai_chat_stream_passes_chunks_through_and_stores_the_unstreamed_answer(
        collector, telltale, tp):
    chunks = _doc("openai_chat_stream.json")
    with telltale.Client(collector.endpoint, agent="py-oai-stream") as c:
        [whole] = tp.record_openai(c, _doc("openai_chat.json"), session="s")
        stream = tp.record_openai_stream(c, iter(chunks), session="s")
        seen = [ch for ch in stream]
        assert len(seen) == len(chunks) and all(a is b for a, b in zip(seen, chunks))
        [streamed] = stream.responses
        # SDK objects streamed too.
        sdk = tp.record_openai_stream(c, _sdk(chunks), session="s")
        assert len(list(sdk)) == len(chunks)
    want = _stored(collector, whole)
    assert want["tokens"] == 7 and want["params"]["output_tokens"] == 7
    assert _stored(collector, streamed) == want
    assert _stored(collector, sdk.responses[0]) == want


def test_openai_responses_api_result_is_stored_from_its_output_message(collector, telltale, tp):
    doc = _doc("openai_responses.json")
    with telltale.Client(collector.endpoint, agent="py-oai-resp") as c:
        rs = tp.record_openai(c, doc, session="s-resp")
        [obj] = tp.record_openai(c, _sdk(doc), session="s-resp")
    assert len(rs) == 1  # the reasoning item has no answer's text
    got = _stored(collector, rs[0])
    _check_chat_tokens(got, doc["output"][1]["content"][0]["logprobs"])
    assert got["model"] == "gpt-4.1-mini-2025-04-14"
    assert got["params"] == {"provider": "openai", "api": "responses",
                             "provider_id": "resp_68e1c2a0f4b88190a3", "status": "completed",
                             "input_tokens": 14, "output_tokens": 7, "total_tokens": 21}
    assert _stored(collector, obj) == got


def test_openai_responses_stream_stores_the_unstreamed_result(collector, telltale, tp):
    events = _doc("openai_responses_stream.json")
    with telltale.Client(collector.endpoint, agent="py-oai-resp-stream") as c:
        [whole] = tp.record_openai(c, _doc("openai_responses.json"), session="s")
        stream = tp.record_openai_stream(c, events, session="s")
        assert [id(e) for e in stream] == [id(e) for e in events]
        sdk = tp.record_openai_stream(c, _sdk(events), session="s")
        assert len(list(sdk)) == len(events)
    want = _stored(collector, whole)
    assert want["tokens"] == 7 and want["params"]["api"] == "responses"
    assert _stored(collector, stream.responses[0]) == want
    assert _stored(collector, sdk.responses[0]) == want


def test_async_streams_are_recorded_as_sync_ones(collector, telltale, tp):
    import asyncio

    async def source(items):
        for x in items:
            await asyncio.sleep(0)
            yield x

    class Source:  # as the SDKs' async streams: async iterable, `await close()`
        closed = False

        def __aiter__(self):
            return source(_doc("anthropic_stream.json"))

        async def close(self):
            self.closed = True

    async def run(c):
        oai = tp.record_openai_stream(c, source(_doc("openai_chat_stream.json")), session="s")
        n = 0
        async for _ in oai:
            n += 1
        src = Source()
        async with tp.record_anthropic_stream(c, src, session="s") as anth:
            async for ev in anth:
                if ev["type"] == "message_stop":
                    break
        assert src.closed
        return n, oai.responses[0], anth.responses[0]

    with telltale.Client(collector.endpoint, agent="py-async") as c:
        [oai_whole] = tp.record_openai(c, _doc("openai_chat.json"), session="s")
        anth_whole = tp.record_anthropic(c, _doc("anthropic_message.json"), session="s")
        n, oai, anth = asyncio.run(run(c))
    assert n == len(_doc("openai_chat_stream.json"))
    assert _stored(collector, oai) == _stored(collector, oai_whole)
    # Left at message_stop, before the source's end: all of it arrived, marked incomplete.
    got = _stored(collector, anth)
    assert got["params"].pop("incomplete") is True
    assert got == _stored(collector, anth_whole)


def test_anthropic_message_is_stored_with_text_and_usage_and_no_logprobs(collector, telltale,
                                                                         tp):
    msg = _doc("anthropic_message.json")
    with telltale.Client(collector.endpoint, agent="py-anth") as c:
        r = tp.record_anthropic(c, msg, session="s-anth")
        assert r.summary.tokens == 0
        o = tp.record_anthropic(c, _sdk(msg), session="s-anth")
    got = _stored(collector, r)
    # Anthropic gives no log-probs: no token is invented; the text and usage are kept.
    assert got["tokens"] == 0 and got["estimated"] is False
    assert got["model"] == "claude-sonnet-4-5-20250929" and got["session"] == "s-anth"
    assert got["params"] == {"provider": "anthropic", "provider_id": "msg_01XFDUDYJgAACzvnptvVoYEL",
                             "stop_reason": "end_turn", "input_tokens": 15, "output_tokens": 9,
                             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                             "logprobs": False, "text": "The capital of France is Paris."}
    assert _stored(collector, o) == got


def test_anthropic_stream_passes_events_through_and_stores_the_unstreamed_message(
        collector, telltale, tp):
    events = _doc("anthropic_stream.json")
    with telltale.Client(collector.endpoint, agent="py-anth-stream") as c:
        whole = tp.record_anthropic(c, _doc("anthropic_message.json"), session="s")
        with tp.record_anthropic_stream(c, events, session="s") as stream:
            seen = list(stream)
        assert [id(e) for e in seen] == [id(e) for e in events]
        sdk = tp.record_anthropic_stream(c, _sdk(events), session="s")
        for _ in sdk:
            pass
    want = _stored(collector, whole)
    # The usage of message_delta (output 9) replaces message_start's (output 1).
    assert want["params"]["output_tokens"] == 9
    assert _stored(collector, stream.responses[0]) == want
    assert _stored(collector, sdk.responses[0]) == want


def test_a_stream_left_early_or_failing_is_recorded_as_incomplete(collector, telltale, tp):
    chunks = _doc("openai_chat_stream.json")

    def failing():
        yield from chunks[:3]
        raise ConnectionResetError("peer reset")

    class Source:  # as the SDKs' streams: iterable, close() ends the HTTP response
        closed = False

        def __iter__(self):
            return iter(chunks)

        def close(self):
            self.closed = True

    with telltale.Client(collector.endpoint, agent="py-early") as c:
        src = Source()
        stream = tp.record_openai_stream(c, src, session="s")
        for i, _ in enumerate(stream):
            if i == 2:
                break
        assert stream.responses is None and not src.closed  # not over yet
        stream.close()
        assert src.closed
        [left] = stream.responses
        broken = tp.record_openai_stream(c, failing(), session="s")
        with pytest.raises(ConnectionResetError):
            for _ in broken:
                pass
        [failed] = broken.responses
    got = _stored(collector, left)
    # Chunks 0-2 carried "The", " capital", " of": three tokens, no usage yet.
    assert got["tokens"] == 3 and got["text"] == "The capital of"
    assert got["params"]["incomplete"] is True and "output_tokens" not in got["params"]
    assert _stored(collector, failed) == got


def test_responses_go_to_the_given_step_and_session(collector, telltale, tp):
    with telltale.Client(collector.endpoint, agent="py-step") as c:
        with c.step("llm", name="ask", session="s-step") as s:
            inside = tp.record_openai(c, _doc("openai_chat.json"))[0]
        with c.step("llm", name="other", session="s-other") as s2:
            with c.step("tool", name="inner", session="s-other") as inner:
                # An explicit step wins over the innermost open one, which stays current.
                given = tp.record_anthropic(c, _doc("anthropic_message.json"), step=s2)
                assert c.current_step is inner
        loose = tp.record_anthropic(c, _doc("anthropic_message.json"), session="s-loose")
    assert inside.step is s and given.step is s2 and loose.step is None
    by_id = {x["id"]: x for x in _responses(collector, "py-step")}
    assert by_id["%016x" % inside.id]["step_id"] == "%016x" % s.id
    assert by_id["%016x" % inside.id]["session"] == "s-step"
    assert by_id["%016x" % given.id]["step_id"] == "%016x" % s2.id
    assert by_id["%016x" % given.id]["session"] == "s-other"
    assert "step_id" not in by_id["%016x" % loose.id] or not by_id["%016x" % loose.id]["step_id"]


def _bad_chat(edit):
    doc = _doc("openai_chat.json")
    edit(doc)
    return doc


def test_malformed_documents_raise_clear_errors_and_record_nothing(collector, telltale, tp):
    def tok(doc, i=0):
        return doc["choices"][0]["logprobs"]["content"][i]

    type_errors = [
        "not a result",
        [1, 2],
        _bad_chat(lambda d: d.update(choices={"0": {}})),
        _bad_chat(lambda d: d["choices"].__setitem__(0, "choice")),
        _bad_chat(lambda d: tok(d).update(logprob="-0.1")),
        _bad_chat(lambda d: tok(d).update(token=17)),
        _bad_chat(lambda d: tok(d).update(top_logprobs={"The": -0.1})),
        _bad_chat(lambda d: d["usage"].update(prompt_tokens="14")),
        _bad_chat(lambda d: d.update(model=["gpt"])),
    ]
    value_errors = [
        {"id": "x", "model": "m"},  # neither choices nor output
        _bad_chat(lambda d: tok(d).update(logprob=0.5)),
        _bad_chat(lambda d: tok(d).update(logprob=float("nan"))),
        _bad_chat(lambda d: tok(d, 6).pop("logprob")),
        _bad_chat(lambda d: tok(d, 6).pop("token")),
        _bad_chat(lambda d: tok(d, 2)["top_logprobs"][0].pop("logprob")),
        _bad_chat(lambda d: d["usage"].update(completion_tokens=-1)),
        {"object": "response", "model": "m", "output": [{"type": "reasoning"}]},
    ]
    with telltale.Client(collector.endpoint, agent="py-bad") as c:
        for doc in type_errors:
            with pytest.raises(TypeError, match="telltale.providers"):
                tp.record_openai(c, doc)
        for doc in value_errors:
            with pytest.raises(ValueError, match="telltale.providers"):
                tp.record_openai(c, doc)
        with pytest.raises(TypeError, match="telltale.providers: content"):
            tp.record_anthropic(c, {"model": "claude", "content": "text"})
        with pytest.raises(TypeError, match="usage.output_tokens"):
            tp.record_anthropic(c, {"model": "c", "content": [], "usage": {"output_tokens": 1.5}})
        with pytest.raises(TypeError, match="chunk 1"):
            list(tp.record_anthropic_stream(c, [{"type": "ping"}, {"type": "message_start"}]))
        with pytest.raises(TypeError, match="chunk 0.choices"):
            list(tp.record_openai_stream(c, [{"model": "m", "choices": "abc"}]))
        with pytest.raises(TypeError, match="telltale.Client"):
            tp.record_openai("client", _doc("openai_chat.json"))
        with pytest.raises(TypeError, match="telltale.Step"):
            tp.record_anthropic(c, _doc("anthropic_message.json"), step="s")
        # A document that is fine records, after all those that were not.
        [ok] = tp.record_openai(c, _doc("openai_chat.json"))
    stored = _responses(collector, "py-bad")
    assert [x["id"] for x in stored] == ["%016x" % ok.id]


def test_long_and_odd_provider_strings_are_cut_not_fatal(collector, telltale, tp):
    doc = _doc("openai_chat.json")
    doc["model"] = "m" * 10000
    doc["id"] = "i" * 100000
    doc["choices"][0]["finish_reason"] = "\u00e9" * 5000
    toks = doc["choices"][0]["logprobs"]["content"]
    toks[0]["token"] = "\u20ac" * 1000  # 3000 bytes of UTF-8
    toks[1]["token"] = "a\0b"
    toks[2]["token"] = "\ud83d"  # a lone surrogate, as a JSON "\\ud83d" decodes
    toks[4]["logprob"] = 2e-5  # rounded above 0: taken as 0
    toks[5]["logprob"] = -9999.0  # OpenAI's "not among the top 20"
    toks[3]["top_logprobs"] = [{"token": "t%d" % i, "logprob": -0.01 * i - 1.3}
                               for i in range(300)] + [{"token": " France", "logprob": -1.204}]
    msg = _doc("anthropic_message.json")
    msg["content"] = [{"type": "text", "text": "x" * 10000}, {"type": "tool_use", "id": "t",
                                                               "name": "n", "input": {}}]
    msg["model"] = "\u00e9" * 200  # 400 bytes: cut at a character boundary
    with telltale.Client(collector.endpoint, agent="py-long") as c:
        [r] = tp.record_openai(c, doc)
        a = tp.record_anthropic(c, msg)
        c.log("still alive")
    got = collector.get("/api/v1/responses/%016x" % r.id)
    assert got["model"] == "m" * 255 and got["tokens"] == 7
    assert len(got["params"]["provider_id"]) == 4096
    assert got["params"]["finish_reason"] == "\u00e9" * 2048
    texts = got["token_data"]["texts"]
    assert texts[0] == "\u20ac" * 85 and texts[1] == "a\ufffdb" and texts[2] == "?"
    assert got["token_data"]["ranks"][3] == 0  # " France" is the best of the 301
    assert got["token_data"]["logprobs"][4:6] == [0.0, -9999.0]
    # The highest of them, as many as the client keeps (response.topk, 5 by default).
    assert got["token_data"]["topk_texts"][3] == [" France", "t0", "t1", "t2", "t3"]
    ga = collector.get("/api/v1/responses/%016x" % a.id)
    assert ga["model"] == "\u00e9" * 127
    assert ga["params"]["text"] == "x" * 4096 and ga["params"]["text_truncated"] is True
    assert [e["message"] for e in collector.events(agent="py-long", kind="log")] == ["still alive"]


def test_several_choices_are_several_responses(collector, telltale, tp):
    doc = _doc("openai_chat.json")
    second = json.loads(json.dumps(doc["choices"][0]))
    second["index"] = 1
    second["logprobs"]["content"] = second["logprobs"]["content"][:2]
    second["message"]["content"] = "The capital"
    second["finish_reason"] = "length"
    doc["choices"].append(second)
    with telltale.Client(collector.endpoint, agent="py-n2") as c:
        r0, r1 = tp.record_openai(c, doc, session="s")
    g0, g1 = _stored(collector, r0), _stored(collector, r1)
    assert (g0["tokens"], g0["params"]["choice"]) == (7, 0)
    assert (g1["tokens"], g1["params"]["choice"], g1["text"]) == (2, 1, "The capital")
    assert g1["params"]["finish_reason"] == "length"
    # Usage is the request's, on each.
    assert g0["params"]["output_tokens"] == g1["params"]["output_tokens"] == 7


def test_an_answer_without_logprobs_keeps_its_text(collector, telltale, tp):
    doc = _doc("openai_chat.json")
    doc["choices"][0]["logprobs"] = None
    with telltale.Client(collector.endpoint, agent="py-nolp") as c:
        [r] = tp.record_openai(c, doc)
    got = _stored(collector, r)
    assert got["tokens"] == 0 and got["params"]["logprobs"] is False
    assert got["params"]["text"] == "The capital of France is Paris."
