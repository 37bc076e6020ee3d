"""The Numba CUDA backend: the same graphs as the CPU backend, lowered to GPU kernels (tiled
GEMM and implicit-GEMM convolutions in shared memory, block reductions, generated elementwise
kernels), run by a ``DeviceExecutable`` that keeps every buffer on the device.

Importing this package (which ``get_backend("cuda")`` does, at compile time; ``import
numbagrad`` never does) raises a one-sentence ``BackendError`` when numba-cuda is missing or
neither a GPU nor the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) can run kernels.
"""

from __future__ import annotations

from collections.abc import Mapping

from .runtime import load_cuda, simulated

load_cuda()

from ...graph import Graph  # noqa: E402
from ...graph.memory import MemoryPlan  # noqa: E402
from . import batchnorm, collective, epilogue, join, scan, spatial  # noqa: E402,F401  (lowerings)
from .executable import DeviceExecutable  # noqa: E402
from .lowering import LOWERINGS, lower  # noqa: E402

NAME = "cuda"


def compile(  # noqa: A001
    graph: Graph,
    bindings: Mapping[int, object] | None = None,
    plan: MemoryPlan | None = None,
    arena=None,
) -> DeviceExecutable:
    """Lower ``graph``; ``bindings`` map leaf ids to host arrays (uploaded once, shared) or
    device arrays (used in place). With a memory ``plan`` the intermediates are views into one
    device arena (``arena``: another executable's, when two graphs were planned together)."""
    return DeviceExecutable(graph, lower, bindings, backend=NAME, plan=plan, arena=arena)


__all__ = ["LOWERINGS", "NAME", "DeviceExecutable", "compile", "lower", "simulated"]
