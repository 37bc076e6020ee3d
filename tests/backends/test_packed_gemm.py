"""backends/cpu/kernels/packed_gemm.py: the packed micro-kernel GEMM against NumPy (every
blocking edge, both transposes, beta 0 and 1, strided views), and the rule that sends
``blas.gemm`` to it (by a symbol, see test_cache_healing for its cache)."""

from __future__ import annotations

import numpy as np
import pytest

from numbagrad.backends.cpu.kernels import blas
from numbagrad.backends.cpu.kernels.microkernel import VECTOR_BYTES
from numbagrad.backends.cpu.kernels.packed_gemm import (
    BLOCK_ROWS,
    COLUMNS,
    OWN_GEMM,
    PACK_K,
    PACK_M,
    PACK_N,
    blas_is_narrower,
    own_gemm_applies,
    packed_gemm,
)


def _rows(rng, rows, cols, lead):
    """A float32 (rows, lead) C-contiguous array whose first ``cols`` columns are the operand
    and the rest NaN (``packed_gemm`` must not read them)."""
    out = np.full((rows, lead), np.nan, np.float32)
    out[:, :cols] = rng.standard_normal((rows, cols))
    return out


def _view(rng, rows, cols):
    """A (rows, cols) float32 block of a larger random matrix: rows strided, as the kernels
    pass to blas.gemm."""
    big = rng.standard_normal((rows + 2, cols + 5)).astype(np.float32)
    return big[1 : rows + 1, 2 : cols + 2]


SHAPES = {
    # one panel of each kind, plus rows and columns past the last whole block
    "past every pack": (PACK_M + BLOCK_ROWS + 3, PACK_N + COLUMNS + 5, PACK_K + 17),
    "one block and edges": (BLOCK_ROWS + 1, COLUMNS + 3, 1),
    "whole blocks": (2 * BLOCK_ROWS, 3 * COLUMNS, 40),
}


@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_packed_gemm_matches_numpy(shape, trans_a, trans_b, beta):
    m, n, k = shape
    rng = np.random.default_rng(m + n + k)
    a = _rows(rng, k, m, m + 3) if trans_a else _rows(rng, m, k, k + 3)
    b = _rows(rng, n, k, k + 5) if trans_b else _rows(rng, k, n, n + 5)
    c = np.full((m + 1, n + 7), np.nan, np.float32)  # past row m and column n: never written
    before = rng.standard_normal((m, n)).astype(np.float32)
    c[:m, :n] = before
    if beta == 0:
        c[0, 0] = np.nan  # beta 0 ignores what c held, NaN included
    packed_gemm(a, b, c, m, n, k, trans_a, trans_b, beta)
    a_op = a[:, :m].T if trans_a else a[:, :k]
    b_op = b[:, :k].T if trans_b else b[:, :n]
    ab = a_op.astype(np.float64) @ b_op.astype(np.float64)
    np.testing.assert_allclose(
        c[:m, :n], ab + beta * before, rtol=1e-5, atol=1e-5 * np.abs(ab).max()
    )
    c[:m, :n] = 0
    assert np.isnan(c).sum() == c.size - m * n


@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("trans_a", [False, True])
def test_gemm_matches_numpy_on_strided_views(trans_a, trans_b, beta):
    """``blas.gemm`` on views of larger matrices, as the kernels pass them; on the packed GEMM
    (by its symbol) where OWN_GEMM, else on BLAS: the same answer either way."""
    rng = np.random.default_rng(5)
    m, n, k = 3 * BLOCK_ROWS + 2, 2 * COLUMNS + 7, PACK_K + 3
    assert own_gemm_applies(m, n, k, 4, 1.0, beta)
    a = _view(rng, k, m) if trans_a else _view(rng, m, k)
    b = _view(rng, n, k) if trans_b else _view(rng, k, n)
    big = np.full((m + 2, n + 3), np.nan, np.float32)
    c = big[1 : m + 1, 1 : n + 1]
    before = rng.standard_normal((m, n)).astype(np.float32)
    c[...] = before
    ab = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
    blas.gemm(a, b, c, trans_a, trans_b, 1.0, beta)
    np.testing.assert_allclose(c, ab + beta * before, rtol=1e-5, atol=1e-5 * np.abs(ab).max())
    c[...] = 0
    assert np.isnan(big).sum() == big.size - m * n  # nothing outside c was written


@pytest.mark.parametrize(
    ("vector_bytes", "libraries", "narrower"),
    [
        (64, [("openblas", "Haswell")], True),  # Zen 5 with OpenBLAS 0.3.30
        (64, [("openblas", "Zen")], True),
        (64, [("openblas", "SkylakeX")], False),
        (64, [("openblas", "SapphireRapids")], False),
        (64, [("openblas", "Cooperlake"), ("openblas", "Haswell")], False),  # one is wide
        (64, [("mkl", None)], False),  # MKL picks its kernels by CPU features
        (64, [("blis", "zen3")], False),
        (64, [], False),  # no BLAS found: keep what Numba calls
        (32, [("openblas", "Haswell")], False),  # an AVX2 CPU: BLAS is as wide as it
    ],
)
def test_the_own_gemm_is_chosen_only_where_blas_runs_narrower_vectors(
    vector_bytes, libraries, narrower
):
    assert blas_is_narrower(vector_bytes, libraries) is narrower


def test_own_gemm_flag_follows_the_rule_on_this_machine():
    from numbagrad.backends.cpu.threads import blas_architectures

    assert OWN_GEMM is blas_is_narrower(VECTOR_BYTES, blas_architectures())


@pytest.mark.parametrize(
    ("args", "applies"),
    [
        ((BLOCK_ROWS, COLUMNS, 1, 4, 1.0, 0.0), True),
        ((BLOCK_ROWS, COLUMNS, 1, 4, 1.0, 1.0), True),
        ((BLOCK_ROWS, COLUMNS, 1, 8, 1.0, 0.0), False),  # float64 stays on BLAS
        ((BLOCK_ROWS, COLUMNS, 1, 4, 0.5, 0.0), False),  # alpha other than 1
        ((BLOCK_ROWS, COLUMNS, 1, 4, 1.0, 2.0), False),  # beta other than 0 or 1
        ((BLOCK_ROWS - 1, COLUMNS, 1, 4, 1.0, 0.0), False),  # less than one block
        ((BLOCK_ROWS, COLUMNS - 1, 1, 4, 1.0, 0.0), False),
    ],
)
def test_own_gemm_applies_to_float32_with_alpha_1_and_beta_0_or_1(args, applies):
    assert own_gemm_applies(*args) is applies
