"""Winograd filter transforms (winograd_rows.py has the matrices): U = G g G^T for blocks of a 3x3
weight, and the weight gradient dg = G^T dU G.

The (output, input) channel pairs are the vectorized axis. The taps of a few output channels
at a time are first deinterleaved (taps[3p + q, (k, c)] = w[k, c, p, q]); then each row i of U
is made for all of them, so the writes run through U's planes a row at a time: making all a*a
entries of one channel before the next wrote a*a far-apart streams at once and measured 5x
slower (13 against 2.5 ns per weight, 512 channels).
"""

from __future__ import annotations

from numba import njit

from .winograd_rows import (
    accumulate_nonfinite,
    filter2_grad_row,
    filter2_row,
    filter4_grad_row,
    filter4_row,
    g_row,
    tap_rows,
)
from .winograd_transforms import ROW_PAD

FILTER_BLOCK = 8  # output channels per deinterleaved block of taps, at least


@njit(cache=True, inline="always")
def _deinterleave_taps(wf, b0, b1, c0, nc, taps, flip, acc):
    """taps[q, (k - b0) * nc + c] = wf[k, 9(c0 + c) + q] (b0 <= k < b1, q < 9, c < nc), or tap
    8 - q when ``flip``; the weights read are checked into acc. The tap rows are sliced once
    for all the rows k: sliced for each, the slicing cost more than the copies of the input
    gradient's blocks of 32 channels (512x512 weights on one core: 4.9-5.2 ms in blocks of
    32 channels, against 1.9-2.0 ms now and for whole rows). Two copies, not one over rows
    swapped at run time: the swapped views kept LLVM from vectorizing it (3x slower)."""
    t0, t1, t2, t3, t4, t5, t6, t7, t8 = tap_rows(taps, 0, (b1 - b0) * nc)
    for k in range(b0, b1):
        src = wf[k, c0 * 9 : (c0 + nc) * 9]
        accumulate_nonfinite(src, acc)
        lo = (k - b0) * nc
        if flip:
            _copy_taps(src, lo, t8, t7, t6, t5, t4, t3, t2, t1, t0, nc)
        else:
            _copy_taps(src, lo, t0, t1, t2, t3, t4, t5, t6, t7, t8, nc)


@njit(cache=True, inline="always")
def _copy_taps(src, lo, t0, t1, t2, t3, t4, t5, t6, t7, t8, nc):
    """t_q[lo + c] = src[9c + q]."""
    for c in range(nc):
        t0[lo + c] = src[9 * c]
        t1[lo + c] = src[9 * c + 1]
        t2[lo + c] = src[9 * c + 2]
        t3[lo + c] = src[9 * c + 3]
        t4[lo + c] = src[9 * c + 4]
        t5[lo + c] = src[9 * c + 5]
        t6[lo + c] = src[9 * c + 6]
        t7[lo + c] = src[9 * c + 7]
        t8[lo + c] = src[9 * c + 8]


@njit(cache=True, inline="always")
def _interleave_taps(taps, lo, dst, nc):
    """dst[9c + q] = taps[q, lo + c]: the inverse of _deinterleave_taps."""
    t0, t1, t2, t3, t4, t5, t6, t7, t8 = tap_rows(taps, lo, nc)
    for c in range(nc):
        dst[9 * c] = t0[c]
        dst[9 * c + 1] = t1[c]
        dst[9 * c + 2] = t2[c]
        dst[9 * c + 3] = t3[c]
        dst[9 * c + 4] = t4[c]
        dst[9 * c + 5] = t5[c]
        dst[9 * c + 6] = t6[c]
        dst[9 * c + 7] = t7[c]
        dst[9 * c + 8] = t8[c]


@njit(cache=True)
def filter_block(w, k0, k1, c0, c1, flip, m, u, uk, taps, acc):
    """u[i*a + j, (uk + k - k0) * nc + c - c0] = (G g G^T)[i, j] for g = w[k, c] (k0 <= k < k1,
    c0 <= c < c1, nc = c1 - c0): each u[xi] is a (rows, nc) matrix stored flat; g is rotated
    by 180 degrees when ``flip`` (the input gradient's conv, whose GEMM then takes u[xi]
    transposed). taps (9, >= FILTER_BLOCK * nc + ROW_PAD) is scratch, in which the taps of as
    many output channels as it holds lie side by side as u's rows do: one pass over them per
    row of U, however few channels nc (the input gradient's blocks of 32 channels of 512: 25%
    faster than passes over FILTER_BLOCK of them). The weights read are checked into acc
    (winograd_transforms.all_finite)."""
    nc = c1 - c0
    wf = w.reshape(w.shape[0], w.shape[1] * 9)
    dt = u.dtype.type
    kb = (taps.shape[1] - ROW_PAD) // nc
    for b0 in range(k0, k1, kb):
        b1 = min(k1, b0 + kb)
        _deinterleave_taps(wf, b0, b1, c0, nc, taps, flip, acc)
        t, lo, hi = taps, (uk + b0 - k0) * nc, (uk + b1 - k0) * nc
        if m == 2:
            for i in range(4):
                filter2_row(t, g_row(2, i, dt), u[4 * i, lo:hi], u[4 * i + 1, lo:hi],
                            u[4 * i + 2, lo:hi], u[4 * i + 3, lo:hi])  # fmt: skip
        else:
            for i in range(6):
                filter4_row(t, g_row(4, i, dt), u[6 * i, lo:hi], u[6 * i + 1, lo:hi],
                            u[6 * i + 2, lo:hi], u[6 * i + 3, lo:hi], u[6 * i + 4, lo:hi],
                            u[6 * i + 5, lo:hi])  # fmt: skip


@njit(cache=True)
def filter_grad_block(du, dk, k0, k1, m, gw, taps):
    """gw[k] = G^T dU G for k0 <= k < k1, dU[i, j] = du[i*a + j, dk + k - k0, :] (all input
    channels). taps (9, >= FILTER_BLOCK * C) is scratch."""
    nc = gw.shape[1]
    gf = gw.reshape(gw.shape[0], nc * 9)
    dt = du.dtype.type
    for b0 in range(k0, k1, FILTER_BLOCK):
        b1 = min(k1, b0 + FILTER_BLOCK)
        taps[:, : (b1 - b0) * nc] = 0
        if m == 2:
            for i in range(4):
                gi = g_row(2, i, dt)
                for k in range(b0, b1):
                    kk, lo = dk + k - k0, (k - b0) * nc
                    filter2_grad_row(du[4 * i, kk, :nc], du[4 * i + 1, kk, :nc],
                                     du[4 * i + 2, kk, :nc], du[4 * i + 3, kk, :nc], gi, taps,
                                     lo)  # fmt: skip
        else:
            for i in range(6):
                gi = g_row(4, i, dt)
                for k in range(b0, b1):
                    kk, lo = dk + k - k0, (k - b0) * nc
                    filter4_grad_row(du[6 * i, kk, :nc], du[6 * i + 1, kk, :nc],
                                     du[6 * i + 2, kk, :nc], du[6 * i + 3, kk, :nc],
                                     du[6 * i + 4, kk, :nc], du[6 * i + 5, kk, :nc], gi, taps,
                                     lo)  # fmt: skip
        for k in range(b0, b1):
            _interleave_taps(taps, (k - b0) * nc, gf[k], nc)
