"""What the cpu and cuda lowerings share: the registry decorator, the dispatch (registered
lowering, else a generated elementwise kernel, else the NumPy reference), and the arguments
that backends read off a node the same way."""

from __future__ import annotations

import math
from collections.abc import Callable

from ..graph import Graph, Node
from ..graph.ops import get_op, scalar_expression
from . import custom_kernels
from .executable import Launch

Lowering = Callable[[Node, Graph], Launch]


def registrar(table: dict[str, Lowering]) -> Callable:
    """``lowers(*ops)``: a decorator that registers a lowering in ``table`` for the named
    ops."""

    def lowers(*ops: str):
        def register(fn):
            for op in ops:
                table[op] = fn
            return fn

        return register

    return lowers


def lower_node(
    node: Node,
    graph: Graph,
    table: dict[str, Lowering],
    elementwise_launch: Callable,
    fallback: Callable[[Node], Launch],
    impl: str,
    backend: str,
) -> tuple[Launch, str]:
    """``node``'s launch and its implementation's name: the lowering in ``table`` or, for a
    custom op, the kernel registered for ``backend`` (``impl``, unless the launch names
    another), else a generated kernel for an elementwise op, else ``fallback(node)``, the
    op's NumPy reference (``custom_kernels.no_kernel`` warns of that for a custom op)."""
    lowering = table.get(node.op) or custom_kernels.lowering_for(backend, node.op)
    if lowering is not None:
        launch = lowering(node, graph)
        return launch, getattr(launch, "impl", impl)  # a lowering may choose the host
    if get_op(node.op).category == "elementwise":
        expr = scalar_expression(node.op, node.attrs, len(node.inputs))
        return elementwise_launch(expr, [graph[i].shape for i in node.inputs], node.shape), impl
    custom_kernels.no_kernel(node, backend)
    return fallback(node), "reference"


def _reduction_args(node: Node, graph: Graph) -> tuple:
    """``reduction_launch``'s arguments (expr, n_inputs, shape, axes, mean)."""
    shape = graph[node.inputs[0]].shape
    if node.op == "mse_loss":
        return "(a0 - a1) * (a0 - a1)", 2, shape, range(len(shape)), True
    return "a0", 1, shape, node.attrs["axes"], node.op == "mean"


def shared_lowerings(reduction_launch: Callable, dropout_launch: Callable) -> dict[str, Lowering]:
    """The lowerings every backend writes alike around its own kernels: ``sum``, ``mean`` and
    ``mse_loss`` as generated reductions, ``dropout`` by its launch."""

    def reduction(node: Node, graph: Graph) -> Launch:
        return reduction_launch(*_reduction_args(node, graph))

    def dropout(node: Node, graph: Graph) -> Launch:
        return dropout_launch(node)

    return {"sum": reduction, "mean": reduction, "mse_loss": reduction, "dropout": dropout}


def conv_args(node: Node) -> tuple[int, ...]:
    """(SH, SW, PH, PW, DH, DW, groups) of a convolution."""
    a = node.attrs
    return (*a["stride"], *a["padding"], *a["dilation"], a["groups"])


def pool_window_args(node: Node) -> tuple:
    """(KH, KW, SH, SW, PH, PW) then (DH, DW) for max pooling, (count_include_pad,) for
    average pooling."""
    a = node.attrs
    extra = (a["count_include_pad"],) if "count_include_pad" in a else a["dilation"]
    return (*a["kernel"], *a["stride"], *a["padding"], *extra)


def around_axis(shape: tuple[int, ...], axis: int) -> tuple[int, int, int]:
    """View an array as (outer, shape[axis], inner) so axis-wise kernels see one layout."""
    return (math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1 :]))
