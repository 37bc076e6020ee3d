"""BatchNorm1d/2d and Concat against PyTorch: train-mode outputs and gradients, running-stat
updates (unbiased variance, momentum, num_batches_tracked), eval outputs, state_dict keys;
buffers in Module; the ops' references and error messages."""

from __future__ import annotations

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import nn, optim
from numbagrad.errors import NumbagradError, ShapeError
from numbagrad.graph import Builder
from numbagrad.graph import ops as O
from numbagrad.graph.ops import get_op

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch
BACKENDS = ["interp", "cpu"]


class BNNet(nn.Module):
    """conv -> BatchNorm2d -> relu -> per-channel mean, or linear -> BatchNorm1d."""

    def __init__(self, dims: int = 2, **bn) -> None:
        super().__init__()
        if dims == 2:
            self.layer, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4, **bn)
        else:
            self.layer, self.bn = nn.Linear(3, 4), nn.BatchNorm1d(4, **bn)

    def forward(self, x):
        y = self.bn(self.layer(x)).relu()
        return y.mean((2, 3)) if y.ndim == 4 else y


def _torch_twin(model: BNNet):
    dims = 2 if isinstance(model.bn, nn.BatchNorm2d) else 1
    bn = model.bn
    layer = torch.nn.Conv2d(3, 4, 3, padding=1) if dims == 2 else torch.nn.Linear(3, 4)
    norm = (torch.nn.BatchNorm2d if dims == 2 else torch.nn.BatchNorm1d)(
        4, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
        track_running_stats=bn.track_running_stats,
    )  # fmt: skip
    twin = torch.nn.Sequential(layer, norm)
    state = {
        k.replace("layer.", "0.").replace("bn.", "1."): v for k, v in model.state_dict().items()
    }
    twin.load_state_dict({k: torch.tensor(v) for k, v in state.items()})
    return twin


def _torch_forward(twin, x, dims):
    y = torch.relu(twin(torch.tensor(x)))
    return y.mean((2, 3)) if dims == 2 else y


def _randomize(model: BNNet, rng) -> None:
    bn = model.bn
    if bn.affine:
        bn.weight.data[:] = rng.uniform(0.5, 1.5, 4)
        bn.bias.data[:] = rng.standard_normal(4)
    if bn.track_running_stats:
        bn.running_mean.data[:] = rng.standard_normal(4)
        bn.running_var.data[:] = rng.uniform(0.5, 2.0, 4)


def _batch(dims, rng, n=3):
    shape = (n, 3, 5, 4) if dims == 2 else (n, 3)
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "dims,bn",
    [
        (2, {}),
        (1, {}),
        (2, {"momentum": 0.3, "eps": 1e-3}),
        (2, {"affine": False}),
        (2, {"track_running_stats": False}),
    ],
    ids=["2d", "1d", "2d_momentum", "2d_no_affine", "2d_no_running"],
)
def test_batchnorm_training_matches_torch(backend, dims, bn):
    rng = np.random.default_rng(0)
    ng.manual_seed(1)
    model = BNNet(dims, **bn)
    _randomize(model, rng)
    twin = _torch_twin(model)
    x, target = _batch(dims, rng), rng.standard_normal((3, 4)).astype(np.float32)

    grad = ng.compile_grad(model, nn.MSELoss(), ng.Spec(x.shape), ng.Spec(target.shape), backend)
    loss, grads = grad(x, target)
    t_loss = torch.nn.functional.mse_loss(_torch_forward(twin, x, dims), torch.tensor(target))
    t_loss.backward()
    assert loss == pytest.approx(t_loss.item(), rel=1e-5)
    t_params = dict(twin.named_parameters())
    for key, g in grads.items():
        expected = t_params[key.replace("layer.", "0.").replace("bn.", "1.")].grad.numpy()
        np.testing.assert_allclose(g, expected, rtol=1e-4, atol=1e-5, err_msg=key)
    # One training-mode forward moved the running statistics as PyTorch's did.
    t_state = twin.state_dict()
    for key, value in model.state_dict().items():
        theirs = t_state[key.replace("layer.", "0.").replace("bn.", "1.")].numpy()
        np.testing.assert_allclose(value, theirs, rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dims", [2, 1])
def test_batchnorm_eval_uses_running_stats(backend, dims):
    rng = np.random.default_rng(2)
    model = BNNet(dims)
    _randomize(model, rng)
    twin = _torch_twin(model).eval()
    x = _batch(dims, rng, n=1)  # one sample: eval needs no batch statistics
    compiled = ng.compile(model.eval(), ng.Spec(x.shape), backend=backend, passes=[])
    assert "batch_norm" in {n.op for n in compiled.forward_graph.ops()}
    with torch.no_grad():
        expected = _torch_forward(twin, x, dims).numpy()
    np.testing.assert_allclose(compiled(x), expected, rtol=1e-5, atol=1e-6)


def test_batchnorm1d_on_sequences_matches_torch():
    rng = np.random.default_rng(3)
    bn = nn.BatchNorm1d(3, momentum=0.2)
    x = rng.standard_normal((2, 3, 5)).astype(np.float32)
    t_bn = torch.nn.BatchNorm1d(3, momentum=0.2)
    fn = ng.compile_grad(
        bn, lambda y, t: ((y - t) * (y - t)).sum(), ng.Spec(x.shape), ng.Spec(x.shape)
    )
    loss, grads = fn(x, np.zeros_like(x))
    t_loss = (t_bn(torch.tensor(x)) ** 2).sum()
    t_loss.backward()
    assert loss == pytest.approx(t_loss.item(), rel=1e-5)
    np.testing.assert_allclose(grads["weight"], t_bn.weight.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.running_var.data, t_bn.running_var.numpy(), rtol=1e-6)


def test_training_steps_update_running_stats_and_count_batches():
    rng = np.random.default_rng(4)
    ng.manual_seed(5)
    model = BNNet(2, momentum=0.25)
    twin = _torch_twin(model)
    t_opt = torch.optim.SGD(twin.parameters(), lr=0.05)
    step = ng.compile_training(
        model, nn.MSELoss(), optim.SGD(0.05), ng.Spec((3, 3, 5, 4)), ng.Spec((3, 4))
    )
    for _ in range(3):
        x, target = _batch(2, rng), rng.standard_normal((3, 4)).astype(np.float32)
        loss = step(x, target)
        t_opt.zero_grad()
        t_loss = torch.nn.functional.mse_loss(_torch_forward(twin, x, 2), torch.tensor(target))
        t_loss.backward()
        t_opt.step()
        assert loss == pytest.approx(t_loss.item(), rel=1e-5)
    step.sync()
    state, t_state = model.state_dict(), twin.state_dict()
    assert int(state["bn.num_batches_tracked"]) == 3
    assert state["bn.num_batches_tracked"].dtype == np.int64
    for key, value in state.items():
        theirs = t_state[key.replace("layer.", "0.").replace("bn.", "1.")].numpy()
        np.testing.assert_allclose(value, theirs, rtol=2e-5, atol=1e-6, err_msg=key)
    # Eval after training: the same running statistics normalize.
    x = _batch(2, rng)
    with torch.no_grad():
        expected = _torch_forward(twin.eval(), x, 2).numpy()
    got = ng.compile(model.eval(), ng.Spec(x.shape))(x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_state_dict_keys_and_order_match_torch():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4))
    twin = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.BatchNorm2d(4)
    )
    assert list(model.state_dict()) == list(twin.state_dict())
    assert [k for k, _ in model.named_buffers()] == [k for k, _ in twin.named_buffers()]
    assert [k for k, _ in model.named_parameters()] == [k for k, _ in twin.named_parameters()]
    # PyTorch's values load, integer counter included; buffers are not trainable parameters.
    for m in twin.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_()
            m.num_batches_tracked += 7
    model.load_state_dict({k: v.numpy() for k, v in twin.state_dict().items()})
    np.testing.assert_array_equal(model[1].running_mean.data, twin[1].running_mean.numpy())
    assert int(model[3].num_batches_tracked.data) == 7
    assert model.num_parameters() == sum(p.numel() for p in twin.parameters())


def test_buffers_are_state_leaves_and_eval_has_no_updates():
    model = BNNet(2)
    spec = ng.Spec((2, 3, 5, 4))
    train_graph = ng.trace(model.train(), spec)
    names = {n.name for n in train_graph.leaves("state")}
    assert names == {"bn.running_mean", "bn.running_var"}
    assert {train_graph[s].name for s, _ in train_graph.updates} == names
    eval_graph = ng.trace(model.eval(), spec)
    assert eval_graph.updates == () and len(eval_graph.leaves("state")) == 2


def test_batchnorm_errors_name_the_layer_and_shapes():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(5))
    with pytest.raises(ShapeError, match=r"BatchNorm2d layer '1' expects .*C=5.*\(2, 4, 3, 3\)"):
        ng.trace(model, ng.Spec((2, 3, 3, 3)))
    with pytest.raises(ShapeError, match="more than one value per channel"):
        ng.trace(nn.BatchNorm1d(3).train(), ng.Spec((1, 3)))
    with pytest.raises(NumbagradError, match="momentum=None"):
        nn.BatchNorm2d(3, momentum=None)
    b = Builder()
    with b.scope("block.bn"):
        x = b.leaf("input", (2, 3, 4, 4), "float32", "x")
        with pytest.raises(ShapeError, match=r"batch_norm in layer 'block.bn': mean .*\(3,\)"):
            O.batch_norm(x, b.leaf("input", (3,), "float32", "m"), 1.0, 1.0, 0.0)


# --- Concat --------------------------------------------------------------------------------


class Branches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cat = nn.Concat(
            nn.Conv2d(3, 2, 1), nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU())
        )

    def forward(self, x):
        return self.cat(x).mean((2, 3))


@pytest.mark.parametrize("backend", BACKENDS)
def test_concat_layer_matches_torch_cat(backend):
    rng = np.random.default_rng(6)
    ng.manual_seed(7)
    model = Branches()
    convs = [torch.nn.Conv2d(3, 2, 1), torch.nn.Conv2d(3, 3, 3, padding=1)]
    state = model.state_dict()
    for i, conv in enumerate(convs):
        prefix = f"cat.{i}." if i == 0 else f"cat.{i}.0."
        conv.weight.data = torch.tensor(state[prefix + "weight"])
        conv.bias.data = torch.tensor(state[prefix + "bias"])
    x, target = rng.standard_normal((2, 3, 4, 5)).astype(np.float32), np.zeros((2, 5), np.float32)
    fn = ng.compile_grad(model, nn.MSELoss(), ng.Spec(x.shape), ng.Spec(target.shape), backend)
    loss, grads = fn(x, target)
    tx = torch.tensor(x)
    out = torch.cat([convs[0](tx), torch.relu(convs[1](tx))], 1).mean((2, 3))
    t_loss = torch.nn.functional.mse_loss(out, torch.tensor(target))
    t_loss.backward()
    assert loss == pytest.approx(t_loss.item(), rel=1e-5)
    np.testing.assert_allclose(grads["cat.0.weight"], convs[0].weight.grad.numpy(), rtol=1e-4)
    np.testing.assert_allclose(grads["cat.1.0.bias"], convs[1].bias.grad.numpy(), rtol=1e-4)


def test_concat_slice_split_references_match_torch():
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 1, 4))
    cat = get_op("concat").reference(a, b, axis=1)
    np.testing.assert_array_equal(cat, torch.cat([torch.tensor(a), torch.tensor(b)], 1).numpy())
    piece = get_op("slice").reference(cat, axis=1, start=1, stop=3)
    np.testing.assert_array_equal(piece, torch.tensor(cat)[:, 1:3].numpy())
    builder = Builder()
    x = builder.leaf("input", (2, 6, 3), "float32", "x")
    pieces = O.split(x, [1, 2, 3], axis=1)
    assert [p.shape for p in pieces] == [(2, 1, 3), (2, 2, 3), (2, 3, 3)]
    assert [p.node.attrs["start"] for p in pieces] == [0, 1, 3]
    assert O.concat([x]) is x and O.slice_(x, 0, 6, 1) is x


def test_concat_and_slice_errors():
    b = Builder()
    x = b.leaf("input", (2, 3, 4), "float32", "x")
    with pytest.raises(ShapeError, match=r"concat: operands must match in every axis but 1"):
        O.concat([x, b.leaf("input", (2, 3, 5), "float32", "y")], 1)
    with pytest.raises(ShapeError, match=r"slice: slice \[2:5\] of axis 1"):
        O.slice_(x, 2, 5, 1)
    with pytest.raises(ShapeError, match="do not partition"):
        O.split(x, [1, 1], axis=1)
    with pytest.raises(ShapeError, match="axis 3 is out of range"):
        O.concat([x, x], 3)
