"""2-d max and average pooling, forward and backward (NCHW, PyTorch semantics, floor mode).

One work item per (image, channel) plane, so the backward scatter-adds of overlapping windows
never race. Windows are walked row by row: for each kernel tap the loop over output columns is
innermost, and each output keeps its taps in (i, j) order, so ties go to the first maximum as in
PyTorch (and, as there, a NaN wins: the last NaN of a window). The common 2x2 stride-2 window
has faster kernels of its own (pool_pairs.py).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .parallel import sized_kernel


@njit(cache=True)
def _col_ranges(kw, w, sw, pw, dw, ow_):
    """Per kernel column j, the output columns [lo[j], hi[j]) whose tap lands inside a row of
    width w. Computed once per call: integer division in the row loops was the main cost."""
    lo = np.empty(kw, dtype=np.int64)
    hi = np.empty(kw, dtype=np.int64)
    for j in range(kw):
        shift = pw - j * dw
        lo[j] = max(0, -((-shift) // sw))
        hi[j] = max(lo[j], min(ow_, (w - 1 + shift) // sw + 1))
    return lo, hi


# Row helpers: ``xrow[(lo + q) * sw + base]`` for q < hi - lo, written on views that start at
# the first in-bounds element, with the common strides 1 and 2 as literal constants. Numba then
# knows every index is non-negative (no wraparound selects) and LLVM sees the stride, so the
# loops vectorize (measured ~10x over the same loop with a runtime stride and offset).


@njit(cache=True, inline="always")
def _max_into(orow, xrow, lo, hi, sw, base):
    """orow[lo:hi] = max(orow[lo:hi], the strided row slice); NaN wins, as in PyTorch."""
    xs = xrow[lo * sw + base :]
    os = orow[lo:hi]
    if sw == 1:
        for q in range(hi - lo):
            v = xs[q]
            o = os[q]
            os[q] = v if (v > o or v != v) else o
    elif sw == 2:
        for q in range(hi - lo):
            v = xs[2 * q]
            o = os[q]
            os[q] = v if (v > o or v != v) else o
    else:
        for q in range(hi - lo):
            v = xs[q * sw]
            o = os[q]
            os[q] = v if (v > o or v != v) else o


@njit(cache=True, inline="always")
def _add_into(orow, xrow, lo, hi, sw, base):
    """orow[lo:hi] += the strided row slice."""
    xs = xrow[lo * sw + base :]
    os = orow[lo:hi]
    if sw == 1:
        for q in range(hi - lo):
            os[q] += xs[q]
    elif sw == 2:
        for q in range(hi - lo):
            os[q] += xs[2 * q]
    else:
        for q in range(hi - lo):
            os[q] += xs[q * sw]


@sized_kernel(size_arg=0)
def max_pool2d_forward(x, out, kh, kw, sh, sw, ph, pw, dh, dw):
    """out (N, C, OH, OW) = max of x (N, C, H, W) over each window; padding counts as -inf."""
    n_, c_, h, w = x.shape
    oh_, ow_ = out.shape[2], out.shape[3]
    lo, hi = _col_ranges(kw, w, sw, pw, dw, ow_)
    for t in prange(n_ * c_):
        src = x[t // c_, t % c_]
        dst = out[t // c_, t % c_]
        dst[:, :] = -np.inf
        for oh in range(oh_):
            orow = dst[oh]
            for i in range(kh):
                ih = oh * sh - ph + i * dh
                if 0 <= ih < h:
                    for j in range(kw):
                        _max_into(orow, src[ih], lo[j], hi[j], sw, j * dw - pw)


@njit(cache=True)
def _tap_ranges(k, size, stride, pad, dil, out):
    """Per output position o, the taps [lo[o], hi[o]) that land inside [0, size)."""
    lo = np.empty(out, dtype=np.int64)
    hi = np.empty(out, dtype=np.int64)
    for o in range(out):
        a = 0
        while a < k and o * stride - pad + a * dil < 0:
            a += 1
        b = k
        while b > a and o * stride - pad + (b - 1) * dil >= size:
            b -= 1
        lo[o] = a
        hi[o] = b
    return lo, hi


@njit(cache=True, inline="always")
def _first_max(src, w, oh, ow, ilo, ihi, jlo, jhi, sh, sw, ph, pw, dh, dw):
    """Flat index in the plane ``src`` (H*W) of window (oh, ow)'s first maximum, or -1 for a
    window with no tap inside: a branchless running first maximum where, as in PyTorch, a NaN
    wins (the last one)."""
    arg = -1
    best = src[0]
    for i in range(ilo[oh], ihi[oh]):
        base = (oh * sh - ph + i * dh) * w + ow * sw - pw
        for j in range(jlo[ow], jhi[ow]):
            v = src[base + j * dw]
            take = arg < 0 or v > best or v != v
            best = v if take else best
            arg = base + j * dw if take else arg
    return arg


@sized_kernel(size_arg=2)
def max_pool2d_backward(gy, x, gx, kh, kw, sh, sw, ph, pw, dh, dw):
    """gx (N, C, H, W) = dL/dx of max pooling, overwritten: each gy element goes to the first
    maximum of its window (recomputed from x); overlapping windows accumulate."""
    n_, c_, h, w = x.shape
    oh_, ow_ = gy.shape[2], gy.shape[3]
    ilo, ihi = _tap_ranges(kh, h, sh, ph, dh, oh_)
    jlo, jhi = _tap_ranges(kw, w, sw, pw, dw, ow_)
    for t in prange(n_ * c_):
        src = x[t // c_, t % c_].reshape(h * w)
        g = gy[t // c_, t % c_]
        dst = gx[t // c_, t % c_].reshape(h * w)
        dst[:] = 0
        for oh in range(oh_):
            for ow in range(ow_):
                arg = _first_max(src, w, oh, ow, ilo, ihi, jlo, jhi, sh, sw, ph, pw, dh, dw)
                if arg >= 0:
                    dst[arg] += g[oh, ow]


@njit(cache=True, inline="always")
def _first_max_tap(src, w, oh, ow, ilo, ihi, jlo, jhi, kw, sh, sw, ph, pw, dh, dw):
    """``_first_max`` as the window's row-major tap i * KW + j (0 for a window with no tap
    inside), counted as it scans: no division per window."""
    found = False
    tap = 0
    best = src[0]
    for i in range(ilo[oh], ihi[oh]):
        base = (oh * sh - ph + i * dh) * w + ow * sw - pw
        for j in range(jlo[ow], jhi[ow]):
            v = src[base + j * dw]
            take = not found or v > best or v != v
            best = v if take else best
            tap = i * kw + j if take else tap
            found = True
    return tap


@sized_kernel(size_arg=0)
def max_pool2d_taps(x, out, kh, kw, sh, sw, ph, pw, dh, dw):
    """out (N, C, OH, OW) uint8 = the row-major tap (i * KW + j) of each window's first
    maximum of x, as max_pool2d_backward finds it."""
    n_, c_, h, w = x.shape
    oh_, ow_ = out.shape[2], out.shape[3]
    ilo, ihi = _tap_ranges(kh, h, sh, ph, dh, oh_)
    jlo, jhi = _tap_ranges(kw, w, sw, pw, dw, ow_)
    for t in prange(n_ * c_):
        src = x[t // c_, t % c_].reshape(h * w)
        dst = out[t // c_, t % c_]
        for oh in range(oh_):
            for ow in range(ow_):
                dst[oh, ow] = _first_max_tap(
                    src, w, oh, ow, ilo, ihi, jlo, jhi, kw, sh, sw, ph, pw, dh, dw
                )


@sized_kernel(size_arg=2)
def max_pool2d_grad_taps(gy, taps, gx, kh, kw, sh, sw, ph, pw, dh, dw):
    """gx (N, C, H, W) = dL/dx of max pooling, overwritten: each gy element added at its
    window's tap (from max_pool2d_taps); overlapping windows accumulate."""
    n_, c_, h, w = gx.shape
    oh_, ow_ = gy.shape[2], gy.shape[3]
    for t in prange(n_ * c_):
        g = gy[t // c_, t % c_]
        tp = taps[t // c_, t % c_]
        dst = gx[t // c_, t % c_].reshape(h * w)
        dst[:] = 0
        for oh in range(oh_):
            for ow in range(ow_):
                i, j = divmod(np.int64(tp[oh, ow]), kw)
                dst[(oh * sh - ph + i * dh) * w + ow * sw - pw + j * dw] += g[oh, ow]


@njit(cache=True, inline="always")
def _divisor(oh, ow, kh, kw, sh, sw, ph, pw, h, w, count_include_pad):
    if count_include_pad:
        return kh * kw
    h0 = oh * sh - ph
    w0 = ow * sw - pw
    return (min(h0 + kh, h) - max(h0, 0)) * (min(w0 + kw, w) - max(w0, 0))


@sized_kernel(size_arg=0)
def avg_pool2d_forward(x, out, kh, kw, sh, sw, ph, pw, count_include_pad):
    """out (N, C, OH, OW) = mean of x over each window. The divisor is kh*kw when
    ``count_include_pad`` else the number of in-bounds elements (PyTorch semantics)."""
    n_, c_, h, w = x.shape
    oh_, ow_ = out.shape[2], out.shape[3]
    lo, hi = _col_ranges(kw, w, sw, pw, 1, ow_)
    for t in prange(n_ * c_):
        src = x[t // c_, t % c_]
        dst = out[t // c_, t % c_]
        dst[:, :] = 0
        for oh in range(oh_):
            orow = dst[oh]
            for i in range(kh):
                ih = oh * sh - ph + i
                if 0 <= ih < h:
                    for j in range(kw):
                        _add_into(orow, src[ih], lo[j], hi[j], sw, j - pw)
            for ow in range(ow_):
                orow[ow] /= _divisor(oh, ow, kh, kw, sh, sw, ph, pw, h, w, count_include_pad)


@sized_kernel(size_arg=1)
def avg_pool2d_backward(gy, gx, kh, kw, sh, sw, ph, pw, count_include_pad):
    """gx (N, C, H, W) = dL/dx of average pooling, overwritten; overlaps accumulate."""
    n_, c_, h, w = gx.shape
    oh_, ow_ = gy.shape[2], gy.shape[3]
    lo, hi = _col_ranges(kw, w, sw, pw, 1, ow_)
    for t in prange(n_ * c_):
        g = gy[t // c_, t % c_]
        dst = gx[t // c_, t % c_]
        dst[:, :] = 0
        share = np.empty(ow_, dtype=gy.dtype)
        for oh in range(oh_):
            for ow in range(ow_):
                share[ow] = g[oh, ow] / _divisor(
                    oh, ow, kh, kw, sh, sw, ph, pw, h, w, count_include_pad
                )
            for i in range(kh):
                ih = oh * sh - ph + i
                if 0 <= ih < h:
                    drow = dst[ih]
                    for j in range(kw):
                        base = j - pw
                        for ow in range(lo[j], hi[j]):
                            drow[ow * sw + base] += share[ow]
