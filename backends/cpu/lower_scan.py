"""CPU lowering of ``cumsum``: the array viewed as (outer, n, inner), each of the outer blocks
scanned along n with the contiguous inner axis as the vectorized loop."""

from __future__ import annotations

from numba import prange

from ..lowering_common import around_axis
from .kernels.parallel import sized_kernel
from .lowering import lowers


@sized_kernel(size_arg=0)
def cumsum_middle(x, out, reverse):
    """out[o, :, i] = running sums of x[o, :, i] (from the end when ``reverse``), in the
    arrays' dtype (as numpy's cumsum)."""
    n = x.shape[1]
    for o in prange(x.shape[0]):
        for i in range(x.shape[2]):
            out[o, n - 1 if reverse else 0, i] = x[o, n - 1 if reverse else 0, i]
        for k in range(1, n):
            j = n - 1 - k if reverse else k
            step = 1 if reverse else -1
            for i in range(x.shape[2]):
                out[o, j, i] = out[o, j + step, i] + x[o, j, i]


@lowers("cumsum")
def _cumsum(node, graph):
    view = around_axis(node.shape, node.attrs["axis"])
    kernel, reverse = cumsum_middle.for_size(node.size), node.attrs["reverse"]

    def launch(inputs, out):
        if node.size:
            kernel(inputs[0].reshape(view), out.reshape(view), reverse)

    return launch
