"""Winograd filter transforms (winograd_rows.py has the matrices): U = G g G^T for blocks of a 3x3
weight, and the weight gradient dg = G^T dU G.

The input channels are the vectorized axis. The taps of a few output channels at a time are
first deinterleaved (taps[k, 3p + q, c] = w[k, c, p, q]); then each row i of U is made for
those channels in turn, so the writes run through U's (K, C) planes a row at a time: making all
a*a entries of one channel before the next wrote a*a far-apart streams at once and measured 5x
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
)

FILTER_BLOCK = 8  # output channels per deinterleaved block of taps


@njit(cache=True)
def _deinterleave_taps(src, taps, nc, flip):
    """taps[q, c] = src[9c + q] (q < 9), or src[9c + 8 - q] when ``flip``."""
    t0, t1, t2, t3, t4 = taps[0, :nc], taps[1, :nc], taps[2, :nc], taps[3, :nc], taps[4, :nc]
    t5, t6, t7, t8 = taps[5, :nc], taps[6, :nc], taps[7, :nc], taps[8, :nc]
    if flip:
        t0, t1, t2, t3, t5, t6, t7, t8 = t8, t7, t6, t5, t3, t2, t1, t0
    for c in range(nc):
        t0[c] = src[9 * c]
        t1[c] = src[9 * c + 1]
        t2[c] = src[9 * c + 2]
        t3[c] = src[9 * c + 3]
        t4[c] = src[9 * c + 4]
        t5[c] = src[9 * c + 5]
        t6[c] = src[9 * c + 6]
        t7[c] = src[9 * c + 7]
        t8[c] = src[9 * c + 8]


@njit(cache=True)
def _interleave_taps(taps, dst, nc):
    """dst[9c + q] = taps[q, c]: the inverse of _deinterleave_taps."""
    t0, t1, t2, t3, t4 = taps[0, :nc], taps[1, :nc], taps[2, :nc], taps[3, :nc], taps[4, :nc]
    t5, t6, t7, t8 = taps[5, :nc], taps[6, :nc], taps[7, :nc], taps[8, :nc]
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
    """u[i*a + j, uk + k - k0, c - c0] = (G g G^T)[i, j] for g = w[k, c] (k0 <= k < k1,
    c0 <= c < c1), g rotated by 180 degrees when ``flip`` (the input gradient's conv, whose
    GEMM then takes u transposed). taps (FILTER_BLOCK, 9, >= c1-c0) is scratch; the weights
    read are checked into acc (winograd_transforms.all_finite)."""
    nc = c1 - c0
    wf = w.reshape(w.shape[0], w.shape[1] * 9)
    dt = u.dtype.type
    for b0 in range(k0, k1, FILTER_BLOCK):
        b1 = min(k1, b0 + FILTER_BLOCK)
        for k in range(b0, b1):
            src = wf[k, c0 * 9 : c1 * 9]
            accumulate_nonfinite(src, acc)
            _deinterleave_taps(src, taps[k - b0], nc, flip)
        for i in range(m + 2):
            gi = g_row(m, i, dt)
            for k in range(b0, b1):
                t, kk = taps[k - b0], uk + k - k0
                if m == 2:
                    filter2_row(t, gi, u[4 * i, kk, :nc], u[4 * i + 1, kk, :nc],
                                u[4 * i + 2, kk, :nc], u[4 * i + 3, kk, :nc])  # fmt: skip
                else:
                    filter4_row(t, gi, u[6 * i, kk, :nc], u[6 * i + 1, kk, :nc],
                                u[6 * i + 2, kk, :nc], u[6 * i + 3, kk, :nc],
                                u[6 * i + 4, kk, :nc], u[6 * i + 5, kk, :nc])  # fmt: skip


@njit(cache=True)
def filter_grad_block(du, dk, k0, k1, m, gw, taps):
    """gw[k] = G^T dU G for k0 <= k < k1, dU[i, j] = du[i*a + j, dk + k - k0, :] (all input
    channels). taps (FILTER_BLOCK, 9, >= C) is scratch."""
    nc = gw.shape[1]
    gf = gw.reshape(gw.shape[0], nc * 9)
    dt = du.dtype.type
    for b0 in range(k0, k1, FILTER_BLOCK):
        b1 = min(k1, b0 + FILTER_BLOCK)
        taps[: b1 - b0, :, :nc] = 0
        for i in range(m + 2):
            gi = g_row(m, i, dt)
            for k in range(b0, b1):
                t, kk = taps[k - b0], dk + k - k0
                if m == 2:
                    filter2_grad_row(du[4 * i, kk, :nc], du[4 * i + 1, kk, :nc],
                                     du[4 * i + 2, kk, :nc], du[4 * i + 3, kk, :nc], gi,
                                     t)  # fmt: skip
                else:
                    filter4_grad_row(du[6 * i, kk, :nc], du[6 * i + 1, kk, :nc],
                                     du[6 * i + 2, kk, :nc], du[6 * i + 3, kk, :nc],
                                     du[6 * i + 4, kk, :nc], du[6 * i + 5, kk, :nc], gi,
                                     t)  # fmt: skip
        for k in range(b0, b1):
            _interleave_taps(taps[k - b0], gf[k], nc)
