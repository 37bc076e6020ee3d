"""Every op on every compiled backend against its NumPy reference (the interp backend)."""

from __future__ import annotations

import pytest

BACKENDS = ["cpu"]

# The op cases and checks shared with test_cuda_ops.py.
import op_cases as oc  # noqa: E402  (a sibling helper: tests/conftest.py)

CASES = oc.op_cases(x4=(2, 3, 7, 6))
_BY_ID = {case[0]: case for case in CASES}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_op_matches_reference(backend, dtype, case):
    oc.check_op(backend, case, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(oc.GRAD_CASES))
def test_backward_ops_match_reference(backend, name):
    forward_case, grad_ops = oc.GRAD_CASES[name]
    oc.check_backward(backend, _BY_ID[forward_case], grad_ops)


def test_every_registered_op_is_covered_and_lowered():
    """The registry x backend table: every op has a test case here and a compiled lowering."""
    from numbagrad.backends.cpu.lowering import LOWERINGS

    assert oc.uncovered_ops(CASES) == set(), "ops without a backend test case"
    assert oc.unlowered_ops(LOWERINGS) == set(), "ops that would fall back to NumPy on cpu"
