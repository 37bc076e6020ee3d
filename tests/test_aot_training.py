"""Saved training steps (aot.py): a step saved mid-training and loaded goes on exactly as the
original does (losses, parameters, BatchNorm's buffers and batch counter, Adam's moments and
bias corrections, dropout's masks, lr), on the same backend bit for bit and on another within
float32 rounding; a loaded step can be saved again."""

from __future__ import annotations

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import nn, optim
from numbagrad.aot import LoadedTrainingStep

X_SHAPE, CLASSES = (4, 1, 6, 6), 3
SPECS = (ng.Spec(X_SHAPE), ng.Spec((X_SHAPE[0],), "int64"))


def _net() -> nn.Sequential:
    ng.manual_seed(5)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.3),  # its masks follow the step counter, which the file keeps
        nn.Linear(12, CLASSES),
    )


def _batches(n: int = 5) -> list:
    rng = np.random.default_rng(6)
    shape = X_SHAPE
    return [
        (rng.standard_normal(shape).astype(np.float32), rng.integers(0, CLASSES, shape[0]))
        for _ in range(n)
    ]


LRS = [None, None, 0.004, None, 0.002]  # a schedule: lr is fed at run time


def _adam():
    return optim.Adam(0.01, weight_decay=1e-3)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Two steps, saved, then three more: the uninterrupted run to compare against."""
    net = _net()
    step = ng.compile_training(net, nn.CrossEntropyLoss(), _adam(), *SPECS)
    batches = _batches()
    for (x, y), lr in zip(batches[:2], LRS):
        step(x, y, lr=lr)
    path = step.save(tmp_path_factory.mktemp("aot") / "step")
    losses = [step(x, y, lr=lr) for (x, y), lr in zip(batches[2:], LRS[2:])]
    return path, losses, net.state_dict(), step.optimizer_state


def _resume(step, batches) -> list[float]:
    return [step(x, y, lr=lr) for (x, y), lr in zip(batches[2:], LRS[2:])]


@pytest.mark.parametrize("backend", ["cpu", "interp"])
def test_a_loaded_training_step_goes_on_like_the_saved_one(run, backend):
    path, losses, state, optimizer_state = run
    step = ng.load(path, backend=backend)
    assert isinstance(step, LoadedTrainingStep)
    assert (step.step_count, step.lr) == (2, pytest.approx(0.01))
    got = _resume(step, _batches())
    got_state = step.state_dict()
    assert list(got_state) == list(state)  # the model's keys, in its order
    assert got_state["1.num_batches_tracked"] == 5
    if backend == "cpu":  # the same graphs, plans and kernels: the same bits
        assert got == losses
        for key, value in state.items():
            np.testing.assert_array_equal(got_state[key], value, err_msg=key)
        for key, value in optimizer_state.items():
            np.testing.assert_array_equal(step.optimizer_state[key], value, err_msg=key)
    else:
        np.testing.assert_allclose(got, losses, rtol=1e-5)
        for key, value in state.items():
            np.testing.assert_allclose(got_state[key], value, rtol=1e-4, atol=1e-6, err_msg=key)


def test_a_loaded_step_saves_again_and_the_second_load_goes_on(run, tmp_path):
    path, losses, state, _ = run
    first = ng.load(path)
    batches = _batches()
    x, y = batches[2]
    assert first(x, y, lr=LRS[2]) == losses[0]
    second = ng.load(first.save(tmp_path / "again.npz"))
    assert second.step_count == 3
    rest = [second(x, y, lr=lr) for (x, y), lr in zip(batches[3:], LRS[3:])]
    assert rest == losses[1:]
    for key, value in second.state_dict().items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)


def test_an_unused_parameter_and_a_frozen_one_are_kept(tmp_path):
    class Partly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.unused = nn.Linear(4, 3), nn.Linear(2, 2)
            self.used.bias.requires_grad = False

        def forward(self, x):
            return self.used(x)

    ng.manual_seed(7)
    net = Partly()
    step = ng.compile_training(
        net, nn.MSELoss(), optim.SGD(0.1, momentum=0.9), ng.Spec((2, 4)), ng.Spec((2, 3))
    )
    x, y = np.ones((2, 4), np.float32), np.zeros((2, 3), np.float32)
    step(x, y)
    loaded = ng.load(step.save(tmp_path / "partly"))
    assert step(x, y) == loaded(x, y)
    state, got = net.state_dict(), loaded.state_dict()
    assert list(got) == list(state)
    for key, value in state.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
