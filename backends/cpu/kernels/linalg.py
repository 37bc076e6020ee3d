"""Matrix products on BLAS (``blas.py``): one BLAS call per product, split over Numba's threads.

All arrays are C-contiguous (or blocks of C-contiguous arrays, see ``blas.gemm``) and of one
float dtype; a transposed operand is passed as is, with its flag: ``op(a)`` is ``a.T`` when
``trans_a`` (a is then (K, M)), likewise b. The entry points are Python functions (they read
Numba's thread count); the loops they start are Numba kernels.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from .blas import gemm, par_gemm
from .packed_gemm import OWN_GEMM


def matmul(a, b, out, trans_a: bool, trans_b: bool) -> None:
    """out (M, N) = op(a) @ op(b); ``out`` is overwritten."""
    par_gemm(a, b, out, trans_a, trans_b, 1.0, 0.0)


def matmul_accumulate(a, b, out, trans_a: bool, trans_b: bool) -> None:
    """out (M, N) += op(a) @ op(b)."""
    par_gemm(a, b, out, trans_a, trans_b, 1.0, 1.0)


@njit(cache=True, parallel=True, nogil=True)
def _gemm_each(a, b, out, trans_a, trans_b):
    for i in prange(a.shape[0]):
        gemm(a[i], b[i], out[i], trans_a, trans_b, 1.0, 0.0)


def batched_matmul(a, b, out, trans_a: bool, trans_b: bool) -> None:
    """out[i] = op(a[i]) @ op(b[i]) for 3-d arrays: a (B, M, K) or (B, K, M) when ``trans_a``,
    b (B, K, N) or (B, N, K) when ``trans_b``, out (B, M, N), overwritten. One thread per
    product when there are enough of them, else each product split over the threads."""
    if a.shape[0] >= numba.get_num_threads():
        _gemm_each(a, b, out, trans_a, trans_b)
    else:
        for i in range(a.shape[0]):
            par_gemm(a[i], b[i], out[i], trans_a, trans_b, 1.0, 0.0)


@njit(cache=True, parallel=True, nogil=True)
def _group_gemm_each(w2, src, dst, groups, trans_w):
    cs = src.shape[1] // groups
    cd = dst.shape[1] // groups
    ws = w2.shape[0] // groups
    for t in prange(src.shape[0] * groups):
        n, g = t // groups, t % groups
        w_g = w2[g * ws : (g + 1) * ws]
        s_g, d_g = src[n, g * cs : (g + 1) * cs], dst[n, g * cd : (g + 1) * cd]
        gemm(w_g, s_g, d_g, trans_w, False, 1.0, 0.0)


def transposed_groups(w2: np.ndarray, groups: int) -> np.ndarray:
    """W_g^T of each group of w2 (K, R), stacked: (groups * R, K / groups), C-contiguous.
    Where the packed GEMM runs (OWN_GEMM), the input gradients that run a GEMM per image (or
    per chunk of a few) multiply by it instead of passing W transposed: the packed GEMM
    copies a transposed A for every product, here once per call. (Where one GEMM covers the
    batch its threads' packs cost less than this copy: 512 x 2304 weights, 1 ms; and BLAS
    packs W for every product either way.)"""
    k, r = w2.shape
    stacked = w2.reshape(groups, k // groups, r).transpose(0, 2, 1)
    return np.ascontiguousarray(stacked).reshape(groups * r, k // groups)


def weights_for_input_grads(w2: np.ndarray, groups: int) -> tuple[np.ndarray, bool]:
    """(weights, trans flag) for input gradients that multiply by W_g^T in a GEMM per image
    or per chunk: W_g^T copied once where OWN_GEMM (see transposed_groups), else w2 itself
    with the GEMMs transposing it."""
    return (transposed_groups(w2, groups), False) if OWN_GEMM else (w2, True)


def group_matmul_per_image(w2, src, dst, groups: int, trans_w: bool) -> None:
    """dst[n, group g] = op(W_g) @ src[n, group g] for every image: the 1x1 stride-1 conv
    (w2 (K, C/g), src (N, C, P), dst (N, K, P)) and, with trans_w, its input gradient
    (w2 (K, C/g), src (N, K, P), dst (N, C, P))."""
    if trans_w:
        w2, trans_w = weights_for_input_grads(w2, groups)
    if src.shape[0] * groups >= numba.get_num_threads():
        _group_gemm_each(w2, src, dst, groups, trans_w)
        return
    cs, cd, ws = src.shape[1] // groups, dst.shape[1] // groups, w2.shape[0] // groups
    for n in range(src.shape[0]):
        for g in range(groups):
            w_g = w2[g * ws : (g + 1) * ws]
            s_g, d_g = src[n, g * cs : (g + 1) * cs], dst[n, g * cd : (g + 1) * cd]
            par_gemm(w_g, s_g, d_g, trans_w, False, 1.0, 0.0)
