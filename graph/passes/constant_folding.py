"""Constant folding: an op whose inputs are all constants becomes a constant."""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from ..ops import get_op
from ..rewriter import Rewriter

FOLD_MAX_ELEMENTS = 1 << 16
"""Larger results stay ops: a folded constant is stored in the graph (and in saved files)."""


def constant_folding(
    graph: Graph, keep: frozenset[int] = frozenset(), max_elements: int = FOLD_MAX_ELEMENTS
) -> Graph:
    """Evaluate const-only ops with their NumPy reference; the constant keeps the op's id
    (so a kept id still holds its value). Ops whose reference raises are left alone."""
    rw = Rewriter(graph, keep)
    for original in graph.ops():
        node = rw[original.id]
        if node.is_leaf or node.size > max_elements:
            continue
        values = [rw.const_value(i) for i in node.inputs]
        if not values or any(v is None for v in values):
            continue
        try:
            result = get_op(node.op).reference(*values, **dict(node.attrs))
        except Exception:  # noqa: BLE001 - e.g. invalid constant class indices: fail at run time
            continue
        array = np.array(result, dtype=node.dtype, order="C")  # (ascontiguousarray makes 0-d 1-d)
        if array.shape != node.shape:
            continue
        array.setflags(write=False)
        rw.set(Node(node.id, "leaf", (), {}, node.shape, node.dtype, node.name, "const", array))
    return rw.build()
