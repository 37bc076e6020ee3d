"""Dropout (issue 4): train/eval graphs and the step counter, counter-based masks that change
every step and replay with the seed, the kernel bit-exact with the NumPy reference, and the
gradient through the step's mask against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import functional as F
from numbagrad import nn
from numbagrad.backends import get_backend
from numbagrad.errors import NumbagradError, OpError
from numbagrad.graph import Builder
from numbagrad.graph import ops as O
from numbagrad.graph.ops.random import dropout_mask, keep_scale

torch = pytest.importorskip("torch")
TF = torch.nn.functional
pytestmark = pytest.mark.torch

# The torch-comparison harness, shared by the activation, loss and dropout tests.
import _op_harness as _h  # noqa: E402  (a sibling helper: tests/conftest.py)

_rng = _h._rng


class _DropNet(nn.Module):
    def __init__(self, p=0.5, seed=7, n=8):
        super().__init__()
        self.fc1 = nn.Linear(4, n, dtype="float64")
        self.drop = nn.Dropout(p, seed=seed)
        self.fc2 = nn.Linear(n, 2, dtype="float64")

    def forward(self, x):
        return self.fc2(self.drop(self.fc1(x)))


def _dropout_graph(shape, p, seed, dtype="float32"):
    """identity -> dropout, as a model (no parameters: trace it directly)."""
    model = nn.Dropout(p, seed=seed)
    return ng.trace(model.train(), ng.Spec(shape, dtype)), model


def test_eval_graph_has_no_dropout_and_train_graph_counts_steps():
    model = _DropNet()
    eval_graph = ng.trace(model.eval(), ng.Spec((2, 4), "float64"))
    assert "dropout" not in {n.op for n in eval_graph.ops()}
    assert not eval_graph.leaves("state") and not eval_graph.updates
    compiled = ng.compile(model.train(), ng.Spec((2, 4), "float64"))  # compile traces in eval
    assert "dropout" not in {n.op for n in compiled.forward_graph.ops()}
    x = _rng(30).standard_normal((2, 4))
    np.testing.assert_array_equal(compiled(x), compiled(x))

    train_graph = ng.trace(model.train(), ng.Spec((2, 4), "float64"))
    (drop,) = [n for n in train_graph.ops() if n.op == "dropout"]
    (counter,) = train_graph.leaves("state")
    assert counter.name == "rng.step" and counter.dtype == "float64"
    assert [(s, train_graph[v].inputs[0]) for s, v in train_graph.updates] == [
        (counter.id, counter.id)
    ]
    assert drop.inputs[1] == train_graph.updates[0][1]  # this run's step: counter + 1
    assert drop.attrs["seed"] == 7 and drop.attrs["p"] == 0.5


def test_each_dropout_of_a_trace_draws_its_own_mask():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = nn.Dropout(0.5, seed=1)
            self.other = nn.Dropout(0.5, seed=1)

        def forward(self, x):
            return self.other(self.drop(self.drop(x)))

    graph = ng.trace(Twice(), ng.Spec((4, 4)))
    seeds = [n.attrs["seed"] for n in graph.ops() if n.op == "dropout"]
    assert seeds[0] == 1 and len(set(seeds)) == 3
    assert len(graph.leaves("state")) == 1  # one step counter per trace


def test_dropout_masks_change_every_step_and_replay_with_the_seed():
    graph, _ = _dropout_graph((50, 40), 0.3, seed=123)
    x = np.ones((50, 40), np.float32)

    def outputs(exe, steps):
        result = []
        for _ in range(steps):
            np.copyto(exe.buffers[graph.inputs[0]], x)
            exe.run()
            result.append(exe.output_arrays()[0].copy())
        return result

    cpu = get_backend("cpu")
    first, second = outputs(cpu.compile(graph), 3), outputs(cpu.compile(graph), 3)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)  # same seed, fresh counter: same masks
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[1], first[2])
    for step, out in enumerate(first, start=1):
        keep = dropout_mask(x.shape, 0.3, 123, step)
        np.testing.assert_array_equal(out != 0, keep)
        np.testing.assert_array_equal(out[keep], np.float32(1 / 0.7))
    other, _ = _dropout_graph((50, 40), 0.3, seed=124)
    exe = cpu.compile(other)
    np.copyto(exe.buffers[other.inputs[0]], x)
    exe.run()
    assert not np.array_equal(exe.output_arrays()[0], first[0])


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_drops_a_fraction_p(p):
    masks = np.stack([dropout_mask((20000,), p, seed=5, step=s) for s in (1, 2)])
    assert abs((~masks).mean() - p) < 0.01
    # Neighbouring elements and consecutive steps are uncorrelated.
    a, b = masks.astype(float)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.03
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 0.03


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(3, 7), (40000,)])  # the second runs the parallel kernel
def test_dropout_kernel_is_bit_exact_with_the_reference(shape, dtype):
    graph, _ = _dropout_graph(shape, 0.25, seed=2**62 + 12345, dtype=dtype)
    x = _rng(31).standard_normal(shape).astype(dtype)
    results = []
    for backend in ("interp", "cpu"):
        exe = get_backend(backend).compile(graph)
        for _ in range(2):  # step 2
            np.copyto(exe.buffers[graph.inputs[0]], x)
            exe.run()
        results.append(exe.output_arrays()[0].copy())
    np.testing.assert_array_equal(results[0], results[1])
    keep = dropout_mask(shape, 0.25, 2**62 + 12345, 2)
    scale = np.asarray(keep_scale(0.25), dtype)
    np.testing.assert_array_equal(results[1], np.where(keep, x * scale, 0))


def test_dropout_gradient_reuses_the_step_mask():
    ng.manual_seed(3)
    model = _DropNet(p=0.4, seed=99)
    tfc1, tfc2 = torch.nn.Linear(4, 8).double(), torch.nn.Linear(8, 2).double()
    with torch.no_grad():
        for t, ours in ((tfc1, model.fc1), (tfc2, model.fc2)):
            t.weight.copy_(torch.tensor(ours.weight.data))
            t.bias.copy_(torch.tensor(ours.bias.data))
    fn = ng.compile_grad(
        model, nn.MSELoss(), ng.Spec((3, 4), "float64"), ng.Spec((3, 2), "float64")
    )
    x, y = _rng(32).standard_normal((3, 4)), _rng(33).standard_normal((3, 2))
    for step in (1, 2, 3):
        loss, grads = fn(x, y)
        mask = torch.tensor(dropout_mask((3, 8), 0.4, 99, step) / 0.6)
        for t in (tfc1, tfc2):
            t.zero_grad()
        tloss = TF.mse_loss(tfc2(tfc1(torch.tensor(x)) * mask), torch.tensor(y))
        tloss.backward()
        np.testing.assert_allclose(loss, tloss.item(), rtol=1e-12)
        np.testing.assert_allclose(grads["fc1.weight"], tfc1.weight.grad.numpy(), rtol=1e-10)
        np.testing.assert_allclose(grads["fc2.weight"], tfc2.weight.grad.numpy(), rtol=1e-10)


def test_dropout_edge_probabilities_and_checks():
    b = Builder()
    x = b.leaf("input", (4, 5), "float32", "x")
    assert F.dropout(x, 0.0) is x and F.dropout(x, 0.5, training=False) is x
    step = b.const(1.0, "float64")
    exe = get_backend("cpu").compile(b.build([O.dropout(x, step, p=1.0)]))
    np.copyto(exe.buffers[x.id], np.ones((4, 5)))
    exe.run()
    np.testing.assert_array_equal(exe.output_arrays()[0], 0.0)
    with pytest.raises(OpError, match="probability"):
        O.dropout(x, step, p=1.5)
    with pytest.raises(OpError, match="seed"):
        O.dropout(x, step, seed=-1)
    with pytest.raises(NumbagradError, match="float64"):
        O.dropout(x, b.const(1.0, "float32"))
    with pytest.raises(NumbagradError, match="p must be"):
        nn.Dropout(2.0)
