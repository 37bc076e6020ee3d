"""``PassReport``: what each pass did to each graph, as a table (``str``) or JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..ir import Graph
from ..ops import TensorType, get_op


def graph_stats(graph: Graph) -> dict[str, int]:
    """``nodes``; ``kernels`` (launch units: ops other than reshapes, which alias their
    operand); ``flops`` (each op's registry count); ``intermediate_bytes`` (the kernels'
    outputs, i.e. what an executable allocates besides its leaves)."""
    kernels = [n for n in graph.ops() if n.op != "reshape"]
    flops = 0
    for n in graph.ops():
        ins = [TensorType(graph[i].shape, graph[i].dtype) for i in n.inputs]
        flops += int(get_op(n.op).flops(ins, TensorType(n.shape, n.dtype), n.attrs))
    return {
        "nodes": len(graph),
        "kernels": len(kernels),
        "flops": flops,
        "intermediate_bytes": sum(n.nbytes for n in kernels),
    }


_FIELDS = {"nodes": "nodes", "kernels": "kernels", "flops": "flops", "bytes": "intermediate_bytes"}


@dataclass
class PassRecord:
    """One pass on one graph; ``planned_bytes`` is set on the memory-planning record only."""

    name: str
    graph: str
    ms: float
    nodes_before: int
    nodes_after: int
    kernels_before: int
    kernels_after: int
    flops_before: int
    flops_after: int
    bytes_before: int
    bytes_after: int
    planned_bytes: int | None = None

    @classmethod
    def measure(cls, name: str, label: str, ms: float, before: dict, after: dict, **extra):
        """A record from ``graph_stats`` of the graph before and after the pass."""
        fields = {
            f"{field}_{when}": stats[key]
            for field, key in _FIELDS.items()
            for when, stats in (("before", before), ("after", after))
        }
        return cls(name=name, graph=label, ms=ms, **fields, **extra)


@dataclass
class GraphSummary:
    """One graph through the whole pipeline: stats before and after, and its memory plan."""

    before: dict[str, int]
    after: dict[str, int]
    naive_bytes: int = 0
    planned_bytes: int = 0
    peak_live_bytes: int = 0


@dataclass
class PassReport:
    """Per-pass records and per-graph summaries; totals add up every graph (forward +
    backward for a training step). ``plans`` holds each graph's MemoryPlan (not serialized)."""

    passes: list[PassRecord] = field(default_factory=list)
    graphs: dict[str, GraphSummary] = field(default_factory=dict)
    plans: dict = field(default_factory=dict, repr=False)
    recomputed: Any = None  # what a training step recomputes: graph/remat.Recomputed

    def _total(self, key: str, when: str = "") -> int:
        return sum(
            getattr(g, key) if not when else getattr(g, when)[key] for g in self.graphs.values()
        )

    @property
    def kernels_before(self) -> int:
        return self._total("kernels", "before")

    @property
    def kernels_after(self) -> int:
        return self._total("kernels", "after")

    @property
    def flops_before(self) -> int:
        return self._total("flops", "before")

    @property
    def flops_after(self) -> int:
        return self._total("flops", "after")

    @property
    def naive_bytes(self) -> int:
        return self._total("naive_bytes")

    @property
    def planned_bytes(self) -> int:
        return self._total("planned_bytes")

    @property
    def plan(self):
        """The memory plan, when the report covers a single graph."""
        return next(iter(self.plans.values())) if len(self.plans) == 1 else None

    @classmethod
    def merge(cls, *reports: PassReport) -> PassReport:
        merged = cls()
        for r in reports:
            merged.passes += r.passes
            merged.graphs.update(r.graphs)
            merged.plans.update(r.plans)
            merged.recomputed = r.recomputed or merged.recomputed
        return merged

    def to_dict(self) -> dict:
        return {
            "kernels_before": self.kernels_before,
            "kernels_after": self.kernels_after,
            "flops_before": self.flops_before,
            "flops_after": self.flops_after,
            "naive_bytes": self.naive_bytes,
            "planned_bytes": self.planned_bytes,
            "graphs": {k: asdict(v) for k, v in self.graphs.items()},
            "passes": [asdict(p) for p in self.passes],
            "recomputed": self.recomputed.to_dict() if self.recomputed else None,
        }

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def __str__(self) -> str:
        head = f"{'pass':<18}{'graph':<12}{'ms':>8}  {'nodes':>11}  {'kernels':>11}  "
        head += f"{'MFLOP':>15}  {'intermediates (KiB)':>21}  {'planned (KiB)':>13}"
        lines = [head, "-" * len(head)]
        for p in self.passes:
            planned = f"{p.planned_bytes / 1024:.1f}" if p.planned_bytes is not None else ""
            lines.append(
                f"{p.name:<18}{p.graph:<12}{p.ms:>8.2f}  "
                f"{p.nodes_before:>4} -> {p.nodes_after:<4} {p.kernels_before:>4} -> "
                f"{p.kernels_after:<4} {p.flops_before / 1e6:>6.2f} -> {p.flops_after / 1e6:<6.2f}"
                f" {p.bytes_before / 1024:>9.1f} -> {p.bytes_after / 1024:<9.1f} {planned:>13}"
            )
        lines.append("-" * len(head))
        ratio = self.planned_bytes / self.naive_bytes if self.naive_bytes else 1.0
        lines.append(
            f"total: kernels {self.kernels_before} -> {self.kernels_after}; "
            f"MFLOP {self.flops_before / 1e6:.2f} -> {self.flops_after / 1e6:.2f}; "
            f"intermediates {self.naive_bytes / 1024:.1f} KiB naive -> "
            f"{self.planned_bytes / 1024:.1f} KiB planned ({ratio:.1%})"
        )
        if self.recomputed:
            r = self.recomputed
            names = ", ".join(sorted(set(r.values.values())))
            lines.append(
                f"recomputed in the backward graph: {len(r.values)} saved "
                f"values by {r.nodes} ops, +{r.flops / 1e6:.2f} MFLOP per step: {names}"
            )
        return "\n".join(lines)
