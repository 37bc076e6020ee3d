"""The Numba CPU backend: hand-written kernels for the heavy ops, generated kernels for the
rest, all compiled with Numba's on-disk cache."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ...graph import Graph
from ...graph.memory import MemoryPlan
from .. import numba_cache  # noqa: F401  (before any @njit(cache=True) kernel is decorated)
from ..executable import Executable
from . import lower_epilogue, lower_join, lower_norm, lower_spatial  # noqa: F401  (lowerings)
from .lowering import lower

NAME = "cpu"


def compile(  # noqa: A001
    graph: Graph,
    bindings: Mapping[int, np.ndarray] | None = None,
    plan: MemoryPlan | None = None,
    arena: np.ndarray | None = None,
) -> Executable:
    return Executable(graph, lower, bindings, backend=NAME, plan=plan, arena=arena)
