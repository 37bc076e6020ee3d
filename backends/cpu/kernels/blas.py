"""GEMM on BLAS with strides, alpha and beta, callable from ``@njit`` code and run in parallel
by Numba's threads: the one thread pool the CPU kernels use.

``np.dot`` inside ``@njit`` reaches BLAS only for whole C- or F-ordered matrices, with no
``beta`` and no leading dimension, so it cannot write a block of a larger matrix or accumulate.
``gemm`` calls the same entry point Numba's ``np.dot`` calls (``numba_xxgemm``, Numba's wrapper
of SciPy's BLAS, resolved by name, so cached kernels stay cacheable) with every argument.

Parallelism comes from Numba, never from BLAS: ``par_gemm`` splits the product into one block
per Numba thread and calls BLAS single-threaded in each (the CPU executable keeps BLAS at one
thread while it runs, see ``backends/cpu/threads.py``). Two pools, BLAS's and Numba's, each
busy-waiting after its work, starve each other on few cores; one pool cannot, whatever other
library started a pool first.

Where that BLAS runs narrower vectors than the CPU has (OpenBLAS's AVX2 kernels on an AVX-512
CPU it does not know), ``gemm`` computes float32 products on the micro-kernel instead
(packed_gemm.py).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange, types
from numba.np.linalg import ensure_blas

from .microkernel import VECTOR_BYTES
from .packed_gemm import (
    BLOCK_KERNEL,
    BLOCK_ROWS,
    EXTERNAL,
    OWN_GEMM,
    VECTORS,
    own_gemm_applies_jit,
)
from .parallel import REASSOC

ensure_blas()  # loads SciPy's BLAS into Numba's helper library (an ImportError without SciPy)

_xxgemm = types.ExternalFunction(
    "numba_xxgemm",
    types.intc(
        types.char,  # kind: 's' or 'd'
        types.char,  # transa
        types.char,  # transb
        types.intp,  # m
        types.intp,  # n
        types.intp,  # k
        types.voidptr,  # alpha
        types.voidptr,  # a
        types.intp,  # lda
        types.voidptr,  # b
        types.intp,  # ldb
        types.voidptr,  # beta
        types.voidptr,  # c
        types.intp,  # ldc
    ),
)

PARALLEL_MIN_FLOPS = 1 << 22  # below ~4 MFLOP a parallel launch costs more than it saves
# BLAS's character arguments as integers: ord() inside @njit is one more function to compile
_SINGLE, _DOUBLE, _NO_TRANSPOSE, _TRANSPOSE = ord("s"), ord("d"), ord("n"), ord("t")


@njit(cache=True, inline="always")
def _leading(a):
    """The leading dimension BLAS needs for a row-major view with unit inner stride."""
    return max(a.strides[0] // a.itemsize, a.shape[1], 1)


@njit(cache=True, nogil=True)
def gemm(a, b, c, trans_a, trans_b, alpha, beta):
    """c (M, N) = alpha * op(a) @ op(b) + beta * c, on one thread. op(a) is ``a.T`` when
    ``trans_a`` (a is then (K, M)), likewise b. The three arrays are 2-d views of one float
    dtype whose rows are contiguous (any row stride: blocks of larger matrices work); with
    ``beta == 0`` what ``c`` held is ignored, NaN included, as BLAS does."""
    m, n = c.shape
    k = a.shape[0] if trans_a else a.shape[1]
    if m == 0 or n == 0:
        return
    if k == 0:  # BLAS may return without touching c
        _scale(c, beta)
        return
    if OWN_GEMM:  # a global constant: Numba prunes the branch when False
        if own_gemm_applies_jit(m, n, k, c.itemsize, alpha, beta):
            lda, ldb, ldc = _leading(a), _leading(b), _leading(c)
            EXTERNAL(a.ctypes, lda, b.ctypes, ldb, c.ctypes, ldc, m, n, k, trans_a, trans_b,
                     np.float32(beta))  # fmt: skip
            return
    scalars = np.empty(2, dtype=c.dtype)
    scalars[0] = alpha
    scalars[1] = beta
    # Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
    _xxgemm(
        _SINGLE if c.itemsize == 4 else _DOUBLE,
        _TRANSPOSE if trans_b else _NO_TRANSPOSE,
        _TRANSPOSE if trans_a else _NO_TRANSPOSE,
        n,
        m,
        k,
        scalars[0:].ctypes,
        b.ctypes,
        _leading(b),
        a.ctypes,
        _leading(a),
        scalars[1:].ctypes,
        c.ctypes,
        _leading(c),
    )


@njit(cache=True, nogil=True)
def block_gemm(a, b, c, trans_a):
    """c (M, N) = op(a) @ b on one thread (beta 0), as ``gemm`` does, with the register-blocked
    micro-kernel reading a and b in place on the whole blocks of BLOCK_ROWS rows and two
    vectors of columns, and BLAS on the rest. For the small products of the Winograd
    transforms (32x512 @ 512x32), whose operands BLAS would repack for every product."""
    m, n = c.shape
    kk = b.shape[0]
    width = VECTORS * VECTOR_BYTES // c.itemsize
    mb, nb = m - m % BLOCK_ROWS, n - n % width
    if mb > 0 and nb > 0 and kk > 0:
        lda = a.strides[0] // a.itemsize
        ra = np.arange(mb) * (1 if trans_a else lda)
        ka = np.arange(kk) * (lda if trans_a else 1)
        ldb, ldc = b.strides[0] // b.itemsize, c.strides[0] // c.itemsize
        for i0 in range(0, mb, BLOCK_ROWS):
            for j0 in range(0, nb, width):
                BLOCK_KERNEL(c, i0 * ldc + j0, ldc, a, 0, ra, i0, ka, 0, kk, b, j0, ldb)
    else:
        mb, nb = 0, 0
    if nb < n:
        gemm(a, b[:, nb:], c[:, nb:], trans_a, False, 1.0, 0.0)
    if mb < m:
        gemm(a[:, mb:] if trans_a else a[mb:], b[:, :nb], c[mb:, :nb], trans_a, False, 1.0, 0.0)


@njit(cache=True, nogil=True)
def _scale(c, beta):
    """c *= beta, with beta == 0 writing zeros (NaN in c included). Loops, not ``c[:, :] =``:
    Numba's slice assignment compiles its shape-mismatch error message, ~3 s of cold start."""
    m, n = c.shape
    for i in range(m):
        for j in range(n):
            c[i, j] = 0 if beta == 0 else c[i, j] * beta


@njit(cache=True, parallel=True, nogil=True)
def _split_gemm(a, b, c, trans_a, trans_b, alpha, beta, blocks):
    """``gemm`` as ``blocks`` independent products, each a slice of c's rows or columns
    (whichever is longer), one per Numba thread."""
    m, n = c.shape
    by_rows = m >= n
    extent = m if by_rows else n
    for s in prange(blocks):
        lo = s * extent // blocks
        hi = (s + 1) * extent // blocks
        if by_rows:
            part_a = a[:, lo:hi] if trans_a else a[lo:hi]
            gemm(part_a, b, c[lo:hi], trans_a, trans_b, alpha, beta)
        else:
            part_b = b[lo:hi] if trans_b else b[:, lo:hi]
            gemm(a, part_b, c[:, lo:hi], trans_a, trans_b, alpha, beta)


@njit(cache=True, nogil=True, fastmath=REASSOC)
def _vector_times_matrix(v, b, out, trans_b, alpha, beta):
    """out (N,) = alpha * v (K,) @ op(b) + beta * out, K >= 1, on one thread: dot products
    with b's rows when ``trans_b`` (b is (N, K)), else a sum of K scaled rows of b (K, N).
    The products and the NaN rule (beta 0 ignores out) are BLAS's; only the order of the
    sums differs."""
    n, k = out.shape[0], v.shape[0]
    if trans_b:
        for j in range(n):
            row = b[j]
            s = v[0] * row[0]
            for p in range(1, k):
                s += v[p] * row[p]
            out[j] = alpha * s if beta == 0 else alpha * s + beta * out[j]
        return
    first = b[0]
    for j in range(n):
        out[j] = alpha * v[0] * first[j] if beta == 0 else alpha * v[0] * first[j] + beta * out[j]
    for p in range(1, k):
        scale, row = alpha * v[p], b[p]
        for j in range(n):
            out[j] += scale * row[j]


@njit(cache=True, parallel=True, nogil=True)
def _split_vector_times_matrix(v, b, out, trans_b, alpha, beta, blocks):
    """``_vector_times_matrix`` as ``blocks`` slices of out, one per Numba thread."""
    n = out.shape[0]
    for s in prange(blocks):
        lo, hi = s * n // blocks, (s + 1) * n // blocks
        part = b[lo:hi] if trans_b else b[:, lo:hi]
        _vector_times_matrix(v, part, out[lo:hi], trans_b, alpha, beta)


def _as_vector_product(a, b, c, trans_a: bool, trans_b: bool):
    """(v, matrix, out, trans) with c = v @ op(matrix) as vectors (out a view of c) where c
    has one row or one column and the operands are C-contiguous, else None. BLAS's GEMM
    runs such products at a few GFLOP/s (LeNet's batch-1 steps: 17 us against 2 for a
    400 x 120 product), packing the matrix for a micro-kernel that uses one of its rows."""
    if not (a.flags.c_contiguous and b.flags.c_contiguous and c.flags.c_contiguous):
        return None
    m, n = c.shape
    if m == 1:  # c = op(a) @ op(b): a row vector op(a) times op(b)
        return (a[:, 0] if trans_a else a[0]), b, c[0], trans_b
    if n == 1:  # c^T = op(b)^T @ op(a)^T: the column op(b) times op(a)^T
        return (b[0] if trans_b else b[:, 0]), a, c[:, 0], not trans_a
    return None


def par_gemm(a, b, c, trans_a: bool, trans_b: bool, alpha: float, beta: float) -> None:
    """``gemm`` split over Numba's threads when it is big enough to gain from it, and the
    products with one row or column of c as vector-matrix products. A Python function:
    ``numba.get_num_threads()`` inside ``@njit`` code would keep it from caching."""
    m, n = c.shape
    k = a.shape[0] if trans_a else a.shape[1]
    threads = numba.get_num_threads()
    vector = _as_vector_product(a, b, c, trans_a, trans_b) if k and min(m, n) == 1 else None
    if vector is not None:
        scalar = c.dtype.type  # (a Python float would make the loops float64)
        alpha, beta = scalar(alpha), scalar(beta)
        if threads == 1 or 2 * m * n * k < PARALLEL_MIN_FLOPS:
            _vector_times_matrix(*vector, alpha, beta)
        else:
            _split_vector_times_matrix(*vector, alpha, beta, threads)
        return
    if threads == 1 or 2 * m * n * k < PARALLEL_MIN_FLOPS or max(m, n) < 2 * threads:
        gemm(a, b, c, trans_a, trans_b, alpha, beta)
    else:
        _split_gemm(a, b, c, trans_a, trans_b, alpha, beta, threads)
