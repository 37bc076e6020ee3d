"""Optimizers emitted into the backward graph, against torch.optim on a tiny MLP: SGD,
Adagrad, RMSprop, Adam and AdamW with their options, gradient clipping and the L1 penalty;
hyperparameter and group checks, option resolution and Adam's host-fed bias corrections.
Parameter groups and learning rates fed at run time are in test_optim_groups_schedules.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import nn, optim
from numbagrad.errors import NumbagradError
from numbagrad.models.mlp import mlp

torch = pytest.importorskip("torch")

# The tiny-MLP training harness, shared by the optimizer and schedule tests.
import _optim_harness as _h  # noqa: E402  (a sibling helper: tests/conftest.py)

SIZES, N_STEPS, RTOL, ATOL, BACKENDS = _h.SIZES, _h.N_STEPS, _h.RTOL, _h.ATOL, _h.BACKENDS
_batches, _train, _torch_train, _assert_same = (
    _h._batches,
    _h._train,
    _h._torch_train,
    _h._assert_same,
)

T = torch.optim
CONFIGS = {  # name: (numbagrad optimizer, torch optimizer, clip)
    "sgd_nesterov_wd": (
        lambda: optim.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
        lambda n: T.SGD(n.parameters(), 0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
        None,
    ),
    "sgd_clip": (
        lambda: optim.SGD(0.5, momentum=0.9, clip_grad_norm=0.3),
        lambda n: T.SGD(n.parameters(), 0.5, momentum=0.9),
        0.3,
    ),
    "adagrad": (lambda: optim.Adagrad(0.1), lambda n: T.Adagrad(n.parameters(), 0.1), None),
    "adagrad_decay_wd_init": (
        lambda: optim.Adagrad(
            0.1, lr_decay=0.2, weight_decay=0.05, initial_accumulator_value=0.3, eps=1e-6
        ),
        lambda n: T.Adagrad(
            n.parameters(),
            0.1,
            lr_decay=0.2,
            weight_decay=0.05,
            initial_accumulator_value=0.3,
            eps=1e-6,
        ),
        None,
    ),
    "rmsprop": (lambda: optim.RMSprop(0.01), lambda n: T.RMSprop(n.parameters(), 0.01), None),
    "rmsprop_centered_momentum_wd": (
        lambda: optim.RMSprop(0.01, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.1),
        lambda n: T.RMSprop(
            n.parameters(), 0.01, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.1
        ),
        None,
    ),
    "adam": (lambda: optim.Adam(0.01), lambda n: T.Adam(n.parameters(), 0.01), None),
    "adam_wd_amsgrad_betas": (
        lambda: optim.Adam(0.02, betas=(0.8, 0.95), weight_decay=0.1, amsgrad=True),
        lambda n: T.Adam(n.parameters(), 0.02, betas=(0.8, 0.95), weight_decay=0.1, amsgrad=True),
        None,
    ),
    "adam_clip": (
        lambda: optim.Adam(0.01, clip_grad_norm=0.2),
        lambda n: T.Adam(n.parameters(), 0.01),
        0.2,
    ),
    "adamw": (
        lambda: optim.AdamW(0.01, weight_decay=0.5),
        lambda n: T.AdamW(n.parameters(), 0.01, weight_decay=0.5),
        None,
    ),
    "adamw_default_amsgrad": (
        lambda: optim.AdamW(amsgrad=True),
        lambda n: T.AdamW(n.parameters(), amsgrad=True),
        None,
    ),
}


@pytest.mark.torch
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_optimizer_matches_torch(name, backend):
    make, make_torch, clip = CONFIGS[name]
    batches = _batches()
    init, losses, step = _train(make(), backend, batches)
    t_losses, net, _ = _torch_train(init, make_torch, batches, clip=clip)
    _assert_same(losses, step.model.state_dict(), t_losses, net)
    assert step.step_count == N_STEPS


def test_clipping_below_the_threshold_changes_nothing():
    batches = _batches()
    _, _, plain = _train(optim.Adam(0.01), "interp", batches)
    _, _, clipped = _train(optim.Adam(0.01, clip_grad_norm=1e6), "interp", batches)
    for key, value in plain.model.state_dict().items():
        np.testing.assert_array_equal(clipped.model.state_dict()[key], value)


L1_CONFIGS = {
    "sgd": (
        lambda: optim.SGD(0.1, momentum=0.9, l1=0.01),
        lambda n: T.SGD(n.parameters(), 0.1, 0.9),
    ),
    "adagrad": (lambda: optim.Adagrad(0.1, l1=0.01), lambda n: T.Adagrad(n.parameters(), 0.1)),
    "rmsprop": (lambda: optim.RMSprop(0.01, l1=0.01), lambda n: T.RMSprop(n.parameters(), 0.01)),
    "adam_clip": (
        lambda: optim.Adam(0.01, l1=0.02, weight_decay=0.01, clip_grad_norm=0.2),
        lambda n: T.Adam(n.parameters(), 0.01, weight_decay=0.01),
    ),
    "adamw": (lambda: optim.AdamW(0.01, l1=0.02), lambda n: T.AdamW(n.parameters(), 0.01)),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", list(L1_CONFIGS))
def test_l1_penalty_matches_reference(name):
    # torch has no L1 option: the reference adds the penalty's subgradient l1*sign(p) to each
    # gradient by hand before torch's own optimizer step.
    make, make_torch = L1_CONFIGS[name]
    opt = make()
    batches = _batches(seed=2)
    init, losses, step = _train(opt, "interp", batches)
    t_losses, net, _ = _torch_train(
        init, make_torch, batches, clip=opt.clip_grad_norm, l1=opt.defaults["l1"]
    )
    _assert_same(losses, step.model.state_dict(), t_losses, net)


def _numpy_adam_l1(init, grads_fn, batches, lr, l1, betas=(0.9, 0.999), eps=1e-8):
    """Adam with an L1 penalty, written out in NumPy (float64)."""
    params = {k: v.astype(np.float64) for k, v in init.items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    for t, (x, y) in enumerate(batches, start=1):
        grads = grads_fn(params, x, y)
        for k, p in params.items():
            g = grads[k] + l1 * np.sign(p)
            m[k] = betas[0] * m[k] + (1 - betas[0]) * g
            v[k] = betas[1] * v[k] + (1 - betas[1]) * g * g
            m_hat, v_hat = m[k] / (1 - betas[0] ** t), v[k] / (1 - betas[1] ** t)
            params[k] = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return params


def _torch_grads(params, x, y):
    net = torch.nn.Sequential(
        torch.nn.Linear(SIZES[0], SIZES[1]), torch.nn.ReLU(), torch.nn.Linear(SIZES[1], SIZES[2])
    ).double()
    net.load_state_dict({k: torch.tensor(v) for k, v in params.items()})
    torch.nn.functional.cross_entropy(net(torch.tensor(x).double()), torch.tensor(y)).backward()
    return {k: p.grad.numpy() for k, p in net.named_parameters()}


@pytest.mark.torch
def test_adam_l1_matches_numpy_reimplementation():
    batches = _batches(seed=5)
    init, _, step = _train(optim.Adam(0.01, l1=0.03), "interp", batches)
    expected = _numpy_adam_l1(init, _torch_grads, batches, lr=0.01, l1=0.03)
    for key, value in expected.items():
        np.testing.assert_allclose(step.model.state_dict()[key], value, rtol=RTOL, atol=ATOL)


# --- errors and the graph API -------------------------------------------------------------


def test_hyperparameters_and_groups_are_checked():
    with pytest.raises(NumbagradError, match=r"Adam: betas must be two numbers in \[0, 1\)"):
        optim.Adam(betas=(0.9, 1.0))
    with pytest.raises(NumbagradError, match="RMSprop: alpha must be in"):
        optim.RMSprop(alpha=1.5)
    with pytest.raises(NumbagradError, match="Adagrad: eps must be >= 0"):
        optim.Adagrad(eps=-1)
    with pytest.raises(NumbagradError, match="clip_grad_norm must be > 0"):
        optim.SGD(0.1, clip_grad_norm=0)
    with pytest.raises(NumbagradError, match=r"group 0: unknown option\(s\) \['momentum'\]"):
        optim.Adam(groups=[{"params": ["0.weight"], "momentum": 0.9}])
    with pytest.raises(NumbagradError, match="group 0: weight_decay must be >= 0"):
        optim.Adam(groups=[{"params": ["0.weight"], "weight_decay": -1}])
    with pytest.raises(NumbagradError, match="SGD group 0: nesterov needs a positive momentum"):
        optim.SGD(0.1, groups=[{"params": ["*"], "nesterov": True}])
    with pytest.raises(NumbagradError, match="'params' list"):
        optim.SGD(0.1, groups=[{"weight_decay": 0.1}])
    names = ["0.weight", "0.bias", "2.weight", "2.bias"]
    with pytest.raises(NumbagradError, match="'3.weight' matches no trainable parameter"):
        optim.SGD(0.1, groups=[{"params": ["3.weight"]}]).options(names)
    overlap = optim.SGD(0.1, groups=[{"params": ["0.*"]}, {"params": ["*.bias"]}])
    with pytest.raises(NumbagradError, match="'0.bias' matches several groups"):
        overlap.options(names)


def test_options_resolution_and_repr():
    opt = optim.AdamW(groups=[{"params": ["*.bias"], "weight_decay": 0.0}], clip_grad_norm=1.0)
    opts = opt.options(["0.weight", "0.bias"])
    assert opts["0.weight"]["weight_decay"] == 0.01 and opts["0.bias"]["weight_decay"] == 0.0
    assert opt.lr == 1e-3 and opt.betas == (0.9, 0.999)
    assert repr(opt).startswith("AdamW(lr=0.001, betas=(0.9, 0.999)")
    assert repr(opt).endswith("groups=1, clip_grad_norm=1.0)")


def test_adam_scalar_inputs_are_torch_bias_corrections():
    opt = optim.Adam()
    ng.manual_seed(0)
    ng.compile_training(mlp(SIZES), nn.MSELoss(), opt, ng.Spec((2, 4)), ng.Spec((2, 3)), "interp")
    for t in (1, 2, 10):
        scalars = opt.scalar_inputs(t)
        assert scalars["adam.bias_correction1(0.9)"] == 1 - 0.9**t
        assert scalars["adam.bias_correction2_sqrt(0.999)"] == math.sqrt(1 - 0.999**t)
