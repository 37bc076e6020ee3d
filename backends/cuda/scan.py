"""CUDA lowering of ``cumsum``: a thread per line of the (outer, n, inner) view, each scanning
its n elements in order (a grid-stride loop over the outer * inner lines)."""

from __future__ import annotations

from ..lowering_common import around_axis
from .codegen import prepared
from .lowering import lowers
from .runtime import flat, grid_launcher, jit, load_cuda

cuda = load_cuda()  # a module global: the simulator swaps it for its fake inside kernels


@jit(cache=True)
def cumsum_lines(x, out, outer, n, inner, reverse):
    """Running sums along the middle axis of flat (outer, n, inner) arrays."""
    t = cuda.grid(1)
    step = cuda.gridsize(1)
    while t < outer * inner:
        base = (t // inner) * n * inner + t % inner
        first = base + (n - 1) * inner if reverse else base
        acc = x[first]
        out[first] = acc
        for k in range(1, n):
            j = n - 1 - k if reverse else k
            acc += x[base + j * inner]
            out[base + j * inner] = acc
        t += step


@lowers("cumsum")
def _cumsum(node, graph):
    outer, n, inner = around_axis(node.shape, node.attrs["axis"])
    kernel, reverse = grid_launcher(cumsum_lines, outer * inner), node.attrs["reverse"]

    def prepare(inputs, out):
        a, o = flat(inputs[0]), flat(out)
        return lambda: kernel(a, o, outer, n, inner, reverse) if node.size else None

    return prepared(prepare)
