"""Lowering graph nodes to Numba kernels: one entry per op (or op family).

Elementwise ops need no entry: their scalar expression from the op registry becomes a
generated kernel. An op with no lowering runs its NumPy reference (and says so).
"""

from __future__ import annotations

import math

import numpy as np

from ...graph import Graph, Node
from ...graph.ops.class_targets import check_class_indices
from ..executable import Launch
from ..interp import reference_launch
from ..lowering_common import (
    Lowering,
    around_axis,
    conv_args,
    lower_node,
    pool_window_args,
    registrar,
    shared_lowerings,
)
from .codegen import elementwise_launch, reduction_launch, transpose_launch
from .kernels import conv, linalg, pool, pool_pairs, reduce
from .kernels.random import dropout_launch

LOWERINGS: dict[str, Lowering] = shared_lowerings(reduction_launch, dropout_launch)
lowers = registrar(LOWERINGS)


def lower(node: Node, graph: Graph) -> tuple[Launch, str]:
    return lower_node(node, graph, LOWERINGS, elementwise_launch, reference_launch, "numba", "cpu")


@lowers("conv2d")
def _conv2d(node, graph):
    x, w = (graph[i].shape for i in node.inputs[:2])
    run = conv.forward_launch(x, w, node.shape, *conv_args(node))
    if len(node.inputs) == 3:
        return lambda inputs, out: run(inputs[0], inputs[1], inputs[2], out)
    no_bias = np.zeros(0, dtype=node.dtype)
    return lambda inputs, out: run(inputs[0], inputs[1], no_bias, out)


@lowers("conv2d_grad_input")
def conv2d_grad_input(node, graph):
    gy, w = (graph[i].shape for i in node.inputs[:2])
    run = conv.backward_input_launch(gy, w, node.shape, *conv_args(node))
    return lambda inputs, out: run(inputs[0], inputs[1], out)


@lowers("conv2d_grad_weight")
def _conv2d_grad_weight(node, graph):
    x, gy = (graph[i].shape for i in node.inputs[:2])
    run = conv.backward_weight_launch(x, gy, node.shape, *conv_args(node))
    return lambda inputs, out: run(inputs[0], inputs[1], out)


_POOL_KERNELS = {  # each called as kernel(*inputs, out, *pool_window_args(node))
    "max_pool2d": pool.max_pool2d_forward,
    "max_pool2d_grad": pool.max_pool2d_backward,
    "max_pool2d_taps": pool.max_pool2d_taps,
    "max_pool2d_grad_taps": pool.max_pool2d_grad_taps,
    "avg_pool2d": pool.avg_pool2d_forward,
    "avg_pool2d_grad": pool.avg_pool2d_backward,
}


_PAIR_KERNELS = {  # 2x2 stride-2 windows, where pool_pairs.applies: kernel(*inputs, out)
    "max_pool2d": pool_pairs.max_pool2d_pairs,
    "max_pool2d_taps": pool_pairs.max_pool2d_taps_pairs,
    "max_pool2d_grad_taps": pool_pairs.max_pool2d_grad_taps_pairs,
}


def _pairs_apply(node, graph) -> bool:
    if node.op not in _PAIR_KERNELS:
        return False
    pooled = node if node.op == "max_pool2d_grad_taps" else graph[node.inputs[0]]  # (its input)
    a = node.attrs
    return pool_pairs.applies(
        node.op, a["kernel"], a["stride"], a["padding"], a["dilation"], pooled.shape[2:]
    )


@lowers(*_POOL_KERNELS)
def _pool2d(node, graph):
    elements = max(node.size, *(graph[i].size for i in node.inputs))
    if _pairs_apply(node, graph):
        pair = _PAIR_KERNELS[node.op].for_size(elements)
        return lambda inputs, out: pair(*inputs, out)
    kernel, args = _POOL_KERNELS[node.op].for_size(elements), pool_window_args(node)
    return lambda inputs, out: kernel(*inputs, out, *args)


@lowers("matmul")
def _matmul(node, graph):
    ta, tb = node.attrs["trans_a"], node.attrs["trans_b"]
    kernel = linalg.matmul if len(node.shape) == 2 else linalg.batched_matmul
    return lambda inputs, out: kernel(inputs[0], inputs[1], out, ta, tb)


@lowers("transpose")
def _transpose(node, graph):
    return transpose_launch(node.attrs["perm"], math.prod(node.shape))


_AXIS_KERNELS = {
    "softmax": reduce.softmax_middle,
    "log_softmax": reduce.log_softmax_middle,
    "softmax_grad": reduce.softmax_backward_middle,
    "log_softmax_grad": reduce.log_softmax_backward_middle,
}


@lowers(*_AXIS_KERNELS)
def _along_axis(node, graph):
    view = around_axis(node.shape, node.attrs["axis"])
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
    classes, what, ignore = (node.attrs[k] for k in ("num_classes", "what", "ignore_index"))

    def launch(inputs, out):
        check_class_indices(inputs[0], classes, what, ignore)
        np.copyto(out, inputs[0])

    return launch
