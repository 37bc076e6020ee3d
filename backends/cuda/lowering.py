"""Lowering graph nodes to CUDA kernels: one entry per op (or op family), as on the CPU.

A lowering returns a ``Launch(inputs, out)`` over device arrays; plans (tiles, splits,
workspaces, offset tables) are made here, once, at compile time. Elementwise ops (and
``fused_elementwise`` groups, whose template is per node) need no entry: their scalar
template becomes a generated kernel. An op with no lowering runs its NumPy reference on the
host, its operands copied down and its result up (the profile says "reference").
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ...graph import Graph, Node
from ...graph.ops import get_op
from ...graph.ops.class_targets import check_class_indices
from ..executable import Launch
from ..lowering_common import (
    Lowering,
    around_axis,
    lower_node,
    pool_window_args,
    registrar,
    shared_lowerings,
)
from . import conv, pool, reduce
from .codegen import elementwise_launch, prepared, reduction_launch, transpose_launch
from .gemm import matmul_gemm
from .random import dropout_launch
from .runtime import blocks_for, flat, grid_launcher, launcher, load_cuda, pow2_threads, sm_count

LOWERINGS: dict[str, Lowering] = shared_lowerings(reduction_launch, dropout_launch)
lowers = registrar(LOWERINGS)
ROW_PER_BLOCK = 32  # rows longer than this get a block each, shorter ones a thread


def lower(node: Node, graph: Graph) -> tuple[Launch, str]:
    return lower_node(
        node, graph, LOWERINGS, elementwise_launch, host_reference_launch, "cuda", "cuda"
    )


def host_reference_launch(node: Node) -> Launch:
    """Run the op's NumPy reference on the host: operands down, result up."""
    reference, attrs = get_op(node.op).reference, dict(node.attrs)

    def launch(inputs, out) -> None:
        result = reference(*[a.copy_to_host() for a in inputs], **attrs)
        out.copy_to_device(np.ascontiguousarray(result, dtype=out.dtype).reshape(out.shape))

    launch.impl = "reference"
    return launch


def _flat_launch(run: Callable) -> Launch:
    """A launch over 1-d views of its buffers: ``run(flat_inputs, flat_out)``."""

    def prepare(inputs, out):
        ins, o = [flat(a) for a in inputs], flat(out)
        return lambda: run(ins, o)

    return prepared(prepare)


def per_output_launch(kernel, node: Node, args: tuple) -> Launch:
    """``kernel(*inputs, out, *args)`` over flat views, a grid-stride loop over the node's
    output elements."""
    configured = grid_launcher(kernel, math.prod(node.shape))
    return _flat_launch(lambda ins, out: configured(*ins, out, *args))


# --- GEMM and convolution ------------------------------------------------------------------


def _planned(launch: Launch, gemm) -> Launch:
    launch.plan = gemm  # tile, splits, flops: for profiles and benchmarks
    return launch


@lowers("matmul")
def _matmul(node, graph):
    a, b = (graph[i].shape for i in node.inputs)
    gemm = matmul_gemm(a, b, node.attrs["trans_a"], node.attrs["trans_b"], node.dtype)
    return _planned(_flat_launch(lambda ins, out: gemm(ins[0], ins[1], out)), gemm)


@lowers("conv2d")
def _conv2d(node, graph):
    x, w = (graph[i].shape for i in node.inputs[:2])
    bias = len(node.inputs) == 3
    gemm = conv.forward_gemm(x, w, node.shape, node.attrs, node.dtype, bias)
    launch = _flat_launch(lambda ins, out: gemm(ins[0], ins[1], out, ins[2] if bias else None))
    return _planned(launch, gemm)


@lowers("conv2d_grad_input")
def conv2d_grad_input(node, graph):
    g, w = (graph[i].shape for i in node.inputs)
    gemm = conv.grad_input_gemm(g, w, node.shape, node.attrs, node.dtype)
    return _planned(_flat_launch(lambda ins, out: gemm(ins[0], ins[1], out)), gemm)


@lowers("conv2d_grad_weight")
def _conv2d_grad_weight(node, graph):
    x, g = (graph[i].shape for i in node.inputs)
    gemm = conv.grad_weight_gemm(x, g, node.shape, node.attrs, node.dtype)
    return _planned(_flat_launch(lambda ins, out: gemm(ins[0], ins[1], out)), gemm)


# --- pooling -------------------------------------------------------------------------------


def pool_args(node: Node, x_shape, y_shape) -> tuple:
    """The pooling kernels' trailing arguments: planes, the input's H, W, the pooled OH, OW,
    then the window's (``pool_window_args``)."""
    n, c, h, w = x_shape
    return (n * c, h, w, *y_shape[2:], *pool_window_args(node))


_POOL_KERNELS = {  # op: (kernel, whether it is a gradient: its input 0 is dy, its out dx)
    "max_pool2d": (pool.max_pool_forward, False),
    "max_pool2d_grad": (pool.max_pool_backward, True),
    "max_pool2d_taps": (pool.max_pool_taps, False),
    "max_pool2d_grad_taps": (pool.max_pool_grad_taps, True),
    "avg_pool2d": (pool.avg_pool_forward, False),
    "avg_pool2d_grad": (pool.avg_pool_backward, True),
}


@lowers(*_POOL_KERNELS)
def _pool2d(node, graph):
    kernel, grad = _POOL_KERNELS[node.op]
    first = graph[node.inputs[0]].shape
    x, y = (node.shape, first) if grad else (first, node.shape)
    return per_output_launch(kernel, node, pool_args(node, x, y))


# --- reductions ----------------------------------------------------------------------------


def _rows_launcher(kernel, lines: int, r_len: int, inner: int = 1):
    """A block per line for long contiguous rows, else a thread per line; returns the
    configured kernel and the ``per_block`` flag it takes."""
    if inner == 1 and r_len > ROW_PER_BLOCK:
        return launcher(kernel, max(1, min(lines, 32 * sm_count())), pow2_threads(r_len)), True
    return launcher(kernel, blocks_for(lines, 128), 128), False


@lowers(*reduce.MODES)
def _along_axis(node, graph):
    outer, r_len, inner = around_axis(node.shape, node.attrs["axis"])
    lines, mode = outer * inner, reduce.MODES[node.op]
    kernel, per_block = _rows_launcher(reduce.along_axis, lines, r_len, inner)

    def run(ins, out):
        if lines and r_len:
            kernel(ins[0], ins[-1], out, lines, r_len, inner, mode, per_block)

    return _flat_launch(run)


def _check_targets(node: Node, graph: Graph):
    classes = graph[node.inputs[0]].shape[1]
    return {1: lambda targets: check_class_indices(targets, classes)}


@lowers("cross_entropy")
def _cross_entropy(node, graph):
    n, c = graph[node.inputs[0]].shape
    rows = load_cuda().device_array(max(n, 1), dtype=np.float64)
    per_row, per_block = _rows_launcher(reduce.cross_entropy_rows, n, c)
    mean = launcher(reduce.mean_rows, 1, 1 if n <= 256 else pow2_threads(n))

    def run(ins, out):
        per_row(ins[0], ins[1], rows, n, c, per_block)
        mean(rows, out, n)

    launch = _flat_launch(run)
    launch.host_checks = _check_targets(node, graph)
    return launch


@lowers("cross_entropy_grad")
def _cross_entropy_grad(node, graph):
    n, c = graph[node.inputs[0]].shape
    kernel, per_block = _rows_launcher(reduce.cross_entropy_grad_rows, n, c)
    launch = _flat_launch(lambda ins, out: kernel(ins[0], ins[1], ins[2], out, n, c, per_block))
    launch.host_checks = _check_targets(node, graph)
    return launch


@lowers("class_indices")
def _class_indices(node, graph):
    """Checked on the host as the targets are fed (no device sync per step). Indices the
    graph computes (or holds as constants) are never fed, so the reference checks those on
    the host."""
    source = graph[node.inputs[0]]
    if source.role != "input":
        return host_reference_launch(node)
    classes, what, ignore = (node.attrs[k] for k in ("num_classes", "what", "ignore_index"))
    launch = elementwise_launch("a0", [node.shape], node.shape)
    launch.host_checks = {0: lambda targets: check_class_indices(targets, classes, what, ignore)}
    return launch


# --- data movement -------------------------------------------------------------------------


@lowers("transpose")
def _transpose(node, graph):
    return transpose_launch(node.attrs["perm"], graph[node.inputs[0]].shape)


@lowers("reshape")
def _reshape(node, graph):
    # Only used when the executable cannot alias (it always can for its own buffers).
    return elementwise_launch("a0", [(math.prod(node.shape),)], (math.prod(node.shape),))
