"""Hand-written Numba kernels for the heavy ops (convolution, pooling, GEMM, reductions)."""
