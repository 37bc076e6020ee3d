"""Winograd filter transforms (winograd_rows.py has the matrices): U = G g G^T for blocks of a 3x3
weight, and the weight gradient dg = G^T dU G. Both take one output channel k at a time with
the input channels as the vectorized axis: the 9 taps of w[k] are first deinterleaved (and
interleaved back for the gradient)."""

from __future__ import annotations

from numba import njit

from .winograd_rows import accumulate_nonfinite, g2_rows, g4_rows, gt2_rows, gt4_rows


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
def filter_block(w, k0, k1, c0, c1, flip, m, u, uk, taps, z, acc):
    """u[i*a + j, uk + k - k0, c - c0] = (G g G^T)[i, j] for g = w[k, c] (k0 <= k < k1,
    c0 <= c < c1), g rotated by 180 degrees when ``flip`` (the input gradient's conv, whose
    GEMM then takes u transposed). taps (9, >= c1-c0) and z (3a, >= c1-c0) are scratch; the
    weights read are checked into acc (winograd_transforms.all_finite)."""
    nc = c1 - c0
    wf = w.reshape(w.shape[0], w.shape[1] * 9)
    for k in range(k0, k1):
        src = wf[k, c0 * 9 : c1 * 9]
        accumulate_nonfinite(src, acc)
        _deinterleave_taps(src, taps, nc, flip)
        for col in range(3):  # z[3i + col] = (G g)[i, col]
            e0, e1, e2 = taps[col, :nc], taps[3 + col, :nc], taps[6 + col, :nc]
            if m == 2:
                g2_rows(e0, e1, e2, z[col, :nc], z[3 + col, :nc], z[6 + col, :nc],
                        z[9 + col, :nc])  # fmt: skip
            else:
                g4_rows(e0, e1, e2, z[col, :nc], z[3 + col, :nc], z[6 + col, :nc],
                        z[9 + col, :nc], z[12 + col, :nc], z[15 + col, :nc])  # fmt: skip
        kk = uk + k - k0
        for i in range(m + 2):  # u[i*a + j] = (G g G^T)[i, j]
            e0, e1, e2 = z[3 * i, :nc], z[3 * i + 1, :nc], z[3 * i + 2, :nc]
            if m == 2:
                g2_rows(e0, e1, e2, u[4 * i, kk, :nc], u[4 * i + 1, kk, :nc],
                        u[4 * i + 2, kk, :nc], u[4 * i + 3, kk, :nc])  # fmt: skip
            else:
                g4_rows(e0, e1, e2, u[6 * i, kk, :nc], u[6 * i + 1, kk, :nc],
                        u[6 * i + 2, kk, :nc], u[6 * i + 3, kk, :nc], u[6 * i + 4, kk, :nc],
                        u[6 * i + 5, kk, :nc])  # fmt: skip


@njit(cache=True)
def filter_grad_block(du, dk, k0, k1, m, gw, taps, z):
    """gw[k] = G^T dU G for k0 <= k < k1, dU[i, j] = du[i*a + j, dk + k - k0, :] (all input
    channels). taps (9, >= C) and z (3a, >= C) are scratch."""
    nc = gw.shape[1]
    gf = gw.reshape(gw.shape[0], nc * 9)
    for k in range(k0, k1):
        kk = dk + k - k0
        for i in range(m + 2):  # z[3i + q] = (dU G)[i, q]
            o0, o1, o2 = z[3 * i, :nc], z[3 * i + 1, :nc], z[3 * i + 2, :nc]
            if m == 2:
                gt2_rows(du[4 * i, kk, :nc], du[4 * i + 1, kk, :nc], du[4 * i + 2, kk, :nc],
                         du[4 * i + 3, kk, :nc], o0, o1, o2)  # fmt: skip
            else:
                gt4_rows(du[6 * i, kk, :nc], du[6 * i + 1, kk, :nc], du[6 * i + 2, kk, :nc],
                         du[6 * i + 3, kk, :nc], du[6 * i + 4, kk, :nc],
                         du[6 * i + 5, kk, :nc], o0, o1, o2)  # fmt: skip
        for q in range(3):  # taps[3p + q] = (G^T dU G)[p, q]
            o0, o1, o2 = taps[q, :nc], taps[3 + q, :nc], taps[6 + q, :nc]
            if m == 2:
                gt2_rows(z[q, :nc], z[3 + q, :nc], z[6 + q, :nc], z[9 + q, :nc],
                         o0, o1, o2)  # fmt: skip
            else:
                gt4_rows(z[q, :nc], z[3 + q, :nc], z[6 + q, :nc], z[9 + q, :nc],
                         z[12 + q, :nc], z[15 + q, :nc], o0, o1, o2)  # fmt: skip
        _interleave_taps(taps, gf[k], nc)
