"""CUDA lowering of the spatial ops (``graph/ops/spatial.py``, ``graph/ops/lrn.py``), as on the
CPU backend (``backends/cpu/lower_spatial.py``).

``conv_transpose2d`` runs the implicit-GEMM grad-input plan of conv2d. The rest are grid-stride
kernels, one thread per output element, and *gathers* where the CPU scatters (unpooling's and
upsampling's gradients, LRN's), so no atomics: the upsampling gradient visits the few outputs
whose taps can reach its element. Only max unpooling scatters (after a zero fill); indices that
repeat carry the same pooled value, and indices outside the plane are skipped (host-fed
indices are refused on the host).
"""

from __future__ import annotations

import math

import numpy as np

from ...graph.ops.spatial import _check_indices, interpolation_taps
from .lowering import _flat_launch, conv2d_grad_input, lowers, per_output_launch, pool_args
from .pool import _window_argmax, plane_position
from .runtime import grid_launcher, jit, load_cuda

cuda = load_cuda()  # a module global: the simulator swaps it for its fake inside kernels


# --- transposed convolution -----------------------------------------------------------------


# conv_transpose2d(x, w) is conv2d_grad_input(x, w): the same attributes, the same plan.
lowers("conv_transpose2d")(conv2d_grad_input)


# --- pooling indices and unpooling ----------------------------------------------------------


@jit(cache=True)
def max_pool_indices(x, out, nc, h, w, oh_, ow_, kh, kw, sh, sw, ph, pw, dh, dw):
    """out (N*C*OH*OW,) int64 = flat (H*W) index of each window's first maximum."""
    t = cuda.grid(1)
    step = cuda.gridsize(1)
    while t < nc * oh_ * ow_:
        plane, oh, ow = plane_position(t, oh_, ow_)
        out[t] = _window_argmax(x, plane * h * w, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw)
        t += step


@lowers("max_pool2d_indices")
def _max_pool2d_indices(node, graph):
    args = pool_args(node, graph[node.inputs[0]].shape, node.shape)
    return per_output_launch(max_pool_indices, node, args)


@jit(cache=True)
def fill_zero(out, total):
    t = cuda.grid(1)
    step = cuda.gridsize(1)
    while t < total:
        out[t] = 0
        t += step


@jit(cache=True)
def unpool_scatter(y, idx, out, m, plane, total):
    """out[(t // m) * plane + idx[t]] = y[t] for the y elements t < total (flat arrays)."""
    t = cuda.grid(1)
    step = cuda.gridsize(1)
    while t < total:
        k = idx[t]
        if 0 <= k < plane:
            out[(t // m) * plane + k] = y[t]
        t += step


@jit(cache=True)
def unpool_gather(g, idx, gy, m, plane, total):
    """gy[t] = g[(t // m) * plane + idx[t]] (0 for an index outside the plane)."""
    t = cuda.grid(1)
    step = cuda.gridsize(1)
    while t < total:
        k = idx[t]
        gy[t] = g[(t // m) * plane + k] if 0 <= k < plane else 0
        t += step


def _index_checks(plane: int) -> dict:
    return {1: lambda indices: _check_indices(indices, plane)}


@lowers("max_unpool2d")
def _max_unpool2d(node, graph):
    y = graph[node.inputs[0]].shape
    total, n_in, m, plane = (
        math.prod(node.shape),
        math.prod(y),
        y[2] * y[3],
        math.prod(node.shape[2:]),
    )
    zero, scatter = grid_launcher(fill_zero, total), grid_launcher(unpool_scatter, n_in)

    def run(ins, out):
        zero(out, total)
        scatter(ins[0], ins[1], out, m, plane, n_in)

    launch = _flat_launch(run)
    launch.host_checks = _index_checks(plane)
    return launch


@lowers("max_unpool2d_grad")
def _max_unpool2d_grad(node, graph):
    g = graph[node.inputs[0]].shape
    total, m, plane = math.prod(node.shape), node.shape[2] * node.shape[3], g[2] * g[3]
    launch = per_output_launch(unpool_gather, node, (m, plane, total))
    launch.host_checks = _index_checks(plane)
    return launch


# --- upsampling -----------------------------------------------------------------------------


@jit(device=True)
def _tap(k, o, i0, i1):
    return i0[o] if k == 0 else i1[o]


@jit(cache=True)
def upsample_forward(x, out, nc, h, w, oh_, ow_, hi0, hi1, hw0, hw1, wi0, wi1, ww0, ww1, nearest):
    """As torch: nearest copies its one tap; bilinear weighs each row's two columns, then the
    two rows (a zero weight on a NaN or Inf tap gives NaN there, as in torch)."""
    t = cuda.grid(1)
    step = cuda.gridsize(1)
    while t < nc * oh_ * ow_:
        plane, oh, ow = plane_position(t, oh_, ow_)
        base = plane * h * w
        r0, r1 = base + hi0[oh] * w, base + hi1[oh] * w
        j0, j1 = wi0[ow], wi1[ow]
        if nearest:
            out[t] = x[r0 + j0]
        else:
            top = x[r0 + j0] * ww0[ow] + x[r0 + j1] * ww1[ow]
            bottom = x[r1 + j0] * ww0[ow] + x[r1 + j1] * ww1[ow]
            out[t] = hw0[oh] * top + hw1[oh] * bottom
        t += step


@jit(cache=True)
def upsample_backward(
    g, gx, nc, h, w, oh_, ow_, sh, sw, hi0, hi1, hw0, hw1, wi0, wi1, ww0, ww1, nearest
):
    """gx = sum over the outputs within reach (rows within [(ih - 1) * sh, (ih + 2) * sh),
    likewise columns) of g times the weights of each of their taps that lands on the element:
    the CPU kernel's and torch's scatter, zero weights included, as a gather."""
    t = cuda.grid(1)
    step = cuda.gridsize(1)
    taps = 1 if nearest else 2
    while t < nc * h * w:
        plane, ih, iw = plane_position(t, h, w)
        acc = 0.0
        for oh in range(max(0, (ih - 1) * sh), min(oh_, (ih + 2) * sh)):
            row = (plane * oh_ + oh) * ow_
            for a in range(taps):
                if _tap(a, oh, hi0, hi1) == ih:
                    wa = _tap(a, oh, hw0, hw1)
                    for ow in range(max(0, (iw - 1) * sw), min(ow_, (iw + 2) * sw)):
                        for b in range(taps):
                            if _tap(b, ow, wi0, wi1) == iw:
                                acc += wa * _tap(b, ow, ww0, ww1) * g[row + ow]
        gx[t] = acc
        t += step


def _device_tables(node, x_shape) -> tuple:
    mode, (sh, sw) = node.attrs["mode"], node.attrs["scale"]
    taps = (*interpolation_taps(x_shape[2], sh, mode), *interpolation_taps(x_shape[3], sw, mode))
    return tuple(cuda.to_device(np.ascontiguousarray(a)) for a in taps)


@lowers("upsample2d")
def _upsample2d(node, graph):
    n, c, h, w = graph[node.inputs[0]].shape
    tables = _device_tables(node, (n, c, h, w))
    args = (n * c, h, w, *node.shape[2:], *tables, node.attrs["mode"] == "nearest")
    return per_output_launch(upsample_forward, node, args)


@lowers("upsample2d_grad")
def _upsample2d_grad(node, graph):
    n, c, h, w = node.shape
    tables = _device_tables(node, node.shape)
    args = (n * c, h, w, *graph[node.inputs[0]].shape[2:], *node.attrs["scale"], *tables)
    return per_output_launch(upsample_backward, node, (*args, node.attrs["mode"] == "nearest"))


# --- local response normalization -----------------------------------------------------------


@jit(device=True)
def _lrn_base(x, n, c, p, c_, p_, size, alpha, k):
    s = 0.0
    for q in range(max(0, c - size // 2), min(c_, c + (size - 1) // 2 + 1)):
        v = x[(n * c_ + q) * p_ + p]
        s += v * v
    return k + alpha / size * s


@jit(cache=True)
def lrn_forward(x, out, n_, c_, p_, size, alpha, beta, k):
    t = cuda.grid(1)
    step = cuda.gridsize(1)
    while t < n_ * c_ * p_:
        n, c, p = plane_position(t, c_, p_)
        out[t] = x[t] * math.pow(_lrn_base(x, n, c, p, c_, p_, size, alpha, k), -beta)
        t += step


@jit(cache=True)
def lrn_backward(g, x, gx, n_, c_, p_, size, alpha, beta, k):
    t = cuda.grid(1)
    step = cuda.gridsize(1)
    while t < n_ * c_ * p_:
        n, j, p = plane_position(t, c_, p_)
        acc = 0.0
        own = 0.0
        for c in range(max(0, j - (size - 1) // 2), min(c_, j + size // 2 + 1)):
            d = _lrn_base(x, n, c, p, c_, p_, size, alpha, k)
            i = (n * c_ + c) * p_ + p
            acc += g[i] * x[i] * math.pow(d, -beta - 1.0)
            if c == j:
                own = math.pow(d, -beta)
        gx[t] = g[t] * own - 2.0 * beta * alpha / size * x[t] * acc
        t += step


def _lrn_args(node) -> tuple:
    a, shape = node.attrs, node.shape
    return (shape[0], shape[1], math.prod(shape[2:]), a["size"], a["alpha"], a["beta"], a["k"])


@lowers("local_response_norm")
def _local_response_norm(node, graph):
    return per_output_launch(lrn_forward, node, _lrn_args(node))


@lowers("local_response_norm_grad")
def _local_response_norm_grad(node, graph):
    return per_output_launch(lrn_backward, node, _lrn_args(node))
