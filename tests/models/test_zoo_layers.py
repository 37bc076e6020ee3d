"""The layers the zoo added (adaptive/global pooling, ceil-mode max-pool, LRN, nearest
upsampling, LeNet's subsampling and connection-table conv) against PyTorch: outputs and
gradients through the compiled CPU path."""

from __future__ import annotations

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import nn
from numbagrad.engine.nn.lenet_layers import LENET5_C3_CONNECTIONS, pack_connected
from numbagrad.engine.nn.pooling import ceil_pool_extra

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


class _OnParameter(nn.Module):
    """Apply ``layer`` to a Parameter ``x``, so compile_grad also gives the input gradient."""

    def __init__(self, layer: nn.Module, x: np.ndarray) -> None:
        super().__init__()
        self.layer = layer
        self.x = nn.Parameter(x)

    def forward(self, dummy):
        return self.layer(self.x * 1.0)


def _close(got, expected, what, rtol=1e-5):
    expected = np.asarray(expected)
    scale = max(float(np.abs(expected).max()), 1e-6)
    err = float(np.abs(np.asarray(got) - expected).max()) / scale
    assert err <= rtol, f"{what}: relative error {err:.2e}"


def check_against_torch(layer, torch_fn, x_shape, torch_params=None, seed=0, backend="cpu"):
    """Compare the layer's output and the gradients of an MSE loss (input and, by name,
    ``torch_params``) with PyTorch's."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    model = _OnParameter(layer, x)
    dummy = np.zeros(1, np.float32)
    out = ng.compile(model, ng.Spec((1,)), backend=backend)(dummy)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch_fn(xt)
    _close(out, yt.detach().numpy(), "output")
    target = rng.standard_normal(out.shape).astype(np.float32)
    torch.nn.functional.mse_loss(yt, torch.from_numpy(target)).backward()
    spec_t = ng.Spec(target.shape)
    grads = ng.compile_grad(model, nn.MSELoss(), ng.Spec((1,)), spec_t, backend=backend)(
        dummy, target
    )[1]
    _close(grads["x"], xt.grad.numpy(), "input gradient", 1e-4)
    for name, tp in (torch_params or {}).items():
        _close(grads[f"layer.{name}"], tp.grad.numpy(), f"gradient of {name}", 1e-4)
    return out


@pytest.mark.parametrize(
    "in_hw, out_hw",
    [((7, 5), (3, 2)), ((2, 2), (4, 4)), ((4, 6), (2, 3)), ((3, 3), (1, 1)), ((5, 5), (5, 5))],
)
def test_adaptive_avg_pool_matches_torch(in_hw, out_hw):
    out = check_against_torch(
        nn.AdaptiveAvgPool2d(out_hw),
        lambda x: torch.nn.functional.adaptive_avg_pool2d(x, out_hw),
        (2, 3, *in_hw),
    )
    assert out.shape == (2, 3, *out_hw)


def test_global_avg_pool_matches_torch():
    check_against_torch(
        nn.GlobalAvgPool2d(flatten=True), lambda x: x.mean(dim=(2, 3)), (2, 4, 3, 5)
    )


@pytest.mark.parametrize(
    "k, s, p, hw", [(3, 2, 0, 8), (3, 2, 0, 7), (2, 2, 0, 3), (3, 2, 1, 6), (3, 1, 1, 4)]
)
def test_ceil_mode_max_pool_matches_torch(k, s, p, hw):
    pool = torch.nn.MaxPool2d(k, s, p, ceil_mode=True)
    out = check_against_torch(nn.MaxPool2d(k, s, p, ceil_mode=True), pool, (2, 2, hw, hw))
    assert out.shape[2:] == pool(torch.zeros(1, 1, hw, hw)).shape[2:]


def test_ceil_pool_extra_is_zero_when_floor_and_ceil_agree():
    assert ceil_pool_extra(7, 3, 2, 0) == 0  # (7-3)/2 is whole
    assert ceil_pool_extra(8, 3, 2, 0) == 1


@pytest.mark.parametrize("size, k", [(5, 2.0), (4, 1.0), (3, 1.5)])
def test_local_response_norm_matches_torch(size, k):
    alpha, beta = 1e-2, 0.75  # alpha large enough for the normalization to matter
    check_against_torch(
        nn.LocalResponseNorm(size, alpha, beta, k),
        torch.nn.LocalResponseNorm(size, alpha, beta, k),
        (2, 7, 3, 3),
    )


@pytest.mark.parametrize("scale", [2, (2, 3)])
def test_nearest_upsample_matches_torch(scale):
    check_against_torch(
        nn.Upsample(scale), torch.nn.Upsample(scale_factor=scale, mode="nearest"), (2, 3, 3, 4)
    )


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_subsampling_matches_its_definition(mode):
    layer = nn.Subsampling(3, 2, mode=mode)
    w = torch.tensor(layer.weight.data.copy(), requires_grad=True)
    b = torch.tensor(layer.bias.data.copy(), requires_grad=True)
    factor = 4.0 if mode == "sum" else 1.0

    def reference(x):
        pooled = torch.nn.functional.avg_pool2d(x, 2) * factor
        return pooled * w.view(1, 3, 1, 1) + b.view(1, 3, 1, 1)

    check_against_torch(layer, reference, (2, 3, 6, 6), {"weight": w, "bias": b})
    assert layer.num_parameters() == 6


def test_connection_table_conv_matches_masked_torch_conv():
    table = LENET5_C3_CONNECTIONS
    conv = nn.Conv2d(6, 16, 5, connections=table)
    assert conv.weight.shape == (60, 5, 5) and conv.num_parameters() == 1516
    full = np.zeros((16, 6, 5, 5), np.float32)
    full[table] = conv.weight.data
    np.testing.assert_array_equal(pack_connected(full, table), conv.weight.data)
    w = torch.tensor(full, requires_grad=True)
    b = torch.tensor(conv.bias.data.copy(), requires_grad=True)
    check_against_torch(
        conv,
        lambda x: torch.nn.functional.conv2d(x, w, b),
        (2, 6, 9, 9),
        {"bias": b},
    )
    # the packed gradient is the full gradient at the connected cells
    x = np.random.default_rng(0).standard_normal((2, 6, 9, 9)).astype(np.float32)
    model = _OnParameter(conv, x)
    target = np.random.default_rng(1).standard_normal((2, 16, 5, 5)).astype(np.float32)
    grads = ng.compile_grad(model, nn.MSELoss(), ng.Spec((1,)), ng.Spec(target.shape))(
        np.zeros(1, np.float32), target
    )[1]
    w.grad = None
    xt = torch.tensor(x)
    torch.nn.functional.mse_loss(
        torch.nn.functional.conv2d(xt, w, b), torch.from_numpy(target)
    ).backward()
    _close(grads["layer.weight"], w.grad.numpy()[table], "packed weight gradient", 1e-4)


def test_connection_table_is_validated():
    with pytest.raises(ng.errors.ShapeError, match="connections must be a"):
        nn.Conv2d(6, 16, 5, connections=np.ones((6, 16), bool))
    table = np.ones((4, 2), bool)
    table[2] = False
    with pytest.raises(ng.errors.ShapeError, match=r"output maps \[2\] have no input"):
        nn.Conv2d(2, 4, 3, connections=table)
