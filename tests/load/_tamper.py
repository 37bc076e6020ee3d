"""Saved files to tamper with: small models saved to .npz, and edits of a saved file's JSON
metadata and arrays written back as saved (the digest left as it was: a corrupted file) or
as a hostile author would (the digest computed again over the edited content)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

import numbagrad as ng
from numbagrad import aot_file, nn, optim

META = aot_file.META
X_CONV, X_MLP = (2, 1, 6, 6), (2, 5)


class ConvNet(nn.Module):
    """conv+relu (an epilogue), max-pool, a fused elementwise group (sigmoid * x, tanh),
    linear+tanh (an epilogue)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.pool = nn.Conv2d(1, 2, 3), nn.MaxPool2d(2)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        p = self.pool(self.conv(x).relu())
        z = (p.sigmoid() * p).tanh()
        return self.fc(z.reshape((z.shape[0], 8))).tanh()


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3), nn.Tanh())


def inputs(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def save_model(model: nn.Module, x_shape, backend: str, path: Path) -> Path:
    ng.manual_seed(3)
    return ng.compile(model, ng.Spec(x_shape), backend=backend).save(path)


def save_training(backend: str, path: Path) -> tuple[Path, tuple[np.ndarray, np.ndarray]]:
    """A small classifier's Adam step (host-fed bias corrections, momentum state), one step
    taken; and a batch to go on with."""
    ng.manual_seed(4)
    step = ng.compile_training(
        mlp(),
        nn.CrossEntropyLoss(),
        optim.Adam(0.01),
        ng.Spec(X_MLP),
        ng.Spec((2,), "int64"),
        backend=backend,
    )
    batch = inputs(X_MLP, 1), np.array([0, 2])
    step(*batch)
    return step.save(path), batch


def read(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    return json.loads(str(arrays.pop(META))), arrays


def write(path: Path, meta, arrays: dict[str, np.ndarray], hostile: bool) -> Path:
    """Write ``meta`` and ``arrays`` as a saved file; ``hostile``: with the digest of this
    content (else the digest stays whatever ``meta`` holds)."""
    if hostile and isinstance(meta, dict):
        meta = {**meta, "digest": aot_file.digest(meta, arrays)}
    np.savez(path, **arrays, **{META: np.array(json.dumps(meta))})
    return path


def edited(src: Path, dst: Path, edit: Callable[[dict, dict], None], hostile: bool) -> Path:
    """``src`` with ``edit(meta, arrays)`` applied, written to ``dst``."""
    meta, arrays = read(src)
    edit(meta, arrays)
    return write(dst, meta, arrays, hostile)


def nodes(meta: dict, graph: str = "graph") -> list[dict]:
    """The node dicts of an inference file's graph (``graph``) or a training file's
    (``fwd``/``bwd``)."""
    return (meta["graph"] if graph == "graph" else meta["graphs"][graph])["nodes"]


def node(meta: dict, op: str, graph: str = "graph") -> dict:
    return next(n for n in nodes(meta, graph) if n["op"] == op)
