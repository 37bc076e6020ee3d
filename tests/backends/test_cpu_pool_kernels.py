"""The Numba CPU pooling kernels against PyTorch (forward with torch.nn.functional, backward
with autograd), ties, NaN and infinities included."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from kernel_checks import DTYPES, assert_close, seeded_rng  # noqa: E402

from numbagrad.backends.cpu.kernels import pool, pool_pairs  # noqa: E402

pytestmark = pytest.mark.torch

# (n, c, h, w, kernel, stride, padding, dilation)
POOL_CASES = [
    (2, 3, 8, 8, (2, 2), (2, 2), (0, 0), (1, 1)),  # LeNet
    (1, 2, 9, 7, (2, 2), (2, 2), (0, 0), (1, 1)),  # 2x2 stride 2 on odd sizes (floor mode)
    (1, 2, 9, 7, (3, 3), (2, 2), (1, 1), (1, 1)),  # overlapping 3x3 stride 2, padded, batch 1
    (2, 2, 10, 9, (3, 2), (1, 2), (1, 0), (2, 1)),  # non-square, dilation 2, stride 1
    (1, 1, 7, 7, (3, 3), (2, 2), (0, 0), (1, 1)),  # AlexNet-style
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", POOL_CASES)
@pytest.mark.parametrize("ties", [False, True])
def test_max_pool(shape, ties, dtype):
    n, c, h, w, k, s, p, d = shape
    rng = seeded_rng(2)
    x = rng.integers(0, 3, (n, c, h, w)) if ties else rng.standard_normal((n, c, h, w))
    x = x.astype(dtype)
    xt = torch.from_numpy(x).requires_grad_()
    y = F.max_pool2d(xt, k, s, p, d)
    gy = torch.from_numpy(rng.standard_normal(tuple(y.shape)).astype(dtype))
    y.backward(gy)
    out = np.full(y.shape, np.nan, dtype)
    pool.max_pool2d_forward(x, out, *k, *s, *p, *d)
    assert_close(out, y.detach().numpy(), dtype)
    gx = np.full(x.shape, np.nan, dtype)
    pool.max_pool2d_backward(gy.numpy(), x, gx, *k, *s, *p, *d)
    assert_close(gx, xt.grad.numpy(), dtype)  # with ties: the first maximum gets the gradient
    taps = np.full(y.shape, 255, np.uint8)
    pool.max_pool2d_taps(x, taps, *k, *s, *p, *d)
    np.testing.assert_array_equal(taps, _torch_taps(xt.detach(), k, s, p, d))
    gx_taps = np.full(x.shape, np.nan, dtype)
    pool.max_pool2d_grad_taps(gy.numpy(), taps, gx_taps, *k, *s, *p, *d)
    assert_close(gx_taps, xt.grad.numpy(), dtype)
    if pool_pairs.applies("max_pool2d_grad_taps", k, s, p, d, (h, w)):
        gx_pairs = np.full(x.shape, np.nan, dtype)
        pool_pairs.max_pool2d_grad_taps_pairs(gy.numpy(), taps, gx_pairs)
        assert_close(gx_pairs, xt.grad.numpy(), dtype)
    _check_pair_kernels(x, shape, out, taps)


def _check_pair_kernels(x, shape, values, taps):
    """Where the window is 2x2 at stride 2, the pair kernels give the general ones' values (NaN
    where they have NaN) and taps."""
    *_, k, s, p, d = shape
    if not pool_pairs.applies("max_pool2d", k, s, p, d, x.shape[2:]):
        return
    out = np.zeros_like(values)
    pool_pairs.max_pool2d_pairs(x, out)
    np.testing.assert_array_equal(out, values)
    got = np.full_like(taps, 255)
    pool_pairs.max_pool2d_taps_pairs(x, got)
    np.testing.assert_array_equal(got, taps)


def _torch_taps(x, k, s, p, d):
    """The row-major window tap i * KW + j of torch's max-pool argmax (its flat index)."""
    _, idx = F.max_pool2d(x, k, s, p, d, return_indices=True)
    oh, ow = np.meshgrid(range(idx.shape[2]), range(idx.shape[3]), indexing="ij")
    ih, iw = np.divmod(idx.numpy(), x.shape[3])
    i, j = (ih - (oh * s[0] - p[0])) // d[0], (iw - (ow * s[1] - p[1])) // d[1]
    return (i * k[1] + j).astype(np.uint8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", POOL_CASES)
def test_max_pool_on_nan_and_inf(shape, dtype):
    """Values and taps as torch's: the last NaN of a window, else its first maximum (ties,
    infinities)."""
    n, c, h, w, k, s, p, d = shape
    x = (
        seeded_rng(5)
        .choice([np.nan, -np.inf, np.inf, 0.0, 1.0], (n, c, h, w), p=[0.1, 0.2, 0.1, 0.3, 0.3])
        .astype(dtype)
    )
    y = F.max_pool2d(torch.from_numpy(x), k, s, p, d).numpy()
    out = np.zeros(y.shape, dtype)
    pool.max_pool2d_forward(x, out, *k, *s, *p, *d)
    np.testing.assert_array_equal(out, y)  # (NaN where torch has NaN)
    taps = np.full(y.shape, 255, np.uint8)
    pool.max_pool2d_taps(x, taps, *k, *s, *p, *d)
    np.testing.assert_array_equal(taps, _torch_taps(torch.from_numpy(x), k, s, p, d))
    _check_pair_kernels(x, shape, out, taps)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", POOL_CASES)
@pytest.mark.parametrize("include_pad", [True, False])
def test_avg_pool(shape, include_pad, dtype):
    n, c, h, w, k, s, p, _ = shape
    rng = seeded_rng(3)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    xt = torch.from_numpy(x).requires_grad_()
    y = F.avg_pool2d(xt, k, s, p, count_include_pad=include_pad)
    gy = torch.from_numpy(rng.standard_normal(tuple(y.shape)).astype(dtype))
    y.backward(gy)
    out = np.full(y.shape, np.nan, dtype)
    pool.avg_pool2d_forward(x, out, *k, *s, *p, include_pad)
    assert_close(out, y.detach().numpy(), dtype)
    gx = np.full(x.shape, np.nan, dtype)
    pool.avg_pool2d_backward(gy.numpy(), gx, *k, *s, *p, include_pad)
    assert_close(gx, xt.grad.numpy(), dtype)
