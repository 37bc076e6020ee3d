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


def run_conv(case, stride, pad, dil, groups, dtype, algorithm=None, kinds=None):
    """conv.py's entry points (``kinds`` of them, all by default) on a conv_case, against it;
    the outputs start as NaN, so an output a kernel never writes fails."""
    from numbagrad.backends.cpu.kernels import conv

    x, w, b, y, gy, gx_ref, gw_ref = case
    args = (*stride, *pad, *dil, groups)
    kinds = kinds or ("forward", "backward_input", "backward_weight")
    if "forward" in kinds:
        out = np.full(y.shape, np.nan, dtype)
        conv.conv2d_forward(x, w, b, out, *args, algorithm=algorithm)
        assert_close(out, y, dtype)
    if "backward_input" in kinds:
        gx = np.full(x.shape, np.nan, dtype)
        conv.conv2d_backward_input(gy, w, gx, *args, algorithm=algorithm)
        assert_close(gx, gx_ref, dtype)
    if "backward_weight" in kinds:
        gw = np.full(w.shape, np.nan, dtype)
        conv.conv2d_backward_weight(x, gy, gw, *args, algorithm=algorithm)
        assert_close(gw, gw_ref, dtype)
