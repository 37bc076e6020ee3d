"""Reverse mode as a second graph: shared (tied, reused) parameters, fan-out, unused and frozen
parameters, against finite differences; the backward graph of saved values and dloss, and
gradients for a subset of parameters. Tracing is in test_trace_naming_state.py."""

from __future__ import annotations

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import functional as F
from numbagrad import nn, optim
from numbagrad.backends import interp
from numbagrad.graph import Builder, Graph
from numbagrad.graph import ops as O
from numbagrad.models import mlp


def _loss_graph(model, loss, x_spec, y_spec) -> Graph:
    return ng.trace(model, x_spec, y_spec, fn=lambda x, y: loss(model(x), y), name="loss")


def _fd_grads(fn, model, x, y, eps=1e-6) -> dict[str, np.ndarray]:
    """Central differences of ``fn(x, y)[0]`` (a compiled loss) with respect to every parameter,
    perturbing the parameters in place: compiled steps read the model's arrays directly."""
    grads = {}
    for name, p in model.named_parameters():
        g = np.zeros_like(p.data)
        for idx in np.ndindex(p.shape):
            old = p.data[idx]
            p.data[idx] = old + eps
            plus = fn(x, y)[0]
            p.data[idx] = old - eps
            minus = fn(x, y)[0]
            p.data[idx] = old
            g[idx] = (plus - minus) / (2 * eps)
        grads[name] = g
    return grads


# --- shared parameters, fan-out, unused parameters --------------------------------------------


class Tied(nn.Module):
    """dec(tanh(enc(x))) with dec.weight IS enc.weight (tied), plus an untied dec bias."""

    def __init__(self, tie: bool = True) -> None:
        super().__init__()
        self.enc = nn.Linear(4, 4, bias=False, dtype="float64")
        self.dec = nn.Linear(4, 4, dtype="float64")
        if tie:
            self.dec.weight = self.enc.weight

    def forward(self, x):
        return self.dec(F.tanh(self.enc(x)))


def _xy(shape_x, shape_y, seed=0, dtype="float64"):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape_x).astype(dtype), rng.standard_normal(shape_y).astype(dtype)


def test_tied_weight_is_one_leaf_with_one_summed_gradient():
    ng.manual_seed(3)
    model = Tied()
    assert list(model.state_dict()) == ["enc.weight", "dec.bias"]
    fwd = _loss_graph(model, nn.MSELoss(), ng.Spec((5, 4), "float64"), ng.Spec((5, 4), "float64"))
    assert [p.name for p in fwd.leaves("param")] == ["enc.weight", "dec.bias"]
    bwd = ng.backward(fwd)
    assert list(bwd.output_names) == ["enc.weight", "dec.bias"]

    fn = ng.compile_grad(
        model, nn.MSELoss(), ng.Spec((5, 4), "float64"), ng.Spec((5, 4), "float64"), "interp"
    )
    x, y = _xy((5, 4), (5, 4))
    _, grads = fn(x, y)
    assert set(grads) == {"enc.weight", "dec.bias"}
    numeric = _fd_grads(fn, model, x, y)
    for name in grads:
        np.testing.assert_allclose(grads[name], numeric[name], rtol=1e-6, atol=1e-8)

    # The one gradient is the sum of what the two uses would get if they were separate.
    untied = Tied(tie=False)
    untied.load_state_dict(
        {
            "enc.weight": model.enc.weight.data,
            "dec.weight": model.enc.weight.data,
            "dec.bias": model.dec.bias.data,
        }
    )
    fn2 = ng.compile_grad(
        untied, nn.MSELoss(), ng.Spec((5, 4), "float64"), ng.Spec((5, 4), "float64"), "interp"
    )
    _, separate = fn2(x, y)
    np.testing.assert_allclose(
        grads["enc.weight"], separate["enc.weight"] + separate["dec.weight"], rtol=1e-12
    )


def test_module_reused_twice_shares_its_parameters():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3, dtype="float64")

        def forward(self, x):
            return self.lin(F.tanh(self.lin(x)))

    ng.manual_seed(4)
    model = Twice()
    fwd = _loss_graph(model, nn.MSELoss(), ng.Spec((2, 3), "float64"), ng.Spec((2, 3), "float64"))
    assert [p.name for p in fwd.leaves("param")] == ["lin.weight", "lin.bias"]
    assert sum(1 for n in fwd.ops() if n.op == "matmul") == 2
    fn = ng.compile_grad(
        model, nn.MSELoss(), ng.Spec((2, 3), "float64"), ng.Spec((2, 3), "float64"), "interp"
    )
    x, y = _xy((2, 3), (2, 3), seed=1)
    _, grads = fn(x, y)
    numeric = _fd_grads(fn, model, x, y)
    for name in grads:
        np.testing.assert_allclose(grads[name], numeric[name], rtol=1e-6, atol=1e-8)


class FanOut(nn.Module):
    """x feeds two layers, and h is used three times: gradients must be summed at each."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 2, dtype="float64")
        self.b = nn.Linear(3, 2, bias=False, dtype="float64")

    def forward(self, x):
        h = self.a(x) + self.b(x)
        return h * h + F.tanh(h) - h


def test_fan_out_gradients_accumulate():
    ng.manual_seed(5)
    model = FanOut()
    fwd = _loss_graph(model, nn.MSELoss(), ng.Spec((4, 3), "float64"), ng.Spec((4, 2), "float64"))
    bwd = ng.backward(fwd)
    # Fan-in in the backward graph is summed with `add` nodes.
    assert sum(1 for n in bwd.ops() if n.op == "add") >= 2
    fn = ng.compile_grad(
        model, nn.MSELoss(), ng.Spec((4, 3), "float64"), ng.Spec((4, 2), "float64"), "interp"
    )
    x, y = _xy((4, 3), (4, 2), seed=2)
    _, grads = fn(x, y)
    numeric = _fd_grads(fn, model, x, y)
    for name in ("a.weight", "a.bias", "b.weight"):
        np.testing.assert_allclose(grads[name], numeric[name], rtol=1e-6, atol=1e-8)


def test_fan_out_on_a_graph_leaf():
    # p * p + exp(p): dL/dp = 2p + exp(p), from three uses of one leaf.
    b = Builder()
    p = b.leaf("param", (3,), "float64", "p")
    fwd = b.build([O.sum(p * p + O.exp(p))])
    bwd = ng.backward(fwd)
    value = np.array([0.3, -1.2, 2.0])
    (g,) = interp.evaluate(bwd, _feeds(fwd, bwd, {p.id: value}))
    np.testing.assert_allclose(g, 2 * value + np.exp(value), rtol=1e-12)


def _feeds(fwd: Graph, bwd: Graph, leaf_values: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    exe = interp.compile(fwd)
    for k, v in leaf_values.items():
        np.copyto(exe.buffers[k], v)
    exe.run()
    feeds = {}
    for leaf in bwd.leaves():
        if "saved_from" in leaf.attrs:
            feeds[leaf.id] = exe.buffers[leaf.attrs["saved_from"]]
        elif leaf.role == "param":
            feeds[leaf.id] = exe.buffers[fwd.by_name(leaf.name, role="param").id]
        elif leaf.name == "dloss":
            feeds[leaf.id] = np.ones(leaf.shape, leaf.dtype)
    return feeds


def test_unused_graph_parameter_gets_a_zero_gradient():
    b = Builder()
    used = b.leaf("param", (2, 3), "float64", "used")
    unused = b.leaf("param", (4,), "float64", "unused")
    fwd = b.build([O.sum(O.tanh(used))])
    bwd = ng.backward(fwd)
    assert list(bwd.output_names) == ["used", "unused"]
    value = np.linspace(-1, 1, 6).reshape(2, 3)
    g_used, g_unused = interp.evaluate(
        bwd, _feeds(fwd, bwd, {used.id: value, unused.id: np.ones(4)})
    )
    np.testing.assert_allclose(g_used, 1 - np.tanh(value) ** 2, rtol=1e-12)
    assert g_unused.shape == (4,) and g_unused.dtype == np.float64
    np.testing.assert_array_equal(g_unused, np.zeros(4))
    # Asking for it alone works too.
    only = ng.backward(fwd, wrt=["unused"])
    assert list(only.output_names) == ["unused"]


class WithUnused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.spare = nn.Parameter(np.ones(5, np.float32))

    def forward(self, x):
        return self.lin(x)


def test_unused_module_parameter_gets_a_zero_gradient():
    model = WithUnused()
    fn = ng.compile_grad(model, nn.MSELoss(), ng.Spec((4, 3)), ng.Spec((4, 2)), "interp")
    _, grads = fn(np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32))
    assert set(grads) == set(model.state_dict())
    np.testing.assert_array_equal(grads["spare"], np.zeros(5, np.float32))


def test_unused_module_parameter_is_not_touched_by_training():
    model = WithUnused()
    step = ng.compile_training(
        model,
        nn.MSELoss(),
        optim.SGD(lr=0.1, weight_decay=0.5),
        ng.Spec((4, 3)),
        ng.Spec((4, 2)),
        "interp",
    )
    step(np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32))
    np.testing.assert_array_equal(model.spare.data, np.ones(5, np.float32))


def test_model_without_parameters_gets_no_gradients_or_a_clear_error():
    model = nn.Sequential(nn.ReLU())
    x = np.array([[1.0, -2.0, 3.0]], np.float32)
    try:
        fn = ng.compile_grad(model, nn.MSELoss(), ng.Spec((1, 3)), ng.Spec((1, 3)), "interp")
        loss, grads = fn(x, np.zeros((1, 3), np.float32))
    except ng.errors.NumbagradError:
        return  # refusing it with a numbagrad error is fine too
    assert grads == {}
    assert loss == pytest.approx((1 + 9) / 3)


def test_frozen_parameter_is_not_updated():
    model = nn.Sequential(nn.Linear(3, 2))
    model[0].weight.requires_grad = False
    frozen = model[0].weight.data.copy()
    bias = model[0].bias.data.copy()
    step = ng.compile_training(
        model, nn.MSELoss(), optim.SGD(lr=0.1), ng.Spec((4, 3)), ng.Spec((4, 2)), "interp"
    )
    step(np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32))
    assert not np.array_equal(model[0].bias.data, bias)  # the trainable one moved
    np.testing.assert_array_equal(model[0].weight.data, frozen)


# --- the backward graph ----------------------------------------------------------------------


def test_backward_is_a_separate_graph_of_saved_values_and_dloss():
    ng.manual_seed(6)
    model = mlp([4, 8, 3])
    fwd = _loss_graph(model, nn.CrossEntropyLoss(), ng.Spec((5, 4)), ng.Spec((5,), "int64"))
    before = str(fwd)
    bwd = ng.backward(fwd)
    assert isinstance(bwd, Graph) and bwd is not fwd
    assert str(fwd) == before  # the forward graph is untouched
    assert not any(n is m for n in bwd.nodes for m in fwd.nodes)

    seeds = [bwd[i] for i in bwd.inputs if bwd[i].name == "dloss"]
    assert len(seeds) == 1 and seeds[0].shape == () and seeds[0].dtype == "float32"
    for i in bwd.inputs:
        leaf = bwd[i]
        assert leaf.role == "input"
        if leaf.name == "dloss":
            continue
        src = fwd[leaf.attrs["saved_from"]]  # every other input is a saved forward value
        assert (src.shape, src.dtype, src.name) == (leaf.shape, leaf.dtype, leaf.name)
        assert src.role != "param"  # parameters are shared, not saved
    fwd_params = {p.name: p for p in fwd.leaves("param")}
    for leaf in bwd.leaves("param"):
        assert leaf.name in fwd_params and leaf.shape == fwd_params[leaf.name].shape
    assert list(bwd.output_names) == list(model.state_dict())
    for out, name in zip(bwd.outputs, bwd.output_names):
        assert bwd[out].shape == fwd_params[name].shape

    # Evaluated on the saved values, it gives what compile_grad gives.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    y = rng.integers(0, 3, 5)
    exe = interp.compile(fwd)
    params = dict(model.named_parameters())
    for leaf in fwd.leaves():
        if leaf.role == "param":
            np.copyto(exe.buffers[leaf.id], params[leaf.name].data)
    np.copyto(exe.buffers[fwd.by_name("input0", "input").id], x)
    np.copyto(exe.buffers[fwd.by_name("input1", "input").id], y)
    exe.run()
    feeds = {}
    for leaf in bwd.leaves():
        if "saved_from" in leaf.attrs:
            feeds[leaf.id] = exe.buffers[leaf.attrs["saved_from"]]
        elif leaf.role == "param":
            feeds[leaf.id] = params[leaf.name].data
        elif leaf.name == "dloss":
            feeds[leaf.id] = np.ones((), np.float32)
    grads = interp.evaluate(bwd, feeds)
    _, expected = ng.compile_grad(
        model, nn.CrossEntropyLoss(), ng.Spec((5, 4)), ng.Spec((5,), "int64"), "interp"
    )(x, y)
    for name, g in zip(bwd.output_names, grads):
        np.testing.assert_allclose(g, expected[name], rtol=1e-6)


def test_backward_wrt_a_subset_and_unknown_names():
    model = mlp([4, 8, 3])
    fwd = _loss_graph(model, nn.CrossEntropyLoss(), ng.Spec((5, 4)), ng.Spec((5,), "int64"))
    bwd = ng.backward(fwd, wrt=["2.bias"])
    assert list(bwd.output_names) == ["2.bias"]
    # d/d(last bias) needs nothing from the first layer's weights.
    assert all(leaf.name != "0.weight" for leaf in bwd.leaves("param"))
    with pytest.raises(ng.errors.NumbagradError, match=r"no parameter named \['nope'\]"):
        ng.backward(fwd, wrt=["nope"])
