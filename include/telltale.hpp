/*
 * telltale.hpp - C++17 over the C API of telltale.h, header-only: RAII for the configuration,
 * the client, steps and responses, and type-checked attributes. Nothing here throws and nothing
 * needs exceptions: it compiles with -fno-exceptions, and errors are the C API's int codes
 * (0 or a negative TT_E* code, telltale::strerror names them). With exceptions on, a step left
 * by an exception ends with status TT_STATUS_ERROR. Since 0.1.
 *
 * Strings: the C API takes NUL-terminated strings, so the event calls take telltale::zstr, made
 * from a const char *, a std::string or a telltale::zbuf (a std::string_view copied into a
 * fixed buffer). Attributes take std::string_view values and keys too: telltale::attrs copies
 * them into its own fixed storage; telltale::attr makes one tt_attr without copying anything.
 * Nothing here allocates: event calls keep the C API's promise (no allocation, no system call).
 *
 * docs/api.md ("C++") shows it in use.
 */
#ifndef TELLTALE_HPP
#define TELLTALE_HPP

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "telltale.h"

namespace telltale
{

/* A static description of an error code (tt_strerror). */
inline const char *strerror(int err) noexcept
{
    return tt_strerror(err);
}

/* ---------------------------------------------------------------------------------------------
 * Strings
 */

/* A std::string_view copied into N bytes of inline storage with a terminating NUL, for the
 * event calls that need a C string. A view longer than N - 1 bytes is not truncated: ok() is
 * false and the event call that receives it returns TT_E2BIG without emitting. */
template <std::size_t N = 256> class zbuf
{
    static_assert(N >= 1, "zbuf needs room for the terminating NUL");

  public:
    explicit zbuf(std::string_view s) noexcept : ok_(s.size() < N)
    {
        std::size_t n = ok_ ? s.size() : 0;
        if (n) {
            std::memcpy(buf_, s.data(), n);
        }
        buf_[n] = '\0';
    }
    zbuf(const zbuf &) = delete;
    zbuf &operator=(const zbuf &) = delete;
    const char *c_str() const noexcept
    {
        return buf_;
    }
    bool ok() const noexcept
    {
        return ok_;
    }

  private:
    bool ok_;
    char buf_[N];
};

/* A borrowed NUL-terminated string or none (nullptr): what the C API takes. Made implicitly
 * from a const char *, a std::string (lvalue: an rvalue would end before the call that keeps
 * it) or a zbuf. A std::string_view converts only through zbuf, which copies it. */
class zstr
{
  public:
    zstr(std::nullptr_t = nullptr) noexcept : p_(nullptr), err_(0)
    {
    }
    zstr(const char *s) noexcept : p_(s), err_(0)
    {
    }
    zstr(const std::string &s) noexcept : p_(s.c_str()), err_(0)
    {
    }
    template <std::size_t N>
    zstr(const zbuf<N> &b) noexcept : p_(b.c_str()), err_(b.ok() ? 0 : TT_E2BIG)
    {
    }
    zstr(std::string_view) = delete; /* not NUL-terminated: telltale::zbuf copies it */
    const char *get() const noexcept
    {
        return p_;
    }
    int error() const noexcept
    {
        return err_;
    }

  private:
    const char *p_;
    int err_;
};

/* ---------------------------------------------------------------------------------------------
 * Attributes
 */
namespace detail
{
template <class> inline constexpr bool always_false = false;

template <class T>
inline constexpr bool is_char_v =
    std::is_same_v<T, char> || std::is_same_v<T, signed char> || std::is_same_v<T, unsigned char> ||
    std::is_same_v<T, wchar_t> || std::is_same_v<T, char16_t> || std::is_same_v<T, char32_t>;

/* An integer that always fits int64_t: every signed type, unsigned types narrower than 64 bits. */
template <class T>
inline constexpr bool is_exact_int_v =
    std::is_integral_v<T> && !std::is_same_v<T, bool> && !is_char_v<T> &&
    (std::is_signed_v<T> || std::numeric_limits<T>::digits < 64);

template <class T>
inline constexpr bool is_wide_unsigned_v =
    std::is_integral_v<T> &&std::is_unsigned_v<T> && !std::is_same_v<T, bool> && !is_char_v<T> &&
    std::numeric_limits<T>::digits >= 64;

inline tt_attr make(const char *key, tt_attr_type type) noexcept
{
    tt_attr a;
    std::memset(&a, 0, sizeof a);
    a.key = key;
    a.type = type;
    return a;
}
} // namespace detail

/* One attribute, nothing copied: the key and a string value are borrowed and must outlive the
 * event call (a literal, a std::string lvalue). bool gives TT_ATTR_BOOL, integers that fit
 * int64_t TT_ATTR_INT, floating point TT_ATTR_DOUBLE, const char * and std::string TT_ATTR_STR.
 * Anything else does not compile: characters (say what they mean: a string or an integer),
 * 64-bit unsigned integers (telltale::attrs checks their range), std::string_view and
 * std::string rvalues (telltale::attrs copies them). */
template <class V> tt_attr attr(const char *key, const V &value) noexcept
{
    using D = std::decay_t<V>;
    if constexpr (std::is_same_v<D, bool>) {
        tt_attr a = detail::make(key, TT_ATTR_BOOL);
        a.v.b = value ? 1 : 0;
        return a;
    } else if constexpr (detail::is_exact_int_v<D>) {
        tt_attr a = detail::make(key, TT_ATTR_INT);
        a.v.i = static_cast<int64_t>(value);
        return a;
    } else if constexpr (std::is_floating_point_v<D>) {
        tt_attr a = detail::make(key, TT_ATTR_DOUBLE);
        a.v.d = static_cast<double>(value);
        return a;
    } else if constexpr (std::is_same_v<D, const char *> || std::is_same_v<D, char *>) {
        tt_attr a = detail::make(key, TT_ATTR_STR);
        a.v.s = value;
        return a;
    } else if constexpr (std::is_same_v<D, std::string>) {
        tt_attr a = detail::make(key, TT_ATTR_STR);
        a.v.s = value.c_str();
        return a;
    } else if constexpr (std::is_same_v<D, std::string_view>) {
        static_assert(
            detail::always_false<V>,
            "a std::string_view is not NUL-terminated: use telltale::attrs, which copies it");
    } else if constexpr (detail::is_wide_unsigned_v<D>) {
        static_assert(
            detail::always_false<V>,
            "a 64-bit unsigned value may not fit int64_t: use telltale::attrs::add, which "
            "checks, or cast");
    } else if constexpr (detail::is_char_v<D>) {
        static_assert(detail::always_false<V>,
                      "a character attribute: pass a string or an integer");
    } else {
        static_assert(detail::always_false<V>, "no tt_attr type for this value");
    }
}
tt_attr attr(const char *key, std::string &&value) = delete; /* would dangle: use attrs */

/* Up to N attributes built one by one, with K bytes of inline storage for the keys and values
 * given as std::string_view or std::string rvalues (copied, NUL-terminated). Values given as
 * const char * or std::string lvalues are borrowed, as with attr(). An attribute that does not
 * fit (slots or storage), a NULL string or a 64-bit unsigned value above INT64_MAX is not added
 * and the set is marked: error() is TT_E2BIG or TT_EINVAL and the event call that receives it
 * returns that error without emitting. Not copyable (it holds pointers into itself). */
template <std::size_t N = 16, std::size_t K = 512> class attrs
{
  public:
    attrs() noexcept = default;
    attrs(const attrs &) = delete;
    attrs &operator=(const attrs &) = delete;

    template <class V> attrs &add(const char *key, V &&value) noexcept
    {
        if (!key) {
            return fail(TT_EINVAL);
        }
        return put(key, std::forward<V>(value));
    }
    template <class V> attrs &add(std::string_view key, V &&value) noexcept
    {
        const char *k = copy(key);
        return k ? put(k, std::forward<V>(value)) : *this;
    }

    const tt_attr *data() const noexcept
    {
        return a_;
    }
    std::size_t size() const noexcept
    {
        return n_;
    }
    int error() const noexcept
    {
        return err_;
    }
    /* Forget every attribute and the error. */
    void clear() noexcept
    {
        n_ = 0;
        used_ = 0;
        err_ = 0;
    }

  private:
    attrs &fail(int err) noexcept
    {
        if (!err_) {
            err_ = err;
        }
        return *this;
    }
    const char *copy(std::string_view s) noexcept
    {
        if (s.size() >= K - used_) {
            fail(TT_E2BIG);
            return nullptr;
        }
        char *p = store_ + used_;
        if (!s.empty()) {
            std::memcpy(p, s.data(), s.size());
        }
        p[s.size()] = '\0';
        used_ += s.size() + 1;
        return p;
    }
    attrs &push(const tt_attr &a) noexcept
    {
        if (n_ == N) {
            return fail(TT_E2BIG);
        }
        a_[n_++] = a;
        return *this;
    }
    template <class V> attrs &put(const char *key, V &&value) noexcept
    {
        using D = std::decay_t<V>;
        if constexpr (std::is_same_v<D, std::string_view> ||
                      (std::is_same_v<D, std::string> && !std::is_lvalue_reference_v<V>)) {
            const char *s = copy(std::string_view(value));
            if (!s) {
                return *this;
            }
            tt_attr a = detail::make(key, TT_ATTR_STR);
            a.v.s = s;
            return push(a);
        } else if constexpr (std::is_same_v<D, const char *> || std::is_same_v<D, char *>) {
            if (!value) {
                return fail(TT_EINVAL);
            }
            return push(attr(key, static_cast<const char *>(value)));
        } else if constexpr (detail::is_wide_unsigned_v<D>) {
            if (value > static_cast<D>(std::numeric_limits<int64_t>::max())) {
                return fail(TT_EINVAL);
            }
            return push(attr(key, static_cast<int64_t>(value)));
        } else {
            return push(attr(key, value));
        }
    }

    tt_attr a_[N > 0 ? N : 1];
    std::size_t n_ = 0;
    char store_[K > 0 ? K : 1];
    std::size_t used_ = 0;
    int err_ = 0;
};

/* What an event call takes as attributes: nothing, a braced list of attr() or an attrs. The
 * list's storage lives until the end of the full expression, which covers the call. */
class attr_list
{
  public:
    attr_list() noexcept = default;
    attr_list(std::initializer_list<tt_attr> l) noexcept : list_(l)
    {
    }
    template <std::size_t N, std::size_t K>
    attr_list(const attrs<N, K> &a) noexcept : p_(a.data()), n_(a.size()), err_(a.error())
    {
    }
    const tt_attr *data() const noexcept
    {
        return list_.size() ? list_.begin() : n_ ? p_ : nullptr;
    }
    std::size_t size() const noexcept
    {
        return list_.size() ? list_.size() : n_;
    }
    int error() const noexcept
    {
        return err_;
    }

  private:
    std::initializer_list<tt_attr> list_;
    const tt_attr *p_ = nullptr;
    std::size_t n_ = 0;
    int err_ = 0;
};

namespace detail
{
/* The first error among the string and attribute arguments of an event call. */
inline int first_error(std::initializer_list<int> errs) noexcept
{
    for (int e : errs) {
        if (e) {
            return e;
        }
    }
    return 0;
}

/* Exceptions in flight, to tell an unwinding scope from a normal exit. */
inline int uncaught() noexcept
{
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
    return std::uncaught_exceptions();
#else
    return 0;
#endif
}
} // namespace detail

/* ---------------------------------------------------------------------------------------------
 * Configuration
 */
class config
{
  public:
    /* The defaults; error() is TT_ENOMEM if the configuration could not be made. */
    config() noexcept : err_(tt_config_new(&c_))
    {
    }
    ~config()
    {
        tt_config_free(c_);
    }
    config(const config &) = delete;
    config &operator=(const config &) = delete;
    config(config &&o) noexcept : c_(std::exchange(o.c_, nullptr)), err_(o.err_)
    {
    }
    config &operator=(config &&o) noexcept
    {
        if (this != &o) {
            tt_config_free(c_);
            c_ = std::exchange(o.c_, nullptr);
            err_ = o.err_;
        }
        return *this;
    }

    /* tt_config_set; on TT_EINVAL last_error() says why. */
    int set(zstr key, zstr value) noexcept
    {
        if (!c_) {
            return err_ ? err_ : TT_EINVAL;
        }
        if (int e = detail::first_error({key.error(), value.error()})) {
            return e;
        }
        return tt_config_set(c_, key.get(), value.get());
    }
    /* tt_config_from_env: TELLTALE_<KEY> variables. */
    int from_env() noexcept
    {
        return c_ ? tt_config_from_env(c_) : TT_EINVAL;
    }
    /* The value of a key (borrowed, valid until the next set) or nullptr. */
    const char *get(zstr key) const noexcept
    {
        return c_ ? tt_config_get(c_, key.get()) : nullptr;
    }
    const char *last_error() const noexcept
    {
        return c_ ? tt_config_error(c_) : "";
    }
    int error() const noexcept
    {
        return err_;
    }
    const tt_config *native() const noexcept
    {
        return c_;
    }

  private:
    tt_config *c_ = nullptr;
    int err_;
};

/* ---------------------------------------------------------------------------------------------
 * Client
 */
class client
{
  public:
    /* Closed; open() opens it. */
    client() noexcept = default;
    /* Closes with close_timeout_ms() (default 5000) if still open. */
    ~client()
    {
        close();
    }
    client(const client &) = delete;
    client &operator=(const client &) = delete;
    client(client &&o) noexcept
        : c_(std::exchange(o.c_, nullptr)), close_timeout_ms_(o.close_timeout_ms_)
    {
    }
    client &operator=(client &&o) noexcept
    {
        if (this != &o) {
            close();
            c_ = std::exchange(o.c_, nullptr);
            close_timeout_ms_ = o.close_timeout_ms_;
        }
        return *this;
    }

    /* tt_open with cfg (copied); closes a client this one held first. */
    int open(const config &cfg) noexcept
    {
        close();
        if (cfg.error()) {
            return cfg.error();
        }
        return tt_open(&c_, cfg.native());
    }
    /* tt_close within timeout_ms; 0 when everything emitted was acknowledged, 0 if not open. */
    int close(uint32_t timeout_ms) noexcept
    {
        return c_ ? tt_close(std::exchange(c_, nullptr), timeout_ms) : 0;
    }
    int close() noexcept
    {
        return close(close_timeout_ms_);
    }
    /* tt_close_stats: close, and the final counters in out. */
    int close(uint32_t timeout_ms, tt_stats &out) noexcept
    {
        if (!c_) {
            std::memset(&out, 0, sizeof out);
            return 0;
        }
        return tt_close_stats(std::exchange(c_, nullptr), timeout_ms, &out, sizeof out);
    }
    void set_close_timeout_ms(uint32_t ms) noexcept
    {
        close_timeout_ms_ = ms;
    }
    uint32_t close_timeout_ms() const noexcept
    {
        return close_timeout_ms_;
    }

    int flush(uint32_t timeout_ms) noexcept
    {
        return tt_flush(c_, timeout_ms);
    }
    int stats(tt_stats &out) noexcept
    {
        return tt_stats_get(c_, &out, sizeof out);
    }

    int log(zstr session, tt_severity severity, zstr message, attr_list a = {}) noexcept
    {
        if (int e = detail::first_error({session.error(), message.error(), a.error()})) {
            return e;
        }
        return tt_log(c_, session.get(), severity, message.get(), a.data(), a.size());
    }
    int metric(zstr session, tt_metric_kind kind, zstr name, double value, zstr unit = nullptr,
               attr_list a = {}) noexcept
    {
        if (int e = detail::first_error({session.error(), name.error(), unit.error(), a.error()})) {
            return e;
        }
        return tt_metric(c_, session.get(), kind, name.get(), value, unit.get(), a.data(),
                         a.size());
    }
    int guard_policy_set(const tt_guard_policy &p) noexcept
    {
        return tt_guard_policy_set(c_, &p);
    }
    int guard_policy_get(tt_guard_policy &out) noexcept
    {
        return tt_guard_policy_get(c_, &out);
    }

    tt_client *native() const noexcept
    {
        return c_;
    }
    explicit operator bool() const noexcept
    {
        return c_ != nullptr;
    }

  private:
    tt_client *c_ = nullptr;
    uint32_t close_timeout_ms_ = 5000;
};

/* ---------------------------------------------------------------------------------------------
 * Steps: begun by the constructor, ended exactly once: by end(), or when the scope is left.
 * Leaving it normally ends the step with what fail() / set_status() / set_result_bytes() set
 * (TT_STATUS_OK, -1 and no error by default); leaving it by an exception ends it with
 * TT_STATUS_ERROR and the error "exception" unless fail() gave one. The error text is copied
 * (its first 255 bytes, cut at a UTF-8 character boundary).
 */
/* A W3C traceparent for a step (since 0.5; docs/api.md, "Trace context"): the step becomes a
 * child span of the application's span. */
struct traceparent {
    const char *value;
};

class step
{
  public:
    step(client &c, tt_step_kind kind, zstr name, zstr query = nullptr, zstr session = nullptr,
         const step *parent = nullptr) noexcept
        : step(c, traceparent{nullptr}, kind, name, query, session, parent)
    {
    }
    /* A step begun with a traceparent (tt_step_begin_ctx; an invalid one is begin_error()
     * TT_EINVAL and the step does not begin). Since 0.5. */
    step(client &c, traceparent tp, tt_step_kind kind, zstr name, zstr query = nullptr,
         zstr session = nullptr, const step *parent = nullptr) noexcept
        : c_(c.native()), unwinding_(detail::uncaught())
    {
        std::memset(&s_, 0, sizeof s_);
        err_ = detail::first_error({name.error(), query.error(), session.error()});
        if (!err_) {
            const tt_step *ps = parent ? &parent->s_ : nullptr;
            err_ = tp.value
                       ? tt_step_begin_ctx(c_, &s_, ps, tp.value, kind, session.get(), name.get(),
                                           query.get())
                       : tt_step_begin(c_, &s_, ps, kind, session.get(), name.get(), query.get());
        }
        /* tt_step_begin fills the step even when the event was dropped: end it all the same. */
        ended_ = s_.id == 0;
    }
    ~step()
    {
        if (ended_) {
            return;
        }
        if (detail::uncaught() > unwinding_ && status_ == TT_STATUS_OK) {
            status_ = TT_STATUS_ERROR;
            if (!error_[0]) {
                set_error("exception");
            }
        }
        end();
    }
    step(const step &) = delete;
    step &operator=(const step &) = delete;

    /* The result of the begin call (0, or the C API's error: the event may have been dropped). */
    int begin_error() const noexcept
    {
        return err_;
    }
    /* The step's id (0 if it could not begin), for a child's parent or a correlation. */
    uint64_t id() const noexcept
    {
        return s_.id;
    }
    const tt_step &native() const noexcept
    {
        return s_;
    }
    /* The step's W3C span id (tt_step_span_id; 0 if it could not begin). Since 0.5. */
    uint64_t span_id() const noexcept
    {
        return tt_step_span_id(c_, &s_);
    }
    bool ended() const noexcept
    {
        return ended_;
    }

    /* What the end reports; a later call replaces an earlier one. */
    void set_status(tt_status st, std::string_view error = {}) noexcept
    {
        status_ = st;
        set_error(error);
    }
    void fail(std::string_view error) noexcept
    {
        set_status(TT_STATUS_ERROR, error);
    }
    void set_result_bytes(int64_t n) noexcept
    {
        result_bytes_ = n;
    }

    /* End now with what was set; a second end returns TT_EINVAL and emits nothing. */
    int end() noexcept
    {
        if (ended_) {
            return TT_EINVAL;
        }
        ended_ = true;
        return tt_step_end(c_, &s_, status_, result_bytes_, error_[0] ? error_ : nullptr);
    }
    int end(tt_status st, int64_t result_bytes = -1, std::string_view error = {}) noexcept
    {
        set_status(st, error);
        result_bytes_ = result_bytes;
        return end();
    }

  private:
    void set_error(std::string_view e) noexcept
    {
        std::size_t n = e.size() < sizeof error_ ? e.size() : sizeof error_ - 1;
        /* Do not cut a UTF-8 sequence: back up over continuation bytes. */
        if (n < e.size()) {
            while (n > 0 && (static_cast<unsigned char>(e[n]) & 0xC0u) == 0x80u) {
                n--;
            }
        }
        if (n) {
            std::memcpy(error_, e.data(), n);
        }
        error_[n] = '\0';
    }

    tt_client *c_;
    tt_step s_;
    int err_ = 0;
    int unwinding_;
    bool ended_ = false;
    tt_status status_ = TT_STATUS_OK;
    int64_t result_bytes_ = -1;
    char error_[256] = {0};
};

/* ---------------------------------------------------------------------------------------------
 * Responses: begun by the constructor, ended (summary emitted, handle freed) by end() or when
 * the scope is left, normally or by an exception.
 */
class response
{
  public:
    response(client &c, zstr session, zstr model, attr_list params = {}) noexcept
    {
        err_ = detail::first_error({session.error(), model.error(), params.error()});
        if (!err_) {
            err_ = tt_response_begin(c.native(), &r_, session.get(), model.get(), params.data(),
                                     params.size());
        }
    }
    ~response()
    {
        if (r_) {
            tt_response_end(std::exchange(r_, nullptr), nullptr);
        }
    }
    response(const response &) = delete;
    response &operator=(const response &) = delete;
    response(response &&o) noexcept : r_(std::exchange(o.r_, nullptr)), err_(o.err_)
    {
    }
    response &operator=(response &&o) = delete;

    /* The result of tt_response_begin; when not 0, the other calls return TT_EINVAL. */
    int begin_error() const noexcept
    {
        return err_;
    }
    explicit operator bool() const noexcept
    {
        return r_ != nullptr;
    }

    /* A token from one row of n logits (contiguous floats); the verdict goes to *verdict. */
    int token(const float *logits, std::size_t n, int32_t chosen, tt_verdict *verdict = nullptr,
              tt_token_stats *stats = nullptr) noexcept
    {
        return tt_response_token(r_, logits, n, 1, TT_DTYPE_F32, chosen, verdict, stats);
    }
    /* A token from a strided row of any dtype. */
    int token(const void *logits, std::size_t n, std::size_t stride, tt_dtype dtype, int32_t chosen,
              tt_verdict *verdict = nullptr, tt_token_stats *stats = nullptr) noexcept
    {
        return tt_response_token(r_, logits, n, stride, dtype, chosen, verdict, stats);
    }
    /* A token from a hosted model's log-probs (top_ids may be nullptr). */
    int token_logprobs(int32_t chosen, float chosen_logprob, const int32_t *top_ids,
                       const float *top_logprobs, std::size_t k, tt_verdict *verdict = nullptr,
                       tt_token_stats *stats = nullptr) noexcept
    {
        return tt_response_token_logprobs(r_, chosen, chosen_logprob, top_ids, top_logprobs, k,
                                          verdict, stats);
    }
    /* End now; summary may be nullptr. A second end returns TT_EINVAL. */
    int end(tt_response_summary *summary = nullptr) noexcept
    {
        return r_ ? tt_response_end(std::exchange(r_, nullptr), summary) : TT_EINVAL;
    }

  private:
    tt_response *r_ = nullptr;
    int err_ = 0;
};

} // namespace telltale

#endif /* TELLTALE_HPP */
