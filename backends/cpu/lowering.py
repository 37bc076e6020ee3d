"""Lowering graph nodes to Numba kernels: one entry per op (or op family).

Elementwise ops need no entry: their scalar expression from the op registry becomes a
generated kernel. An op with no lowering runs its NumPy reference (and says so).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ...graph import Graph, Node
from ...graph.ops import get_op, scalar_expression
from ...graph.ops.loss import check_class_indices
from ..executable import Launch
from ..interp import reference_launch
from .codegen import elementwise_launch, reduction_launch, transpose_launch
from .kernels import conv, linalg, pool, reduce
from .kernels.random import dropout_launch

LOWERINGS: dict[str, Callable[[Node, Graph], Launch]] = {}


def lowers(*ops: str):
    """Register a lowering for the named ops."""

    def register(fn):
        for op in ops:
            LOWERINGS[op] = fn
        return fn

    return register


def lower(node: Node, graph: Graph) -> tuple[Launch, str]:
    if node.op in LOWERINGS:
        return LOWERINGS[node.op](node, graph), "numba"
    if get_op(node.op).category == "elementwise":
        expr = scalar_expression(node.op, node.attrs, len(node.inputs))
        return elementwise_launch(expr, [graph[i].shape for i in node.inputs], node.shape), "numba"
    return reference_launch(node), "reference"


def _window_args(node: Node) -> tuple[int, ...]:
    a = node.attrs
    return (*a["stride"], *a["padding"], *a["dilation"], a["groups"])


@lowers("conv2d")
def _conv2d(node, graph):
    args = _window_args(node)
    no_bias = np.zeros(0, dtype=node.dtype)

    def launch(inputs, out):
        x, w = inputs[:2]
        conv.conv2d_forward(x, w, inputs[2] if len(inputs) == 3 else no_bias, out, *args)

    return launch


@lowers("conv2d_grad_input")
def _conv2d_grad_input(node, graph):
    args = _window_args(node)
    return lambda inputs, out: conv.conv2d_backward_input(inputs[0], inputs[1], out, *args)


@lowers("conv2d_grad_weight")
def _conv2d_grad_weight(node, graph):
    args = _window_args(node)
    return lambda inputs, out: conv.conv2d_backward_weight(inputs[0], inputs[1], out, *args)


def _pool_args(node: Node) -> tuple:
    a = node.attrs
    extra = (a["count_include_pad"],) if "count_include_pad" in a else a["dilation"]
    return (*a["kernel"], *a["stride"], *a["padding"], *extra)


@lowers("max_pool2d")
def _max_pool2d(node, graph):
    args = _pool_args(node)
    return lambda inputs, out: pool.max_pool2d_forward(inputs[0], out, *args)


@lowers("max_pool2d_grad")
def _max_pool2d_grad(node, graph):
    args = _pool_args(node)
    return lambda inputs, out: pool.max_pool2d_backward(inputs[0], inputs[1], out, *args)


@lowers("avg_pool2d")
def _avg_pool2d(node, graph):
    args = _pool_args(node)
    return lambda inputs, out: pool.avg_pool2d_forward(inputs[0], out, *args)


@lowers("avg_pool2d_grad")
def _avg_pool2d_grad(node, graph):
    args = _pool_args(node)
    return lambda inputs, out: pool.avg_pool2d_backward(inputs[0], out, *args)


@lowers("matmul")
def _matmul(node, graph):
    ta, tb = node.attrs["trans_a"], node.attrs["trans_b"]
    kernel = linalg.matmul if len(node.shape) == 2 else linalg.batched_matmul
    return lambda inputs, out: kernel(inputs[0], inputs[1], out, ta, tb)


@lowers("sum", "mean")
def _sum_mean(node, graph):
    x = graph[node.inputs[0]]
    return reduction_launch("a0", 1, x.shape, node.attrs["axes"], node.op == "mean")


@lowers("dropout")
def _dropout(node, graph):
    return dropout_launch(node)


@lowers("mse_loss")
def _mse_loss(node, graph):
    shape = graph[node.inputs[0]].shape
    return reduction_launch("(a0 - a1) * (a0 - a1)", 2, shape, range(len(shape)), mean=True)


@lowers("transpose")
def _transpose(node, graph):
    return transpose_launch(node.attrs["perm"], math.prod(node.shape))


def _around_axis(shape: tuple[int, ...], axis: int) -> tuple[int, int, int]:
    """View an array as (outer, shape[axis], inner) so axis-wise kernels see one layout."""
    return (math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1 :]))


_AXIS_KERNELS = {
    "softmax": reduce.softmax_middle,
    "log_softmax": reduce.log_softmax_middle,
    "softmax_grad": reduce.softmax_backward_middle,
    "log_softmax_grad": reduce.log_softmax_backward_middle,
}


@lowers(*_AXIS_KERNELS)
def _along_axis(node, graph):
    view = _around_axis(node.shape, node.attrs["axis"])
    kernel = _AXIS_KERNELS[node.op]

    def launch(inputs, out):
        kernel(*[a.reshape(view) for a in inputs], out.reshape(view))

    return launch


@lowers("cross_entropy")
def _cross_entropy(node, graph):
    def launch(inputs, out):
        logits, targets = inputs
        check_class_indices(targets, logits.shape[1])
        reduce.cross_entropy_forward(logits, targets, out)

    return launch


@lowers("cross_entropy_grad")
def _cross_entropy_grad(node, graph):
    def launch(inputs, out):
        logits, targets, g = inputs
        check_class_indices(targets, logits.shape[1])
        reduce.cross_entropy_backward(logits, targets, g, out)

    return launch


@lowers("class_indices")
def _class_indices(node, graph):
    classes, what = node.attrs["num_classes"], node.attrs["what"]

    def launch(inputs, out):
        check_class_indices(inputs[0], classes, what)
        np.copyto(out, inputs[0])

    return launch
