"""backends/cpu/kernels/blas.py: the strided GEMM with alpha and beta that the CPU kernels call
from @njit code, single-threaded and split over Numba's threads, and block_gemm (micro-kernel
blocks, BLAS edges), against NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from numbagrad.backends.cpu.kernels.blas import (
    BLOCK_ROWS,
    PARALLEL_MIN_FLOPS,
    block_gemm,
    gemm,
    par_gemm,
)
from numbagrad.backends.cpu.kernels.microkernel import VECTOR_BYTES


def operands(rng, m, n, k, trans_a, trans_b, dtype):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    c = rng.standard_normal((m, n)).astype(dtype)
    expected_ab = (a.T if trans_a else a) @ (b.T if trans_b else b)
    return a, b, c, expected_ab


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("fn", [gemm, par_gemm], ids=["gemm", "par_gemm"])
def test_gemm_computes_alpha_ab_plus_beta_c(fn, trans_a, trans_b, dtype):
    rng = np.random.default_rng(0)
    # par_gemm splits products of at least PARALLEL_MIN_FLOPS: take one above it
    m, n = 67, 129
    k = PARALLEL_MIN_FLOPS // (2 * m * n) + 3
    a, b, c, ab = operands(rng, m, n, k, trans_a, trans_b, dtype)
    expected = 0.5 * ab + 2.0 * c
    fn(a, b, c, trans_a, trans_b, 0.5, 2.0)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(c, expected, rtol=tol, atol=tol * np.abs(ab).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m, n", [(1, 37), (29, 1), (1, 1)])
@pytest.mark.parametrize("big", [False, True], ids=["serial", "split"])
def test_par_gemm_with_one_row_or_column_of_c(m, n, big, trans_a, trans_b, dtype):
    """Products with one row or column of c run as vector-matrix products (split over the
    threads from PARALLEL_MIN_FLOPS): alpha and beta as BLAS applies them."""
    rng = np.random.default_rng(3)
    k = PARALLEL_MIN_FLOPS // (2 * max(m, n)) + 5 if big else 7
    a, b, c, ab = operands(rng, m, n, k, trans_a, trans_b, dtype)
    expected = 0.5 * ab + 2.0 * c
    par_gemm(a, b, c, trans_a, trans_b, 0.5, 2.0)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(c, expected, rtol=tol, atol=tol * np.abs(ab).max())


@pytest.mark.parametrize("m, n", [(1, 6), (6, 1)])
def test_par_gemm_vector_product_with_beta_zero_ignores_nan_in_c(m, n):
    rng = np.random.default_rng(4)
    a, b, _, ab = operands(rng, m, n, 5, False, True, np.float64)
    c = np.full((m, n), np.nan)
    par_gemm(a, b, c, False, True, 1.0, 0.0)
    np.testing.assert_allclose(c, ab, rtol=1e-12)


def test_par_gemm_vector_product_propagates_nan_and_inf_like_numpy():
    a = np.array([[1.0, np.inf, 2.0]])
    b = np.array([[1.0, 2.0], [0.0, 1.0], [np.nan, 0.0]])
    c = np.empty((1, 2))
    par_gemm(a, b, c, False, False, 1.0, 0.0)
    with np.errstate(invalid="ignore"):  # inf * 0 and nan * 2: NaN; inf * 1: inf
        np.testing.assert_array_equal(c, a @ b)


def test_gemm_writes_a_block_of_a_larger_matrix():
    rng = np.random.default_rng(1)
    big = rng.standard_normal((10, 12)).astype(np.float32)
    before = big.copy()
    a = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.standard_normal((3, 5)).astype(np.float32)
    gemm(a, b, big[2:6, 4:9], False, False, 1.0, 0.0)
    np.testing.assert_allclose(big[2:6, 4:9], a @ b, rtol=1e-5)
    big[2:6, 4:9] = before[2:6, 4:9]
    np.testing.assert_array_equal(big, before)  # nothing outside the block moved


@pytest.mark.parametrize("beta", [0.0, 3.0])
def test_an_empty_reduction_scales_c_by_beta(beta):
    a = np.empty((4, 0), np.float64)
    b = np.empty((0, 3), np.float64)
    c = np.arange(12, dtype=np.float64).reshape(4, 3)
    c[0, 0] = np.nan
    expected = np.zeros_like(c) if beta == 0 else c * beta  # beta 0 ignores c, NaN included
    gemm(a, b, c, False, False, 1.0, beta)
    np.testing.assert_array_equal(c, expected)


def _view(rng, rows, cols, dtype):
    """A (rows, cols) block of a larger random matrix: rows strided, as the kernels pass."""
    return rng.standard_normal((rows + 2, cols + 5)).astype(dtype)[1 : rows + 1, 2 : cols + 2]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("blocks", [(2, 3), (0, 1), (1, 0)])
@pytest.mark.parametrize("edges", [(0, 0), (5, 7), (3, 0), (0, 1)])
@pytest.mark.parametrize("k", [0, 37])
def test_block_gemm_matches_numpy(blocks, edges, k, trans_a, dtype):
    """Whole micro-kernel blocks, rows and columns past them (BLAS), both, or neither."""
    rng = np.random.default_rng(2)
    width = 2 * VECTOR_BYTES // np.dtype(dtype).itemsize
    m, n = blocks[0] * BLOCK_ROWS + edges[0], blocks[1] * width + edges[1]
    a = _view(rng, k, m, dtype) if trans_a else _view(rng, m, k, dtype)
    b = _view(rng, k, n, dtype)
    big = np.full((m + 2, n + 3), np.nan, dtype)
    block_gemm(a, b, big[1 : m + 1, 1 : n + 1], trans_a)
    expected = (a.T if trans_a else a).astype(np.float64) @ b.astype(np.float64)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(big[1 : m + 1, 1 : n + 1], expected, rtol=tol, atol=tol * 10)
    big[1 : m + 1, 1 : n + 1] = 0
    assert np.isnan(big).sum() == big.size - m * n  # nothing outside c was written
