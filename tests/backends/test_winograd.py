"""Winograd convolution (backends/cpu/kernels/winograd*.py): each kind against the op
registry's NumPy references and against im2col on odd shapes, its float32 error against a
float64 direct result, and the NaN/Inf fallback. F(2x2, 3x3) runs only where the dispatch
never picks it, so its tests (a compilation of their own) are marked slow."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_checks import CONV_KINDS, NONFINITE_OPERANDS, conv_pass, plant

from numbagrad.backends.cpu.kernels import conv, winograd
from numbagrad.backends.cpu.threads import single_threaded_blas
from numbagrad.graph.ops import get_op

KINDS = CONV_KINDS
# (n, c, h, w, k, ph, pw): odd sizes (partial tiles at the edges), padding 0..2, asymmetric
# padding, batch 1, channel counts that are no multiple of the vector width; both schedules
CASES = [
    (2, 5, 9, 7, 3, 1, 1),  # "tiles": many tiles per output channel
    (1, 3, 5, 6, 7, 0, 2),  # "channels": few tiles, more output channels; batch 1
    (3, 4, 6, 5, 2, 2, 0),
    (1, 9, 3, 3, 11, 1, 1),  # one tile per image
]


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    with single_threaded_blas():  # as a CPU executable runs the kernels
        yield


def _arrays(n, c, h, w, k, ph, pw, dtype, seed=0):
    rng = np.random.default_rng(seed)
    oh, ow = h + 2 * ph - 2, w + 2 * pw - 2
    return (
        rng.standard_normal((n, c, h, w)).astype(dtype),
        rng.standard_normal((k, c, 3, 3)).astype(dtype),
        rng.standard_normal(k).astype(dtype),
        rng.standard_normal((n, k, oh, ow)).astype(dtype),
    )


def _run(kind, x, w, b, gy, ph, pw, algorithm):
    """The conv.py entry point of ``kind`` (stride 1, padding ph, pw) with ``algorithm``."""
    return conv_pass(kind, x, w, b, gy, (1, 1, ph, pw, 1, 1, 1), algorithm)


def _reference(kind, x, w, b, gy, ph, pw):
    """The op registry's NumPy definition of ``kind``."""
    attrs = {"stride": (1, 1), "padding": (ph, pw), "dilation": (1, 1), "groups": 1}
    if kind == "forward":
        return get_op("conv2d").reference(x, w, b, **attrs)
    if kind == "backward_input":
        return get_op("conv2d_grad_input").reference(gy, w, input_shape=x.shape, **attrs)
    return get_op("conv2d_grad_weight").reference(x, gy, weight_shape=w.shape, **attrs)


def _relative_error(got, ref):
    return float(np.abs(got - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", CASES)
def test_matches_reference_and_im2col(case, kind, dtype):
    n, c, h, w, k, ph, pw = case
    assert "winograd" in conv.applicable_algorithms(
        kind, (n, c, h, w), (k, c, 3, 3), (1, 1), (ph, pw), (1, 1), 1
    )
    arrays = _arrays(*case, dtype)
    got = _run(kind, *arrays, ph, pw, "winograd")
    reference = _reference(kind, *(a.astype(np.float64) for a in arrays), ph, pw)
    tol = 1e-5 if dtype == np.float32 else 1e-13  # of the largest value; see the error test
    assert _relative_error(got, reference) < tol
    assert _relative_error(got, _run(kind, *arrays, ph, pw, "im2col")) < 2 * tol


@pytest.mark.parametrize("kind", KINDS)
def test_channels_schedule_in_several_blocks(kind, monkeypatch):
    """Blocks of 2 output channels, the last one short, some threads with more blocks than
    others (the wide layers run several blocks per thread; the other cases have one)."""
    monkeypatch.setattr(winograd, "_channel_block", lambda cin, kout, least=16: 2)
    n, c, h, w, k, ph, pw = 1, 9, 3, 3, 11, 1, 1
    arrays = _arrays(n, c, h, w, k, ph, pw, np.float64)
    got = _run(kind, *arrays, ph, pw, "winograd")
    assert _relative_error(got, _reference(kind, *arrays, ph, pw)) < 1e-13


# From winograd.BLOCK_GEMM_MIN_DEPTH channels the convs' GEMMs run on the micro-kernel, and so
# do the weight gradient's of the channels schedule: the tiles schedule (n=8: 72 tiles) and
# the channels one (8 images of 4 tiles), the forward's depth the input channels, the input
# gradient's the output channels; rows and columns past the whole blocks go to BLAS.
DEEP_CASES = [(8, 130, 12, 12, 129, 1, 1), (8, 130, 8, 8, 136, 1, 1)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", DEEP_CASES)
def test_deep_layers_match_reference(case, kind, dtype):
    assert min(case[1], case[4]) >= winograd.BLOCK_GEMM_MIN_DEPTH
    arrays = _arrays(*case, dtype)
    got = _run(kind, *arrays, case[5], case[6], "winograd")
    reference = _reference(kind, *(a.astype(np.float64) for a in arrays), case[5], case[6])
    assert _relative_error(got, reference) < (1e-5 if dtype == np.float32 else 1e-13)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 3),
    c=st.integers(1, 6),
    k=st.integers(1, 6),
    h=st.integers(1, 11),
    w=st.integers(1, 11),
    ph=st.integers(0, 2),
    pw=st.integers(0, 2),
    kind=st.sampled_from(KINDS),
)
def test_any_shape_matches_reference(n, c, k, h, w, ph, pw, kind):
    if h + 2 * ph < 3 or w + 2 * pw < 3:  # no output
        return
    arrays = _arrays(n, c, h, w, k, ph, pw, np.float64)
    got = _run(kind, *arrays, ph, pw, "winograd")
    assert _relative_error(got, _reference(kind, *arrays, ph, pw)) < 1e-13


def _winograd(kind, x, w, b, gy, ph, pw, m):
    """Winograd F(m x m) itself (no fallback): the result, and whether it read only finite
    values."""
    if kind == "forward":
        out = np.empty(gy.shape, x.dtype)
        return out, winograd.conv(x, w, b, out, ph, pw, m=m)
    if kind == "backward_input":
        out = np.empty(x.shape, x.dtype)
        return out, winograd.conv(gy, w, b[:0], out, 2 - ph, 2 - pw, flip=True, m=m)
    out = np.empty(w.shape, x.dtype)
    return out, winograd.weight_grad(x, gy, out, ph, pw, m=m)


# The float32 error against float64 direct, measured on ResNet-18's 3x3 layers (batch 4, He
# initialised weights, normal inputs), as a fraction of the largest value of the result:
#                       64ch 32px  128ch 16px  256ch 8px  512ch 4px
#   im2col (direct)       5e-7        6e-7       6e-7       4e-7
#   F(2x2)                4e-7        9e-7       7e-7       9e-7
#   F(4x4)                1.6e-6      2.5e-6     2.7e-6     4.0e-6
# (F(4x4) at the usual points 0, +-1, +-2: up to 1.5e-5.) F(4x4) adds the rounding of its
# transforms, whose entries reach 97/36 and 27/8, to the direct sum's: a few float32 ulps of
# the partial sums, here ~5x the direct error. The bound leaves 2.5x headroom over the worst
# layer; a 64-channel layer measures ~1.5e-6.
ERROR_BOUND = {2: 2e-6, 4: 1e-5}


def _float32_errors(m):
    arrays = _arrays(2, 64, 8, 8, 64, 1, 1, np.float64, seed=3)
    arrays[1][:] *= np.sqrt(2 / (9 * 64))
    single = [a.astype(np.float32) for a in arrays]
    errors = {}
    for kind in KINDS:
        got, finite = _winograd(kind, *single, 1, 1, m)
        assert finite
        errors[kind] = _relative_error(got, _reference(kind, *arrays, 1, 1))
    return errors


def test_float32_error_of_f4x4_is_bounded():
    errors = _float32_errors(4)
    assert max(errors.values()) < ERROR_BOUND[4], errors


@pytest.mark.slow
def test_float32_error_of_f2x2_is_bounded():
    errors = _float32_errors(2)
    assert max(errors.values()) < ERROR_BOUND[2], errors


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", CASES)
def test_f2x2_matches_reference(case, kind):
    *_, ph, pw = case
    arrays = _arrays(*case, np.float64)
    got, finite = _winograd(kind, *arrays, ph, pw, 2)
    assert finite
    assert _relative_error(got, _reference(kind, *arrays, ph, pw)) < 1e-13


@pytest.mark.parametrize("kind, operand", NONFINITE_OPERANDS)
def test_nan_and_inf_fall_back_to_im2col(kind, operand):
    """A NaN or an infinity in an operand makes Winograd recompute with im2col (whose result,
    NaN and infinities included, matches PyTorch's: test_nonfinite_torch.py)."""
    x, w, b, gy = _arrays(2, 5, 9, 7, 4, 1, 1, np.float32)
    x, w = np.abs(x), np.abs(w)  # all positive: a +Inf input gives +Inf sums, not NaN...
    plant({"x": x, "w": w, "gy": gy}[operand], (np.inf, np.nan, np.inf))
    arrays = (x, w, b, gy)
    assert not _winograd(kind, *arrays, 1, 1, 4)[1]
    got = _run(kind, *arrays, 1, 1, "winograd")
    np.testing.assert_array_equal(got, _run(kind, *arrays, 1, 1, "im2col"))
    if operand == "x" and kind == "forward":
        assert np.isposinf(got).any()  # ...where Winograd's own sums (Inf - Inf) are NaN


def test_dispatch_picks_winograd_for_resnet_3x3_layers():
    choose = conv.choose_algorithm
    for c, hw in ((64, 32), (128, 16), (256, 8), (512, 4)):
        shapes = ((32, c, hw, hw), (c, c, 3, 3))
        for kind in KINDS:
            assert choose(kind, *shapes, (1, 1), (1, 1), (1, 1), 1) == "winograd"
            strided = choose(kind, *shapes, (2, 2), (1, 1), (1, 1), 1)  # (test_conv_indirect.py)
            assert strided in ("indirect", "im2col")
    for c, k, hw, n in ((4, 4, 16, 32), (16, 16, 32, 32)):  # here direct would be picked
        shapes = ((n, c, hw, hw), (k, c, 3, 3))
        assert {choose(kd, *shapes, (1, 1), (1, 1), (1, 1), 1) for kd in KINDS} == {"winograd"}
    for c, k, hw, n in ((3, 64, 32, 32), (256, 256, 2, 8), (512, 512, 1, 2)):  # 3 channels;
        shapes = ((n, c, hw, hw), (k, c, 3, 3))  # few tiles: filter transforms dominate
        assert "winograd" not in {choose(kd, *shapes, (1, 1), (1, 1), (1, 1), 1) for kd in KINDS}
    for stride, padding, dilation, groups, kernel in [
        ((1, 1), (3, 3), (1, 1), 1, 3),  # padding 3: the input gradient's would be -1
        ((1, 1), (1, 1), (2, 2), 1, 3),
        ((1, 1), (1, 1), (1, 1), 2, 3),
        ((1, 1), (2, 2), (1, 1), 1, 5),
    ]:
        shapes = ((2, 64, 8, 8), (64, 64 // groups, kernel, kernel))
        assert "winograd" not in conv.applicable_algorithms(
            "forward", *shapes, stride, padding, dilation, groups
        )
