"""Recomputation under a memory budget: which saved activations the backward graph recomputes
instead of reading, chosen so the planned arena fits and the added FLOPs stay small.

A training step saves every forward value a VJP rule reads (``engine/autodiff.py``), and at the
start of the backward pass all of them are live: that is the peak of a deep network's arena.
A saved value whose producer is cheap can be recomputed in the backward graph from values that
are saved anyway: a ReLU output after BatchNorm is ``relu(batch_norm(x, mean, inv_std, gamma,
beta))`` where x (the conv output) and the per-channel statistics are saved for BatchNorm's own
backward. Recomputing it costs ~5 FLOPs per element; keeping it costs its bytes from the
forward pass to its last backward read.

How the choice is made (a greedy rematerialization, as Checkmate's and AOTAutograd's cheap-op
heuristics do, extended to segments as in Chen et al.'s checkpointing; not a min-cut: the
candidates are few and the arena is measured, not modelled):

1. Candidates: saved op values whose *recompute closure* (the producer, and recursively each
   operand that is neither kept saved nor a leaf) consists of elementwise ops and reshapes
   plus at most ``depth`` convs, GEMMs or poolings (``RECOMPUTABLE``), and reads no ``state``
   leaf (a step counter or running statistic may have changed by then). Reductions
   (BatchNorm's statistics) are never recomputed: they are small and saved.
2. Order, in phases of depth 1, 2, ... ``DEPTH``: within a phase, most bytes freed per added
   FLOP first (FLOPs of the closure not already recomputed for an earlier candidate), so
   every elementwise candidate (a few FLOPs per element) comes before any conv (hundreds).
   A candidate joins only if, with it and all before it recomputed, every closure stays
   within the phase's depth. Depth 1 recomputes a ReLU from its saved conv output and a conv
   output from its saved input; deeper phases drop more of a segment, so a residual block
   (conv-BN-ReLU-conv-BN-add-ReLU, plus a downsampling conv: 3) is recomputed from what
   stays saved before it. The depth bound is what leaves checkpoints between segments:
   without it one chain would reach back to the input and the whole network's activations
   would be recomputed at once, alive together (deeper bounds measured worse on ResNet-18).
3. Budget: the shortest prefix of that order whose real planned arena (passes, schedule,
   placement) fits wins, so no more is recomputed than the budget needs (``fit_budget``: the
   end of each phase, then bisection inside the first phase whose end fits). When no phase
   end fits, ``MemoryBudgetError`` names the smallest arena seen. (CIFAR ResNet-18, batch 8:
   the arena without recomputation 36.9 MiB, half of it met at 17.3 MiB by +3.2 GFLOP of
   recomputation, the smallest arena it can plan (the weight gradients set it). At
   batch 4 half is out of reach: one layer4 weight gradient alone is 9 MiB of 19.2.)

Without a budget, a training step still recomputes the depth-0 candidates (elementwise ops
and reshapes only) when that plans a smaller arena (``elementwise_recomputation``): for a few
FLOPs per element they free most of a BatchNorm network's saved activations (CIFAR ResNet-18,
batch 8: 36.9 -> 12.3 MiB; a budget is then a fraction of that default).

Recomputed nodes are emitted in the backward graph just before the first reader of the value
they replace (the schedule pass keeps them there), under the forward nodes' layer names. A
recomputed value another chain needs earlier is shared with that chain when it holds a conv
(cheaper kept than redone), and otherwise recomputed again where it is read (a residual
stream is an elementwise chain: kept, it would live from the first chain to its own reads).
The backward graph's CSE runs before recomputation, not after, so that these copies stay
apart.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import MemoryBudgetError, OptionError
from .ir import Graph, Node
from .ops import TensorType, get_op

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9}
_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_bytes(size: int | str) -> int:
    """Bytes from an int or a string such as ``"200MB"``, ``"1.5GiB"``, ``"4096"``."""
    if isinstance(size, int) and size > 0:
        return size
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmg]i?b|b)?\s*", str(size), re.IGNORECASE)
    if not m or float(m[1]) <= 0:
        raise OptionError(
            f"memory budget {size!r} is not a positive size; write it like 200MB, 1.5GiB or 4096"
        )
    return int(float(m[1]) * _UNITS[(m[2] or "").lower()])


def format_bytes(n: int) -> str:
    """``n`` bytes in the largest binary unit that keeps it >= 1 (one decimal)."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


@dataclass
class Recomputed:
    """What a budget made the backward graph recompute: forward values (id -> layer name),
    the ops added to the backward graph and the FLOPs they add per step."""

    values: dict[int, str] = field(default_factory=dict)
    nodes: int = 0
    flops: int = 0

    def to_dict(self) -> dict:
        return {"values": sorted(set(self.values.values())), "nodes": self.nodes,
                "flops": self.flops}  # fmt: skip


def _saved(backward: Graph) -> dict[int, int]:
    """Forward id -> the backward leaf that holds it."""
    return {n.attrs["saved_from"]: n.id for n in backward.leaves() if "saved_from" in n.attrs}


def _flops(graph: Graph, node: Node) -> int:
    ins = [TensorType(graph[i].shape, graph[i].dtype) for i in node.inputs]
    return int(get_op(node.op).flops(ins, TensorType(node.shape, node.dtype), node.attrs))


RECOMPUTABLE = frozenset({"conv2d", "matmul", "max_pool2d", "avg_pool2d"})
"""Ops other than elementwise ones and reshapes that a recompute closure may hold: pure, and
costly enough (FLOPs per byte) that every cheaper candidate is taken before them."""

DEPTH = 3
"""The most ``RECOMPUTABLE`` ops one closure may hold: a residual block's two convs and its
downsampling conv, so a segment is at most a block and its input stays saved."""


def _closure(forward: Graph, value: int, kept: set[int], depth: int | None) -> list[int] | None:
    """The forward op ids to recompute ``value`` from ``kept`` saved values and leaves, in
    topological order; None when that needs a state leaf, an op that is neither elementwise,
    a reshape nor ``RECOMPUTABLE``, or more than ``depth`` of those (None: any number)."""
    order: list[int] = []
    seen: set[int] = set()
    heavy = [0]

    def visit(i: int) -> bool:
        node = forward[i]
        if i in seen or (i in kept and i != value):
            return True
        if node.is_leaf:
            return node.role != "state"
        if node.op != "reshape" and get_op(node.op).category != "elementwise":
            heavy[0] += 1
            if node.op not in RECOMPUTABLE or (depth is not None and heavy[0] > depth):
                return False
        seen.add(i)
        if not all(visit(j) for j in node.inputs):
            return False
        order.append(i)
        return True

    return order if visit(value) else None


def candidate_phases(
    forward: Graph, backward: Graph, depth: int = DEPTH, first: int = 1
) -> list[list[int]]:
    """Saved forward values that can be recomputed, in the order they should be: one phase
    per closure depth ``first``..``depth``, each most bytes per added FLOP first; a value joins
    only if, with it and all before it recomputed, every closure stays within the phase's
    depth. Depth 0: values elementwise ops and reshapes rebuild from other saved values."""
    saved = set(_saved(backward))
    chosen: list[int] = []
    phases = []
    for limit in range(first, depth + 1):
        kept = saved - set(chosen)
        done = {i for w in chosen for i in _closure(forward, w, kept, None) or ()}
        scored = []
        for v in kept:
            closure = None if forward[v].is_leaf else _closure(forward, v, kept, limit)
            if closure:
                flops = sum(_flops(forward, forward[i]) for i in closure if i not in done)
                scored.append((-forward[v].nbytes / (flops + 1), -forward[v].nbytes, v))
        phases.append([])
        for *_, v in sorted(scored):
            kept = saved - {*chosen, v}
            if all(_closure(forward, w, kept, limit) for w in (*chosen, v)):
                chosen.append(v)
                phases[-1].append(v)
    return phases


def candidates(forward: Graph, backward: Graph, depth: int = DEPTH) -> list[int]:
    """``candidate_phases`` one after the other."""
    return [v for phase in candidate_phases(forward, backward, depth) for v in phase]


def rematerialize(forward: Graph, backward: Graph, values: list[int]) -> tuple[Graph, Recomputed]:
    """``backward`` recomputing the forward ``values`` (candidates) instead of reading them."""
    leaf_of = _saved(backward)
    chosen = set(values)
    kept = set(leaf_of) - chosen
    nodes = {n.id: n for n in backward.nodes}
    first_read = {}
    for t, n in enumerate(backward.nodes):
        for i in n.inputs:
            first_read.setdefault(i, t)
    next_id = [max(nodes) + 1]
    memo: dict[int, int] = {}  # forward id -> backward id
    new_leaves: list[Node] = []
    chains: dict[int, list[Node]] = {}  # backward position -> recomputed nodes before it
    info = Recomputed()

    def leaf(f: Node) -> int:
        if f.id in leaf_of:
            return leaf_of[f.id]
        same = [n for n in backward.leaves(f.role) if f.role == "param" and n.name == f.name]
        if same:
            return same[0].id
        attrs = {"saved_from": f.id} if f.role == "input" else {}
        node = Node(next_id[0], "leaf", (), attrs, f.shape, f.dtype, f.name, f.role, f.value)
        next_id[0] += 1
        new_leaves.append(node)
        leaf_of[f.id] = node.id
        return node.id

    first = {v: first_read.get(leaf_of[v], len(nodes)) for v in values}
    for v in sorted(values, key=first.__getitem__):
        at, local = first[v], {}  # local: forward id -> a copy only this chain reads
        for i in _closure(forward, v, kept, None) or ():
            if i in memo:
                continue
            f = forward[i]
            ins = tuple(local.get(j, memo.get(j)) for j in f.inputs)
            ins = tuple(leaf(forward[j]) if b is None else b for j, b in zip(f.inputs, ins))
            # A value read later than ``at`` that is cheap to redo (no conv/GEMM/pool left
            # to run for it) is copied for this chain and recomputed again where it is read,
            # rather than kept alive from here: residual streams are elementwise chains.
            cheap = _closure(forward, i, kept | memo.keys(), 0) is not None
            if i != v and first.get(i) != at and cheap:
                node_id, local[i] = next_id[0], next_id[0]
                next_id[0] += 1
            else:
                reuse = i in chosen and i in leaf_of  # its readers keep reading the same id
                node_id = leaf_of.pop(i) if reuse else next_id[0]
                next_id[0] += not reuse
                memo[i] = node_id
            chains.setdefault(at, []).append(
                Node(node_id, f.op, ins, f.attrs, f.shape, f.dtype, f.name)
            )
            info.nodes += f.op != "reshape"
            info.flops += _flops(forward, f)
        info.values[v] = forward[v].name or forward[v].op
    return _rebuild(backward, new_leaves, chains), info


def _rebuild(backward: Graph, new_leaves, chains) -> Graph:
    """Leaves first (a chain may read one the traced order creates later), then each op after
    the recomputed chain emitted before it; the replaced leaves go."""
    replaced = {n.id for chain in chains.values() for n in chain}
    ordered = [*new_leaves, *(n for n in backward.leaves() if n.id not in replaced)]
    for t, n in enumerate(backward.nodes):
        ordered += chains.get(t, [])
        if not n.is_leaf:
            ordered.append(n)
    inputs = [n.id for n in ordered if n.role == "input"]  # input leaves in node order
    b = backward
    return Graph(ordered, inputs, b.outputs, b.updates, b.output_names, b.name)


SMALL_FRACTION = 64
"""A saved value under 1/``SMALL_FRACTION`` of the largest one is not recomputed by default: it
frees next to nothing (per-channel BatchNorm statistics), and recomputed, its ops would fuse
into the activation-sized kernels that read it and run once per element there."""


def _big(node: Node, largest: int) -> bool:
    return node.nbytes * SMALL_FRACTION >= largest


Planner = Callable[[Graph, Graph], tuple]
"""``plan(forward, backward) -> (forward, backward, report)``: optimize and plan the pair."""


def elementwise_recomputation(
    forward: Graph, backward: Graph, plan: Planner, plan_recomputed: Planner
):
    """What a step without a budget gets: ``plan`` of the pair, or ``plan_recomputed`` of the
    pair recomputing every saved value that elementwise ops rebuild from other saved values
    (depth 0), when that plans a smaller arena. A ReLU(BatchNorm(conv)) output is rebuilt
    from the conv output BatchNorm's backward reads anyway, by one fused elementwise kernel
    just before the weight gradient that reads it (CIFAR ResNet-18, batch 128: 577 -> 320 MiB
    for +0.6 GFLOP, ~0.3% of the step's)."""
    result = plan(forward, backward)
    (phase,) = candidate_phases(forward, backward, depth=0, first=0)
    largest = max((forward[v].nbytes for v in _saved(backward)), default=0)
    values = [v for v in phase if forward[v].op != "reshape" and _big(forward[v], largest)]
    if not values:
        return result
    recomputing, info = rematerialize(forward, backward, values)
    alternative = plan_recomputed(forward, recomputing)
    if alternative[2].planned_bytes >= result[2].planned_bytes:
        return result
    alternative[2].recomputed = info
    return alternative


def fit_budget(
    forward: Graph, backward: Graph, budget: int, plan: Planner, plan_recomputed: Planner
):
    """``plan`` of the pair, or ``plan_recomputed`` of the pair recomputing the fewest
    candidates (a prefix of their order) that make the planned arena fit ``budget`` bytes;
    the report's ``recomputed`` says what.

    The arena is not monotone in the prefix (a long recomputed chain can raise the peak where
    it runs), so the end of each depth phase is tried first, and the first that fits is
    narrowed by bisection from the end of the phase before it: a handful of plans, each a
    full run of the passes. Raises ``MemoryBudgetError`` when no phase end fits, naming the
    smallest arena seen."""
    result = plan(forward, backward)
    if result[2].planned_bytes <= budget:
        return result
    phases = candidate_phases(forward, backward)
    order = [v for phase in phases for v in phase]
    tried: dict[int, tuple] = {0: result}

    def attempt(k: int):
        if k not in tried:
            b, info = rematerialize(forward, backward, order[:k])
            tried[k] = plan_recomputed(forward, b)
            tried[k][2].recomputed = info
        return tried[k]

    ends = sorted({sum(map(len, phases[: p + 1])) for p in range(len(phases))} - {0})
    fits = next((k for k in ends if attempt(k)[2].planned_bytes <= budget), None)
    if fits is None:
        smallest = min(r[2].planned_bytes for r in tried.values())
        raise MemoryBudgetError(
            f"memory budget {format_bytes(budget)} is below the smallest arena this training "
            f"step can plan, {format_bytes(smallest)} (with recomputation); raise the budget "
            "or lower the batch size"
        )
    lo, hi = max((k for k in tried if k < fits), default=0), fits
    while hi - lo > 1:  # attempt(lo) does not fit, attempt(hi) does
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if attempt(mid)[2].planned_bytes <= budget else (mid, hi)
    return attempt(hi)
