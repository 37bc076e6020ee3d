"""Thread-pool settings the kernels depend on; imported by every kernel module.

The kernels alternate Numba ``prange`` loops (libgomp threads) with multithreaded OpenBLAS calls
(``np.dot`` inside ``@njit`` calls SciPy's OpenBLAS). By default OpenBLAS's workers busy-wait
~2**28 cycles (~0.1 s) after every call and starve the next parallel kernels, and libgomp's
workers spin after every parallel loop and slow the next GEMM. Measured on the 2-core machine:
a LeNet-5 conv/pool/linear training step (batch 64) 77.6 ms with the defaults, 3.3 ms with
OPENBLAS_THREAD_TIMEOUT=12; a 64-channel im2col GEMM right after im2col 76 -> 152 GFLOP/s with
GOMP_SPINCOUNT=1000 (parallel launches still cost ~1.3 us back to back).

Both variables are read once, when the library loads: OpenBLAS when ``scipy.linalg`` is first
imported, libgomp when the first parallel kernel runs or ``import torch`` loads it. Set them
(here, or better first thing in the program) before either happens; ``setdefault`` leaves a
user's own choice alone, and a warning says when SciPy's BLAS was loaded too early.
"""

from __future__ import annotations

import os
import sys
import warnings

BLAS_THREAD_TIMEOUT = "12"  # exponent: OpenBLAS workers spin 2**12 cycles, then sleep
GOMP_SPINCOUNT = "1000"


def configure_thread_pools() -> None:
    if "OPENBLAS_THREAD_TIMEOUT" not in os.environ and "scipy.linalg" in sys.modules:
        warnings.warn(
            "scipy.linalg was imported before numbagrad's CPU kernels: its OpenBLAS threads keep "
            "the default busy-wait and can slow Numba kernels several-fold. Set "
            f"OPENBLAS_THREAD_TIMEOUT={BLAS_THREAD_TIMEOUT} in the environment, or import "
            "numbagrad first.",
            RuntimeWarning,
            stacklevel=2,
        )
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", BLAS_THREAD_TIMEOUT)
    os.environ.setdefault("GOMP_SPINCOUNT", GOMP_SPINCOUNT)


configure_thread_pools()
