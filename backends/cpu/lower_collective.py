"""CPU lowering of ``allreduce``: the host launch of ``backends/collective.py`` (pack the
bucket in the arena, one MPI Allreduce, scale) on the executable's arrays."""

from __future__ import annotations

from ..collective import host_allreduce_launch
from .lowering import lowers


@lowers("allreduce")
def _allreduce(node, graph):
    return host_allreduce_launch(node)
