"""Generated kernels live as .py files in the cache directory and compile with Numba's on-disk
cache (``cache=True``, kept by ``numba_cache``), so a second process loads them instead of
compiling again."""

from __future__ import annotations

import sys
from collections.abc import Callable

import numba

from ..kernel_cache import cache_dir, load_generated
from ..numba_cache import GENERATED_PACKAGE

__all__ = ["cache_dir", "load_kernel"]

# Part of every cache key: a new numbagrad or Numba release regenerates everything.
_VERSION_SALT = f"numbagrad-0.1.0/numba-{numba.__version__}/py{sys.version_info[:2]}"
_loaded: dict[str, Callable] = {}


def load_kernel(source: str, func_name: str = "kernel") -> Callable:
    """Compile generated ``source`` (a module defining ``func_name``) through a file in the
    cache directory. The file name hashes the source, so equal kernels share one file; a
    file whose content does not match its name (corrupt, half-written) is rewritten."""
    # Registered in sys.modules: Numba's on-disk cache resolves the function's module by name
    # when it loads an entry.
    return load_generated(
        source, func_name, _VERSION_SALT, _loaded, "kernels", GENERATED_PACKAGE, register=True
    )
