"""Ahead-of-time compilation: a compiled model or training step saved as one ``.npz`` file
(graphs and the facts needed to run them as JSON; parameters, buffers, optimizer state and
constants as arrays; no pickle; ``aot_file.py``), and ``numbagrad.load(path)``, which runs it
in another process without the model's Python code, tracing or graph passes.

- ``ng.compile(...).save(path)``: the optimized forward graph with its parameters; loads as a
  ``LoadedModel``, called like the compiled model.
- ``ng.compile_training(...).save(path)``: both graphs, the parameters, BatchNorm's buffers,
  the optimizer state, dropout's step counter, lr and the step count; loads as a
  ``LoadedTrainingStep`` that goes on training exactly where the saved one stood.

Loading trusts nothing in the file: the metadata must have exactly the keys and types written
here, each graph is verified node by node (``graph/serialize.py``), every array must have the
shape and dtype of the leaf it binds, a backward graph may read only forward values of its own
type, and memory plans are not read but planned again from the verified graphs (the planner is
deterministic: the plan the saved model ran with). Kernels are generated from the op registry,
never from text in the file. Any failure is a one-sentence ``SavedModelError``.

The kernels come from the on-disk caches (``NUMBAGRAD_CACHE_DIR``, Numba's): a process that
shares them compiles nothing.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from . import aot_file, aot_ops
from .aot_checks import check_training_graphs, shared_binding
from .backends import BACKENDS, get_backend
from .compiler import InferenceModel, TrainingStep, _saved_bindings
from .errors import SavedModelError
from .graph import Graph
from .graph.memory import plan_memory
from .graph.pipeline import saved_ids
from .graph.serialize import describe_node, graph_from_dict, graph_to_dict
from .graph.training_memory import plan_training_memory
from .graph.untrusted import ArrayStore, boolean, fields, integer, items, number, refuse, string

INFERENCE, TRAINING = "inference", "training step"
_BOUND = ("param", "state")
_COMMON = ("format", "version", "numbagrad", "digest", "kind", "backend")
_INFERENCE_KEYS = (*_COMMON, "input_names", "graph", "planned")
_TRAINING_KEYS = (
    *_COMMON,
    *("graphs", "planned", "shared", "static", "counters", "state_keys", "lr", "step_count"),
)


def _bound_leaves(graph: Graph) -> list:
    return [leaf for leaf in graph.leaves() if leaf.role in _BOUND]


def _write(path: str | Path, meta: dict, arrays: dict[str, np.ndarray], *graphs: Graph) -> Path:
    """Write the file (``.npz`` added to ``path`` if missing), with a record of the custom
    ops the graphs use (``aot_ops.py``); returns its path."""
    custom = aot_ops.records(*graphs)
    if custom:
        meta = {**meta, aot_ops.KEY: custom}
    path = Path(path)
    path = path if path.suffix == ".npz" else path.with_name(path.name + ".npz")
    aot_file.write(path, meta, arrays)
    return path


def _compile(backend, label: str, graph: Graph, bindings, plan, arena=None):
    try:
        return backend.compile(graph, bindings, plan, arena)
    except MemoryError:
        refuse(label, "its buffers need more memory than this machine has")


# --- inference ---------------------------------------------------------------------------------


def save(model: InferenceModel, path: str | Path) -> Path:
    """``InferenceModel.save``: the forward graph, whether it is memory-planned, and its
    parameters' values."""
    exe, graph = model.executable, model.forward_graph
    data, arrays = graph_to_dict(graph)
    arrays.update((f"bound{leaf.id}", exe.read(leaf.id)) for leaf in _bound_leaves(graph))
    meta = {
        "kind": INFERENCE,
        "backend": model.backend,
        "input_names": list(model.input_names),
        "graph": data,
        "planned": exe.plan is not None,
    }
    return _write(path, meta, arrays, graph)


class LoadedModel(InferenceModel):
    """``numbagrad.load`` of a saved compiled model, ready to run on ``backend``."""

    def __init__(self, meta: dict, arrays: dict[str, np.ndarray], backend: str | None) -> None:
        module = _backend(meta, _INFERENCE_KEYS, backend)
        store = ArrayStore(arrays)
        graph = graph_from_dict(meta["graph"], store)
        names = items(meta["input_names"], "metadata input_names", string, unique=True)
        if names != [graph[i].name for i in graph.inputs]:
            refuse("metadata input_names", "they are not the names of the graph's inputs")
        if not graph.outputs:
            refuse("graph outputs", "a saved model has at least one output")
        bound = {
            leaf.id: store.take(
                f"bound{leaf.id}", leaf.shape, leaf.dtype, describe_node("graph", leaf)
            )
            for leaf in _bound_leaves(graph)
        }
        _all_used(store)
        plan = plan_memory(graph) if boolean(meta["planned"], "metadata planned") else None
        self.forward_graph, self.input_names, self.backend = graph, names, module.NAME
        self.executable = _compile(module, "graph", graph, bound, plan)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters and buffers the graph reads, keyed like the model's
        ``state_dict()`` (an inference graph does not read BatchNorm's batch counter)."""
        leaves = _bound_leaves(self.forward_graph)
        return {leaf.name: self.executable.read(leaf.id) for leaf in leaves}


def _backend(meta: dict, keys: tuple[str, ...], backend: str | None):
    """The backend module: ``backend`` if given (the caller's choice), else the file's; after
    checking the metadata's keys and the entries every kind of file has."""
    fields(meta, keys + aot_ops.optional_keys(meta), "metadata")
    string(meta["numbagrad"], "metadata numbagrad")
    saved = string(meta["backend"], "metadata backend", BACKENDS)
    return get_backend(backend or saved)


def _all_used(store: ArrayStore) -> None:
    unused = store.unused()
    if unused:
        refuse(f"array {unused[0]!r}", "no part of the saved model uses it")


# --- training steps ----------------------------------------------------------------------------
# In a TrainingStep both graphs bind the model's arrays by name (parameters, and buffers such
# as BatchNorm's running statistics: "shared"); every other state leaf (optimizer state, the
# dropout step counter) is its executable's own. A loaded step rebuilds exactly that.


def save_training(step: TrainingStep, path: str | Path) -> Path:
    """``TrainingStep.save``: both graphs, whether they are memory-planned, every value they
    keep between steps, the model's other state_dict entries, lr and the step count."""
    model_state, shared_names, counters = _model_state(step)
    graphs = {
        "fwd": (step.forward_graph, step.forward),
        "bwd": (step.backward_graph, step.backward),
    }
    arrays: dict[str, np.ndarray] = {}
    meta_graphs, shared = {}, {}
    for prefix, (graph, exe) in graphs.items():
        meta_graphs[prefix], consts = graph_to_dict(graph, prefix)
        arrays.update(consts)
        for leaf in _bound_leaves(graph):
            if leaf.name in shared_names:
                shared.setdefault(leaf.name, exe.read(leaf.id))
            else:
                arrays[f"{prefix}.state{leaf.id}"] = exe.read(leaf.id)
    names = list(shared)
    arrays.update((f"shared{i}", shared[name]) for i, name in enumerate(names))
    static = [k for k in model_state if k not in shared and k not in counters]
    arrays.update((f"static{i}", model_state[k]) for i, k in enumerate(static))
    meta = {
        "kind": TRAINING,
        "backend": step.backend.NAME,
        "graphs": meta_graphs,
        "planned": step.forward.plan is not None,
        "shared": names,
        "static": static,
        "counters": counters,
        "state_keys": list(model_state),
        "lr": step.lr,
        "step_count": step.step_count,
    }
    return _write(path, meta, arrays, step.forward_graph, step.backward_graph)


def _model_state(step: TrainingStep) -> tuple[dict[str, np.ndarray], set[str], dict[str, int]]:
    """The step's model's state_dict, the names both graphs bind to the model's arrays
    (parameters and buffers), and the values of the step counters (BatchNorm's batches)."""
    if isinstance(step, LoadedTrainingStep):
        counters = {name: int(c.data) for name, c in step._counters.items()}
        return step.state_dict(), set(step._shared), counters
    step.sync()
    buffers = dict(step.model.named_buffers())
    ticked = {id(c) for c in step._step_counters}
    counters = {name: int(b.data) for name, b in buffers.items() if id(b) in ticked}
    names = {name for name, _ in step.model.named_parameters()} | set(buffers)
    return step.model.state_dict(), names, counters


class LoadedTrainingStep(TrainingStep):
    """``numbagrad.load`` of a saved training step: ``loss = step(x, y, lr=None)`` goes on
    from the saved step count with the saved optimizer state. There is no model object:
    ``state_dict()`` gives what the model's would. Built from the file, not by tracing, so
    ``TrainingStep.__init__`` is not called; the running methods are TrainingStep's."""

    def __init__(self, meta: dict, arrays: dict[str, np.ndarray], backend: str | None) -> None:
        self.backend = _backend(meta, _TRAINING_KEYS, backend)
        store = ArrayStore(arrays)
        graphs = fields(meta["graphs"], ("fwd", "bwd"), "metadata graphs")
        fwd = graph_from_dict(graphs["fwd"], store, "fwd", "forward graph")
        bwd = graph_from_dict(graphs["bwd"], store, "bwd", "backward graph", saved_inputs=True)
        check_training_graphs(fwd, bwd)
        self.forward_graph, self.backward_graph = fwd, bwd
        lr, step_count = (
            number(meta["lr"], "metadata lr"),
            integer(meta["step_count"], "metadata step_count"),
        )
        self._read_model_state(meta, store)
        bindings = {prefix: self._bindings(prefix, store) for prefix in ("fwd", "bwd")}
        _all_used(store)
        plans = (None, None)
        if boolean(meta["planned"], "metadata planned"):
            plans = plan_training_memory(fwd, bwd, saved_ids(bwd) | frozenset(fwd.outputs))
        self.forward = _compile(self.backend, "forward graph", fwd, bindings["fwd"], plans[0])
        bindings["bwd"].update(_saved_bindings(bwd, self.forward))
        arena = self.forward.arena
        self.backward = _compile(
            self.backend, "backward graph", bwd, bindings["bwd"], plans[1], arena
        )
        self._feed_seed()
        self.step_count = step_count
        self._prepare_steps(lr)

    def _read_model_state(self, meta: dict, store: ArrayStore) -> None:
        """The model's arrays both graphs bind by name, its other state_dict entries, its step
        counters and the order of its state_dict keys."""
        shared = items(meta["shared"], "metadata shared", string, unique=True)
        self._shared = {
            name: store.take_any(f"shared{i}", f"metadata shared[{i}]")
            for i, name in enumerate(shared)
        }
        static = items(meta["static"], "metadata static", string, unique=True)
        self._static = {
            key: store.take_any(f"static{i}", f"metadata static[{i}]")
            for i, key in enumerate(static)
        }
        if not isinstance(meta["counters"], dict):
            refuse("metadata counters", "expected a JSON object of step counts")
        self._counters = {
            string(name, "metadata counters"): SimpleNamespace(
                data=np.array(integer(value, f"metadata counters {name!r}"), dtype=np.int64)
            )
            for name, value in meta["counters"].items()
        }
        self._step_counters = list(self._counters.values())
        keys = items(meta["state_keys"], "metadata state_keys", string, unique=True)
        known = set(self._shared) | set(self._static) | set(self._counters)
        unknown = [k for k in keys if k not in known]
        if unknown:
            refuse("metadata state_keys", f"{unknown[0]!r} is none of the saved values")
        self._state_keys = keys

    def _bindings(self, prefix: str, store: ArrayStore) -> dict[int, np.ndarray]:
        """Each param/state leaf's array: the model's by name, else the graph's own."""
        graph = self.forward_graph if prefix == "fwd" else self.backward_graph
        label = "forward graph" if prefix == "fwd" else "backward graph"
        bound = {}
        for leaf in _bound_leaves(graph):
            if leaf.name in self._shared:
                bound[leaf.id] = shared_binding(leaf, self._shared[leaf.name], label)
            else:
                key, where = f"{prefix}.state{leaf.id}", describe_node(label, leaf)
                bound[leaf.id] = store.take(key, leaf.shape, leaf.dtype, where)
        return bound

    def _feed_step_scalars(self, step: int) -> None:
        """TrainingStep's, refusing a host-fed scalar (Adam's bias corrections, ...) that a
        tampered file makes impossible to compute (``adam.bias_correction1(2.0)``)."""
        try:
            super()._feed_step_scalars(step)
        except (ArithmeticError, ValueError) as e:
            raise SavedModelError(
                f"a host-fed scalar input of the loaded step has no value at step {step} ({e})"
            ) from None

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the trained parameters and buffers, keyed and ordered like the saved
        model's ``state_dict()``."""
        self.sync()
        values = {**self._static, **self._shared}
        values.update((name, c.data) for name, c in self._counters.items())
        return {key: np.array(values[key], copy=True) for key in self._state_keys}


# --- loading -----------------------------------------------------------------------------------


def load(
    path: str | Path,
    backend: str | None = None,
    check_finite: bool | None = None,
    allow_changed_ops: bool = False,
) -> LoadedModel | LoadedTrainingStep:
    """A model or training step saved by ``.save(path)``, on ``backend`` (default: the one it
    was compiled for): a ``LoadedModel`` called as ``predict(x)``, or a
    ``LoadedTrainingStep`` called as ``loss = step(x, y)``. Any file that is not such a save,
    intact, is refused with a ``SavedModelError``. ``check_finite``: anomaly mode, as in
    ``numbagrad.compile``. Custom ops the file uses must be registered (import the modules
    that define them first) with the definitions they had when saved, unless
    ``allow_changed_ops``."""
    path = Path(path)
    meta, arrays = aot_file.read(path)
    try:
        if "kind" not in meta:
            refuse("metadata", "the key 'kind' is missing")
        kind = string(meta["kind"], "metadata kind", (INFERENCE, TRAINING))
        recorded = aot_ops.check_records(meta, allow_changed_ops)
        loaded = LoadedModel if kind == INFERENCE else LoadedTrainingStep
        model = loaded(meta, arrays, backend)
        graphs = [model.forward_graph, getattr(model, "backward_graph", model.forward_graph)]
        aot_ops.check_recorded(recorded, *graphs)
    except SavedModelError as e:
        raise SavedModelError(f"{path}: {e}") from None
    model._arm_finite_checks(check_finite)
    return model
