"""The IR: immutable nodes in topological order, grouped into a Graph.

A node is either a leaf (``op == "leaf"``, with a ``role``: input, param, state or const) or
an op application whose semantics live in the op registry (``graph/ops``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import networkx as nx
import numpy as np

ROLES = ("input", "param", "state", "const")
DTYPES = ("float32", "float64", "int64", "uint8", "bool")
_SHORT_DTYPE = {"float32": "f32", "float64": "f64", "int64": "i64", "uint8": "u8", "bool": "b"}


def format_type(shape: Sequence[int], dtype: str) -> str:
    """``f32[64,6,28,28]``: how shapes appear in printed graphs and error messages."""
    return f"{_SHORT_DTYPE.get(dtype, dtype)}[{','.join(str(d) for d in shape)}]"


def _format_attr(value: Any) -> str:
    if isinstance(value, tuple):
        return "x".join(str(v) for v in value) if value else "()"
    return str(value)


@dataclass(frozen=True, eq=False)
class Node:
    """One SSA value. ``inputs`` are node ids in operand order; ``name`` is the layer path."""

    id: int
    op: str
    inputs: tuple[int, ...]
    attrs: Mapping[str, Any]
    shape: tuple[int, ...]
    dtype: str
    name: str = ""
    role: str | None = None
    value: np.ndarray | None = field(default=None, repr=False)  # const leaves only

    def __post_init__(self) -> None:
        object.__setattr__(self, "attrs", MappingProxyType(dict(self.attrs)))

    @property
    def is_leaf(self) -> bool:
        return self.role is not None

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize

    def format(self) -> str:
        """``%12 = conv2d(%3, %7) stride=1x1 padding=2x2 -> f32[64,6,28,28]  # features.0``"""
        type_str = format_type(self.shape, self.dtype)
        if self.is_leaf:
            head = f"%{self.id} = {self.role}"
            if self.role == "const" and self.value is not None and self.value.size == 1:
                head += f" {self.value.reshape(()).item():g}"
        else:
            head = f"%{self.id} = {self.op}({', '.join(f'%{i}' for i in self.inputs)})"
        attrs = "".join(f" {k}={_format_attr(v)}" for k, v in self.attrs.items())
        tail = f"  # {self.name}" if self.name else ""
        return f"{head}{attrs} -> {type_str}{tail}"


class Graph:
    """Nodes in topological order, the input leaves in call order, and the outputs.

    ``updates`` pairs (state leaf id, value id): after the graph has run, each state leaf
    takes its value (all at once), which is how optimizers update parameters in place.
    ``output_names`` label the outputs (gradient outputs carry their parameter's key).
    """

    def __init__(
        self,
        nodes: Iterable[Node],
        inputs: Sequence[int],
        outputs: Sequence[int],
        updates: Sequence[tuple[int, int]] = (),
        output_names: Sequence[str] | None = None,
        name: str = "",
    ) -> None:
        self.nodes: tuple[Node, ...] = tuple(nodes)
        self._by_id = {n.id: n for n in self.nodes}
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.updates = tuple(updates)
        self.output_names = tuple(output_names) if output_names else tuple("" for _ in outputs)
        self.name = name
        self._check()

    def _check(self) -> None:
        seen: set[int] = set()
        for n in self.nodes:
            missing = [i for i in n.inputs if i not in seen]
            if missing:
                raise ValueError(f"graph is not in topological order: {n.format()} uses {missing}")
            seen.add(n.id)
        for i in (*self.inputs, *self.outputs, *(x for pair in self.updates for x in pair)):
            if i not in seen:
                raise ValueError(f"graph names %{i}, which is not one of its nodes")
        if len(self.output_names) != len(self.outputs):
            raise ValueError("output_names must label every output")

    def __getitem__(self, node_id: int) -> Node:
        return self._by_id[node_id]

    def __contains__(self, node_id: int) -> bool:
        return node_id in self._by_id

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self):
        return iter(self.nodes)

    def leaves(self, role: str | None = None) -> list[Node]:
        return [n for n in self.nodes if n.is_leaf and (role is None or n.role == role)]

    def ops(self) -> list[Node]:
        """The nodes that compute something (every node but the leaves)."""
        return [n for n in self.nodes if not n.is_leaf]

    def users(self) -> dict[int, list[int]]:
        """For each node id, the ids of the nodes that read it (in order)."""
        result: dict[int, list[int]] = {n.id: [] for n in self.nodes}
        for n in self.nodes:
            for i in dict.fromkeys(n.inputs):
                result[i].append(n.id)
        return result

    def roots(self) -> list[int]:
        """Ids whose values must be computed: outputs and update values."""
        return list(dict.fromkeys((*self.outputs, *(v for _, v in self.updates))))

    def nx(self) -> nx.DiGraph:
        """A networkx view (node ids; edges from operand to user) for graph algorithms."""
        g = nx.DiGraph()
        for n in self.nodes:
            g.add_node(n.id, node=n)
            g.add_edges_from((i, n.id) for i in n.inputs)
        return g

    def by_name(self, name: str, role: str | None = None) -> Node:
        for n in self.nodes:
            if n.name == name and (role is None or n.role == role):
                return n
        raise KeyError(f"graph {self.name!r} has no node named {name!r}")

    def __str__(self) -> str:
        lines = [f"graph {self.name or '<anonymous>'}:"]
        lines += ["  " + n.format() for n in self.nodes]
        outs = ", ".join(
            f"%{o}" + (f" ({nm})" if nm else "") for o, nm in zip(self.outputs, self.output_names)
        )
        lines.append(f"  return {outs}")
        lines += [f"  update %{s} <- %{v}" for s, v in self.updates]
        return "\n".join(lines)

    __repr__ = __str__
