"""The Winograd F(m x m, 3 x 3) matrices (m = 2, 4; a = m + 2) as formulas, applied elementwise
along rows of tiles.

With one a x a input tile d, one 3 x 3 filter g and the m x m output tile y:

    y = A^T [(G g G^T) * (B^T d B)] A          (* elementwise)

    F(2x2, 3x3):  B^T = [1  0 -1  0]    G = [1    0    0  ]    A^T = [1  1  1  0]
                        [0  1  1  0]        [1/2  1/2  1/2]          [0  1 -1 -1]
                        [0 -1  1  0]        [1/2 -1/2  1/2]
                        [0  1  0 -1]        [0    0    1  ]

    F(4x4, 3x3):  B^T = [1   0    -97/36  0      1  0]    A^T = [1  1     1      1    1     0]
                        [0  -2/3  -4/9   3/2     1  0]          [0  3/2  -3/2   2/3 -2/3   0]
                        [0   2/3  -4/9  -3/2     1  0]          [0  9/4   9/4   4/9  4/9   0]
                        [0  -3/2  -9/4   2/3     1  0]          [0  27/8 -27/8 8/27 -8/27 1]
                        [0   3/2  -9/4  -2/3     1  0]
                        [0   1     0    -97/36   0  1]
                  G = [1, 0, 0], [8/65, 12/65, 18/65], [8/65, -12/65, 18/65],
                      [-81/130, -27/65, -18/65], [-81/130, 27/65, -18/65], [0, 0, 1] (rows)

F(2x2) interpolates at 0, +-1 and infinity (Lavin & Gray 2016). F(4x4) at 0, +-3/2, +-2/3 and
infinity, not the usual 0, +-1, +-2: its float32 error was 2.5-4x smaller in a search over
points from {+-1/4 .. +-4} (simulated 64 and 256 channels: 1.5e-6 and 2.4e-6 of the largest
output, against 5.6e-6 and 8.4e-6 for +-1, +-2), for the same operation count: points in
+- pairs split each transform into even and odd halves. The weight gradient runs the
adjoints: dM = A dY A^T per tile, dg = G^T dU G.

Each ``*_rows`` function applies one matrix to vectors: output row i = sum_j Mat[i, j] * input
row j, elementwise over the rows' length (the tiles). The arguments are 1-d arrays, one per
row; the functions are inlined into their callers, so each loop is one vectorized pass and
no reference counting runs per call (measured: a call that is not inlined costs ~300 ns).
Constants are made in the arrays' dtype: a float literal would turn float32 math to float64.
"""

from __future__ import annotations

from numba import njit


@njit(cache=True, inline="always")
def _bt2(v0, v1, v2, v3):
    return v0 - v2, v1 + v2, v2 - v1, v1 - v3


@njit(cache=True, inline="always")
def _bt4(v0, v1, v2, v3, v4, v5, c):
    """c = f4_constants(dtype)."""
    p = v4 - c[1] * v2
    q = c[4] * v3 - c[3] * v1
    r = v4 - c[2] * v2
    s = c[3] * v3 - c[4] * v1
    return v0 - c[0] * v2 + v4, p + q, p - q, r + s, r - s, v1 - c[0] * v3 + v5


@njit(cache=True, inline="always")
def _at2(v0, v1, v2, v3):
    return v0 + v1 + v2, v1 - v2 - v3


@njit(cache=True, inline="always")
def _at4(v0, v1, v2, v3, v4, v5, c):
    s12 = v1 + v2
    d12 = v1 - v2
    s34 = v3 + v4
    d34 = v3 - v4
    return (
        v0 + s12 + s34,
        c[4] * d12 + c[3] * d34,
        c[2] * s12 + c[1] * s34,
        c[5] * d12 + c[6] * d34 + v5,
    )


@njit(cache=True, inline="always")
def _a2(v0, v1):
    return v0, v0 + v1, v0 - v1, -v1


@njit(cache=True, inline="always")
def _a4(v0, v1, v2, v3, c):
    e = v0 + c[2] * v2
    f = c[4] * v1 + c[5] * v3
    e2 = v0 + c[1] * v2
    f2 = c[3] * v1 + c[6] * v3
    return v0, e + f, e - f, e2 + f2, e2 - f2, v3


@njit(cache=True, inline="always")
def _g2(v0, v1, v2, half):
    t = half * (v0 + v2)
    h = half * v1
    return v0, t + h, t - h, v2


@njit(cache=True, inline="always")
def _g4(v0, v1, v2, c):
    t = c[7] * v0 + c[8] * v2
    h = c[9] * v1
    t2 = c[10] * v0 - c[8] * v2
    h2 = c[11] * v1
    return v0, t + h, t - h, t2 - h2, t2 + h2, v2


@njit(cache=True, inline="always")
def _gt2(v0, v1, v2, v3, half):
    s = half * (v1 + v2)
    return v0 + s, half * (v1 - v2), s + v3


@njit(cache=True, inline="always")
def _gt4(v0, v1, v2, v3, v4, v5, c):
    s12 = v1 + v2
    s34 = v3 + v4
    return (
        v0 + c[7] * s12 + c[10] * s34,
        c[9] * (v1 - v2) - c[11] * (v3 - v4),
        c[8] * (s12 - s34) + v5,
    )


@njit(cache=True, inline="always")
def f4_constants(dt):
    """The constants of F(4x4)'s matrices in the dtype dt (a dtype's scalar type)."""
    return (
        dt(97 / 36),
        dt(4 / 9),
        dt(9 / 4),
        dt(2 / 3),
        dt(3 / 2),
        dt(27 / 8),
        dt(8 / 27),
        dt(8 / 65),
        dt(18 / 65),
        dt(12 / 65),
        dt(-81 / 130),
        dt(27 / 65),
    )


# ---------------------------------------------------------------- B^T (input)


@njit(cache=True, inline="always")
def bt2_rows(d0, d1, d2, d3, o0, o1, o2, o3):
    for k in range(o0.shape[0]):
        y0, y1, y2, y3 = _bt2(d0[k], d1[k], d2[k], d3[k])
        o0[k] = y0
        o1[k] = y1
        o2[k] = y2
        o3[k] = y3


@njit(cache=True, inline="always")
def bt4_rows(d0, d1, d2, d3, d4, d5, o0, o1, o2, o3, o4, o5):
    c = f4_constants(o0.dtype.type)
    for k in range(o0.shape[0]):
        y0, y1, y2, y3, y4, y5 = _bt4(d0[k], d1[k], d2[k], d3[k], d4[k], d5[k], c)
        o0[k] = y0
        o1[k] = y1
        o2[k] = y2
        o3[k] = y3
        o4[k] = y4
        o5[k] = y5


# ---------------------------------------------------------------- A^T (output) and A (its adjoint)


@njit(cache=True, inline="always")
def at2_rows(d0, d1, d2, d3, o0, o1):
    for k in range(o0.shape[0]):
        y0, y1 = _at2(d0[k], d1[k], d2[k], d3[k])
        o0[k] = y0
        o1[k] = y1


@njit(cache=True, inline="always")
def at4_rows(d0, d1, d2, d3, d4, d5, o0, o1, o2, o3):
    c = f4_constants(o0.dtype.type)
    for k in range(o0.shape[0]):
        y0, y1, y2, y3 = _at4(d0[k], d1[k], d2[k], d3[k], d4[k], d5[k], c)
        o0[k] = y0
        o1[k] = y1
        o2[k] = y2
        o3[k] = y3


@njit(cache=True, inline="always")
def at2_interleaved(d0, d1, d2, d3, o):
    """o[2k + q] = (A^T d)[q]: the two outputs of each tile side by side."""
    for k in range(d0.shape[0]):
        y0, y1 = _at2(d0[k], d1[k], d2[k], d3[k])
        o[2 * k] = y0
        o[2 * k + 1] = y1


@njit(cache=True, inline="always")
def at4_interleaved(d0, d1, d2, d3, d4, d5, o):
    """o[4k + q] = (A^T d)[q]: the four outputs of each tile side by side."""
    c = f4_constants(o.dtype.type)
    for k in range(d0.shape[0]):
        y0, y1, y2, y3 = _at4(d0[k], d1[k], d2[k], d3[k], d4[k], d5[k], c)
        o[4 * k] = y0
        o[4 * k + 1] = y1
        o[4 * k + 2] = y2
        o[4 * k + 3] = y3


@njit(cache=True, inline="always")
def a2_rows(d0, d1, o0, o1, o2, o3):
    for k in range(o0.shape[0]):
        y0, y1, y2, y3 = _a2(d0[k], d1[k])
        o0[k] = y0
        o1[k] = y1
        o2[k] = y2
        o3[k] = y3


@njit(cache=True, inline="always")
def a4_rows(d0, d1, d2, d3, o0, o1, o2, o3, o4, o5):
    c = f4_constants(o0.dtype.type)
    for k in range(o0.shape[0]):
        y0, y1, y2, y3, y4, y5 = _a4(d0[k], d1[k], d2[k], d3[k], c)
        o0[k] = y0
        o1[k] = y1
        o2[k] = y2
        o3[k] = y3
        o4[k] = y4
        o5[k] = y5


# ---------------------------------------------------------------- G (filter) and G^T (its adjoint)


@njit(cache=True, inline="always")
def g_row(m, i, dt):
    """Row i of G, in the dtype dt."""
    if i == 0:
        return dt(1), dt(0), dt(0)
    if i == m + 1:
        return dt(0), dt(0), dt(1)
    if m == 2:
        return dt(0.5), dt(0.5) if i == 1 else dt(-0.5), dt(0.5)
    c = f4_constants(dt)
    if i <= 2:
        return c[7], c[9] if i == 1 else -c[9], c[8]
    return c[10], -c[11] if i == 3 else c[11], -c[8]


@njit(cache=True, inline="always")
def tap_rows(t, lo, n):
    """The 9 rows t[q, lo : lo+n]: the taps g[p, q] = t[3p + q] of n filters."""
    hi = lo + n
    return (t[0, lo:hi], t[1, lo:hi], t[2, lo:hi], t[3, lo:hi], t[4, lo:hi], t[5, lo:hi],
            t[6, lo:hi], t[7, lo:hi], t[8, lo:hi])  # fmt: skip


@njit(cache=True, inline="always")
def _g_row_of_filters(gi, t0, t1, t2, t3, t4, t5, t6, t7, t8, k):
    """z_q = sum_p gi[p] * g[p, q] for the filter g[p, q] = t_{3p+q}[k]: row i of G g, when gi
    is row i of G."""
    return (
        gi[0] * t0[k] + gi[1] * t3[k] + gi[2] * t6[k],
        gi[0] * t1[k] + gi[1] * t4[k] + gi[2] * t7[k],
        gi[0] * t2[k] + gi[1] * t5[k] + gi[2] * t8[k],
    )


@njit(cache=True, inline="always")
def filter2_row(t, gi, o0, o1, o2, o3):
    """o_j[k] = (G g G^T)[i, j] for the filters g[p, q] = t[3p + q, k], gi = g_row(2, i)."""
    t0, t1, t2, t3, t4, t5, t6, t7, t8 = tap_rows(t, 0, o0.shape[0])
    half = o0.dtype.type(0.5)
    for k in range(o0.shape[0]):
        z0, z1, z2 = _g_row_of_filters(gi, t0, t1, t2, t3, t4, t5, t6, t7, t8, k)
        y0, y1, y2, y3 = _g2(z0, z1, z2, half)
        o0[k] = y0
        o1[k] = y1
        o2[k] = y2
        o3[k] = y3


@njit(cache=True, inline="always")
def filter4_row(t, gi, o0, o1, o2, o3, o4, o5):
    """filter2_row for F(4x4): gi = g_row(4, i)."""
    t0, t1, t2, t3, t4, t5, t6, t7, t8 = tap_rows(t, 0, o0.shape[0])
    c = f4_constants(o0.dtype.type)
    for k in range(o0.shape[0]):
        z0, z1, z2 = _g_row_of_filters(gi, t0, t1, t2, t3, t4, t5, t6, t7, t8, k)
        y0, y1, y2, y3, y4, y5 = _g4(z0, z1, z2, c)
        o0[k] = y0
        o1[k] = y1
        o2[k] = y2
        o3[k] = y3
        o4[k] = y4
        o5[k] = y5


@njit(cache=True, inline="always")
def _add_row_to_filters(gi, z0, z1, z2, t0, t1, t2, t3, t4, t5, t6, t7, t8, k):
    """g[p, q] += gi[p] * z_q for the filter g = t_{3p+q}[k]."""
    t0[k] += gi[0] * z0
    t1[k] += gi[0] * z1
    t2[k] += gi[0] * z2
    t3[k] += gi[1] * z0
    t4[k] += gi[1] * z1
    t5[k] += gi[1] * z2
    t6[k] += gi[2] * z0
    t7[k] += gi[2] * z1
    t8[k] += gi[2] * z2


@njit(cache=True, inline="always")
def filter2_grad_row(d0, d1, d2, d3, gi, t, lo):
    """t[3p + q, lo + k] += row i's share of (G^T dU G)[p, q], dU[i, j] = d_j[k] (k < len(d0)),
    gi = g_row(2, i): summed over the rows i, dg = G^T dU G."""
    t0, t1, t2, t3, t4, t5, t6, t7, t8 = tap_rows(t, lo, d0.shape[0])
    half = d0.dtype.type(0.5)
    for k in range(d0.shape[0]):
        z0, z1, z2 = _gt2(d0[k], d1[k], d2[k], d3[k], half)
        _add_row_to_filters(gi, z0, z1, z2, t0, t1, t2, t3, t4, t5, t6, t7, t8, k)


@njit(cache=True, inline="always")
def filter4_grad_row(d0, d1, d2, d3, d4, d5, gi, t, lo):
    """filter2_grad_row for F(4x4): gi = g_row(4, i)."""
    t0, t1, t2, t3, t4, t5, t6, t7, t8 = tap_rows(t, lo, d0.shape[0])
    c = f4_constants(d0.dtype.type)
    for k in range(d0.shape[0]):
        z0, z1, z2 = _gt4(d0[k], d1[k], d2[k], d3[k], d4[k], d5[k], c)
        _add_row_to_filters(gi, z0, z1, z2, t0, t1, t2, t3, t4, t5, t6, t7, t8, k)


@njit(cache=True, inline="always")
def accumulate_nonfinite(src, acc):
    """acc[k] += src[k] - src[k] (len(acc) >= len(src)): acc stays all zero exactly when every
    src value is finite (x - x is NaN for a NaN or an infinity). Elementwise, so vectorized."""
    for k in range(src.shape[0]):
        acc[k] += src[k] - src[k]


@njit(cache=True, inline="always")
def deinterleave2(src, o0, o1):
    """o_q[k] = src[2k + q]."""
    for k in range(o0.shape[0]):
        o0[k] = src[2 * k]
        o1[k] = src[2 * k + 1]


@njit(cache=True, inline="always")
def deinterleave4(src, o0, o1, o2, o3):
    """o_q[k] = src[4k + q]."""
    for k in range(o0.shape[0]):
        o0[k] = src[4 * k]
        o1[k] = src[4 * k + 1]
        o2[k] = src[4 * k + 2]
        o3[k] = src[4 * k + 3]
