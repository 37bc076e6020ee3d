"""Per-parameter-group options and learning rates fed at run time, against torch.optim on a
tiny MLP (the step never recompiles), and learning-rate schedules against torch's
lr_scheduler, alone and driving a training step."""

from __future__ import annotations

import math

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import nn, optim
from numbagrad.models.mlp import mlp

torch = pytest.importorskip("torch")

# The tiny-MLP training harness, shared by the optimizer and schedule tests.
import _optim_harness as _h  # noqa: E402  (a sibling helper: tests/conftest.py)

SIZES, BATCH, RTOL, BACKENDS = _h.SIZES, _h.BATCH, _h.RTOL, _h.BACKENDS
_batches, _train, _torch_train, _assert_same = (
    _h._batches,
    _h._train,
    _h._torch_train,
    _h._assert_same,
)

T = torch.optim


# --- parameter groups and learning rates fed at run time ----------------------------------


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
    "linear_warmup": (
        lambda lr: S.LinearWarmup(lr, 4),
        lambda o: T.lr_scheduler.LinearLR(o, start_factor=1 / 4, total_iters=3),
    ),
    "warmup_cosine": (  # 3 warm-up steps, then the cosine over the other 13 of 16
        lambda lr: S.WarmupCosine(lr, total=16, warmup=3),
        lambda o: T.lr_scheduler.SequentialLR(
            o,
            [
                T.lr_scheduler.LinearLR(o, start_factor=1 / 3, total_iters=2),
                T.lr_scheduler.CosineAnnealingLR(o, T_max=13),
            ],
            milestones=[3],
        ),
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


def test_warmup_schedules_by_hand():
    sched = S.WarmupCosine(1.0, total=10, warmup=2)
    assert [sched(n) for n in (0, 1, 2)] == [0.5, 1.0, 1.0]
    assert sched(6) == pytest.approx(0.5, abs=1e-15)  # half way through the cosine
    assert sched(10) == pytest.approx(0.0, abs=1e-15) and sched(13) == sched(10)  # held
    assert [S.LinearWarmup(2.0, 4)(n) for n in (0, 3, 9)] == [0.5, 2.0, 2.0]
    assert S.LinearWarmup(2.0, 0)(0) == 2.0
    with pytest.raises(ValueError, match="0 <= warmup < total"):
        S.WarmupCosine(1.0, total=3, warmup=3)


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
