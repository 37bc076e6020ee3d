"""Generated CUDA kernels for ops whose index arithmetic depends on the shapes: elementwise
expressions with broadcasting (from an op's ``scalar`` template, so a fused group's composed
template runs the same way), reductions over any set of axes, and transposes.

As on the CPU, dimensions are coalesced first (size-1 axes dropped, neighbours that broadcast or
reduce alike merged), so most elementwise kernels index one flat array, and the generated
source depends only on that structure, not on the sizes: one kernel serves many shapes.
Each thread decomposes its flat index into the merged dimensions (grid-stride loops).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..codegen_common import broadcast_plan, kernel_args, reduction_plan, typed_literals
from ..executable import Launch
from .cache import load_kernel
from .runtime import blocks_for, flat, grid_launcher, launcher, load_cuda, pow2_threads, sm_count

_HEADER = (
    "import math\n\nfrom numba import cuda, float64\n\n"
    "from numbagrad.backends.cuda.runtime import jit\n\n\n"
)


def _decompose(index: str, dims: Sequence[int], shape_of: str, indent: str) -> list[str]:
    """Lines setting ``i<d>`` for ``dims`` (outer to inner) from the flat ``index``."""
    if not dims:
        return []
    lines = [f"{indent}q = {index}"]
    for d in reversed(dims[1:]):
        lines.append(f"{indent}i{d} = q % {shape_of}.shape[{d}]")
        lines.append(f"{indent}q //= {shape_of}.shape[{d}]")
    lines.append(f"{indent}i{dims[0]} = q")
    return lines


# --- elementwise ---------------------------------------------------------------------------


def elementwise_source(expr: str, masks: Sequence[Sequence[bool]]) -> str:
    """``kernel(in0, ..., out)``: ``out[i] = expr`` over ``a0, a1, ...``, computed in the
    output's precision; ``masks[k][d]`` says whether input k varies along (merged) axis d,
    else it is broadcast."""
    ndim = len(masks[0]) if masks else 1
    lines = ["@jit(cache=True)", f"def kernel({kernel_args(len(masks), 'out')}):"]
    lines += ["    t = cuda.grid(1)", "    step = cuda.gridsize(1)", "    T = out.dtype.type"]
    lines += ["    while t < out.size:"]
    lines += _decompose("t", list(range(ndim)), "out", " " * 8)
    for k, mask in enumerate(masks):
        idx = ", ".join(f"i{d}" if m else "0" for d, m in enumerate(mask))
        lines.append(f"        a{k} = in{k}[{idx}]")
    out_idx = ", ".join(f"i{d}" for d in range(ndim))
    lines.append(f"        out[{out_idx}] = {typed_literals(expr, 'T')}")
    lines.append("        t += step")
    return _HEADER + "\n".join(lines) + "\n"


def elementwise_launch(
    expr: str, in_shapes: Sequence[tuple[int, ...]], out_shape: tuple[int, ...]
) -> Launch:
    """Lower an elementwise expression over broadcast inputs to a generated kernel."""
    shape, masks, views = broadcast_plan(in_shapes, out_shape)
    kernel = load_kernel(elementwise_source(expr, masks))
    size = math.prod(out_shape)
    configured = grid_launcher(kernel, size)

    def prepare(inputs, out):
        args = [a.reshape(v) for a, v in zip(inputs, views)] + [out.reshape(shape)]
        return lambda: configured(*args) if size else None

    return prepared(prepare)


def prepared(prepare) -> Launch:
    """A Launch that builds its argument views once per set of buffers: ``prepare(inputs,
    out)`` returns a thunk that launches; the executable passes the same buffers each run."""
    state: dict = {}

    def launch(inputs, out) -> None:
        key = (id(out), *map(id, inputs))
        thunk = state.get(key)
        if thunk is None:
            state.clear()
            thunk = state[key] = prepare(list(inputs), out)
        thunk()

    return launch


# --- reductions ----------------------------------------------------------------------------


def reduction_source(expr: str, n_inputs: int, reduced: Sequence[bool]) -> str:
    """``kernel(in0, ..., out, partial, scale, chunk, total, n_out)`` summing ``expr`` over the
    reduced axes of inputs shaped alike, in float64, over reduction indices [s*chunk,
    (s+1)*chunk) for s = blockIdx.y. With one split it writes ``out[o] = scale * sum``, else
    ``partial[o, s] = sum`` for ``finalize``.

    When the innermost axis is reduced, a block reduces one output, its threads striding the
    contiguous axis and meeting in a shared-memory tree; when it is kept, a thread reduces one
    output, so a warp reads consecutive elements."""
    ndim = len(reduced)
    kept = [d for d in range(ndim) if not reduced[d]]
    summed = [d for d in range(ndim) if reduced[d]]
    row = reduced[-1]
    args = kernel_args(n_inputs, "out", "partial", "scale", "chunk", "total", "n_out")
    lines = ["@jit(cache=True)", f"def kernel({args}):"]
    if row:
        lines += ["    o = cuda.blockIdx.x", "    tid = cuda.threadIdx.x"]
        lines += ["    r = cuda.blockIdx.y * chunk + tid", "    stride = cuda.blockDim.x"]
    else:
        lines += ["    o = cuda.grid(1)", "    if o >= n_out:", "        return"]
        lines += ["    r = cuda.blockIdx.y * chunk", "    stride = 1"]
    lines += _decompose("o", kept, "in0", "    ")
    lines += ["    end = min(total, cuda.blockIdx.y * chunk + chunk)", "    acc = 0.0"]
    lines.append("    while r < end:")
    lines += _decompose("r", summed, "in0", " " * 8)
    idx = ", ".join(f"i{d}" for d in range(ndim))
    lines += [f"        a{k} = in{k}[{idx}]" for k in range(n_inputs)]
    lines += [f"        acc += {expr}", "        r += stride"]
    if row:
        lines += [
            "    buf = cuda.shared.array(256, float64)",
            "    buf[tid] = acc",
            "    cuda.syncthreads()",
            "    h = stride // 2",
            "    while h > 0:",
            "        if tid < h:",
            "            buf[tid] += buf[tid + h]",
            "        cuda.syncthreads()",
            "        h //= 2",
            "    if tid != 0:",
            "        return",
            "    acc = buf[0]",
        ]
    lines += [
        "    if cuda.gridDim.y == 1:",
        "        out[o] = acc * scale",
        "    else:",
        "        partial[o, cuda.blockIdx.y] = acc",
    ]
    return _HEADER + "\n".join(lines) + "\n"


_FINALIZE_SOURCE = (
    _HEADER
    + '''@jit(cache=True)
def kernel(partial, out, scale):
    """out[o] = scale * sum_s partial[o, s]."""
    o = cuda.grid(1)
    if o < out.shape[0]:
        acc = 0.0
        for s in range(partial.shape[1]):
            acc += partial[o, s]
        out[o] = acc * scale
'''
)


def reduction_launch(
    expr: str, n_inputs: int, shape: tuple[int, ...], axes: Sequence[int], mean: bool
) -> Launch:
    """Lower ``sum(expr)`` (or the mean) over ``axes`` of inputs all shaped ``shape``: one
    pass, or, when few outputs leave the GPU idle, split partial sums and a second pass."""
    merged, reduced, scale = reduction_plan(shape, axes, mean)
    n_out = math.prod(n for n, r in zip(merged, reduced) if not r)
    total = math.prod(n for n, r in zip(merged, reduced) if r)
    row = reduced[-1]
    threads = pow2_threads(total) if row else 128
    blocks = n_out if row else math.ceil(n_out / threads)
    # Split the reduction when the outputs alone give fewer than ~2 blocks per SM.
    splits = min(max(1, (2 * sm_count()) // max(blocks, 1)), max(1, total // (4 * threads)), 1024)
    chunk = math.ceil(total / splits) if total else 1
    splits = math.ceil(total / chunk) if total else 1
    kernel = load_kernel(reduction_source(expr, n_inputs, reduced))
    configured = launcher(kernel, (max(blocks, 1), splits), threads)
    cuda = load_cuda()
    partial = cuda.device_array((max(n_out, 1), splits), dtype=np.float64)
    finalize = launcher(load_kernel(_FINALIZE_SOURCE), blocks_for(n_out, 128), 128)

    def prepare(inputs, out):
        ins = [a.reshape(merged) for a in inputs]
        out1 = flat(out)

        def run():
            if n_out == 0:
                return
            configured(*ins, out1, partial, scale, chunk, total, n_out)
            if splits > 1:
                finalize(partial, out1, scale)

        return run

    return prepared(prepare)


# --- transpose -----------------------------------------------------------------------------


def transpose_source(perm: Sequence[int]) -> str:
    """``kernel(in0, out)``: ``out[i] = in0[i permuted back]``, one thread per output element
    (writes coalesced; reads strided unless the last axis stays last)."""
    inverse = np.argsort(perm)
    ndim = len(perm)
    lines = ["@jit(cache=True)", "def kernel(in0, out):"]
    lines += ["    t = cuda.grid(1)", "    step = cuda.gridsize(1)", "    while t < out.size:"]
    lines += _decompose("t", list(range(ndim)), "out", " " * 8)
    src = ", ".join(f"i{inverse[d]}" for d in range(ndim))
    dst = ", ".join(f"i{d}" for d in range(ndim))
    lines += [f"        out[{dst}] = in0[{src}]", "        t += step"]
    return _HEADER + "\n".join(lines) + "\n"


def transpose_launch(perm: Sequence[int], in_shape: tuple[int, ...]) -> Launch:
    """Transpose, with runs of axes that stay adjacent merged first."""
    # Merge input axes that remain neighbours, in order, in the output.
    groups: list[list[int]] = []
    for p in perm:
        if groups and groups[-1][-1] + 1 == p and in_shape[p] != 1:
            groups[-1].append(p)
        elif in_shape[p] != 1:
            groups.append([p])
    order = sorted(range(len(groups)), key=lambda g: groups[g][0])
    in_merged = tuple(math.prod(in_shape[d] for d in groups[g]) for g in order) or (1,)
    new_perm = tuple(order.index(g) for g in range(len(groups))) or (0,)
    out_merged = tuple(in_merged[p] for p in new_perm)
    kernel = load_kernel(transpose_source(new_perm))
    size = math.prod(in_shape)
    configured = grid_launcher(kernel, size)

    def prepare(inputs, out):
        src, dst = inputs[0].reshape(in_merged), out.reshape(out_merged)
        return lambda: configured(src, dst) if size else None

    return prepared(prepare)
