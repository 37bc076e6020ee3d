"""SGD over several steps (momentum, Nesterov, weight decay, L1), with the learning rate changed
between them, against a NumPy reimplementation of torch.optim.SGD and against PyTorch itself."""

from __future__ import annotations

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import nn, optim
from numbagrad.models import mlp

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
