"""The Numba CPU backend: hand-written kernels for the heavy ops, generated kernels for the
rest, all compiled with Numba's on-disk cache, all parallel on Numba's threads alone (BLAS
single-threaded while they run: threads.py)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ...graph import Graph
from ...graph.memory import MemoryPlan
from .. import numba_cache  # noqa: F401  (before any @njit(cache=True) kernel is decorated)
from ..executable import Executable
from . import (  # noqa: F401  (lowerings register on import)
    lower_collective,
    lower_epilogue,
    lower_join,
    lower_norm,
    lower_scan,
    lower_spatial,
)
from .lowering import lower
from .threads import single_threaded_blas

NAME = "cpu"


class CpuExecutable(Executable):
    """An ``Executable`` whose runs keep BLAS at one thread (``threads.py``)."""

    def run(self) -> None:
        with single_threaded_blas():
            super().run()

    def run_timed(self, seconds: dict[int, float]) -> None:
        with single_threaded_blas():
            super().run_timed(seconds)


def compile(  # noqa: A001
    graph: Graph,
    bindings: Mapping[int, np.ndarray] | None = None,
    plan: MemoryPlan | None = None,
    arena: np.ndarray | None = None,
) -> CpuExecutable:
    return CpuExecutable(graph, lower, bindings, backend=NAME, plan=plan, arena=arena)
