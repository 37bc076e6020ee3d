"""CPU lowering of ``concat`` and ``slice``: both copy rows of an (outer, n * inner) view.

An operand of concat is a block of columns of the output viewed as (outer, total * inner); a
slice is a block of columns of its input. One Numba kernel copies a block of columns between
two such 2-d views (parallel over rows when there is enough to copy).
"""

from __future__ import annotations

from numba import prange

from ...graph.ops.join import outer_inner
from .kernels.parallel import sized_kernel
from .lowering import lowers


@sized_kernel(size_arg=0)
def copy_columns(src, dst, src_start, dst_start, width):
    """dst[:, dst_start:dst_start+width] = src[:, src_start:src_start+width] (2-d arrays)."""
    for r in prange(src.shape[0]):
        for j in range(width):
            dst[r, dst_start + j] = src[r, src_start + j]


@lowers("concat")
def _concat(node, graph):
    axis = node.attrs["axis"]
    outer, inner = outer_inner(node.shape, axis)
    out_view = (outer, node.shape[axis] * inner)
    widths = [graph[i].shape[axis] * inner for i in node.inputs]
    starts = [sum(widths[:k]) for k in range(len(widths))]
    copy = copy_columns.for_size(outer * max(widths))

    def launch(inputs, out):
        o = out.reshape(out_view)
        for a, start, width in zip(inputs, starts, widths):
            copy(a.reshape(outer, width), o, 0, start, width)

    return launch


@lowers("slice")
def _slice(node, graph):
    axis, start = node.attrs["axis"], node.attrs["start"]
    x_shape = graph[node.inputs[0]].shape
    outer, inner = outer_inner(x_shape, axis)
    in_view = (outer, x_shape[axis] * inner)
    width = node.shape[axis] * inner
    copy = copy_columns.for_size(outer * width)

    def launch(inputs, out):
        copy(inputs[0].reshape(in_view), out.reshape(outer, width), start * inner, 0, width)

    return launch
