"""Algebraic simplification: identities that remove or shorten nodes.

- ``x*1``, ``1*x``, ``x+0``, ``0+x``, ``x-0``, ``x/1`` -> ``x`` (when the constant does not
  broadcast ``x`` to a larger shape);
- ``neg(neg(x))`` -> ``x``; ``relu(relu(x))`` -> ``relu(x)``;
- ``transpose(transpose(x, p), q)`` -> one transpose (none if the perms cancel);
- ``reshape(reshape(x))`` -> one reshape; a reshape, transpose or broadcast that changes
  nothing -> ``x``;
- ``concat(a1, a2, ...) + concat(b1, b2, ...)`` (pieces that line up) ->
  ``concat(a1 + b1, a2 + b2, ...)``, where a zero piece adds nothing; and a ``slice`` that
  takes exactly one piece of a ``concat`` -> that piece. (Autodiff gives a value read by two
  slices the gradient ``concat(g1, 0) + concat(0, g2)``: these make it ``concat(g1, g2)``,
  and a slice of that ``g1`` again.)

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


def _is_zero(rw: Rewriter, node_id: int) -> bool:
    value = rw.const_value(node_id)
    return value is not None and not np.any(value)


def _sum_of_concats(rw: Rewriter, node: Node) -> Node | None:
    """``concat(a...) + concat(b...)`` as ``concat(a + b, ...)`` when the pieces line up."""
    x, y = rw[node.inputs[0]], rw[node.inputs[1]]
    if not (x.op == y.op == "concat" and x.attrs == y.attrs and x.shape == y.shape):
        return None
    if [rw[i].shape for i in x.inputs] != [rw[i].shape for i in y.inputs]:
        return None
    pieces = []
    for a, b in zip(x.inputs, y.inputs):
        if _is_zero(rw, a) or _is_zero(rw, b):
            pieces.append(b if _is_zero(rw, a) else a)
        else:
            pieces.append(rw.add("add", [a, b], node.name).id)
    return dataclasses.replace(node, op="concat", inputs=tuple(pieces), attrs=dict(x.attrs))


def _piece_of_concat(rw: Rewriter, node: Node) -> int | None:
    """The concat operand that a ``slice`` of the concat takes exactly, if any."""
    x, axis = rw[node.inputs[0]], node.attrs["axis"]
    if x.op != "concat" or x.attrs["axis"] != axis:
        return None
    start = 0
    for i in x.inputs:
        stop = start + rw[i].shape[axis]
        if (start, stop) == (node.attrs["start"], node.attrs["stop"]):
            return i
        start = stop
    return None


def _simplified(rw: Rewriter, node: Node) -> int | Node | None:
    """An id that ``node`` equals, or a shorter definition of it, or None."""
    if node.op == "add" and (concats := _sum_of_concats(rw, node)) is not None:
        return concats
    if node.op == "slice":
        return _piece_of_concat(rw, node)
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
