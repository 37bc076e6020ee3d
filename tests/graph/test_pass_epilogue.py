"""Epilogue fusion: which chains fold into their conv/GEMM, the epilogue ops on every backend
against their parts, gradients through them, and the fusion facts of LeNet-5's graphs."""

from __future__ import annotations

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import nn, optim
from numbagrad.backends import get_backend, interp
from numbagrad.engine import backward
from numbagrad.errors import NumbagradError
from numbagrad.graph import Builder
from numbagrad.graph import ops as O
from numbagrad.graph.passes import EPILOGUE_OPS, FUSED, fuse_elementwise, fuse_epilogue
from numbagrad.graph.passes.epilogue import epilogue_size
from numbagrad.graph.pipeline import optimize, optimize_training, saved_ids
from numbagrad.models import lenet5

EPILOGUES = set(EPILOGUE_OPS.values())


def _feeds(graph, seed=0):
    rng = np.random.default_rng(seed)
    return {
        n.id: rng.uniform(-1, 1, n.shape).astype(n.dtype)
        for n in graph.leaves()
        if n.role != "const"
    }


def _fuse(graph, keep=frozenset()):
    return fuse_epilogue(fuse_elementwise(graph, keep), keep)


def _check_backends(before, after, backends=("interp", "cpu"), tol=1e-5):
    """``after`` on each backend computes what ``before`` computes with the references."""
    feeds = _feeds(before)
    expected = interp.evaluate(before, feeds)
    for name in backends:
        exe = get_backend(name).compile(after)
        for i, a in feeds.items():
            exe.set_input(i, a)
        exe.run()
        assert exe.impl_counts().get("reference", 0) == (name == "interp") * len(exe.kernels)
        for got, want in zip(exe.output_arrays(), expected):
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=name)


def _conv_block(residual=False, bias=True):
    b = Builder("block")
    x = b.leaf("input", (2, 3, 6, 6), "float32", "x")
    w = b.leaf("param", (3, 3, 3, 3), "float32", "w")
    bias_leaf = b.leaf("param", (3,), "float32", "b") if bias else None
    y = O.conv2d(x, w, bias_leaf, padding=1)
    if residual:
        y = y + x
    return b, x, b.build([O.relu(y)])


def test_conv_bias_relu_is_one_kernel():
    _, _, g = _conv_block()
    fused = _fuse(g)
    (node,) = fused.ops()
    assert node.op == "conv2d_epilogue" and node.attrs["n_main"] == 3
    assert node.attrs["body"] == (("relu", (0,), ()),)
    assert node.id == g.outputs[0]
    _check_backends(g, fused)
    assert len(get_backend("cpu").compile(fused).kernels) == 1


def test_residual_add_joins_the_epilogue():
    _, x, g = _conv_block(residual=True, bias=False)
    fused = _fuse(g)
    (node,) = fused.ops()
    assert node.op == "conv2d_epilogue" and node.inputs[2] == x.id
    assert [op for op, _, _ in node.attrs["body"]] == ["add", "relu"]
    _check_backends(g, fused)


def test_linear_bias_activation_and_a_reshape_in_between():
    b = Builder()
    x = b.leaf("input", (4, 6), "float32", "x")
    w = b.leaf("param", (5, 6), "float32", "w")
    bias = b.leaf("param", (5,), "float32", "b")
    y = O.sigmoid(O.matmul(x, w, trans_b=True) + bias)
    z = O.reshape(O.matmul(y, w), (4, 3, 2)) * b.leaf("input", (4, 3, 2), "float32", "m")
    g = b.build([y, O.sum(z)])
    fused = _fuse(g)
    assert [n.op for n in fused.ops()] == ["matmul_epilogue", "matmul_epilogue", "sum"]
    second = fused.ops()[1]
    assert second.attrs["view"] == (4, 3, 2) and second.shape == (4, 3, 2)
    _check_backends(g, fused)


def test_pooling_and_conv_gradients_take_the_mask():
    b = Builder()
    g = b.leaf("input", (2, 3, 3, 3), "float32", "g")
    x = b.leaf("input", (2, 3, 6, 6), "float32", "x")
    w = b.leaf("param", (3, 3, 3, 3), "float32", "w")
    gx = b.emit("max_pool2d_grad", [g, x], kernel=2, stride=2)
    gc = b.emit("conv2d_grad_input", [O.relu_grad(gx, x), w], padding=1, input_shape=(2, 3, 6, 6))
    graph = b.build([O.relu_grad(gc, x)])
    fused = _fuse(graph)
    assert [n.op for n in fused.ops()] == ["max_pool2d_grad_epilogue", "conv2d_grad_input_epilogue"]
    _check_backends(graph, fused)


@pytest.mark.parametrize("why", ["kept", "output", "second_user", "broadcast"])
def test_no_fusion_where_the_result_escapes_or_broadcasts(why):
    b = Builder()
    x = b.leaf("input", (2, 3, 6, 6), "float32", "x")
    w = b.leaf("param", (4, 3, 3, 3), "float32", "w")
    y = O.conv2d(x, w)
    outs = [O.relu(y)]
    if why == "output":
        outs.append(y)
    elif why == "second_user":
        outs.append(O.sum(y))
    elif why == "broadcast":
        outs = [y + b.leaf("input", (3, 1, 1, 1, 1), "float32", "wide")]
    g = b.build(outs)
    keep = frozenset([y.id]) if why == "kept" else frozenset()
    assert fuse_epilogue(g, keep) is g


def test_epilogue_ops_validate_their_attributes():
    b = Builder()
    x = b.leaf("input", (3, 4), "float32", "x")
    w = b.leaf("param", (4, 5), "float32", "w")
    with pytest.raises(NumbagradError, match="n_main"):
        b.emit("matmul_epilogue", [x, w], n_main=5, body=(("relu", (0,), ()),))
    wide = b.leaf("input", (2, 3, 5), "float32", "wide")
    with pytest.raises(NumbagradError, match="keep"):
        b.emit("matmul_epilogue", [x, w, wide], n_main=2, body=(("add", (0, 1), ()),))
    y = b.emit("matmul_epilogue", [x, w], n_main=2, body=(("relu", (0,), ()),))
    assert y.shape == (3, 5)


def _grads(graph, feeds):
    bwd = backward(graph)
    values = dict(feeds)
    everything = ng.Graph(graph.nodes, graph.inputs, [n.id for n in graph.nodes])
    values.update(zip(everything.outputs, interp.evaluate(everything, feeds)))
    bfeeds = {}
    for leaf in bwd.leaves():
        if "saved_from" in leaf.attrs:
            bfeeds[leaf.id] = values[leaf.attrs["saved_from"]]
        elif leaf.role == "param":
            bfeeds[leaf.id] = values[graph.by_name(leaf.name, role="param").id]
        elif leaf.role == "input":
            bfeeds[leaf.id] = np.ones(leaf.shape)
    return interp.evaluate(bwd, bfeeds)


@pytest.mark.parametrize("net", ["conv_residual_tanh", "linear_view"])
def test_gradients_through_an_epilogue_node_match_its_parts(net):
    b = Builder()
    if net == "conv_residual_tanh":
        x = b.leaf("param", (1, 2, 5, 5), "float64", "x")
        w = b.leaf("param", (2, 2, 3, 3), "float64", "w")
        bias = b.leaf("param", (2,), "float64", "b")
        y = O.tanh(O.conv2d(x, w, bias, padding=1) * x)
    else:
        x = b.leaf("param", (3, 4), "float64", "x")
        w = b.leaf("param", (5, 4), "float64", "w")
        m = b.leaf("param", (3, 5, 1), "float64", "m")
        y = O.sigmoid(O.reshape(O.matmul(x, w, trans_b=True), (3, 5, 1)) * m)
    r = b.leaf("input", y.shape, "float64", "R")
    g = b.build([O.sum(y * r)])
    fused = _fuse(g)
    assert len([n for n in fused.ops() if n.op in EPILOGUES]) == 1
    feeds = _feeds(g)
    for got, want in zip(_grads(fused, feeds), _grads(g, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


# --- LeNet-5 -------------------------------------------------------------------------------


def _lenet_graphs(batch=2):
    ng.manual_seed(0)
    model = lenet5()
    step = ng.compile_training(
        model,
        nn.CrossEntropyLoss(),
        optim.SGD(0.1, momentum=0.9),
        ng.Spec((batch, 1, 32, 32)),
        ng.Spec((batch,), "int64"),
        backend="interp",
        passes=[],
        disable=["plan_memory"],
    )
    return step.traced_graphs


@pytest.fixture(scope="module")
def lenet_graphs():
    return _lenet_graphs()


def test_lenet_inference_graph_is_one_kernel_per_conv_and_linear(lenet_graphs):
    ng.manual_seed(0)
    fwd, _ = optimize(ng.trace(lenet5(), ng.Spec((2, 1, 32, 32))), plan=False)
    ops = [n.op for n in fwd.ops() if n.op != "reshape"]
    assert (
        ops == ["conv2d_epilogue", "max_pool2d"] * 2 + ["conv2d_epilogue"] + ["matmul_epilogue"] * 2
    )


def test_lenet_training_forward_fuses_around_the_saved_activations(lenet_graphs):
    fwd, bwd = lenet_graphs
    opt_fwd, _, report = optimize_training(fwd, bwd, plan=False)
    saved = saved_ids(bwd)
    for n in opt_fwd.ops():
        if n.op in EPILOGUES:
            assert n.id in saved  # the relu output / the logits: what the backward graph reads
    counts = {op: [n.op for n in opt_fwd.ops()].count(op) for op in EPILOGUES}
    assert counts["conv2d_epilogue"] == 3 and counts["matmul_epilogue"] == 2
    assert {r.name for r in report.passes} >= {"fuse_elementwise", "fuse_epilogue"}


def test_lenet_backward_activation_masks_fuse_with_the_gradient_ops(lenet_graphs):
    """relu's mask (relu_grad) sits between a GEMM / pooling gradient that produces the
    gradient and conv/GEMM gradients plus a bias-gradient sum that all read it: no elementwise
    neighbour, so fuse_elementwise alone leaves all four masks as kernels of their own; the
    epilogue pass folds each into the op that produces its gradient."""
    fwd, bwd = lenet_graphs
    masks = [n for n in bwd.ops() if n.op == "relu_grad"]
    assert len(masks) == 4
    elementwise_only = fuse_elementwise(bwd)
    assert len([n for n in elementwise_only.ops() if n.op == "relu_grad"]) == 4

    # Without compact_saved (graph/compact.py), the masks after the pools fold into the
    # pooling gradients; with it, the mask moves before the pool's scatter, onto the pooled
    # gradient, and folds into the conv gradient that produces it.
    for disable, pool_host in ((("compact_saved",), "max_pool2d_grad"), ((), "conv2d_grad_input")):
        _, opt_bwd, _ = optimize_training(fwd, bwd, disable=disable, plan=False)
        assert "relu_grad" not in {n.op for n in opt_bwd.ops()}
        hosts = [
            n for n in opt_bwd.ops() if any(s[0] == "relu_grad" for s in n.attrs.get("body", ()))
        ]
        expected = ["matmul_epilogue"] * 2 + [f"{pool_host}_epilogue"] * 2
        assert sorted(n.op for n in hosts) == sorted(expected)
        assert all(epilogue_size(n) == 1 for n in hosts)
        if disable:
            assert {n.id for n in hosts} == {n.id for n in masks}  # each mask keeps its id


def test_lenet_softmax_cross_entropy_and_its_backward_are_single_kernels(lenet_graphs):
    fwd, bwd = lenet_graphs
    opt_fwd, opt_bwd, _ = optimize_training(fwd, bwd)
    for graph, op in ((opt_fwd, "cross_entropy"), (opt_bwd, "cross_entropy_grad")):
        ops = [n.op for n in graph.ops()]
        assert ops.count(op) == 1
        assert not {
            "softmax",
            "log_softmax",
            "softmax_grad",
            "log_softmax_grad",
            "exp",
            "log",
        } & set(ops)
        assert not any(s[0] in ("exp", "log") for n in graph.ops() for s in n.attrs.get("body", ()))
    exe = get_backend("cpu").compile(opt_fwd)
    (ce,) = [k for k in exe.kernels if k.node.op == "cross_entropy"]
    assert ce.impl == "numba"


def test_lenet_same_results_with_the_pass_on_and_off():
    """Three training steps and a prediction: the default pipeline on the cpu backend, the
    same without fuse_epilogue, and no passes at all on the interp backend agree."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, 2)
    results = {}
    for key, backend, kw in (
        ("on", "cpu", {}),
        ("off", "cpu", {"disable": ["fuse_epilogue"]}),
        ("reference", "interp", {"passes": []}),
    ):
        ng.manual_seed(0)
        model = lenet5()
        step = ng.compile_training(
            model,
            nn.CrossEntropyLoss(),
            optim.SGD(0.05, momentum=0.9),
            ng.Spec((2, 1, 32, 32)),
            ng.Spec((2,), "int64"),
            backend=backend,
            **kw,
        )
        losses = [step(x, y) for _ in range(3)]
        step.sync()
        predict = ng.compile(model, ng.Spec((2, 1, 32, 32)), backend=backend, **kw)
        ops = {n.op for n in step.forward_graph.ops()} | {n.op for n in predict.forward_graph.ops()}
        assert bool(ops & EPILOGUES) == (key == "on")
        results[key] = (losses, predict(x))
    for key in ("on", "off"):
        np.testing.assert_allclose(results[key][0], results["reference"][0], rtol=1e-5)
        np.testing.assert_allclose(results[key][1], results["reference"][1], rtol=1e-4, atol=1e-5)


def test_dot_lists_the_epilogue_steps(lenet_graphs):
    from numbagrad.graph.pipeline import to_dot

    fwd, _ = lenet_graphs
    dot = to_dot(_fuse(fwd, saved_ids(lenet_graphs[1]) | set(fwd.outputs)))
    assert "conv2d_epilogue\\nrelu" in dot and FUSED not in dot


class _Residual(nn.Module):
    """stem conv -> basic residual block (conv, relu, conv, + skip, relu) -> linear."""

    def __init__(self, width=3):
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.fc = nn.Linear(width * 6 * 6, 4)

    def forward(self, x):
        x = self.stem(x).relu()
        x = (x + self.conv2(self.conv1(x).relu())).relu()
        return self.fc(x.flatten(1))


def test_residual_net_trains_the_same_with_conv_gradient_epilogues():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 4, 2)
    losses = {}
    for backend, passes in (("cpu", None), ("interp", [])):
        ng.manual_seed(0)
        model = _Residual()
        step = ng.compile_training(
            model,
            nn.CrossEntropyLoss(),
            optim.SGD(0.1, momentum=0.9),
            ng.Spec((2, 1, 6, 6)),
            ng.Spec((2,), "int64"),
            backend=backend,
            passes=passes,
        )
        losses[backend] = [step(x, y) for _ in range(3)]
        if backend == "cpu":
            fwd_ops = [n.op for n in step.forward_graph.ops()]
            bwd_ops = [n.op for n in step.backward_graph.ops()]
            assert fwd_ops.count("conv2d_epilogue") == 3  # the residual add joins conv2's
            assert "conv2d_grad_input_epilogue" in bwd_ops  # relu's mask on conv2's dL/dx
            assert "relu_grad" not in bwd_ops
    np.testing.assert_allclose(losses["cpu"], losses["interp"], rtol=1e-5)
