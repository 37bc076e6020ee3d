"""Memory-aware scheduling: reorder a graph's op nodes so that fewer bytes are live at once.

The memory planner (``graph/memory.py``) gives each value a lifetime from the step that writes
it to the step that last reads it, so the order of the ops sets the peak the arena must hold.
Traced order is rarely the best one in a backward graph: an optimizer update emitted at the
end keeps every weight gradient alive through the whole backward pass, and a weight gradient
that runs after the next input gradient keeps its (large) saved activation alive across it.

The pass is a greedy list scheduler: among the ops whose operands are all computed, run the
one that changes the live bytes the least (its output's bytes minus the bytes of the operands
it reads for the last time), ties in the graph's order; or, in a second, lazier variant, run
the one that frees the most, else the first in the graph's order (an op that only allocates
never runs earlier than the graph has it: recomputed values stay next to their readers).
So an optimizer update runs as soon as its gradient is final (it frees the gradient and lands
in its state buffer), and a weight gradient runs before the input gradient beside it (it
frees the saved activation first). The live bytes are counted as the planner counts them:
saved activations (backward leaves with ``saved_from``) live until their last read, reshapes
alias their operand, outputs and ``keep`` live to the end, updates computed in place and
other leaves take no arena bytes. Greedy is not
optimal, so the pass keeps whichever order has the lowest peak: the graph's own, or one of four
greedy ones (eager or lazy, each with and without one step of lookahead, which sees that a
weight gradient's allocation is freed by the update it readies).

An update value must run after every other reader of its state (that is what lets the planner
compute it straight into the state's buffer), so those readers are its predecessors too.
"""

from __future__ import annotations

from ..ir import Graph
from ..memory import inplace_updates, may_overwrite


class _Model:
    """Bytes and readers of each buffer of ``graph`` (reshapes resolved to their base)."""

    def __init__(self, graph: Graph, keep: frozenset[int]) -> None:
        self.graph = graph
        self.base: dict[int, int] = {}
        for node in graph.ops():
            if node.op == "reshape":
                self.base[node.id] = self.base.get(node.inputs[0], node.inputs[0])
        in_place = inplace_updates(graph)
        self.size = {n.id: self._bytes(n, in_place) for n in graph.nodes}
        self.reads = {n.id: self._bases(n) for n in graph.ops() if n.op != "reshape"}
        readers: dict[int, int] = {}
        for bases in self.reads.values():
            for b in bases:
                readers[b] = readers.get(b, 0) + 1
        self.readers = readers
        self.forever = {self.base.get(i, i) for i in (*graph.roots(), *keep) if i in graph}
        self.overwrites = {i: self._overwritable(graph[i]) for i in self.reads}

    def _bytes(self, node, in_place: dict[int, int]) -> int:
        if node.is_leaf:
            return node.nbytes if "saved_from" in node.attrs else 0
        return 0 if node.op == "reshape" or node.id in in_place else node.nbytes

    def _overwritable(self, node) -> frozenset[int]:
        """The operand buffers the planner may let ``node`` write over when they die at it."""
        if not may_overwrite(node.op):
            return frozenset()
        g = self.graph
        return frozenset(
            b
            for b in self.reads[node.id]
            if self.size[b] == node.nbytes and g[b].dtype == node.dtype
        )

    def _bases(self, node) -> tuple[int, ...]:
        return tuple(dict.fromkeys(self.base.get(i, i) for i in node.inputs))

    def initial_bytes(self) -> int:
        return sum(self.size[n.id] for n in self.graph.leaves())

    def step(self, node_id: int, remaining: dict[int, int]) -> tuple[int, int]:
        """(bytes live while ``node_id`` runs beyond those before it, bytes freed after it)."""
        reads = self.reads.get(node_id)
        if reads is None:  # a reshape: it aliases its operand
            return 0, 0
        freed, reuse = 0, False
        for b in reads:
            if remaining[b] == 1 and b not in self.forever:
                freed += self.size[b]
                reuse = reuse or b in self.overwrites[node_id]
        # An output the planner writes over a dying operand of its size adds no bytes.
        return (0 if reuse else self.size[node_id]), freed


def _peak(model: _Model, order: list[int]) -> int:
    """The most bytes live at one step when the op nodes run in ``order``."""
    remaining = dict(model.readers)
    live = peak = model.initial_bytes()
    for node_id in order:
        during, freed = model.step(node_id, remaining)
        peak = max(peak, live + during)
        live += model.size[node_id] - freed
        for b in model.reads.get(node_id, ()):
            remaining[b] -= 1
    return peak


def _predecessors(graph: Graph, model: _Model) -> dict[int, set[int]]:
    """Each op's operands that are ops, plus (for an update value) the state's other readers
    that come before it in the graph's order (later ones already keep it out of place)."""
    ops = {n.id for n in graph.ops()}
    preds = {n.id: {i for i in n.inputs if i in ops} for n in graph.ops()}
    position = {n.id: k for k, n in enumerate(graph.nodes)}
    for state, value in graph.updates:
        if value not in ops:
            continue
        for reader, bases in model.reads.items():
            if reader != value and state in bases and position[reader] < position[value]:
                preds[value].add(reader)
    return preds


def _greedy(graph: Graph, model: _Model, eager: bool, lookahead: bool) -> list[int]:
    """List scheduling by live-byte change; ``eager``: a node that adds bytes may run early
    when it adds the least, else only freeing nodes jump the graph's order; ``lookahead``:
    count the best change of a user that the node makes ready too."""
    preds = _predecessors(graph, model)
    users: dict[int, list[int]] = {}
    for node_id, ps in preds.items():
        for p in ps:
            users.setdefault(p, []).append(node_id)
    waiting = {i: len(ps) for i, ps in preds.items()}
    position = {n.id: k for k, n in enumerate(graph.nodes)}
    ready = {i for i, w in waiting.items() if w == 0}
    remaining = dict(model.readers)
    order: list[int] = []
    while ready:

        def change(i: int) -> int:
            return model.size[i] - model.step(i, remaining)[1]

        def cost(i: int) -> tuple[int, int]:
            # One step of lookahead: a weight gradient allocates, but the update it readies
            # frees it at once (a pair that frees the saved input the gradient read last).
            then = [change(u) for u in users.get(i, ()) if lookahead and waiting[u] == 1]
            c = change(i) + min([0, *then])
            return (c if eager else min(c, 0)), position[i]

        best = min(ready, key=cost)
        ready.remove(best)
        order.append(best)
        for b in model.reads.get(best, ()):
            remaining[b] -= 1
        for u in users.get(best, ()):
            waiting[u] -= 1
            if waiting[u] == 0:
                ready.add(u)
    return order


def schedule(graph: Graph, keep: frozenset[int] = frozenset()) -> Graph:
    """``graph`` with its op nodes in the order of lower peak live bytes (module docstring);
    leaves stay first, in their order. The same values, the same nodes, a new order."""
    model = _Model(graph, frozenset(keep))
    current = [n.id for n in graph.ops()]
    orders = [current]
    orders += [_greedy(graph, model, e, a) for e in (True, False) for a in (False, True)]
    order = min(orders, key=lambda o: _peak(model, o))  # the first of equals: current
    if order == current:
        return graph
    nodes = [*graph.leaves(), *(graph[i] for i in order)]
    return Graph(nodes, graph.inputs, graph.outputs, graph.updates, graph.output_names, graph.name)
