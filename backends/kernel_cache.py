"""Generated kernels as .py files in the cache directory, shared by the cpu and cuda backends:
the file name hashes the source (and a version salt), so equal kernels share one file, and
Numba's on-disk cache (``cache=True``) lets a second process load them without compiling."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path


def cache_dir() -> Path:
    """``$NUMBAGRAD_CACHE_DIR``, default ``~/.cache/numbagrad``."""
    return Path(os.environ.get("NUMBAGRAD_CACHE_DIR", "~/.cache/numbagrad")).expanduser()


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_generated(
    source: str,
    func_name: str,
    salt: str,
    loaded: dict[str, Callable],
    folder: str,
    package: str,
    register: bool,
) -> Callable:
    """``func_name`` from ``source`` run as module ``<package>.k_<hash>`` from the file
    ``<cache_dir>/<folder>/k_<hash>.py``; ``loaded`` memoizes by hash. A file whose content
    does not match its name (corrupt, half-written) is rewritten. ``register`` puts the module
    in ``sys.modules``."""
    key = hashlib.sha256(f"{salt}\n{source}".encode()).hexdigest()[:20]
    if key in loaded:
        return loaded[key]
    directory = cache_dir() / folder
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"k_{key}.py"
    try:
        intact = path.read_text() == source
    except (OSError, UnicodeDecodeError):
        intact = False
    if not intact:
        _write_atomically(path, source)
    spec = importlib.util.spec_from_file_location(f"{package}.k_{key}", path)
    module = importlib.util.module_from_spec(spec)
    if register:
        sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    loaded[key] = getattr(module, func_name)
    return loaded[key]
