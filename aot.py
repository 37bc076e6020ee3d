"""Ahead-of-time compilation: ``ng.compile(...).save(path)`` writes one ``.npz`` file (the
optimized forward graph, its memory plan and the input names as JSON; parameters, buffers and
constants as arrays; no pickle), and ``numbagrad.load(path)`` runs it in another process
without the model's Python code, tracing or graph passes. The kernels come from the on-disk
caches (``NUMBAGRAD_CACHE_DIR``, Numba's): a process that shares them compiles nothing."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .backends import get_backend
from .compiler import InferenceModel
from .errors import SavedModelError
from .graph import Graph
from .graph.memory import MemoryPlan
from .graph.serialize import graph_from_dict, graph_to_dict

FORMAT = "numbagrad compiled model"
VERSION = 1
_META = "__numbagrad__"
_BOUND = ("param", "state")


def _bound_key(node_id: int) -> str:
    return f"bound{node_id}"


def _bound_leaves(graph: Graph) -> list:
    return [leaf for leaf in graph.leaves() if leaf.role in _BOUND]


def save(model: InferenceModel, path: str | Path) -> Path:
    """Write ``model`` to ``path`` (``.npz`` added if missing), replacing it atomically."""
    from . import __version__

    path = Path(path)
    path = path if path.suffix == ".npz" else path.with_name(path.name + ".npz")
    exe, graph = model.executable, model.forward_graph
    data, arrays = graph_to_dict(graph)
    arrays.update((_bound_key(leaf.id), exe.read(leaf.id)) for leaf in _bound_leaves(graph))
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "numbagrad": __version__,
        "backend": model.backend,
        "input_names": list(model.input_names),
        "graph": data,
        "plan": exe.plan.to_dict() if exe.plan is not None else None,
    }
    arrays[_META] = np.array(json.dumps(meta))
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


class LoadedModel(InferenceModel):
    """``numbagrad.load``: a saved compiled model, ready to run on ``backend``."""

    def __init__(
        self,
        graph: Graph,
        plan: MemoryPlan | None,
        bound: Mapping[int, np.ndarray],
        input_names: Sequence[str],
        backend: str,
    ) -> None:
        module = get_backend(backend)
        self.forward_graph, self.input_names, self.backend = graph, list(input_names), module.NAME
        self.executable = module.compile(graph, bound, plan)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters and buffers the graph reads, keyed like the model's
        ``state_dict()`` (an inference graph does not read BatchNorm's batch counter)."""
        return {
            leaf.name: self.executable.read(leaf.id) for leaf in _bound_leaves(self.forward_graph)
        }


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
        raise SavedModelError(
            f"{path} is an .npz file, but not a compiled model saved by numbagrad"
        )
    if meta.get("version") != VERSION:
        raise SavedModelError(
            f"{path} was saved in format version {meta.get('version')} by numbagrad "
            f"{meta.get('numbagrad')}; this numbagrad reads version {VERSION}: compile it again"
        )
    return meta, arrays


def load(path: str | Path, backend: str | None = None) -> LoadedModel:
    """A model saved by ``CompiledModel.save``, on ``backend`` (default: the one it was
    compiled for). Call it like the compiled model: ``predict(x)``."""
    path = Path(path)
    meta, arrays = _read(path)
    graph = graph_from_dict(meta["graph"], arrays)
    plan = MemoryPlan.from_dict(meta["plan"]) if meta["plan"] is not None else None
    bound = {leaf.id: arrays[_bound_key(leaf.id)] for leaf in _bound_leaves(graph)}
    return LoadedModel(graph, plan, bound, meta["input_names"], backend or meta["backend"])
