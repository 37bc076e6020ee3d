"""Every op on every compiled backend against its NumPy reference (the interp backend)."""

from __future__ import annotations

import numpy as np
import pytest

from numbagrad.backends import get_backend, interp
from numbagrad.graph import Builder
from numbagrad.graph import ops as O
from numbagrad.graph.ops import all_ops

BACKENDS = ["cpu"]
X4 = (2, 3, 7, 6)

# (case id, input specs [(shape, kind)], fn building the op from input Values)
# kinds: "f" random float, "pos" positive float, "cls<C>" class indices below C.
CASES = [
    ("add_bcast", [((2, 3, 4), "f"), ((3, 1), "f")], lambda a, b: a + b),
    ("sub_scalar", [((5, 4), "f")], lambda a: 1.5 - a),
    ("mul", [((2, 3, 4), "f"), ((4,), "f")], lambda a, b: a * b),
    ("div", [((3, 4), "f"), ((3, 4), "pos")], lambda a, b: a / b),
    ("neg", [((7,), "f")], lambda a: -a),
    ("exp", [((3, 5), "f")], O.exp),
    ("log", [((3, 5), "pos")], O.log),
    ("sqrt", [((3, 5), "pos")], O.sqrt),
    ("abs", [((3, 5), "f")], O.abs),
    ("sign", [((3, 5), "f")], O.sign),
    ("relu", [(X4, "f")], O.relu),
    ("relu_grad", [(X4, "f"), (X4, "f")], O.relu_grad),
    ("tanh", [(X4, "f")], O.tanh),
    ("sigmoid", [(X4, "f")], O.sigmoid),
    ("broadcast_to", [((3, 1), "f")], lambda a: O.broadcast_to(a, (2, 3, 4))),
    ("sum_all", [(X4, "f")], lambda a: O.sum(a)),
    ("sum_023", [(X4, "f")], lambda a: O.sum(a, (0, 2, 3))),
    ("sum_keep", [(X4, "f")], lambda a: O.sum(a, 1, keepdims=True)),
    ("mean_23", [(X4, "f")], lambda a: O.mean(a, (2, 3))),
    ("reshape", [(X4, "f")], lambda a: O.reshape(a, (6, 42))),
    ("transpose", [(X4, "f")], lambda a: O.transpose(a, (0, 2, 3, 1))),
    ("matmul", [((5, 4), "f"), ((4, 3), "f")], O.matmul),
    ("matmul_tt", [((4, 5), "f"), ((3, 4), "f")], lambda a, b: O.matmul(a, b, True, True)),
    ("matmul_3d", [((2, 5, 4), "f"), ((2, 3, 4), "f")], lambda a, b: O.matmul(a, b, False, True)),
    ("conv2d", [(X4, "f"), ((4, 3, 3, 2), "f"), ((4,), "f")], O.conv2d),
    (
        "conv2d_s2_p1_d2",
        [(X4, "f"), ((4, 3, 2, 3), "f")],
        lambda x, w: O.conv2d(x, w, stride=2, padding=1, dilation=2),
    ),
    (
        "conv2d_groups",
        [((2, 4, 6, 5), "f"), ((6, 2, 3, 3), "f")],
        lambda x, w: O.conv2d(x, w, padding=(1, 0), groups=2),
    ),
    ("max_pool", [(X4, "f")], lambda x: O.max_pool2d(x, 2)),
    ("max_pool_3s2p1", [(X4, "f")], lambda x: O.max_pool2d(x, 3, 2, 1)),
    ("avg_pool", [(X4, "f")], lambda x: O.avg_pool2d(x, 2)),
    (
        "avg_pool_pad_exclude",
        [(X4, "f")],
        lambda x: O.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
    ),
    ("softmax", [((4, 6), "f")], O.softmax),
    ("softmax_axis1", [(X4, "f")], lambda x: O.softmax(x, 1)),
    ("log_softmax", [((4, 6), "f")], O.log_softmax),
    ("log_softmax_axis0", [((4, 6), "f")], lambda x: O.log_softmax(x, 0)),
    ("softmax_grad", [((4, 6), "f"), ((4, 6), "pos")], O.softmax_grad),
    ("cross_entropy", [((5, 7), "f"), ((5,), "cls7")], O.cross_entropy),
    ("mse_loss", [((3, 4), "f"), ((3, 4), "f")], O.mse_loss),
    (
        "fused_mul_add_relu_bcast",
        [(X4, "f"), ((3, 1, 1), "f"), ((6,), "f")],
        lambda x, w, b: x.builder.emit(
            "fused_elementwise",
            [x, w, b],
            body=(("mul", (0, 1), ()), ("add", (-1, 2), ()), ("relu", (-2,), ())),
        ),
    ),
]
# Backward ops are built through their forward op's VJP: compile the gradient graph.
GRAD_CASES = {
    "conv2d_grad": ("conv2d_s2_p1_d2", ("conv2d_grad_input", "conv2d_grad_weight")),
    "conv2d_groups_grad": ("conv2d_groups", ("conv2d_grad_input", "conv2d_grad_weight")),
    "max_pool_grad": ("max_pool_3s2p1", ("max_pool2d_grad",)),
    "avg_pool_grad": ("avg_pool_pad_exclude", ("avg_pool2d_grad",)),
    "log_softmax_grad": ("log_softmax", ("log_softmax_grad",)),
    "cross_entropy_grad": ("cross_entropy", ("cross_entropy_grad",)),
}
_BY_ID = {case[0]: case for case in CASES}


def _array(shape, kind, dtype, rng):
    if kind.startswith("cls"):
        return rng.integers(0, int(kind[3:]), shape).astype(np.int64)
    # Distinct values keep max-pool ties (where any argmax is right) out of the comparison.
    values = rng.permutation(int(np.prod(shape))).reshape(shape) / max(np.prod(shape), 1)
    values = (values - 0.5) * 4 if kind == "f" else values * 2 + 0.5
    return values.astype(dtype)


def _build(case, dtype):
    _, specs, fn = case
    b = Builder()
    leaves = [
        b.leaf(
            "param" if not kind.startswith("cls") else "input",
            shape,
            "int64" if kind.startswith("cls") else dtype,
            f"in{i}",
        )
        for i, (shape, kind) in enumerate(specs)
    ]
    out = fn(*leaves)
    return b.build([out]), leaves


def _feeds(graph, specs, leaves, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return {v.id: _array(shape, kind, dtype, rng) for v, (shape, kind) in zip(leaves, specs)}


def _run(backend, graph, feeds):
    exe = get_backend(backend).compile(graph)
    for node_id, array in feeds.items():
        np.copyto(exe.buffers[node_id], array)
    exe.run()
    return [a.copy() for a in exe.output_arrays()], exe


def _tolerance(dtype):
    return {"rtol": 2e-5, "atol": 2e-5} if dtype == "float32" else {"rtol": 1e-11, "atol": 1e-11}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_op_matches_reference(backend, dtype, case):
    graph, leaves = _build(case, dtype)
    feeds = _feeds(graph, case[1], leaves, dtype)
    (expected,) = interp.evaluate(graph, feeds)
    (got,), exe = _run(backend, graph, feeds)
    assert exe.impl_counts().get("reference", 0) == 0, "op fell back to its NumPy reference"
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, **_tolerance(dtype))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(GRAD_CASES))
def test_backward_ops_match_reference(backend, name):
    from numbagrad.engine.autodiff import build_backward

    forward_case, grad_ops = GRAD_CASES[name]
    case = _BY_ID[forward_case]
    graph, leaves = _build(case, "float64")
    # Differentiate sum(out * r) so every output element carries a distinct weight.
    b2 = Builder()
    params = [b2.leaf(v.node.role, v.shape, v.dtype, v.node.name) for v in leaves]
    out = case[2](*params)
    r = b2.leaf("input", out.shape, out.dtype, "r")
    fwd = b2.build([O.sum(out * r)])
    builder, _, grads = build_backward(fwd)
    bwd = builder.build(list(grads.values()))
    assert {n.op for n in bwd.ops()} >= set(grad_ops)
    rng = np.random.default_rng(1)
    fwd_feeds = _feeds(fwd, case[1], params, "float64")
    fwd_feeds[r.id] = rng.standard_normal(out.shape)
    fwd_exe = interp.compile(fwd)
    for k, v in fwd_feeds.items():
        np.copyto(fwd_exe.buffers[k], v)
    fwd_exe.run()
    feeds = {}
    for n in bwd.leaves():
        if "saved_from" in n.attrs:
            feeds[n.id] = fwd_exe.buffers[n.attrs["saved_from"]]
        elif n.role == "param":
            feeds[n.id] = fwd_exe.buffers[fwd.by_name(n.name, role="param").id]
        elif n.role == "input":
            feeds[n.id] = np.ones(n.shape)
    expected = interp.evaluate(bwd, feeds)
    got, exe = _run(backend, bwd, feeds)
    assert exe.impl_counts().get("reference", 0) == 0
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-10)


def test_every_registered_op_is_covered_and_lowered():
    """The registry x backend table: every op has a test case here and a compiled lowering."""
    from numbagrad.backends.cpu.lowering import LOWERINGS

    covered = set()
    for case in CASES:
        graph, _ = _build(case, "float32")
        covered |= {n.op for n in graph.ops()}
    for _, grad_ops in GRAD_CASES.values():
        covered |= set(grad_ops)
    covered.add("softmax_grad")
    registry = set(all_ops())
    assert registry - covered == set(), "ops without a backend test case"
    unlowered = {
        name
        for name, op in all_ops().items()
        if name not in LOWERINGS and op.category != "elementwise" and name != "reshape"
    }
    assert unlowered == set(), "ops that would fall back to NumPy on the cpu backend"
