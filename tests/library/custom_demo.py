"""A library of custom ops written only against numbagrad's public API (what a user's module
would hold): an elementwise op, an opaque op with cpu and cuda kernels and a shape rule, a
custom_vjp composite, and a small model built from them. tests/library imports it by name, and
so does the fresh process that loads what they saved."""

from __future__ import annotations

import numba
import numpy as np
from numba import cuda

from numbagrad import functional as F
from numbagrad import library, nn


@library.custom_op("testlib::softsign", elementwise="{0} / (1.0 + abs({0}))")
def softsign(x):
    return x / (1 + np.abs(x))


@softsign.register_vjp
def _softsign_vjp(ctx, g):
    d = 1.0 + F.abs(ctx.input(0))
    return [g / (d * d)]


@library.custom_op("testlib::cumsum_last")
def cumsum_last(x, *, reverse=False):
    """Running sums along the last axis of a 2-d array (from the end when ``reverse``)."""
    y = np.cumsum(x[:, ::-1] if reverse else x, axis=1)
    return np.ascontiguousarray(y[:, ::-1] if reverse else y)


@cumsum_last.register_shape
def _cumsum_shape(x, *, reverse):
    return library.TensorType(x.shape, x.dtype)


@cumsum_last.register_vjp
def _cumsum_vjp(ctx, g):
    return [cumsum_last(g, reverse=not ctx.attrs["reverse"])]


@cumsum_last.register_kernel("cpu")
@numba.njit(cache=True)
def _cumsum_cpu(x, out, reverse):
    n = x.shape[1]
    for i in range(x.shape[0]):
        acc = x[i, 0] * 0.0
        for k in range(n):
            j = n - 1 - k if reverse else k
            acc += x[i, j]
            out[i, j] = acc


@cumsum_last.register_kernel("cuda")
@cuda.jit
def _cumsum_cuda(x, out, reverse):
    i = cuda.grid(1)  # one thread per row (the grid covers out.size threads)
    if i < x.shape[0]:
        n = x.shape[1]
        acc = x[i, 0] * 0.0
        for k in range(n):
            j = n - 1 - k if reverse else k
            acc += x[i, j]
            out[i, j] = acc


@library.custom_vjp(name="testlib::smooth_abs")
def smooth_abs(x, *, eps=1e-3):
    """sqrt(x^2 + eps): |x| made smooth at 0, its gradient read off the output."""
    return F.sqrt(x * x + eps)


@smooth_abs.register_vjp
def _smooth_abs_vjp(ctx, g):
    return [g * ctx.input(0) / ctx.output]


class DemoNet(nn.Module):
    """Linear -> softsign -> cumsum (reversed) -> smooth |.| -> Linear."""

    def __init__(self, dtype: str = "float32") -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6, dtype=dtype), nn.Linear(6, 3, dtype=dtype)

    def forward(self, x):
        h = cumsum_last(softsign(self.fc1(x)), reverse=True)
        return self.fc2(smooth_abs(h, eps=0.01))
