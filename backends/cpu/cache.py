"""Generated kernels live as .py files in the cache directory and compile with Numba's on-disk
cache (``cache=True``), so a second process loads them instead of compiling again."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numba

# Part of every cache key: a new numbagrad or Numba release regenerates everything.
_VERSION_SALT = f"numbagrad-0.1.0/numba-{numba.__version__}/py{sys.version_info[:2]}"
_loaded: dict[str, Callable] = {}


def cache_dir() -> Path:
    """``$NUMBAGRAD_CACHE_DIR``, default ``~/.cache/numbagrad``."""
    return Path(os.environ.get("NUMBAGRAD_CACHE_DIR", "~/.cache/numbagrad")).expanduser()


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_kernel(source: str, func_name: str = "kernel") -> Callable:
    """Compile generated ``source`` (a module defining ``func_name``) through a file in the
    cache directory. The file name hashes the source, so equal kernels share one file; a
    file whose content does not match its name (corrupt, half-written) is rewritten."""
    key = hashlib.sha256(f"{_VERSION_SALT}\n{source}".encode()).hexdigest()[:20]
    if key in _loaded:
        return _loaded[key]
    folder = cache_dir() / "kernels"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"k_{key}.py"
    try:
        intact = path.read_text() == source
    except (OSError, UnicodeDecodeError):
        intact = False
    if not intact:
        _write_atomically(path, source)
    spec = importlib.util.spec_from_file_location(f"numbagrad_generated.k_{key}", path)
    module = importlib.util.module_from_spec(spec)
    # Numba's on-disk cache resolves the function's module by name when it loads an entry.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    _loaded[key] = getattr(module, func_name)
    return _loaded[key]
