"""What the NaN/Inf tests (test_nonfinite_*.py) share: the special values, the backends to run
(cpu, and cuda on the simulator where numba-cuda is installed) and the comparison, in which a
NaN must meet a NaN and an Inf the same Inf. Imported by name (tests/conftest.py)."""

from __future__ import annotations

import math

import numpy as np
import op_cases as oc
import pytest
from cuda_setup import REAL_GPU  # chooses the CUDA simulator before numba.cuda loads

from numbagrad.backends import get_backend, interp

NAN, INF = math.nan, math.inf
SPECIALS = (NAN, INF, -INF, 0.0, -0.0)
VALUES = (*SPECIALS, 2.5, -2.5, 0.5)

CUDA_MARKS = [pytest.mark.cuda] + ([pytest.mark.gpu] if REAL_GPU else [])
BACKENDS = ["cpu", pytest.param("cuda", marks=CUDA_MARKS)]


def require(backend: str) -> None:
    """Skip the calling test where ``backend`` cannot run here (no numba-cuda)."""
    if backend == "cuda":
        pytest.importorskip("numba_cuda")
        from numbagrad.errors import BackendError

        try:
            get_backend("cuda")
        except BackendError as e:  # pragma: no cover - depends on the machine
            pytest.skip(str(e))


def tolerance(dtype: str) -> dict:
    return {"rtol": 2e-6, "atol": 1e-6} if dtype == "float32" else {"rtol": 1e-12, "atol": 1e-12}


def assert_same(got, expected, what: str, rtol: float, atol: float) -> None:
    """Equal NaN positions, equal infinities, finite values close."""
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)


def run_backends(graph, feeds: dict, backend: str, dtype: str) -> None:
    """``graph`` compiled on ``backend`` (no NumPy fallback) gives what interp gives."""
    require(backend)
    expected = interp.evaluate(graph, feeds)
    got, exe = oc.run(backend, graph, feeds)
    assert exe.impl_counts().get("reference", 0) == 0, "an op fell back to its NumPy reference"
    for k, (g, e) in enumerate(zip(got, expected)):
        assert_same(g, e, f"{backend} output {k}", **tolerance(dtype))
