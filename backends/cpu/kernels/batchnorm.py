"""Training BatchNorm's per-channel reductions: ``batch_norm_stats`` and
``batch_norm_grad_stats`` (graph/ops/norm_stats.py), one pass over their inputs each.

Both are the same loop: over an (N, C, L) view of a and b, per channel c,
``sum(a - ka[c])`` and ``sum((a - ka[c]) * (b - kb[c]))`` in float64. The statistics take
a = b = x and ka = kb = a value of the channel (its first, when finite: the shift that keeps a
large mean from cancelling the variance); the gradient sums take a = g, b = x, ka = 0 and
kb = the mean. A per-channel finish turns the two sums into the op's rows.

The arrays are read in memory order: work item t owns a contiguous range of the N * C rows
of L values (so each thread streams one block of memory, which the prefetchers follow) and
adds each row's two sums to its own per-channel partials; the finish adds the items'
partials. A row is summed with ``fastmath={"reassoc", "contract"}``, which lets LLVM
vectorize the float64 reduction (several vector accumulators) while NaN and infinities still
propagate (no ``nnan``/``ninf``). The statistics (a is b, ka is kb) read each row once.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_REASSOC = {"reassoc", "contract"}
SHORT_ROW = 16  # rows shorter than this are summed by a plain loop


@njit(cache=True, nogil=True, fastmath=_REASSOC)
def _row_sums(ra, rb, ka, kb):
    """(sum(ra - ka), sum((ra - ka) * (rb - kb))) of two contiguous rows, in float64."""
    t1 = 0.0
    t2 = 0.0
    for p in range(ra.shape[0]):
        u = ra[p] - ka
        t1 += u
        t2 += u * (rb[p] - kb)
    return t1, t2


@njit(cache=True, nogil=True, fastmath=_REASSOC)
def _row_squares(ra, ka):
    """``_row_sums(ra, ra, ka, ka)``, reading the row once."""
    t1 = 0.0
    t2 = 0.0
    for p in range(ra.shape[0]):
        u = ra[p] - ka
        t1 += u
        t2 += u * u
    return t1, t2


@njit(cache=True, nogil=True)
def _long_rows(a, b, ka, kb, p1, p2, r, end):
    """Add the sums of rows r..end (of the N * C rows) to their channels' p1, p2."""
    c_ = a.shape[1]
    n = r // c_
    c = r - n * c_
    squares = a is b and ka is kb  # the statistics' sums: of (x - k) and its square
    for _ in range(r, end):
        if squares:
            t1, t2 = _row_squares(a[n, c], ka[c])
        else:
            t1, t2 = _row_sums(a[n, c], b[n, c], ka[c], kb[c])
        p1[c] += t1
        p2[c] += t2
        c += 1
        if c == c_:
            c = 0
            n += 1


@njit(cache=True, nogil=True)
def _short_rows(a, b, ka, kb, p1, p2, r, end):
    """``_long_rows`` for rows too short for a vectorized loop's set-up (L = 1 for
    BatchNorm1d): plain loops over each image's channels."""
    c_, l_ = a.shape[1:]
    while r < end:
        n = r // c_
        c0 = r - n * c_
        c1 = min(c_, c0 + end - r)
        an = a[n]
        bn = b[n]
        for c in range(c0, c1):
            k1 = ka[c]
            k2 = kb[c]
            t1 = 0.0
            t2 = 0.0
            for q in range(l_):
                u = an[c, q] - k1
                t1 += u
                t2 += u * (bn[c, q] - k2)
            p1[c] += t1
            p2[c] += t2
        r += c1 - c0


@njit(cache=True, nogil=True)
def _item(a, b, ka, kb, partial, t):
    """partial[t, k, c] (k = 0, 1): the two sums of channel c over work item t's rows (item t
    of T = ``partial.shape[0]`` owns rows [t R / T, (t + 1) R / T) of the R = N * C rows)."""
    rows = a.shape[0] * a.shape[1]
    items = partial.shape[0]
    p1 = partial[t, 0]
    p2 = partial[t, 1]
    p1[:] = 0.0
    p2[:] = 0.0
    r, end = (t * rows) // items, ((t + 1) * rows) // items
    if a.shape[2] >= SHORT_ROW:
        _long_rows(a, b, ka, kb, p1, p2, r, end)
    else:
        _short_rows(a, b, ka, kb, p1, p2, r, end)


@njit(cache=True, nogil=True, parallel=True)
def _sweep_parallel(a, b, ka, kb, partial):
    for t in prange(partial.shape[0]):
        _item(a, b, ka, kb, partial, t)


@njit(cache=True, nogil=True)
def _sweep(a, b, ka, kb, partial):
    """Every work item's partial sums: in parallel when there are several items."""
    if partial.shape[0] > 1:
        _sweep_parallel(a, b, ka, kb, partial)
    else:
        _item(a, b, ka, kb, partial, 0)


@njit(cache=True, nogil=True, inline="always")
def _channel_total(partial, k, c):
    total = 0.0
    for t in range(partial.shape[0]):
        total += partial[t, k, c]
    return total


@njit(cache=True, nogil=True, error_model="numpy")  # an empty batch: 0 / 0 is NaN
def moments(x, out, partial, shift):
    """out (2, C) = the per-channel mean and biased variance of x (N, C, L); float64
    workspaces ``partial`` (items, 2, C) (one item: on the calling thread) and ``shift``
    (C,)."""
    n_, c_, l_ = x.shape
    for c in range(c_):
        first = x[0, c, 0] if n_ * l_ else 0.0
        shift[c] = first if np.isfinite(first) else 0.0  # an infinite shift would make NaN
    _sweep(x, x, shift, shift, partial)
    count = n_ * l_
    for c in range(c_):
        d = _channel_total(partial, 0, c) / count
        var = _channel_total(partial, 1, c) / count - d * d
        out[0, c] = shift[c] + d
        out[1, c] = 0.0 if var < 0.0 else var  # below 0 by rounding only; NaN stays NaN


@njit(cache=True, nogil=True)
def grad_sums(g, x, mean, out, partial, shifts):
    """out (2, C) = per-channel sum(g) and sum(g * (x - mean)) of g, x (N, C, L); ``mean``
    (1,) or (C,); float64 workspaces ``partial`` (items, 2, C) and ``shifts`` (2, C)."""
    c_ = x.shape[1]
    m_ = mean.shape[0]  # 1 (one mean for every channel) or C
    for c in range(c_):
        shifts[0, c] = 0.0
        shifts[1, c] = mean[c % m_]
    _sweep(g, x, shifts[0], shifts[1], partial)
    for c in range(c_):
        out[0, c] = _channel_total(partial, 0, c)
        out[1, c] = _channel_total(partial, 1, c)
