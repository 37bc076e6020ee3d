"""numba.cuda, imported on demand, and the few things every kernel module needs from it.

Nothing here runs when numbagrad is imported: ``load_cuda()`` is called when the cuda backend
is first asked for (``get_backend("cuda")``, i.e. at compile time). It raises a one-sentence
``BackendError`` when numba-cuda is missing or no GPU (and no simulator) can run kernels.

The CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) runs the same kernels in Python threads; it is
chosen when numba.cuda is first imported, so set the variable before the first compile.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from contextlib import contextmanager
from types import ModuleType

from ...errors import BackendError

_SIM_HINT = (
    "use backend='cpu', or set NUMBA_ENABLE_CUDASIM=1 before the first compile to run the "
    "kernels on the CUDA simulator"
)
DEFAULT_SM_COUNT = 108  # when the device cannot say (the simulator): an A100's count
THREADS = 256  # the block size of grid-stride kernels


def load_cuda() -> ModuleType:
    """``numba.cuda``, checked usable; raises ``BackendError`` (one sentence) otherwise."""
    try:
        import numba_cuda  # noqa: F401 - numba's deprecated built-in target is not enough
    except ImportError:
        raise BackendError(
            "backend 'cuda' needs the numba-cuda package (pip install 'numbagrad[cuda]'), "
            "which is not installed here; use backend='cpu' instead"
        ) from None
    if "numba.cuda" not in sys.modules:
        from numba.core import config

        # Numba reads NUMBA_ENABLE_CUDASIM when it is imported; honour a later setting.
        config.reload_config()
    try:
        from numba import cuda
    except Exception as e:  # missing CUDA bindings and the like
        raise BackendError(f"backend 'cuda' could not import numba.cuda ({e}); {_SIM_HINT}") from e
    if not cuda.is_available():
        reason = _driver_error(cuda)
        raise BackendError(f"backend 'cuda' found no usable CUDA GPU ({reason}); {_SIM_HINT}")
    return cuda


def _driver_error(cuda: ModuleType) -> str:
    try:
        err = cuda.cuda_error()
    except Exception as e:  # pragma: no cover - depends on the driver
        err = e
    lines = str(err).strip().splitlines() if err else []
    return lines[0].strip().rstrip(".") if lines else "no device"


def simulated() -> bool:
    """Whether numba.cuda was imported as the simulator (fixed for the process)."""
    return "numba.cuda.simulator_init" in sys.modules


def _pin_simulator_mode() -> None:
    """``@cuda.jit`` consults NUMBA_ENABLE_CUDASIM again at every decoration: if the variable
    was removed after numba.cuda was imported as the simulator, keep jitting for it."""
    from numba.core import config

    if simulated() and not config.ENABLE_CUDASIM:
        config.ENABLE_CUDASIM = 1
        os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")


def jit(fn=None, *, cache: bool = False, **options):
    """``cuda.jit`` for kernels and device functions. ``cache=True`` (module-level functions
    only, not closures) keeps the compiled code on disk, in numbagrad's one directory and
    healing (``numba_cache``), not with numba-cuda's ``cache=True``, which falls back to
    ``__pycache__`` or ``~/.cache/numba`` and raises on a damaged entry. The simulator has
    nothing to cache."""
    if fn is None:
        return lambda f: jit(f, cache=cache, **options)
    cuda = load_cuda()
    _pin_simulator_mode()
    dispatcher = cuda.jit(fn, **options)
    if cache and not simulated():
        from .numba_cache import cuda_kernel_cache  # numba-cuda's real target: not on the sim

        dispatcher._cache = cuda_kernel_cache(fn)  # what cache=True's enable_caching() sets
    return dispatcher


_SM_COUNT: list[int] = []


def sm_count() -> int:
    """Streaming multiprocessors of the current device (used to size split-K and grids)."""
    if not _SM_COUNT:
        try:
            count = int(load_cuda().get_current_device().MULTIPROCESSOR_COUNT)
        except Exception:
            count = DEFAULT_SM_COUNT
        _SM_COUNT.append(count)
    return _SM_COUNT[0]


def blocks_for(n: int, threads: int, cap: int = 65535) -> int:
    """Enough blocks of ``threads`` to cover ``n`` items once (grid-stride loops do the rest)."""
    return max(1, min(cap, math.ceil(n / threads)))


def pow2_threads(n: int, lo: int = 32, hi: int = 256) -> int:
    """The smallest power of two >= n, clipped to [lo, hi]: a reduction's block size. The
    simulator runs a Python thread per CUDA thread and each ``syncthreads`` costs it ~20 ms,
    so there blocks stop at 32 threads (the kernels take any power-of-two block size)."""
    hi = min(hi, 32) if simulated() else hi
    t = min(lo, hi)
    while t < n and t < hi:
        t *= 2
    return t


def flat(array):
    """A 1-d view of a contiguous device array (0-d arrays become shape (1,))."""
    return array.reshape(max(1, math.prod(array.shape)))


_STREAMS: list = []  # where launches go while a CUDA graph is captured (graphs.py)


@contextmanager
def launching_on(stream):
    """Send every ``launcher`` call inside the block to ``stream`` (not the default one)."""
    _STREAMS.append(stream)
    try:
        yield
    finally:
        _STREAMS.pop()


class launcher:
    """``kernel[grid, block](*args)``. On a GPU the configured kernel is made at the first
    call and kept: making it costs microseconds per launch, and Numba warns there about grids
    under 128 blocks, which numbagrad sizes on purpose. The simulator's kernel objects keep
    the last configuration on themselves, so there it is made at each call."""

    __slots__ = ("kernel", "grid", "block", "_configured")

    def __init__(self, kernel, grid, block) -> None:
        self.kernel, self.grid, self.block = kernel, grid, block
        self._configured = None

    def __call__(self, *args) -> None:
        if _STREAMS:
            self._configure(_STREAMS[-1])(*args)
        elif self._configured is not None:
            self._configured(*args)
        elif simulated():
            self.kernel[self.grid, self.block](*args)
        else:
            self._configured = self._configure(0)
            self._configured(*args)

    def _configure(self, stream):
        from numba.core.errors import NumbaPerformanceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NumbaPerformanceWarning)
            return self.kernel[self.grid, self.block, stream]


def grid_launcher(kernel, n: int) -> launcher:
    """``kernel`` configured for a grid-stride loop over ``n`` items: blocks of ``THREADS``,
    enough to cover them once, at most 32 per multiprocessor."""
    return launcher(kernel, blocks_for(n, THREADS, 32 * sm_count()), THREADS)
