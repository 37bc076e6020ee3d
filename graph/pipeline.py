"""The pass pipeline: run passes in order, measure each, plan memory, report.

``optimize(graph) -> (graph, report)`` for one graph; ``optimize_training(forward, backward)``
for a training step, where the forward graph must keep every value the backward graph reads
(its leaves with ``attrs["saved_from"]``) under the same id.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ..errors import OptionError
from .compact import compact_saved
from .dot import fusion_groups, to_dot
from .ir import Graph
from .memory import plan_memory
from .passes import PASSES
from .passes.report import GraphSummary, PassRecord, PassReport, graph_stats
from .remat import elementwise_recomputation, fit_budget, parse_bytes
from .training_memory import plan_training_memory

Pass = Callable[..., Graph]

DEFAULT_PASSES: tuple[str, ...] = (
    "dce",
    "constant_folding",
    "simplify",
    "cse",
    # 1x1-conv folding, after CSE (parallel convs must read one id) and before fusion (which
    # would hide a BatchNorm or scale in a fused group, and a conv behind its epilogue). BN and
    # scales fold first, so a BN between two 1x1 convs no longer separates them; chains merge
    # before parallel convs, whose slices would otherwise stand between the convs of a chain.
    "fold_conv_bn",
    "merge_1x1_chain",
    "merge_parallel",
    "dce",  # what simplification, merging and folding left unread
    "fuse_elementwise",
    # After elementwise fusion: that pass builds the maximal elementwise group reading a
    # conv/GEMM result (bias, activation, residual add, in any arrangement), so this one only
    # folds the producer into that group, one node; run first, it would need its own grouping.
    "fuse_epilogue",
    # Last: the order of the final ops sets the planned peak (passes/schedule.py).
    "schedule",
)
PLAN = "plan_memory"
"""The name of the memory-planning step (``disable=("plan_memory",)`` skips it)."""
COMPACT = "compact_saved"
"""The name of the training step's first rewrite, across its two graphs (``compact.py``)."""
RECOMPUTE = "recompute"
"""The name of a training step's default recomputation of the saved values that elementwise
ops rebuild (``remat.elementwise_recomputation``)."""

__all__ = [
    "DEFAULT_PASSES",
    "PassReport",
    "optimize",
    "optimize_training",
    "saved_ids",
    "to_dot",
]


def _resolve(p: str | Pass) -> tuple[str, Pass]:
    if isinstance(p, str):
        if p not in PASSES:
            raise OptionError(f"unknown pass {p!r}; passes: {', '.join(PASSES)}")
        return p, PASSES[p]
    return getattr(p, "__name__", type(p).__name__), p


def optimize(
    graph: Graph,
    passes: Sequence[str | Pass] = DEFAULT_PASSES,
    keep: Iterable[int] = frozenset(),
    disable: Iterable[str] = (),
    plan: bool = True,
    dump_dir: str | Path | None = None,
    label: str | None = None,
) -> tuple[Graph, PassReport]:
    """Run ``passes`` (names from ``graph.passes.PASSES`` or functions) on ``graph``, skipping
    those named in ``disable``; then plan memory with ``keep`` pinned (unless ``plan`` is
    False or ``"plan_memory"`` is disabled). ``dump_dir`` receives the graph as text and dot
    after every step. Returns the optimized graph and its report (``report.plan`` is the
    MemoryPlan)."""
    keep = frozenset(keep)
    disable = set(disable)
    label = label or graph.name or "graph"
    report = PassReport()
    before = stats = graph_stats(graph)
    _dump(dump_dir, label, 0, "input", graph, keep)
    for step, p in enumerate(passes, start=1):
        name, fn = _resolve(p)
        if name in disable:
            continue
        t0 = time.perf_counter()
        result = fn(graph, keep)
        ms = (time.perf_counter() - t0) * 1e3
        missing = sorted(k for k in keep if k in graph and k not in result)
        if missing:
            raise AssertionError(f"pass {name} dropped kept node(s) {missing}")
        graph, new_stats = result, graph_stats(result)
        report.passes.append(PassRecord.measure(name, label, ms, stats, new_stats))
        stats = new_stats
        _dump(dump_dir, label, step, name, graph, keep)
    summary = GraphSummary(before=before, after=stats)
    if plan and PLAN not in disable:
        t0 = time.perf_counter()
        memory_plan = plan_memory(graph, keep)
        ms = (time.perf_counter() - t0) * 1e3
        summary.naive_bytes = memory_plan.naive_bytes
        summary.planned_bytes = memory_plan.arena_bytes
        summary.peak_live_bytes = memory_plan.peak_live_bytes
        report.plans[label] = memory_plan
        report.passes.append(
            PassRecord.measure(PLAN, label, ms, stats, stats, planned_bytes=memory_plan.arena_bytes)
        )
    report.graphs[label] = summary
    return graph, report


def saved_ids(backward: Graph) -> frozenset[int]:
    """The forward node ids a backward graph reads (its leaves' ``saved_from``)."""
    return frozenset(n.attrs["saved_from"] for n in backward.leaves() if "saved_from" in n.attrs)


def optimize_training(
    forward: Graph,
    backward: Graph,
    passes: Sequence[str | Pass] = DEFAULT_PASSES,
    disable: Iterable[str] = (),
    plan: bool = True,
    dump_dir: str | Path | None = None,
    memory_budget: int | str | None = None,
) -> tuple[Graph, Graph, PassReport]:
    """Optimize a training step's two graphs. The forward graph keeps the saved values and
    its outputs; the backward graph is optimized on its own. Then ONE arena is planned for
    both (``training_memory.plan_training_memory``): the backward graph reuses the bytes of
    each saved activation after its last read. The report shows that arena once, on the
    forward graph's summary (``report.plans`` holds both graphs' plans, which must share the
    arena). First, unless disabled, ``compact_saved`` stores what the backward graph reads in
    smaller forms. Unless ``"recompute"`` is disabled, the backward graph recomputes the saved
    values elementwise ops rebuild when that plans a smaller arena
    (``remat.elementwise_recomputation``). ``memory_budget`` (bytes, or a size such as
    ``"200MB"``): recompute saved activations in the backward graph until the arena fits
    (``remat.fit_budget``), or raise ``MemoryBudgetError``. The report's ``recomputed`` says
    what was recomputed."""
    disable = frozenset(disable)
    if COMPACT not in disable:
        forward, backward = compact_saved(forward, backward)

    def plan_pair(f: Graph, b: Graph) -> tuple[Graph, Graph, PassReport]:
        return _optimize_pair(f, b, passes, disable, plan, dump_dir)

    planned = plan and PLAN not in disable
    if memory_budget is None and (not planned or RECOMPUTE in disable):
        return plan_pair(forward, backward)
    if not planned:
        raise OptionError("a memory budget needs the memory plan: do not disable plan_memory")

    # CSE would merge a value recomputed for one chain with the same value recomputed again
    # where it is read (remat.py), keeping it alive in between: the backward graph gets its
    # CSE before recomputation instead.
    def plan_recomputed(f: Graph, b: Graph) -> tuple[Graph, Graph, PassReport]:
        return _optimize_pair(f, b, passes, disable, plan, dump_dir, {"cse"})

    def plan_default(f: Graph, b: Graph) -> tuple[Graph, Graph, PassReport]:
        if RECOMPUTE in disable:
            return plan_pair(f, b)
        return elementwise_recomputation(f, b, plan_pair, plan_recomputed)

    if "cse" not in disable:
        backward = PASSES["cse"](backward)
    if memory_budget is None:
        return plan_default(forward, backward)
    budget = parse_bytes(memory_budget)
    return fit_budget(forward, backward, budget, plan_default, plan_recomputed)


def _optimize_pair(forward, backward, passes, disable, plan, dump_dir, skip_backward=()):
    """``optimize_training`` after ``compact_saved``, for one choice of saved values;
    ``skip_backward``: passes not run on the backward graph."""
    keep = saved_ids(backward) | frozenset(forward.outputs)
    fwd, fwd_report = optimize(forward, passes, keep, disable, False, dump_dir, "forward")
    b_disable = {*disable, *skip_backward}
    bwd, bwd_report = optimize(
        backward, passes, frozenset(), b_disable, False, dump_dir, "backward"
    )
    report = PassReport.merge(fwd_report, bwd_report)
    if plan and PLAN not in disable:
        t0 = time.perf_counter()
        f_plan, b_plan = plan_training_memory(fwd, bwd, keep)
        ms = (time.perf_counter() - t0) * 1e3
        for label, p in (("forward", f_plan), ("backward", b_plan)):
            report.plans[label] = p
            report.graphs[label].naive_bytes = p.naive_bytes
            report.graphs[label].peak_live_bytes = p.peak_live_bytes
        report.graphs["forward"].planned_bytes = f_plan.arena_bytes  # shared: counted once
        f_stats, b_stats = report.graphs["forward"].after, report.graphs["backward"].after
        stats = {k: f_stats[k] + b_stats[k] for k in f_stats}
        report.passes.append(
            PassRecord.measure(PLAN, "both", ms, stats, stats, planned_bytes=f_plan.arena_bytes)
        )
    return fwd, bwd, report


def _dump(
    dump_dir: str | Path | None, label: str, step: int, name: str, graph: Graph, keep
) -> None:
    """The graph as text and as dot, coloured by the fusion groups it has or would have."""
    if dump_dir is None:
        return
    path = Path(dump_dir)
    path.mkdir(parents=True, exist_ok=True)
    stem = f"{label}.{step:02d}.{name}"
    (path / f"{stem}.txt").write_text(str(graph) + "\n")
    (path / f"{stem}.dot").write_text(to_dot(graph, fusion_groups(graph, keep)))
