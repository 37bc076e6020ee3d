"""Activations and elementwise ops (issue 4) against PyTorch: op values and gradients on the
interp and (optimized, fused) CPU backends, attribute templates fused into one kernel, and the
activation layers through compile_grad (torch weights copied). Losses are in test_losses.py,
dropout in test_dropout.py."""

from __future__ import annotations

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import functional as F
from numbagrad import nn
from numbagrad.backends import get_backend
from numbagrad.errors import OpError
from numbagrad.graph import Builder
from numbagrad.graph.passes import fuse_elementwise

torch = pytest.importorskip("torch")
TF = torch.nn.functional
pytestmark = pytest.mark.torch

# The torch-comparison harness, shared by the activation, loss and dropout tests.
import _op_harness as _h  # noqa: E402  (a sibling helper: tests/conftest.py)

_rng, check_against_torch, _check_model = _h._rng, _h.check_against_torch, _h._check_model


def _away(shape, seed):
    r = _rng(seed)
    return r.uniform(0.2, 1.5, shape) * r.choice([-1.0, 1.0], shape)


# --- activation ops ---------------------------------------------------------------------------

X = _away((2, 3, 4, 3), 1)
ACTIVATIONS = [
    ("leaky_relu", lambda x: F.leaky_relu(x, 0.2), lambda x: TF.leaky_relu(x, 0.2), [X]),
    ("leaky_relu_default", F.leaky_relu, TF.leaky_relu, [X]),
    ("elu", lambda x: F.elu(x, 1.3), lambda x: TF.elu(x, 1.3), [X]),
    ("silu", F.silu, TF.silu, [X * 3]),
    ("softplus", F.softplus, TF.softplus, [X * 3]),
    (
        "softplus_beta_threshold",
        lambda x: F.softplus(x, 2.0, 1.5),
        lambda x: TF.softplus(x, 2.0, 1.5),
        [X * 3],
    ),
    (
        "scaled_tanh",
        F.scaled_tanh,
        lambda x: 1.7159 * torch.tanh(2.0 * x / 3.0),
        [X * 2],
    ),
    ("prelu_channels", F.prelu, TF.prelu, [X, np.array([0.1, -0.3, 0.7])]),
    ("prelu_single", F.prelu, TF.prelu, [X, np.array([0.25])]),
    ("prelu_2d", F.prelu, TF.prelu, [_away((4, 3), 2), np.array([0.1, 0.2, 0.3])]),
]


@pytest.mark.parametrize("case", ACTIVATIONS, ids=[c[0] for c in ACTIVATIONS])
def test_activation_matches_torch(case):
    _, fn, torch_fn, arrays = case
    check_against_torch(fn, torch_fn, arrays)


A = _rng(3).standard_normal((3, 1, 4))
B = _rng(4).standard_normal((2, 1))
TIE_A, TIE_B = np.array([1.0, 2.0, -3.0, 0.5]), np.array([1.0, 0.0, 5.0, 0.5])
POS = _rng(5).uniform(0.3, 2.0, (3, 4))
WITH_ZEROS = np.array([[0.0, 0.5, 1.2, 0.0], [2.0, 0.0, 0.1, 0.7], [0.3, 0.3, 0.0, 1.0]])
ELEMENTWISE = [
    ("maximum", F.maximum, torch.maximum, [A, B]),
    ("minimum", F.minimum, torch.minimum, [A, B]),
    ("maximum_ties", F.maximum, torch.maximum, [TIE_A, TIE_B]),
    ("minimum_ties", F.minimum, torch.minimum, [TIE_A, TIE_B]),
    ("select", F.select, lambda c, a, b: torch.where(c > 0, a, b), [B, A, A[0, 0] * 2]),
    ("equal", F.equal, lambda a, b: (a == b).double(), [TIE_A, TIE_B]),
    ("pow_3", lambda x: F.pow(x, 3), lambda x: x**3, [A]),
    ("pow_2", lambda x: F.pow(x, 2), lambda x: x**2, [A]),
    ("pow_frac", lambda x: F.pow(x, -1.5), lambda x: x**-1.5, [POS]),
    ("pow_0", lambda x: F.pow(x, 0), lambda x: x**0, [A]),
    ("xlogy", F.xlogy, torch.xlogy, [WITH_ZEROS, POS]),
]


@pytest.mark.parametrize("case", ELEMENTWISE, ids=[c[0] for c in ELEMENTWISE])
def test_elementwise_op_matches_torch(case):
    _, fn, torch_fn, arrays = case
    check_against_torch(fn, torch_fn, arrays)


def test_attribute_templates_fuse_into_one_kernel():
    b = Builder()
    x = b.leaf("input", (3, 4), "float32", "x")
    y = F.softplus(F.leaky_relu(x * 2.0 + 1.0, 0.125), beta=0.5, threshold=3.0)
    graph = fuse_elementwise(b.build([F.scaled_tanh(y)]))
    (node,) = graph.ops()
    assert node.op == "fused_elementwise"
    assert "0.125" in node.attrs["scalar"] and "1.7159" in node.attrs["scalar"]
    exe = get_backend("cpu").compile(graph)
    xs = _rng(6).standard_normal((3, 4)).astype(np.float32)
    np.copyto(exe.buffers[x.id], xs)
    exe.run()
    tx = torch.tensor(xs)
    expected = 1.7159 * torch.tanh(TF.softplus(TF.leaky_relu(tx * 2 + 1, 0.125), 0.5, 3.0) / 1.5)
    np.testing.assert_allclose(exe.output_arrays()[0], expected.numpy(), rtol=1e-5, atol=1e-6)


def test_attributes_must_be_finite_numbers():
    b = Builder()
    x = b.leaf("input", (3,), "float32", "x")
    with pytest.raises(OpError, match="finite"):
        F.softplus(x, threshold=float("inf"))
    with pytest.raises(OpError, match="number"):
        F.leaky_relu(x, "steep")


# --- activation layers through the compiled path (float64, torch weights copied) ------------


def test_activation_layers_train_like_torch():
    ng.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, dtype="float64"),
        nn.PReLU(3, dtype="float64"),
        nn.ELU(0.8),
        nn.Flatten(),
        nn.Linear(12, 6, dtype="float64"),
        nn.SiLU(),
        nn.Linear(6, 5, dtype="float64"),
        nn.Softplus(2.0, 1.0),
        nn.LeakyReLU(0.3),
        nn.PReLU(dtype="float64"),
        nn.LogSoftmax(1),
    )
    tn = torch.nn
    tmodel = tn.Sequential(
        tn.Conv2d(2, 3, 3),
        tn.PReLU(3),
        tn.ELU(0.8),
        tn.Flatten(),
        tn.Linear(12, 6),
        tn.SiLU(),
        tn.Linear(6, 5),
        tn.Softplus(2.0, 1.0),
        tn.LeakyReLU(0.3),
        tn.PReLU(),
        tn.LogSoftmax(1),
    ).double()
    x = _rng(20).standard_normal((3, 2, 4, 4))
    y = np.array([1, 4, 0])
    _check_model(model, tmodel, nn.NLLLoss(), tn.NLLLoss(), x, y)


def test_softmax_layer_and_aliases():
    assert nn.LeCunTanh is nn.ScaledTanh and nn.MAELoss is nn.L1Loss
    assert "slope=0.666667" in repr(nn.ScaledTanh()) and "p=0.3" in repr(nn.Dropout(0.3))
    graph = ng.trace(nn.Softmax(0), ng.Spec((2, 3)))
    assert [n.op for n in graph.ops()] == ["softmax"] and graph.ops()[0].attrs["axis"] == 0
