"""Memory planning: every intermediate value gets an offset in ONE arena.

1. Schedule: the graph's topological order (the order an Executable launches its kernels);
   step ``t`` is the ``t``-th op node.
2. Liveness: a planned value lives from the step that writes it to the last step that reads
   it (inclusive: an op reads its inputs while it writes its output, so they overlap).
   Outputs, update values and ``pinned`` ids (values another graph reads after this one has
   run, e.g. a backward graph's saved activations) live to the end. Not planned: leaves
   (bound externally or constants) and reshapes, which alias their operand; reading an alias
   reads its base, so it extends the base's lifetime.
3. In-place: an elementwise op (or dropout: ``may_overwrite``) whose operand's buffer dies at
   that op and has the output's size and dtype writes over it (each element is read before
   it is written at the same index). The two values then form one buffer with the union of
   their lifetimes. An update value (optimizer, running statistics) is written straight into
   its state leaf's buffer when nothing reads the state after it (``inplace_updates``): no
   arena bytes, no copy.
4. Placement: buffers in an order (largest first, earliest first, or most bytes x steps
   first: the one of the smallest arena is kept), each placed by best fit: into the smallest
   gap between the buffers that are live at the same time that holds it, else above them.
   Offsets and gaps are multiples of ``ALIGNMENT`` bytes.

``naive_bytes`` is what one aligned allocation per planned value costs (Σ aligned sizes), so
``arena_bytes <= naive_bytes`` always; ``peak_live_bytes`` is the lower bound any placement
of this schedule needs. A training step's two graphs share one arena: ``training_memory.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from ..errors import NumbagradError
from .ir import Graph
from .ops import get_op

ALIGNMENT = 64


class MemoryPlanError(NumbagradError):
    """A memory plan that lets two live values share bytes, or misses a value."""


def _align(n: int, alignment: int = ALIGNMENT) -> int:
    return -(-n // alignment) * alignment


@dataclass
class Liveness:
    schedule: tuple[int, ...]  # op node ids in launch order (aliasing reshapes included)
    intervals: dict[int, tuple[int, int]]  # planned id -> (first write, last read), inclusive
    aliases: dict[int, int]  # reshape id -> the id whose buffer it views
    to_end: frozenset[int]  # planned ids that live to the end


def liveness(graph: Graph, pinned: Iterable[int] = (), external: Iterable[int] = ()) -> Liveness:
    """The schedule and the live interval of every planned value of ``graph``; ``external``
    ids are not planned (their buffers come from elsewhere, see ``inplace_updates``)."""
    external = frozenset(external)
    schedule = tuple(n.id for n in graph.ops())
    aliases: dict[int, int] = {}
    start: dict[int, int] = {}
    end: dict[int, int] = {}
    for t, node_id in enumerate(schedule):
        node = graph[node_id]
        for i in node.inputs:
            b = aliases.get(i, i)
            if b in start:
                end[b] = t
        if node.op == "reshape":
            aliases[node_id] = aliases.get(node.inputs[0], node.inputs[0])
        elif node_id not in external:
            start[node_id] = end[node_id] = t
    last = len(schedule)
    to_end = set()
    for i in (*graph.roots(), *pinned):
        b = aliases.get(i, i)
        if b in start:
            end[b] = last
            to_end.add(b)
    intervals = {i: (start[i], end[i]) for i in start}
    return Liveness(schedule, intervals, aliases, frozenset(to_end))


def inplace_updates(graph: Graph) -> dict[int, int]:
    """Update values computed straight into their state's buffer (value id -> state id), so
    they take no arena bytes and need no copy after the run. Valid when no op after the
    value's reads the state (through reshapes too), and the value's op either does not read
    the state or is elementwise (each element read before it is written at the same index:
    conv/GEMM epilogues write their output before reading the epilogue operands)."""
    schedule = [n for n in graph.ops()]
    position = {n.id: t for t, n in enumerate(schedule)}
    base: dict[int, int] = {}
    last_read: dict[int, int] = {}
    reads_at: dict[int, set[int]] = {}
    for t, node in enumerate(schedule):
        if node.op == "reshape":
            base[node.id] = base.get(node.inputs[0], node.inputs[0])
            continue
        for i in node.inputs:
            b = base.get(i, i)
            last_read[b] = t
            reads_at.setdefault(t, set()).add(b)
    result: dict[int, int] = {}
    for state, value in graph.updates:
        node = graph[value]
        if node.op in ("leaf", "reshape") or value in result or state in result.values():
            continue
        t = position[value]
        reads_state = state in reads_at.get(t, ())
        if last_read.get(state, -1) > t:
            continue
        if reads_state and get_op(node.op).category != "elementwise":
            continue
        result[value] = state
    return result


OVERWRITES_OPERAND = frozenset({"dropout"})
"""Ops outside the elementwise category whose output may take over a dying operand's bytes:
their cpu and cuda kernels read each element, then write it at the same index, and interp
computes a new array before copying it. Not pooling gradients: their output is larger than
every operand but max_pool2d_grad's input x, and that kernel zeroes its output before it
reads x."""


def may_overwrite(op: str) -> bool:
    """Whether an ``op`` node may write its output over a same-sized operand that dies at it."""
    return op in OVERWRITES_OPERAND or get_op(op).category == "elementwise"


def _inplace_sources(graph: Graph, live: Liveness, node_id: int) -> list[int]:
    """Operand buffers ``node_id`` may overwrite: they die at its step, same bytes and dtype."""
    node = graph[node_id]
    if not may_overwrite(node.op):
        return []
    t = live.intervals[node_id][0]
    result = []
    for i in node.inputs:
        b = live.aliases.get(i, i)
        if (
            b in live.intervals
            and live.intervals[b][1] == t
            and b not in live.to_end
            and graph[i].size == node.size
            and graph[b].nbytes == node.nbytes
            and graph[b].dtype == node.dtype
        ):
            result.append(b)
    return result


@dataclass
class MemoryPlan:
    """Where each planned value lives in the arena (byte offsets), and the plan's facts."""

    schedule: tuple[int, ...]
    intervals: dict[int, tuple[int, int]]
    offsets: dict[int, int]
    sizes: dict[int, int]  # bytes of each planned value
    aliases: dict[int, int]
    inplace: dict[int, int]  # output id -> the operand id whose bytes it takes over
    pinned: frozenset[int]
    arena_bytes: int
    naive_bytes: int
    peak_live_bytes: int
    alignment: int = ALIGNMENT
    updates_inplace: dict[int, int] = field(default_factory=dict)  # value id -> state id

    def summary(self) -> dict:
        return {
            "buffers": len(self.offsets),
            "inplace": len(self.inplace),
            "arena_bytes": self.arena_bytes,
            "naive_bytes": self.naive_bytes,
            "peak_live_bytes": self.peak_live_bytes,
        }


def _peak(buffers: list[tuple[int, int, int, int]]) -> int:
    """The most bytes live at one step: the lower bound for any placement."""
    events: dict[int, int] = {}
    for start, end, size, _ in buffers:
        events[start] = events.get(start, 0) + size
        events[end + 1] = events.get(end + 1, 0) - size
    peak = current = 0
    for t in sorted(events):
        current += events[t]
        peak = max(peak, current)
    return peak


Buffer = tuple[int, int, int, int]
"""(first step, last step, aligned bytes, head id): one block of the arena."""


def _buffers(graph: Graph, live: Liveness, intervals: dict[int, tuple[int, int]]):
    """In-place chains merged into buffers: each output joins the operand buffer it takes
    over. Returns the buffers (over ``intervals``), the in-place map and each value's head."""
    group: dict[int, int] = {i: i for i in live.intervals}
    inplace: dict[int, int] = {}
    for node_id in live.schedule:
        if node_id in live.intervals:
            free = [b for b in _inplace_sources(graph, live, node_id) if b not in inplace.values()]
            if free:
                inplace[node_id] = free[0]
                group[node_id] = group[free[0]]
    members: dict[int, list[int]] = {}
    for i in live.intervals:
        members.setdefault(group[i], []).append(i)
    buffers = [
        (
            min(intervals[m][0] for m in ms),
            max(intervals[m][1] for m in ms),
            _align(graph[head].nbytes),
            head,
        )
        for head, ms in members.items()
    ]
    return buffers, inplace, group


_ORDERS = (
    lambda b: (-b[2], b[0], b[3]),  # largest first (ties: earliest first step, then id)
    lambda b: (b[0], -b[2], b[3]),  # earliest first step first
    lambda b: (-b[2] * (b[1] - b[0] + 1), b[0], b[3]),  # most bytes x steps first
)
"""Placement orders tried; the smallest arena wins (no order is best on every graph)."""


def _place(buffers: list[Buffer]) -> dict[int, int]:
    """Best-fit offsets in each of ``_ORDERS``; those of the smallest arena."""
    return min(
        (_place_in(sorted(buffers, key=k)) for k in _ORDERS), key=lambda o: _arena_end(buffers, o)
    )


def _place_in(ordered: list[Buffer]) -> dict[int, int]:
    """Best-fit offsets, one buffer after the other in ``ordered``."""
    placed: list[tuple[int, int, int, int]] = []  # (start, end, offset, aligned size)
    offset_of: dict = {}
    for start, end, size, head in ordered:
        offset_of[head] = _best_fit(placed, start, end, size)
        if size:
            placed.append((start, end, offset_of[head], size))
    return offset_of


def _plan(graph, live, pinned, updates, inplace, group, offset_of, arena, peak) -> MemoryPlan:
    sizes = {i: graph[i].nbytes for i in live.intervals}
    return MemoryPlan(
        schedule=live.schedule,
        intervals=live.intervals,
        offsets={i: offset_of[group[i]] for i in live.intervals},
        sizes=sizes,
        aliases=live.aliases,
        inplace=inplace,
        pinned=pinned,
        arena_bytes=arena,
        naive_bytes=sum(_align(s) for s in sizes.values()),
        peak_live_bytes=peak,
        updates_inplace=updates,
    )


def _arena_end(buffers: list[Buffer], offset_of: dict[int, int]) -> int:
    return max((offset_of[h] + size for _, _, size, h in buffers), default=0)


def plan_memory(graph: Graph, pinned: Iterable[int] = ()) -> MemoryPlan:
    """Plan one arena for ``graph``'s intermediates (see the module docstring)."""
    pinned = frozenset(pinned)
    updates = inplace_updates(graph)
    live = liveness(graph, pinned, updates)
    buffers, inplace, group = _buffers(graph, live, live.intervals)
    offset_of = _place(buffers)
    return _plan(
        graph,
        live,
        pinned,
        updates,
        inplace,
        group,
        offset_of,
        _arena_end(buffers, offset_of),
        _peak(buffers),
    )


def _best_fit(placed, start: int, end: int, size: int) -> int:
    """The offset of the smallest gap that holds ``size`` among buffers live in [start, end]."""
    if size == 0:
        return 0
    busy = sorted((o, o + s) for s0, e0, o, s in placed if s0 <= end and start <= e0)
    best, best_gap, cursor = None, None, 0
    for lo, hi in busy:
        gap = lo - cursor
        if gap >= size and (best_gap is None or gap < best_gap):
            best, best_gap = cursor, gap
        cursor = max(cursor, hi)
    return cursor if best is None else best


def verify_plan(graph: Graph, plan: MemoryPlan) -> None:
    """Raise ``MemoryPlanError`` unless every planned value has aligned, in-bounds bytes that
    no other value live at the same time uses (an in-place pair may share: the output of an
    elementwise op and an operand buffer that dies at it). Liveness is recomputed from the
    graph, not taken from the plan."""
    wrong = {v: s for v, s in plan.updates_inplace.items() if inplace_updates(graph).get(v) != s}
    if wrong:
        raise MemoryPlanError(f"updates computed in place where that is not safe: {wrong}")
    live = liveness(graph, plan.pinned, plan.updates_inplace)
    missing = set(live.intervals) - set(plan.offsets)
    if missing:
        raise MemoryPlanError(f"plan has no offset for %{sorted(missing)}")
    for i in live.intervals:
        off, need = plan.offsets[i], graph[i].nbytes
        if off % plan.alignment or off < 0 or off + need > plan.arena_bytes:
            raise MemoryPlanError(f"%{i}: offset {off} (+{need} B) is misaligned or outside")
    sanctioned = {(n, b) for n in live.intervals for b in _inplace_sources(graph, live, n)}
    ids = sorted(live.intervals, key=lambda i: live.intervals[i])
    for k, a in enumerate(ids):
        a_start, a_end = live.intervals[a]
        a_lo, a_hi = plan.offsets[a], plan.offsets[a] + graph[a].nbytes
        for b in ids[k + 1 :]:
            b_start, b_end = live.intervals[b]
            if b_start > a_end:
                break
            b_lo, b_hi = plan.offsets[b], plan.offsets[b] + graph[b].nbytes
            if a_lo < b_hi and b_lo < a_hi and (b, a) not in sanctioned:
                raise MemoryPlanError(
                    f"%{a} (steps {a_start}..{a_end}, bytes {a_lo}..{a_hi}) and %{b} "
                    f"(steps {b_start}..{b_end}, bytes {b_lo}..{b_hi}) are live together "
                    "and share bytes"
                )


def new_arena(plan: MemoryPlan) -> np.ndarray:
    """A zeroed, ``plan.alignment``-aligned uint8 arena of ``plan.arena_bytes``."""
    raw = np.zeros(plan.arena_bytes + plan.alignment, dtype=np.uint8)
    shift = -raw.ctypes.data % plan.alignment
    return raw[shift : shift + plan.arena_bytes]


def arena_views(
    plan: MemoryPlan, graph: Graph, arena: np.ndarray | None = None
) -> dict[int, np.ndarray]:
    """A C-contiguous view of ``arena`` (a new one if None), shaped and typed like the node,
    for every planned node id."""
    if arena is None:
        arena = new_arena(plan)
    views = {}
    for i, off in plan.offsets.items():
        node = graph[i]
        views[i] = arena[off : off + node.nbytes].view(node.dtype).reshape(node.shape)
    return views
