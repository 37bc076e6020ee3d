"""The hand-written Numba CPU kernels against PyTorch (forward with torch.nn.functional, backward
with autograd)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
F = torch.nn.functional

from kernel_checks import DTYPES, assert_close, conv_case, run_conv, seeded_rng  # noqa: E402

from numbagrad.backends.cpu.kernels import (  # noqa: E402
    conv,
    conv_chunks,
    conv_direct,
    conv_gemm,
    linalg,
    reduce,
)

pytestmark = pytest.mark.torch

# ---------------------------------------------------------------------------- conv


# (n, c, h, w, k, kh, kw, stride, padding, dilation, groups)
CONV_CASES = [
    (2, 3, 9, 7, 4, 3, 2, (1, 1), (1, 0), (1, 1), 1),  # non-square input and kernel, padding
    (1, 4, 8, 10, 6, 2, 3, (2, 1), (0, 1), (2, 1), 2),  # batch 1, stride 2, dilation 2, groups 2
    (3, 2, 11, 11, 4, 5, 5, (1, 1), (2, 2), (2, 2), 2),  # dilation 2 both ways, groups 2
    (2, 6, 5, 5, 8, 5, 5, (1, 1), (0, 0), (1, 1), 1),  # full window (LeNet C5 style)
    (2, 4, 6, 5, 6, 1, 1, (1, 1), (0, 0), (1, 1), 2),  # 1x1 as GEMM, groups
    (2, 4, 6, 5, 6, 1, 1, (2, 2), (1, 0), (1, 1), 1),  # strided, padded 1x1
    (1, 3, 7, 7, 5, 3, 3, (3, 2), (1, 1), (1, 1), 1),  # stride 3x2
    (2, 2, 5, 6, 3, 3, 3, (1, 1), (2, 1), (1, 1), 1),  # padding as large as the kernel extent
    (2, 1, 4, 4, 3, 1, 1, (1, 1), (1, 1), (1, 1), 1),  # padded 1x1: backward crops the padding
    (2, 1, 12, 12, 6, 5, 5, (1, 1), (0, 0), (1, 1), 1),  # LeNet C1 style
    (2, 6, 7, 7, 16, 5, 5, (1, 1), (0, 0), (1, 1), 1),  # LeNet C3 style
    (1, 2, 9, 9, 2, 7, 7, (1, 1), (3, 3), (1, 1), 1),  # 7 taps: five + two fused
    (1, 10, 6, 5, 3, 5, 3, (1, 1), (2, 1), (1, 1), 1),  # direct weight gradient: 2 channel blocks
    # taps that only read padding (conv_taps.py): the kernel is cropped to the live ones
    (3, 4, 1, 1, 5, 3, 3, (1, 1), (1, 1), (1, 1), 1),  # 1x1 map: a 1x1 conv (ResNet layer4)
    (2, 4, 2, 2, 6, 3, 3, (2, 2), (1, 1), (1, 1), 1),  # stride 2 on 2x2: a 2x2 full window
    (2, 4, 1, 3, 4, 3, 3, (1, 1), (1, 1), (1, 1), 2),  # 1x3 map, groups: rows cropped only
    (2, 2, 2, 2, 3, 3, 3, (1, 1), (2, 2), (2, 2), 1),  # dilation 2: the centre tap only
    # every output pixel reads every input pixel: one GEMM with the conv's matrix (conv_dense.py)
    (2, 3, 2, 2, 5, 3, 3, (1, 1), (1, 1), (1, 1), 1),  # 3x3 on a 2x2 map
    (32, 2, 2, 3, 3, 3, 5, (1, 1), (1, 2), (1, 1), 1),  # the batch from which it is picked
    # im2col/col2im over the stride's phases (conv_phases.py): output = input / stride
    (2, 3, 8, 6, 4, 3, 3, (2, 2), (1, 1), (1, 1), 1),  # ResNet's stride-2 3x3
    (1, 2, 12, 12, 3, 7, 7, (2, 2), (3, 3), (1, 1), 1),  # the ImageNet stem's 7x7
    (2, 4, 6, 6, 4, 1, 1, (2, 2), (0, 0), (1, 1), 2),  # the downsampling 1x1, groups
    (2, 2, 9, 9, 3, 3, 3, (3, 3), (2, 2), (2, 2), 1),  # stride 3, dilation 2
    (1, 2, 6, 8, 3, 5, 3, (1, 1), (2, 1), (1, 1), 1),  # stride 1 "same" conv
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", CONV_CASES)
def test_conv_dispatch(shape, bias, dtype):
    *dims, stride, pad, dil, groups = shape
    case = conv_case(*dims, stride, pad, dil, groups, bias, dtype)
    run_conv(case, stride, pad, dil, groups, dtype)


def _applicable(algo, kind, shape):
    n, c, h, w, k, kh, kw, stride, pad, dil, groups = shape
    return algo in conv.applicable_algorithms(
        kind, (n, c, h, w), (k, c // groups, kh, kw), stride, pad, dil, groups
    )


@pytest.mark.parametrize("algo", conv.ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_every_algorithm(algo, dtype):
    """Each algorithm on every case it applies to, whatever the dispatch would pick."""
    ran = 0
    for i, shape in enumerate(CONV_CASES):
        *dims, stride, pad, dil, groups = shape
        kinds = [
            kd
            for kd in ("forward", "backward_input", "backward_weight")
            if _applicable(algo, kd, shape)
        ]
        if kinds:
            case = conv_case(*dims, stride, pad, dil, groups, i % 2 == 0, dtype, seed=i)
            run_conv(case, stride, pad, dil, groups, dtype, algorithm=algo, kinds=kinds)
            ran += 1
    assert ran >= 1


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 8, 8, 40, 3, 3, 1), (2, 4, 6, 7, 64, 3, 3, 2)])
def test_im2col_weight_gradient_of_short_kernel_rows(shape, dtype):
    """C/g*KH*KW under the packed GEMM's column block, K/g not (the CIFAR stem's 3 x 9 taps by
    64 channels): where OWN_GEMM the GEMMs run transposed (conv_gemm.transposed_weight_grad)."""
    *dims, groups = shape
    args = ((1, 1), (1, 1), (1, 1), groups)
    case = conv_case(*dims, *args, False, dtype, seed=7)
    run_conv(case, *args, dtype, algorithm="im2col", kinds=["backward_weight"])


def test_direct_weight_gradient_writes_every_output():
    """A finite sentinel, not NaN, in the output: a NaN left by a skipped output would send
    conv2d_backward_weight to its GEMM fallback and hide the miss (two channel blocks, groups)."""
    shape = (2, 20, 6, 5, 4, 5, 3, (1, 1), (2, 1), (1, 1), 2)
    *dims, stride, pad, dil, groups = shape
    x, w, _, _, gy, _, gw_ref = conv_case(*dims, stride, pad, dil, groups, False, np.float64)
    gw = np.full(w.shape, 7.0)
    conv.conv2d_backward_weight(x, gy, gw, *stride, *pad, *dil, groups, algorithm="direct")
    assert_close(gw, gw_ref, np.float64)


@pytest.mark.parametrize(
    "shape", [(5, 3, 8, 8, 4, 3, 3, 2, 1), (3, 2, 6, 6, 3, 5, 5, 1, 2), (4, 3, 8, 8, 5, 1, 1, 2, 0)]
)
def test_conv_im2col_in_per_thread_chunks_of_one_image(shape, monkeypatch):
    """conv_chunks' path (each thread several chunks, some threads none) against torch."""
    n, c, h, w, k, kh, kw, s, p = shape
    assert conv_chunks.pays((n, c, h, w), (k, c, kh, kw), (h // s, w // s), (s, s), 1)
    monkeypatch.setattr(conv_chunks, "CHUNK_BYTES", 1)
    for dtype in DTYPES:
        case = conv_case(n, c, h, w, k, kh, kw, (s, s), (p, p), (1, 1), 1, True, dtype)
        run_conv(case, (s, s), (p, p), (1, 1), 1, dtype, algorithm="im2col")


@pytest.mark.parametrize(
    "shape",
    [
        (3, 4, 8, 8, 6, 1, 1, (2, 2), (0, 0), (1, 1), 1),  # 1x1 stride 2 through phase planes
        (3, 2, 8, 6, 4, 3, 3, (2, 2), (1, 1), (1, 1), 2),  # 3x3 stride 2, groups, phases
        (3, 3, 7, 7, 5, 3, 3, (1, 1), (1, 1), (1, 1), 1),  # stride 1 "same"
        (3, 2, 9, 7, 4, 3, 2, (2, 1), (1, 0), (1, 1), 1),  # row-by-row im2col
    ],
)
def test_im2col_in_chunks_of_one_image(shape, monkeypatch):
    """A scratch budget of one byte: every chunk is one image (batch 128 runs in chunks), in
    conv_gemm's sequential chunks and in conv_chunks' per-thread ones alike."""
    monkeypatch.setattr(conv, "IM2COL_BYTES", 1)
    monkeypatch.setattr(conv_chunks, "CHUNK_BYTES", 1)
    *dims, stride, pad, dil, groups = shape
    case = conv_case(*dims, stride, pad, dil, groups, True, np.float64)
    run_conv(case, stride, pad, dil, groups, np.float64, algorithm="im2col")


def test_conv_rejects_bad_input():
    x = np.zeros((1, 2, 5, 5), np.float32)
    w = np.zeros((3, 2, 3, 3), np.float32)
    out = np.zeros((1, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match="does not apply"):
        conv.conv2d_forward(
            x, w, np.empty(0, np.float32), out, 2, 2, 0, 0, 1, 1, 1, algorithm="direct"
        )
    with pytest.raises(ValueError, match="one dtype"):
        conv.conv2d_forward(
            x, w.astype(np.float64), np.empty(0, np.float32), out, 1, 1, 0, 0, 1, 1, 1
        )
    with pytest.raises(ValueError, match="C-contiguous"):
        conv.conv2d_forward(
            x, w, np.empty(0, np.float32), out.transpose(0, 1, 3, 2), 1, 1, 0, 0, 1, 1, 1
        )


@pytest.mark.parametrize(
    "top, left, hp, wp",
    [(1, 1, 7, 8), (0, 0, 5, 6), (-1, -2, 3, 3), (2, 9, 6, 4), (7, 0, 5, 6), (0, -7, 5, 6)],
)
def test_pad_flat_places_and_crops_like_numpy(top, left, hp, wp):
    """Every element of the planes is written: x where it lands inside, zeros elsewhere and in
    the tail past hp*wp (offsets past the plane: all zeros)."""
    x = seeded_rng(3).standard_normal((2, 3, 5, 6)).astype(np.float32)
    xf = np.full((2, 3, hp * wp + 5), np.nan, np.float32)
    conv_direct.pad_flat(x, xf, top, left, hp, wp)
    m = 16  # spare canvas each side, past any offset above
    canvas = np.zeros((2, 3, hp + 2 * m, wp + 2 * m), np.float32)
    canvas[:, :, m + top : m + top + 5, m + left : m + left + 6] = x
    ref = canvas[:, :, m : m + hp, m : m + wp].reshape(2, 3, hp * wp)
    np.testing.assert_array_equal(xf[:, :, : hp * wp], ref)
    assert not xf[:, :, hp * wp :].any()


def test_conv_dispatch_choices():
    ch = conv.choose_algorithm
    c1 = ((64, 1, 32, 32), (6, 1, 5, 5))  # (its forward and LeNet's C3: test_conv_indirect.py)
    assert ch("backward_weight", *c1, (1, 1), (0, 0), (1, 1), 1) == "direct"
    stem = ((8, 3, 32, 32), (64, 3, 3, 3))  # (3-tap rows: the direct weight gradient wastes 2/5)
    assert ch("backward_weight", *stem, (1, 1), (1, 1), (1, 1), 1) == "im2col"
    c5 = ((64, 16, 5, 5), (120, 16, 5, 5))
    for kind in ("forward", "backward_input", "backward_weight"):
        assert ch(kind, *c5, (1, 1), (0, 0), (1, 1), 1) == "full_window"
    one = ((8, 64, 8, 8), (32, 64, 1, 1))
    assert ch("forward", *one, (1, 1), (0, 0), (1, 1), 1) == "gemm1x1"
    assert ch("forward", *one, (2, 2), (0, 0), (1, 1), 1) == "im2col"
    big = ((8, 256, 8, 8), (256, 256, 3, 3))
    for kind in ("forward", "backward_input", "backward_weight"):
        assert ch(kind, *big, (1, 1), (1, 1), (1, 1), 1) == "winograd"
        strided = "indirect" if kind == "forward" else "im2col"  # (4x4 outputs)
        assert ch(kind, *big, (2, 2), (1, 1), (1, 1), 1) == strided


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(1, 3),
    cg=st.integers(1, 3),
    kg=st.integers(1, 3),
    groups=st.integers(1, 2),
    h=st.integers(3, 9),
    w=st.integers(3, 9),
    kh=st.integers(1, 4),
    kw=st.integers(1, 4),
    stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    pad=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    dil=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    bias=st.booleans(),
)
def test_conv_hypothesis(n, cg, kg, groups, h, w, kh, kw, stride, pad, dil, bias):
    if dil[0] * (kh - 1) + 1 > h + 2 * pad[0] or dil[1] * (kw - 1) + 1 > w + 2 * pad[1]:
        return
    dtype = np.float64
    case = conv_case(
        n, cg * groups, h, w, kg * groups, kh, kw, stride, pad, dil, groups, bias, dtype
    )
    run_conv(case, stride, pad, dil, groups, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_backward_bias(dtype):
    gy = seeded_rng(1).standard_normal((3, 5, 7, 6)).astype(dtype)
    gb = np.empty(5, dtype)
    conv.conv2d_backward_bias(gy, gb)
    assert_close(gb, gy.sum(axis=(0, 2, 3), dtype=np.float64), dtype)


# ---------------------------------------------------------------------------- linalg


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_matmul(ta, tb, dtype):
    rng = seeded_rng(4)
    m, k, n = 7, 5, 3
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    out = np.full((m, n), np.nan, dtype)
    linalg.matmul(a, b, out, ta, tb)
    at, bt = torch.from_numpy(a), torch.from_numpy(b)
    assert_close(out, ((at.T if ta else at) @ (bt.T if tb else bt)).numpy(), dtype)
    a3 = np.stack([a, 2 * a, -a])
    b3 = np.stack([b, b, 3 * b])
    out3 = np.full((3, m, n), np.nan, dtype)
    linalg.batched_matmul(a3, b3, out3, ta, tb)
    ref = torch.from_numpy(a3).transpose(1, 2) if ta else torch.from_numpy(a3)
    ref = ref @ (torch.from_numpy(b3).transpose(1, 2) if tb else torch.from_numpy(b3))
    assert_close(out3, ref.numpy(), dtype)


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("trans_w", [False, True])
def test_group_matmul_per_image(groups, trans_w):
    """The 1x1 conv's GEMMs per image and group, with W_g transposed or not."""
    rng = seeded_rng(5)
    n, kg, cg, p = 2, 4, 5, 6
    w2 = rng.standard_normal((groups * kg, cg)).astype(np.float32)
    rows_in, rows_out = (groups * kg, groups * cg) if trans_w else (groups * cg, groups * kg)
    src = rng.standard_normal((n, rows_in, p)).astype(np.float32)
    dst = np.full((n, rows_out, p), np.nan, np.float32)
    linalg.group_matmul_per_image(w2, src, dst, groups, trans_w)
    w_g = w2.astype(np.float64).reshape(groups, kg, cg)
    if trans_w:
        w_g = w_g.transpose(0, 2, 1)
    src_g = src.astype(np.float64).reshape(n, groups, -1, p)
    expected = np.einsum("gij,ngjp->ngip", w_g, src_g).reshape(dst.shape)
    assert_close(dst, expected, np.float32)
    wt = linalg.transposed_groups(w2, groups)  # (the path taken where OWN_GEMM)
    assert wt.flags.c_contiguous
    np.testing.assert_array_equal(wt, np.concatenate([g.T for g in np.split(w2, groups)]))


def test_matmul_empty_inner():
    out = np.full((2, 3), np.nan, np.float32)
    linalg.matmul(np.empty((2, 0), np.float32), np.empty((0, 3), np.float32), out, False, False)
    assert (out == 0).all()


# ---------------------------------------------------------------------------- reductions

MIDDLE_SHAPES = [(3, 7, 1), (1, 37, 1), (2, 5, 4), (2, 3, 600), (1, 1, 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", MIDDLE_SHAPES)
def test_sum_max_middle(shape, dtype):
    x = seeded_rng(5).standard_normal(shape).astype(dtype)
    out = np.full((shape[0], shape[2]), np.nan, dtype)
    reduce.sum_middle(x, out)
    assert_close(out, torch.from_numpy(x).sum(1).numpy(), dtype)
    reduce.max_middle(x, out)
    assert_close(out, torch.from_numpy(x).amax(1).numpy(), dtype)


def test_max_middle_nan():
    x = np.array([[[1.0], [np.nan], [2.0]]], np.float32)
    out = np.zeros((1, 1), np.float32)
    reduce.max_middle(x, out)
    assert np.isnan(out[0, 0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", MIDDLE_SHAPES)
@pytest.mark.parametrize("log", [False, True])
def test_softmax_middle(shape, log, dtype):
    rng = seeded_rng(6)
    x = (5 * rng.standard_normal(shape)).astype(dtype)
    xt = torch.from_numpy(x).requires_grad_()
    y = F.log_softmax(xt, dim=1) if log else F.softmax(xt, dim=1)
    gy = torch.from_numpy(rng.standard_normal(shape).astype(dtype))
    y.backward(gy)
    out = np.full(shape, np.nan, dtype)
    (reduce.log_softmax_middle if log else reduce.softmax_middle)(x, out)
    assert_close(out, y.detach().numpy(), dtype)
    gx = np.full(shape, np.nan, dtype)
    backward = reduce.log_softmax_backward_middle if log else reduce.softmax_backward_middle
    backward(gy.numpy(), out, gx)
    assert_close(gx, xt.grad.numpy(), dtype)


def test_softmax_large_logits_stable():
    x = np.array([[[1000.0], [1001.0], [-1000.0]]], np.float32)
    out = np.empty_like(x)
    reduce.softmax_middle(x, out)
    assert np.isfinite(out).all()
    reduce.log_softmax_middle(x, out)
    assert np.isfinite(out).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,c", [(5, 10), (1, 3), (33, 17)])
def test_cross_entropy(n, c, dtype):
    rng = seeded_rng(7)
    logits = (3 * rng.standard_normal((n, c))).astype(dtype)
    targets = rng.integers(0, c, n).astype(np.int64)
    lt = torch.from_numpy(logits).requires_grad_()
    loss = F.cross_entropy(lt, torch.from_numpy(targets))
    loss.backward(torch.tensor(0.5, dtype=lt.dtype))
    out = np.full((), np.nan, dtype)
    reduce.cross_entropy_forward(logits, targets, out)
    assert_close(out, loss.detach().numpy(), dtype)
    gx = np.full((n, c), np.nan, dtype)
    reduce.cross_entropy_backward(logits, targets, np.array(0.5, dtype), gx)
    assert_close(gx, lt.grad.numpy(), dtype)


@pytest.mark.parametrize("bad", [-1, 4])
def test_cross_entropy_rejects_bad_targets(bad):
    logits = np.zeros((2, 4), np.float32)
    targets = np.array([0, bad], np.int64)
    with pytest.raises(ValueError, match="class index"):
        reduce.cross_entropy_forward(logits, targets, np.empty((), np.float32))
    with pytest.raises(ValueError, match="class index"):
        reduce.cross_entropy_backward(
            logits, targets, np.ones((), np.float32), np.empty_like(logits)
        )


# (C, KH, H, batch, stride, padding): 3x3 stride 1 and 2, 5x5, and the downsampling 1x1 on
# 2x2 planes (ResNet-18's last stage), small and at ResNet's sizes
COL2IM_CASES = [(3, 3, 7, 2, 1, 1), (2, 5, 9, 1, 1, 2), (4, 3, 8, 2, 2, 1), (5, 1, 2, 3, 2, 0),
                (64, 3, 16, 8, 1, 1), (256, 1, 2, 64, 2, 0)]  # fmt: skip


@pytest.mark.parametrize("build", ["serial", "parallel"])
@pytest.mark.parametrize("case", COL2IM_CASES)
def test_col2im_is_the_adjoint_of_im2col(case, build):
    """<im2col(x), cols> == <x, col2im(cols)>: col2im adds every column back where im2col
    read it, and overwrites the rest of gx with zeros."""
    c, k, h, n, s, p = case
    oh = (h + 2 * p - k) // s + 1
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, c, h, h))
    cols = rng.standard_normal((c * k * k, n * oh * oh))
    args = (0, n, k, k, s, s, p, p, 1, 1, oh, oh)
    gathered = np.empty_like(cols)
    getattr(conv_gemm.im2col, build)(x, gathered, *args)
    gx = np.full_like(x, np.nan)
    getattr(conv_gemm.col2im, build)(cols, gx, *args)
    assert np.isclose(np.vdot(gathered, cols), np.vdot(x, gx), rtol=1e-12)
