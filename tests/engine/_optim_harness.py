"""The harness of the optimizer and schedule tests (test_optimizers.py,
test_optim_groups_schedules.py): a few compiled training steps of a tiny MLP, the same steps in
PyTorch from the same initial weights, and the comparison. Imported by name (tests/conftest.py
puts this folder on sys.path); import torch (pytest.importorskip) first."""

from __future__ import annotations

import numpy as np
import torch

import numbagrad as ng
from numbagrad import nn
from numbagrad.models.mlp import mlp

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
