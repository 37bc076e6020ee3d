"""Shared by the CPU kernel tests: dtypes, tolerances, seeded generators, the comparison with a
reference and the conv cases checked against PyTorch."""

from __future__ import annotations

import numpy as np

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 2e-5, np.float64: 1e-12}


def assert_close(got, ref, dtype):
    ref = np.asarray(ref)
    scale = max(1.0, float(np.abs(ref).max())) if ref.size else 1.0
    np.testing.assert_allclose(got, ref, rtol=0, atol=TOL[dtype] * scale)


def seeded_rng(seed=0):
    return np.random.default_rng(seed)


CONV_KINDS = ("forward", "backward_input", "backward_weight")
# (kind, the operand a NaN or an infinity is planted in): each conv pass's two inputs
NONFINITE_OPERANDS = [
    (k, o) for k, ops in zip(CONV_KINDS, (("x", "w"), ("gy", "w"), ("x", "gy"))) for o in ops
]


def plant(a, values):
    """Write ``values`` into ``a`` at evenly spaced flat positions."""
    flat = a.reshape(-1)
    for j, v in enumerate(values):
        flat[(j * flat.size) // len(values)] = v


def conv_case(n, c, h, w, k, kh, kw, stride, pad, dil, groups, bias, dtype, seed=0):
    """(x, w, b, y, gy, gx, gw) of a random conv: PyTorch's forward and autograd gradients."""
    import torch

    F = torch.nn.functional
    rng = seeded_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c // groups, kh, kw)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype) if bias else np.empty(0, dtype)
    xt = torch.from_numpy(x).requires_grad_()
    wtt = torch.from_numpy(wt).requires_grad_()
    y = F.conv2d(xt, wtt, torch.from_numpy(b) if bias else None, stride, pad, dil, groups)
    gy = torch.from_numpy(rng.standard_normal(tuple(y.shape)).astype(dtype))
    y.backward(gy)
    return x, wt, b, y.detach().numpy(), gy.numpy(), xt.grad.numpy(), wtt.grad.numpy()


def conv_pass(kind, x, w, b, gy, args, algorithm=None, fill=np.nan):
    """The output of conv.py's entry point for ``kind`` (one of CONV_KINDS) on these operands,
    args = (*stride, *padding, *dilation, groups); the output starts filled with ``fill``."""
    from numbagrad.backends.cpu.kernels import conv

    if kind == "forward":
        out = np.full(gy.shape, fill, x.dtype)
        conv.conv2d_forward(x, w, b, out, *args, algorithm=algorithm)
    elif kind == "backward_input":
        out = np.full(x.shape, fill, x.dtype)
        conv.conv2d_backward_input(gy, w, out, *args, algorithm=algorithm)
    else:
        out = np.full(w.shape, fill, x.dtype)
        conv.conv2d_backward_weight(x, gy, out, *args, algorithm=algorithm)
    return out


def run_conv(case, stride, pad, dil, groups, dtype, algorithm=None, kinds=None):
    """conv.py's entry points (``kinds`` of them, all by default) on a conv_case, against it;
    the outputs start as NaN, so an output a kernel never writes fails."""
    x, w, b, y, gy, gx_ref, gw_ref = case
    args = (*stride, *pad, *dil, groups)
    refs = dict(zip(CONV_KINDS, (y, gx_ref, gw_ref)))
    for kind in kinds or CONV_KINDS:
        assert_close(conv_pass(kind, x, w, b, gy, args, algorithm), refs[kind], dtype)


def assert_nonfinite_as_im2col(shape, kind, operand, algorithm):
    """With NaN and infinities planted in ``operand`` ("x", "w" or "gy") of a conv of
    ``shape`` (test_cpu_kernels.CONV_CASES' tuple), ``algorithm`` puts them where im2col does
    (whose results match PyTorch's: test_nonfinite_torch.py)."""
    *dims, stride, pad, dil, groups = shape
    x, w, b, _, gy, _, _ = conv_case(*dims, stride, pad, dil, groups, True, np.float32)
    plant({"x": x, "w": w, "gy": gy}[operand], (np.inf, np.nan, -np.inf))
    args = (*stride, *pad, *dil, groups)
    got, ref = (conv_pass(kind, x, w, b, gy, args, a, 7.0) for a in (algorithm, "im2col"))
    assert np.isnan(ref).any() or np.isinf(ref).any()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4, equal_nan=True)
