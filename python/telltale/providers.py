"""Record the answers of hosted models (OpenAI, Anthropic) as telltale responses.

Each helper takes a provider's result as the provider's SDK returns it (its objects, read by
attribute) or as plain JSON (dicts, read by key), without importing any SDK, and records it
through Client.response: one response per answer, with each token's text, its log-prob and the
top alternatives where the provider gives them, and the model, the usage (input and output
tokens), the stop reason and the provider's id as the response's parameters.

    import telltale.providers as tp

    result = openai.chat.completions.create(..., logprobs=True, top_logprobs=5)
    [r] = tp.record_openai(tt, result, session="s1")
    for chunk in tp.record_openai_stream(tt, openai.chat.completions.create(..., stream=True)):
        ...                                  # the chunks, unchanged
    tp.record_anthropic(tt, message, session="s1")    # no log-probs: text and usage only

A whole document is checked before anything is recorded: a malformed one raises TypeError or
ValueError naming the field, and records nothing. docs/python.md is the reference.
"""

import math

from . import Client, Step

__all__ = ["record_openai", "record_openai_stream", "record_anthropic",
           "record_anthropic_stream", "ProviderStream"]

_MODEL_MAX = 255     # tt_response_begin refuses a longer model name
_TEXT_MAX = 255      # the library cuts a longer token text
_PARAM_MAX = 4096    # tt_response_begin refuses a longer parameter value
_LOGPROB_TOLERANCE = 1e-4  # a provider's rounding above 0 (the library's tolerance too)


# --- reading a document: a dict or an SDK object alike -------------------------------------------

def _get(obj, name, default=None):
    """obj[name] of a dict, else obj.name (an SDK object); default when absent or None."""
    if isinstance(obj, dict):
        v = obj.get(name, default)
    else:
        v = getattr(obj, name, default)
    return default if v is None else v


def _obj(v, what):
    if v is None or isinstance(v, (str, bytes, int, float, list, tuple)):
        raise TypeError("telltale.providers: %s must be an object (a dict or an SDK object), "
                        "got %s" % (what, type(v).__name__))
    return v


def _want(v, what, ok, name):
    """v when it is None or passes ok, else TypeError naming the field and what it should be."""
    if v is not None and not ok(v):
        raise TypeError("telltale.providers: %s must be %s, got %s"
                        % (what, name, type(v).__name__))
    return v


def _list(v, what):
    return _want(v, what, lambda x: isinstance(x, (list, tuple)), "a list") or []


def _str(v, what):
    return _want(v, what, lambda x: isinstance(x, str), "a string")


def _count(v, what):
    if _want(v, what, lambda x: isinstance(x, int) and not isinstance(x, bool),
             "an integer") is None:
        return None
    if v < 0 or v >= 1 << 63:
        raise ValueError("telltale.providers: %s = %d is out of range" % (what, v))
    return v


def _logprob(v, what):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError("telltale.providers: %s must be a number, got %s"
                        % (what, type(v).__name__))
    v = float(v)
    if not math.isfinite(v) or v > _LOGPROB_TOLERANCE:
        raise ValueError("telltale.providers: %s = %r is not a log-prob (finite, <= 0)"
                         % (what, v))
    return min(v, 0.0)


def _cut(s, limit):
    """s as text the library takes: lone surrogates and NULs replaced, at most limit UTF-8
    bytes, cut at a character boundary."""
    b = s.encode("utf-8", "replace").replace(b"\0", b"\xef\xbf\xbd")
    if len(b) > limit:
        b = b[:limit]
    return b.decode("utf-8", "ignore")


# --- what is recorded ----------------------------------------------------------------------------

class _Answer:
    """One answer to record: model, parameters, tokens [(text, logprob, top)] and the text
    (kept as a parameter when there are no log-probs)."""

    __slots__ = ("model", "params", "tokens", "text", "logprobs")

    def __init__(self):
        self.model = None
        self.params = {}
        self.tokens = []
        self.text = []
        self.logprobs = False


def _token(item, what):
    """(text, logprob, top) of one log-prob entry (Chat Completions' logprobs.content[i], the
    Responses API's output_text.logprobs[i])."""
    item = _obj(item, what)
    text = _str(_get(item, "token"), what + ".token")
    if text is None:
        raise ValueError("telltale.providers: %s has no token" % what)
    if _get(item, "logprob") is None:
        raise ValueError("telltale.providers: %s has no logprob" % what)
    lp = _logprob(_get(item, "logprob"), what + ".logprob")
    top = []
    for j, t in enumerate(_list(_get(item, "top_logprobs"), what + ".top_logprobs")):
        w = "%s.top_logprobs[%d]" % (what, j)
        t = _obj(t, w)
        tt = _str(_get(t, "token"), w + ".token")
        if tt is None or _get(t, "logprob") is None:
            raise ValueError("telltale.providers: %s needs token and logprob" % w)
        top.append({"token": _cut(tt, _TEXT_MAX), "logprob": _logprob(_get(t, "logprob"),
                                                                      w + ".logprob")})
    return _cut(text, _TEXT_MAX), lp, top


def _usage(a, usage, what):
    """Input and output tokens of either provider's usage object into a's parameters."""
    if usage is None:
        return
    usage = _obj(usage, what)
    for src, dst in (("prompt_tokens", "input_tokens"), ("input_tokens", "input_tokens"),
                     ("completion_tokens", "output_tokens"), ("output_tokens", "output_tokens"),
                     ("total_tokens", "total_tokens"),
                     ("cache_read_input_tokens", "cache_read_input_tokens"),
                     ("cache_creation_input_tokens", "cache_creation_input_tokens")):
        n = _count(_get(usage, src), "%s.%s" % (what, src))
        if n is not None:
            a.params[dst] = n


def _finish(a, provider, rid, reason_key, reason, extra):
    if rid is not None:
        a.params["provider_id"] = _cut(rid, _PARAM_MAX)
    a.params["provider"] = provider
    if reason is not None:
        a.params[reason_key] = _cut(reason, _PARAM_MAX)
    if a.model is not None:
        a.model = _cut(a.model, _MODEL_MAX)
    text = "".join(a.text)
    if not a.logprobs:
        # No log-probs (Anthropic, or OpenAI asked without logprobs=True): no token can be
        # recorded without inventing its probability, so the text is kept as a parameter.
        a.params["logprobs"] = False
        cut = _cut(text, _PARAM_MAX)
        a.params["text"] = cut
        if len(cut) != len(text):
            a.params["text_truncated"] = True
    for k, v in extra.items():
        a.params.setdefault(k, v)
    return a


# --- OpenAI ---------------------------------------------------------------------------------------

def _openai_answers(result):
    result = _obj(result, "the result")
    if _get(result, "output") is not None or _get(result, "object") == "response":
        return _responses_answers(result)
    choices = _list(_get(result, "choices"), "choices")
    if not choices:
        raise ValueError("telltale.providers: the result has neither choices (Chat Completions) "
                         "nor output (Responses API)")
    model = _str(_get(result, "model"), "model")
    rid = _str(_get(result, "id"), "id")
    out = []
    for i, ch in enumerate(choices):
        w = "choices[%d]" % i
        ch = _obj(ch, w)
        a = _Answer()
        a.model = model
        msg = _get(ch, "message")
        content = _str(_get(_obj(msg, w + ".message"), "content"), w + ".message.content") \
            if msg is not None else None
        lps = _get(ch, "logprobs")
        if lps is not None:
            items = _list(_get(_obj(lps, w + ".logprobs"), "content"), w + ".logprobs.content")
            a.tokens = [_token(t, "%s.logprobs.content[%d]" % (w, j))
                        for j, t in enumerate(items)]
            a.logprobs = bool(a.tokens)
        a.text = [content or ""]
        _usage(a, _get(result, "usage"), "usage")
        extra = {"api": "chat.completions"}
        if len(choices) > 1:
            extra["choice"] = _count(_get(ch, "index", i), w + ".index")
        out.append(_finish(a, "openai", rid, "finish_reason",
                           _str(_get(ch, "finish_reason"), w + ".finish_reason"), extra))
    return out


def _responses_answers(result):
    model = _str(_get(result, "model"), "model")
    rid = _str(_get(result, "id"), "id")
    out = []
    for i, item in enumerate(_list(_get(result, "output"), "output")):
        w = "output[%d]" % i
        item = _obj(item, w)
        if _get(item, "type") != "message":
            continue  # reasoning, tool calls: no text of the answer
        a = _Answer()
        a.model = model
        have_lps = False
        for j, part in enumerate(_list(_get(item, "content"), w + ".content")):
            pw = "%s.content[%d]" % (w, j)
            part = _obj(part, pw)
            if _get(part, "type") != "output_text":
                continue  # a refusal: no tokens
            a.text.append(_str(_get(part, "text"), pw + ".text") or "")
            lps = _get(part, "logprobs")
            if lps is not None:
                items = _list(lps, pw + ".logprobs")
                a.tokens += [_token(t, "%s.logprobs[%d]" % (pw, k)) for k, t in enumerate(items)]
                have_lps = have_lps or bool(items)
        a.logprobs = have_lps
        _usage(a, _get(result, "usage"), "usage")
        status = _str(_get(item, "status"), w + ".status") or _str(_get(result, "status"),
                                                                   "status")
        out.append(_finish(a, "openai", rid, "status", status, {"api": "responses"}))
    if not out:
        raise ValueError("telltale.providers: the Responses API result has no message in output")
    return out


def record_openai(client, result, session=None, step=None, **params):
    """Record an OpenAI Chat Completions result (one response per choice) or a Responses API
    result (one per output message) and return the list of telltale Responses. params are added
    to each response's parameters (temperature=..., ...)."""
    return _record_all(client, _openai_answers(result), session, step, params)


# --- Anthropic ------------------------------------------------------------------------------------

def _anthropic_answer(msg):
    msg = _obj(msg, "the message")
    a = _Answer()
    a.model = _str(_get(msg, "model"), "model")
    for i, block in enumerate(_list(_get(msg, "content"), "content")):
        block = _obj(block, "content[%d]" % i)
        if _get(block, "type") == "text":
            a.text.append(_str(_get(block, "text"), "content[%d].text" % i) or "")
    _usage(a, _get(msg, "usage"), "usage")
    return _finish(a, "anthropic", _str(_get(msg, "id"), "id"), "stop_reason",
                   _str(_get(msg, "stop_reason"), "stop_reason"), {})


def record_anthropic(client, message, session=None, step=None, **params):
    """Record an Anthropic Messages result: its text, usage, model and stop reason. Anthropic
    gives no log-probs, so the response has no tokens (parameter logprobs=False) and its text
    is the parameter "text". Returns the telltale Response."""
    return _record_all(client, [_anthropic_answer(message)], session, step, params)[0]


# --- streams -------------------------------------------------------------------------------------

class ProviderStream:
    """The chunks of a provider's stream, passed through unchanged, recorded when the stream
    ends (its last chunk carries the usage). Iterate it as the stream itself (`for`, or
    `async for` over an async source); .responses is the list of telltale Responses once
    recorded. A stream left before its end (break, an error of the source) is recorded with
    what arrived and incomplete=True by close() / aclose(), the end of a `with` / `async with`
    block, or the source's exception (which propagates). A malformed chunk raises TypeError or
    ValueError from the iteration."""

    def __init__(self, client, chunks, session, step, params, fold, build):
        _check_target(client, step)
        if not (hasattr(chunks, "__iter__") or hasattr(chunks, "__aiter__")):
            raise TypeError("telltale.providers: the stream must be iterable, got %s"
                            % type(chunks).__name__)
        self._client, self._session, self._step, self._params = client, session, step, params
        self._src = chunks
        self._it = None
        self._fold, self._build = fold, build
        self._state = {}
        self._n = 0
        self.responses = None

    def __iter__(self):
        if self._it is None:
            self._it = iter(self._src)
        return self

    def __next__(self):
        if self.responses is not None:
            raise StopIteration
        if self._it is None:
            self._it = iter(self._src)
        try:
            chunk = next(self._it)
        except StopIteration:
            self._record(False)
            raise
        except BaseException:
            self._record(True)
            raise
        return self._seen(chunk)

    def __aiter__(self):
        if self._it is None:
            self._it = self._src.__aiter__()
        return self

    async def __anext__(self):
        if self.responses is not None:
            raise StopAsyncIteration
        if self._it is None:
            self._it = self._src.__aiter__()
        try:
            chunk = await self._it.__anext__()
        except StopAsyncIteration:
            self._record(False)
            raise
        except BaseException:
            self._record(True)
            raise
        return self._seen(chunk)

    def _seen(self, chunk):
        self._fold(self._state, chunk, "chunk %d" % self._n)
        self._n += 1
        return chunk

    def _record(self, incomplete):
        if self.responses is not None:
            return
        self.responses = []
        answers = self._build(self._state)
        params = dict(self._params)
        if incomplete:
            params["incomplete"] = True
        self.responses = _record_all(self._client, answers, self._session, self._step, params)

    def close(self):
        """Record what arrived (incomplete=True unless the stream had ended), close the
        source."""
        self._record(True)
        # The iterator (a generator), then the source itself (an SDK's stream closes its HTTP
        # response): closing either twice is harmless.
        for obj in (self._it, self._src):
            closer = getattr(obj, "close", None)
            if closer is not None:
                closer()

    async def aclose(self):
        """close() of an async stream: records, then awaits the source's aclose()."""
        self._record(True)
        closer = getattr(self._it, "aclose", None)
        if closer is not None:
            await closer()
        closer = getattr(self._src, "close", None)  # the SDKs' async streams: a coroutine
        if closer is not None and self._src is not self._it:
            done = closer()
            if hasattr(done, "__await__"):
                await done

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.aclose()
        return False


def _openai_fold(st, chunk, what):
    chunk = _obj(chunk, what)
    kind = _get(chunk, "type")
    if st.setdefault("responses_api", isinstance(kind, str) and kind.startswith("response.")):
        _responses_fold(st, chunk, kind, what)
        return
    if _get(chunk, "model") is not None:
        st["model"] = _str(_get(chunk, "model"), what + ".model")
    if _get(chunk, "id") is not None:
        st["id"] = _str(_get(chunk, "id"), what + ".id")
    if _get(chunk, "usage") is not None:
        st["usage"] = _obj(_get(chunk, "usage"), what + ".usage")
    choices = st.setdefault("choices", {})
    for i, ch in enumerate(_list(_get(chunk, "choices"), what + ".choices")):
        w = "%s.choices[%d]" % (what, i)
        ch = _obj(ch, w)
        c = choices.setdefault(_count(_get(ch, "index", 0), w + ".index"),
                               {"text": [], "tokens": [], "lps": False, "finish": None})
        delta = _get(ch, "delta")
        if delta is not None:
            t = _str(_get(_obj(delta, w + ".delta"), "content"), w + ".delta.content")
            if t:
                c["text"].append(t)
        lps = _get(ch, "logprobs")
        if lps is not None:
            items = _list(_get(_obj(lps, w + ".logprobs"), "content"), w + ".logprobs.content")
            c["tokens"] += [_token(t, "%s.logprobs.content[%d]" % (w, j))
                            for j, t in enumerate(items)]
            c["lps"] = c["lps"] or bool(items)
        if _get(ch, "finish_reason") is not None:
            c["finish"] = _str(_get(ch, "finish_reason"), w + ".finish_reason")


def _responses_fold(st, ev, kind, what):
    """One event of a Responses API stream: response.created / .completed / .incomplete carry
    the response (model, id, status, usage), output_item.added and .done a message, and
    output_text.delta its text and log-probs."""
    if _get(ev, "response") is not None:
        resp = _obj(_get(ev, "response"), what + ".response")
        for key in ("model", "id", "status"):
            if _get(resp, key) is not None:
                st[key] = _str(_get(resp, key), "%s.response.%s" % (what, key))
        if _get(resp, "usage") is not None:
            st["usage"] = _obj(_get(resp, "usage"), what + ".response.usage")
    items = st.setdefault("items", {})
    if kind in ("response.output_item.added", "response.output_item.done"):
        item = _obj(_get(ev, "item"), what + ".item")
        if _get(item, "type") == "message":
            m = items.setdefault(_count(_get(ev, "output_index", 0), what + ".output_index"),
                                 {"text": [], "tokens": [], "status": None})
            if _get(item, "status") is not None:
                m["status"] = _str(_get(item, "status"), what + ".item.status")
    elif kind == "response.output_text.delta":
        m = items.setdefault(_count(_get(ev, "output_index", 0), what + ".output_index"),
                             {"text": [], "tokens": [], "status": None})
        t = _str(_get(ev, "delta"), what + ".delta")
        if t:
            m["text"].append(t)
        m["tokens"] += [_token(t, "%s.logprobs[%d]" % (what, j))
                        for j, t in enumerate(_list(_get(ev, "logprobs"), what + ".logprobs"))]


def _responses_build(st):
    out = []
    for idx in sorted(st.get("items", {})):
        m = st["items"][idx]
        a = _Answer()
        a.model = st.get("model")
        a.text = m["text"]
        a.tokens = m["tokens"]
        a.logprobs = bool(m["tokens"])
        _usage(a, st.get("usage"), "usage")
        out.append(_finish(a, "openai", st.get("id"), "status", m["status"] or st.get("status"),
                           {"api": "responses"}))
    return out


def _openai_build(st):
    if st.get("responses_api"):
        return _responses_build(st)
    choices = st.get("choices") or {0: {"text": [], "tokens": [], "lps": False, "finish": None}}
    out = []
    for idx in sorted(choices):
        c = choices[idx]
        a = _Answer()
        a.model = st.get("model")
        a.text = c["text"]
        a.tokens = c["tokens"]
        a.logprobs = c["lps"]
        _usage(a, st.get("usage"), "usage")
        extra = {"api": "chat.completions"}
        if len(choices) > 1:
            extra["choice"] = idx
        out.append(_finish(a, "openai", st.get("id"), "finish_reason", c["finish"], extra))
    return out


def record_openai_stream(client, chunks, session=None, step=None, **params):
    """Pass an OpenAI stream through unchanged and record it as record_openai records the same
    answer unstreamed: Chat Completions chunks (choices[i].delta.content,
    choices[i].logprobs.content, the usage in the last chunk with
    stream_options={"include_usage": True}) or Responses API events (response.created,
    response.output_text.delta with its logprobs, response.completed with the usage). chunks
    is an iterable or an async iterable. Returns a ProviderStream to iterate (`for` or
    `async for`)."""
    return ProviderStream(client, chunks, session, step, params, _openai_fold, _openai_build)


def _anthropic_fold(st, ev, what):
    ev = _obj(ev, what)
    kind = _get(ev, "type")
    if kind == "message_start":
        msg = _obj(_get(ev, "message"), what + ".message")
        st["model"] = _str(_get(msg, "model"), what + ".message.model")
        st["id"] = _str(_get(msg, "id"), what + ".message.id")
        if _get(msg, "usage") is not None:
            st.setdefault("usage", {}).update(_usage_dict(_get(msg, "usage"),
                                                          what + ".message.usage"))
    elif kind in ("content_block_start", "content_block_delta"):
        # A text block's first text, then its text_delta pieces (tool input and thinking
        # deltas are not the answer's text).
        field, text_type = (("content_block", "text") if kind == "content_block_start"
                            else ("delta", "text_delta"))
        part = _obj(_get(ev, field), "%s.%s" % (what, field))
        if _get(part, "type") == text_type:
            t = _str(_get(part, "text"), "%s.%s.text" % (what, field))
            if t:
                st.setdefault("text", []).append(t)
    elif kind == "message_delta":
        delta = _get(ev, "delta")
        if delta is not None:
            r = _str(_get(_obj(delta, what + ".delta"), "stop_reason"), what + ".delta.stop_reason")
            if r is not None:
                st["stop_reason"] = r
        if _get(ev, "usage") is not None:  # cumulative counts: the latest wins
            st.setdefault("usage", {}).update(_usage_dict(_get(ev, "usage"), what + ".usage"))


def _usage_dict(usage, what):
    a = _Answer()
    _usage(a, usage, what)
    return a.params


def _anthropic_build(st):
    a = _Answer()
    a.model = st.get("model")
    a.text = st.get("text", [])
    a.params.update(st.get("usage", {}))
    return [_finish(a, "anthropic", st.get("id"), "stop_reason", st.get("stop_reason"), {})]


def record_anthropic_stream(client, events, session=None, step=None, **params):
    """Pass an Anthropic Messages stream (message_start, content_block_delta with text_delta,
    message_delta with the usage, ...) through unchanged and record it as record_anthropic
    records the same message unstreamed. Returns a ProviderStream to iterate."""
    return ProviderStream(client, events, session, step, params, _anthropic_fold,
                          _anthropic_build)


# --- recording -----------------------------------------------------------------------------------

def _check_target(client, step):
    if not isinstance(client, Client):
        raise TypeError("telltale.providers: client must be a telltale.Client, got %s"
                        % type(client).__name__)
    if step is not None and not isinstance(step, Step):
        raise TypeError("telltale.providers: step must be a telltale.Step, got %s"
                        % type(step).__name__)


def _record_all(client, answers, session, step, params):
    _check_target(client, step)
    for k in params:
        if not isinstance(k, str):
            raise TypeError("telltale.providers: parameter names must be strings")
    out = []
    for a in answers:
        ps = dict(a.params)
        ps.update(params)
        token = client._current.set(step) if step is not None else None
        try:
            with client.response(session=session, model=a.model, **ps) as r:
                for text, lp, top in a.tokens:
                    r.token_logprobs(lp, top or None, text=text)
        finally:
            if token is not None:
                client._current.reset(token)
        out.append(r)
    return out
