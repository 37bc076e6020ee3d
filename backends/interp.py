"""The reference backend: every op runs its NumPy definition. Slow, obvious, always right."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..graph import Graph, Node
from ..graph.memory import MemoryPlan
from ..graph.ops import get_op
from .collective import host_allreduce_launch
from .executable import Executable, Launch

NAME = "interp"


def reference_launch(node: Node) -> Launch:
    """A launch that evaluates the op's NumPy reference into the output buffer."""
    reference, attrs = get_op(node.op).reference, dict(node.attrs)

    def launch(inputs: list[np.ndarray], out: np.ndarray) -> None:
        np.copyto(out, reference(*inputs, **attrs), casting="same_kind")

    return launch


def lower(node: Node, graph: Graph) -> tuple[Launch, str]:
    if node.op == "allreduce":  # its reference is a world of one: the job's is MPI's
        return host_allreduce_launch(node), "mpi"
    return reference_launch(node), "reference"


def compile(  # noqa: A001
    graph: Graph,
    bindings: Mapping[int, np.ndarray] | None = None,
    plan: MemoryPlan | None = None,
    arena: np.ndarray | None = None,
) -> Executable:
    return Executable(graph, lower, bindings, backend=NAME, plan=plan, arena=arena)


def evaluate(graph: Graph, feeds: Mapping[int, np.ndarray]) -> list[np.ndarray]:
    """Run ``graph`` once on ``feeds`` (leaf id -> array, copied in); return output copies."""
    exe = compile(graph)
    for node_id, array in feeds.items():
        np.copyto(exe.buffers[node_id], array)
    exe.run()
    return [a.copy() for a in exe.output_arrays()]
