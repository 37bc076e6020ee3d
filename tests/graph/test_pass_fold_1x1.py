"""1x1-conv folding (graph/passes/fold_1x1.py): each rewrite keeps the values (and, in
training steps, the gradients, updated parameters and running statistics) and fires exactly
where it is valid; the default pipeline on a network with a residual block, an Inception-style
block and BatchNorm matches the interp backend with every pass off."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import numbagrad as ng
from numbagrad import nn, optim
from numbagrad.backends import interp
from numbagrad.graph import Builder, Graph
from numbagrad.graph import ops as O
from numbagrad.graph.passes import PASSES, fold_conv_bn, merge_1x1_chain, merge_parallel
from numbagrad.graph.passes.fold_1x1 import chain_pays
from numbagrad.graph.pipeline import DEFAULT_PASSES

FOLDS = ("fold_conv_bn", "merge_1x1_chain", "merge_parallel")
CONV_OPS = ("conv2d", "conv2d_epilogue")


# --- graph-level harness ---------------------------------------------------------------------


def _values(graph: Graph, seed: int = 0) -> list[np.ndarray]:
    """Evaluate ``graph`` on random feeds for every non-const leaf (positive for names
    starting with ``pos``), keyed by leaf name so a rewritten graph gets the same feeds."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for leaf in sorted(graph.leaves(), key=lambda n: n.name):
        if leaf.role == "const":
            continue
        value = rng.standard_normal(leaf.shape)
        feeds[leaf.id] = np.abs(value) + 0.5 if leaf.name.startswith("pos") else value
    return interp.evaluate(graph, feeds)


def _assert_same_values(before: Graph, after: Graph) -> None:
    assert [before[o].shape for o in before.outputs] == [after[o].shape for o in after.outputs]
    for a, b in zip(_values(before), _values(after)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def _ops(graph: Graph, *names: str) -> list:
    return [n for n in graph.ops() if n.op in names]


def _param(b: Builder, name: str, *shape: int):
    return b.leaf("param", shape, "float64", name)


def _x(b: Builder, *shape: int):
    return b.leaf("input", shape, "float64", "x")


# --- fold_conv_bn ---------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("groups", [1, 2])
def test_fold_conv_bn_folds_every_affine_form(bias, groups):
    b = Builder()
    x = _x(b, 2, 4, 6, 5)
    w = _param(b, "w", 6, 4 // groups, 3, 3)
    y = O.conv2d(x, w, _param(b, "b", 6) if bias else None, padding=1, groups=groups)
    y = y * _param(b, "s", 6, 1, 1)  # mul by (C, 1, 1)
    y = _param(b, "t", 1, 6, 1, 1) + y  # add, conv second
    y = y - 0.5  # sub of a scalar constant
    y = y / _param(b, "pos_d", 6, 1, 1)  # div
    mean, gamma, beta = (_param(b, n, 1, 6, 1, 1) for n in ("mean", "gamma", "beta"))
    inv_std = 1.0 / O.sqrt(_param(b, "pos_var", 1, 6, 1, 1) + 1e-5)
    y = O.batch_norm(y, mean, inv_std, gamma, beta)
    graph = b.build([y.relu()])
    folded = PASSES["dce"](fold_conv_bn(graph))
    convs = _ops(folded, "conv2d")
    assert len(convs) == 1 and len(convs[0].inputs) == 3  # the folds produce a bias
    activation = convs[0].size
    assert all(n.size < activation for n in folded.ops() if n.op not in ("conv2d", "relu"))
    _assert_same_values(graph, folded)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(
    groups=st.sampled_from([1, 2]),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 2),
    padding=st.integers(0, 1),
    dilation=st.integers(1, 2),
    bias=st.booleans(),
    second=st.integers(1, 4),
)
def test_folds_over_conv_geometries(groups, kernel, stride, padding, dilation, bias, second):
    """BN folds into any conv; a following 1x1 conv merges into any ungrouped one."""
    b = Builder()
    x = _x(b, 2, 2 * groups, 7, 6)
    w = _param(b, "w", 2 * groups, 2, kernel, kernel)
    bias_ = _param(b, "b", 2 * groups) if bias else None
    y = O.conv2d(x, w, bias_, stride, padding, dilation, groups)
    channel = (1, 2 * groups, 1, 1)
    y = O.batch_norm(y, *(_param(b, n, *channel) for n in ("mean", "pos_inv", "gamma", "beta")))
    y = O.conv2d(y, _param(b, "w2", second, 2 * groups, 1, 1), _param(b, "b2", second))
    graph = b.build([y])
    folded = fold_conv_bn(graph)
    assert "batch_norm" not in {n.op for n in folded.ops()}
    _assert_same_values(graph, folded)
    merged = merge_1x1_chain(folded)
    pixels = 2 * y.shape[2] * y.shape[3]
    if groups == 1 and chain_pays((2, 2, kernel, kernel), second, pixels):
        assert len(_ops(PASSES["dce"](merged), "conv2d")) == 1
    _assert_same_values(graph, merged)


def _conv_then(build_tail, keep_conv=False):
    """conv(x, w, b) followed by ``build_tail(b, x, conv)``; returns graph, keep set."""
    b = Builder()
    x = _x(b, 2, 3, 5, 5)
    conv = O.conv2d(x, _param(b, "w", 4, 3, 1, 1), _param(b, "b", 4))
    out = build_tail(b, x, conv)
    graph = b.build([out])
    return graph, frozenset({conv.id} if keep_conv else ())


@pytest.mark.parametrize(
    "case",
    [
        "second_reader",
        "input_dependent_scale",
        "not_per_channel",
        "kept_conv_output",
        "reversed_sub",
    ],
)
def test_fold_conv_bn_leaves_what_it_may_not_fold(case):
    tails = {
        "second_reader": lambda b, x, c: c * _param(b, "s", 4, 1, 1) + c,
        "input_dependent_scale": lambda b, x, c: c * O.mean(x, (0, 1, 2, 3), keepdims=True),
        "not_per_channel": lambda b, x, c: c * _param(b, "s", 1, 1, 1, 5),
        "kept_conv_output": lambda b, x, c: c * _param(b, "s", 4, 1, 1),
        "reversed_sub": lambda b, x, c: _param(b, "t", 4, 1, 1) - c,
    }
    graph, keep = _conv_then(tails[case], keep_conv=case == "kept_conv_output")
    assert fold_conv_bn(graph, keep) is graph


def test_batchnorm_disappears_from_an_inference_graph():
    rng = np.random.default_rng(0)
    ng.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    _randomize_bn(model, rng)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    expected = ng.compile(model.eval(), ng.Spec(x.shape), backend="interp", passes=[])(x)
    for passes in (["fold_conv_bn", "dce"], None):  # alone, and in the default pipeline
        compiled = ng.compile(model, ng.Spec(x.shape), backend="cpu", passes=passes)
        assert "batch_norm" not in str(compiled.forward_graph)
        np.testing.assert_allclose(compiled(x), expected, rtol=1e-5, atol=1e-5)


# --- merge_1x1_chain ------------------------------------------------------------------------


def _chain(first_out, second_out, *, first_kernel=3, relu=False, first_bias=True):
    b = Builder()
    x = _x(b, 2, 5, 6, 6)
    w1 = _param(b, "w1", first_out, 5, first_kernel, first_kernel)
    y = O.conv2d(x, w1, _param(b, "b1", first_out) if first_bias else None, 2, 1, 1)
    y = y.relu() if relu else y
    y = O.conv2d(y, _param(b, "w2", second_out, first_out, 1, 1), _param(b, "b2", second_out))
    return b.build([y]), y.node.inputs[0]


@pytest.mark.parametrize("first_bias", [True, False])
def test_merge_1x1_chain_multiplies_the_weights(first_bias):
    graph, _ = _chain(6, 4, first_bias=first_bias)
    merged = PASSES["dce"](merge_1x1_chain(graph))
    (conv,) = _ops(merged, "conv2d")
    assert conv.attrs["stride"] == (2, 2) and conv.attrs["padding"] == (1, 1)
    assert conv.shape == graph[graph.outputs[0]].shape
    assert _ops(merged, "matmul")  # the weight product, recomputed from the parameters
    _assert_same_values(graph, merged)


def test_three_pointwise_convs_in_a_row_become_one():
    b = Builder()
    y = _x(b, 1, 4, 3, 3)
    for i, (cin, cout) in enumerate([(4, 4), (4, 3), (3, 2)]):
        y = O.conv2d(y, _param(b, f"w{i}", cout, cin, 1, 1), _param(b, f"b{i}", cout))
    graph = b.build([y])
    merged = PASSES["dce"](merge_1x1_chain(graph))
    assert len(_ops(merged, "conv2d")) == 1
    _assert_same_values(graph, merged)


def test_merge_1x1_chain_only_where_valid_and_cheaper():
    assert not chain_pays((2, 64, 1, 1), 64, 1000)  # a bottleneck stays two convs
    assert chain_pays((64, 8, 1, 1), 16, 1000)
    bottleneck, _ = _chain(2, 8, first_kernel=1)
    assert merge_1x1_chain(bottleneck) is bottleneck
    with_relu, _ = _chain(6, 4, relu=True)
    assert merge_1x1_chain(with_relu) is with_relu
    saved, middle = _chain(6, 4)  # the backward graph reads the middle value
    assert merge_1x1_chain(saved, frozenset({middle})) is saved


# --- merge_parallel -------------------------------------------------------------------------


def _inception(activation=("relu", "relu", "relu")):
    b = Builder()
    x = _x(b, 2, 4, 5, 5)
    outs, convs = [], []
    for i, (k, act) in enumerate(zip((3, 2, 4), activation)):
        bias = _param(b, f"b{i}", k) if i != 1 else None  # one branch without bias
        conv = O.conv2d(x, _param(b, f"w{i}", k, 4, 1, 1), bias)
        convs.append(conv)
        outs.append(getattr(conv, act)() if act else conv)
    pooled = O.max_pool2d(x, 3, 1, 1)
    outs.append(O.conv2d(pooled, _param(b, "w3", 2, 4, 1, 1)).relu())
    outs[1] = O.conv2d(outs[1], _param(b, "w4", 3, 2, 3, 3), padding=1)
    return b.build([O.concat(outs, 1)]), convs, x


def test_parallel_1x1_convs_become_one_wider_conv():
    graph, _, x = _inception()
    merged = PASSES["dce"](merge_parallel(graph))
    readers = [n for n in _ops(merged, "conv2d") if n.inputs[0] == x.id]
    assert len(readers) == 1 and readers[0].shape[1] == 3 + 2 + 4
    # The shared ReLU runs once, on the wide output, before the slices.
    relus = [n for n in _ops(merged, "relu") if n.inputs[0] == readers[0].id]
    assert len(relus) == 1 and len(_ops(merged, "slice")) == 3
    _assert_same_values(graph, merged)


def test_parallel_convs_with_different_activations_and_kept_outputs():
    graph, convs, x = _inception(("relu", "tanh", None))
    keep = frozenset(c.id for c in convs)
    merged = merge_parallel(graph, keep)
    for c in convs:  # kept ids keep their values, as slices of the wide conv
        assert merged[c.id].op == "slice"
    assert len([n for n in _ops(merged, "conv2d") if n.inputs[0] == x.id]) == 1
    _assert_same_values(graph, merged)
    everything = Graph(graph.nodes, graph.inputs, [c.id for c in convs])
    kept_after = Graph(merged.nodes, merged.inputs, [c.id for c in convs])
    _assert_same_values(everything, kept_after)


# --- models: a residual block, an Inception-style block, BatchNorm --------------------------


class Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        y = self.bn1(self.conv1(x)).relu()
        return (self.bn2(self.conv2(y)) + x).relu()


def inception(c: int) -> nn.Module:
    return nn.Concat(
        nn.Sequential(nn.Conv2d(c, 4, 1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(c, 3, 1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(c, 2, 1), nn.ReLU(), nn.Conv2d(2, 3, 5, padding=2), nn.ReLU()),
        nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(c, 3, 1), nn.ReLU()),
    )


class FoldNet(nn.Module):
    """stem conv+BN -> residual block -> Inception block -> two 1x1 convs -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.res = Residual(6)
        self.inc = inception(6)
        self.reduce = nn.Conv2d(14, 6, 1)
        self.project = nn.Conv2d(6, 4, 1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        y = self.project(self.reduce(self.inc(self.res(self.stem(x)))))
        return self.fc(y.mean((2, 3)))


def _randomize_bn(model, rng) -> None:
    for _, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.data[:] = rng.standard_normal(m.num_features)
            m.running_var.data[:] = rng.uniform(0.5, 2.0, m.num_features)
            m.weight.data[:] = rng.uniform(0.5, 1.5, m.num_features)
            m.bias.data[:] = rng.standard_normal(m.num_features)


def _test_net(seed=0):
    ng.manual_seed(seed)
    model = FoldNet()
    _randomize_bn(model, np.random.default_rng(seed))
    return model


X_SHAPE = (2, 3, 6, 6)


def test_default_pipeline_inference_matches_interp_without_passes():
    model = _test_net().eval()
    x = np.random.default_rng(1).standard_normal(X_SHAPE).astype(np.float32)
    expected = ng.compile(model, ng.Spec(X_SHAPE), backend="interp", passes=[])(x)
    compiled = ng.compile(model, ng.Spec(X_SHAPE), backend="cpu")
    np.testing.assert_allclose(compiled(x), expected, rtol=1e-4, atol=1e-5)
    graph, traced = compiled.forward_graph, compiled.traced_graph
    assert "batch_norm" not in str(graph)
    # The Inception block's three parallel 1x1 convs end as one conv reading the block input.
    block_input = traced.by_name("inc.3.0").inputs[0]  # the max-pool branch reads it too
    readers = [n for n in graph.ops() if n.op in CONV_OPS and n.inputs[0] == block_input]
    assert len(readers) == 1 and readers[0].shape[1] == 4 + 3 + 2
    # reduce -> project (nothing between) is one conv; 11 convs in all before, 8 after.
    assert len([n for n in traced.ops() if n.op == "conv2d"]) == 11
    assert len([n for n in graph.ops() if n.op in CONV_OPS]) == 8
    for fold in FOLDS:  # each fold alone keeps the values too
        alone = ng.compile(model, ng.Spec(X_SHAPE), backend="cpu", passes=[fold, "dce"])
        assert alone.report.passes[0].nodes_before != alone.report.passes[0].nodes_after
        np.testing.assert_allclose(alone(x), expected, rtol=1e-4, atol=1e-5)


def _train(model, backend, passes, steps=2, seed=2):
    rng = np.random.default_rng(seed)
    step = ng.compile_training(
        model,
        nn.CrossEntropyLoss(),
        optim.SGD(0.1, momentum=0.9),
        ng.Spec(X_SHAPE),
        ng.Spec((X_SHAPE[0],), "int64"),
        backend=backend,
        passes=passes,
    )
    losses = []
    for _ in range(steps):
        x = rng.standard_normal(X_SHAPE).astype(np.float32)
        losses.append(step(x, rng.integers(0, 5, X_SHAPE[0])))
    step.sync()
    return step, losses, model.state_dict()


@pytest.mark.parametrize("passes", [None, *([f, "dce"] for f in FOLDS)], ids=["default", *FOLDS])
def test_training_steps_match_interp_without_passes(passes):
    model = _test_net(3)
    reference = copy.deepcopy(model)
    step, losses, state = _train(model, "cpu", passes)
    _, expected_losses, expected = _train(reference, "interp", [])
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
    assert list(state) == list(expected)
    for key, value in state.items():  # parameters and BatchNorm's running statistics
        np.testing.assert_allclose(value, expected[key], rtol=1e-4, atol=1e-5, err_msg=key)
    if passes is None:  # the Inception 1x1 convs merge in the training step too
        assert "slice" in {n.op for n in step.forward_graph.ops()}


def test_gradients_match_interp_without_passes():
    model = _test_net(4)
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal(X_SHAPE).astype(np.float32), rng.integers(0, 5, X_SHAPE[0])
    specs = (ng.Spec(X_SHAPE), ng.Spec((X_SHAPE[0],), "int64"))
    loss = nn.CrossEntropyLoss()
    got = ng.compile_grad(model, loss, *specs, backend="cpu")(x, y)
    expected = ng.compile_grad(copy.deepcopy(model), loss, *specs, "interp", passes=[])(x, y)
    assert got[0] == pytest.approx(expected[0], rel=1e-5)
    for key, g in expected[1].items():
        np.testing.assert_allclose(got[1][key], g, rtol=1e-4, atol=1e-5, err_msg=key)


def test_folds_are_in_the_default_pipeline_before_fusion():
    order = list(DEFAULT_PASSES)
    positions = [order.index(f) for f in FOLDS]
    assert positions == sorted(positions)
    assert order.index("cse") < positions[0] and positions[-1] < order.index("fuse_elementwise")


@pytest.mark.parametrize("groups", [1, 2])
def test_pointwise_conv_is_a_gemm_on_the_cpu_forward_and_both_gradients(groups):
    """Form (a) is a backend dispatch: every kind of a 1x1 stride-1 conv picks ``gemm1x1``."""
    from numbagrad.backends.cpu.kernels import conv
    from numbagrad.graph.ops import get_op

    x_shape, w_shape = (3, 4, 5, 6), (6, 4 // groups, 1, 1)
    args = ((1, 1), (0, 0), (1, 1), groups)
    for kind in ("forward", "backward_input", "backward_weight"):
        assert conv.choose_algorithm(kind, x_shape, w_shape, *args) == "gemm1x1"
    rng = np.random.default_rng(0)
    x, gy = rng.standard_normal(x_shape), rng.standard_normal((3, 6, 5, 6))
    gw = np.empty(w_shape)
    conv.conv2d_backward_weight(x, gy, gw, 1, 1, 0, 0, 1, 1, groups)
    attrs = get_op("conv2d_grad_weight").make_attrs({"groups": groups, "weight_shape": w_shape})
    expected = get_op("conv2d_grad_weight").reference(x, gy, **attrs)
    np.testing.assert_allclose(gw, expected, rtol=1e-12, atol=1e-12)
