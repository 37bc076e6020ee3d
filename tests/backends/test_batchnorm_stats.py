"""Training BatchNorm's reductions (``batch_norm_stats``, ``batch_norm_grad_stats``) on cpu and
cuda (simulator) beyond op_cases.py's small cases: a large mean (x ~ 1000 + N(0, 1)) against
float64, the parallel cpu path (rows split across work items mid-image, short rows, L = 1) and
the cuda path that splits a channel across blocks."""

from __future__ import annotations

import nonfinite_cases as nc  # first: it chooses the CUDA simulator
import numpy as np
import op_cases as oc
import pytest

from numbagrad.backends import interp
from numbagrad.backends.cpu.codegen import PARALLEL_MIN_ELEMENTS
from numbagrad.graph import ops as O

# cpu shapes reach the parallel path; the simulator's are small but split each channel (more
# than 4 * 32 values per channel).
SHAPES = {"cpu": (4, 8, 32, 32), "cuda": (2, 2, 160)}


def _run(backend, fn, arrays):
    case = ("case", [(a.shape, "f") for a in arrays], fn)
    graph, leaves = oc.build(case, str(arrays[0].dtype))
    (got,), exe = oc.run(backend, graph, {v.id: a for v, a in zip(leaves, arrays)})
    assert exe.impl_counts().get("reference", 0) == 0
    return got


@pytest.mark.parametrize("backend", nc.BACKENDS)
def test_statistics_of_a_large_mean_match_float64(backend):
    nc.require(backend)
    shape = SHAPES[backend]
    x = (1000 + np.random.default_rng(0).standard_normal(shape)).astype(np.float32)
    axes = (0, *range(2, x.ndim))
    x64 = x.astype(np.float64)
    mean, var = x64.mean(axes), x64.var(axes)
    got = _run(backend, O.batch_norm_stats, [x])
    np.testing.assert_allclose(got[0], mean, rtol=1e-7)  # float32 rounding of the result
    np.testing.assert_allclose(got[1], var, rtol=1e-6)
    # Float32 sums of squares lose the variance entirely at this mean.
    naive = (x * x).mean(axes, dtype=np.float32) - x.mean(axes, dtype=np.float32) ** 2
    assert np.abs(naive - var).max() > 1e-2


@pytest.mark.parametrize("backend", nc.BACKENDS)
def test_gradient_sums_about_a_large_mean_match_float64(backend):
    nc.require(backend)
    shape = SHAPES[backend]
    rng = np.random.default_rng(1)
    x = (1000 + rng.standard_normal(shape)).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    mean = x.astype(np.float64).mean((0, *range(2, x.ndim)), keepdims=True)[:1]
    mean = mean.astype(np.float32)
    got = _run(backend, O.batch_norm_grad_stats, [g, x, mean])
    axes = (0, *range(2, x.ndim))
    g64 = g.astype(np.float64)
    np.testing.assert_allclose(got[0], g64.sum(axes), rtol=1e-6, atol=1e-4)
    centered = x.astype(np.float64) - mean.astype(np.float64)
    np.testing.assert_allclose(got[1], (g64 * centered).sum(axes), rtol=1e-6, atol=1e-4)


def test_gradient_sums_of_one_buffer_read_twice():
    # g and x in one buffer: the cpu kernel must not take the statistics' squares path.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 20)).astype(np.float32)
    mean = rng.standard_normal((1, 4, 1)).astype(np.float32)
    case = (
        "case",
        [(x.shape, "f"), (mean.shape, "f")],
        lambda v, m: O.batch_norm_grad_stats(v, v, m),
    )
    graph, (xv, mv) = oc.build(case, "float32")
    (got,), _ = oc.run("cpu", graph, {xv.id: x, mv.id: mean})
    x64 = x.astype(np.float64)
    expected = (x64 * (x64 - mean)).sum((0, 2))
    np.testing.assert_allclose(got[1], expected, rtol=1e-6, atol=1e-5)


# Each at least PARALLEL_MIN_ELEMENTS: work items split the N * C rows mid-image (long rows),
# rows shorter than a vectorized loop (L = 3), and BatchNorm1d's (N, C) (L = 1).
PARALLEL_SHAPES = [(3, 5, 2200), (2200, 5, 3), (7000, 5)]


def _inputs(op, shape, rng) -> list[np.ndarray]:
    x = rng.standard_normal(shape).astype(np.float32)
    if op is O.batch_norm_stats:
        return [x]
    g = rng.standard_normal(shape).astype(np.float32)
    mean = rng.standard_normal((1, shape[1], *(1,) * (len(shape) - 2))).astype(np.float32)
    return [g, x, mean]


@pytest.mark.parametrize("shape", PARALLEL_SHAPES, ids=str)
@pytest.mark.parametrize("op", [O.batch_norm_stats, O.batch_norm_grad_stats])
def test_cpu_work_items_match_the_reference(shape, op):
    assert np.prod(shape) >= PARALLEL_MIN_ELEMENTS
    arrays = _inputs(op, shape, np.random.default_rng(2))
    case = ("case", [(a.shape, "f") for a in arrays], op)
    graph, leaves = oc.build(case, "float32")
    (expected,) = interp.evaluate(graph, {v.id: a for v, a in zip(leaves, arrays)})
    np.testing.assert_allclose(_run("cpu", op, arrays), expected, rtol=2e-5, atol=2e-4)
