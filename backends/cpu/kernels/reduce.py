"""Reductions, softmax and cross-entropy over the middle axis of an (outer, R, inner) array.

The caller reshapes every problem to this canonical form: reducing axes ``a..b`` of a
C-contiguous array is reducing the middle axis of (prod(shape[:a]), prod(shape[a:b+1]),
prod(shape[b+1:])). With inner > 1 the loops run over the contiguous inner axis (vectorized);
with inner == 1 (the last axis) a long row is summed as LANES independent partial sums folded
pairwise, which vectorizes without fastmath and is more accurate than one running sum.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .parallel import sized_kernel

LANES = 64  # partial sums per row; loops this long vectorize (LLVM's loop vectorizer)
INNER_BLOCK = 512  # inner-axis elements per work item when inner > 1


@njit(cache=True, inline="always")
def _fold(acc):
    h = LANES // 2
    while h >= 1:
        for v in range(h):
            acc[v] += acc[v + h]
        h //= 2
    return acc[0]


@njit(inline="always")
def _value(a, b, m, p):
    return a[p]


@njit(inline="always")
def _product(a, b, m, p):
    return a[p] * b[p]


@njit(inline="always")
def _shifted_exp(a, b, m, p):
    return np.exp(a[p] - m)


@njit(inline="always")
def _self_difference(a, b, m, p):
    return a[p] - a[p]  # 0, or NaN for a NaN or an infinity (not folded: no fastmath)


@njit(cache=True, inline="always")
def _lane_reduce(term, a, b, m):
    """Sum of ``term(a, b, m, p)`` over p < len(a): LANES partial sums folded pairwise (short
    rows: one running sum). ``term`` is inlined, so each caller's loop vectorizes."""
    acc = np.zeros(LANES, dtype=a.dtype)
    n = a.shape[0]
    if n < 2 * LANES:
        s = acc[0]
        for p in range(n):
            s += term(a, b, m, p)
        return s
    full = n - n % LANES
    for p0 in range(0, full, LANES):
        ap = a[p0 : p0 + LANES]
        bp = b[p0 : p0 + LANES]
        for v in range(LANES):
            acc[v] += term(ap, bp, m, v)
    for p in range(full, n):
        acc[p - full] += term(a, b, m, p)
    return _fold(acc)


@njit(cache=True)
def lane_sum(a):
    """Sum of a contiguous 1-d array: LANES partial sums folded pairwise (short rows: one
    running sum)."""
    return _lane_reduce(_value, a, a, 0)


@njit(cache=True)
def lane_dot(a, b):
    """Dot product of two contiguous 1-d arrays, summed as in lane_sum."""
    return _lane_reduce(_product, a, b, 0)


@njit(cache=True)
def all_finite(a):
    """Whether a contiguous 1-d array holds no NaN and no infinity (one vectorized pass)."""
    return _lane_reduce(_self_difference, a, a, 0) == 0


@njit(cache=True, inline="always")
def _row_max(a):
    m = a[0]
    for p in range(1, a.shape[0]):
        v = a[p]
        m = v if (v > m or v != v) else m
    return m


@njit(cache=True)
def _exp_sum(a, m):
    """Sum of exp(a - m) over a contiguous 1-d array, summed as in lane_sum."""
    return _lane_reduce(_shifted_exp, a, a, m)


@njit(cache=True, inline="always")
def _n_blocks(i_):
    return (i_ + INNER_BLOCK - 1) // INNER_BLOCK


@njit(cache=True, inline="always")
def _block(t, nb, i_):
    """Work item t of the (outer, inner block) grid: (o, i0, i1)."""
    o = t // nb
    i0 = (t % nb) * INNER_BLOCK
    return o, i0, min(i_, i0 + INNER_BLOCK)


@sized_kernel(size_arg=0)
def _reduce_middle_impl(x, out, take_max):
    o_, r_, i_ = x.shape
    if i_ == 1:
        x2 = x.reshape(o_, r_)
        for o in prange(o_):
            out[o, 0] = _row_max(x2[o]) if take_max else lane_sum(x2[o])
    else:
        nb = _n_blocks(i_)
        for t in prange(o_ * nb):
            o, i0, i1 = _block(t, nb, i_)
            dst = out[o, i0:i1]
            if take_max:
                dst[:] = x[o, 0, i0:i1]
                for r in range(1, r_):
                    src = x[o, r, i0:i1]
                    for i in range(i1 - i0):
                        v = src[i]
                        if v > dst[i] or v != v:
                            dst[i] = v
            else:
                dst[:] = 0
                for r in range(r_):
                    src = x[o, r, i0:i1]
                    for i in range(i1 - i0):
                        dst[i] += src[i]


def sum_middle(x, out):
    """out (O, I) = x (O, R, I) summed over R."""
    _reduce_middle_impl(x, out, False)


def max_middle(x, out):
    """out (O, I) = x (O, R, I) maximized over R (NaN propagates, as numpy and PyTorch)."""
    _reduce_middle_impl(x, out, True)


@sized_kernel(size_arg=0)
def sum_outer_inner(x, out):
    """out (R,) = x (O, R, I) summed over O and I (e.g. a conv bias gradient)."""
    o_, r_ = x.shape[:2]
    for r in prange(r_):
        total = np.zeros(1, dtype=x.dtype)
        for o in range(o_):
            total[0] += lane_sum(x[o, r])
        out[r] = total[0]


@njit(cache=True, inline="always")
def _exp_shifted(src, dst, m):
    """dst = exp(src - m); returns the sum of dst."""
    for p in range(src.shape[0]):
        dst[p] = np.exp(src[p] - m)
    return lane_sum(dst)


@sized_kernel(size_arg=0)
def _softmax_impl(x, out, log):
    o_, r_, i_ = x.shape
    if i_ == 1:
        x2 = x.reshape(o_, r_)
        y2 = out.reshape(o_, r_)
        for o in prange(o_):
            src = x2[o]
            dst = y2[o]
            m = _row_max(src)
            s = _exp_shifted(src, dst, m)
            if log:
                ls = np.log(s)
                for p in range(r_):
                    dst[p] = src[p] - m - ls
            else:
                for p in range(r_):
                    dst[p] = dst[p] / s
    else:
        nb = _n_blocks(i_)
        for t in prange(o_ * nb):
            o, i0, i1 = _block(t, nb, i_)
            w = i1 - i0
            m = x[o, 0, i0:i1].copy()
            for r in range(1, r_):
                src = x[o, r, i0:i1]
                for i in range(w):
                    if src[i] > m[i] or src[i] != src[i]:
                        m[i] = src[i]
            s = np.zeros(w, dtype=x.dtype)
            for r in range(r_):
                src = x[o, r, i0:i1]
                dst = out[o, r, i0:i1]
                for i in range(w):
                    e = np.exp(src[i] - m[i])
                    dst[i] = e
                    s[i] += e
            if log:
                for i in range(w):
                    s[i] = np.log(s[i])
            for r in range(r_):
                src = x[o, r, i0:i1]
                dst = out[o, r, i0:i1]
                if log:
                    for i in range(w):
                        dst[i] = src[i] - m[i] - s[i]
                else:
                    for i in range(w):
                        dst[i] = dst[i] / s[i]


def softmax_middle(x, out):
    """out = softmax of x (O, R, I) over R: exp(x - max) / sum(exp(x - max))."""
    _softmax_impl(x, out, False)


def log_softmax_middle(x, out):
    """out = log_softmax of x (O, R, I) over R: x - max - log(sum(exp(x - max)))."""
    _softmax_impl(x, out, True)


@sized_kernel(size_arg=0)
def _softmax_backward_impl(gy, y, gx, log):
    # softmax:      gx = y * (gy - sum(gy * y))
    # log_softmax:  gx = gy - exp(y) * sum(gy)
    o_, r_, i_ = gy.shape
    if i_ == 1:
        g2 = gy.reshape(o_, r_)
        y2 = y.reshape(o_, r_)
        d2 = gx.reshape(o_, r_)
        for o in prange(o_):
            g = g2[o]
            yy = y2[o]
            d = d2[o]
            if log:
                s = lane_sum(g)
                for p in range(r_):
                    d[p] = g[p] - np.exp(yy[p]) * s
            else:
                s = lane_dot(g, yy)
                for p in range(r_):
                    d[p] = yy[p] * (g[p] - s)
    else:
        nb = _n_blocks(i_)
        for t in prange(o_ * nb):
            o, i0, i1 = _block(t, nb, i_)
            w = i1 - i0
            s = np.zeros(w, dtype=gy.dtype)
            for r in range(r_):
                g = gy[o, r, i0:i1]
                yy = y[o, r, i0:i1]
                if log:
                    for i in range(w):
                        s[i] += g[i]
                else:
                    for i in range(w):
                        s[i] += g[i] * yy[i]
            for r in range(r_):
                g = gy[o, r, i0:i1]
                yy = y[o, r, i0:i1]
                d = gx[o, r, i0:i1]
                if log:
                    for i in range(w):
                        d[i] = g[i] - np.exp(yy[i]) * s[i]
                else:
                    for i in range(w):
                        d[i] = yy[i] * (g[i] - s[i])


def softmax_backward_middle(gy, y, gx):
    """gx = y * (gy - sum_R(gy * y)), y the softmax output; all (O, R, I)."""
    _softmax_backward_impl(gy, y, gx, False)


def log_softmax_backward_middle(gy, y, gx):
    """gx = gy - exp(y) * sum_R(gy), y the log_softmax output; all (O, R, I)."""
    _softmax_backward_impl(gy, y, gx, True)


@njit(cache=True)
def _check_targets(targets, classes):
    for n in range(targets.shape[0]):
        if targets[n] < 0 or targets[n] >= classes:
            raise ValueError("cross_entropy: a target is not a class index in [0, classes)")


@sized_kernel(size_arg=0)
def cross_entropy_forward(logits, targets, out):
    """out (0-d) = mean over n of -log_softmax(logits (N, C))[n, targets[n]]; targets int64 (N,).

    Raises ValueError for a target outside [0, C)."""
    n_, c_ = logits.shape
    _check_targets(targets, c_)
    losses = np.empty(n_, dtype=logits.dtype)
    for n in prange(n_):
        row = logits[n]
        m = _row_max(row)
        s = _exp_sum(row, m)
        losses[n] = np.log(s) + m - row[targets[n]]
    out[()] = lane_sum(losses) / n_


@sized_kernel(size_arg=0)
def cross_entropy_backward(logits, targets, g, gx):
    """gx (N, C) = g * (softmax(logits) - onehot(targets)) / N; g is a 0-d array (dL/dloss).

    Raises ValueError for a target outside [0, C)."""
    n_, c_ = logits.shape
    _check_targets(targets, c_)
    scale = g[()] / n_
    for n in prange(n_):
        row = logits[n]
        d = gx[n]
        m = _row_max(row)
        s = _exp_shifted(row, d, m)
        for c in range(c_):
            d[c] = d[c] / s
        d[targets[n]] -= 1
        for c in range(c_):
            d[c] = d[c] * scale
