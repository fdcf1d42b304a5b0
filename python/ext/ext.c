/*
 * ext.c - telltale._ext: the compiled hot path of the Python package.
 *
 * The Python API (python/telltale/__init__.py) builds on three small base classes, ClientCore,
 * StepCore and ResponseCore, that own the handles and implement the calls made per event: log,
 * metric, step begin/end (a step's __enter__/__exit__), and a response's token and
 * token_logprobs. This module is one implementation of them, calling libtelltale straight from
 * the CPython API; python/telltale/_ctypes_core.py is the other, the fallback where this module
 * cannot be built, with the same behaviour (the Python tests run against both). Everything else
 * (open, close, flush, stats, responses' begin and end, the guard) stays in Python over ctypes,
 * so new API can be written there first and moved here only when it is hot.
 *
 * The library is the one ctypes loaded: bind(path, ns) opens it again with RTLD_NOLOAD (the same
 * loaded object, never a second copy) and looks its functions up by name, so that handles from
 * ctypes calls (tt_open, tt_response_begin) are valid here. The module needs libtelltale's
 * header, not the library, to build.
 *
 * Hot-path rules: arguments are converted without intermediate Python objects (attribute keys
 * and str values are passed as the UTF-8 that CPython caches in the str; ints, floats and bools
 * go into tt_attr directly; only an object that is none of these is turned into its str()). A
 * logits row is read in place through the buffer protocol (pointer, length, stride). The GIL is
 * held for the calls that take tens of nanoseconds (releasing it costs more) and released only
 * for a token row long enough that the statistics take microseconds; while it is released the
 * response is marked busy, so that no other thread ends it under the call.
 */
#define PY_SSIZE_T_CLEAN
/* CPython's inline accessors (PyTuple_GET_ITEM, PyUnicode_DATA, ...) assert their argument's
 * type unless NDEBUG is set, as setuptools sets it from the interpreter's flags: both builds of
 * this module (mk/python.mk, python/_backend) set it here. The module itself has no assert. */
#ifndef NDEBUG
#define NDEBUG
#endif
#include <Python.h>
#include <structmember.h>

#include <dlfcn.h>
#include <stdint.h>

#include "telltale.h"

/* The version of the contract between this module and python/telltale/__init__.py. */
#define INTERFACE 3
/* Rows of at least this many elements are computed with the GIL released (about 2 us of work;
 * the release and re-acquisition cost about 0.1 us). */
#define GIL_RELEASE_MIN_ELEMS 8192
/* Attributes converted on the stack; more (the library accepts 64) use the heap. */
#define ATTRS_STACK 16
#define TOPK_MAX TT_TOPK_MAX

PyMODINIT_FUNC PyInit__ext(void);

/* --- the library's functions, looked up in the library that ctypes loaded ------------------- */

static struct {
    __typeof__(tt_log) *log;
    __typeof__(tt_metric) *metric;
    __typeof__(tt_step_begin) *step_begin;
    __typeof__(tt_step_end) *step_end;
    __typeof__(tt_response_token) *response_token;
    __typeof__(tt_response_token_logprobs) *response_token_logprobs;
    /* since 0.2; NULL in an older library: text is then left out */
    __typeof__(tt_response_token_text) *response_token_text;
    __typeof__(tt_response_token_logprobs_text) *response_token_logprobs_text;
    /* since 0.4; NULL in an older library: batches and device tensors are then refused */
    __typeof__(tt_response_token_batch) *response_token_batch;
    __typeof__(tt_response_token_stats) *response_token_stats;
    /* since 0.5; NULL in an older library: a traceparent is then refused */
    __typeof__(tt_step_begin_ctx) *step_begin_ctx;
} lib;

/* What bind() receives from the Python side (strong references, for the module's life). */
static struct {
    PyObject *step_type;    /* telltale.Step, a subclass of StepCore */
    PyObject *verdicts;     /* (Verdict.PASS, Verdict.FLAG, Verdict.HALT) */
    PyObject *severities;   /* {"info": 9, ...} */
    PyObject *metric_kinds; /* {"gauge": 2, ...} */
    PyObject *step_kinds;   /* {"tool": 2, ...} */
    PyObject *level;        /* _level(level): the slow path of a severity */
    PyObject *row; /* _row(a): (ptr, n, stride, dtype) of what the buffer path refuses, or None
                      for a tensor whose statistics are computed on its device (_device_token) */
    PyObject *top; /* _top(top_logprobs, top_ids): (ids or None, logprobs, texts or None), <= 32 */
    PyObject *exit_error;       /* _exit_error(et, ev): (status, error) of a step left by a raise */
    PyObject *blocked;          /* telltale.Blocked(kind, name): a step a compliance rule blocked */
    PyObject *otel_traceparent; /* _otel_traceparent(): the current OpenTelemetry span or None */
    PyObject *error;            /* telltale.Error(code, what) */
} py;

static PyObject *s_session, *s_level, *s_message, *s_kind, *s_unit, *s_name, *s_value, *s_query,
    *s_logits, *s_chosen, *s_chosen_logprob, *s_top_logprobs, *s_top_ids, *s_rejected, *s_halt,
    *s_text, *s_device_token, *s_traceparent, *s_otel_trace;

/* --- argument helpers ------------------------------------------------------------------------ */

/* Whether keyword name equals the interned string want (usually the same object). */
static int kw_is(PyObject *name, PyObject *want)
{
    return name == want || (PyUnicode_GET_LENGTH(name) == PyUnicode_GET_LENGTH(want) &&
                            PyUnicode_Compare(name, want) == 0);
}

/*
 * Sort the arguments of a vectorcall into the named parameters out[0..nnames) (the first npos
 * may be positional; unset ones stay NULL) and the other keywords, whose indexes into kwnames
 * go to extra[] (*nextra of them; NULL extra: other keywords are an error). Borrowed references.
 */
static int parse_args(const char *fn, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                      PyObject *const *names, int nnames, int npos, PyObject **out,
                      Py_ssize_t *extra, Py_ssize_t *nextra)
{
    if (nargs > npos) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d positional arguments (%zd given)", fn,
                     npos, nargs);
        return -1;
    }
    for (int i = 0; i < nnames; i++) {
        out[i] = i < nargs ? args[i] : NULL;
    }
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, k);
        int i = 0;
        while (i < nnames && !kw_is(name, names[i])) {
            i++;
        }
        if (i < nnames) {
            if (out[i]) {
                PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%U'", fn,
                             name);
                return -1;
            }
            out[i] = args[nargs + k];
        } else if (extra) {
            extra[(*nextra)++] = k;
        } else {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fn, name);
            return -1;
        }
    }
    return 0;
}

/* The UTF-8 text of a str: an ASCII str holds it inline, NUL-terminated (no call needed);
 * another str caches its UTF-8 at the first request. NULL with an exception on failure. */
static inline const char *utf8_of(PyObject *s)
{
    if (PyUnicode_IS_COMPACT_ASCII(s)) {
        return (const char *)PyUnicode_DATA(s);
    }
    return PyUnicode_AsUTF8AndSize(s, NULL);
}

/*
 * The UTF-8 text of a str (CPython caches it in the object), the bytes of a bytes object, NULL
 * for None; any other object through its str(), kept in *tmp until the caller releases it.
 * surrogates: replace its unencodable characters instead of failing (error texts).
 */
static int text_of(PyObject *o, const char **out, PyObject **tmp, int surrogates)
{
    *tmp = NULL;
    if (o == NULL || o == Py_None) {
        *out = NULL;
        return 0;
    }
    if (PyBytes_Check(o)) {
        *out = PyBytes_AS_STRING(o);
        return 0;
    }
    if (!PyUnicode_Check(o)) {
        o = *tmp = PyObject_Str(o);
        if (!o) {
            return -1;
        }
    }
    *out = utf8_of(o);
    if (*out) {
        return 0;
    }
    if (!surrogates) {
        return -1;
    }
    PyErr_Clear();
    PyObject *b = PyUnicode_AsEncodedString(o, "utf-8", "replace");
    Py_XDECREF(*tmp);
    *tmp = b;
    if (!b) {
        return -1;
    }
    *out = PyBytes_AS_STRING(b);
    return 0;
}

/* A C int from a Python int (a severity, a kind, a chosen id). */
static int int_of(PyObject *o, int *out)
{
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (v < INT32_MIN || v > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "telltale: value out of the 32-bit range");
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* Attributes of one call, converted in place from the call's keyword arguments. */
typedef struct attrs {
    tt_attr *a;
    PyObject **tmp; /* a str() made for a value, released by attrs_fini */
    Py_ssize_t n;
    tt_attr a_stack[ATTRS_STACK];
    PyObject *tmp_stack[ATTRS_STACK];
} attrs;

static void attrs_fini(attrs *at)
{
    for (Py_ssize_t i = 0; i < at->n; i++) {
        Py_XDECREF(at->tmp[i]);
    }
    if (at->a != at->a_stack) {
        PyMem_Free(at->a);
        PyMem_Free(at->tmp);
    }
}

/* One value: bool, a 64-bit int, float, else text (str, bytes, or str() of anything else, an
 * int beyond 64 bits included), as the ctypes implementation does. */
static int attr_value(tt_attr *a, PyObject **tmp, PyObject *v)
{
    if (PyBool_Check(v)) {
        a->type = TT_ATTR_BOOL;
        a->v.b = v == Py_True;
        return 0;
    }
    if (PyLong_Check(v)) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (x == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (!overflow) {
            a->type = TT_ATTR_INT;
            a->v.i = x;
            return 0;
        }
    } else if (PyFloat_Check(v)) {
        a->type = TT_ATTR_DOUBLE;
        a->v.d = PyFloat_AS_DOUBLE(v);
        return 0;
    }
    a->type = TT_ATTR_STR;
    return text_of(v, &a->v.s, tmp, 0);
}

/* An exact int of one digit (most values), read without a call; 0 for a wider one (the
 * general path converts it: a call here would make the fast path save its registers). */
static inline int int_fast(PyObject *v, long long *x)
{
#if PY_VERSION_HEX >= 0x030C0000
    if (PyUnstable_Long_IsCompact((PyLongObject *)v)) {
        *x = (long long)PyUnstable_Long_CompactValue((PyLongObject *)v);
        return 1;
    }
#else
    Py_ssize_t size = Py_SIZE(v);
    if (size >= -1 && size <= 1) {
        *x = size ? size * (long long)((PyLongObject *)v)->ob_digit[0] : 0;
        return 1;
    }
#endif
    return 0;
}

/* The inline text of a compact ASCII str (NUL-terminated), which follows its header. */
static inline const char *ascii_data(PyObject *s)
{
    return (const char *)((PyASCIIObject *)s + 1);
}

/* An exact str whose UTF-8 text is its inline ASCII, else NULL. */
static inline const char *ascii_of(PyObject *s)
{
    return Py_IS_TYPE(s, &PyUnicode_Type) && PyUnicode_IS_COMPACT_ASCII(s) ? ascii_data(s) : NULL;
}

/*
 * Keyword tuples known to name only attributes of a call, but for at most one optional named
 * parameter (level for log, unit for metric): every key an exact ASCII str, none another of
 * the call's named parameters. A call site passes the same constant tuple each time, so a hit
 * spares the checks of its keys. Direct-mapped by address; strong references, so a tuple in
 * the cache is never freed and its address never names another tuple.
 */
#define KW_CACHE 8

typedef struct kw_cache {
    PyObject *t[KW_CACHE];
    Py_ssize_t opt[KW_CACHE]; /* the index of the optional parameter in t, or -1 */
} kw_cache;

static kw_cache log_kw, metric_kw;

/* kw_attrs_only's check of a tuple not in the cache, which it then enters. */
static __attribute__((noinline)) Py_ssize_t kw_check(kw_cache *kc, size_t slot, PyObject *kwnames,
                                                     Py_ssize_t nkw, PyObject *const *names,
                                                     int nnames, PyObject *opt)
{
    Py_ssize_t at = -1;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, k);
        if (!ascii_of(name)) {
            return -2;
        }
        if (kw_is(name, opt)) {
            at = k;
            continue;
        }
        for (int i = 0; i < nnames; i++) {
            if (kw_is(name, names[i])) {
                return -2;
            }
        }
    }
    Py_XSETREF(kc->t[slot], Py_NewRef(kwnames)); /* a tuple of str: no Python code runs */
    kc->opt[slot] = at;
    return at;
}

/* The index in kwnames[0..nkw) of the keyword opt (-1: absent) when the others all name
 * attributes (none of names[0..nnames), which include opt); -2 when any does not. */
static inline Py_ssize_t kw_attrs_only(kw_cache *kc, PyObject *kwnames, Py_ssize_t nkw,
                                       PyObject *const *names, int nnames, PyObject *opt)
{
    size_t slot = ((uintptr_t)kwnames >> 6) & (KW_CACHE - 1);
    if (kc->t[slot] == kwnames) {
        return kc->opt[slot];
    }
    return kw_check(kc, slot, kwnames, nkw, names, nnames, opt);
}

/*
 * The fast path of an event call's attributes: the keywords kwnames[0..nkw) but skip (values
 * vals[]), which kw_attrs_only found to name attributes, when each value is of an exact usual
 * type (ASCII str, int within 64 bits, float, bool). They are converted into a[] as attrs_init
 * would, with no call into the interpreter and nothing to release. Returns their count, or -1
 * (no exception) when any needs the general path.
 */
static inline __attribute__((always_inline)) Py_ssize_t
attrs_fast(tt_attr *a, PyObject *const *vals, PyObject *kwnames, Py_ssize_t nkw, Py_ssize_t skip)
{
    Py_ssize_t n = 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        if (k == skip) {
            continue;
        }
        PyObject *v = vals[k];
        tt_attr *at = &a[n++];
        at->key = ascii_data(PyTuple_GET_ITEM(kwnames, k));
        PyTypeObject *t = Py_TYPE(v);
        if (t == &PyUnicode_Type && PyUnicode_IS_COMPACT_ASCII(v)) {
            at->type = TT_ATTR_STR;
            at->v.s = ascii_data(v);
        } else if (t == &PyLong_Type) {
            long long x;
            if (!int_fast(v, &x)) {
                return -1; /* wider than a digit: the general path */
            }
            at->type = TT_ATTR_INT;
            at->v.i = x;
        } else if (t == &PyFloat_Type) {
            at->type = TT_ATTR_DOUBLE;
            at->v.d = PyFloat_AS_DOUBLE(v);
        } else if (t == &PyBool_Type) {
            at->type = TT_ATTR_BOOL;
            at->v.b = v == Py_True;
        } else {
            return -1;
        }
    }
    return n;
}

/* The attributes named by kwnames[idx[0..n)], values in args[nargs + idx[i]]. */
static int attrs_init(attrs *at, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                      const Py_ssize_t *idx, Py_ssize_t n)
{
    at->n = 0;
    at->a = at->a_stack;
    at->tmp = at->tmp_stack;
    if (n > ATTRS_STACK) {
        at->a = PyMem_Malloc((size_t)n * sizeof *at->a);
        at->tmp = PyMem_Malloc((size_t)n * sizeof *at->tmp);
        if (!at->a || !at->tmp) {
            PyMem_Free(at->a);
            PyMem_Free(at->tmp);
            at->a = at->a_stack;
            at->tmp = at->tmp_stack;
            PyErr_NoMemory();
            return -1;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        tt_attr *a = &at->a[i];
        at->tmp[i] = NULL;
        at->n = i + 1;
        a->key = utf8_of(PyTuple_GET_ITEM(kwnames, idx[i]));
        if (!a->key || attr_value(a, &at->tmp[i], args[nargs + idx[i]]) < 0) {
            return -1;
        }
    }
    return 0;
}

/* A code of a name table ({"info": 9, ...}) for an exact str; -1 when absent. */
static long table_code(PyObject *table, PyObject *key)
{
    PyObject *v = PyDict_GetItemWithError(table, key);
    return v ? PyLong_AsLong(v) : -1;
}

/* --- ClientCore -------------------------------------------------------------------------- */

typedef struct client_core {
    PyObject_HEAD tt_client *h; /* NULL before open and after close */
    PyObject *session;          /* the default session, as given (str, bytes, None, ...) */
    PyObject *session_text;     /* what is passed for it: a str or bytes, or NULL for None */
    PyObject *current;          /* contextvars.ContextVar: the innermost open Step */
} client_core;

static PyTypeObject client_core_type;

static int client_traverse(client_core *self, visitproc visit, void *arg)
{
    Py_VISIT(self->session);
    Py_VISIT(self->session_text);
    Py_VISIT(self->current);
    return 0;
}

static int client_clear(client_core *self)
{
    Py_CLEAR(self->session);
    Py_CLEAR(self->session_text);
    Py_CLEAR(self->current);
    return 0;
}

static void client_dealloc(client_core *self)
{
    PyObject_GC_UnTrack(self);
    client_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A C handle as Python sees it: an int address, or None for NULL (both cores agree on this). */
static PyObject *handle_get(void *h)
{
    if (!h) {
        Py_RETURN_NONE;
    }
    return PyLong_FromVoidPtr(h);
}

static int handle_parse(PyObject *v, void **out)
{
    *out = NULL;
    if (v != NULL && v != Py_None) {
        *out = PyLong_AsVoidPtr(v);
        if (!*out && PyErr_Occurred()) {
            return -1;
        }
    }
    return 0;
}

static PyObject *client_get_h(client_core *self, void *closure)
{
    (void)closure;
    return handle_get(self->h);
}

static int client_set_h(client_core *self, PyObject *v, void *closure)
{
    (void)closure;
    void *p;
    if (handle_parse(v, &p) != 0) {
        return -1;
    }
    self->h = p;
    return 0;
}

static PyObject *client_get_session(client_core *self, void *closure)
{
    (void)closure;
    return Py_NewRef(self->session ? self->session : Py_None);
}

/* The text passed for a session object: itself (str, bytes), its str(), or NULL for None. */
static int session_text(PyObject *v, PyObject **out)
{
    *out = NULL;
    if (v == NULL || v == Py_None) {
        return 0;
    }
    if (PyUnicode_Check(v) || PyBytes_Check(v)) {
        *out = Py_NewRef(v);
        return 0;
    }
    *out = PyObject_Str(v);
    return *out ? 0 : -1;
}

static int client_set_session(client_core *self, PyObject *v, void *closure)
{
    (void)closure;
    PyObject *text;
    if (session_text(v, &text) < 0) {
        return -1;
    }
    Py_XSETREF(self->session, Py_NewRef(v ? v : Py_None));
    Py_XSETREF(self->session_text, text);
    return 0;
}

/* The session of one event: the call's, else the client's default. */
static int event_session(client_core *self, PyObject *arg, const char **out, PyObject **tmp)
{
    if (arg == NULL || arg == Py_None) {
        *tmp = NULL;
        return text_of(self->session_text, out, tmp, 0);
    }
    return text_of(arg, out, tmp, 0);
}

/* The client's default session as event_session gives it, read without a call: 1 and *out
 * (NULL for none), or 0 when it needs event_session (a str that is not ASCII, another type). */
static inline int session_fast(client_core *self, const char **out)
{
    PyObject *s = self->session_text;
    if (!s) {
        *out = NULL;
        return 1;
    }
    if (PyBytes_CheckExact(s)) {
        *out = PyBytes_AS_STRING(s);
        return 1;
    }
    return (*out = ascii_of(s)) != NULL;
}

/* The severity of a level given as the exact str of a name ("warning"); -1 when it needs the
 * general path (another object, an unknown name). */
static inline long level_fast(PyObject *v)
{
    if (!Py_IS_TYPE(v, &PyUnicode_Type)) {
        return -1;
    }
    long code = table_code(py.severities, v);
    if (code < 0 && PyErr_Occurred()) {
        PyErr_Clear(); /* the general path raises what it must */
    }
    return code;
}

/* The int an event call returns: its code; 0, the usual one, without a call. */
static PyObject *int_zero;

static inline PyObject *rc_object(int rc)
{
    return rc == 0 ? Py_NewRef(int_zero) : PyLong_FromLong(rc);
}

/* The named parameters of log and metric (set by intern_names). */
static PyObject *log_names[3], *metric_names[5];

/* log(message, level="info", *, session=None, **attrs) -> int: the general path of any call
 * (client_log is the fast one). */
static __attribute__((noinline)) PyObject *log_general(client_core *self, PyObject *const *args,
                                                       size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *const *names = log_names, *v[3];
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0, nextra = 0;
    Py_ssize_t extra_stack[ATTRS_STACK], *extra = extra_stack;
    PyObject *result = NULL, *stmp = NULL;
    attrs at; /* no initializer: zeroing its arrays would cost more than the call */
    at.n = 0;
    at.a = at.a_stack;
    at.tmp = at.tmp_stack;
    if (nkw > ATTRS_STACK && !(extra = PyMem_Malloc((size_t)nkw * sizeof *extra))) {
        return PyErr_NoMemory();
    }
    if (parse_args("log", args, nargs, kwnames, names, 3, 2, v, extra, &nextra) < 0) {
        goto out;
    }
    if (!v[0] || !PyUnicode_Check(v[0])) {
        PyErr_SetString(PyExc_TypeError, "telltale: log() needs a str message");
        goto out;
    }
    int sev = TT_INFO;
    if (v[1]) {
        long code = PyUnicode_CheckExact(v[1]) ? table_code(py.severities, v[1]) : -1;
        if (code < 0) {
            if (PyErr_Occurred()) {
                goto out;
            }
            PyObject *r = PyObject_CallOneArg(py.level, v[1]);
            int bad = !r || int_of(r, &sev) < 0;
            Py_XDECREF(r);
            if (bad) {
                goto out;
            }
        } else {
            sev = (int)code;
        }
    }
    const char *msg = utf8_of(v[0]), *session;
    if (!msg || event_session(self, v[2], &session, &stmp) < 0 ||
        attrs_init(&at, args, nargs, kwnames, extra, nextra) < 0) {
        goto out;
    }
    result = PyLong_FromLong(lib.log(self->h, session, (tt_severity)sev, msg, at.a, (size_t)at.n));
out:
    attrs_fini(&at);
    Py_XDECREF(stmp);
    if (extra != extra_stack) {
        PyMem_Free(extra);
    }
    return result;
}

/* metric(name, value, kind="gauge", *, unit=None, session=None, **attrs) -> int: the general
 * path of any call (client_metric is the fast one). */
static __attribute__((noinline)) PyObject *metric_general(client_core *self, PyObject *const *args,
                                                          size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *const *names = metric_names, *v[5];
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0, nextra = 0;
    Py_ssize_t extra_stack[ATTRS_STACK], *extra = extra_stack;
    PyObject *result = NULL, *stmp = NULL, *utmp = NULL;
    attrs at; /* no initializer: zeroing its arrays would cost more than the call */
    at.n = 0;
    at.a = at.a_stack;
    at.tmp = at.tmp_stack;
    if (nkw > ATTRS_STACK && !(extra = PyMem_Malloc((size_t)nkw * sizeof *extra))) {
        return PyErr_NoMemory();
    }
    if (parse_args("metric", args, nargs, kwnames, names, 5, 3, v, extra, &nextra) < 0) {
        goto out;
    }
    if (!v[0] || !v[1] || !PyUnicode_Check(v[0])) {
        PyErr_SetString(PyExc_TypeError, "telltale: metric() needs a str name and a value");
        goto out;
    }
    int kind = TT_GAUGE;
    if (v[2]) {
        long code = PyUnicode_CheckExact(v[2]) ? table_code(py.metric_kinds, v[2]) : -2;
        if (code == -1) {
            if (!PyErr_Occurred()) {
                PyErr_Format(PyExc_ValueError,
                             "telltale: unknown metric kind %R (counter, gauge, histogram)", v[2]);
            }
            goto out;
        }
        if (code == -2 ? int_of(v[2], &kind) < 0 : (kind = (int)code, 0)) {
            goto out;
        }
    }
    double value = PyFloat_AsDouble(v[1]);
    const char *name = utf8_of(v[0]), *unit, *session;
    if ((value == -1.0 && PyErr_Occurred()) || !name || text_of(v[3], &unit, &utmp, 0) < 0 ||
        event_session(self, v[4], &session, &stmp) < 0 ||
        attrs_init(&at, args, nargs, kwnames, extra, nextra) < 0) {
        goto out;
    }
    result = PyLong_FromLong(
        lib.metric(self->h, session, (tt_metric_kind)kind, name, value, unit, at.a, (size_t)at.n));
out:
    attrs_fini(&at);
    Py_XDECREF(stmp);
    Py_XDECREF(utmp);
    if (extra != extra_stack) {
        PyMem_Free(extra);
    }
    return result;
}

/* log(...): the usual call, log("an ASCII message", key=value, ...) with the client's session,
 * converted with no call into the interpreter (a level= keyword of a known name included);
 * anything else takes log_general, which gives the same event or raises. */
static PyObject *client_log(client_core *self, PyObject *const *args, size_t nargsf,
                            PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0, at = -1;
    const char *msg, *session;
    if (PyVectorcall_NARGS(nargsf) == 1 && nkw <= ATTRS_STACK && (msg = ascii_of(args[0])) &&
        session_fast(self, &session) &&
        (!nkw || (at = kw_attrs_only(&log_kw, kwnames, nkw, log_names, 3, s_level)) > -2)) {
        tt_attr a[ATTRS_STACK];
        long sev = at < 0 ? TT_INFO : level_fast(args[1 + at]);
        Py_ssize_t n = sev < 0 ? -1 : attrs_fast(a, args + 1, kwnames, nkw, at);
        if (n >= 0) {
            return rc_object(lib.log(self->h, session, (tt_severity)sev, msg, a, (size_t)n));
        }
    }
    return log_general(self, args, nargsf, kwnames);
}

/* metric(...): the usual call, metric("an ASCII name", a float, unit="ASCII", key=value, ...),
 * as client_log; anything else takes metric_general. */
static PyObject *client_metric(client_core *self, PyObject *const *args, size_t nargsf,
                               PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0, at = -1;
    const char *name, *session, *unit = NULL;
    if (PyVectorcall_NARGS(nargsf) == 2 && nkw <= ATTRS_STACK && (name = ascii_of(args[0])) &&
        Py_IS_TYPE(args[1], &PyFloat_Type) && session_fast(self, &session) &&
        (!nkw || (at = kw_attrs_only(&metric_kw, kwnames, nkw, metric_names, 5, s_unit)) > -2) &&
        (at < 0 || (unit = ascii_of(args[2 + at])) != NULL)) {
        tt_attr a[ATTRS_STACK];
        Py_ssize_t n = attrs_fast(a, args + 2, kwnames, nkw, at);
        if (n >= 0) {
            return rc_object(lib.metric(self->h, session, TT_GAUGE, name,
                                        PyFloat_AS_DOUBLE(args[1]), unit, a, (size_t)n));
        }
    }
    return metric_general(self, args, nargsf, kwnames);
}

/* --- StepCore ---------------------------------------------------------------------------- */

typedef struct step_core {
    PyObject_HEAD PyObject *client; /* the ClientCore */
    tt_step st;                     /* filled by tt_step_begin */
    int kind;
    int status;             /* _status: TT_STATUS_* set by fail() */
    long long result_bytes; /* -1: unknown */
    PyObject *name, *query, *session, *parent, *error, *token;
    PyObject *traceparent; /* a W3C traceparent (str) or None */
    PyObject *weakrefs;
} step_core;

static PyTypeObject step_core_type;

static int step_traverse(step_core *self, visitproc visit, void *arg)
{
    Py_VISIT(self->client);
    Py_VISIT(self->name);
    Py_VISIT(self->query);
    Py_VISIT(self->session);
    Py_VISIT(self->parent);
    Py_VISIT(self->error);
    Py_VISIT(self->token);
    Py_VISIT(self->traceparent);
    return 0;
}

static int step_clear(step_core *self)
{
    Py_CLEAR(self->client);
    Py_CLEAR(self->name);
    Py_CLEAR(self->query);
    Py_CLEAR(self->session);
    Py_CLEAR(self->parent);
    Py_CLEAR(self->error);
    Py_CLEAR(self->token);
    Py_CLEAR(self->traceparent);
    return 0;
}

static void step_dealloc(step_core *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakrefs) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    step_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *step_get_id(step_core *self, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong(self->st.id);
}

/* step(kind="other", name=None, query=None, *, session=None, traceparent=None) -> Step */
static PyObject *client_step(client_core *self, PyObject *const *args, size_t nargsf,
                             PyObject *kwnames)
{
    PyObject *names[5] = {s_kind, s_name, s_query, s_session, s_traceparent}, *v[5];
    if (parse_args("step", args, PyVectorcall_NARGS(nargsf), kwnames, names, 5, 3, v, NULL, NULL) <
        0) {
        return NULL;
    }
    int kind = TT_STEP_OTHER;
    PyObject *name = v[1];
    if (v[0]) {
        long code = PyUnicode_CheckExact(v[0]) ? table_code(py.step_kinds, v[0]) : -2;
        if (code == -1 || v[0] == Py_None) {
            if (!PyErr_Occurred()) {
                PyObject *sep = PyUnicode_FromString(", ");
                PyObject *all = sep ? PyUnicode_Join(sep, py.step_kinds) : NULL;
                if (all) {
                    PyErr_Format(PyExc_ValueError, "telltale: unknown step kind %R (%U)", v[0],
                                 all);
                }
                Py_XDECREF(sep);
                Py_XDECREF(all);
            }
            return NULL;
        }
        if (code == -2 ? int_of(v[0], &kind) < 0 : (kind = (int)code, 0)) {
            return NULL;
        }
    }
    if (!name || name == Py_None) {
        name = v[0] && PyUnicode_CheckExact(v[0]) ? v[0] : NULL;
    }
    PyTypeObject *t = (PyTypeObject *)py.step_type;
    step_core *s = (step_core *)t->tp_alloc(t, 0);
    if (!s) {
        return NULL;
    }
    s->client = Py_NewRef(self);
    s->kind = kind;
    s->status = TT_STATUS_OK;
    s->result_bytes = -1;
    s->name = name ? Py_NewRef(name) : PyUnicode_FromString(v[0] ? "step" : "other");
    s->query = Py_NewRef(v[2] ? v[2] : Py_None);
    s->session = Py_NewRef(v[3] ? v[3] : Py_None);
    s->parent = Py_NewRef(Py_None);
    s->error = Py_NewRef(Py_None);
    s->token = Py_NewRef(Py_None);
    s->traceparent = Py_NewRef(v[4] ? v[4] : Py_None);
    if (!s->name) {
        Py_DECREF(s);
        return NULL;
    }
    return (PyObject *)s;
}

static PyObject *step_enter(step_core *self, PyObject *unused)
{
    (void)unused;
    client_core *c = (client_core *)self->client;
    PyObject *parent = NULL, *ntmp = NULL, *qtmp = NULL, *stmp = NULL, *result = NULL;
    if (!c->current) {
        PyErr_SetString(PyExc_RuntimeError, "telltale: the client is not initialised");
        return NULL;
    }
    if (PyContextVar_Get(c->current, Py_None, &parent) < 0) {
        return NULL;
    }
    const tt_step *pst = NULL;
    if (PyObject_TypeCheck(parent, &step_core_type)) {
        pst = &((step_core *)parent)->st;
    }
    Py_SETREF(self->parent, parent); /* takes the new reference */
    if (self->session == Py_None) {
        PyObject *s = pst ? ((step_core *)parent)->session : c->session;
        Py_SETREF(self->session, Py_NewRef(s ? s : Py_None));
    }
    const char *name, *query, *session;
    PyObject *session_obj = self->session;
    if (session_obj == c->session) {
        session_obj = c->session_text;
    }
    if (text_of(self->name, &name, &ntmp, 0) < 0 || text_of(self->query, &query, &qtmp, 0) < 0 ||
        text_of(session_obj, &session, &stmp, 0) < 0) {
        goto out;
    }
    /* The trace context: the step's own traceparent; for a root step, the current OpenTelemetry
     * span when the application imported opentelemetry (a C lookup first: no call otherwise). */
    PyObject *tp = Py_NewRef(self->traceparent), *tptmp = NULL;
    if (tp == Py_None && !pst && py.otel_traceparent &&
        PyDict_GetItemWithError(PyImport_GetModuleDict(), s_otel_trace)) {
        Py_SETREF(tp, PyObject_CallNoArgs(py.otel_traceparent));
    }
    const char *tps = NULL;
    if (!tp || (tp != Py_None && text_of(tp, &tps, &tptmp, 0) < 0)) {
        Py_XDECREF(tp);
        goto out;
    }
    int rc;
    if (tps && !lib.step_begin_ctx) {
        PyErr_SetString(PyExc_RuntimeError, "telltale: the library predates tt_step_begin_ctx");
        rc = TT_EINVAL;
    } else if (tps) {
        rc = lib.step_begin_ctx(c->h, &self->st, pst, tps, (tt_step_kind)self->kind, session, name,
                                query);
        if (rc == TT_EINVAL) {
            PyErr_Format(PyExc_ValueError, "telltale: invalid traceparent %R", tp);
        }
    } else {
        rc = lib.step_begin(c->h, &self->st, pst, (tt_step_kind)self->kind, session, name, query);
    }
    Py_DECREF(tp);
    Py_XDECREF(tptmp);
    if (tps && rc == TT_EINVAL) {
        goto out;
    }
    if (rc == TT_EBLOCKED) {
        PyObject *kind = PyLong_FromLong(self->kind);
        PyObject *exc =
            kind ? PyObject_CallFunctionObjArgs(py.blocked, kind, self->name, NULL) : NULL;
        Py_XDECREF(kind);
        if (exc) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        goto out;
    }
    PyObject *token = PyContextVar_Set(c->current, (PyObject *)self);
    if (!token) {
        goto out;
    }
    Py_SETREF(self->token, token);
    result = Py_NewRef(self);
out:
    Py_XDECREF(ntmp);
    Py_XDECREF(qtmp);
    Py_XDECREF(stmp);
    return result;
}

static PyObject *step_exit(step_core *self, PyObject *const *args, Py_ssize_t nargs)
{
    client_core *c = (client_core *)self->client;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "__exit__ takes 3 arguments");
        return NULL;
    }
    int status = self->status;
    PyObject *error = Py_NewRef(self->error), *etmp = NULL;
    if (args[0] != Py_None) {
        PyObject *r = PyObject_CallFunctionObjArgs(py.exit_error, args[0], args[1], NULL);
        if (!r || !PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 2 ||
            int_of(PyTuple_GET_ITEM(r, 0), &status) < 0) {
            if (r && !PyErr_Occurred()) {
                PyErr_SetString(PyExc_TypeError, "telltale: _exit_error returned no pair");
            }
            Py_XDECREF(r);
            Py_DECREF(error);
            return NULL;
        }
        Py_SETREF(error, Py_NewRef(PyTuple_GET_ITEM(r, 1)));
        Py_DECREF(r);
    }
    const char *etext;
    int bad = text_of(error, &etext, &etmp, 1) < 0;
    if (!bad) {
        lib.step_end(c->h, &self->st, (tt_status)status, self->result_bytes, etext);
    }
    Py_XDECREF(etmp);
    Py_DECREF(error);
    if (bad) {
        return NULL;
    }
    if (c->current && self->token != Py_None) {
        if (PyContextVar_Reset(c->current, self->token) < 0) {
            /* Left in another context than entered: restore the parent there. */
            if (!PyErr_ExceptionMatches(PyExc_ValueError)) {
                return NULL;
            }
            PyErr_Clear();
            PyObject *t = PyContextVar_Set(c->current, self->parent);
            if (!t) {
                return NULL;
            }
            Py_DECREF(t);
        }
    }
    Py_RETURN_FALSE;
}

/* --- ResponseCore ------------------------------------------------------------------------ */

typedef struct response_core {
    PyObject_HEAD tt_response *r; /* NULL before begin and after end */
    int busy;                     /* a token call runs with the GIL released */
    tt_verdict last_verdict;      /* of the last token */
    int worst;                    /* the worst verdict so far (verdict) */
    long long tokens;
    PyObject *raise_on_halt;
    tt_token_stats ts; /* of the last token */
} response_core;

static PyTypeObject response_core_type;

static int response_traverse(response_core *self, visitproc visit, void *arg)
{
    Py_VISIT(self->raise_on_halt);
    return 0;
}

static int response_clear(response_core *self)
{
    Py_CLEAR(self->raise_on_halt);
    return 0;
}

static void response_dealloc(response_core *self)
{
    PyObject_GC_UnTrack(self);
    response_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *response_get_r(response_core *self, void *closure)
{
    (void)closure;
    return handle_get(self->r);
}

static int response_set_r(response_core *self, PyObject *v, void *closure)
{
    (void)closure;
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        "telltale: the response is in use by a token call of another thread");
        return -1;
    }
    void *p;
    if (handle_parse(v, &p) != 0) {
        return -1;
    }
    self->r = p;
    return 0;
}

static PyObject *response_get_verdict(response_core *self, void *closure)
{
    (void)closure;
    return Py_NewRef(PyTuple_GET_ITEM(py.verdicts, self->worst));
}

static int response_set_verdict(response_core *self, PyObject *v, void *closure)
{
    (void)closure;
    int x;
    if (!v || int_of(v, &x) < 0) {
        if (!v) {
            PyErr_SetString(PyExc_AttributeError, "verdict cannot be deleted");
        }
        return -1;
    }
    if (x < TT_PASS || x > TT_HALT) {
        PyErr_SetString(PyExc_ValueError, "telltale: a verdict is PASS, FLAG or HALT");
        return -1;
    }
    self->worst = x;
    return 0;
}

static PyObject *response_get_stats(response_core *self, void *closure)
{
    (void)closure;
    return PyBytes_FromStringAndSize((const char *)&self->ts, sizeof self->ts);
}

static tt_response *response_open(response_core *self)
{
    if (!self->r) {
        PyErr_SetString(PyExc_RuntimeError,
                        "telltale: response not open (use it in a `with` block; it ends there or "
                        "at a raised Halted)");
        return NULL;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        "telltale: the response is in use by a token call of another thread");
        return NULL;
    }
    return self->r;
}

/* Count a token that the library accepted: the response's verdict so far. */
static int response_count(response_core *self)
{
    self->tokens++;
    int v = (int)self->last_verdict;
    if (v < TT_PASS || v > TT_HALT) {
        v = TT_HALT;
    }
    if (v > self->worst) {
        self->worst = v;
    }
    return v;
}

/* After a token call: the verdict, or the Python side's handling of a refusal or a HALT. */
static PyObject *response_after(response_core *self, int rc)
{
    if (rc) {
        PyObject *code = PyLong_FromLong(rc);
        PyObject *r = code ? PyObject_CallMethodOneArg((PyObject *)self, s_rejected, code) : NULL;
        Py_XDECREF(code);
        return r;
    }
    int v = response_count(self);
    if (v == TT_HALT && self->raise_on_halt) {
        int raise = PyObject_IsTrue(self->raise_on_halt);
        if (raise < 0) {
            return NULL;
        }
        if (raise) {
            return PyObject_CallMethodNoArgs((PyObject *)self, s_halt);
        }
    }
    return Py_NewRef(PyTuple_GET_ITEM(py.verdicts, v));
}

/* The dtype of a buffer's format: f (float32), e (float16), H (bfloat16 bits), little-endian or
 * native on a little-endian machine; 0 for anything else. */
static tt_dtype row_dtype(const char *fmt, Py_ssize_t itemsize)
{
    if (!fmt) {
        return 0;
    }
    if (*fmt == '<' || *fmt == '=' || *fmt == '@') {
        fmt++;
    }
    if (fmt[0] && fmt[1]) {
        return 0;
    }
#if PY_LITTLE_ENDIAN
    if (fmt[0] == 'f' && itemsize == 4) {
        return TT_DTYPE_F32;
    }
    if (fmt[0] == 'e' && itemsize == 2) {
        return TT_DTYPE_F16;
    }
    if (fmt[0] == 'H' && itemsize == 2) {
        return TT_DTYPE_BF16;
    }
#endif
    return 0;
}

/* A token's text as UTF-8 (borrowed from the str, which caches it): 0, or -1 with an error set.
 * None is no text (*out NULL). */
static int token_text_of(PyObject *o, const char **out)
{
    *out = NULL;
    if (!o || o == Py_None) {
        return 0;
    }
    if (!PyUnicode_Check(o)) {
        PyErr_SetString(PyExc_TypeError, "telltale: a token's text needs a str");
        return -1;
    }
    *out = PyUnicode_AsUTF8(o);
    return *out ? 0 : -1;
}

/* token(logits, chosen, *, text=None) -> Verdict */
static PyObject *response_token(response_core *self, PyObject *const *args, size_t nargsf,
                                PyObject *kwnames)
{
    PyObject *names[3] = {s_logits, s_chosen, s_text}, *v[3];
    if (parse_args("token", args, PyVectorcall_NARGS(nargsf), kwnames, names, 3, 2, v, NULL, NULL) <
        0) {
        return NULL;
    }
    const char *text;
    if (token_text_of(v[2], &text) < 0) {
        return NULL;
    }
    if (!v[0] || !v[1]) {
        PyErr_SetString(PyExc_TypeError, "token() needs logits and chosen");
        return NULL;
    }
    tt_response *r = response_open(self);
    int chosen;
    if (!r || int_of(v[1], &chosen) < 0) {
        return NULL;
    }
    Py_buffer view;
    const void *ptr;
    size_t n, stride;
    tt_dtype dt = 0;
    int have_view = PyObject_GetBuffer(v[0], &view, PyBUF_STRIDES | PyBUF_FORMAT) == 0;
    if (have_view) {
        dt = view.ndim == 1 ? row_dtype(view.format, view.itemsize) : 0;
        if (!dt || view.shape[0] <= 0 || view.strides[0] <= 0 || view.strides[0] % view.itemsize) {
            PyBuffer_Release(&view);
            have_view = 0;
            dt = 0;
        }
    } else {
        PyErr_Clear();
    }
    if (have_view) {
        ptr = view.buf;
        n = (size_t)view.shape[0];
        stride = n == 1 ? 1 : (size_t)(view.strides[0] / view.itemsize);
    } else {
        /* Not a row the buffer path reads (ml_dtypes' bfloat16, __array_interface__, or an
         * error to report): the Python helper decides, with the ctypes path's messages. */
        PyObject *t = PyObject_CallOneArg(py.row, v[0]);
        if (!t) {
            return NULL;
        }
        if (t == Py_None) { /* a tensor on an accelerator: its statistics come from there */
            Py_DECREF(t);
            PyObject *a[4] = {(PyObject *)self, v[0], v[1], v[2] ? v[2] : Py_None};
            return PyObject_VectorcallMethod(s_device_token, a, 4 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                             NULL);
        }
        int ok = PyTuple_Check(t) && PyTuple_GET_SIZE(t) == 4;
        ptr = ok ? PyLong_AsVoidPtr(PyTuple_GET_ITEM(t, 0)) : NULL;
        n = ok ? PyLong_AsSize_t(PyTuple_GET_ITEM(t, 1)) : 0;
        stride = ok ? PyLong_AsSize_t(PyTuple_GET_ITEM(t, 2)) : 0;
        dt = ok ? (tt_dtype)PyLong_AsLong(PyTuple_GET_ITEM(t, 3)) : 0;
        Py_DECREF(t);
        if (!ok || PyErr_Occurred()) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_TypeError, "telltale: _row returned no row");
            }
            return NULL;
        }
    }
    int rc;
    /* The text's str (and its UTF-8) is held by the caller's arguments for the call. */
    int with_text = text && lib.response_token_text;
    if (n >= GIL_RELEASE_MIN_ELEMS) {
        self->busy = 1;
        Py_BEGIN_ALLOW_THREADS rc =
            with_text
                ? lib.response_token_text(r, ptr, n, stride, dt, chosen, text, &self->last_verdict,
                                          &self->ts)
                : lib.response_token(r, ptr, n, stride, dt, chosen, &self->last_verdict, &self->ts);
        Py_END_ALLOW_THREADS self->busy = 0;
    } else if (with_text) {
        rc = lib.response_token_text(r, ptr, n, stride, dt, chosen, text, &self->last_verdict,
                                     &self->ts);
    } else {
        rc = lib.response_token(r, ptr, n, stride, dt, chosen, &self->last_verdict, &self->ts);
    }
    if (have_view) {
        PyBuffer_Release(&view);
    }
    return response_after(self, rc);
}

/* The top log-probs of a list or tuple of at most TOPK_MAX floats, ids from a sequence of the
 * same length or none; 1 if converted, 0 if the Python helper must normalise them first. */
static int top_fast(PyObject *lps, PyObject *ids, float *lp, int32_t *id, size_t *k, int *has_ids)
{
    if (!(PyList_CheckExact(lps) || PyTuple_CheckExact(lps))) {
        return 0;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(lps);
    int with_ids = ids && ids != Py_None;
    if (n > TOPK_MAX || (with_ids && (!(PyList_CheckExact(ids) || PyTuple_CheckExact(ids)) ||
                                      PySequence_Fast_GET_SIZE(ids) != n))) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *x = PySequence_Fast_GET_ITEM(lps, i);
        if (!PyFloat_Check(x) && !PyNumber_Check(x)) {
            return 0; /* ({"token": ..., "logprob": ...} objects, ...): the helper's case */
        }
        double d = PyFloat_AsDouble(x);
        if (d == -1.0 && PyErr_Occurred()) {
            return -1;
        }
        lp[i] = (float)d;
        if (with_ids) {
            int v;
            if (int_of(PySequence_Fast_GET_ITEM(ids, i), &v) < 0) {
                return -1;
            }
            id[i] = v;
        }
    }
    *k = (size_t)n;
    *has_ids = with_ids;
    return 1;
}

/* The alternatives' texts of _top's answer (a list of str or None, k long): 0 (texts filled,
 * *has set when there are some), or -1 with an error set. Borrowed from the list. */
static int top_texts_of(PyObject *list, size_t k, const char **texts, int *has)
{
    *has = 0;
    if (list == Py_None) {
        return 0;
    }
    if (!PyList_Check(list) || (size_t)PyList_GET_SIZE(list) != k) {
        PyErr_SetString(PyExc_TypeError, "telltale: _top returned bad texts");
        return -1;
    }
    for (size_t i = 0; i < k; i++) {
        if (token_text_of(PyList_GET_ITEM(list, (Py_ssize_t)i), &texts[i]) < 0) {
            return -1;
        }
    }
    *has = 1;
    return 0;
}

/* token_logprobs(chosen_logprob, top_logprobs=None, *, chosen=-1, top_ids=None, text=None)
 * -> Verdict */
static PyObject *response_token_logprobs(response_core *self, PyObject *const *args, size_t nargsf,
                                         PyObject *kwnames)
{
    PyObject *names[5] = {s_chosen_logprob, s_top_logprobs, s_chosen, s_top_ids, s_text}, *v[5];
    if (parse_args("token_logprobs", args, PyVectorcall_NARGS(nargsf), kwnames, names, 5, 2, v,
                   NULL, NULL) < 0) {
        return NULL;
    }
    const char *text;
    if (token_text_of(v[4], &text) < 0) {
        return NULL;
    }
    if (!v[0]) {
        PyErr_SetString(PyExc_TypeError, "token_logprobs() needs chosen_logprob");
        return NULL;
    }
    tt_response *r = response_open(self);
    if (!r) {
        return NULL;
    }
    int chosen = -1, has_ids = 0;
    double clp = PyFloat_AsDouble(v[0]);
    if ((clp == -1.0 && PyErr_Occurred()) || (v[2] && int_of(v[2], &chosen) < 0)) {
        return NULL;
    }
    float lp[TOPK_MAX];
    int32_t id[TOPK_MAX];
    const char *texts[TOPK_MAX];
    int has_texts = 0;
    size_t k = 0;
    PyObject *t = NULL; /* _top's answer, held until the call (texts borrow from it) */
    if (v[1] && v[1] != Py_None) {
        int fast = top_fast(v[1], v[3], lp, id, &k, &has_ids);
        if (fast < 0) {
            return NULL;
        }
        if (!fast) {
            t = PyObject_CallFunctionObjArgs(py.top, v[1], v[3] ? v[3] : Py_None, NULL);
            if (!t) {
                return NULL;
            }
            fast =
                PyTuple_Check(t) && PyTuple_GET_SIZE(t) == 3
                    ? top_fast(PyTuple_GET_ITEM(t, 1), PyTuple_GET_ITEM(t, 0), lp, id, &k, &has_ids)
                    : 0;
            if (fast > 0 && top_texts_of(PyTuple_GET_ITEM(t, 2), k, texts, &has_texts) < 0) {
                fast = -1;
            }
            if (fast <= 0) {
                Py_DECREF(t);
                if (!PyErr_Occurred()) {
                    PyErr_SetString(PyExc_TypeError, "telltale: _top returned no top-k");
                }
                return NULL;
            }
        }
    }
    int rc;
    if ((text || has_texts) && lib.response_token_logprobs_text) {
        rc = lib.response_token_logprobs_text(r, chosen, text, (float)clp, has_ids ? id : NULL,
                                              has_texts ? texts : NULL, k ? lp : NULL, k,
                                              &self->last_verdict, &self->ts);
    } else {
        rc = lib.response_token_logprobs(r, chosen, (float)clp, has_ids ? id : NULL, k ? lp : NULL,
                                         k, &self->last_verdict, &self->ts);
    }
    Py_XDECREF(t);
    return response_after(self, rc);
}

/* _token_stats(stats, text=None, may_raise=True) -> Verdict: a token from statistics computed
 * elsewhere (a tt_token_stats as a buffer: _lib.TokenStats); may_raise false leaves a HALT to
 * the caller (the batched call raises after every row is counted). */
static PyObject *response_token_stats(response_core *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "_token_stats(stats, text=None, may_raise=True)");
        return NULL;
    }
    const char *text;
    if (token_text_of(nargs > 1 ? args[1] : NULL, &text) < 0) {
        return NULL;
    }
    int may_raise = nargs > 2 ? PyObject_IsTrue(args[2]) : 1;
    if (may_raise < 0) {
        return NULL;
    }
    tt_response *r = response_open(self);
    if (!r) {
        return NULL;
    }
    if (!lib.response_token_stats) {
        PyErr_SetString(PyExc_RuntimeError,
                        "telltale: the library has no tt_response_token_stats (older than 0.4)");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if ((size_t)view.len != sizeof(tt_token_stats)) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_TypeError, "telltale: _token_stats needs a tt_token_stats");
        return NULL;
    }
    tt_token_stats st;
    memcpy(&st, view.buf, sizeof st);
    PyBuffer_Release(&view);
    int rc = lib.response_token_stats(r, &st, text, &self->last_verdict, &self->ts);
    if (rc || may_raise) {
        return response_after(self, rc);
    }
    return Py_NewRef(PyTuple_GET_ITEM(py.verdicts, response_count(self)));
}

/* Mark the open responses of a batch busy (or not) while the GIL is released. */
static void batch_busy(PyObject *list, tt_response *const *rs, Py_ssize_t b, int busy)
{
    for (Py_ssize_t i = 0; i < b; i++) {
        if (rs[i]) {
            ((response_core *)PyList_GET_ITEM(list, i))->busy = busy;
        }
    }
}

/* token_batch(responses, chosen, ptr, rows, n, stride, row_stride, dtype) -> [Verdict] or the
 * library's error code (int): one decode step over a [rows, n] matrix read in place (the Python
 * side found its pointer and strides and keeps it alive); None entries are finished sequences.
 * Never raises Halted (telltale.token_batch does, after every row is counted). */
static PyObject *ext_token_batch(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 8 || !PyList_Check(args[0]) || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "token_batch(responses: list, chosen: list, ptr, rows, "
                                         "n, stride, row_stride, dtype)");
        return NULL;
    }
    if (!lib.response_token_batch) {
        PyErr_SetString(PyExc_RuntimeError,
                        "telltale: the library has no tt_response_token_batch (older than 0.4)");
        return NULL;
    }
    Py_ssize_t b = PyList_GET_SIZE(args[0]);
    size_t num[5];
    for (int i = 0; i < 5; i++) {
        num[i] = PyLong_AsSize_t(args[3 + i]);
        if (num[i] == (size_t)-1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    void *ptr = PyLong_AsVoidPtr(args[2]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (PyList_GET_SIZE(args[1]) != b || num[0] != (size_t)b) {
        PyErr_SetString(PyExc_ValueError, "telltale: responses, chosen ids and logits rows differ "
                                          "in number");
        return NULL;
    }
    if (b == 0) {
        return PyList_New(0);
    }
    /* One block per call: the handles, the ids, the verdicts and the statistics. */
    size_t each = sizeof(tt_response *) + sizeof(int32_t) + sizeof(tt_verdict);
    tt_response **rs = PyMem_Malloc((size_t)b * (sizeof(tt_token_stats) + each));
    if (!rs) {
        return PyErr_NoMemory();
    }
    tt_token_stats *ts = (tt_token_stats *)(rs + b); /* pointers first: every part aligned */
    int32_t *chosen = (int32_t *)(ts + b);
    tt_verdict *verdicts = (tt_verdict *)(chosen + b);
    PyObject *out = NULL;
    for (Py_ssize_t i = 0; i < b; i++) {
        PyObject *o = PyList_GET_ITEM(args[0], i);
        int c;
        if (int_of(PyList_GET_ITEM(args[1], i), &c) < 0) {
            goto done;
        }
        chosen[i] = c;
        if (o == Py_None) {
            rs[i] = NULL;
            continue;
        }
        if (!PyObject_TypeCheck(o, &response_core_type)) {
            PyErr_SetString(PyExc_TypeError, "telltale: token_batch needs Responses (or None)");
            goto done;
        }
        if (!(rs[i] = response_open((response_core *)o))) {
            goto done;
        }
    }
    int rc;
    if ((size_t)b * num[1] >= GIL_RELEASE_MIN_ELEMS) {
        batch_busy(args[0], rs, b, 1);
        Py_BEGIN_ALLOW_THREADS rc = lib.response_token_batch(
            rs, (size_t)b, ptr, num[1], num[2], num[3], (tt_dtype)num[4], chosen, verdicts, ts);
        Py_END_ALLOW_THREADS batch_busy(args[0], rs, b, 0);
    } else {
        rc = lib.response_token_batch(rs, (size_t)b, ptr, num[1], num[2], num[3], (tt_dtype)num[4],
                                      chosen, verdicts, ts);
    }
    if (rc) {
        out = PyLong_FromLong(rc);
        goto done;
    }
    if (!(out = PyList_New(b))) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < b; i++) {
        int v = TT_PASS;
        if (rs[i]) {
            response_core *self = (response_core *)PyList_GET_ITEM(args[0], i);
            self->last_verdict = verdicts[i];
            self->ts = ts[i];
            v = response_count(self);
        }
        PyList_SET_ITEM(out, i, Py_NewRef(PyTuple_GET_ITEM(py.verdicts, v)));
    }
done:
    PyMem_Free(rs);
    return out;
}

/* --- module ---------------------------------------------------------------------------------- */

/* bind(path, ns): look the hot functions up in the library ctypes loaded from path, and take
 * the Python side's helpers from the dict ns. */
static PyObject *ext_bind(PyObject *module, PyObject *args)
{
    (void)module;
    const char *path;
    PyObject *ns;
    if (!PyArg_ParseTuple(args, "sO!:bind", &path, &PyDict_Type, &ns)) {
        return NULL;
    }
    void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (!h) {
        PyErr_Format(PyExc_ImportError, "telltale._ext: %s is not loaded: %s", path, dlerror());
        return NULL;
    }
    struct {
        const char *name;
        void **slot;
    } fns[] = {
        {"tt_log", (void **)&lib.log},
        {"tt_metric", (void **)&lib.metric},
        {"tt_step_begin", (void **)&lib.step_begin},
        {"tt_step_end", (void **)&lib.step_end},
        {"tt_response_token", (void **)&lib.response_token},
        {"tt_response_token_logprobs", (void **)&lib.response_token_logprobs},
    };
    lib.response_token_text =
        (__typeof__(lib.response_token_text))dlsym(h, "tt_response_token_text");
    lib.response_token_logprobs_text =
        (__typeof__(lib.response_token_logprobs_text))dlsym(h, "tt_response_token_logprobs_text");
    lib.response_token_batch =
        (__typeof__(lib.response_token_batch))dlsym(h, "tt_response_token_batch");
    lib.response_token_stats =
        (__typeof__(lib.response_token_stats))dlsym(h, "tt_response_token_stats");
    lib.step_begin_ctx = (__typeof__(lib.step_begin_ctx))dlsym(h, "tt_step_begin_ctx");
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
        *fns[i].slot = dlsym(h, fns[i].name);
        if (!*fns[i].slot) {
            PyErr_Format(PyExc_ImportError, "telltale._ext: %s lacks %s", path, fns[i].name);
            dlclose(h);
            return NULL;
        }
    }
    /* The handle stays open: the functions must outlive every call (ctypes holds the library
     * for the interpreter's life as well). */
    struct {
        const char *key;
        PyObject **slot;
    } refs[] = {
        {"step_type", &py.step_type},
        {"verdicts", &py.verdicts},
        {"severities", &py.severities},
        {"metric_kinds", &py.metric_kinds},
        {"step_kinds", &py.step_kinds},
        {"level", &py.level},
        {"row", &py.row},
        {"top", &py.top},
        {"exit_error", &py.exit_error},
        {"blocked", &py.blocked},
        {"otel_traceparent", &py.otel_traceparent},
        {"error", &py.error},
    };
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++) {
        PyObject *o = PyDict_GetItemString(ns, refs[i].key);
        if (!o) {
            PyErr_Format(PyExc_KeyError, "telltale._ext.bind: no %s", refs[i].key);
            return NULL;
        }
        Py_XSETREF(*refs[i].slot, Py_NewRef(o));
    }
    if (!PyType_Check(py.step_type) ||
        !PyType_IsSubtype((PyTypeObject *)py.step_type, &step_core_type) ||
        !PyTuple_Check(py.verdicts) || PyTuple_GET_SIZE(py.verdicts) != 3 ||
        !PyDict_Check(py.severities) || !PyDict_Check(py.metric_kinds) ||
        !PyDict_Check(py.step_kinds)) {
        PyErr_SetString(PyExc_TypeError, "telltale._ext.bind: unexpected helpers");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* The limit a call into C cannot beat: a function that takes any arguments and does nothing
 * (bench/python.py measures it beside the calls above). */
static PyObject *ext_bare_call(PyObject *module, PyObject *const *args, size_t nargsf,
                               PyObject *kwnames)
{
    (void)module;
    (void)args;
    (void)nargsf;
    (void)kwnames;
    Py_RETURN_NONE;
}

/* The floor of a log call with two attributes: the call from Python into C and the library's own
 * work, with the arguments converted in advance (bench/python.py: log_floor(client)). */
static PyObject *ext_log_floor(PyObject *module, PyObject *client)
{
    (void)module;
    static const tt_attr fixed[2] = {
        {.key = "user", .type = TT_ATTR_STR, .v.s = "ann"},
        {.key = "n", .type = TT_ATTR_INT, .v.i = 3},
    };
    if (!PyObject_TypeCheck(client, &client_core_type)) {
        PyErr_SetString(PyExc_TypeError, "log_floor(client)");
        return NULL;
    }
    return PyLong_FromLong(
        lib.log(((client_core *)client)->h, NULL, TT_INFO, "tool call finished", fixed, 2));
}

#define FASTKW(fn) ((PyCFunction)(void (*)(void))(fn)), METH_FASTCALL | METH_KEYWORDS

static PyMethodDef client_methods[] = {
    {"log", FASTKW(client_log),
     "log(message, level='info', *, session=None, **attrs) -> 0 or a negative code"},
    {"metric", FASTKW(client_metric),
     "metric(name, value, kind='gauge', *, unit=None, session=None, **attrs) -> 0 or a "
     "negative code"},
    {"step", FASTKW(client_step),
     "step(kind='other', name=None, query=None, *, session=None, traceparent=None)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef client_getset[] = {
    {"_h", (getter)client_get_h, (setter)client_set_h, "the tt_client handle (int) or None", NULL},
    {"session", (getter)client_get_session, (setter)client_set_session,
     "the default session of every event (None: no session)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef client_members[] = {
    {"_current", T_OBJECT, offsetof(client_core, current), 0, "the ContextVar of open steps"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject client_core_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "telltale._ext.ClientCore",
    .tp_basicsize = sizeof(client_core),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The hot calls of telltale.Client, in C.",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)client_dealloc,
    .tp_traverse = (traverseproc)client_traverse,
    .tp_clear = (inquiry)client_clear,
    .tp_methods = client_methods,
    .tp_getset = client_getset,
    .tp_members = client_members,
};

static PyMethodDef step_methods[] = {
    {"__enter__", (PyCFunction)step_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))step_exit, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef step_getset[] = {
    {"id", (getter)step_get_id, NULL, "the step id (non-zero once begun)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef step_members[] = {
    {"_c", T_OBJECT, offsetof(step_core, client), READONLY, NULL},
    {"kind", T_INT, offsetof(step_core, kind), 0, NULL},
    {"name", T_OBJECT, offsetof(step_core, name), 0, NULL},
    {"query", T_OBJECT, offsetof(step_core, query), 0, NULL},
    {"session", T_OBJECT, offsetof(step_core, session), 0, NULL},
    {"parent", T_OBJECT, offsetof(step_core, parent), 0, NULL},
    {"result_bytes", T_LONGLONG, offsetof(step_core, result_bytes), 0, NULL},
    {"_status", T_INT, offsetof(step_core, status), 0, NULL},
    {"_error", T_OBJECT, offsetof(step_core, error), 0, NULL},
    {"_token", T_OBJECT, offsetof(step_core, token), 0, NULL},
    {"traceparent", T_OBJECT, offsetof(step_core, traceparent), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject step_core_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "telltale._ext.StepCore",
    .tp_basicsize = sizeof(step_core),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The begin and end of a telltale.Step, in C (created by ClientCore.step).",
    .tp_dealloc = (destructor)step_dealloc,
    .tp_traverse = (traverseproc)step_traverse,
    .tp_clear = (inquiry)step_clear,
    .tp_weaklistoffset = offsetof(step_core, weakrefs),
    .tp_methods = step_methods,
    .tp_getset = step_getset,
    .tp_members = step_members,
};

static PyMethodDef response_methods[] = {
    {"token", FASTKW(response_token), "token(logits, chosen, *, text=None) -> Verdict"},
    {"token_logprobs", FASTKW(response_token_logprobs),
     "token_logprobs(chosen_logprob, top_logprobs=None, *, chosen=-1, top_ids=None, text=None) "
     "-> Verdict"},
    {"_token_stats", (PyCFunction)(void (*)(void))response_token_stats, METH_FASTCALL,
     "_token_stats(stats, text=None, may_raise=True) -> Verdict"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef response_getset[] = {
    {"_r", (getter)response_get_r, (setter)response_set_r, "the tt_response handle or None", NULL},
    {"verdict", (getter)response_get_verdict, (setter)response_set_verdict,
     "the worst verdict so far", NULL},
    {"_stats", (getter)response_get_stats, NULL, "the last token's tt_token_stats, as bytes", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef response_members[] = {
    {"tokens", T_LONGLONG, offsetof(response_core, tokens), READONLY, "tokens added"},
    {"raise_on_halt", T_OBJECT, offsetof(response_core, raise_on_halt), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject response_core_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "telltale._ext.ResponseCore",
    .tp_basicsize = sizeof(response_core),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The token calls of telltale.Response, in C.",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)response_dealloc,
    .tp_traverse = (traverseproc)response_traverse,
    .tp_clear = (inquiry)response_clear,
    .tp_methods = response_methods,
    .tp_getset = response_getset,
    .tp_members = response_members,
};

static PyMethodDef module_methods[] = {
    {"bind", ext_bind, METH_VARARGS, "bind(path, ns): bind the library ctypes loaded"},
    {"token_batch", (PyCFunction)(void (*)(void))ext_token_batch, METH_FASTCALL,
     "token_batch(responses, chosen, ptr, rows, n, stride, row_stride, dtype) -> [Verdict] or "
     "an error code"},
    {"bare_call", FASTKW(ext_bare_call), "bare_call(*args, **kw): does nothing (benchmark)"},
    {"log_floor", ext_log_floor, METH_O, "log_floor(client): a fixed log call (benchmark)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "telltale._ext",
    .m_doc = "The compiled hot path of telltale (internal: use the telltale package).",
    .m_size = -1,
    .m_methods = module_methods,
};

static int intern_names(void)
{
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&s_session, "session"},
        {&s_level, "level"},
        {&s_message, "message"},
        {&s_kind, "kind"},
        {&s_unit, "unit"},
        {&s_name, "name"},
        {&s_value, "value"},
        {&s_query, "query"},
        {&s_logits, "logits"},
        {&s_chosen, "chosen"},
        {&s_chosen_logprob, "chosen_logprob"},
        {&s_top_logprobs, "top_logprobs"},
        {&s_top_ids, "top_ids"},
        {&s_text, "text"},
        {&s_rejected, "_rejected"},
        {&s_halt, "_halt"},
        {&s_device_token, "_device_token"},
        {&s_traceparent, "traceparent"},
        {&s_otel_trace, "opentelemetry.trace"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!*names[i].slot && !(*names[i].slot = PyUnicode_InternFromString(names[i].text))) {
            return -1;
        }
    }
    PyObject *ln[] = {s_message, s_level, s_session},
             *mn[] = {s_name, s_value, s_kind, s_unit, s_session};
    memcpy(log_names, ln, sizeof ln);
    memcpy(metric_names, mn, sizeof mn);
    return 0;
}

PyMODINIT_FUNC PyInit__ext(void)
{
    if (intern_names() < 0 || PyType_Ready(&client_core_type) < 0 ||
        PyType_Ready(&step_core_type) < 0 || PyType_Ready(&response_core_type) < 0) {
        return NULL;
    }
    if (!int_zero && !(int_zero = PyLong_FromLong(0))) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module_def);
    if (!m) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "ClientCore", (PyObject *)&client_core_type) < 0 ||
        PyModule_AddObjectRef(m, "StepCore", (PyObject *)&step_core_type) < 0 ||
        PyModule_AddObjectRef(m, "ResponseCore", (PyObject *)&response_core_type) < 0 ||
        PyModule_AddIntConstant(m, "INTERFACE", INTERFACE) < 0 ||
        PyModule_AddIntConstant(m, "GIL_RELEASE_MIN_ELEMS", GIL_RELEASE_MIN_ELEMS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
