"""Hand-written Numba kernels for the heavy ops (convolution, pooling, GEMM, reductions)."""

from . import _env  # noqa: F401  (thread-pool settings must precede the first BLAS call)
