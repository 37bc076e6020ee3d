"""Common-subexpression elimination: one node per (op, inputs, attributes), one per constant."""

from __future__ import annotations

from collections.abc import Hashable

from ..ir import Graph, Node
from ..rewriter import Rewriter

COMMUTATIVE = frozenset({"add", "mul"})


def _key(node: Node) -> Hashable | None:
    """What makes two nodes compute the same value; None for nodes never merged."""
    if node.role == "const":
        return ("const", node.dtype, node.shape, node.value.tobytes())
    if node.is_leaf:
        return None  # inputs, params and state are distinct even when they look alike
    inputs = tuple(sorted(node.inputs)) if node.op in COMMUTATIVE else node.inputs
    key = (node.op, inputs, tuple(sorted(node.attrs.items())), node.shape, node.dtype)
    try:
        hash(key)
    except TypeError:  # an attribute that cannot be compared cheaply: leave the node alone
        return None
    return key


def cse(graph: Graph, keep: frozenset[int] = frozenset()) -> Graph:
    """Merge duplicates in topological order, so merged operands expose merged users.

    The earlier node survives, unless only the later one is kept (then the later one does);
    two kept duplicates both stay.
    """
    rw = Rewriter(graph, keep)
    seen: dict[Hashable, int] = {}
    for original in graph.nodes:
        node = rw[original.id]
        key = _key(node)
        if key is None:
            continue
        first = seen.get(key)
        if first is None:
            seen[key] = node.id
        elif not rw.keeps(node.id):
            rw.replace(node.id, first)
        elif not rw.keeps(first):
            rw.replace(first, node.id)
            seen[key] = node.id
    return rw.build()
