"""Generated CUDA kernels live as .py files in the cache directory (``$NUMBAGRAD_CACHE_DIR``,
next to the CPU backend's), named by a hash of their source. On a GPU they compile with
``cache=True``, so a second process loads the compiled code instead of compiling again."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ..cpu.cache import cache_dir
from .runtime import load_cuda, simulated

_loaded: dict[str, Callable] = {}


def _salt() -> str:
    import numba

    try:
        from numba_cuda import __version__ as numba_cuda_version
    except ImportError:  # pragma: no cover - load_cuda refuses this case earlier
        numba_cuda_version = "?"
    mode = "sim" if simulated() else "gpu"
    return (
        f"numbagrad-0.1.0/numba-{numba.__version__}/numba-cuda-{numba_cuda_version}/"
        f"{mode}/py{sys.version_info[:2]}"
    )


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_kernel(source: str, func_name: str = "kernel") -> Callable:
    """Compile generated ``source`` (a module defining ``func_name`` with ``@jit``) through a
    file in the cache directory; a file whose content does not match its name is rewritten."""
    load_cuda()
    key = hashlib.sha256(f"{_salt()}\n{source}".encode()).hexdigest()[:20]
    if key in _loaded:
        return _loaded[key]
    folder = cache_dir() / "cuda_kernels"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"k_{key}.py"
    try:
        intact = path.read_text() == source
    except (OSError, UnicodeDecodeError):
        intact = False
    if not intact:
        _write_atomically(path, source)
    spec = importlib.util.spec_from_file_location(f"numbagrad_cuda_generated.k_{key}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _loaded[key] = getattr(module, func_name)
    return _loaded[key]
