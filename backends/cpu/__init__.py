"""The Numba CPU backend: hand-written kernels for the heavy ops, generated kernels for the
rest, all compiled with Numba's on-disk cache, all parallel on Numba's threads alone (BLAS
single-threaded while they run: threads.py)."""

from __future__ import annotations

import contextlib
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
from .compile_helper import first_run
from .lowering import lower
from .threads import single_threaded_blas

NAME = "cpu"


class CpuExecutable(Executable):
    """An ``Executable`` whose runs keep BLAS at one thread (``threads.py``) and whose first
    run, on a cold kernel cache, has a helper process compile from the other end
    (``compile_helper.py``)."""

    _ran = False

    def run(self) -> None:
        with single_threaded_blas(), self._first_run():
            super().run()

    def run_timed(self, seconds: dict[int, float]) -> None:
        with single_threaded_blas(), self._first_run():
            super().run_timed(seconds)

    def _first_run(self) -> contextlib.AbstractContextManager:
        if self._ran:
            return contextlib.nullcontext()
        self._ran = True
        return first_run(self.graph, self.kernels)


def compile(  # noqa: A001
    graph: Graph,
    bindings: Mapping[int, np.ndarray] | None = None,
    plan: MemoryPlan | None = None,
    arena: np.ndarray | None = None,
) -> CpuExecutable:
    return CpuExecutable(graph, lower, bindings, backend=NAME, plan=plan, arena=arena)
