"""Optimizers emitted into the backward graph, against torch.optim on a tiny MLP; parameter
groups, L1, gradient clipping; learning-rate schedules fed at run time."""

from __future__ import annotations

import math

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import nn, optim
from numbagrad.errors import NumbagradError
from numbagrad.models.mlp import mlp

torch = pytest.importorskip("torch")

SIZES = [4, 6, 3]
BATCH = 5
N_STEPS = 4
RTOL, ATOL = 1e-4, 1e-6
BACKENDS = ["interp", "cpu"]


def _batches(n_steps=N_STEPS, seed=0):
    rng = np.random.default_rng(seed)
    return [
        (
            rng.standard_normal((BATCH, SIZES[0])).astype(np.float32),
            rng.integers(0, SIZES[-1], BATCH),
        )
        for _ in range(n_steps)
    ]


def _train(optimizer, backend, batches, lrs=None, seed=7):
    """N compiled steps; returns the initial weights, the losses and the compiled step."""
    ng.manual_seed(seed)
    model = mlp(SIZES)
    init = model.state_dict()
    step = ng.compile_training(
        model,
        nn.CrossEntropyLoss(),
        optimizer,
        ng.Spec((BATCH, SIZES[0])),
        ng.Spec((BATCH,), "int64"),
        backend,
    )
    losses = [step(x, y, lr=None if lrs is None else lrs[i]) for i, (x, y) in enumerate(batches)]
    return init, losses, step


def _torch_train(init, make_opt, batches, lrs=None, clip=None, l1=0.0):
    """The same steps in PyTorch; ``l1`` adds l1*sign(p) to each gradient (after clipping, as
    numbagrad does: the penalty is not part of the clipped loss gradient)."""
    net = torch.nn.Sequential(
        torch.nn.Linear(SIZES[0], SIZES[1]), torch.nn.ReLU(), torch.nn.Linear(SIZES[1], SIZES[2])
    )
    net.load_state_dict({k: torch.tensor(v) for k, v in init.items()})
    opt = make_opt(net)
    losses = []
    for i, (x, y) in enumerate(batches):
        if lrs is not None:
            for group in opt.param_groups:
                group["lr"] = lrs[i] * group.get("lr_ratio", 1.0)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(torch.tensor(x)), torch.tensor(y))
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        with torch.no_grad():
            for p in net.parameters():
                p.grad += l1 * torch.sign(p)
        opt.step()
        losses.append(loss.item())
    return losses, net, opt


def _assert_same(losses, model_state, t_losses, net):
    np.testing.assert_allclose(losses, t_losses, rtol=RTOL)
    for key, value in net.state_dict().items():
        np.testing.assert_allclose(
            model_state[key], value.numpy(), rtol=RTOL, atol=ATOL, err_msg=key
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


@pytest.mark.torch
@pytest.mark.parametrize("backend", BACKENDS)
def test_param_groups_match_torch(backend):
    groups = [
        {"params": ["*.bias"], "weight_decay": 0.0},
        {"params": "2.weight", "lr": 0.03, "betas": (0.8, 0.99), "l1": 0.0},
    ]
    opt = optim.Adam(0.01, weight_decay=0.2, groups=groups)
    batches = _batches(seed=3)
    lrs = [0.01, 0.02, 0.005, 0.01]
    init, losses, step = _train(opt, backend, batches, lrs=lrs)

    def make_torch(net):
        (w0, b0), (w2, b2) = (net[0].weight, net[0].bias), (net[2].weight, net[2].bias)
        return T.Adam(
            [
                {"params": [w0]},
                {"params": [b0, b2], "weight_decay": 0.0},
                {"params": [w2], "lr": 0.03, "betas": (0.8, 0.99), "lr_ratio": 3.0},
            ],
            lr=0.01,
            weight_decay=0.2,
        )

    t_losses, net, _ = _torch_train(init, make_torch, batches, lrs=lrs)
    _assert_same(losses, step.model.state_dict(), t_losses, net)
    # One host-fed bias correction per distinct beta.
    assert set(opt.scalar_inputs(1)) == {
        "adam.bias_correction1(0.9)",
        "adam.bias_correction2_sqrt(0.999)",
        "adam.bias_correction1(0.8)",
        "adam.bias_correction2_sqrt(0.99)",
    }


@pytest.mark.torch
def test_runtime_lr_and_step_scalars_never_recompile():
    batches = _batches(6, seed=4)
    lrs = [0.01, 0.03, 0.02, 0.001, 0.05, 0.01]
    ng.manual_seed(7)
    model = mlp(SIZES)
    init = model.state_dict()
    step = ng.compile_training(
        model,
        nn.CrossEntropyLoss(),
        optim.Adam(0.01),
        ng.Spec((BATCH, SIZES[0])),
        ng.Spec((BATCH,), "int64"),
        "cpu",
    )
    exes = (step.forward, step.backward)
    launches = [k.launch for k in step.backward.kernels]
    sched_lrs = iter(lrs)
    losses = []
    for x, y in batches:
        step.lr = next(sched_lrs)
        losses.append(step(x, y))
    assert (step.forward, step.backward) == exes
    assert [k.launch for k in step.backward.kernels] == launches
    assert step.step_count == len(batches)
    t_losses, net, t_opt = _torch_train(
        init, lambda n: T.Adam(n.parameters(), 0.01), batches, lrs=lrs
    )
    _assert_same(losses, model.state_dict(), t_losses, net)
    state = step.optimizer_state
    for key, p in net.named_parameters():
        for slot in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_allclose(
                state[f"{key}.{slot}"], t_opt.state[p][slot].numpy(), rtol=RTOL, atol=1e-8
            )


# --- schedules ----------------------------------------------------------------------------


def _torch_lrs(make_sched, base_lr, n):
    opt = T.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    sched = make_sched(opt)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(n):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


S = optim.lr_scheduler
SCHEDULES = {  # name: (numbagrad schedule from a base lr, torch scheduler)
    "step": (lambda lr: S.StepDecay(lr, 3, gamma=0.5), lambda o: T.lr_scheduler.StepLR(o, 3, 0.5)),
    "exponential_decay": (
        lambda lr: S.ExponentialDecay(lr, decay=0.2),
        lambda o: T.lr_scheduler.ExponentialLR(o, gamma=math.exp(-0.2)),
    ),
    "exponential_lr": (
        lambda lr: S.ExponentialLR(lr, gamma=0.9),
        lambda o: T.lr_scheduler.ExponentialLR(o, gamma=0.9),
    ),
    "cosine": (
        lambda lr: S.CosineAnnealing(lr, T_max=8, eta_min=0.01),
        lambda o: T.lr_scheduler.CosineAnnealingLR(o, T_max=8, eta_min=0.01),
    ),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_matches_torch(name):
    make, make_torch = SCHEDULES[name]
    n = 16  # cosine: through T_max and back up
    expected = _torch_lrs(make_torch, 0.1, n)
    sched = make(0.1)
    np.testing.assert_allclose([sched.lr_at(i) for i in range(n + 1)], expected, rtol=1e-9)
    stepped = [sched.get_last_lr()] + [sched.step() for _ in range(n)]
    np.testing.assert_allclose(stepped, expected, rtol=1e-9)


def test_exponential_decay_formula():
    sched = S.ExponentialDecay(0.5, decay=0.1)
    assert sched(0) == 0.5
    assert sched(7) == pytest.approx(0.5 * math.exp(-0.7), rel=1e-15)


def test_schedule_drives_a_training_step_without_recompiling():
    step = ng.compile_training(
        mlp(SIZES),
        nn.CrossEntropyLoss(),
        optim.SGD(0.2, momentum=0.9),
        ng.Spec((BATCH, SIZES[0])),
        ng.Spec((BATCH,), "int64"),
        "interp",
    )
    exes = (step.forward, step.backward)
    launches = [k.launch for k in step.backward.kernels]
    sched = S.CosineAnnealing(step, T_max=4)
    assert sched.base_lr == pytest.approx(0.2) and step.lr == pytest.approx(0.2)
    seen = []
    for x, y in _batches(4):
        step(x, y)
        sched.step()
        seen.append(step.lr)
    np.testing.assert_allclose(seen, [sched.lr_at(i) for i in range(1, 5)], rtol=1e-6)
    assert seen[-1] == 0.0
    assert (step.forward, step.backward) == exes
    assert [k.launch for k in step.backward.kernels] == launches


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
