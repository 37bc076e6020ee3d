"""backends/executable.py: an executable binds each launch to its buffers once (``bind``):
preparable launches make their views then, and the calls they return see every later run's
inputs through them."""

from __future__ import annotations

import numpy as np

import numbagrad as ng
from numbagrad import nn
from numbagrad.backends import executable
from numbagrad.backends.executable import bind, preparable


def test_a_preparable_launch_is_prepared_once_per_binding():
    prepared = []

    def prepare(inputs, out):
        prepared.append(len(inputs))
        return lambda: np.add(inputs[0], inputs[1], out=out)

    launch = preparable(prepare)
    a, b, out = np.ones(3), np.arange(3.0), np.empty(3)
    call = bind(launch, [a, b], out)
    for value in (1.0, 5.0):
        a[:] = value
        call()
        np.testing.assert_array_equal(out, value + b)
    assert prepared == [2]
    launch([b, b], out)  # called directly: prepared for these buffers, then run
    np.testing.assert_array_equal(out, 2 * b)
    assert prepared == [2, 2]


def test_an_unpreparable_launch_runs_on_the_bound_buffers():
    seen = []
    call = bind(lambda inputs, out: seen.append((inputs[0], out)), [np.zeros(1)], np.ones(1))
    call()
    call()
    assert len(seen) == 2 and seen[0][0] is seen[1][0]


def test_compiled_model_reads_new_inputs_through_the_views_made_once(monkeypatch):
    """Every run of a compiled model after the first sees its new input: the generated kernels'
    views alias the executable's buffers (a copy made when binding would repeat the first
    result); and no run prepares a launch again."""
    calls = []
    original = executable.bind
    monkeypatch.setattr(executable, "bind", lambda *a: calls.append(1) or original(*a))
    ng.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3), nn.Sigmoid())
    predict = ng.compile(model, ng.Spec((2, 6)), backend="cpu")
    bound = len(calls)
    w1, b1, w2, b2 = (p.data.astype(np.float64) for p in model.parameters())
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.standard_normal((2, 6)).astype(np.float32)
        expected = 1 / (1 + np.exp(-(np.tanh(x @ w1.T + b1) @ w2.T + b2)))
        np.testing.assert_allclose(predict(x), expected, rtol=1e-5, atol=1e-6)
    assert bound > 0 and len(calls) == bound
