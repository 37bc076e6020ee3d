"""The Winograd F(m x m, 3 x 3) matrices (m = 2, 4; a = m + 2) as formulas, applied elementwise
along rows of tiles.

With one a x a input tile d, one 3 x 3 filter g and the m x m output tile y:

    y = A^T [(G g G^T) * (B^T d B)] A          (* elementwise)

    F(2x2, 3x3):  B^T = [1  0 -1  0]    G = [1    0    0  ]    A^T = [1  1  1  0]
                        [0  1  1  0]        [1/2  1/2  1/2]          [0  1 -1 -1]
                        [0 -1  1  0]        [1/2 -1/2  1/2]
                        [0  1  0 -1]        [0    0    1  ]

    F(4x4, 3x3):  B^T = [4  0 -5  0  1  0]  G = [ 1/4     0     0  ]  A^T = [1  1  1  1  1  0]
                        [0 -4 -4  1  1  0]      [-1/6  -1/6  -1/6 ]        [0  1 -1  2 -2  0]
                        [0  4 -4 -1  1  0]      [-1/6   1/6  -1/6 ]        [0  1  1  4  4  0]
                        [0 -2 -1  2  1  0]      [ 1/24  1/12  1/6 ]        [0  1 -1  8 -8  1]
                        [0  2 -1 -2  1  0]      [ 1/24 -1/12  1/6 ]
                        [0  4  0 -5  0  1]      [ 0     0     1   ]

(interpolation points 0, +-1, +-2 and infinity, Lavin & Gray 2016). The weight gradient runs
the adjoints: dM = A dY A^T per tile, dg = G^T dU G.

Each ``*_rows`` function applies one matrix to vectors: output row i = sum_j Mat[i, j] * input
row j, elementwise over the rows' length (the tiles). The arguments are 1-d arrays, one per
row; the functions are inlined into their callers, so each loop is one vectorized pass and
no reference counting runs per call (measured: a call that is not inlined costs ~300 ns).
Constants are made in the arrays' dtype: a float literal would turn float32 math to float64.
"""

from __future__ import annotations

from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic


@njit(cache=True, inline="always")
def _bt2(v0, v1, v2, v3):
    return v0 - v2, v1 + v2, v2 - v1, v1 - v3


@njit(cache=True, inline="always")
def _bt4(v0, v1, v2, v3, v4, v5, two, four, five):
    p = v4 - four * v2
    q = v3 - four * v1
    r = v4 - v2
    s = two * (v3 - v1)
    return four * v0 - five * v2 + v4, p + q, p - q, r + s, r - s, four * v1 - five * v3 + v5


@njit(cache=True, inline="always")
def _at2(v0, v1, v2, v3):
    return v0 + v1 + v2, v1 - v2 - v3


@njit(cache=True, inline="always")
def _at4(v0, v1, v2, v3, v4, v5, two, four, eight):
    s12 = v1 + v2
    d12 = v1 - v2
    s34 = v3 + v4
    d34 = v3 - v4
    return v0 + s12 + s34, d12 + two * d34, s12 + four * s34, d12 + eight * d34 + v5


@njit(cache=True, inline="always")
def _a2(v0, v1):
    return v0, v0 + v1, v0 - v1, -v1


@njit(cache=True, inline="always")
def _a4(v0, v1, v2, v3, two, four, eight):
    e = v0 + v2
    f = v1 + v3
    e4 = v0 + four * v2
    f4 = two * v1 + eight * v3
    return v0, e + f, e - f, e4 + f4, e4 - f4, v3


@njit(cache=True, inline="always")
def _g2(v0, v1, v2, half):
    t = half * (v0 + v2)
    h = half * v1
    return v0, t + h, t - h, v2


@njit(cache=True, inline="always")
def _g4(v0, v1, v2, quarter, sixth, twelfth, twentyfourth):
    t = -sixth * (v0 + v2)
    h = sixth * v1
    t2 = twentyfourth * v0 + sixth * v2
    h2 = twelfth * v1
    return quarter * v0, t - h, t + h, t2 + h2, t2 - h2, v2


@njit(cache=True, inline="always")
def _gt2(v0, v1, v2, v3, half):
    s = half * (v1 + v2)
    return v0 + s, half * (v1 - v2), s + v3


@njit(cache=True, inline="always")
def _gt4(v0, v1, v2, v3, v4, v5, quarter, sixth, twelfth, twentyfourth):
    s12 = v1 + v2
    s34 = v3 + v4
    return (
        quarter * v0 - sixth * s12 + twentyfourth * s34,
        twelfth * (v3 - v4) - sixth * (v1 - v2),
        sixth * (s34 - s12) + v5,
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
    two, four, five = o0.dtype.type(2), o0.dtype.type(4), o0.dtype.type(5)
    for k in range(o0.shape[0]):
        y0, y1, y2, y3, y4, y5 = _bt4(d0[k], d1[k], d2[k], d3[k], d4[k], d5[k], two, four, five)
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
    two, four, eight = o0.dtype.type(2), o0.dtype.type(4), o0.dtype.type(8)
    for k in range(o0.shape[0]):
        y0, y1, y2, y3 = _at4(d0[k], d1[k], d2[k], d3[k], d4[k], d5[k], two, four, eight)
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
    two, four, eight = o.dtype.type(2), o.dtype.type(4), o.dtype.type(8)
    for k in range(d0.shape[0]):
        y0, y1, y2, y3 = _at4(d0[k], d1[k], d2[k], d3[k], d4[k], d5[k], two, four, eight)
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
    two, four, eight = o0.dtype.type(2), o0.dtype.type(4), o0.dtype.type(8)
    for k in range(o0.shape[0]):
        y0, y1, y2, y3, y4, y5 = _a4(d0[k], d1[k], d2[k], d3[k], two, four, eight)
        o0[k] = y0
        o1[k] = y1
        o2[k] = y2
        o3[k] = y3
        o4[k] = y4
        o5[k] = y5


# ---------------------------------------------------------------- G (filter) and G^T (its adjoint)


@njit(cache=True, inline="always")
def g2_rows(d0, d1, d2, o0, o1, o2, o3):
    half = o0.dtype.type(0.5)
    for k in range(o0.shape[0]):
        y0, y1, y2, y3 = _g2(d0[k], d1[k], d2[k], half)
        o0[k] = y0
        o1[k] = y1
        o2[k] = y2
        o3[k] = y3


@njit(cache=True, inline="always")
def g4_rows(d0, d1, d2, o0, o1, o2, o3, o4, o5):
    dt = o0.dtype.type
    c4, c6, c12, c24 = dt(1 / 4), dt(1 / 6), dt(1 / 12), dt(1 / 24)
    for k in range(o0.shape[0]):
        y0, y1, y2, y3, y4, y5 = _g4(d0[k], d1[k], d2[k], c4, c6, c12, c24)
        o0[k] = y0
        o1[k] = y1
        o2[k] = y2
        o3[k] = y3
        o4[k] = y4
        o5[k] = y5


@njit(cache=True, inline="always")
def gt2_rows(d0, d1, d2, d3, o0, o1, o2):
    half = o0.dtype.type(0.5)
    for k in range(o0.shape[0]):
        y0, y1, y2 = _gt2(d0[k], d1[k], d2[k], d3[k], half)
        o0[k] = y0
        o1[k] = y1
        o2[k] = y2


@njit(cache=True, inline="always")
def gt4_rows(d0, d1, d2, d3, d4, d5, o0, o1, o2):
    dt = o0.dtype.type
    c4, c6, c12, c24 = dt(1 / 4), dt(1 / 6), dt(1 / 12), dt(1 / 24)
    for k in range(o0.shape[0]):
        y0, y1, y2 = _gt4(d0[k], d1[k], d2[k], d3[k], d4[k], d5[k], c4, c6, c12, c24)
        o0[k] = y0
        o1[k] = y1
        o2[k] = y2


# ---------------------------------------------------------------- copies


def _element_pointer(context, builder, array_type, array, index, index_type):
    data = context.make_array(array_type)(context, builder, array).data
    return builder.gep(data, [context.cast(builder, index, index_type, types.intp)])


@intrinsic
def copy_run(typingctx, dst, start, src, src_start, n):
    """dst.flat[start : start+n] = src.flat[src_start : src_start+n] for C-contiguous arrays of
    one dtype, as one memcpy (n >= 0). Row copies of 4..32 elements as vectorized loops cost
    several times more (their remainder loops run scalar)."""
    sig = types.void(dst, start, src, src_start, n)

    def codegen(context, builder, signature, args):
        a = signature.args
        d = _element_pointer(context, builder, a[0], args[0], args[1], a[1])
        s = _element_pointer(context, builder, a[2], args[2], args[3], a[3])
        count = context.cast(builder, args[4], a[4], types.intp)
        itemsize = context.get_abi_sizeof(context.get_data_type(a[0].dtype))
        cgutils.raw_memcpy(builder, d, s, count, itemsize)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def zero_run(typingctx, dst, start, n):
    """dst.flat[start : start+n] = 0 for a C-contiguous float array, as one memset (n >= 0)."""
    sig = types.void(dst, start, n)

    def codegen(context, builder, signature, args):
        a = signature.args
        d = _element_pointer(context, builder, a[0], args[0], args[1], a[1])
        itemsize = context.get_abi_sizeof(context.get_data_type(a[0].dtype))
        count = context.cast(builder, args[2], a[2], types.intp)
        cgutils.memset(builder, d, builder.mul(count, count.type(itemsize)), 0)
        return context.get_dummy_value()

    return sig, codegen


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
