"""Traced-tensor conveniences and the layers users asked for (issue 13) against PyTorch: ``**``,
indexing, ``.T``, ``abs()``, comparisons with ``F.select``, ``astype``; ``F.gelu`` (exact and
tanh), ``F.layer_norm``/``nn.LayerNorm``, ``F.group_norm``/``nn.GroupNorm``, ``F.cumsum`` and
``F.stop_gradient``: values and gradients on interp and the optimized cpu backend."""

from __future__ import annotations

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import functional as F
from numbagrad import nn
from numbagrad.errors import NumbagradError, ShapeError

torch = pytest.importorskip("torch")
TF = torch.nn.functional
pytestmark = pytest.mark.torch

import _op_harness as _h  # noqa: E402  (a sibling helper: tests/conftest.py)
import _twin_harness as _twin  # noqa: E402

X = np.random.default_rng(1).standard_normal((2, 3, 4, 5))
W = np.random.default_rng(2).uniform(0.5, 1.5, 5)
B = np.random.default_rng(3).standard_normal(5)

CASES = [
    ("pow_square", lambda x: x**2, lambda x: x**2, [X]),
    ("pow_cube", lambda x: x**3.0, lambda x: x**3, [X]),
    ("abs", lambda x: abs(x), torch.abs, [X + 0.01]),
    ("T", lambda x: x.T * 1.0, lambda x: x.permute(3, 2, 1, 0) * 1.0, [X]),
    ("getitem_basic", lambda x: x[1, :, 1:3, None, -1], lambda x: x[1, :, 1:3, None, -1], [X]),
    ("getitem_ellipsis", lambda x: x[..., 2:], lambda x: x[..., 2:], [X]),
    ("getitem_first", lambda x: x[0] * x[1], lambda x: x[0] * x[1], [X]),
    ("select_gt", lambda x: F.select(x > 0.1, x, -x), lambda x: torch.where(x > 0.1, x, -x), [X]),
    (
        "select_le",
        lambda x: F.select(x <= 0, x * 2, x),
        lambda x: torch.where(x <= 0, x * 2, x),
        [X],
    ),
    (
        "mask_astype",
        lambda x, y: (x < y).astype("float64") * x + (x >= y).astype(x.dtype) * y,
        lambda x, y: (x < y).double() * x + (x >= y).double() * y,
        [X, X[:, :, :1] * 0.5],
    ),
    ("astype_f32", lambda x: x.astype("float32") * 2.0, lambda x: x.float() * 2.0, [X]),
    ("gelu", F.gelu, TF.gelu, [X * 2]),
    ("gelu_tanh", lambda x: F.gelu(x, "tanh"), lambda x: TF.gelu(x, approximate="tanh"), [X * 2]),
    (
        "layer_norm",
        lambda x, w, b: F.layer_norm(x, 5, w, b),
        lambda x, w, b: TF.layer_norm(x, (5,), w, b),
        [X, W, B],
    ),
    (
        "layer_norm_2d_eps",
        lambda x: F.layer_norm(x, (4, 5), eps=0.1),
        lambda x: TF.layer_norm(x, (4, 5), eps=0.1),
        [X],
    ),
    (
        "group_norm",
        lambda x, w, b: F.group_norm(x, 3, w, b),
        lambda x, w, b: TF.group_norm(x, 3, w, b),
        [X.reshape(2, 6, 10) * 3 + 1, np.tile(W[:3], 2), np.tile(B[:3], 2)],
    ),
    ("cumsum", lambda x: F.cumsum(x, 2), lambda x: torch.cumsum(x, 2), [X]),
    (
        "cumsum_reverse",
        lambda x: F.cumsum(x, -1, reverse=True),
        lambda x: torch.flip(torch.cumsum(torch.flip(x, (-1,)), -1), (-1,)),
        [X],
    ),
    (
        "stop_gradient",
        lambda x: x * F.stop_gradient(x),
        lambda x: x * x.detach(),
        [X],
    ),
]


@pytest.mark.parametrize(
    ("fn", "torch_fn", "arrays"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_matches_torch_values_and_gradients(fn, torch_fn, arrays):
    _h.check_against_torch(fn, torch_fn, arrays)


@pytest.mark.parametrize("backend", ["interp", "cpu"])
def test_layer_norm_and_group_norm_layers_match_torch(backend):
    ng.manual_seed(0)
    model = nn.Sequential(nn.GroupNorm(2, 4), nn.Conv2d(4, 3, 1), nn.LayerNorm((3, 5)))
    for p in model.parameters():
        p.data[...] = np.random.default_rng(p.data.size).uniform(0.5, 1.5, p.shape)
    twin = torch.nn.Sequential(
        torch.nn.GroupNorm(2, 4), torch.nn.Conv2d(4, 3, 1), torch.nn.LayerNorm((3, 5))
    )
    _twin._check_against_torch(model, twin, _twin._x(2, 4, 3, 5), backend)
    assert list(model.state_dict()) == list(twin.state_dict())


def test_indexing_and_comparison_refusals():
    from numbagrad.graph import Builder

    x = Builder().leaf("input", (2, 3), "float32", "x")
    with pytest.raises(ShapeError, match=r"only step 1"):
        x[:, ::2]
    with pytest.raises(ShapeError, match=r"index 3 is out of range for axis 1 of size 3"):
        x[0, 3]
    with pytest.raises(ShapeError, match=r"too many indices \(3\) for a 2-d tensor"):
        x[0, 0, 0]
    with pytest.raises(ShapeError, match=r"cannot index a traced tensor with list"):
        x[[0, 1]]
    with pytest.raises(NumbagradError, match=r"constant \(number\) exponent"):
        x**x
    with pytest.raises(ShapeError, match=r"num_channels=5 must be divisible by num_groups=2"):
        nn.GroupNorm(2, 5)
