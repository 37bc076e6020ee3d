"""Backends: ``interp`` (NumPy references), ``cpu`` (Numba JIT), ``cuda`` (Numba CUDA)."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import BackendError

BACKENDS = ("interp", "cpu", "cuda")


def get_backend(name: str) -> ModuleType:
    """The backend module: it has ``NAME`` and ``compile(graph, bindings) -> Executable``."""
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return importlib.import_module(f"{__name__}.{name}")
