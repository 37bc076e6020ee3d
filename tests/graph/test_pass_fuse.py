"""Elementwise fusion: group structure, the fused op's format, and the same values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numbagrad.backends import interp
from numbagrad.errors import OpError
from numbagrad.graph import Builder
from numbagrad.graph import ops as O
from numbagrad.graph.passes import FUSED, compose_scalar, fuse_elementwise
from numbagrad.graph.passes.fuse import MAX_EXPR_CHARS, MAX_STEPS
from numbagrad.graph.pipeline import optimize


def _feeds(graph, seed=0):
    rng = np.random.default_rng(seed)
    return {
        n.id: rng.uniform(0.5, 1.5, n.shape).astype(n.dtype) * rng.choice([-1, 1], n.shape)
        for n in graph.leaves()
        if n.role != "const"
    }


def _check_same(before, after, tol=1e-5):
    feeds = _feeds(before)
    for a, b in zip(interp.evaluate(before, feeds), interp.evaluate(after, feeds)):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def _fused(graph):
    return [n for n in graph.ops() if n.op == FUSED]


def test_a_chain_of_five_elementwise_ops_becomes_one_node():
    b = Builder()
    x = b.leaf("input", (4, 5), "float32", "x")
    w = b.leaf("param", (5,), "float32", "w")
    y = O.tanh(O.relu(O.exp(x * w + 1.0)))
    g = b.build([y])
    g2 = fuse_elementwise(g)
    assert len(g2.ops()) == 1
    (node,) = g2.ops()
    (one,) = g.leaves("const")
    assert node.op == FUSED and node.id == y.id and node.inputs == (x.id, w.id, one.id)
    assert node.attrs["body"] == (
        ("mul", (0, 1), ()),
        ("add", (-1, 2), ()),
        ("exp", (-2,), ()),
        ("relu", (-3,), ()),
        ("tanh", (-4,), ()),
    )
    assert node.attrs["scalar"] == compose_scalar(node.attrs["body"])
    _check_same(g, g2)


def test_docstring_example_scalar():
    body = (("mul", (0, 1), ()), ("add", (-1, 2), ()), ("relu", (-2,), ()))
    assert compose_scalar(body) == "(0.0 if (({0} * {1}) + {2}) <= 0.0 else (({0} * {1}) + {2}))"


def test_escaping_kept_and_output_values_bound_groups():
    b = Builder()
    x = b.leaf("input", (3, 4), "float32", "x")
    a = O.exp(x) * 2.0  # read by a reduction too: must be materialized
    s = O.sum(a, 1, keepdims=True)
    c = O.relu(a - s)
    d = O.tanh(c) + 1.0
    e = O.sigmoid(d)
    g = b.build([e * 3.0, c])  # c is an output
    g2 = fuse_elementwise(g, keep=frozenset({d.id}))
    ops = {n.id: n for n in g2.ops()}
    assert set(ops) == {a.id, s.id, c.id, d.id, g.outputs[0]}
    assert [len(ops[i].attrs["body"]) for i in (a.id, c.id, d.id, g.outputs[0])] == [2, 2, 2, 2]
    _check_same(g, g2)


def test_diamonds_broadcasts_and_broadcast_to_fuse():
    b = Builder()
    x = b.leaf("input", (2, 1, 4), "float32", "x")
    v = b.leaf("input", (3, 1), "float32", "v")
    y = O.exp(x)
    z = y * y + O.broadcast_to(v, (2, 3, 4))  # diamond over y, broadcast inside the group
    out = O.relu(z) / (O.abs(v) + 1.0)
    g = b.build([out])
    g2 = fuse_elementwise(g)
    (node,) = g2.ops()
    assert node.shape == (2, 3, 4) and node.inputs[:2] == (x.id, v.id)
    _check_same(g, g2)


def test_fusion_is_idempotent_and_inlines_earlier_fusions():
    b = Builder()
    x = b.leaf("input", (6,), "float32", "x")
    mid = O.exp(x) * 0.5
    out = O.sigmoid(mid - 1.0) * mid
    g = b.build([out])
    first = fuse_elementwise(g, keep=frozenset({mid.id}))
    assert len(_fused(first)) == 2
    again = fuse_elementwise(first)
    (node,) = again.ops()
    assert node.op == FUSED and len(node.attrs["body"]) == 5
    assert fuse_elementwise(again) is again
    _check_same(g, again)


def test_groups_are_bounded():
    b = Builder()
    x = b.leaf("input", (8,), "float32", "x")
    y = x
    for k in range(40):
        y = O.tanh(y) * 0.9 if k % 2 else y + 0.1
    z = x
    for _ in range(14):  # relu repeats its operand: expressions double
        z = O.relu(z)
    g = b.build([y, z])
    g2 = fuse_elementwise(g)
    assert all(len(n.attrs["body"]) <= MAX_STEPS for n in _fused(g2))
    assert all(len(n.attrs["scalar"]) <= MAX_EXPR_CHARS for n in _fused(g2))
    assert len(g2.ops()) < len(g.ops()) // 5
    _check_same(g, g2)


def test_fused_op_checks_its_body():
    b = Builder()
    x = b.leaf("input", (3,), "float32", "x")
    with pytest.raises(OpError, match="bad operand refs"):
        b.emit(FUSED, [x], body=(("exp", (-1,), ()),))
    with pytest.raises(OpError, match="not a plain elementwise op"):
        b.emit(FUSED, [x], body=(("sum", (0,), (("axes", (0,)), ("keepdims", False))),))
    with pytest.raises(OpError, match="reads input"):
        b.emit(FUSED, [x], body=(("add", (0, 1), ()),))
    ok = b.emit(FUSED, [x], body=[["exp", [0], []]], scalar="ignored")
    assert ok.node.attrs["scalar"] == "math.exp({0})"
    # Bodies come from saved files too: malformed ones are refused by name, not by a crash.
    refused = {
        "bad operand refs": (("exp", (True,), ()),),
        f"1 to {MAX_STEPS} steps": (("exp", (0,), ()),) * (MAX_STEPS + 1),
        r"must be \(op name, operand refs, attributes\)": (("exp", (0,)),),
        r"must be \(name, value\) pairs": (("leaky_relu", (0,), ("negative_slope",)),),
        f"grows past {MAX_EXPR_CHARS} characters": (
            ("sign", (0,), ()),
            *(("sign", (-1 - k,), ()) for k in range(MAX_STEPS - 1)),
        ),
    }
    for match, body in refused.items():
        with pytest.raises(OpError, match=match):
            b.emit(FUSED, [x], body=body)
    with pytest.raises(OpError, match="node.attrs"):
        O.get_op(FUSED).scalar.format("a0")


@pytest.fixture
def fresh_kernel_cache(tmp_path, monkeypatch):
    """Generated kernels compile into a private cache (isolates this test from stale entries
    in the shared one: see the report on backends/cpu/cache.py)."""
    from numbagrad.backends.cpu import cache

    monkeypatch.setenv("NUMBAGRAD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "_loaded", {})


def test_fused_scalar_runs_in_the_cpu_elementwise_codegen(fresh_kernel_cache):
    """The composed template goes through the existing generator unchanged."""
    from numbagrad.backends.cpu.codegen import elementwise_launch

    b = Builder()
    x = b.leaf("input", (3, 5), "float64", "x")
    w = b.leaf("input", (5,), "float64", "w")
    out = O.sign(O.relu(x * w - 0.25)) + O.sigmoid(x) * O.exp(w)
    g = fuse_elementwise(b.build([out]))
    (node,) = g.ops()
    expr = node.attrs["scalar"].format(*(f"a{k}" for k in range(len(node.inputs))))
    launch = elementwise_launch(expr, [g[i].shape for i in node.inputs], node.shape)
    feeds = _feeds(g)
    arrays = {**{c.id: c.value for c in g.leaves("const")}, **feeds}
    got = np.empty(node.shape)
    launch([arrays[i] for i in node.inputs], got)
    np.testing.assert_allclose(got, interp.evaluate(g, feeds)[0], rtol=1e-12)


def test_fused_nodes_are_differentiable():
    from numbagrad.engine import backward
    from numbagrad.errors import NotDifferentiableError

    b = Builder()
    x = b.leaf("param", (3, 4), "float64", "x")
    w = b.leaf("param", (4,), "float64", "w")
    r = b.leaf("input", (3, 4), "float64", "r")
    y = O.sigmoid(O.tanh(x * w) * x - w) + O.abs(x) * O.relu(x)
    g = b.build([O.sum(y * r)])
    fused = fuse_elementwise(g)
    assert len(_fused(fused)) == 1
    grads = []
    feeds = _feeds(g)
    for graph in (g, fused):
        bwd = backward(graph)
        exe = interp.compile(graph)
        for k, v in feeds.items():
            np.copyto(exe.buffers[k], v)
        exe.run()
        bfeeds = {}
        for n in bwd.leaves():
            if "saved_from" in n.attrs:
                bfeeds[n.id] = exe.buffers[n.attrs["saved_from"]]
            elif n.role == "param":
                bfeeds[n.id] = feeds[graph.by_name(n.name, "param").id]
            elif n.role == "input":
                bfeeds[n.id] = np.ones(n.shape)
        grads.append(interp.evaluate(bwd, bfeeds))
    for a, c in zip(*grads):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12)
    b = Builder()
    x = b.leaf("param", (3,), "float64", "x")
    f = b.emit(FUSED, [x, x], body=(("relu_grad", (0, 1), ()), ("exp", (-1,), ())))
    with pytest.raises(NotDifferentiableError, match="relu_grad"):
        backward(b.build([O.sum(f)]))


UNARY = ["exp", "tanh", "relu", "neg", "sigmoid", "abs"]
BINARY = ["add", "sub", "mul", "relu_grad"]
SHAPES = [(2, 3), (3,), (2, 1), (1, 3), ()]


@st.composite
def elementwise_graphs(draw):
    b = Builder()
    values = [b.leaf("input", draw(st.sampled_from(SHAPES)), "float64", f"x{k}") for k in range(3)]
    for _ in range(draw(st.integers(2, 12))):
        if draw(st.booleans()):
            op = draw(st.sampled_from(UNARY))
            values.append(b.emit(op, [draw(st.sampled_from(values))]))
        else:
            a, c = draw(st.sampled_from(values)), draw(st.sampled_from(values))
            values.append(b.emit(draw(st.sampled_from(BINARY)), [a, c]))
    ops = values[3:]
    outs = draw(st.lists(st.sampled_from(ops), min_size=1, max_size=3, unique_by=lambda v: v.id))
    keep = draw(st.lists(st.sampled_from(ops), max_size=2))
    return b.build(outs), frozenset(v.id for v in keep)


@settings(max_examples=60, deadline=None)
@given(elementwise_graphs())
def test_random_elementwise_graphs_compute_the_same(case):
    graph, keep = case
    fused = fuse_elementwise(graph, keep)
    assert all(k in fused for k in keep)
    _check_same(graph, fused, tol=1e-12)
    optimized, _ = optimize(graph, keep=keep)
    _check_same(graph, optimized, tol=1e-12)
