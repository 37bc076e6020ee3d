"""Ahead-of-time compilation: a compiled model or training step saved as one ``.npz`` file
(graphs, memory plans and the facts needed to run them as JSON; parameters, buffers,
optimizer state and constants as arrays; no pickle), and ``numbagrad.load(path)``, which runs
it in another process without the model's Python code, tracing or graph passes.

- ``ng.compile(...).save(path)``: the optimized forward graph with its parameters; loads as a
  ``LoadedModel``, called like the compiled model.
- ``ng.compile_training(...).save(path)``: both graphs, the parameters, BatchNorm's buffers,
  the optimizer state, dropout's step counter, lr and the step count; loads as a
  ``LoadedTrainingStep`` that goes on training exactly where the saved one stood.

The kernels come from the on-disk caches (``NUMBAGRAD_CACHE_DIR``, Numba's): a process that
shares them compiles nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .backends import get_backend
from .compiler import InferenceModel, TrainingStep, _saved_bindings
from .errors import SavedModelError
from .graph import Graph
from .graph.memory import MemoryPlan
from .graph.serialize import graph_from_dict, graph_to_dict

FORMAT = "numbagrad compiled model"
VERSION = 1
INFERENCE, TRAINING = "inference", "training step"
_META = "__numbagrad__"
_BOUND = ("param", "state")


def _bound_leaves(graph: Graph) -> list:
    return [leaf for leaf in graph.leaves() if leaf.role in _BOUND]


def _plan(exe) -> dict | None:
    return exe.plan.to_dict() if exe.plan is not None else None


def _write(path: str | Path, meta: dict, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` and ``meta`` (as JSON) to ``path`` (``.npz`` added if missing),
    replacing any file there atomically."""
    from . import __version__

    path = Path(path)
    path = path if path.suffix == ".npz" else path.with_name(path.name + ".npz")
    meta = {"format": FORMAT, "version": VERSION, "numbagrad": __version__, **meta}
    arrays = {**arrays, _META: np.array(json.dumps(meta))}
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's file is private; a saved model is not
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- inference ---------------------------------------------------------------------------------


def save(model: InferenceModel, path: str | Path) -> Path:
    """``InferenceModel.save``: the forward graph, its plan and its parameters' values."""
    exe, graph = model.executable, model.forward_graph
    data, arrays = graph_to_dict(graph)
    arrays.update((f"bound{leaf.id}", exe.read(leaf.id)) for leaf in _bound_leaves(graph))
    meta = {
        "kind": INFERENCE,
        "backend": model.backend,
        "input_names": list(model.input_names),
        "graph": data,
        "plan": _plan(exe),
    }
    return _write(path, meta, arrays)


class LoadedModel(InferenceModel):
    """``numbagrad.load`` of a saved compiled model, ready to run on ``backend``."""

    def __init__(self, meta: dict, arrays: dict[str, np.ndarray], backend: str) -> None:
        module = get_backend(backend)
        self.forward_graph = graph_from_dict(meta["graph"], arrays)
        self.input_names, self.backend = list(meta["input_names"]), module.NAME
        bound = {leaf.id: arrays[f"bound{leaf.id}"] for leaf in _bound_leaves(self.forward_graph)}
        self.executable = module.compile(self.forward_graph, bound, _plan_from(meta["plan"]))

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters and buffers the graph reads, keyed like the model's
        ``state_dict()`` (an inference graph does not read BatchNorm's batch counter)."""
        leaves = _bound_leaves(self.forward_graph)
        return {leaf.name: self.executable.read(leaf.id) for leaf in leaves}


def _plan_from(data: dict | None) -> MemoryPlan | None:
    return MemoryPlan.from_dict(data) if data is not None else None


# --- training steps ----------------------------------------------------------------------------
# In a TrainingStep both graphs bind the model's arrays by name (parameters, and buffers such
# as BatchNorm's running statistics: "shared"); every other state leaf (optimizer state, the
# dropout step counter) is its executable's own. A loaded step rebuilds exactly that.


def save_training(step: TrainingStep, path: str | Path) -> Path:
    """``TrainingStep.save``: both graphs and plans, every value they keep between steps,
    the model's other state_dict entries, lr and the step count."""
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
        "plans": {"fwd": _plan(step.forward), "bwd": _plan(step.backward)},
        "shared": names,
        "static": static,
        "counters": counters,
        "state_keys": list(model_state),
        "lr": step.lr,
        "step_count": step.step_count,
    }
    return _write(path, meta, arrays)


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

    def __init__(self, meta: dict, arrays: dict[str, np.ndarray], backend: str) -> None:
        self.backend = get_backend(backend)
        graphs = meta["graphs"]
        self.forward_graph = graph_from_dict(graphs["fwd"], arrays, "fwd")
        self.backward_graph = graph_from_dict(graphs["bwd"], arrays, "bwd")
        self._shared = {name: arrays[f"shared{i}"] for i, name in enumerate(meta["shared"])}
        self._static = {k: arrays[f"static{i}"] for i, k in enumerate(meta["static"])}
        self._counters = {
            name: SimpleNamespace(data=np.array(value, dtype=np.int64))
            for name, value in meta["counters"].items()
        }
        self._step_counters = list(self._counters.values())
        self._state_keys = meta["state_keys"]
        plans = meta["plans"]
        self.forward = self.backend.compile(
            self.forward_graph, self._bindings("fwd", arrays), _plan_from(plans["fwd"])
        )
        bindings = self._bindings("bwd", arrays)
        bindings.update(_saved_bindings(self.backward_graph, self.forward))
        self.backward = self.backend.compile(
            self.backward_graph, bindings, _plan_from(plans["bwd"]), self.forward.arena
        )
        self._feed_seed()
        self.step_count = meta["step_count"]
        self._prepare_steps(meta["lr"])

    def _bindings(self, prefix: str, arrays: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
        graph = self.forward_graph if prefix == "fwd" else self.backward_graph
        return {
            leaf.id: self._shared[leaf.name]
            if leaf.name in self._shared
            else arrays[f"{prefix}.state{leaf.id}"]
            for leaf in _bound_leaves(graph)
        }

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the trained parameters and buffers, keyed and ordered like the saved
        model's ``state_dict()``."""
        self.sync()
        values = {**self._static, **self._shared}
        values.update((name, c.data) for name, c in self._counters.items())
        return {key: np.array(values[key], copy=True) for key in self._state_keys}


# --- loading -----------------------------------------------------------------------------------


def _read(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    if not path.is_file():
        raise SavedModelError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f[_META])) if _META in f.files else {}
            arrays = {k: f[k] for k in f.files if k != _META}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise SavedModelError(f"{path} is not a file saved by numbagrad ({e})") from None
    if meta.get("format") != FORMAT:
        raise SavedModelError(f"{path} is an .npz file, but not a model saved by numbagrad")
    if meta.get("version") != VERSION:
        raise SavedModelError(
            f"{path} was saved in format version {meta.get('version')} by numbagrad "
            f"{meta.get('numbagrad')}; this numbagrad reads version {VERSION}: compile it again"
        )
    return meta, arrays


def load(
    path: str | Path, backend: str | None = None, check_finite: bool | None = None
) -> LoadedModel | LoadedTrainingStep:
    """A model or training step saved by ``.save(path)``, on ``backend`` (default: the one it
    was compiled for): a ``LoadedModel`` called as ``predict(x)``, or a
    ``LoadedTrainingStep`` called as ``loss = step(x, y)``. ``check_finite``: anomaly mode,
    as in ``numbagrad.compile``."""
    path = Path(path)
    meta, arrays = _read(path)
    kind = {INFERENCE: LoadedModel, TRAINING: LoadedTrainingStep}[meta["kind"]]
    loaded = kind(meta, arrays, backend or meta["backend"])
    loaded._arm_finite_checks(check_finite)
    return loaded
