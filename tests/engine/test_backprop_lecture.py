"""The lectures' backprop example, by hand.

A one-input network::

    y11 = relu(w11 * x + b11)                 w11 = 20,  b11 = -10
    y12 = relu(w12 * x + b12)                 w12 = 40,  b12 = -200
    y21 = relu(w21a * y11 + w21b * y12 + b21) w21a = 1,  w21b = -1, b21 = 0

At x = 4 with target t = 75::

    pre11 = 20*4 - 10  = 70    -> y11 = 70
    pre12 = 40*4 - 200 = -40   -> y12 = 0
    pre21 = 1*70 - 1*0 + 0 = 70 -> y21 = 70
    L = (t - y21)^2 = (75 - 70)^2 = 25      (MSELoss over one element: the mean is the value)

Backward, by the chain rule::

    dL/dy21   = 2 (y21 - t) = 2 (70 - 75) = -10
    dL/dpre21 = dL/dy21 * relu'(70) = -10 * 1 = -10
    dL/dw21a  = dL/dpre21 * y11 = -10 * 70 = -700
    dL/dw21b  = dL/dpre21 * y12 = -10 * 0  = 0
    dL/db21   = dL/dpre21               = -10
    dL/dy11   = dL/dpre21 * w21a = -10 * 1  = -10
    dL/dy12   = dL/dpre21 * w21b = -10 * -1 = 10
    dL/dpre11 = dL/dy11 * relu'(70)  = -10 * 1 = -10
    dL/dw11   = dL/dpre11 * x = -10 * 4 = -40
    dL/db11   = dL/dpre11             = -10
    dL/dpre12 = dL/dy12 * relu'(-40) = 10 * 0 = 0   (the unit is off: nothing flows back)
    dL/dw12   = 0,  dL/db12 = 0
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import functional as F
from numbagrad import nn, optim

BACKENDS = ["interp", "cpu"]

X = np.array([[4.0]], dtype=np.float32)
TARGET = np.array([[75.0]], dtype=np.float32)

# Each weight's value and its gradient, derived by hand in the module docstring.
WEIGHTS = {
    "l11.weight": ([[20.0]], [[-40.0]]),
    "l11.bias": ([-10.0], [-10.0]),
    "l12.weight": ([[40.0]], [[0.0]]),
    "l12.bias": ([-200.0], [0.0]),
    "l21a.weight": ([[1.0]], [[-700.0]]),
    "l21a.bias": ([0.0], [-10.0]),  # b21
    "l21b.weight": ([[-1.0]], [[0.0]]),
}


class LectureNet(nn.Module):
    """y21 = relu(l21a(y11) + l21b(y12)), y11 = relu(l11(x)), y12 = relu(l12(x))."""

    def __init__(self) -> None:
        super().__init__()
        self.l11 = nn.Linear(1, 1)
        self.l12 = nn.Linear(1, 1)
        self.l21a = nn.Linear(1, 1)  # weight w21a, bias b21
        self.l21b = nn.Linear(1, 1, bias=False)  # weight w21b
        self.load_state_dict({k: np.array(v, np.float32) for k, (v, _) in WEIGHTS.items()})

    def forward(self, x):
        y11 = F.relu(self.l11(x))
        y12 = F.relu(self.l12(x))
        return F.relu(self.l21a(y11) + self.l21b(y12))


@pytest.fixture(autouse=True)
def _private_kernel_cache(monkeypatch, tmp_path):
    """Compile the cpu backend's generated kernels into a fresh cache: kernels loaded from a
    cache another process wrote fail (see ``test_cpu_kernel_cache_is_reusable_across_processes``),
    and these tests are about the numbers, not the cache."""
    monkeypatch.setenv("NUMBAGRAD_CACHE_DIR", str(tmp_path / "numbagrad-cache"))
    try:  # and forget kernels this process already loaded from the shared cache
        from numbagrad.backends.cpu import cache
    except ImportError:
        return
    monkeypatch.setattr(cache, "_loaded", {}, raising=False)


def test_forward_output_is_70():
    out = ng.compile(LectureNet(), ng.Spec((1, 1)), backend="interp")(X)
    assert out.shape == (1, 1) and out.dtype == np.float32
    assert out[0, 0] == 70.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_loss_and_gradients_by_hand(backend):
    model = LectureNet()
    fn = ng.compile_grad(
        model, loss=nn.MSELoss(), inputs=ng.Spec((1, 1)), targets=ng.Spec((1, 1)), backend=backend
    )
    loss, grads = fn(X, TARGET)
    assert loss == 25.0
    assert set(grads) == set(WEIGHTS)
    for name, (_, expected) in WEIGHTS.items():
        expected = np.array(expected, np.float32)
        assert grads[name].shape == expected.shape and grads[name].dtype == np.float32, name
        np.testing.assert_array_equal(grads[name], expected, err_msg=name)
    # Computing gradients leaves the weights alone.
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, np.array(WEIGHTS[name][0], np.float32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_sgd_step_moves_each_weight_by_minus_lr_times_grad(backend):
    lr = 0.001
    model = LectureNet()
    step = ng.compile_training(
        model,
        loss=nn.MSELoss(),
        optimizer=optim.SGD(lr=lr),
        inputs=ng.Spec((1, 1)),
        targets=ng.Spec((1, 1)),
        backend=backend,
    )
    loss = step(X, TARGET)
    assert loss == 25.0  # the loss before the update
    after = model.state_dict()
    for name, (value, grad) in WEIGHTS.items():
        value, grad = np.array(value, np.float32), np.array(grad, np.float32)
        # The update runs in float32: p - g * lr.
        expected = value - grad * np.float32(lr)
        np.testing.assert_allclose(after[name], expected, rtol=1e-7, atol=0, err_msg=name)
        # And it is the hand-derived step: w11 = 20 - 0.001 * -40 = 20.04, b21 = 0.01, ...
        np.testing.assert_allclose(
            after[name], np.float64(value) - lr * np.float64(grad), rtol=1e-6, err_msg=name
        )
    # Weights whose gradient is 0 did not move at all.
    for name in ("l12.weight", "l12.bias", "l21b.weight"):
        np.testing.assert_array_equal(after[name], np.array(WEIGHTS[name][0], np.float32))
    # The next step's forward pass sees the updated weights in place:
    # y11 = 20.04*4 - 9.99 = 70.17, y12 = relu(40*4 - 200) = 0,
    # y21 = 1.7*70.17 + 0.01 = 119.299 (lr 0.001 overshoots), L = (119.299 - 75)^2 = 1962.40...
    assert step(X, TARGET) == pytest.approx((1.7 * 70.17 + 0.01 - 75) ** 2, rel=1e-5)


_SUBPROCESS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    sys.path.insert(0, {here!r})
    import importlib.util
    spec = importlib.util.spec_from_file_location("lecture", {path!r})
    lecture = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lecture)
    import numbagrad as ng
    from numbagrad import nn
    fn = ng.compile_grad(lecture.LectureNet(), loss=nn.MSELoss(), inputs=ng.Spec((1, 1)),
                         targets=ng.Spec((1, 1)), backend="cpu")
    loss, grads = fn(lecture.X, lecture.TARGET)
    print(json.dumps({{"loss": loss, "grads": {{k: v.tolist() for k, v in grads.items()}}}}))
    """
)


def test_cpu_kernel_cache_is_reusable_across_processes(tmp_path):
    """The design's promise: a second process loads the compiled kernels from the cache."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = _SUBPROCESS.format(here=here, path=os.path.abspath(__file__))
    env = {**os.environ, "NUMBAGRAD_CACHE_DIR": str(tmp_path / "cache")}
    results = []
    for _ in range(2):  # the first process compiles and writes the cache, the second loads it
        proc = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    for result in results:
        assert result["loss"] == 25.0
        assert result["grads"] == {k: g for k, (_, g) in WEIGHTS.items()}
