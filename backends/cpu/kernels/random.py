"""Dropout on the CPU: the counter-based hash of ``graph/ops/random.py`` in Numba, bit for bit
(uint64 arithmetic wraps in Numba as in NumPy), one pass over the flat array."""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ....graph.ops.random import GOLDEN, MANTISSA_SHIFT, MIX1, MIX2, keep_scale, keep_threshold
from .parallel import sized_kernel

_G = np.uint64(GOLDEN)
_M1 = np.uint64(MIX1)
_M2 = np.uint64(MIX2)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_SHIFT = np.uint64(MANTISSA_SHIFT)


@njit(cache=True, inline="always")
def _mix(z):
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(cache=True, inline="always")
def _key(seed, step):
    return _mix(_mix(seed + _G) ^ np.uint64(step[0]))


@sized_kernel(size_arg=0)
def dropout(x, step, out, seed, threshold, scale):
    """out = x * scale where the element's hash clears ``threshold``, else x * 0 (flat arrays:
    a dropped NaN or Inf gives NaN, as in torch)."""
    key = _key(seed, step)
    zero = x.dtype.type(0)
    for i in prange(x.shape[0]):
        h = _mix(key + np.uint64(i) * _G)
        out[i] = x[i] * (scale if (h >> _SHIFT) >= threshold else zero)


def dropout_launch(node):
    """A launch for a ``dropout`` node: inputs (x, step), out like x."""
    p, seed = node.attrs["p"], node.attrs["seed"]
    size = math.prod(node.shape)
    kernel = dropout.for_size(size)
    args = (np.uint64(seed), np.uint64(keep_threshold(p)), np.dtype(node.dtype).type(keep_scale(p)))

    def launch(inputs, out):
        x, step = inputs
        kernel(x.reshape(-1), step.reshape(1), out.reshape(-1), *args)

    return launch
