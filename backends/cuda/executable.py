"""The device executable: the numpy ``Executable``'s interface, with every buffer on the GPU.

``buffers[node_id]`` is the node's **device** array (a numba DeviceNDArray, C-contiguous,
shaped like the node), allocated once when the executable is built; reshapes alias their
input. Kernels read and write only these. The host meets the device at four doors:

- ``set_input(node_id, array)``: copy a host value into a leaf's buffer (``np.copyto``
  semantics: same shape, same-kind casting), through a pinned staging array kept per leaf;
- ``output_arrays()``: the outputs copied into host arrays kept per output (valid until the
  next call; callers copy what they keep), so one inference or one loss scalar comes back;
- ``read(node_id)``: a fresh host copy of any buffer (optimizer state, the learning rate);
- host *bindings* (the model's ``Parameter.data`` arrays): uploaded once, into device arrays
  shared by every executable that binds the same host array (``resident``), so a training
  step's forward and backward graphs, and a later inference graph, see one copy of each
  parameter. The device copy is the live one: ``sync_bindings_to_host()`` writes the values
  that this executable updates back into the bound host arrays (what ``state_dict()`` reads);
  ``sync_bindings_to_device()`` uploads them again after the host changed them
  (``load_state_dict``).

Device arrays may be bound too (another executable's buffers: saved activations); they are
used as they are, never copied.
"""

from __future__ import annotations

import time
import warnings
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ...errors import ShapeError
from ...graph import Graph, Node
from ...graph.memory import MemoryPlan
from ..executable import Launch, Lowering, check_array
from ..finite import FiniteChecker
from . import graphs
from .runtime import load_cuda

_RESIDENT: dict[int, tuple[weakref.ref, object]] = {}


def resident(host: np.ndarray):
    """The device copy of a host array, uploaded on first use and shared afterwards."""
    key = id(host)
    entry = _RESIDENT.get(key)
    if entry is not None and entry[0]() is host:
        return entry[1]
    device = load_cuda().to_device(host)

    def forget(ref, key=key):
        if key in _RESIDENT and _RESIDENT[key][0] is ref:
            del _RESIDENT[key]

    _RESIDENT[key] = (weakref.ref(host, forget), device)
    return device


def _is_host(array) -> bool:
    return isinstance(array, np.ndarray)


@dataclass
class DeviceKernel:
    """One lowered node, as ``backends.executable.Kernel`` (device arrays in, out)."""

    node: Node
    launch: Launch
    inputs: list
    out: object
    impl: str
    host_checks: dict = field(default_factory=dict)


class DeviceExecutable:
    """Runs one graph on the GPU. See the module docstring for what lives where."""

    def __init__(
        self,
        graph: Graph,
        lower: Lowering,
        bindings: Mapping[int, object] | None = None,
        backend: str = "cuda",
        plan: MemoryPlan | None = None,
        arena=None,
    ) -> None:
        self._cuda = load_cuda()
        self.graph = graph
        self.backend = backend
        self.plan = plan
        if plan is not None and arena is None:
            arena = self._cuda.to_device(np.zeros(max(plan.arena_bytes, 1), dtype=np.uint8))
        self.arena = arena
        self.buffers: dict[int, object] = {}
        self.host_bindings: dict[int, np.ndarray] = {}
        bindings = dict(bindings or {})
        planned = self._arena_views(plan, arena) if plan is not None else {}
        into_state = plan.updates_inplace if plan is not None else {}
        for node in graph.nodes:
            if node.id in into_state:  # an update computed straight into its state's buffer
                self.buffers[node.id] = self.buffers[into_state[node.id]]
            else:
                self.buffers[node.id] = planned.get(node.id)
            if self.buffers[node.id] is None:
                self.buffers[node.id] = self._buffer_for(node, bindings)
        self.kernels: list[DeviceKernel] = []
        self._checks: dict[int, list] = {}
        for node in graph.ops():
            if self._is_alias(node):
                continue
            launch, impl = lower(node, graph)
            ins = [self.buffers[i] for i in node.inputs]
            checks = dict(getattr(launch, "host_checks", {}))
            self.kernels.append(
                DeviceKernel(node, launch, ins, self.buffers[node.id], impl, checks)
            )
            for position, check in checks.items():
                self._checks.setdefault(node.inputs[position], []).append(check)
        self._updates = [
            (self.buffers[s], self.buffers[v]) for s, v in graph.updates if v not in into_state
        ]
        self._updated = [s for s, _ in graph.updates if s in self.host_bindings]
        self._staging: dict[int, np.ndarray] = {}
        self._outputs = [self._pinned(graph[o]) for o in graph.outputs]
        self._dirty = False
        self._runs = 0
        self._graph: graphs.CapturedGraph | None = None
        self._graph_failed = False
        self._checks_finite = False

    # --- building ---------------------------------------------------------------------------

    def _arena_views(self, plan: MemoryPlan, arena) -> dict[int, object]:
        """Every planned value as a typed, shaped view of its bytes in the device ``arena``
        (device allocations are aligned far beyond ``plan.alignment``). Scalars keep buffers
        of their own: DeviceNDArray cannot reshape a view to 0-d."""
        views = {}
        for i, offset in plan.offsets.items():
            node = self.graph[i]
            if node.shape == ():
                continue
            raw = arena[offset : offset + node.nbytes]
            views[i] = raw.view(np.dtype(node.dtype)).reshape(node.shape)
        return views

    def _is_alias(self, node: Node) -> bool:
        return node.op == "reshape"  # device buffers are always C-contiguous

    def _buffer_for(self, node: Node, bindings: dict):
        if node.id in bindings:
            array = bindings[node.id]
            if _is_host(array):
                check_array(array, node, node.role or "value")
                if not array.flags.c_contiguous:
                    raise ShapeError(f"binding for '{node.name}' must be C-contiguous")
                self.host_bindings[node.id] = array
                return resident(array)
            if tuple(array.shape) != node.shape or str(array.dtype) != node.dtype:
                check_array(np.empty(array.shape, array.dtype), node, node.role or "value")
            return array
        if node.role == "const":
            return self._cuda.to_device(np.ascontiguousarray(node.value, dtype=node.dtype))
        if self._is_alias(node):
            return self.buffers[node.inputs[0]].reshape(node.shape)
        # Zero-filled: optimizer state starts at zero, and no buffer holds garbage.
        return self._cuda.to_device(np.zeros(node.shape, dtype=node.dtype))

    def _pinned(self, node: Node) -> np.ndarray:
        return self._cuda.pinned_array(node.shape, dtype=node.dtype)

    def enable_finite_checks(self, label: str) -> None:
        """Anomaly mode from now on (``backends/finite.py``): after every kernel, synchronize
        and copy its output to the host to check it, so no run is captured as a CUDA graph."""
        checker = FiniteChecker(self.graph, label, self._synchronized_copy)
        self.kernels = checker.wrap(self.kernels, self.buffers)
        self._checks_finite = True

    def _synchronized_copy(self, buffer) -> np.ndarray:
        self._cuda.synchronize()
        return buffer.copy_to_host()

    # --- running ----------------------------------------------------------------------------

    def run(self) -> None:
        """Launch every kernel in order, then copy update values into their state leaves (all
        on the device; nothing is allocated or copied to the host). With CUDA graphs on
        (``graphs.py``), the second run captures this work and every later run replays it."""
        if self._graph is None and self._runs and self._capturable():
            self._graph = self._capture()
        if self._graph is not None:
            self._graph.launch()
            self._dirty = self._dirty or bool(self._updated)
        else:
            self._launch_all()
        self._runs += 1

    def _launch_all(self, stream=0) -> None:
        for k in self.kernels:
            k.launch(k.inputs, k.out)
        self._apply_updates(stream)

    def _capturable(self) -> bool:
        # A host-reference kernel, an MPI collective or a finite check works on the host: it
        # cannot be captured.
        host_work = self._checks_finite or {"reference", "mpi"} & set(self.impl_counts())
        return graphs.enabled() and not self._graph_failed and not host_work

    def _capture(self):
        try:
            return graphs.capture(self._launch_all)
        except Exception as e:
            self._graph_failed = True
            warnings.warn(
                f"CUDA graph capture failed ({e}); launching the kernels one by one",
                RuntimeWarning,
                stacklevel=3,
            )
            return None

    def run_timed(self, seconds: dict[int, float]) -> None:
        """``run``, synchronizing after each kernel to add its wall time to ``seconds``."""
        for k in self.kernels:
            t0 = time.perf_counter()
            k.launch(k.inputs, k.out)
            self._cuda.synchronize()
            seconds[k.node.id] = seconds.get(k.node.id, 0.0) + time.perf_counter() - t0
        self._apply_updates()

    def _apply_updates(self, stream=0) -> None:
        for state, value in self._updates:
            state.copy_to_device(value, stream=stream)
        self._dirty = self._dirty or bool(self._updated)

    def set_input(self, node_id: int, array) -> None:
        """Copy a host value into a leaf's device buffer (``np.copyto`` semantics)."""
        stage = self._staging.get(node_id)
        if stage is None:
            stage = self._staging[node_id] = self._pinned(self.graph[node_id])
        np.copyto(stage, array, casting="same_kind")
        for check in self._checks.get(node_id, ()):
            check(stage)
        self.buffers[node_id].copy_to_device(stage)

    def read(self, node_id: int) -> np.ndarray:
        """A fresh host copy of a node's buffer."""
        return self.buffers[node_id].copy_to_host()

    def output_arrays(self) -> list[np.ndarray]:
        """The outputs, copied to host arrays reused by the next call."""
        for buffer, host in zip((self.buffers[o] for o in self.graph.outputs), self._outputs):
            buffer.copy_to_host(host)
        return self._outputs

    def synchronize(self) -> None:
        """Wait for every launched kernel (copies to the host already do)."""
        self._cuda.synchronize()

    # --- host bindings ----------------------------------------------------------------------

    def sync_bindings_to_host(self) -> None:
        """Copy the bound host arrays this executable updates (parameters, when it holds an
        optimizer step) from the device, if it has run since the last sync."""
        if self._dirty:
            for node_id in self._updated:
                self.buffers[node_id].copy_to_host(self.host_bindings[node_id])
            self._dirty = False

    def sync_bindings_to_device(self) -> None:
        """Upload every bound host array again (after the host changed it)."""
        for node_id, host in self.host_bindings.items():
            self.buffers[node_id].copy_to_device(host)
        self._dirty = False

    def impl_counts(self) -> dict[str, int]:
        """How many kernels run where (``{"cuda": 40}``; "reference" = on the host)."""
        counts: dict[str, int] = {}
        for k in self.kernels:
            counts[k.impl] = counts.get(k.impl, 0) + 1
        return counts
