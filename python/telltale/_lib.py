"""The ctypes layer over libtelltale: where the library is found, the C structures, and the
function prototypes. Nothing here is public; telltale/__init__.py wraps it.

Event functions (log, metric, steps, tokens) are bound through ctypes.PyDLL: the GIL stays
held during the call, which saves its release and re-acquisition (the C side never blocks,
allocates or makes a system call on those paths). Functions that may block (open, close,
flush) are bound through ctypes.CDLL, which releases the GIL while they run.
"""

import ctypes
import ctypes.util
import os

TOPK_MAX = 32

# Error codes of include/telltale.h.
OK = 0
ENOBUFS = -105
ESHUTDOWN = -108
ETIMEDOUT = -110
EINVAL = -22
EBLOCKED = -1000
E2BIG = -7


def _candidates():
    env = os.environ.get("TELLTALE_LIBRARY")
    if env:
        # An explicit choice is the only candidate: a wrong path is an error, not a fallback.
        return [env]
    here = os.path.dirname(os.path.abspath(__file__))
    out = [os.path.join(here, "libtelltale.so"), os.path.join(here, "libtelltale.so.0")]
    # The build tree: python/telltale/ -> ../../build/libtelltale.so
    out.append(os.path.join(os.path.dirname(os.path.dirname(here)), "build", "libtelltale.so"))
    found = ctypes.util.find_library("telltale")
    if found:
        out.append(found)
    out.append("libtelltale.so.0")
    return out


def _load():
    errors = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            errors.append("%s: no such file" % path)
            continue
        try:
            return path, ctypes.CDLL(path), ctypes.PyDLL(path)
        except OSError as e:
            errors.append("%s: %s" % (path, e))
    raise ImportError(
        "telltale: libtelltale not found (set TELLTALE_LIBRARY to its path, build it with "
        "`make`, or install it with `make install`):\n  " + "\n  ".join(errors))


class Attr(ctypes.Structure):
    class _V(ctypes.Union):
        _fields_ = [("s", ctypes.c_char_p), ("i", ctypes.c_int64), ("d", ctypes.c_double),
                    ("b", ctypes.c_int)]

    _fields_ = [("key", ctypes.c_char_p), ("type", ctypes.c_int), ("v", _V)]


ATTR_STR, ATTR_INT, ATTR_DOUBLE, ATTR_BOOL = 1, 2, 3, 4


class Step(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("parent", ctypes.c_uint64), ("start", ctypes.c_uint64)]


DROP_COUNT = 10


class Stats(ctypes.Structure):
    _fields_ = [("emitted", ctypes.c_uint64), ("sent", ctypes.c_uint64),
                ("acked", ctypes.c_uint64), ("possibly_delivered", ctypes.c_uint64),
                ("buffered", ctypes.c_uint64), ("spooled", ctypes.c_uint64),
                ("dropped", ctypes.c_uint64 * DROP_COUNT), ("dropped_total", ctypes.c_uint64),
                ("frames_sent", ctypes.c_uint64), ("bytes_sent", ctypes.c_uint64),
                ("reconnects", ctypes.c_uint64), ("connected", ctypes.c_uint64),
                ("inherited", ctypes.c_uint64), ("comply_blocked", ctypes.c_uint64),
                ("comply_flagged", ctypes.c_uint64), ("comply_masked", ctypes.c_uint64),
                ("tls_failures", ctypes.c_uint64)]


class TokenStats(ctypes.Structure):
    _fields_ = [("chosen", ctypes.c_int32), ("rank", ctypes.c_int32),
                ("logprob", ctypes.c_float), ("prob", ctypes.c_float),
                ("entropy", ctypes.c_float), ("margin", ctypes.c_float),
                ("nan_count", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("k", ctypes.c_uint32), ("topk_ids", ctypes.c_int32 * TOPK_MAX),
                ("topk_probs", ctypes.c_float * TOPK_MAX)]


class GuardPolicy(ctypes.Structure):
    _fields_ = [("token_min_prob", ctypes.c_float), ("window_min_confidence", ctypes.c_float),
                ("window", ctypes.c_uint32), ("response_min_confidence", ctypes.c_float),
                ("action", ctypes.c_uint32)]


class ResponseSummary(ctypes.Structure):
    _fields_ = [("tokens", ctypes.c_uint32), ("mean_logprob", ctypes.c_float),
                ("min_logprob", ctypes.c_float), ("perplexity", ctypes.c_float),
                ("mean_entropy", ctypes.c_float), ("low_confidence_share", ctypes.c_float),
                ("min_window_confidence", ctypes.c_float), ("verdict", ctypes.c_int),
                ("estimated", ctypes.c_uint32), ("reason", ctypes.c_char * 128)]


path, blocking, fast = _load()

P = ctypes.c_void_p
S = ctypes.c_char_p
SZ = ctypes.c_size_t
I = ctypes.c_int
PTR_ATTR = ctypes.POINTER(Attr)


def _bind(dll, name, restype, argtypes, required=True):
    fn = getattr(dll, name, None)
    if fn is None:
        if required:
            raise ImportError("telltale: %s lacks %s (a library older than this package?)"
                              % (path, name))
        return None
    fn.restype = restype
    fn.argtypes = argtypes
    return fn


strerror = _bind(fast, "tt_strerror", S, [I])
version = _bind(fast, "tt_version", S, [])
config_new = _bind(fast, "tt_config_new", I, [ctypes.POINTER(P)])
config_set = _bind(fast, "tt_config_set", I, [P, S, S])
config_error = _bind(fast, "tt_config_error", S, [P])
config_free = _bind(fast, "tt_config_free", None, [P])
open_ = _bind(blocking, "tt_open", I, [ctypes.POINTER(P), P])
close = _bind(blocking, "tt_close", I, [P, ctypes.c_uint32])
flush = _bind(blocking, "tt_flush", I, [P, ctypes.c_uint32])
log = _bind(fast, "tt_log", I, [P, S, I, S, PTR_ATTR, SZ])
metric = _bind(fast, "tt_metric", I, [P, S, I, S, ctypes.c_double, S, PTR_ATTR, SZ])
PTR_STEP = ctypes.POINTER(Step)
step_begin = _bind(fast, "tt_step_begin", I, [P, PTR_STEP, PTR_STEP, I, S, S, S])
step_end = _bind(fast, "tt_step_end", I, [P, PTR_STEP, I, ctypes.c_int64, S])
stats_get = _bind(fast, "tt_stats_get", I, [P, ctypes.POINTER(Stats), SZ])
drop_cause_name = _bind(fast, "tt_drop_cause_name", S, [I])
instance_id = _bind(fast, "tt_instance_id", I, [P, ctypes.c_char_p])
connection_error = _bind(fast, "tt_connection_error", I, [P, ctypes.c_char_p, SZ])
PTR_TS = ctypes.POINTER(TokenStats)
token_stats_compute = _bind(fast, "tt_token_stats_compute", I,
                            [P, SZ, SZ, I, ctypes.c_int32, ctypes.c_uint32, PTR_TS])

# The response and guard API (CONTRACT.md). Optional so that the rest works with a library
# built before it; Client.response() says clearly when it is missing.
PTR_I32 = ctypes.POINTER(ctypes.c_int32)
PTR_F32 = ctypes.POINTER(ctypes.c_float)
PTR_VERDICT = ctypes.POINTER(ctypes.c_int)
response_begin = _bind(fast, "tt_response_begin", I, [P, ctypes.POINTER(P), S, S, PTR_ATTR, SZ],
                       required=False)
response_token = _bind(fast, "tt_response_token", I,
                       [P, P, SZ, SZ, I, ctypes.c_int32, PTR_VERDICT, PTR_TS], required=False)
response_token_logprobs = _bind(fast, "tt_response_token_logprobs", I,
                                [P, ctypes.c_int32, ctypes.c_float, PTR_I32, PTR_F32, SZ,
                                 PTR_VERDICT, PTR_TS], required=False)
response_end = _bind(fast, "tt_response_end", I, [P, ctypes.POINTER(ResponseSummary)],
                     required=False)
guard_policy_set = _bind(fast, "tt_guard_policy_set", I, [P, ctypes.POINTER(GuardPolicy)],
                         required=False)
guard_policy_get = _bind(fast, "tt_guard_policy_get", I, [P, ctypes.POINTER(GuardPolicy)],
                         required=False)
# Compliance (since 0.3); optional.
comply_policy_set = _bind(fast, "tt_comply_policy_set", I,
                          [P, ctypes.c_char_p, SZ, ctypes.c_char_p, SZ], required=False)
HAVE_RESPONSES = response_begin is not None and response_end is not None
# Scores of responses (since 0.2); optional like the response API.
score = _bind(fast, "tt_score", I, [P, S, ctypes.c_uint64, S, ctypes.c_double, PTR_ATTR, SZ],
              required=False)
response_id = _bind(fast, "tt_response_id", ctypes.c_uint64, [P], required=False)
# Token text beside each id (since 0.2).
PTR_CSTR = ctypes.POINTER(ctypes.c_char_p)
response_token_text = _bind(fast, "tt_response_token_text", I,
                            [P, P, SZ, SZ, I, ctypes.c_int32, S, PTR_VERDICT, PTR_TS],
                            required=False)
response_token_logprobs_text = _bind(fast, "tt_response_token_logprobs_text", I,
                                     [P, ctypes.c_int32, S, ctypes.c_float, PTR_I32, PTR_CSTR,
                                      PTR_F32, SZ, PTR_VERDICT, PTR_TS], required=False)
# A response opened inside a step (since 0.2).
response_begin_in = _bind(fast, "tt_response_begin_in", I,
                          [P, ctypes.POINTER(P), PTR_STEP, S, S, PTR_ATTR, SZ], required=False)
# One decode step over a batch, and tokens from statistics computed elsewhere (since 0.4).
response_token_batch = _bind(fast, "tt_response_token_batch", I,
                             [ctypes.POINTER(P), SZ, P, SZ, SZ, SZ, I, PTR_I32, PTR_VERDICT,
                              PTR_TS], required=False)
response_token_stats = _bind(fast, "tt_response_token_stats", I,
                             [P, PTR_TS, S, PTR_VERDICT, PTR_TS], required=False)
# W3C trace context (since 0.5); optional: without it a traceparent is refused.
step_begin_ctx = _bind(fast, "tt_step_begin_ctx", I, [P, PTR_STEP, PTR_STEP, S, I, S, S, S],
                       required=False)
response_begin_ctx = _bind(fast, "tt_response_begin_ctx", I,
                           [P, ctypes.POINTER(P), PTR_STEP, S, S, S, PTR_ATTR, SZ],
                           required=False)
step_span_id = _bind(fast, "tt_step_span_id", ctypes.c_uint64, [P, PTR_STEP], required=False)
traceparent_check = _bind(fast, "tt_traceparent_check", I, [S], required=False)
