"""Kernels built twice from one source: with their ``prange`` loops run by Numba's threads, and
serially (``prange`` is ``range`` without ``parallel=True``).

Starting a parallel region costs a few microseconds on an idle machine, and a whole scheduler
time slice (milliseconds) when another process holds the other core and the region must wait
for its worker; below a few ten thousand elements the serial build is faster. A
``SizedKernel`` picks the build from the size of one argument at each call, or once, when the
sizes are static, through ``for_size`` (what the lowerings do).
"""

from __future__ import annotations

import types
from collections.abc import Callable

from numba import njit

PARALLEL_MIN_ELEMENTS = 1 << 15  # below this, a parallel region costs more than it saves
CONTRACT = {"contract"}  # fastmath flags that only fuse a*b + c into one FMA (never mutated)
# ... and that let a sum be reassociated, so LLVM keeps it in several vector accumulators
# (NaN and infinities still propagate: no nnan/ninf).
REASSOC = {"reassoc", "contract"}


def _serial_copy(fn: Callable) -> Callable:
    """``fn`` as a new function named ``<name>_serial``: Numba's on-disk cache names its entries
    by the function's qualified name, and the two builds must not share one."""
    copy = types.FunctionType(
        fn.__code__, fn.__globals__, f"{fn.__name__}_serial", fn.__defaults__, fn.__closure__
    )
    copy.__qualname__ = f"{fn.__qualname__}_serial"
    copy.__module__ = fn.__module__
    copy.__doc__ = fn.__doc__
    return copy


class SizedKernel:
    """Calls the parallel build when argument ``size_arg`` has at least
    ``PARALLEL_MIN_ELEMENTS`` elements (or ``min_elements``), else the serial one."""

    def __init__(
        self, fn: Callable, size_arg: int, min_elements: int, fastmath: bool | set[str] = False
    ) -> None:
        self.parallel = njit(parallel=True, cache=True, nogil=True, fastmath=fastmath)(fn)
        self.serial = njit(cache=True, nogil=True, fastmath=fastmath)(_serial_copy(fn))
        self.size_arg, self.min_elements = size_arg, min_elements
        self.__doc__, self.__name__ = fn.__doc__, fn.__name__

    def for_size(self, elements: int) -> Callable:
        """The build to call on work of ``elements`` elements."""
        return self.parallel if elements >= self.min_elements else self.serial

    def __call__(self, *args):
        return self.for_size(args[self.size_arg].size)(*args)


def sized_kernel(
    size_arg: int = 0,
    min_elements: int = PARALLEL_MIN_ELEMENTS,
    fastmath: bool | set[str] = False,
) -> Callable[[Callable], SizedKernel]:
    """Decorator: the function as a ``SizedKernel`` whose work is measured by the element count
    of its argument number ``size_arg``."""
    return lambda fn: SizedKernel(fn, size_arg, min_elements, fastmath)
