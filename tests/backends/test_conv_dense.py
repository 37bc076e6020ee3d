"""The dense conv (backends/cpu/kernels/conv_dense.py): where it applies, its three kinds against
PyTorch, NaN and infinities where im2col puts them, and the dispatch. (It also runs on the
CONV_CASES it applies to in test_cpu_kernels.py.)"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kernel_checks import (  # noqa: E402
    CONV_KINDS,
    NONFINITE_OPERANDS,
    assert_close,
    assert_nonfinite_as_im2col,
    conv_case,
    run_conv,
)

from numbagrad.backends.cpu.kernels import conv, conv_choice, conv_dense  # noqa: E402

pytestmark = pytest.mark.torch

# (n, c, h, w, k, kh, kw, stride, padding, dilation, groups), all dense
DENSE_CASES = [
    (3, 5, 2, 2, 7, 3, 3, (1, 1), (1, 1), (1, 1), 1),  # ImageNet-stem ResNet-18's 2x2 maps
    (2, 3, 3, 2, 4, 5, 3, (1, 1), (2, 1), (1, 1), 1),  # 5x3 kernel on a 3x2 map
    (1, 2, 3, 3, 3, 5, 5, (2, 2), (2, 2), (1, 1), 1),  # stride 2, batch 1
    (2, 17, 2, 2, 19, 3, 3, (1, 1), (1, 1), (1, 1), 1),  # channels no multiple of a vector
]


def _expected_table(h, w, kh, kw, stride, pad):
    """The tap each output pixel reads each input pixel through, by brute force (dilation 1)."""
    oh = (h + 2 * pad[0] - kh) // stride[0] + 1
    ow = (w + 2 * pad[1] - kw) // stride[1] + 1
    table = np.full((oh * ow, h * w), -1)
    for oy in range(oh):
        for ox in range(ow):
            for i in range(kh):
                for j in range(kw):
                    iy, ix = oy * stride[0] - pad[0] + i, ox * stride[1] - pad[1] + j
                    if 0 <= iy < h and 0 <= ix < w:
                        table[oy * ow + ox, iy * w + ix] = i * kw + j
    return table


@pytest.mark.parametrize("case", DENSE_CASES)
def test_the_tap_table_is_every_pixel_pair(case):
    n, c, h, w, k, kh, kw, stride, pad, dil, groups = case
    table = conv_dense.tap_table((h, w), (kh, kw), stride, pad, dil)
    np.testing.assert_array_equal(table, _expected_table(h, w, kh, kw, stride, pad))
    assert conv_dense.applies((n, c, h, w), (k, c, kh, kw), stride, pad, dil, groups)


def test_where_a_pixel_pair_has_no_tap_it_does_not_apply():
    one = ((1, 1), (1, 1), (1, 1))
    assert conv_dense.tap_table((3, 3), (3, 3), *one) is None  # corner to far corner
    assert conv_dense.tap_table((2, 2), (3, 3), (1, 1), (2, 2), (2, 2)) is None  # dilation 2
    assert conv_dense.tap_table((2, 2), (5, 5), (1, 1), (0, 0), (1, 1)) is None  # no output
    assert not conv_dense.applies((2, 4, 2, 2), (4, 2, 3, 3), *one, 2)  # groups
    big = 1 + int(np.sqrt(conv_dense.DENSE_MAX_ENTRIES)) // 4  # channels: T too large
    assert not conv_dense.applies((2, big, 2, 2), (big, big, 3, 3), *one, 1)
    assert conv_dense.applies((2, big - 1, 2, 2), (big - 1, big - 1, 3, 3), *one, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", DENSE_CASES)
def test_matches_pytorch(case, dtype):
    *dims, stride, pad, dil, groups = case
    conv_data = conv_case(*dims, stride, pad, dil, groups, True, dtype, seed=3)
    run_conv(conv_data, stride, pad, dil, groups, dtype, algorithm="dense")


def test_a_tap_no_pixel_pair_reads_gets_a_zero_gradient():
    """7x7 pad 3 on a 2x2 map reads through its central 3x3 only: the other taps' gradient is
    zero (forced: the dispatch would crop them first)."""
    case = conv_case(2, 3, 2, 2, 4, 7, 7, (1, 1), (3, 3), (1, 1), 1, False, np.float64)
    x, w, _, _, gy, _, gw_ref = case
    gw = np.full(w.shape, np.nan)
    conv.conv2d_backward_weight(x, gy, gw, 1, 1, 3, 3, 1, 1, 1, algorithm="dense")
    assert_close(gw, gw_ref, np.float64)
    assert not gw[:, :, 0].any() and gw[:, :, 2:5, 2:5].all()


@pytest.mark.parametrize("kind, operand", NONFINITE_OPERANDS)
def test_nan_and_inf_as_im2col(kind, operand):
    """im2col multiplies padding zeros by the weights (forward) and by the output gradient
    (weight gradient), which dense does not: it falls back to im2col there."""
    shape = (4, 5, 2, 2, 6, 3, 3, (1, 1), (1, 1), (1, 1), 1)
    assert_nonfinite_as_im2col(shape, kind, operand, "dense")


def test_dispatch_picks_dense_from_its_batch_on():
    choose = conv.choose_algorithm
    one = ((1, 1), (1, 1), (1, 1), 1)
    layer3 = ((64, 256, 2, 2), (256, 256, 3, 3))  # `numbagrad train resnet18`, batch 64
    assert {choose(kd, *layer3, *one) for kd in CONV_KINDS} == {"dense"}
    small = ((conv_choice.DENSE_MIN_BATCH - 1, 256, 2, 2), (256, 256, 3, 3))
    assert "dense" not in {choose(kd, *small, *one) for kd in CONV_KINDS}
    c5 = ((64, 16, 5, 5), (120, 16, 5, 5))  # full_window's single GEMM, no matrix to build
    assert choose("forward", *c5, (1, 1), (0, 0), (1, 1), 1) == "full_window"
