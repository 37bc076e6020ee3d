"""CUDA lowering of ``concat`` and ``slice``: a grid-stride kernel copies a block of columns
between two row-major (outer, columns) views, as the CPU backend does (``lower_join.py``)."""

from __future__ import annotations

from ...graph.ops.join import outer_inner
from .codegen import prepared
from .lowering import lowers
from .runtime import THREADS, blocks_for, flat, jit, launcher, load_cuda

cuda = load_cuda()  # a module global: the simulator swaps it for its fake inside kernels


@jit(cache=True)
def copy_columns(src, dst, rows, width, src_cols, src_start, dst_cols, dst_start):
    """dst[r, dst_start + j] = src[r, src_start + j] for r < rows, j < width (flat arrays)."""
    t = cuda.grid(1)
    step = cuda.gridsize(1)
    total = rows * width
    while t < total:
        r = t // width
        j = t - r * width
        dst[r * dst_cols + dst_start + j] = src[r * src_cols + src_start + j]
        t += step


def _configured(rows: int, width: int):
    return launcher(copy_columns, blocks_for(rows * width, THREADS), THREADS)


@lowers("concat")
def _concat(node, graph):
    axis = node.attrs["axis"]
    outer, inner = outer_inner(node.shape, axis)
    cols = node.shape[axis] * inner
    widths = [graph[i].shape[axis] * inner for i in node.inputs]
    starts = [sum(widths[:k]) for k in range(len(widths))]
    kernels = [_configured(outer, w) for w in widths]

    def prepare(inputs, out):
        ins, o = [flat(a) for a in inputs], flat(out)

        def run():
            for k, a, w, s in zip(kernels, ins, widths, starts):
                k(a, o, outer, w, w, 0, cols, s)

        return run

    return prepared(prepare)


@lowers("slice")
def _slice(node, graph):
    axis, start = node.attrs["axis"], node.attrs["start"]
    x_shape = graph[node.inputs[0]].shape
    outer, inner = outer_inner(x_shape, axis)
    cols, width = x_shape[axis] * inner, node.shape[axis] * inner
    kernel = _configured(outer, width)

    def prepare(inputs, out):
        a, o = flat(inputs[0]), flat(out)
        return lambda: kernel(a, o, outer, width, cols, start * inner, width, 0)

    return prepared(prepare)
