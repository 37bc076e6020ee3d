"""The FP32 peak of a CUDA device, measured (bench/gpu.py's yardstick for the conv kernels):
each thread runs ``CHAINS`` independent chains of fused multiply-adds in registers. Imported
only once the backend is chosen (numba.cuda, or its simulator, is imported here)."""

from __future__ import annotations

from numba import float32

from numbagrad.backends.cuda.runtime import jit, load_cuda

cuda = load_cuda()  # a module global: the simulator swaps it for its fake inside kernels
CHAINS = 8  # independent accumulators per thread: enough to hide the FMA latency


@jit
def fma_chains(out, x, y, steps):
    """``CHAINS`` chains of ``a = a * x + y`` per thread (2 FLOPs a step each)."""
    i = cuda.grid(1)
    a0 = float32(i)
    a1, a2, a3 = a0 + float32(1), a0 + float32(2), a0 + float32(3)
    a4, a5, a6, a7 = a0 + float32(4), a0 + float32(5), a0 + float32(6), a0 + float32(7)
    for _ in range(steps):
        a0 = a0 * x + y
        a1 = a1 * x + y
        a2 = a2 * x + y
        a3 = a3 * x + y
        a4 = a4 * x + y
        a5 = a5 * x + y
        a6 = a6 * x + y
        a7 = a7 * x + y
    out[i] = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7  # stored, so nothing is optimized away
