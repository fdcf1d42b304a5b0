"""The hot calls of the telltale package over ctypes: the fallback implementation of the base
classes ClientCore, StepCore and ResponseCore where the compiled extension (telltale._ext,
python/ext/ext.c) is not available. Both have the same behaviour; the Python tests run against
each (TELLTALE_IMPL=ctypes or ext). Nothing here is public.

Event functions go through ctypes.PyDLL (telltale/_lib.py): the GIL stays held during the call,
which saves its release and re-acquisition (the C side never blocks there).
"""

import ctypes
import sys

from . import _lib

INTERFACE = 3
_ns = {}


def bind(path, ns):
    """Take the Python side's helpers (the same dict the extension's bind receives)."""
    assert path == _lib.path
    _ns.update(ns)


def _enc(s):
    return None if s is None else (s if isinstance(s, bytes) else str(s).encode())


def attrs(kv):
    """A ctypes array of tt_attr for a dict, plus the objects that must outlive the call."""
    n = len(kv)
    arr = (_lib.Attr * n)()
    keep = []
    for i, (k, v) in enumerate(kv.items()):
        a = arr[i]
        kb = k.encode()
        keep.append(kb)
        a.key = kb
        if isinstance(v, bool):
            a.type = _lib.ATTR_BOOL
            a.v.b = 1 if v else 0
        elif isinstance(v, int) and -(1 << 63) <= v < (1 << 63):
            a.type = _lib.ATTR_INT
            a.v.i = v
        elif isinstance(v, float):
            a.type = _lib.ATTR_DOUBLE
            a.v.d = v
        else:
            vb = _enc(v)
            keep.append(vb)
            a.type = _lib.ATTR_STR
            a.v.s = vb
    return arr, n, keep


def _text(what, s):
    if not isinstance(s, str):
        raise TypeError("telltale: %s needs a str" % what)
    return s.encode()


class ClientCore:
    __slots__ = ("_h", "_session", "_session_b", "_current", "__dict__", "__weakref__")

    def __init__(self):
        self._h = None
        self._session = None
        self._session_b = None
        self._current = None

    @property
    def session(self):
        return self._session

    @session.setter
    def session(self, value):
        self._session = value
        self._session_b = _enc(value)

    def log(self, message, level="info", *, session=None, **attrs_):
        sev = _ns["severities"].get(level) if type(level) is str else None
        if sev is None:
            sev = _ns["level"](level)
        s = self._session_b if session is None else _enc(session)
        m = _text("log() message", message)
        if attrs_:
            arr, n, keep = attrs(attrs_)
            return _lib.log(self._h, s, sev, m, arr, n)
        return _lib.log(self._h, s, sev, m, None, 0)

    def metric(self, name, value, kind="gauge", *, unit=None, session=None, **attrs_):
        k = _ns["metric_kinds"].get(kind) if type(kind) is str else kind
        if k is None:
            raise ValueError("telltale: unknown metric kind %r (counter, gauge, histogram)"
                             % (kind,))
        s = self._session_b if session is None else _enc(session)
        u = _enc(unit)
        nb = _text("metric() name", name)
        if attrs_:
            arr, n, keep = attrs(attrs_)
            return _lib.metric(self._h, s, k, nb, float(value), u, arr, n)
        return _lib.metric(self._h, s, k, nb, float(value), u, None, 0)

    def step(self, kind="other", name=None, query=None, *, session=None, traceparent=None):
        k = _ns["step_kinds"].get(kind) if type(kind) is str else kind
        if k is None:
            raise ValueError("telltale: unknown step kind %r (%s)"
                             % (kind, ", ".join(_ns["step_kinds"])))
        s = _ns["step_type"]()
        s._c = self
        s._st = _lib.Step()
        s.kind = k
        s.name = name if name is not None else (kind if type(kind) is str else "step")
        s.query = query
        s.session = session
        s.traceparent = traceparent
        s.parent = None
        s.result_bytes = -1
        s._status = 0
        s._error = None
        s._token = None
        return s


class StepCore:
    __slots__ = ("_c", "_st", "kind", "name", "query", "session", "parent", "result_bytes",
                 "_status", "_error", "_token", "traceparent", "__weakref__")

    @property
    def id(self):
        return self._st.id

    def __enter__(self):
        c = self._c
        parent = c._current.get()
        self.parent = parent
        session = self.session
        if session is None:
            session = parent.session if parent is not None else c.session
            self.session = session
        tp = self.traceparent
        if tp is None and parent is None and "opentelemetry.trace" in sys.modules:
            tp = _ns["otel_traceparent"]()  # a root step joins the current OpenTelemetry span
        if tp is not None:
            if _lib.step_begin_ctx is None:
                raise _ns["error"](_lib.EINVAL, "step: the library predates tt_step_begin_ctx")
            rc = _lib.step_begin_ctx(c._h, self._st, None if parent is None else parent._st,
                                     _enc(tp), self.kind, _enc(session), _enc(self.name),
                                     _enc(self.query))
            if rc == _lib.EINVAL:
                raise ValueError("telltale: invalid traceparent %r" % (tp,))
        else:
            rc = _lib.step_begin(c._h, self._st, parent._st if parent is not None else None,
                                 self.kind, _enc(session), _enc(self.name), _enc(self.query))
        if rc == _lib.EBLOCKED:
            raise _ns["blocked"](self.kind, self.name)
        self._token = c._current.set(self)
        return self

    def __exit__(self, et, ev, tb):
        c = self._c
        status, error = self._status, self._error
        if et is not None:
            status, error = _ns["exit_error"](et, ev)
        _lib.step_end(c._h, self._st, status, self.result_bytes,
                      None if error is None else error.encode(errors="replace"))
        try:
            c._current.reset(self._token)
        except ValueError:  # left in another context than entered: restore the parent
            c._current.set(self.parent)
        return False


class ResponseCore:
    __slots__ = ("_r", "raise_on_halt", "verdict", "tokens", "_verdict", "_vref", "_ts",
                 "_tsref")

    def __init__(self):
        self._r = None
        self.raise_on_halt = False
        self.verdict = _ns["verdicts"][0]
        self.tokens = 0
        self._verdict = ctypes.c_int(0)
        self._vref = ctypes.byref(self._verdict)
        self._ts = _lib.TokenStats()
        self._tsref = ctypes.byref(self._ts)

    @property
    def _stats(self):
        return bytes(self._ts)

    def _open(self):
        r = self._r
        if r is None:
            raise RuntimeError("telltale: response not open (use it in a `with` block; it ends "
                               "there or at a raised Halted)")
        return r

    def _count(self):
        self.tokens += 1
        v = _ns["verdicts"][self._verdict.value]
        if v > self.verdict:
            self.verdict = v
        return v

    def _after(self, rc):
        if rc:
            return self._rejected(rc)
        v = self._count()
        if v == 2 and self.raise_on_halt:
            return self._halt()
        return v

    def token(self, logits, chosen, *, text=None):
        r = self._open()
        row = _ns["row"](logits)
        if row is None:  # a tensor on an accelerator: its statistics come from there
            return self._device_token(logits, chosen, text)
        ptr, n, stride, dt = row
        if text is not None and _lib.response_token_text is not None:
            return self._after(_lib.response_token_text(r, ptr, n, stride, dt, chosen,
                                                        _text("token() text", text),
                                                        self._vref, self._tsref))
        return self._after(_lib.response_token(r, ptr, n, stride, dt, chosen, self._vref,
                                               self._tsref))

    def token_logprobs(self, chosen_logprob, top_logprobs=None, *, chosen=-1, top_ids=None,
                       text=None):
        r = self._open()
        ids_p = lps_p = texts_p = None
        texts = None
        k = 0
        if top_logprobs is not None:
            ids, lps, texts = _ns["top"](top_logprobs, top_ids)
            k = len(lps)
            if k:
                lps_p = (ctypes.c_float * k)(*lps)
                if ids is not None:
                    ids_p = (ctypes.c_int32 * k)(*ids)
                if texts is not None:
                    texts_p = (ctypes.c_char_p * k)(*[None if t is None else _text("text", t)
                                                      for t in texts])
        if (text is not None or texts_p is not None) and \
                _lib.response_token_logprobs_text is not None:
            tb = None if text is None else _text("token_logprobs() text", text)
            return self._after(_lib.response_token_logprobs_text(
                r, chosen, tb, float(chosen_logprob), ids_p, texts_p, lps_p, k, self._vref,
                self._tsref))
        return self._after(_lib.response_token_logprobs(r, chosen, float(chosen_logprob), ids_p,
                                                        lps_p, k, self._vref, self._tsref))

    def _token_stats(self, stats, text=None, may_raise=True):
        """A token from statistics computed elsewhere (a _lib.TokenStats); may_raise false
        leaves a HALT to the caller."""
        r = self._open()
        if _lib.response_token_stats is None:
            raise RuntimeError("telltale: the library has no tt_response_token_stats (older "
                               "than 0.4)")
        tb = None if text is None else _text("token() text", text)
        rc = _lib.response_token_stats(r, ctypes.byref(stats), tb, self._vref, self._tsref)
        if rc or may_raise:
            return self._after(rc)
        return self._count()


def token_batch(responses, chosen, ptr, rows, n, stride, row_stride, dtype):
    """One decode step over a [rows, n] matrix read in place: [Verdict], or the library's error
    code (int). None entries are finished sequences. Never raises Halted."""
    if _lib.response_token_batch is None:
        raise RuntimeError("telltale: the library has no tt_response_token_batch (older than "
                           "0.4)")
    b = len(responses)
    if len(chosen) != b or rows != b:
        raise ValueError("telltale: responses, chosen ids and logits rows differ in number")
    if b == 0:
        return []
    rs = (ctypes.c_void_p * b)()
    for i, r in enumerate(responses):
        if r is None:
            continue
        if not isinstance(r, ResponseCore):
            raise TypeError("telltale: token_batch needs Responses (or None)")
        rs[i] = r._open()
    ids = (ctypes.c_int32 * b)(*chosen)
    verdicts = (ctypes.c_int * b)()
    stats = (_lib.TokenStats * b)()
    rc = _lib.response_token_batch(rs, b, ptr, n, stride, row_stride, dtype, ids, verdicts,
                                   stats)
    if rc:
        return rc
    out = []
    for i, r in enumerate(responses):
        if r is None:
            out.append(_ns["verdicts"][0])
            continue
        r._verdict.value = verdicts[i]
        ctypes.memmove(ctypes.addressof(r._ts), ctypes.addressof(stats[i]),
                       ctypes.sizeof(_lib.TokenStats))
        out.append(r._count())
    return out
