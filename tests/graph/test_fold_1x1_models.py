"""1x1-conv folding (graph/passes/fold_1x1.py) on a whole network with a residual block, an
Inception-style block and BatchNorm: the default pipeline, and each fold alone, match the
interp backend with every pass off in inference, gradients and training steps (updated
parameters and running statistics); a pointwise conv runs as a GEMM on the cpu."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import nn, optim
from numbagrad.graph.pipeline import DEFAULT_PASSES

FOLDS = ("fold_conv_bn", "merge_1x1_chain", "merge_parallel")
CONV_OPS = ("conv2d", "conv2d_epilogue")


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
