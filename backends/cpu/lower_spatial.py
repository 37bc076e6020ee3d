"""CPU lowering of the spatial ops (``graph/ops/spatial.py``, ``graph/ops/lrn.py``).

``conv_transpose2d`` is conv2d's grad-input computation, so it runs the conv backward-input
kernels (and their per-shape algorithm choice); its VJP emits plain ``conv2d`` and
``conv2d_grad_weight``. Upsampling tables (source rows/columns and weights) are made once here,
at compile time, by the same function the NumPy reference uses.
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import ShapeError
from ...graph.ops.spatial import interpolation_taps
from ..lowering_common import pool_window_args
from .kernels import spatial as k
from .lowering import conv2d_grad_input, lowers

# conv_transpose2d(x, w) is conv2d_grad_input(x, w): the same attributes, the same kernels.
lowers("conv_transpose2d")(conv2d_grad_input)


@lowers("max_pool2d_indices")
def _max_pool2d_indices(node, graph):
    args = pool_window_args(node)
    return lambda inputs, out: k.max_pool2d_indices(inputs[0], out, *args)


def _refuse_bad_indices(bad: int, plane: tuple[int, int]) -> None:
    if bad:
        raise ShapeError(
            f"max_unpool2d: {bad} indices fall outside the {plane[0]}x{plane[1]} output plane"
        )


@lowers("max_unpool2d")
def _max_unpool2d(node, graph):
    plane = node.shape[2:]
    return lambda inputs, out: _refuse_bad_indices(k.max_unpool2d(*inputs, out), plane)


@lowers("max_unpool2d_grad")
def _max_unpool2d_grad(node, graph):
    plane = graph[node.inputs[0]].shape[2:]
    return lambda inputs, out: _refuse_bad_indices(k.max_unpool2d_grad(*inputs, out), plane)


def upsample_tables(node, x_shape) -> tuple:
    """(hi0, hi1, hw0, hw1, wi0, wi1, ww0, ww1, nearest) for x (N, C, H, W)."""
    mode, (sh, sw) = node.attrs["mode"], node.attrs["scale"]
    rows = interpolation_taps(x_shape[2], sh, mode)
    cols = interpolation_taps(x_shape[3], sw, mode)
    return (*rows, *cols, mode == "nearest")


@lowers("upsample2d")
def _upsample2d(node, graph):
    tables = upsample_tables(node, graph[node.inputs[0]].shape)
    return lambda inputs, out: k.upsample2d(inputs[0], out, *tables)


@lowers("upsample2d_grad")
def _upsample2d_grad(node, graph):
    tables = upsample_tables(node, node.shape)
    return lambda inputs, out: k.upsample2d_grad(inputs[0], out, *tables)


def lrn_view(shape) -> tuple[int, int, int]:
    return (shape[0], shape[1], math.prod(shape[2:]))


def lrn_args(node) -> tuple:
    a = node.attrs
    return (a["size"], a["alpha"], a["beta"], a["k"])


@lowers("local_response_norm")
def _local_response_norm(node, graph):
    view, args = lrn_view(node.shape), lrn_args(node)
    return lambda inputs, out: k.local_response_norm(
        inputs[0].reshape(view), out.reshape(view), *args
    )


@lowers("local_response_norm_grad")
def _local_response_norm_grad(node, graph):
    """Two passes through a scratch buffer made here, once: the per-channel terms, then each
    channel gathers its neighbours' (one pow per element instead of one per window tap)."""
    view, (size, alpha, beta, k_) = lrn_view(node.shape), lrn_args(node)
    scratch = np.empty(view, dtype=node.dtype)

    def launch(inputs, out):
        g, x, gx = inputs[0].reshape(view), inputs[1].reshape(view), out.reshape(view)
        k.local_response_norm_grad_terms(g, x, gx, scratch, size, alpha, beta, k_)
        k.local_response_norm_grad_gather(x, scratch, gx, size, alpha, beta)

    return launch
