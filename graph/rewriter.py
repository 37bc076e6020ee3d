"""``Rewriter``: "replace these nodes with those" on an immutable Graph, with stable ids.

A pass opens a Rewriter on its input graph, redefines, replaces, adds or removes nodes, and
calls ``build()`` for the new Graph; the input graph is never touched. Ids are stable:

- ``set(node)`` redefines an existing id (same value, new definition: a fused node takes the
  id of its group's last node, a folded constant keeps the id of the op it replaces);
- ``replace(old, new)`` redirects every use of ``old`` (in users, outputs and updates) to
  ``new`` and drops ``old``;
- ``add(...)`` creates a node with a fresh id above every id used so far.

Ids in ``keep`` (values another graph reads by id, e.g. a backward graph's saved values) may
be redefined but never replaced or removed. ``build`` re-sorts topologically (networkx,
stable with respect to the original order) only when a rewrite broke the order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import networkx as nx
import numpy as np

from .ir import Graph, Node
from .ops.registry import TensorType, get_op


class Rewriter:
    """A mutable overlay on one Graph; ``build()`` freezes it into a new Graph."""

    def __init__(self, graph: Graph, keep: Iterable[int] = ()) -> None:
        self.graph = graph
        self.keep = frozenset(keep)
        self._nodes: dict[int, Node] = {n.id: n for n in graph.nodes}
        # Sort keys: original position; new nodes sort right after their latest operand.
        self._key: dict[int, tuple[int, int]] = {n.id: (i, 0) for i, n in enumerate(graph)}
        self._forward: dict[int, int] = {}  # replaced id -> its replacement
        self._next_id = max((n.id for n in graph.nodes), default=-1) + 1
        self._seq = 0
        self.changed = False

    # --- reading the current state ----------------------------------------------------------

    def resolve(self, node_id: int) -> int:
        """The id that now stands for ``node_id`` (following replacements)."""
        while node_id in self._forward:
            node_id = self._forward[node_id]
        return node_id

    def __getitem__(self, node_id: int) -> Node:
        """The current definition of ``node_id`` (after replacements), inputs resolved."""
        node = self._nodes[self.resolve(node_id)]
        inputs = tuple(self.resolve(i) for i in node.inputs)
        return node if inputs == node.inputs else dataclasses.replace(node, inputs=inputs)

    def __contains__(self, node_id: int) -> bool:
        return node_id in self._nodes

    def keeps(self, node_id: int) -> bool:
        return node_id in self.keep

    def const_value(self, node_id: int) -> np.ndarray | None:
        """The value of ``node_id`` if it is (now) a constant leaf, else None."""
        node = self[node_id]
        return node.value if node.role == "const" else None

    # --- editing ----------------------------------------------------------------------------

    def fresh_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def set(self, node: Node) -> None:
        """Redefine ``node.id`` (which must exist) with the same shape and dtype."""
        old = self._nodes[node.id]
        if (old.shape, old.dtype) != (node.shape, node.dtype):
            raise ValueError(f"set: {node.format()} does not match {old.format()}")
        self._nodes[node.id] = node
        self.changed = True

    def add(self, op: str, inputs: Iterable[int], name: str = "", **attrs: Any) -> Node:
        """A new op node with a fresh id; attributes checked, type inferred by the registry."""
        inputs = tuple(self.resolve(i) for i in inputs)
        opdef = get_op(op)
        full = opdef.make_attrs(attrs)
        out = opdef.infer([TensorType(self[i].shape, self[i].dtype) for i in inputs], full)
        node = Node(self.fresh_id(), op, inputs, full, tuple(out.shape), out.dtype, name)
        return self._insert(node)

    def add_const(self, value: Any, dtype: str, name: str = "") -> Node:
        """A new constant leaf holding ``value`` (copied, read-only)."""
        array = np.array(value, dtype=dtype, order="C")  # copies; keeps 0-d arrays 0-d
        array.setflags(write=False)
        node = Node(self.fresh_id(), "leaf", (), {}, array.shape, dtype, name, "const", array)
        return self._insert(node)

    def _insert(self, node: Node) -> Node:
        self._seq += 1
        pos = max((self._key[i][0] for i in node.inputs), default=-1)
        self._key[node.id] = (pos, self._seq)
        self._nodes[node.id] = node
        self.changed = True
        return node

    def replace(self, old: int, new: int) -> None:
        """Every use of ``old`` now reads ``new`` (same shape and dtype); ``old`` is dropped."""
        old, new = self.resolve(old), self.resolve(new)
        if old == new:
            return
        if old in self.keep:
            raise ValueError(f"%{old} is kept (read by id elsewhere); it cannot be replaced")
        a, b = self._nodes[old], self._nodes[new]
        if (a.shape, a.dtype) != (b.shape, b.dtype):
            raise ValueError(f"replace: {b.format()} cannot stand for {a.format()}")
        if old in self.graph.inputs:
            raise ValueError(f"%{old} is a graph input; it cannot be replaced")
        self._forward[old] = new
        del self._nodes[old]
        self.changed = True

    def remove(self, node_id: int) -> None:
        """Drop a node that nothing will read any more (checked in ``build``)."""
        if node_id in self.keep or node_id in self.graph.inputs:
            raise ValueError(f"%{node_id} is kept or a graph input; it cannot be removed")
        del self._nodes[node_id]
        self.changed = True

    # --- freezing ---------------------------------------------------------------------------

    def build(self) -> Graph:
        """The rewritten Graph (the input graph itself when nothing changed)."""
        if not self.changed:
            return self.graph
        nodes = {i: self[i] for i in self._nodes}
        for node in nodes.values():
            missing = [i for i in node.inputs if i not in nodes]
            if missing:
                raise ValueError(f"{node.format()} reads removed node(s) {missing}")
        order = sorted(nodes, key=self._key.__getitem__)
        position = {i: k for k, i in enumerate(order)}
        if any(position[i] >= position[n] for n in order for i in nodes[n].inputs):
            dag = nx.DiGraph()
            dag.add_nodes_from(order)
            dag.add_edges_from((i, n) for n in order for i in nodes[n].inputs)
            order = list(nx.lexicographical_topological_sort(dag, key=self._key.__getitem__))
        g = self.graph
        return Graph(
            [nodes[i] for i in order],
            inputs=[self.resolve(i) for i in g.inputs],
            outputs=[self.resolve(i) for i in g.outputs],
            updates=[(self.resolve(s), self.resolve(v)) for s, v in g.updates],
            output_names=g.output_names,
            name=g.name,
        )
