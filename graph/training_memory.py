"""Memory planning for a training step: its forward and backward graphs on ONE time line and
in ONE arena. The forward graph runs, then the backward graph; a value the backward graph reads
(a saved activation) lives until that read, so the backward graph's values reuse its bytes
afterwards. Liveness, in-place rules and placement are those of ``memory.py``."""

from __future__ import annotations

from collections.abc import Iterable

from .ir import Graph
from .memory import (
    Liveness,
    MemoryPlan,
    MemoryPlanError,
    _arena_end,
    _buffers,
    _peak,
    _place,
    _plan,
    inplace_updates,
    liveness,
    verify_plan,
)


def training_intervals(
    forward: Graph, backward: Graph, keep: Iterable[int] = ()
) -> tuple[Liveness, Liveness, dict[int, tuple[int, int]], dict[int, tuple[int, int]]]:
    """Liveness of a training step on ONE time line: the forward graph's steps, then the
    backward graph's (shifted past them). A value the backward graph reads (its leaves'
    ``saved_from``) lives until that read, not to the end; forward outputs and ``keep`` live to
    the very end. Returns both graphs' own liveness and their intervals on the joint line."""
    saved = {n.id: n.attrs["saved_from"] for n in backward.leaves() if "saved_from" in n.attrs}
    f_live = liveness(forward, set(saved.values()) | set(keep), inplace_updates(forward))
    b_live = liveness(backward, (), inplace_updates(backward))
    shift = len(f_live.schedule) + 1
    end = shift + len(b_live.schedule)

    def base(backward_id: int) -> int | None:
        leaf = saved.get(b_live.aliases.get(backward_id, backward_id))
        return None if leaf is None else f_live.aliases.get(leaf, leaf)

    last_read: dict[int, int] = {}
    for t, node_id in enumerate(b_live.schedule):
        for i in backward[node_id].inputs:
            if (b := base(i)) is not None:
                last_read[b] = shift + t
    for i in backward.roots():
        if (b := base(i)) is not None:
            last_read[b] = end
    f_intervals = {
        i: (s, last_read.get(i, end) if i in f_live.to_end else e)
        for i, (s, e) in f_live.intervals.items()
    }
    b_intervals = {i: (s + shift, e + shift) for i, (s, e) in b_live.intervals.items()}
    return f_live, b_live, f_intervals, b_intervals


def plan_training_memory(
    forward: Graph, backward: Graph, keep: Iterable[int] = ()
) -> tuple[MemoryPlan, MemoryPlan]:
    """One arena shared by a training step's two graphs (``training_intervals``): the
    backward graph's values reuse the bytes of saved activations once it has read them. Both
    plans carry the shared arena's size and joint peak; executables must share the arena."""
    f_live, b_live, f_intervals, b_intervals = training_intervals(forward, backward, keep)
    f_buffers, f_inplace, f_group = _buffers(forward, f_live, f_intervals)
    b_buffers, b_inplace, b_group = _buffers(backward, b_live, b_intervals)
    # Buffer heads are node ids of two graphs: tag them apart while placing.
    tagged = [(s, e, z, ("f", h)) for s, e, z, h in f_buffers]
    tagged += [(s, e, z, ("b", h)) for s, e, z, h in b_buffers]
    offset_of = _place(tagged)
    arena, peak = _arena_end(tagged, offset_of), _peak(tagged)
    pinned = frozenset(f_live.to_end)
    f_offsets = {h: offset_of[("f", h)] for *_, h in f_buffers}
    b_offsets = {h: offset_of[("b", h)] for *_, h in b_buffers}
    return (
        _plan(
            forward,
            f_live,
            pinned,
            inplace_updates(forward),
            f_inplace,
            f_group,
            f_offsets,
            arena,
            peak,
        ),
        _plan(
            backward,
            b_live,
            frozenset(),
            inplace_updates(backward),
            b_inplace,
            b_group,
            b_offsets,
            arena,
            peak,
        ),
    )


def verify_training_plan(
    forward: Graph,
    backward: Graph,
    plans: tuple[MemoryPlan, MemoryPlan],
    keep: Iterable[int] = (),
) -> None:
    """``verify_plan`` for each graph, then across them: no forward value shares bytes with
    a backward value while both are live on the joint time line."""
    for graph, plan in zip((forward, backward), plans):
        verify_plan(graph, plan)
    _, _, f_intervals, b_intervals = training_intervals(forward, backward, keep)
    f_plan, b_plan = plans
    for a, (a_start, a_end) in f_intervals.items():
        a_lo, a_hi = f_plan.offsets[a], f_plan.offsets[a] + forward[a].nbytes
        for b, (b_start, b_end) in b_intervals.items():
            b_lo, b_hi = b_plan.offsets[b], b_plan.offsets[b] + backward[b].nbytes
            if a_start <= b_end and b_start <= a_end and a_lo < b_hi and b_lo < a_hi:
                raise MemoryPlanError(
                    f"forward %{a} (bytes {a_lo}..{a_hi}, live to step {a_end}) and backward "
                    f"%{b} (bytes {b_lo}..{b_hi}, from step {b_start}) share bytes"
                )
