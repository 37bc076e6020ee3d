"""Per-kernel runtime profiles of compiled executables: time per kernel and per layer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import OptionError
from .executable import Executable


@dataclass(frozen=True)
class KernelTime:
    graph: str  # the executable's graph name
    node: int
    op: str
    layer: str  # the layer path ("" for ops outside any layer, e.g. the optimizer)
    impl: str  # where it ran: "numba", "reference" (NumPy fallback), "cuda", ...
    ms: float  # mean milliseconds per run


@dataclass
class KernelProfile:
    """Kernel times, slowest first; ``by_layer()`` sums them per layer path."""

    kernels: list[KernelTime]
    runs: int

    @property
    def total_ms(self) -> float:
        return sum(k.ms for k in self.kernels)

    def by_layer(self) -> list[tuple[str, float, int]]:
        """(layer, ms per run, kernel count), slowest first."""
        layers: dict[str, list[float]] = {}
        for k in self.kernels:
            layers.setdefault(k.layer or "(no layer)", []).append(k.ms)
        rows = [(name, sum(ms), len(ms)) for name, ms in layers.items()]
        return sorted(rows, key=lambda r: -r[1])

    def __str__(self) -> str:
        total = self.total_ms or 1.0
        w = max([22, *(len(k.op) + 2 for k in self.kernels)])  # fused ops have long names
        head = f"{'ms/run':>9} {'%':>6}  {'op':<{w}}{'impl':<10}{'graph':<24}layer"
        lines = [f"per kernel (mean of {self.runs} runs, {self.total_ms:.3f} ms total)", head]
        for k in self.kernels:
            lines.append(
                f"{k.ms:>9.4f} {100 * k.ms / total:>5.1f}%  {k.op:<{w}}{k.impl:<10}"
                f"{k.graph[:23]:<24}{k.layer}"
            )
        lines += ["", "per layer", f"{'ms/run':>9} {'%':>6}  {'kernels':>7}  layer"]
        for name, ms, count in self.by_layer():
            lines.append(f"{ms:>9.4f} {100 * ms / total:>5.1f}%  {count:>7}  {name}")
        return "\n".join(lines)


def profile_runs(executables: Sequence[Executable], n_runs: int) -> KernelProfile:
    """Run the executables in order ``n_runs`` times (after one untimed warm-up run), timing
    each kernel; inputs must already be fed."""
    if n_runs < 1:
        raise OptionError(f"profile: n_runs must be at least 1, got {n_runs}")
    for exe in executables:
        exe.run()
    seconds: list[dict[int, float]] = [{} for _ in executables]
    for _ in range(n_runs):
        for exe, acc in zip(executables, seconds):
            exe.run_timed(acc)
    kernels = [
        KernelTime(
            exe.graph.name,
            k.node.id,
            k.node.op,
            k.node.name,
            k.impl,
            1e3 * acc[k.node.id] / n_runs,
        )
        for exe, acc in zip(executables, seconds)
        for k in exe.kernels
    ]
    return KernelProfile(sorted(kernels, key=lambda k: -k.ms), n_runs)
