"""Matrix products on BLAS: ``np.dot`` inside ``@njit`` calls SciPy's OpenBLAS (sgemm/dgemm).

A transposed operand is passed as a ``.T`` view; Numba hands BLAS the transpose flag instead of
copying (checked: float32 GEMMs run at BLAS speed, ~200+ GFLOP/s on 2 cores for large shapes).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import _env  # noqa: F401  (thread-pool settings, before SciPy's BLAS loads)


@njit(cache=True)
def _dot(a, b, out, trans_a, trans_b):
    # Four explicit branches: a conditional ``a.T if t else a`` would unify the C and F layouts
    # into 'A', which Numba's dot copies to contiguous memory first.
    if a.shape[1 - trans_a] == 0:  # empty inner dimension: BLAS would not be called
        out[...] = 0
    elif trans_a and trans_b:
        np.dot(a.T, b.T, out)
    elif trans_a:
        np.dot(a.T, b, out)
    elif trans_b:
        np.dot(a, b.T, out)
    else:
        np.dot(a, b, out)


@njit(cache=True)
def matmul(a, b, out, trans_a, trans_b):
    """out (M, N) = op(a) @ op(b); op(a) is a.T when ``trans_a`` (a is then (K, M)), likewise b.

    All three arrays are 2-d, C-contiguous and of one float dtype; ``out`` is overwritten.
    """
    _dot(a, b, out, trans_a, trans_b)


@njit(cache=True)
def batched_matmul(a, b, out, trans_a, trans_b):
    """out[i] = op(a[i]) @ op(b[i]) for 3-d arrays: a (B, M, K) or (B, K, M) when ``trans_a``,
    b (B, K, N) or (B, N, K) when ``trans_b``, out (B, M, N), overwritten.

    One BLAS call per batch entry; BLAS threads each call (the entries are usually large).
    """
    for i in range(a.shape[0]):
        _dot(a[i], b[i], out[i], trans_a, trans_b)


@njit(cache=True)
def matmul_accumulate(a, b, out, tmp, trans_a, trans_b):
    """out += op(a) @ op(b), with ``tmp`` (shaped like out) as scratch; BLAS through np.dot has
    no beta argument."""
    _dot(a, b, tmp, trans_a, trans_b)
    o = out.reshape(-1)
    t = tmp.reshape(-1)
    for i in range(o.shape[0]):
        o[i] += t[i]


@njit(cache=True)
def group_matmul_per_image(w2, src, dst, groups, trans_w):
    """dst[n, group g] = op(W_g) @ src[n, group g] for every image: the 1x1 stride-1 conv
    (w2 (K, C/g), src (N, C, P), dst (N, K, P)) and, with trans_w, its input gradient
    (w2 (K, C/g), src (N, K, P), dst (N, C, P))."""
    cs = src.shape[1] // groups
    cd = dst.shape[1] // groups
    ws = w2.shape[0] // groups
    for n in range(src.shape[0]):
        for g in range(groups):
            _dot(
                w2[g * ws : (g + 1) * ws],
                src[n, g * cs : (g + 1) * cs],
                dst[n, g * cd : (g + 1) * cd],
                trans_w,
                False,
            )
