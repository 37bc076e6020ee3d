"""Generated CUDA kernels live as .py files in the cache directory (``$NUMBAGRAD_CACHE_DIR``,
next to the CPU backend's), named by a hash of their source. On a GPU they compile with
``cache=True`` (numbagrad's cache, ``numba_cache``), so a second process loads the compiled code
instead of compiling again."""

from __future__ import annotations

import sys
from collections.abc import Callable

from ..kernel_cache import load_generated
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


def load_kernel(source: str, func_name: str = "kernel") -> Callable:
    """Compile generated ``source`` (a module defining ``func_name`` with ``@jit``) through a
    file in the cache directory; a file whose content does not match its name is rewritten."""
    load_cuda()
    return load_generated(
        source,
        func_name,
        _salt(),
        _loaded,
        "cuda_kernels",
        "numbagrad_cuda_generated",
        register=False,
    )
