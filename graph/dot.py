"""Graphs as Graphviz source: every node labelled with its op, type and layer, every edge with
the bytes of the value it carries, and the nodes that run as one kernel filled with one colour
(their fusion group).

In an optimized graph a fusion group is one node (``fused_elementwise`` or a conv/GEMM
``*_epilogue``, its label listing the ops it runs); in a graph before the fusion passes,
:func:`fusion_groups` finds the groups those passes would form, so the colours show what will
become one kernel.
"""

from __future__ import annotations

from collections.abc import Mapping

from .ir import Graph, Node, format_type
from .passes.epilogue import EPILOGUE_OPS, fuse_epilogue
from .passes.fuse import FUSED, fuse_elementwise

# Pastel fills, one per fusion group in turn (Graphviz colour names).
PALETTE = (
    "lightblue",
    "palegreen",
    "lightsalmon",
    "plum",
    "khaki",
    "lightcyan",
    "pink",
    "wheat",
    "aquamarine",
    "lavender",
    "peachpuff",
    "honeydew",
)
LEAF_FILL = "gray92"
_FUSED_OPS = frozenset({FUSED, *EPILOGUE_OPS.values()})


def is_fused(node: Node) -> bool:
    """Whether ``node`` is a fusion group (several ops run as one kernel)."""
    return node.op in _FUSED_OPS


def fusion_groups(graph: Graph, keep: frozenset[int] = frozenset()) -> dict[int, int]:
    """Node id -> the id of its fusion group (the fused node that will stand for it), for the
    nodes of ``graph`` that are fused or would be by ``fuse_elementwise`` then
    ``fuse_epilogue`` with ``keep`` pinned (as the pipeline runs them)."""
    fused = fuse_epilogue(fuse_elementwise(graph, keep), keep)
    users = graph.users()
    groups: dict[int, int] = {}
    for node in reversed(graph.nodes):  # a member's users are in its group: walk back
        if node.is_leaf:
            continue
        if node.id in fused and is_fused(fused[node.id]):
            groups[node.id] = node.id
        elif node.id not in fused:  # absorbed by a fusion (the passes remove nothing else)
            owner = next((groups[u] for u in users[node.id] if u in groups), None)
            if owner is not None:
                groups[node.id] = owner
    return groups


def format_bytes(n: int) -> str:
    """``512 B``, ``12.5 KiB``, ``3.1 MiB``."""
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _label(node: Node) -> str:
    head = node.role if node.is_leaf else node.op
    if "body" in node.attrs:  # fused_elementwise and the epilogue ops list their steps
        head += "\n" + " -> ".join(op for op, _, _ in node.attrs["body"])
    label = f"%{node.id} {head}\n{format_type(node.shape, node.dtype)}"
    return f"{label}\n{node.name}" if node.name else label


def to_dot(graph: Graph, groups: Mapping[int, int] | None = None) -> str:
    """Graphviz source for ``graph``: leaves as grey ellipses, ops as boxes, filled with their
    fusion group's colour (``groups``: node id -> group id; by default each fused node is
    its own group), outputs and update values with a double border, edges labelled with the
    bytes they carry and update edges dashed."""
    if groups is None:
        groups = {n.id: n.id for n in graph.ops() if is_fused(n)}
    colours: dict[int, str] = {}
    for group in groups.values():
        colours.setdefault(group, PALETTE[len(colours) % len(PALETTE)])
    roots = set(graph.roots())
    lines = [
        f"digraph {_quote(graph.name or 'graph')} {{",
        '  node [fontname="monospace", fontsize=10, style=filled, fillcolor=white];',
        '  edge [fontname="monospace", fontsize=8];',
    ]
    for n in graph.nodes:
        attrs = [f"label={_quote(_label(n))}", "shape=ellipse" if n.is_leaf else "shape=box"]
        fill = LEAF_FILL if n.is_leaf else colours.get(groups.get(n.id, -1))
        if fill:
            attrs.append(f"fillcolor={fill}")
        if n.id in roots:
            attrs.append("peripheries=2")
        lines.append(f"  n{n.id} [{', '.join(attrs)}];")
    for n in graph.nodes:
        for i in dict.fromkeys(n.inputs):
            lines.append(f"  n{i} -> n{n.id} [label={_quote(format_bytes(graph[i].nbytes))}];")
    lines += [f"  n{v} -> n{s} [style=dashed];" for s, v in graph.updates]
    lines.append("}")
    return "\n".join(lines) + "\n"
