"""The cpu backend's generated sums and means (codegen.reduction_source) on inputs large
enough for its parallel kernels: reduced innermost axes (vectorized rows, e.g. a conv bias
gradient) and kept innermost axes (blocks of float64 accumulators, e.g. a Linear bias
gradient, with a partial last block), against float64 NumPy."""

from __future__ import annotations

import numpy as np
import op_cases as oc  # a sibling helper (tests/conftest.py)
import pytest

from numbagrad.backends.cpu.codegen import INNER_BLOCK, PARALLEL_MIN_ELEMENTS
from numbagrad.graph import Builder
from numbagrad.graph import ops as O

CASES = [
    ((8, 5, 30, 30), (0, 2, 3)),  # rows reduced: a conv bias gradient
    ((40, 2 * INNER_BLOCK + 76), (0,)),  # innermost kept: blocks over it, the last partial
    ((3, 20, 600), (1,)),  # innermost kept, parallel over the outer kept axis
]


@pytest.mark.parametrize("op", [O.sum, O.mean])
@pytest.mark.parametrize("shape, axes", CASES, ids=str)
def test_parallel_reductions_match_float64(op, shape, axes):
    assert np.prod(shape) >= PARALLEL_MIN_ELEMENTS
    b = Builder()
    x = b.leaf("input", shape, "float32", "x")
    graph = b.build([op(x, axes)])
    value = np.random.default_rng(0).standard_normal(shape).astype(np.float32) + 10.0
    (got,), exe = oc.run("cpu", graph, {x.id: value})
    assert exe.impl_counts().get("reference", 0) == 0
    expected = (np.sum if op is O.sum else np.mean)(value.astype(np.float64), axis=axes)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
