"""Tracing, reverse mode as a second graph, parameters and state, and SGD against NumPy/PyTorch."""

from __future__ import annotations

import re

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import functional as F
from numbagrad import nn, optim
from numbagrad.backends import interp
from numbagrad.graph import Builder, Graph
from numbagrad.graph import ops as O
from numbagrad.models import lenet5, mlp


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


# --- printing and naming ------------------------------------------------------------------


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(F.flatten(self.features(x), 1))


def test_graph_prints_one_line_per_node_with_layer_paths(capsys):
    graph = ng.trace(Net(), ng.Spec((2, 1, 6, 6)))
    print(graph)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "graph Net:"
    assert lines[1:-1] == ["  " + n.format() for n in graph.nodes]
    assert lines[-1] == f"  return %{graph.outputs[0]}"
    body = "\n".join(lines)
    assert "%0 = input -> f32[2,1,6,6]  # input0" in body
    assert "%1 = param -> f32[2,1,3,3]  # features.0.weight" in body
    assert re.search(
        r"%3 = conv2d\(%0, %1, %2\) stride=1x1 padding=0x0 dilation=1x1 groups=1 "
        r"-> f32\[2,2,4,4\]  # features\.0$",
        body,
        re.M,
    )
    assert re.search(r"= relu\(%3\) -> f32\[2,2,4,4\]  # features\.1$", body, re.M)
    assert re.search(
        r"= max_pool2d\(%\d+\) kernel=2x2 stride=2x2 .*-> f32\[2,2,2,2\]  # features\.2$",
        body,
        re.M,
    )
    # The top-level module's own ops (flatten here) have the empty path and no comment.
    assert re.search(r"%6 = reshape\(%5\) shape=2x8 -> f32\[2,8\]$", body, re.M)
    assert re.search(
        r"= matmul\(%\d+, %\d+\) trans_a=False trans_b=True -> f32\[2,3\]  # head$", body, re.M
    )
    # Every op node carries the path of the module that emitted it.
    for n in graph.ops():
        assert n.name in {"features.0", "features.1", "features.2", "head", ""}, n.format()


def test_trace_names_parameters_by_state_dict_keys():
    model = lenet5()
    graph = ng.trace(model, ng.Spec((1, 1, 32, 32)))
    params = graph.leaves("param")
    assert [p.name for p in params] == list(model.state_dict())
    for p in params:
        assert p.shape == model.state_dict()[p.name].shape and p.dtype == "float32"
    # Nested modules: dotted paths, as PyTorch.
    net = Net()
    names = [p.name for p in ng.trace(net, ng.Spec((2, 1, 6, 6))).leaves("param")]
    assert names == ["features.0.weight", "features.0.bias", "head.weight", "head.bias"]
    assert names == list(net.state_dict())


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


# --- state ---------------------------------------------------------------------------------


def test_state_dict_round_trip_and_compiled_steps_see_loaded_values():
    ng.manual_seed(7)
    model = mlp([4, 8, 3])
    saved = model.state_dict()
    # state_dict hands out copies.
    saved_copy = {k: v.copy() for k, v in saved.items()}
    saved["0.weight"][...] = 123.0
    np.testing.assert_array_equal(model.state_dict()["0.weight"], saved_copy["0.weight"])

    x = np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32)
    y = np.arange(6) % 3
    predict = ng.compile(model, ng.Spec((6, 4)), backend="interp")
    out_before = predict(x)
    step = ng.compile_training(
        model,
        nn.CrossEntropyLoss(),
        optim.SGD(lr=0.5),
        ng.Spec((6, 4)),
        ng.Spec((6,), "int64"),
        "interp",
    )
    first_loss = step(x, y)
    second_loss = step(x, y)
    assert second_loss < first_loss  # training moved the parameters
    assert not np.allclose(predict(x), out_before)

    model.load_state_dict(saved_copy)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, saved_copy[key])
    # Loaded in place: the already-compiled executables see the restored values.
    np.testing.assert_array_equal(predict(x), out_before)
    assert step(x, y) == first_loss

    # Into a differently initialized model of the same architecture.
    ng.manual_seed(8)
    other = mlp([4, 8, 3])
    assert not np.array_equal(other.state_dict()["0.weight"], saved_copy["0.weight"])
    other.load_state_dict(model.state_dict())  # (one step past saved_copy by now)
    np.testing.assert_array_equal(
        ng.compile(other, ng.Spec((6, 4)), backend="interp")(x), predict(x)
    )


def test_manual_seed_makes_initialization_reproducible():
    ng.manual_seed(42)
    a = lenet5().state_dict()
    ng.manual_seed(42)
    b = lenet5().state_dict()
    ng.manual_seed(43)
    c = lenet5().state_dict()
    assert list(a) == list(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["0.weight"], c["0.weight"])
    # Without reseeding, the next model draws new numbers.
    ng.manual_seed(42)
    lenet5()
    d = lenet5().state_dict()
    assert not np.array_equal(a["0.weight"], d["0.weight"])
    # PyTorch's default bound for Linear/Conv2d: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    bound = 1 / np.sqrt(1 * 5 * 5)
    assert np.abs(a["0.weight"]).max() <= bound and np.abs(a["0.bias"]).max() <= bound
    assert np.abs(a["0.weight"]).max() > 0.8 * bound


# --- SGD over several steps, with the learning rate changed between them ----------------------

SIZES = [4, 8, 3]
BATCH = 6
LRS = [0.1, 0.05, 0.2, 0.01, 0.1]


def _batches(n_steps, seed=0):
    rng = np.random.default_rng(seed)
    return [
        (
            rng.standard_normal((BATCH, SIZES[0])).astype(np.float32),
            rng.integers(0, SIZES[-1], BATCH),
        )
        for _ in range(n_steps)
    ]


def _numpy_mlp_grads(params: dict[str, np.ndarray], x, y) -> tuple[float, dict[str, np.ndarray]]:
    """Cross-entropy of Linear(4,8) -> ReLU -> Linear(8,3), and its gradients, by hand."""
    w0, b0, w1, b1 = (params[k] for k in ("0.weight", "0.bias", "2.weight", "2.bias"))
    h = x @ w0.T + b0
    a = np.maximum(h, 0)
    z = a @ w1.T + b1
    z = z - z.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    loss = -np.log(p[np.arange(len(y)), y]).mean()
    dz = p.copy()
    dz[np.arange(len(y)), y] -= 1
    dz /= len(y)
    da = dz @ w1
    dh = da * (h > 0)
    grads = {"0.weight": dh.T @ x, "0.bias": dh.sum(0), "2.weight": dz.T @ a, "2.bias": dz.sum(0)}
    return float(loss), grads


def _numpy_sgd(params, bufs, grads, lr, momentum, nesterov, weight_decay, l1):
    """torch.optim.SGD (dampening 0), plus numbagrad's L1 term added to the gradient."""
    for k, p in params.items():
        d = grads[k] + weight_decay * p + l1 * np.sign(p)
        if momentum:
            bufs[k] = d.copy() if k not in bufs else momentum * bufs[k] + d
            d = d + momentum * bufs[k] if nesterov else bufs[k]
        params[k] = p - lr * d


SGD_CONFIGS = {
    "plain": {},
    "momentum": {"momentum": 0.9},
    "nesterov": {"momentum": 0.8, "nesterov": True},
    "weight_decay": {"weight_decay": 0.01},
    "l1": {"l1": 0.003},
    "all": {"momentum": 0.9, "nesterov": True, "weight_decay": 0.02, "l1": 0.001},
}


def _train(config: dict, batches, seed=11):
    ng.manual_seed(seed)
    model = mlp(SIZES)
    init = model.state_dict()
    step = ng.compile_training(
        model,
        nn.CrossEntropyLoss(),
        optim.SGD(lr=LRS[0], **config),
        ng.Spec((BATCH, SIZES[0])),
        ng.Spec((BATCH,), "int64"),
        "interp",
    )
    forward_exe, backward_exe = step.forward, step.backward
    losses = []
    for i, ((x, y), lr) in enumerate(zip(batches, LRS)):
        if i % 2:
            losses.append(step(x, y, lr=lr))  # per call
        else:
            step.lr = lr  # or as an attribute
            losses.append(step(x, y))
        assert step.lr == pytest.approx(lr)
    # The learning rate is a graph input: no recompilation happened.
    assert step.forward is forward_exe and step.backward is backward_exe
    return model, init, step, losses


@pytest.mark.parametrize("name", list(SGD_CONFIGS))
def test_sgd_matches_numpy_reimplementation_of_torch_sgd(name):
    config = SGD_CONFIGS[name]
    batches = _batches(len(LRS))
    model, init, step, losses = _train(config, batches)
    params = {k: v.astype(np.float64) for k, v in init.items()}
    bufs: dict[str, np.ndarray] = {}
    full = {"momentum": 0.0, "nesterov": False, "weight_decay": 0.0, "l1": 0.0, **config}
    for (x, y), lr, loss in zip(batches, LRS, losses):
        expected_loss, grads = _numpy_mlp_grads(params, x.astype(np.float64), y)
        assert loss == pytest.approx(expected_loss, rel=1e-5)
        _numpy_sgd(params, bufs, grads, lr, **full)
    for key, value in model.state_dict().items():
        np.testing.assert_allclose(value, params[key], rtol=1e-5, atol=1e-6, err_msg=key)
    state = step.optimizer_state
    if full["momentum"]:
        assert set(state) == {f"{k}.momentum_buffer" for k in params}
        for k in params:
            np.testing.assert_allclose(state[f"{k}.momentum_buffer"], bufs[k], rtol=1e-5, atol=1e-6)
    else:
        assert state == {}


def test_lr_change_takes_effect():
    # Same data, different schedule -> different parameters (the lr input is really read).
    batches = _batches(len(LRS))
    model_a, _, _, _ = _train({"momentum": 0.9}, batches)
    ng.manual_seed(11)
    model_b = mlp(SIZES)
    step = ng.compile_training(
        model_b,
        nn.CrossEntropyLoss(),
        optim.SGD(lr=LRS[0], momentum=0.9),
        ng.Spec((BATCH, SIZES[0])),
        ng.Spec((BATCH,), "int64"),
        "interp",
    )
    for x, y in batches:
        step(x, y)  # constant lr
    assert not np.allclose(model_a.state_dict()["0.weight"], model_b.state_dict()["0.weight"])
    step.lr = 0.0
    before = model_b.state_dict()
    step(*batches[0])
    after = model_b.state_dict()
    for k in before:  # lr 0: nothing moves (the momentum buffer still updates)
        np.testing.assert_array_equal(after[k], before[k])


TORCH_CONFIGS = ["plain", "momentum", "nesterov", "weight_decay"]


@pytest.mark.torch
@pytest.mark.parametrize("name", TORCH_CONFIGS + ["momentum_wd"])
def test_sgd_matches_torch(name):
    torch = pytest.importorskip("torch")
    config = SGD_CONFIGS.get(name, {"momentum": 0.9, "weight_decay": 0.05})
    batches = _batches(len(LRS), seed=3)
    model, init, _, losses = _train(config, batches)

    net = torch.nn.Sequential(
        torch.nn.Linear(SIZES[0], SIZES[1]), torch.nn.ReLU(), torch.nn.Linear(SIZES[1], SIZES[2])
    )
    net.load_state_dict({k: torch.tensor(v) for k, v in init.items()})
    opt = torch.optim.SGD(net.parameters(), lr=LRS[0], **config)
    for (x, y), lr, loss in zip(batches, LRS, losses):
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        tloss = torch.nn.functional.cross_entropy(net(torch.tensor(x)), torch.tensor(y))
        tloss.backward()
        opt.step()
        assert loss == pytest.approx(tloss.item(), rel=1e-5)
    for key, value in net.state_dict().items():
        np.testing.assert_allclose(
            model.state_dict()[key], value.numpy(), rtol=1e-5, atol=1e-6, err_msg=key
        )


@pytest.mark.parametrize(
    ("padding", "kernel", "dilation"), [("same", 3, 1), ("same", (5, 3), 2), ("valid", 4, 1)]
)
def test_conv2d_string_padding_matches_torch(padding, kernel, dilation):
    torch = pytest.importorskip("torch")
    layer = nn.Conv2d(2, 3, kernel, padding=padding, dilation=dilation)
    reference = torch.nn.Conv2d(2, 3, kernel, padding=padding, dilation=dilation)
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((1, 2, 9, 8)).astype(np.float32)
    got = ng.compile(nn.Sequential(layer), ng.Spec(x.shape), backend="cpu")(x)
    np.testing.assert_allclose(got, reference(torch.from_numpy(x)).detach().numpy(), atol=1e-5)


def test_conv2d_same_padding_refuses_what_it_cannot_do():
    with pytest.raises(ng.errors.ShapeError, match="needs stride 1"):
        nn.Conv2d(1, 1, 3, stride=2, padding="same")
    with pytest.raises(ng.errors.ShapeError, match="uneven padding"):
        nn.Conv2d(1, 1, 4, padding="same")
    with pytest.raises(ng.errors.ShapeError, match="'valid' or 'same'"):
        nn.Conv2d(1, 1, 3, padding="full")
