"""The harness of the spatial-layer, LSTM and attention tests (test_spatial_layers.py,
test_lstm_attention.py): a layer and its PyTorch twin from the same weights, compared on the
output and on the gradient of every parameter. Imported by name (tests/conftest.py puts this
folder on sys.path); import torch (pytest.importorskip) first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import numbagrad as ng
from numbagrad import nn

BACKENDS = ["interp", "cpu"]


def _load_twin(model: nn.Module, twin) -> None:
    twin.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})


def _check_against_torch(model, twin, x, backend, rtol=1e-4, atol=1e-5, forward=None):
    """Same output and same gradient of every parameter under the loss sum(out * r)."""
    _load_twin(model, twin)
    out = (forward or twin)(torch.tensor(x))
    r = np.random.default_rng(99).standard_normal(tuple(out.shape)).astype(np.float32)
    (out * torch.tensor(r)).sum().backward()
    grad = ng.compile_grad(
        model, lambda y, t: (y * t).sum(), ng.Spec(x.shape), ng.Spec(r.shape), backend
    )
    loss, grads = grad(x, r)
    assert loss == pytest.approx(float((out.detach() * torch.tensor(r)).sum()), rel=rtol, abs=atol)
    got = ng.compile(model, ng.Spec(x.shape), backend=backend)(x)
    np.testing.assert_allclose(got, out.detach().numpy(), rtol=rtol, atol=atol)
    t_params = dict(twin.named_parameters())
    assert set(grads) == set(t_params)
    for name, g in grads.items():
        expected = t_params[name].grad.numpy()
        np.testing.assert_allclose(g, expected, rtol=rtol, atol=atol, err_msg=name)


def _x(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
