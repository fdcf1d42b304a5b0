"""PyTorch tensors as logits (internal; docs/python.md "PyTorch").

telltale never imports torch: a tensor is recognised through the torch module that the caller
already imported (sys.modules). A CPU tensor is read in place by the library (its data_ptr and
stride, no copy). A tensor on an accelerator is not copied to the host: the statistics of each row
(tt_token_stats_compute's definitions: log-prob and rank of the chosen token, entropy, margin,
NaN count, flags, the top-k) are computed on the device with torch operations, in row chunks
whose temporaries stay under DEVICE_TEMP_BYTES, and only per-row scalars and the top-k cross to
the host; tt_response_token_stats then adds them to the response.
"""

import math
import sys

from . import _lib

F32, F16, BF16 = 1, 2, 3
FLAG_NAN, FLAG_DEGENERATE, FLAG_CHOSEN_INVALID, FLAG_INF = 0x1, 0x4, 0x8, 0x10
FLT_MAX = 3.4028234663852886e38
UINT32_MAX = (1 << 32) - 1
# The device's temporaries per chunk of rows: about three [rows, V] float64 tensors.
DEVICE_TEMP_BYTES = 96 << 20

# Tests set this to send CPU tensors through the accelerator path (there is no accelerator on
# the test machines; the path is the same torch code on any device).
force_device_path = False


def module_of(a):
    """The torch module when a is a torch.Tensor, else None (torch is never imported here)."""
    t = sys.modules.get("torch")
    if t is not None and isinstance(a, t.Tensor):
        return t
    return None


def _dtype(torch, t):
    if t.layout != torch.strided:
        raise TypeError("telltale: logits must be a dense (strided) tensor, got %s" % t.layout)
    dt = {torch.float32: F32, torch.float16: F16, torch.bfloat16: BF16}.get(t.dtype)
    if dt is None:
        raise TypeError("telltale: logits must be float32, float16 or bfloat16, got %s" % t.dtype)
    return dt


def on_host(t):
    return t.device.type == "cpu" and not force_device_path


def row(torch, t):
    """(ptr, n, stride in elements, dtype) of a 1-D CPU tensor, read in place; None when the
    statistics must be computed on the tensor's device."""
    dt = _dtype(torch, t)
    if t.dim() != 1:
        raise ValueError("telltale: logits must be one row (1-D), got shape %s" % (tuple(t.shape),))
    n = t.shape[0]
    if n == 0:
        raise ValueError("telltale: empty logits row")
    if not on_host(t):
        return None
    st = t.stride(0) if n > 1 else 1
    if st <= 0:
        raise ValueError("telltale: logits stride %d elements is not positive" % st)
    return t.data_ptr(), n, st, dt


def matrix(torch, t):
    """(ptr, rows, n, stride, row_stride, dtype) of a 2-D CPU tensor, read in place; None when
    the statistics must be computed on the tensor's device."""
    dt = _dtype(torch, t)
    if t.dim() != 2:
        raise ValueError("telltale: batched logits must be [batch, vocab] (2-D), got shape %s"
                         % (tuple(t.shape),))
    b, n = t.shape
    if n == 0:
        raise ValueError("telltale: empty logits rows")
    if not on_host(t):
        return None
    if b == 0:
        return 0, 0, n, 1, n, dt
    st = t.stride(1) if n > 1 else 1
    rs = t.stride(0) if b > 1 else n
    if st <= 0 or rs < 0:
        raise ValueError("telltale: logits strides %s are not positive" % (t.stride(),))
    return t.data_ptr(), b, n, st, rs, dt


def device_stats(torch, x, chosen):
    """A _lib.TokenStats per row of x ([B, V], on any device) for the chosen ids (B ints)."""
    b, v = x.shape
    rows = max(1, DEVICE_TEMP_BYTES // (24 * v))
    out = []
    for b0 in range(0, b, rows):
        out += _chunk(torch, x[b0:b0 + rows], chosen[b0:b0 + rows])
    return out


def _chunk(torch, x, chosen):
    dev = x.device
    # Sums in float64 where the device has it (as the library sums in double).
    acc = torch.float32 if dev.type == "mps" else torch.float64
    b, v = x.shape
    k = min(_lib.TOPK_MAX, v)
    inf = math.inf
    with torch.no_grad():
        y = x.to(acc)  # the chunk in the accumulation type, on the device
        nan = torch.isnan(y)
        nans = nan.sum(1, dtype=torch.int32)
        y.masked_fill_(nan, -inf)
        del nan
        ch = torch.tensor(chosen, dtype=torch.long, device=dev)
        ok = (ch >= 0) & (ch < v)
        xc = y.gather(1, ch.clamp(0, v - 1).unsqueeze(1)).squeeze(1)
        xc = xc.masked_fill(~ok, -inf)
        above = (y > xc.unsqueeze(1)).sum(1, dtype=torch.int32)
        ninf = torch.isposinf(y).sum(1, dtype=torch.int32)
        m = y.amax(1)
        mz = torch.nan_to_num(m, posinf=0.0, neginf=0.0)  # rows of +inf or -inf: not used
        z = y - mz.unsqueeze(1)  # -inf stays -inf: e = 0 there
        e = torch.exp(z)
        s = e.sum(1)
        z.clamp_(min=-1e300)  # 0 * -inf would be NaN; 0 * -1e300 is 0
        d = e.mul_(z).sum(1)
        del z, e
        vals, idx = y.topk(k, dim=1)
        kth = vals[:, -1]
        # Entries equal to the k-th value beyond the k taken: torch.topk orders ties as it
        # likes, the library by lower id, so such rows fetch the lowest ids of that value.
        ge = (y >= kth.unsqueeze(1)).sum(1, dtype=torch.int32)
        scal = torch.stack([nans.to(acc), ninf.to(acc), above.to(acc), m, s, d, xc, ge.to(acc)],
                           1).cpu().tolist()
        vals = vals.cpu().tolist()
        idx = idx.cpu().tolist()
        for i in range(b):
            extra = int(scal[i][7]) - k
            if extra > 0 and vals[i][-1] > -inf:
                hit = torch.nonzero(y[i] == y.new_tensor(vals[i][-1])).squeeze(1)
                need = sum(1 for x_ in vals[i] if x_ == vals[i][-1])
                ids = hit[:need].cpu().tolist()  # nonzero lists ids in increasing order
                keep = [(x_, j) for x_, j in zip(vals[i], idx[i]) if x_ != vals[i][-1]]
                keep += [(vals[i][-1], j) for j in ids]
                vals[i] = [x_ for x_, _ in keep]
                idx[i] = [j for _, j in keep]
        del y
    return [_finish(scal[i], vals[i], idx[i], chosen[i], v) for i in range(b)]


def _finish(sc, vals, idx, chosen, v):
    nans, ninf, above, m, s, d, xc, _ = sc
    st = _lib.TokenStats()
    st.chosen = chosen
    st.rank = -1
    st.logprob = -math.inf
    ok = 0 <= chosen < v
    flags = FLAG_NAN if nans else 0
    st.nan_count = min(int(nans), UINT32_MAX)
    if not ok or xc == -math.inf:
        flags |= FLAG_CHOSEN_INVALID
    if ok:
        st.rank = int(above)
    top = sorted((-x, j) for x, j in zip(vals, idx) if x > -math.inf)[:_lib.TOPK_MAX]
    if m == math.inf:  # +inf entries share the mass equally
        flags |= FLAG_INF
        n_inf = int(ninf)
        p = 1.0 / n_inf
        st.entropy = math.log(n_inf)
        st.margin = 0.0 if n_inf >= 2 else 1.0
        if xc == math.inf:
            st.prob = p
            st.logprob = -math.log(n_inf)
        st.k = len(top)
        for i, (nx, j) in enumerate(top):
            st.topk_ids[i] = j
            st.topk_probs[i] = p if -nx == math.inf else 0.0
        st.flags = flags
        return st
    if m == -math.inf:  # every entry -inf or NaN
        st.flags = flags | FLAG_DEGENERATE
        return st
    log_s = math.log1p(s - 1.0)
    st.entropy = log_s - d / s
    if ok and xc > -math.inf:
        lp = (xc - m) - log_s
        st.logprob = -FLT_MAX if lp < -FLT_MAX else lp
        st.prob = math.exp(lp)
    inv_s = 1.0 / s
    probs = [math.exp(-nx - m) * inv_s for nx, _ in top]
    st.margin = (probs[0] if probs else 0.0) - (probs[1] if len(probs) > 1 else 0.0)
    st.k = len(top)
    for i, (_, j) in enumerate(top):
        st.topk_ids[i] = j
        st.topk_probs[i] = probs[i]
    st.flags = flags
    return st
