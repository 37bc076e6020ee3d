"""numba-cuda's on-disk cache for numbagrad's CUDA kernels, with the CPU backend's rules
(``..numba_cache``): entries in ``$NUMBA_CACHE_DIR`` or ``<NUMBAGRAD_CACHE_DIR>/numba`` and
nowhere else, a damaged entry removed and compiled again, an unwritable directory meaning
compiling in memory, each with one ``CacheWarning``.

``runtime.jit(..., cache=True)`` attaches it on a GPU. This module imports numba-cuda's real
CUDA target, so nothing imports it on the simulator (which caches nothing).
"""

from __future__ import annotations

from collections.abc import Callable

from numba.cuda.core.caching import NullCache
from numba.cuda.dispatcher import CUDACache, CUDACacheImpl

from ..numba_cache import HealingCache, OneLocatorImpl, kernel_cache


class _CUDAKernelCacheImpl(OneLocatorImpl, CUDACacheImpl):
    pass


class CUDAKernelCache(HealingCache, CUDACache):
    """numba-cuda's per-function cache of kernels in ``numba_cache_root()``, healing."""

    _impl_class = _CUDAKernelCacheImpl


def cuda_kernel_cache(py_func: Callable) -> CUDAKernelCache | NullCache:
    """The cache for one of numbagrad's CUDA kernels (``kernel_cache`` with numba-cuda's
    classes): a ``NullCache`` when it has no source file or its directory cannot be written."""
    return kernel_cache(py_func, CUDAKernelCache, NullCache)
