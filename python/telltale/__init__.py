"""telltale: stream an agent's logs, metrics, steps and token confidence to a telltale collector.

A thin layer over libtelltale: the calls made per event (log, metric, steps, tokens) run in a
compiled extension (telltale._ext) when it is built, else over ctypes, with the same behaviour
(telltale.implementation says which):

    import telltale

    with telltale.Client("unix:/tmp/telltale.sock", agent="my-agent") as tt:
        tt.log("starting", query="weather in Oslo")
        with tt.step("tool", name="search", query="weather in Oslo") as s:
            s.result_bytes = len(do_search())
        with tt.response(session="s1", model="gpt-x") as r:
            verdict = r.token(logits_row, chosen_id)   # numpy row or torch tensor
        # a batched engine: telltale.token_batch(responses, logits_BxV, chosen_ids)

Event calls never block and never raise for a dropped event: they return 0 or the negative
error code of the C library (counted in stats()). docs/python.md is the reference.
"""

import atexit
import contextvars
import ctypes
import enum
import os
import sys
import threading

from . import _ctypes_core, _lib, _torch

__all__ = ["Client", "Step", "Response", "Verdict", "Halted", "Error", "GuardPolicy",
           "Summary", "TokenStats", "Stats", "library_path", "library_version",
           "implementation", "token_batch"]
__version__ = "0.7.0"

library_path = _lib.path


def library_version():
    """The version of the loaded libtelltale, as "MAJOR.MINOR.PATCH"."""
    return _lib.version().decode()


class Error(Exception):
    """A call to libtelltale failed; .code is the negative TT_E* code."""

    def __init__(self, code, what=""):
        self.code = code
        msg = _lib.strerror(code).decode()
        super().__init__("%s: %s" % (what, msg) if what else msg)


class Blocked(Error):
    """A compliance rule blocked a step before it ran (Client.step's `with`): the call must not
    run. The step is recorded as cancelled with the rule and the reason; .reason says them."""

    def __init__(self, kind, name):
        self.code = _lib.EBLOCKED
        kind = {v: k for k, v in _STEP.items()}.get(kind, kind)
        self.reason = "%s step %r blocked by the compliance policy" % (kind, name)
        Exception.__init__(self, self.reason)


class Verdict(enum.IntEnum):
    """What the guard says about a token or a response."""
    PASS = 0
    FLAG = 1
    HALT = 2


_VERDICTS = (Verdict.PASS, Verdict.FLAG, Verdict.HALT)


class Halted(Exception):
    """Raised by Response.token / token_logprobs when the verdict is HALT and the client or the
    response was created with raise_on_halt=True. .reason says why (a guard rule or an operator
    halt); .response is the response (ended when its `with` block exits)."""

    def __init__(self, reason, response=None):
        super().__init__(reason or "halted")
        self.reason = reason
        self.response = response


_SEVERITY = {"trace": 1, "debug": 5, "info": 9, "warn": 13, "warning": 13, "error": 17,
             "fatal": 21, "critical": 21}
_METRIC = {"counter": 1, "gauge": 2, "histogram": 3}
_STEP = {"reasoning": 1, "tool": 2, "api": 3, "llm": 4, "agent": 5, "retrieval": 6, "other": 7}
_STATUS_OK, _STATUS_ERROR, _STATUS_TIMEOUT, _STATUS_CANCELLED = 0, 1, 2, 3
_DTYPE_F32, _DTYPE_F16, _DTYPE_BF16 = 1, 2, 3
_ERROR_MAX = 512


def _enc(s):
    return None if s is None else (s if isinstance(s, bytes) else str(s).encode())


def _level(level):
    if isinstance(level, int):
        return level
    try:
        return _SEVERITY[level.lower()]
    except (KeyError, AttributeError):
        raise ValueError("telltale: unknown severity %r (trace, debug, info, warn, error, "
                         "fatal)" % (level,)) from None


class Stats:
    """A snapshot of the client's counters (see tt_stats in telltale.h). At quiescence:
    emitted == acked + possibly_delivered + buffered + dropped_total."""

    __slots__ = ("emitted", "sent", "acked", "possibly_delivered", "buffered", "spooled",
                 "dropped", "dropped_total", "frames_sent", "bytes_sent", "reconnects",
                 "connected", "inherited", "comply_blocked", "comply_flagged", "comply_masked",
                 "tls_failures")

    def __init__(self, s):
        for f in self.__slots__:
            if f == "dropped":
                self.dropped = {_lib.drop_cause_name(i).decode(): s.dropped[i]
                                for i in range(_lib.DROP_COUNT)}
            elif f == "connected":
                self.connected = bool(s.connected)
            else:
                setattr(self, f, getattr(s, f))

    def as_dict(self):
        return {f: getattr(self, f) for f in self.__slots__}

    def __repr__(self):
        return "Stats(%s)" % ", ".join("%s=%r" % (f, getattr(self, f)) for f in self.__slots__)


class TokenStats:
    """Statistics of one token: prob and logprob of the chosen token, its rank, the entropy of
    the distribution (nats), the top-1/top-2 margin, and the top-k (ids, probs)."""

    __slots__ = ("chosen", "rank", "logprob", "prob", "entropy", "margin", "flags", "topk")

    def __init__(self, s):
        self.chosen = s.chosen
        self.rank = s.rank
        self.logprob = s.logprob
        self.prob = s.prob
        self.entropy = s.entropy
        self.margin = s.margin
        self.flags = s.flags
        k = min(s.k, _lib.TOPK_MAX)
        self.topk = [(s.topk_ids[i], s.topk_probs[i]) for i in range(k)]

    def __repr__(self):
        return ("TokenStats(chosen=%d, prob=%.4g, rank=%d, entropy=%.4g, margin=%.4g)"
                % (self.chosen, self.prob, self.rank, self.entropy, self.margin))


class Summary:
    """The summary of an ended response (tt_response_summary)."""

    __slots__ = ("tokens", "mean_logprob", "min_logprob", "perplexity", "mean_entropy",
                 "low_confidence_share", "min_window_confidence", "verdict", "estimated",
                 "reason")

    def __init__(self, s):
        self.tokens = s.tokens
        self.mean_logprob = s.mean_logprob
        self.min_logprob = s.min_logprob
        self.perplexity = s.perplexity
        self.mean_entropy = s.mean_entropy
        self.low_confidence_share = s.low_confidence_share
        self.min_window_confidence = s.min_window_confidence
        self.verdict = _VERDICTS[s.verdict] if 0 <= s.verdict <= 2 else s.verdict
        self.estimated = bool(s.estimated)
        self.reason = s.reason.decode(errors="replace")

    @property
    def confidence(self):
        """exp(mean log-prob): the geometric mean of p(chosen) over the response."""
        import math
        return math.exp(self.mean_logprob) if self.tokens else 0.0

    def __repr__(self):
        return "Summary(%s)" % ", ".join("%s=%r" % (f, getattr(self, f)) for f in self.__slots__)


class GuardPolicy:
    """The guard's thresholds (tt_guard_policy). 0 turns a rule off; action is Verdict.FLAG or
    Verdict.HALT: what a trip returns."""

    __slots__ = ("token_min_prob", "window_min_confidence", "window", "response_min_confidence",
                 "action")

    def __init__(self, token_min_prob=0.0, window_min_confidence=0.0, window=16,
                 response_min_confidence=0.0, action=Verdict.FLAG):
        self.token_min_prob = token_min_prob
        self.window_min_confidence = window_min_confidence
        self.window = window
        self.response_min_confidence = response_min_confidence
        self.action = Verdict(action)

    def _to_c(self):
        return _lib.GuardPolicy(self.token_min_prob, self.window_min_confidence, self.window,
                                self.response_min_confidence, int(self.action))

    @classmethod
    def _from_c(cls, p):
        return cls(p.token_min_prob, p.window_min_confidence, p.window,
                   p.response_min_confidence, p.action)

    def __repr__(self):
        return "GuardPolicy(%s)" % ", ".join("%s=%r" % (f, getattr(self, f))
                                             for f in self.__slots__)


# --- numpy rows, read in place ------------------------------------------------------------------

_ROW_DTYPES = {}
_ndarray = None


def _numpy_setup():
    global _ndarray
    try:
        import numpy as np
    except ImportError:  # numpy is optional: rows then come through __array_interface__
        return
    _ndarray = np.ndarray
    _ROW_DTYPES[np.dtype(np.float32)] = (_DTYPE_F32, 4)
    _ROW_DTYPES[np.dtype(np.float16)] = (_DTYPE_F16, 2)
    _ROW_DTYPES[np.dtype(np.uint16)] = (_DTYPE_BF16, 2)  # bfloat16 bits, as uint16
    try:  # the bfloat16 dtype of ml_dtypes (JAX, ...) when it is installed
        import ml_dtypes
        _ROW_DTYPES[np.dtype(ml_dtypes.bfloat16)] = (_DTYPE_BF16, 2)
    except ImportError:
        pass


_numpy_setup()
_TYPESTR = {"<f4": (_DTYPE_F32, 4), "<f2": (_DTYPE_F16, 2), "<u2": (_DTYPE_BF16, 2)}


def _row(a):
    """(pointer, n, stride in elements, dtype code) of a 1-D row, without copying it."""
    if type(a) is _ndarray:
        dt = _ROW_DTYPES.get(a.dtype)
        if dt is None:
            raise TypeError("telltale: logits must be float32, float16 or bfloat16 (as uint16), "
                            "got %s" % a.dtype)
        if a.ndim != 1:
            raise ValueError("telltale: logits must be one row (1-D), got shape %s" % (a.shape,))
        n = a.shape[0]
        st = a.strides[0]
        ptr = a.ctypes.data
    else:
        tm = _torch.module_of(a)
        if tm is not None:  # read in place on the CPU; None: computed on its device
            return _torch.row(tm, a)
        ai = getattr(a, "__array_interface__", None)
        if ai is None and _ndarray is not None:
            # A buffer-protocol row (array.array, memoryview, ...): read through a numpy view of
            # the same memory, as the extension reads the buffer itself.
            try:
                view = memoryview(a)
            except TypeError:
                view = None
            if view is not None and view.format.lstrip("<=@") in ("f", "e", "H"):
                import numpy as np
                return _row(np.asarray(view))
        if ai is None:
            raise TypeError("telltale: logits must be a numpy array (or expose "
                            "__array_interface__ or the buffer protocol), got %s"
                            % type(a).__name__)
        dt = _TYPESTR.get(ai["typestr"].replace("=", "<"))
        if dt is None or sys.byteorder != "little":
            raise TypeError("telltale: logits must be float32, float16 or bfloat16 (as uint16), "
                            "got %s" % ai["typestr"])
        if len(ai["shape"]) != 1:
            raise ValueError("telltale: logits must be one row (1-D), got shape %s"
                             % (ai["shape"],))
        n = ai["shape"][0]
        st = ai["strides"][0] if ai.get("strides") else dt[1]
        ptr = ai["data"][0]
    if n == 0:
        raise ValueError("telltale: empty logits row")
    size = dt[1]
    if n == 1:
        st = size
    if st <= 0 or st % size:
        raise ValueError("telltale: logits stride %d bytes is not a positive multiple of the "
                         "element size %d" % (st, size))
    return ptr, n, st // size, dt[0]


def _matrix(a):
    """(pointer, rows, n, stride, row stride, dtype code) of a 2-D numpy array or CPU tensor,
    read in place; None for a tensor whose statistics are computed on its device."""
    tm = _torch.module_of(a)
    if tm is not None:
        return _torch.matrix(tm, a)
    if _ndarray is None or not isinstance(a, _ndarray):
        raise TypeError("telltale: batched logits must be a numpy array or a torch tensor, got "
                        "%s" % type(a).__name__)
    dt = _ROW_DTYPES.get(a.dtype)
    if dt is None:
        raise TypeError("telltale: logits must be float32, float16 or bfloat16 (as uint16), "
                        "got %s" % a.dtype)
    if a.ndim != 2:
        raise ValueError("telltale: batched logits must be [batch, vocab] (2-D), got shape %s"
                         % (a.shape,))
    b, n = a.shape
    if n == 0:
        raise ValueError("telltale: empty logits rows")
    if b == 0:
        return 0, 0, n, 1, n, dt[0]
    size = dt[1]
    st = a.strides[1] if n > 1 else size
    rs = a.strides[0] if b > 1 else n * size
    if st <= 0 or st % size or rs < 0 or rs % size:
        raise ValueError("telltale: logits strides %s are not positive multiples of the element "
                         "size %d" % (a.strides, size))
    return a.ctypes.data, b, n, st // size, rs // size, dt[0]


def token_batch(responses, logits, chosen):
    """One decode step over B sequences: row b of logits ([B, V]: a numpy array, or a torch
    tensor on the CPU or on an accelerator) is the token chosen[b] (B ints: a list, an array or
    a tensor) of responses[b], in one call (tt_response_token_batch). A None response is a
    finished sequence, skipped. Returns the B verdicts (PASS for a skipped one). Every row is
    counted before a HALT raises Halted (for the first response that halted and was opened with
    raise_on_halt; that response is then over: pass None for it from then on)."""
    rs = list(responses)
    ids = chosen.tolist() if hasattr(chosen, "tolist") else list(chosen)
    ids = [int(x) for x in ids]
    for x in ids:
        if not -(1 << 31) <= x < (1 << 31):
            raise OverflowError("telltale: value out of the 32-bit range")
    if len(ids) != len(rs):
        raise ValueError("telltale: responses, chosen ids and logits rows differ in number")
    m = _matrix(logits)
    if m is None:  # on an accelerator: statistics there, scalars and the top-k to the host
        if logits.shape[0] != len(rs):
            raise ValueError("telltale: responses, chosen ids and logits rows differ in number")
        if any(r is not None and r._r is None for r in rs):
            raise RuntimeError("telltale: response not open (use it in a `with` block; it ends "
                               "there or at a raised Halted)")
        live = [i for i, r in enumerate(rs) if r is not None]
        x = logits if len(live) == len(rs) else logits[live]
        stats = _torch.device_stats(_torch.module_of(logits), x, [ids[i] for i in live]) \
            if live else []
        verdicts = [Verdict.PASS] * len(rs)
        for i, st in zip(live, stats):
            verdicts[i] = rs[i]._token_stats(st, None, False)
    else:
        verdicts = _core.token_batch(rs, ids, *m)
        if isinstance(verdicts, int):
            raise ValueError("telltale: token rejected: %s" % _lib.strerror(verdicts).decode())
    for r, v in zip(rs, verdicts):
        if v is Verdict.HALT and r.raise_on_halt:
            r._halt()
    return verdicts


# --- the implementation of the hot calls -------------------------------------------------------

_INTERFACE = 3


def _find_extension():
    """The compiled core: telltale._ext installed in the package, else the one built beside the
    library that _lib loaded ($(BUILD)/python/telltale/_ext<suffix> next to $(BUILD)/libtelltale.so),
    for this interpreter's ABI only."""
    import importlib.machinery
    import importlib.util
    if importlib.util.find_spec(__name__ + "._ext") is not None:
        import importlib
        return importlib.import_module(__name__ + "._ext")
    tried = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ext*")]
    for suffix in importlib.machinery.EXTENSION_SUFFIXES[:1]:
        path = os.path.join(os.path.dirname(os.path.abspath(_lib.path)), "python", "telltale",
                            "_ext" + suffix)
        tried.append(path)
        if os.path.exists(path):
            spec = importlib.util.spec_from_file_location(__name__ + "._ext", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            return mod
    raise ImportError("telltale: the compiled extension is not built (tried %s)"
                      % ", ".join(tried))


def _select_core():
    """The core named by $TELLTALE_IMPL: "ext" (the compiled extension, or ImportError), "ctypes",
    or "auto"/unset (the extension when it loads, else ctypes)."""
    want = os.environ.get("TELLTALE_IMPL") or "auto"
    if want not in ("auto", "ext", "ctypes"):
        raise ImportError("telltale: TELLTALE_IMPL=%s (ext, ctypes or auto)" % want)
    if want == "ctypes":
        return _ctypes_core, "ctypes", None
    try:
        core = _find_extension()
        if getattr(core, "INTERFACE", None) != _INTERFACE:
            raise ImportError("telltale: the compiled extension %s is from another version "
                              "(interface %s, want %d)" % (core.__file__,
                                                           getattr(core, "INTERFACE", None),
                                                           _INTERFACE))
        return core, "ext", None
    except ImportError as e:
        if want == "ext":
            raise ImportError("telltale: TELLTALE_IMPL=ext, but %s" % e) from e
        return _ctypes_core, "ctypes", str(e)


_core, implementation, _ext_error = _select_core()


# --- clients -------------------------------------------------------------------------------------

# Every open client, held strongly: a client dropped without close() is still closed (within its
# deadline) at the interpreter's exit instead of losing what it buffered.
_clients = set()
_clients_lock = threading.Lock()


def _default_agent():
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if name.endswith(".py"):
        name = name[:-3]
    return name if name and name != "-c" else "python"


class Client(_core.ClientCore):
    """A connection to a telltale collector (tt_client).

    Client(endpoint, agent=..., **settings): endpoint "unix:PATH", "tcp://HOST:PORT" or
    "tls://HOST:PORT" (default $TELLTALE_ENDPOINT, else the library's default
    tcp://127.0.0.1:7370; tls:// trusts **{"tls.ca": FILE} or $TELLTALE_TLS_CA, else the system
    store, and presents **{"tls.cert": ..., "tls.key": ...} for mTLS); agent the agent's name
    (default $TELLTALE_AGENT, else the script name); settings are the library's configuration
    keys (ring_bytes=..., flush_interval_ms=..., spool_dir=..., token=...; dotted keys such as
    "guard.token_min_prob" through **{...}). Keyword-only options:

      session        the default session of every event (None: no session)
      close_timeout  seconds that close() (and the exit of the interpreter) waits at most
      raise_on_halt  responses raise Halted on a HALT verdict (default: return it)
      guard          a GuardPolicy to set after opening

    Event calls (from the core, compiled or ctypes; docs/python.md):
      log(message, level="info", *, session=None, **attrs) -> 0 or a negative code
      metric(name, value, kind="gauge", *, unit=None, session=None, **attrs) -> same
      step(kind="other", name=None, query=None, *, session=None) -> a Step for `with`

    The connection is made in the background: an unreachable collector is not an error here.
    The client closes at the end of a `with` block, on close(), or when the interpreter exits.
    """

    def __init__(self, endpoint=None, agent=None, *, session=None, close_timeout=5.0,
                 raise_on_halt=False, guard=None, **settings):
        self._h = None
        self._current = contextvars.ContextVar("telltale_step_%x" % id(self), default=None)
        self._lock = threading.Lock()
        if endpoint is None:
            endpoint = os.environ.get("TELLTALE_ENDPOINT")
        if agent is None:
            agent = os.environ.get("TELLTALE_AGENT") or _default_agent()
        cfg = ctypes.c_void_p()
        rc = _lib.config_new(ctypes.byref(cfg))
        if rc:
            raise Error(rc, "config")
        try:
            items = [("agent", agent)]
            if endpoint is not None:
                items.append(("endpoint", endpoint))
            if "tls.ca" not in settings and os.environ.get("TELLTALE_TLS_CA"):
                items.append(("tls.ca", os.environ["TELLTALE_TLS_CA"]))
            items += list(settings.items())
            for k, v in items:
                if isinstance(v, bool):
                    v = "1" if v else "0"
                rc = _lib.config_set(cfg, _enc(k), _enc(v))
                if rc:
                    why = _lib.config_error(cfg).decode(errors="replace")
                    raise ValueError("telltale: setting %s=%r: %s" % (k, v, why or "invalid"))
            h = ctypes.c_void_p()
            rc = _lib.open_(ctypes.byref(h), cfg)
            if rc == _lib.EINVAL:
                raise ValueError("telltale: the settings do not fit together (ring_bytes must "
                                 "be a power of two holding 4 events of max_event_bytes, "
                                 "backoff_min_ms <= backoff_max_ms, a valid endpoint)")
            if rc:
                raise Error(rc, "open")
        finally:
            _lib.config_free(cfg)
        self._h = h.value
        self.agent = agent
        self.endpoint = endpoint
        self.session = session
        self.close_timeout = close_timeout
        self.raise_on_halt = raise_on_halt
        self._pid = os.getpid()
        self._close_rc = None
        with _clients_lock:
            _clients.add(self)
        if guard is not None:
            self.guard_policy = guard

    # -- lifecycle --

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

    @property
    def closed(self):
        return self._h is None

    def close(self, timeout=None):
        """Flush and close within timeout seconds (default close_timeout), whatever the network
        does. Returns True if everything emitted was acknowledged, False if the deadline expired
        first (the rest is spooled or counted as dropped). Idempotent. Must not race with event
        calls of other threads on this client (as tt_close in C)."""
        with self._lock:
            h, self._h = self._h, None
        if h is None:
            return self._close_rc == 0
        if timeout is None:
            timeout = self.close_timeout
        ms = max(0, min(int(timeout * 1000), 0xFFFFFFFF))
        self._close_rc = _lib.close(h, ms)  # releases the GIL while it waits
        with _clients_lock:
            _clients.discard(self)
        return self._close_rc == 0

    async def aclose(self, timeout=None):
        """close() in a worker thread, so that the event loop keeps running meanwhile."""
        import asyncio
        return await asyncio.get_running_loop().run_in_executor(None, self.close, timeout)

    def flush(self, timeout=5.0):
        """Send what is buffered and wait up to timeout seconds for the acknowledgement of every
        event emitted before the call. Returns True if all were acknowledged. Blocks (the GIL is
        released meanwhile); use aflush() in asyncio code."""
        h = self._h
        if h is None:
            return False
        return _lib.flush(h, max(0, min(int(timeout * 1000), 0xFFFFFFFF))) == 0

    async def aflush(self, timeout=5.0):
        import asyncio
        return await asyncio.get_running_loop().run_in_executor(None, self.flush, timeout)

    # -- events --

    def score(self, name, value, response=None, *, session=None, **attrs):
        """A named score of one response from whoever judged it: a provider's confidence, an
        evaluator's or LLM judge's score, a reward. response: a Response (its id is read while
        it is open, or kept after), or the response id as an int or 16 hex digits; None ties it
        to no response. The collector's detectors watch it as the signal "score:NAME". Returns
        0 or a negative code, as log()."""
        if _lib.score is None:
            raise Error(_lib.EINVAL, "score: the library predates tt_score")
        if isinstance(response, Response):
            rid = response.id
        elif isinstance(response, str):
            rid = int(response, 16)
        else:
            rid = int(response or 0)
        if session is None and isinstance(response, Response):
            session = response.session
        s = _enc(self.session if session is None else session)
        if attrs:
            arr, n, keep = _ctypes_core.attrs(attrs)
            return _lib.score(self._h, s, rid, name.encode(), float(value), arr, n)
        return _lib.score(self._h, s, rid, name.encode(), float(value), None, 0)

    @property
    def current_step(self):
        """The innermost open step of this context, or None."""
        return self._current.get()

    def response(self, session=None, model=None, *, raise_on_halt=None, traceparent=None,
                 **params):
        """A model response whose tokens are checked by the guard, used as `with`:
        r.token(logits_row, chosen) or r.token_logprobs(chosen_logprob, top_logprobs) per token;
        the summary is emitted when the block exits (r.summary). params are the sampling
        parameters (temperature=0.7, top_p=...), recorded with the response. traceparent: a
        W3C traceparent the response is a child span of (default: its step's trace, or for a
        response outside any step the current OpenTelemetry span when opentelemetry is in
        use)."""
        if not _lib.HAVE_RESPONSES:
            raise RuntimeError("telltale: %s has no response API (tt_response_begin); it is "
                               "older than this package" % _lib.path)
        r = Response(self, session, model,
                     self.raise_on_halt if raise_on_halt is None else raise_on_halt, params)
        r.traceparent = traceparent
        return r

    # -- state --

    def stats(self):
        """A Stats snapshot of the counters (exact at quiescence)."""
        h = self._h
        if h is None:
            raise Error(_lib.ESHUTDOWN, "stats")
        s = _lib.Stats()
        rc = _lib.stats_get(h, ctypes.byref(s), ctypes.sizeof(s))
        if rc:
            raise Error(rc, "stats")
        return Stats(s)

    def connection_error(self):
        """Why the latest connection attempt failed ("tls: the collector's certificate was
        refused: ...", "hello refused: ..."), or "" once connected (tt_connection_error)."""
        h = self._h
        if h is None:
            raise Error(_lib.ESHUTDOWN, "connection_error")
        buf = ctypes.create_string_buffer(512)
        _lib.connection_error(h, buf, len(buf))
        return buf.value.decode(errors="replace")

    @property
    def instance_id(self):
        """The client instance id as 32 hex digits (new in a forked child)."""
        h = self._h
        if h is None:
            raise Error(_lib.ESHUTDOWN, "instance_id")
        buf = ctypes.create_string_buffer(16)
        rc = _lib.instance_id(h, buf)
        if rc:
            raise Error(rc, "instance_id")
        return buf.raw.hex()

    def comply_policy(self, text):
        """Set the compliance policy from its text (docs/compliance.md), or clear it with None.
        Raises ValueError naming the line of a bad policy."""
        if _lib.comply_policy_set is None:
            raise RuntimeError("telltale: the library has no compliance API")
        data = None if text is None else text.encode()
        err = ctypes.create_string_buffer(256)
        rc = _lib.comply_policy_set(self._h, data, len(data) if data else 0, err, 256)
        if rc == _lib.EINVAL:
            raise ValueError("telltale: compliance policy: %s" % err.value.decode())
        if rc:
            raise Error(rc, "comply_policy")

    @property
    def guard_policy(self):
        if _lib.guard_policy_get is None:
            raise RuntimeError("telltale: the library has no guard API")
        p = _lib.GuardPolicy()
        rc = _lib.guard_policy_get(self._h, ctypes.byref(p))
        if rc:
            raise Error(rc, "guard_policy")
        return GuardPolicy._from_c(p)

    @guard_policy.setter
    def guard_policy(self, policy):
        if _lib.guard_policy_set is None:
            raise RuntimeError("telltale: the library has no guard API")
        p = policy._to_c()
        rc = _lib.guard_policy_set(self._h, ctypes.byref(p))
        if rc == _lib.EINVAL:
            raise ValueError("telltale: invalid guard policy %r (thresholds in [0, 1], window "
                             "1..4096, action FLAG or HALT)" % (policy,))
        if rc:
            raise Error(rc, "guard_policy")

    def __repr__(self):
        return "<telltale.Client agent=%r endpoint=%r%s>" % (
            self.agent, self.endpoint, " closed" if self._h is None else "")


class Step(_core.StepCore):
    """An open step (see Client.step). Attributes: id (non-zero once begun), parent (the parent
    Step or None), result_bytes (set it to record the result's size). fail(error) marks the step
    failed without raising. Entering and leaving (`with`) are the core's hot calls."""

    __slots__ = ()

    def fail(self, error="failed", status="error"):
        """Mark the step failed (status "error", "timeout" or "cancelled") with an error text."""
        self._status = {"error": _STATUS_ERROR, "timeout": _STATUS_TIMEOUT,
                        "cancelled": _STATUS_CANCELLED}.get(status, _STATUS_ERROR)
        self._error = str(error)[:_ERROR_MAX]

    async def __aenter__(self):
        return self.__enter__()

    async def __aexit__(self, et, ev, tb):
        return self.__exit__(et, ev, tb)

    def __repr__(self):
        return "<telltale.Step %s %r id=%d>" % (self.kind, self.name, self.id)


def _exit_error(et, ev):
    """(status, error text) of a step whose block raised et(ev)."""
    if issubclass(et, TimeoutError):
        status = _STATUS_TIMEOUT
    elif et.__name__ == "CancelledError" or issubclass(et, KeyboardInterrupt):
        status = _STATUS_CANCELLED
    else:
        status = _STATUS_ERROR
    error = "%s: %s" % (et.__name__, ev) if str(ev) else et.__name__
    return status, error[:_ERROR_MAX]


def _top(top_logprobs, top_ids):
    """(ids or None, logprobs, texts or None) of a hosted model's alternatives, the TOPK_MAX
    highest when there are more: a sequence of log-probs (with top_ids), a dict {id: logprob} or
    {text: logprob} (string keys, as providers return them: {"Hello": -0.1, ...}), or a list of
    {"token": text, "logprob": lp} objects (OpenAI's top_logprobs)."""
    if not top_logprobs:
        return None, [], None
    if isinstance(top_logprobs, dict):
        items = sorted(top_logprobs.items(), key=lambda kv: -kv[1])[:_lib.TOPK_MAX]
        keys = [k for k, _ in items]
        lps = [float(lp) for _, lp in items]
        if all(isinstance(k, (str, bytes)) for k in keys):
            return None, lps, [k.decode(errors="replace") if isinstance(k, bytes) else k
                               for k in keys]
        return keys, lps, None
    lps = list(top_logprobs)
    if lps and all(isinstance(x, dict) for x in lps):
        try:
            pairs = [(x["token"], float(x["logprob"])) for x in lps]
        except KeyError:
            raise ValueError("telltale: top_logprobs entries need \"token\" and \"logprob\"")\
                from None
        pairs = sorted(pairs, key=lambda p: -p[1])[:_lib.TOPK_MAX]
        return None, [lp for _, lp in pairs], [t for t, _ in pairs]
    ids = list(top_ids) if top_ids is not None else None
    if ids is not None and len(ids) != len(lps):
        raise ValueError("telltale: top_ids and top_logprobs differ in length")
    if len(lps) > _lib.TOPK_MAX:
        order = sorted(range(len(lps)), key=lambda i: -lps[i])[:_lib.TOPK_MAX]
        lps = [lps[i] for i in order]
        ids = [ids[i] for i in order] if ids is not None else None
    return ids, lps, None


class Response(_core.ResponseCore):
    """An open response (see Client.response). r.token(logits, chosen, *, text=None) and
    r.token_logprobs(chosen_logprob, top_logprobs=None, *, chosen=-1, top_ids=None, text=None)
    are the core's hot calls; each returns the Verdict. text is the token's text (the collector
    keeps it beside the id and returns the response's whole text); top_logprobs may be keyed by
    the alternatives' texts. Opened inside a step, the response belongs to that step (r.step)
    and takes its session."""

    __slots__ = ("_c", "session", "model", "params", "summary", "_ended", "id", "step",
                 "traceparent")

    def __init__(self, client, session, model, raise_on_halt, params):
        super().__init__()
        self._c = client
        self._r = None
        self.session = session
        self.step = None  # the step the response was opened in (set when it begins)
        self.model = model
        self.raise_on_halt = raise_on_halt
        self.params = params
        self.summary = None
        self._ended = False
        self.id = 0  # the response's id once begun (Client.score, /api/v1/responses/{id})
        self.traceparent = None  # a W3C traceparent (Client.response)

    def __enter__(self):
        h = self._c._h
        if h is None:
            raise Error(_lib.ESHUTDOWN, "response")
        r = ctypes.c_void_p()
        if self.params:
            arr, n, keep = _ctypes_core.attrs(self.params)
        else:
            arr, n = None, 0
        # A response opened inside a step belongs to it: its session and its parent step.
        step = self._c._current.get()
        self.step = step
        if self.session is None:
            self.session = step.session if step is not None else self._c.session
        tp = self.traceparent
        if tp is None and step is None and "opentelemetry.trace" in sys.modules:
            tp = _otel_traceparent()
        if tp is not None:
            if _lib.response_begin_ctx is None:
                raise Error(_lib.EINVAL, "response: the library predates tt_response_begin_ctx")
            st = None
            if step is not None:
                st = _lib.Step()
                st.id = step.id
            rc = _lib.response_begin_ctx(h, ctypes.byref(r),
                                         None if st is None else ctypes.byref(st), _enc(tp),
                                         _enc(self.session), _enc(self.model), arr, n)
            if rc == _lib.EINVAL:
                raise ValueError("telltale: invalid traceparent %r" % (tp,))
        elif step is not None and _lib.response_begin_in is not None:
            st = _lib.Step()
            st.id = step.id  # tt_response_begin_in reads the step's id only
            rc = _lib.response_begin_in(h, ctypes.byref(r), ctypes.byref(st), _enc(self.session),
                                        _enc(self.model), arr, n)
        else:
            rc = _lib.response_begin(h, ctypes.byref(r), _enc(self.session), _enc(self.model),
                                     arr, n)
        if rc or not r.value:
            raise Error(rc or _lib.EINVAL, "response")
        self._r = r.value
        if _lib.response_id is not None:
            self.id = _lib.response_id(self._r)
        return self

    def _rejected(self, rc):
        """A token call returned rc != 0: a refused token raises, a drop is a PASS."""
        if rc == _lib.EINVAL:
            raise ValueError("telltale: token rejected: %s" % _lib.strerror(rc).decode())
        return Verdict.PASS  # dropped (ring full, closing): counted in stats()

    def _halt(self):
        # A halted response is over: end it now, so that the summary (with the guard's or the
        # operator's reason) is recorded and available as exc.response.summary.
        summary = self.end()
        raise Halted(summary.reason if summary else "halted", self)

    def _device_token(self, logits, chosen, text):
        """token() of a 1-D tensor on an accelerator: its statistics are computed there."""
        st = _torch.device_stats(_torch.module_of(logits), logits.unsqueeze(0), [int(chosen)])
        return self._token_stats(st[0], text)

    @property
    def last(self):
        """TokenStats of the last token added."""
        return TokenStats(_lib.TokenStats.from_buffer_copy(self._stats))

    def end(self):
        """End the response (the `with` block does it): emits the summary, returns it."""
        r, self._r = self._r, None
        if r is None:
            return self.summary
        s = _lib.ResponseSummary()
        rc = _lib.response_end(r, ctypes.byref(s))
        self._ended = True
        if rc == 0:
            self.summary = Summary(s)
            if self.summary.verdict > self.verdict:
                self.verdict = self.summary.verdict
        return self.summary

    def __exit__(self, et, ev, tb):
        self.end()
        return False

    async def __aenter__(self):
        return self.__enter__()

    async def __aexit__(self, et, ev, tb):
        return self.__exit__(et, ev, tb)


def _otel_traceparent():
    """The W3C traceparent of the current OpenTelemetry span, or None: read through the
    opentelemetry API only when the application already imported it (nothing is imported or
    installed here, no global provider), for root steps and responses outside any step."""
    t = sys.modules.get("opentelemetry.trace")
    if t is None:
        return None
    try:
        ctx = t.get_current_span().get_span_context()
        if not ctx.is_valid:
            return None
        return "00-%032x-%016x-%02x" % (ctx.trace_id, ctx.span_id, int(ctx.trace_flags) & 0xFF)
    except Exception:  # an unexpected API: no context rather than a failed step
        return None


def span_id(step):
    """The span id (int) of a begun step, for the application's own child spans: its W3C form is
    "%016x" % span_id(step). 0 for a step not begun."""
    if _lib.step_span_id is None or step is None or not step.id:
        return 0
    st = _lib.Step()
    st.id = step.id
    return _lib.step_span_id(step._c._h, ctypes.byref(st))


_core.bind(_lib.path, {
    "step_type": Step, "verdicts": _VERDICTS, "severities": _SEVERITY, "metric_kinds": _METRIC,
    "step_kinds": _STEP, "level": _level, "row": _row, "top": _top, "exit_error": _exit_error,
    "blocked": Blocked, "otel_traceparent": _otel_traceparent, "error": Error})


# --- process hooks ------------------------------------------------------------------------------

def _close_all():
    """At interpreter exit: close every open client within its own deadline."""
    with _clients_lock:
        clients = list(_clients)
    for c in clients:
        try:
            c.close()
        except Exception:  # never stop the interpreter's exit
            pass


def _after_fork_child():
    # The C library resets each client in the child (new instance, empty rings, its own worker
    # at the first event). Python's side: locks held by a thread of the parent that does not
    # exist here would never be released, so they are new in the child.
    global _clients_lock
    _clients_lock = threading.Lock()
    pid = os.getpid()
    for c in list(_clients):
        c._lock = threading.Lock()
        c._pid = pid


atexit.register(_close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_child)
