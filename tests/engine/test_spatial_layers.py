"""ConvTranspose2d, MaxPool2d(return_indices) + MaxUnpool2d, Upsample and LocalResponseNorm
against PyTorch: outputs, and gradients of every parameter from copied weights (interp and cpu
backends). LSTM and attention are in test_lstm_attention.py. Op kernels against the references
and VJPs against finite differences are in tests/backends and tests/graph/test_ops_vjp_cases.py;
hypothesis sweeps of the ops against PyTorch in test_spatial_sweeps.py."""

from __future__ import annotations

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import functional as F
from numbagrad import nn
from numbagrad.backends import get_backend, interp
from numbagrad.errors import OpError, ShapeError
from numbagrad.graph import Builder
from numbagrad.graph import ops as O

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch
TF = torch.nn.functional

# The twin-comparison harness, shared by the spatial-layer, LSTM and attention tests.
import _twin_harness as _h  # noqa: E402  (a sibling helper: tests/conftest.py)

BACKENDS, _check_against_torch, _x = _h.BACKENDS, _h._check_against_torch, _h._x


# --- ConvTranspose2d ------------------------------------------------------------------------

DECONV = [
    dict(in_channels=3, out_channels=2, kernel_size=3),
    dict(in_channels=2, out_channels=3, kernel_size=(3, 2), stride=2, padding=1, output_padding=1),
    dict(
        in_channels=4,
        out_channels=2,
        kernel_size=2,
        stride=(2, 3),
        padding=(0, 1),
        output_padding=(1, 2),
        dilation=(2, 1),
        groups=2,
        bias=False,
    ),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cfg", DECONV, ids=["plain", "s2_p1_op1", "groups_dilation_nobias"])
def test_conv_transpose2d_matches_torch(backend, cfg):
    ng.manual_seed(0)
    model = nn.ConvTranspose2d(**cfg)
    twin = torch.nn.ConvTranspose2d(**cfg)
    assert model.weight.shape == tuple(twin.weight.shape)
    x = _x(2, cfg["in_channels"], 3, 4)
    _check_against_torch(model, twin, x, backend)


def test_conv_transpose2d_output_size_and_errors():
    class Up(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1)

        def forward(self, x):
            return self.up(x, output_size=(8, 7))

    graph = ng.trace(Up(), ng.Spec((1, 2, 4, 4)))
    assert graph[graph.outputs[0]].shape == (1, 2, 8, 7)
    with pytest.raises(ShapeError, match="not reachable"):
        ng.trace(Up(), ng.Spec((1, 2, 2, 2)))
    with pytest.raises(OpError, match="output_padding"):
        ng.trace(nn.ConvTranspose2d(2, 2, 3, output_padding=1), ng.Spec((1, 2, 4, 4)))


# --- MaxPool2d(return_indices) and MaxUnpool2d ----------------------------------------------


class UnpoolNet(nn.Module):
    def __init__(self, kernel, stride, padding, size):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.pool = nn.MaxPool2d(kernel, stride, padding, return_indices=True)
        self.unpool = nn.MaxUnpool2d(kernel, stride, padding)
        self.size = size

    def forward(self, x):
        y, idx = self.pool(self.conv(x))
        return self.unpool(y, idx, output_size=self.size)


class TorchUnpoolNet(torch.nn.Module):
    def __init__(self, kernel, stride, padding, size):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 3, padding=1)
        self.pool = torch.nn.MaxPool2d(kernel, stride, padding, return_indices=True)
        self.unpool = torch.nn.MaxUnpool2d(kernel, stride, padding)
        self.size = size

    def forward(self, x):
        y, idx = self.pool(self.conv(x))
        return self.unpool(y, idx, output_size=self.size)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pool", [(2, 2, 0), (3, 2, 1)], ids=["2x2", "3x3s2p1_overlapping"])
def test_max_unpool2d_matches_torch(backend, pool):
    ng.manual_seed(1)
    size = (6, 5)
    _check_against_torch(
        UnpoolNet(*pool, size), TorchUnpoolNet(*pool, size), _x(2, 2, 6, 5), backend
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_pooling_indices_match_torch(backend):
    x = _x(2, 3, 7, 6, seed=3)
    pool = nn.MaxPool2d(3, 2, 1, return_indices=True)
    y, idx = ng.compile(pool, ng.Spec(x.shape), backend=backend)(x)
    t_y, t_idx = TF.max_pool2d(torch.tensor(x), 3, 2, 1, return_indices=True)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx, t_idx.numpy())
    np.testing.assert_array_equal(y, t_y.numpy())


def test_unpool_refuses_indices_outside_the_plane():
    b = Builder()
    y, idx = b.leaf("input", (1, 1, 2, 2), "float32"), b.leaf("input", (1, 1, 2, 2), "int64")
    graph = b.build([O.max_unpool2d(y, idx, 2)])
    exe = get_backend("cpu").compile(graph)
    exe.set_input(idx.id, np.array([0, 3, 16, 2]).reshape(1, 1, 2, 2))
    with pytest.raises(ShapeError, match="outside"):
        exe.run()
    with pytest.raises(ShapeError, match="indices must lie"):
        interp.evaluate(graph, {idx.id: np.full((1, 1, 2, 2), -1)})


# --- Upsample and LocalResponseNorm ---------------------------------------------------------


class ConvThen(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.conv, self.layer = nn.Conv2d(2, 6, 3, padding=1), layer

    def forward(self, x):
        return self.layer(self.conv(x))


def _torch_conv_then(layer):
    return torch.nn.Sequential(torch.nn.Conv2d(2, 6, 3, padding=1), layer)


def _renamed_twin(model, layer):
    """A torch Sequential whose keys are conv.* -> 0.*: check through a name map."""
    twin = _torch_conv_then(layer)
    twin.load_state_dict(
        {k.replace("conv.", "0."): torch.tensor(v) for k, v in model.state_dict().items()}
    )
    return twin


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "layer,t_layer",
    [
        (lambda: nn.Upsample(2), lambda: torch.nn.Upsample(scale_factor=2)),
        (
            lambda: nn.Upsample((2, 3), mode="bilinear"),
            lambda: torch.nn.Upsample(scale_factor=(2, 3), mode="bilinear"),
        ),
        (
            lambda: nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0),
            lambda: torch.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0),
        ),
        (
            lambda: nn.LocalResponseNorm(4, alpha=0.5, beta=0.6, k=1.0),
            lambda: torch.nn.LocalResponseNorm(4, alpha=0.5, beta=0.6, k=1.0),
        ),
    ],
    ids=["nearest", "bilinear", "lrn_alexnet", "lrn_even_strong"],
)
def test_upsample_and_lrn_match_torch(backend, layer, t_layer):
    ng.manual_seed(2)
    model = ConvThen(layer())
    twin = _renamed_twin(model, t_layer())
    x = _x(2, 2, 3, 4, seed=4)
    out = twin(torch.tensor(x))
    r = _x(*out.shape, seed=5)
    (out * torch.tensor(r)).sum().backward()
    fn = ng.compile_grad(
        model, lambda y, t: (y * t).sum(), ng.Spec(x.shape), ng.Spec(r.shape), backend
    )
    _, grads = fn(x, r)
    np.testing.assert_allclose(
        ng.compile(model, ng.Spec(x.shape), backend=backend)(x),
        out.detach().numpy(),
        rtol=1e-5,
        atol=1e-5,
    )
    for name, g in grads.items():
        expected = dict(twin.named_parameters())[name.replace("conv.", "0.")].grad.numpy()
        np.testing.assert_allclose(g, expected, rtol=1e-4, atol=1e-5, err_msg=name)
    ops = {n.op for n in ng.trace(model, ng.Spec(x.shape)).ops()}
    assert ops & {"upsample2d", "local_response_norm"}  # one op each, not a composition


def test_interpolate_and_lrn_functional_on_3d():
    b = Builder()
    x = b.leaf("input", (1, 2, 3, 2), "float32")
    seq = b.leaf("input", (2, 5, 4), "float32")  # LRN on (N, C, L), as torch allows
    graph = b.build(
        [F.interpolate(x, scale_factor=3, mode="bilinear"), F.local_response_norm(seq, 3)]
    )
    xv, sv = _x(1, 2, 3, 2, seed=6), _x(2, 5, 4, seed=7)
    up, lrn = interp.evaluate(graph, {x.id: xv, seq.id: sv})
    expected = TF.interpolate(
        torch.tensor(xv), scale_factor=3, mode="bilinear", align_corners=False
    )
    np.testing.assert_allclose(up, expected.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lrn, TF.local_response_norm(torch.tensor(sv), 3).numpy(), rtol=1e-5)
    with pytest.raises(ShapeError, match="scale_factor"):
        nn.Upsample(size=4)
