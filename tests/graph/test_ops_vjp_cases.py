"""Every differentiable op's VJP rule against central finite differences of its NumPy reference
(float64), over the case tables in _vjp_cases.py, and the coverage checks: every registered op has
a case, every backward-only op is emitted by one. Hypothesis sweeps over conv and pooling are in
test_ops_vjp_sweeps.py; the references against PyTorch in test_ops_torch_reference.py.
"""

from __future__ import annotations

import _vjp_cases  # a sibling helper (tests/conftest.py puts tests/graph on sys.path)
import _vjp_harness as _h  # a sibling helper (tests/conftest.py)
import numpy as np
import pytest

from numbagrad.backends import interp
from numbagrad.engine import backward
from numbagrad.graph import ops as O
from numbagrad.graph.compact import COMPACT_OPS
from numbagrad.graph.ops import all_ops
from numbagrad.graph.passes import EPILOGUE_OPS

build_case, make_array, forward_values = _h.build_case, _h.make_array, _h.forward_values
backward_feeds, check_vjp = _h.backward_feeds, _h.check_vjp
CASES = _vjp_cases.CASES

# Backward ops (``vjp is None``): each is emitted by a forward op's VJP rule and exercised
# through it (``test_backward_only_ops_appear_in_backward_graphs`` checks that they are).
BACKWARD_ONLY = {
    "conv2d_grad_input": "conv2d",
    "conv2d_grad_weight": "conv2d",
    "relu_grad": "relu",
    "softmax_grad": "softmax",
    "log_softmax_grad": "log_softmax",
    "cross_entropy_grad": "cross_entropy",
    "max_pool2d_grad": "max_pool2d",
    "avg_pool2d_grad": "avg_pool2d",
    "max_unpool2d_grad": "max_unpool2d",
    "upsample2d_grad": "upsample2d",
    "local_response_norm_grad": "local_response_norm",
}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_vjp_matches_finite_differences(case):
    check_vjp(case.operands, case.build, case.op)


def test_sign_has_zero_gradient():
    # sign is flat away from 0: its VJP gives no gradient, so the param gets an explicit zero.
    fwd, leaves, _, r = build_case([((2, 3), "away")], O.sign)
    rng = np.random.default_rng(0)
    feeds = {leaves[0].id: make_array((2, 3), "away", rng), r.id: rng.standard_normal((2, 3))}
    bwd = backward(fwd)
    (g,) = interp.evaluate(bwd, backward_feeds(fwd, bwd, forward_values(fwd, feeds)))
    np.testing.assert_array_equal(g, np.zeros((2, 3)))


def test_stop_gradient_passes_no_gradient():
    # y = x * stop_gradient(x): dy/dx = stop_gradient(x) = x, not 2x.
    fwd, leaves, _, r = build_case([((2, 3), "f")], lambda a: a * O.stop_gradient(a))
    rng = np.random.default_rng(0)
    x, weights = make_array((2, 3), "f", rng), rng.standard_normal((2, 3))
    bwd = backward(fwd)
    feeds = backward_feeds(fwd, bwd, forward_values(fwd, {leaves[0].id: x, r.id: weights}))
    (g,) = interp.evaluate(bwd, feeds)
    np.testing.assert_allclose(g, x * weights, rtol=1e-12)


def test_fan_out_within_one_op_accumulates():
    # mul(x, x): both operand gradients land on x and are summed with an `add`.
    bwd = check_vjp([((2, 3), "f")], lambda a: a * a, "mul")
    assert "add" in {n.op for n in bwd.ops()}


# --- coverage: a newly registered op must get a case in _vjp_cases.py ----------------------

SWEPT_OPS = {"conv2d", "max_pool2d", "avg_pool2d"}


def test_every_registered_op_is_covered():
    # Epilogues of backward ops come from a pass, not a VJP rule; tests/graph/
    # test_pass_epilogue.py checks them against their parts. Likewise the compact saved-value
    # ops (graph/compact.py; tests/graph/test_compact.py).
    registry = {
        k: v
        for k, v in all_ops().items()
        if not (k in EPILOGUE_OPS.values() and v.vjp is None) and k not in COMPACT_OPS
    }
    # No gradient to check: sign is flat, the others are integer-valued.
    covered = {c.op for c in CASES} | SWEPT_OPS | {"sign", "max_pool2d_indices", "class_indices"}
    covered.add("stop_gradient")  # its gradient is zero by definition: see the test below
    differentiable = {name for name, op in registry.items() if op.vjp is not None}
    backward_only = {name for name, op in registry.items() if op.vjp is None}
    assert backward_only == set(BACKWARD_ONLY), (
        "a backward op was added or removed: list it in BACKWARD_ONLY with the forward op "
        "whose VJP emits it"
    )
    assert covered == differentiable, (
        f"ops with no gradient case: {sorted(differentiable - covered)}; "
        f"cases for unknown ops: {sorted(covered - differentiable)}"
    )
    assert covered | backward_only == set(registry)


def test_backward_only_ops_appear_in_backward_graphs():
    emitted: dict[str, set[str]] = {}
    for case in CASES:
        fwd, _, _, _ = build_case(case.operands, case.build)
        for n in backward(fwd).ops():
            emitted.setdefault(n.op, set()).add(case.op)
    for grad_op, forward_op in BACKWARD_ONLY.items():
        assert forward_op in emitted.get(grad_op, set()), (
            f"no {forward_op} case emits {grad_op} in its backward graph"
        )
