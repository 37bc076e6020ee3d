"""Numba's on-disk cache for numbagrad's own kernels: one directory, and entries that heal.

For ``@njit(cache=True)`` Numba tries ``$NUMBA_CACHE_DIR``, then ``__pycache__`` beside the
source, then ``~/.cache/numba``, silently taking the first it can write; and a damaged ``.nbi`` or
``.nbc`` file raises whatever unpickling it raises, in every later run. The functions of
numbagrad's modules and of its generated kernels (``numbagrad_generated.*``) get
``KernelCache`` instead:

- its entries live in ``$NUMBA_CACHE_DIR`` when set (where Numba puts them), else in
  ``<NUMBAGRAD_CACHE_DIR>/numba``, and nowhere else;
- a directory it cannot write means compiling in memory, with one ``CacheWarning`` per
  directory and process;
- an entry it cannot read is removed and compiled again, with one ``CacheWarning``;
- the entries of numbagrad's hand-written kernels sit in a folder named by a digest of every
  source file of ``backends/``: Numba checks only the stamp of a function's own file, while a
  cached kernel holds the machine code of the kernels it calls from other files, so an edit there
  would leave it running stale code (a changed calling convention crashes the process). The
  digest also covers the BLAS libraries loaded, which decide what ``gemm`` calls;
- ``@cfunc(cache=True)`` callbacks of numbagrad's get the same cache.

Every other function in the process keeps Numba's own cache. Importing this module sets that up;
the CPU backend imports it before its kernels are decorated. The CUDA backend mixes the same
locator and load/save handling into numba-cuda's classes (``cuda/numba_cache.py``).
"""

from __future__ import annotations

import functools
import glob
import hashlib
import inspect
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from numba.core import config
from numba.core.caching import (
    CompileResultCacheImpl,
    FunctionCache,
    NullCache,
    _CacheLocator,
    _SourceFileBackedLocatorMixin,
)
from numba.core.ccallback import CFunc
from numba.core.registry import CPUDispatcher

from ..errors import CacheWarning
from .kernel_cache import cache_dir, one_line, warn_unwritable

GENERATED_PACKAGE = "numbagrad_generated"  # the module name of CPU kernels from codegen
_OWN_PACKAGES = ("numbagrad", GENERATED_PACKAGE)
_ENTRY_SUFFIXES = (".nbi", ".nbc")  # not ".tmp.<uid>": another process's write in flight


def numba_cache_root() -> Path:
    """Where Numba's entries for numbagrad's kernels go: ``$NUMBA_CACHE_DIR`` (as Numba reads
    it), else ``<NUMBAGRAD_CACHE_DIR>/numba``."""
    return Path(config.CACHE_DIR) if config.CACHE_DIR else cache_dir() / "numba"


def _chosen_dir() -> Path:
    """The directory a user chose for these entries, named in warnings (so an unwritable
    NUMBAGRAD_CACHE_DIR is one warning, not one for it and one for its ``numba`` folder)."""
    return Path(config.CACHE_DIR) if config.CACHE_DIR else cache_dir()


_BACKENDS = Path(__file__).resolve().parent


@functools.cache
def sources_digest(root: Path = _BACKENDS) -> str:
    """A digest of every ``.py`` file under ``root`` (read once per process)."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def folder_digest(sources: str, libraries: list[tuple[str, str | None]]) -> str:
    """The digest that names the hand-written kernels' folder: of their ``sources`` digest and
    of the BLAS ``libraries`` they call with their kernel sets (``threads.blas_architectures``).
    ``blas.gemm`` is compiled to call the packed GEMM by symbol, or BLAS, by what those are
    (cpu/kernels/packed_gemm.py), so entries compiled beside one BLAS must not load beside
    another."""
    return hashlib.sha256(f"{sources}\n{libraries}".encode()).hexdigest()[:16]


@functools.cache
def kernels_digest() -> str:
    """``folder_digest`` of this installation (read once per process)."""
    from .cpu.threads import blas_architectures

    return folder_digest(sources_digest(), blas_architectures())


class KernelLocator(_SourceFileBackedLocatorMixin, _CacheLocator):
    """``<root>/<folder>_<hash of the folder>``, the subfolder Numba itself would use, with
    ``_<kernels_digest()>`` after it for numbagrad's own source files. numba-cuda's
    caches ask a locator the same four things (its caching module is a copy of Numba's), so the
    CUDA backend's cache uses this class too."""

    def __init__(self, py_func: Callable, py_file: str) -> None:
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        folder = self.get_suitable_cache_subpath(py_file)
        if Path(py_file).resolve().is_relative_to(_BACKENDS):
            folder = f"{folder}_{kernels_digest()}"
        self._cache_path = str(numba_cache_root() / folder)

    def get_cache_path(self) -> str:
        return self._cache_path


class OneLocatorImpl:
    """Mixed in before a Numba ``CacheImpl`` (CPU or CUDA): its ``__init__`` takes the first of
    Numba's locators (or NUMBA_CACHE_LOCATOR_CLASSES's) that can write somewhere; numbagrad's
    kernels have one place, ``KernelLocator``'s. Names as Numba's."""

    def __init__(self, py_func: Callable) -> None:
        py_file = inspect.getfile(py_func)
        self._lineno = py_func.__code__.co_firstlineno
        self._locator = KernelLocator(py_func, py_file)
        fullname = f"{Path(py_file).stem}.{py_func.__qualname__}"
        self._filename_base = self.get_filename_base(fullname, getattr(sys, "abiflags", ""))


class _KernelCacheImpl(OneLocatorImpl, CompileResultCacheImpl):
    pass


class HealingCache:
    """Mixed in before a Numba per-function cache (CPU or CUDA): an entry that cannot be read is
    removed (the kernel then compiles and saves anew); one that cannot be written turns the
    cache off for the kernel."""

    def load_overload(self, sig, target_context):
        try:
            return super().load_overload(sig, target_context)
        except Exception as e:  # unpickling damaged bytes raises nearly any exception
            self._discard(e)
            return None

    def save_overload(self, sig, data) -> None:
        try:
            super().save_overload(sig, data)
        except Exception as e:  # a full disk, a directory made read-only meanwhile
            self.disable()
            warn_unwritable(_chosen_dir(), e)

    def _discard(self, error: Exception) -> None:
        """Remove this function's index and data files (the index is needed to tell which data
        file is whose); if they cannot be removed, stop using the cache for it."""
        pattern = os.path.join(glob.escape(self._cache_path), glob.escape(self._impl.filename_base))
        entries = [p for p in glob.glob(f"{pattern}.*") if p.endswith(_ENTRY_SUFFIXES)]
        done = "removed it and compiles the kernel again"
        try:
            for path in entries:
                os.remove(path)
        except OSError as e:
            self.disable()
            done = f"could not remove it ({one_line(e)}) and compiles the kernel in memory"
        warnings.warn(
            f"Numba's cache entry for {self._py_func.__module__}.{self._py_func.__qualname__} "
            f"in {self._cache_path} could not be read ({one_line(error)}); numbagrad {done}",
            CacheWarning,
            stacklevel=3,
        )


class KernelCache(HealingCache, FunctionCache):
    """Numba's per-function cache of CPU kernels in ``numba_cache_root()``, healing."""

    _impl_class = _KernelCacheImpl


_usable_paths: dict[str, bool] = {}


def kernel_cache(
    py_func: Callable, cache_class: type[HealingCache] = KernelCache, null_cache: type = NullCache
) -> HealingCache | NullCache:
    """The cache for one of numbagrad's functions: a ``cache_class`` when its directory can be
    written, else a ``null_cache`` (compiled in memory; one ``CacheWarning`` per directory).
    The CUDA backend passes numba-cuda's classes."""
    if not os.path.isfile(inspect.getfile(py_func)):  # generated, compiled from a string
        return null_cache()
    cache = cache_class(py_func)
    path = cache.cache_path
    if path not in _usable_paths:
        try:
            cache._impl.locator.ensure_cache_path()  # creates it, writes a temporary file
            _usable_paths[path] = True
        except OSError as e:
            _usable_paths[path] = False
            warn_unwritable(_chosen_dir(), e)
    return cache if _usable_paths[path] else null_cache()


def _is_numbagrad_function(py_func: Callable) -> bool:
    return (py_func.__module__ or "").partition(".")[0] in _OWN_PACKAGES


def _own_cache(cls: type, py_func_of: Callable) -> None:
    """Make ``cls.enable_caching`` give numbagrad's functions ``kernel_cache``."""
    numbas = cls.enable_caching

    def enable_caching(compiled) -> None:
        py_func = py_func_of(compiled)
        if _is_numbagrad_function(py_func):
            compiled._cache = kernel_cache(py_func)
        else:
            numbas(compiled)

    cls.enable_caching = enable_caching


# @njit(cache=True) and @cfunc(cache=True) build their cache in enable_caching(), with no way to
# choose its class or locator short of NUMBA_CACHE_LOCATOR_CLASSES (which would change every
# function's). These overrides change it for numbagrad's functions only, with no edit to each
# kernel file.
_own_cache(CPUDispatcher, lambda dispatcher: dispatcher.py_func)
_own_cache(CFunc, lambda callback: callback._pyfunc)
