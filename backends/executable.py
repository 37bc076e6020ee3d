"""The executable every backend produces: buffers for every node, allocated once, and a list
of kernels that write into them. Backends differ only in how they lower a node to a kernel."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ..errors import DTypeError, ShapeError
from ..graph import Graph, Node
from ..graph.ir import format_type
from ..graph.memory import MemoryPlan, arena_views, new_arena
from .finite import FiniteChecker

Launch = Callable[[list[np.ndarray], np.ndarray], None]
"""A lowered node: reads the input arrays, writes the output array in place."""

Lowering = Callable[[Node, Graph], tuple[Launch, str]]
"""Lowers one node; returns its launch and where it runs ("numba", "reference", ...)."""

Prepare = Callable[[list[np.ndarray], np.ndarray], Callable[[], None]]
"""What a launch does once per set of buffers: returns the call that runs it on them."""


def preparable(prepare: Prepare) -> Launch:
    """A launch whose per-buffer work (views, reshapes) ``prepare`` does once: an executable,
    whose buffers never change, binds it once (``bind``); a direct call prepares each time.
    At batch 1 the reshapes of LeNet-5's elementwise kernels cost as much as their loops."""

    def launch(inputs: list[np.ndarray], out: np.ndarray) -> None:
        prepare(inputs, out)()

    launch.prepare = prepare
    return launch


def bind(launch: Launch, inputs: list[np.ndarray], out: np.ndarray) -> Callable[[], None]:
    """The launch as a call without arguments on these buffers."""
    prepare = getattr(launch, "prepare", None)
    if prepare is not None:
        return prepare(list(inputs), out)
    return functools.partial(launch, inputs, out)


@dataclass
class Kernel:
    node: Node
    launch: Launch
    inputs: list[np.ndarray]
    out: np.ndarray
    impl: str
    call: Callable[[], None] = field(init=False, repr=False)  # the launch bound to the buffers

    def __post_init__(self) -> None:
        self.call = bind(self.launch, self.inputs, self.out)


def check_array(array: np.ndarray, node: Node, what: str) -> None:
    """Refuse an array whose shape or dtype differs from the node's, naming both."""
    if array.shape != node.shape or str(array.dtype) != node.dtype:
        error = ShapeError if array.shape != node.shape else DTypeError
        raise error(
            f"{what} '{node.name}' expects {format_type(node.shape, node.dtype)}, "
            f"got {format_type(array.shape, str(array.dtype))}"
        )


class Executable:
    """Runs one graph. ``bindings`` give external arrays for leaves (parameters, optimizer
    state, values saved by another executable). With a memory ``plan`` every planned value is
    a view into one arena, allocated here once or given (``arena``: another executable's, for
    a training step's two graphs planned together); without one, every other node gets a buffer of
    its own. Reshapes alias their input. ``run`` allocates nothing."""

    def __init__(
        self,
        graph: Graph,
        lower: Lowering,
        bindings: Mapping[int, np.ndarray] | None = None,
        backend: str = "",
        plan: MemoryPlan | None = None,
        arena: np.ndarray | None = None,
    ) -> None:
        self.graph = graph
        self.backend = backend
        self.plan = plan
        self.arena = new_arena(plan) if plan is not None and arena is None else arena
        self.buffers: dict[int, np.ndarray] = {}
        bindings = dict(bindings or {})
        planned = arena_views(plan, graph, self.arena) if plan is not None else {}
        into_state = plan.updates_inplace if plan is not None else {}
        for node in graph.nodes:
            if node.id in into_state:  # an update computed straight into its state's buffer
                self.buffers[node.id] = self.buffers[into_state[node.id]]
            elif node.id in planned:
                self.buffers[node.id] = planned[node.id]
            else:
                self.buffers[node.id] = self._buffer_for(node, bindings)
        self.kernels: list[Kernel] = []
        for node in graph.ops():
            if self._is_alias(node):
                continue
            launch, impl = lower(node, graph)
            ins = [self.buffers[i] for i in node.inputs]
            self.kernels.append(Kernel(node, launch, ins, self.buffers[node.id], impl))
        self._updates = [
            (self.buffers[s], self.buffers[v]) for s, v in graph.updates if v not in into_state
        ]

    def _is_alias(self, node: Node) -> bool:
        return node.op == "reshape" and self.buffers[node.inputs[0]].flags.c_contiguous

    def _buffer_for(self, node: Node, bindings: dict[int, np.ndarray]) -> np.ndarray:
        if node.id in bindings:
            array = bindings[node.id]
            check_array(array, node, node.role or "value")
            if not array.flags.c_contiguous:
                raise ShapeError(f"binding for '{node.name}' must be C-contiguous")
            return array
        if node.role == "const":
            return node.value
        if self._is_alias(node):
            return self.buffers[node.inputs[0]].reshape(node.shape)
        return np.zeros(node.shape, dtype=node.dtype)

    def enable_finite_checks(self, label: str) -> None:
        """Anomaly mode from now on: every run checks every float value it makes and raises
        ``NonFiniteError`` at the first NaN or infinity (``backends/finite.py``); ``label``
        names the graph in the message ("forward", "backward")."""
        self.kernels = FiniteChecker(self.graph, label, np.asarray).wrap(self.kernels, self.buffers)

    def run(self) -> None:
        for k in self.kernels:
            k.call()
        self._apply_updates()

    def run_timed(self, seconds: dict[int, float]) -> None:
        """``run``, adding each kernel's wall time to ``seconds[node id]`` (for profiles)."""
        for k in self.kernels:
            t0 = time.perf_counter()
            k.call()
            seconds[k.node.id] = seconds.get(k.node.id, 0.0) + time.perf_counter() - t0
        self._apply_updates()

    def _apply_updates(self) -> None:
        for state, value in self._updates:
            np.copyto(state, value)

    def output_arrays(self) -> list[np.ndarray]:
        return [self.buffers[o] for o in self.graph.outputs]

    # The host-side doors the compiler uses, so device executables (backends/cuda) can differ.

    def set_input(self, node_id: int, array) -> None:
        """Copy a host value into a leaf's buffer (``np.copyto`` semantics)."""
        np.copyto(self.buffers[node_id], array, casting="same_kind")

    def read(self, node_id: int) -> np.ndarray:
        """A copy of a node's buffer."""
        return self.buffers[node_id].copy()

    def sync_bindings_to_host(self) -> None:
        """Nothing to do here: bound arrays are the buffers (a device executable copies)."""

    def sync_bindings_to_device(self) -> None:
        """Nothing to do here (see ``sync_bindings_to_host``)."""

    def impl_counts(self) -> dict[str, int]:
        """How many kernels run where (e.g. ``{"numba": 40, "reference": 2}``)."""
        counts: dict[str, int] = {}
        for k in self.kernels:
            counts[k.impl] = counts.get(k.impl, 0) + 1
        return counts
