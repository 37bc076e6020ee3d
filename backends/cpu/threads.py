"""One thread pool for the CPU kernels: Numba's. BLAS runs single-threaded while they run.

The kernels split their work over Numba's threads, and the GEMMs among it call BLAS from
inside those threads (kernels/blas.py). A multithreaded BLAS would add a second pool whose
workers busy-wait after each call and starve Numba's (and Numba's starve them): a LeNet-5 step
ran 5-12x slower that way whenever another library (``import torch``, ``scipy.linalg``)
loaded the pools before numbagrad could set their environment variables. Limiting BLAS at run
time cannot be defeated by import order: each run of a CPU executable sets the BLAS libraries
Numba calls to one thread and puts back their setting when it ends, so the user's own
SciPy calls keep theirs. NumPy's own BLAS, which no kernel calls, is left alone.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager

import numpy as np


def _numpys_own(path: str) -> bool:
    """Whether a library lives in NumPy's installation (its bundled BLAS)."""
    root = os.path.dirname(os.path.abspath(np.__file__))
    return os.path.abspath(path).startswith((root + os.sep, root + ".libs" + os.sep))


class _BlasThreads:
    """Reference-counted: the first of overlapping runs (several Python threads) limits BLAS,
    the last one restores it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._libs: list | None = None
        self._saved: list[int | None] = []

    def _controllers(self) -> list:
        if self._libs is None:
            from numba.np.linalg import ensure_blas
            from threadpoolctl import ThreadpoolController

            ensure_blas()  # SciPy's BLAS, the one the kernels call, loaded before the look

            blas = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
            others = [c for c in blas if not _numpys_own(c.filepath)]
            self._libs = others or blas  # one BLAS shared by NumPy and SciPy: that one
        return self._libs

    def enter(self) -> None:
        with self._lock:
            if self._depth == 0:
                libs = self._controllers()
                self._saved = [lib.get_num_threads() for lib in libs]
                for lib, saved in zip(libs, self._saved):
                    if saved != 1:
                        lib.set_num_threads(1)
            self._depth += 1

    def exit(self) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                for lib, saved in zip(self._libs, self._saved):
                    if saved not in (None, 1):
                        lib.set_num_threads(saved)


_BLAS_THREADS = _BlasThreads()


@contextmanager
def single_threaded_blas():
    """BLAS at one thread inside the block (see the module docstring)."""
    _BLAS_THREADS.enter()
    try:
        yield
    finally:
        _BLAS_THREADS.exit()


def blas_architectures() -> list[tuple[str, str | None]]:
    """(internal API, kernel set) of each BLAS library the kernels call, as threadpoolctl
    reads them: ("openblas", "Haswell"), ("mkl", None), ..."""
    libs = _BLAS_THREADS._controllers()
    return [(lib.internal_api, getattr(lib, "architecture", None)) for lib in libs]
