"""Dropout on the GPU: the counter-based hash of ``graph/ops/random.py``, bit for bit, one
thread per element (grid-stride). Every thread derives the stream key from (seed, step) itself:
two hash rounds, cheaper than a launch to share them."""

from __future__ import annotations

import math

import numpy as np

from ...graph.ops.random import GOLDEN, MANTISSA_SHIFT, MIX1, MIX2, keep_scale, keep_threshold
from .codegen import prepared
from .runtime import flat, grid_launcher, jit, load_cuda

cuda = load_cuda()  # a module global: the simulator swaps it for its fake inside kernels

_G = np.uint64(GOLDEN)
_M1 = np.uint64(MIX1)
_M2 = np.uint64(MIX2)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_SHIFT = np.uint64(MANTISSA_SHIFT)


@jit(device=True)
def _mix(z):
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@jit(cache=True)
def dropout_kernel(x, step, out, seed, threshold, scale):
    """out = x * scale where the element's hash clears ``threshold``, else x * 0 (flat arrays:
    a dropped NaN or Inf gives NaN, as in torch)."""
    key = _mix(_mix(seed + _G) ^ np.uint64(step[0]))
    zero = x.dtype.type(0)
    t = cuda.grid(1)
    stride = cuda.gridsize(1)
    while t < x.shape[0]:
        h = _mix(key + np.uint64(t) * _G)
        out[t] = x[t] * (scale if (h >> _SHIFT) >= threshold else zero)
        t += stride


def dropout_launch(node):
    """A launch for a ``dropout`` node: inputs (x, step), out like x (device arrays)."""
    p, seed = node.attrs["p"], node.attrs["seed"]
    size = math.prod(node.shape)
    args = (np.uint64(seed), np.uint64(keep_threshold(p)), np.dtype(node.dtype).type(keep_scale(p)))
    configured = grid_launcher(dropout_kernel, size)

    def prepare(inputs, out):
        x, step, o = flat(inputs[0]), flat(inputs[1]), flat(out)
        return lambda: configured(x, step, o, *args) if size else None

    return prepared(prepare)
