"""Kernel taps that only read padding (backends/cpu/kernels/conv_taps.py): which are dropped,
and a NaN or an infinity that the dropped products would have spread still spreads as in
PyTorch. (Crop results against PyTorch: CONV_CASES in test_cpu_kernels.py.)"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from numbagrad.backends.cpu.kernels import conv  # noqa: E402
from numbagrad.backends.cpu.kernels.conv_taps import (  # noqa: E402
    crop_weight,
    live_crop,
    uncrop_grad,
)

pytestmark = pytest.mark.torch


def test_the_taps_that_reach_a_small_input_are_kept():
    one = (1, 1)
    # ResNet-18's last stage on 32x32 images: 1x1 maps, and the stride-2 conv from 2x2
    assert live_crop((1, 1), (3, 3), one, one, one) == (((1, 2), (1, 2)), (0, 0))
    assert live_crop((2, 2), (3, 3), (2, 2), one, one) == (((1, 3), (1, 3)), (0, 0))
    assert live_crop((1, 4), (3, 3), one, one, one) == (((1, 2), (0, 3)), (0, 1))
    assert live_crop((2, 2), (3, 3), one, (2, 2), (2, 2)) == (((1, 2), (1, 2)), (0, 0))
    # every tap reads the input somewhere: nothing to crop
    assert live_crop((4, 4), (3, 3), one, one, one) is None
    assert live_crop((2, 2), (3, 3), one, one, one) is None
    assert live_crop((1, 1), (1, 1), one, (0, 0), one) is None


@pytest.mark.parametrize("shape", [(3, 2, 3, 3), (64, 512, 3, 3)])  # serial, parallel build
@pytest.mark.parametrize("kept", [((1, 2), (1, 2)), ((1, 3), (0, 2)), ((0, 3), (1, 2))])
def test_crop_and_uncrop_move_the_kept_taps(shape, kept):
    w = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    (i0, i1), (j0, j1) = kept
    crop = (kept, (0, 0))
    live, finite = crop_weight(w, crop)
    assert finite
    np.testing.assert_array_equal(live, w[:, :, i0:i1, j0:j1])
    gw = np.full_like(w, np.nan)
    uncrop_grad(live, gw, crop)
    expected = np.zeros_like(w)
    expected[:, :, i0:i1, j0:j1] = live
    np.testing.assert_array_equal(gw, expected)
    w[-1, -1, 2, 2] = np.nan  # a dropped tap in every crop here
    assert not crop_weight(w, crop)[1]


def _torch_conv(x, w, gy):
    xt, wt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
    y = torch.nn.functional.conv2d(xt, wt, padding=1)
    y.backward(torch.from_numpy(gy))
    return y.detach().numpy(), wt.grad.numpy()


@pytest.mark.parametrize("where", ["dropped tap", "kept tap"])
def test_a_non_finite_weight_or_gradient_spreads_as_without_the_crop(where):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 1, 1))
    w = rng.standard_normal((4, 3, 3, 3))
    gy = rng.standard_normal((2, 4, 1, 1))
    tap = (0, 0) if where == "dropped tap" else (1, 1)
    w[1, 2, tap[0], tap[1]] = np.inf
    gy[1, 3, 0, 0] = np.inf
    y_ref, gw_ref = _torch_conv(x, w, gy)
    args = (1, 1, 1, 1, 1, 1, 1)
    y = np.empty_like(y_ref)
    conv.conv2d_forward(x, w, np.empty(0), y, *args)
    gw = np.empty_like(w)
    conv.conv2d_backward_weight(x, gy, gw, *args)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_ref))
    np.testing.assert_array_equal(np.isnan(gw), np.isnan(gw_ref))
    finite = np.isfinite(y_ref)
    np.testing.assert_allclose(y[finite], y_ref[finite], rtol=1e-12)
