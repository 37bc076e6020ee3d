"""Dead-code elimination: drop the nodes whose values reach no output, update or kept id."""

from __future__ import annotations

import networkx as nx

from ..ir import Graph
from ..rewriter import Rewriter


def dce(graph: Graph, keep: frozenset[int] = frozenset()) -> Graph:
    """Remove op nodes and constants that nothing needed reads.

    Needed: outputs, update pairs (state and value), ``keep`` and their ancestors. Input,
    param and state leaves always stay (callers bind them by name or id).
    """
    dag = graph.nx()
    sink = object()  # one virtual sink, so reachability is a single ancestors() query
    needed = {*graph.roots(), *(s for s, _ in graph.updates), *(k for k in keep if k in graph)}
    dag.add_edges_from((i, sink) for i in needed)
    live = nx.ancestors(dag, sink) if needed else set()
    rw = Rewriter(graph, keep)
    for node in reversed(graph.nodes):  # users before operands: each removal leaves no reader
        if node.id not in live and (not node.is_leaf or node.role == "const"):
            rw.remove(node.id)
    return rw.build()
