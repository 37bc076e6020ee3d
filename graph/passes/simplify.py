"""Algebraic simplification: identities that remove or shorten nodes.

- ``x*1``, ``1*x``, ``x+0``, ``0+x``, ``x-0``, ``x/1`` -> ``x`` (when the constant does not
  broadcast ``x`` to a larger shape);
- ``neg(neg(x))`` -> ``x``; ``relu(relu(x))`` -> ``relu(x)``;
- ``transpose(transpose(x, p), q)`` -> one transpose (none if the perms cancel);
- ``reshape(reshape(x))`` -> one reshape; a reshape, transpose or broadcast that changes
  nothing -> ``x``.

A kept node keeps its id: it may be redefined (``relu(relu(x))`` -> ``relu(x)``) but is never
replaced by another node.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..ir import Graph, Node
from ..rewriter import Rewriter

# op -> (operand positions where the identity constant may stand, the constant)
_IDENTITY = {"mul": ((0, 1), 1.0), "add": ((0, 1), 0.0), "sub": ((1,), 0.0), "div": ((1,), 1.0)}


def _identity_operand(rw: Rewriter, node: Node) -> int | None:
    """The operand that ``node`` returns unchanged, if it is ``x op identity``."""
    positions, neutral = _IDENTITY[node.op]
    for pos in positions:
        value = rw.const_value(node.inputs[pos])
        other = rw[node.inputs[1 - pos]]
        if value is not None and np.all(value == neutral) and other.shape == node.shape:
            return other.id
    return None


def _simplified(rw: Rewriter, node: Node) -> int | Node | None:
    """An id that ``node`` equals, or a shorter definition of it, or None."""
    if node.op in _IDENTITY:
        return _identity_operand(rw, node)
    if node.op in ("reshape", "transpose", "broadcast_to"):
        x = rw[node.inputs[0]]
        if x.shape == node.shape and (
            node.op != "transpose" or node.attrs["perm"] == tuple(range(len(node.shape)))
        ):
            return x.id
        if node.op == "reshape" and x.op == "reshape":
            return dataclasses.replace(node, inputs=x.inputs)
        if node.op == "transpose" and x.op == "transpose":
            p, q = x.attrs["perm"], node.attrs["perm"]
            perm = tuple(p[i] for i in q)
            if perm == tuple(range(len(perm))):
                return x.inputs[0]
            return dataclasses.replace(node, inputs=x.inputs, attrs={"perm": perm})
    if node.op in ("neg", "relu"):
        x = rw[node.inputs[0]]
        if x.op == node.op:
            return x.inputs[0] if node.op == "neg" else dataclasses.replace(node, inputs=x.inputs)
    return None


def simplify(graph: Graph, keep: frozenset[int] = frozenset()) -> Graph:
    """Apply the identities in topological order (chains collapse in one sweep: each node
    sees its operands' simplified definitions)."""
    rw = Rewriter(graph, keep)
    for original in graph.ops():
        result = _simplified(rw, rw[original.id])
        while isinstance(result, Node):  # a shorter definition may simplify further
            rw.set(result)
            result = _simplified(rw, result)
        if result is not None and not rw.keeps(original.id):
            rw.replace(original.id, result)
    return rw.build()
