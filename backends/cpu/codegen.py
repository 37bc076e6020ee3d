"""Generated Numba kernels for ops whose loop nest depends on the shapes: elementwise
expressions with broadcasting, reductions over axes, and transposes.

Dimensions are coalesced first (size-1 axes dropped, neighbours that broadcast or reduce alike
merged), so most elementwise kernels become one flat loop, and the generated source depends
only on the loop structure, not the sizes: one compiled kernel serves many shapes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

from ..codegen_common import broadcast_plan, kernel_args, reduction_plan, shared_terms
from ..executable import Launch, preparable
from .cache import load_kernel
from .kernels.parallel import PARALLEL_MIN_ELEMENTS

INNER_BLOCK = 512  # outputs per work item of a reduction whose innermost axis is kept
_HEADER = "import math\n\nimport numpy as np\nfrom numba import njit, prange\n\n\n"


def _decorator(parallel: bool, reassoc: bool = False) -> str:
    # error_model="numpy": x / 0 is inf or nan as in the NumPy reference (and on CUDA), not a
    # ZeroDivisionError; it also drops the zero checks from every division.
    extra = ", parallel=True" if parallel else ""
    # A sum may be reassociated (so LLVM vectorizes it with several accumulators); NaN and
    # infinities still propagate (no nnan/ninf flags).
    extra += ', fastmath={"reassoc", "contract"}' if reassoc else ""
    return f'@njit(cache=True, nogil=True, error_model="numpy"{extra})'


def _loop(depth: int, var: str, extent: str, parallel: bool) -> str:
    return f"{'    ' * depth}for {var} in {'prange' if parallel else 'range'}({extent}):"


# --- elementwise ---------------------------------------------------------------------------


def elementwise_source(expr: str, masks: Sequence[Sequence[bool]], parallel: bool) -> str:
    """A kernel ``kernel(in0, ..., out)`` computing ``expr`` (over ``a0, a1, ...``) per output
    element; ``masks[k][d]`` says whether input k varies along axis d (else it is broadcast)."""
    ndim = len(masks[0]) if masks else 1
    lines = [_decorator(parallel), f"def kernel({kernel_args(len(masks), 'out')}):"]
    body: list[str] = []
    for k, mask in enumerate(masks):
        idx = ", ".join(f"i{d}" if m else "0" for d, m in enumerate(mask))
        (body if any(mask) else lines).append(f"a{k} = in{k}[{idx}]")
    lines = [lines[0], lines[1]] + ["    " + line for line in lines[2:]]
    for d in range(ndim):
        lines.append(_loop(d + 1, f"i{d}", f"out.shape[{d}]", parallel and d == 0))
    indent = "    " * (ndim + 1)
    lines += [indent + line for line in body]
    terms, expr = shared_terms(expr)
    lines += [indent + term for term in terms]
    lines.append(f"{indent}out[{', '.join(f'i{d}' for d in range(ndim))}] = {expr}")
    return _HEADER + "\n".join(lines) + "\n"


def elementwise_launch(
    expr: str, in_shapes: Sequence[tuple[int, ...]], out_shape: tuple[int, ...]
) -> Launch:
    """Lower an elementwise expression over broadcast inputs to a generated kernel."""
    shape, masks, views = broadcast_plan(in_shapes, out_shape)
    parallel = math.prod(out_shape) >= PARALLEL_MIN_ELEMENTS
    kernel = load_kernel(elementwise_source(expr, masks, parallel))

    def prepare(inputs: list[np.ndarray], out: np.ndarray):
        return functools.partial(
            kernel, *[a.reshape(v) for a, v in zip(inputs, views)], out.reshape(shape)
        )

    return preparable(prepare)


# --- reductions ----------------------------------------------------------------------------


def reduction_source(expr: str, n_inputs: int, reduced: Sequence[bool], parallel: bool) -> str:
    """A kernel ``kernel(in0, ..., out, scale)``: ``out[kept] = scale * sum(expr)`` over the
    reduced axes, accumulated in float64 (vectorized: the sum may be reassociated). Kept axes
    are the outer loops; when the innermost axis is kept, see ``_inner_kept_source``."""
    if not reduced[-1]:
        return _inner_kept_source(expr, n_inputs, reduced, parallel)
    ndim = len(reduced)
    kept = [d for d in range(ndim) if not reduced[d]]
    summed = [d for d in range(ndim) if reduced[d]]
    lines = [_decorator(parallel, True), f"def kernel({kernel_args(n_inputs, 'out', 'scale')}):"]
    depth = 1
    for j, d in enumerate(kept):
        lines.append(_loop(depth, f"i{d}", f"in0.shape[{d}]", parallel and j == 0))
        depth += 1
    lines.append(f"{'    ' * depth}acc = 0.0")
    acc_depth = depth
    for d in summed:
        lines.append(_loop(depth, f"i{d}", f"in0.shape[{d}]", False))
        depth += 1
    idx = ", ".join(f"i{d}" for d in range(ndim))
    lines += [f"{'    ' * depth}a{k} = in{k}[{idx}]" for k in range(n_inputs)]
    lines.append(f"{'    ' * depth}acc += {expr}")
    out_idx = ", ".join(f"i{d}" for d in kept) or "0"
    lines.append(f"{'    ' * acc_depth}out[{out_idx}] = acc * scale")
    return _HEADER + "\n".join(lines) + "\n"


def _inner_kept_source(expr: str, n_inputs: int, reduced: Sequence[bool], parallel: bool) -> str:
    """``reduction_source`` when the innermost (contiguous) axis is kept, e.g. a Linear bias
    gradient: a block of ``INNER_BLOCK`` outputs along it gets float64 accumulators, and the
    reduced axes are looped outside the block's contiguous loop (no strided column walks).
    Parallel over the first other kept axis, else over the blocks."""
    ndim = len(reduced)
    last = ndim - 1
    outer = [d for d in range(last) if not reduced[d]]
    summed = [d for d in range(ndim) if reduced[d]]
    lines = [_decorator(parallel, True), f"def kernel({kernel_args(n_inputs, 'out', 'scale')}):"]
    lines.append(f"    blocks = (in0.shape[{last}] + {INNER_BLOCK - 1}) // {INNER_BLOCK}")
    depth = 1
    for j, d in enumerate(outer):
        lines.append(_loop(depth, f"i{d}", f"in0.shape[{d}]", parallel and j == 0))
        depth += 1
    lines.append(_loop(depth, "blk", "blocks", parallel and not outer))
    depth += 1
    pad = "    " * depth
    lines += [
        f"{pad}j0 = blk * {INNER_BLOCK}",
        f"{pad}w = min({INNER_BLOCK}, in0.shape[{last}] - j0)",
    ]
    lines.append(f"{pad}acc = np.zeros(w)")
    acc_depth = depth
    for d in summed:
        lines.append(_loop(depth, f"i{d}", f"in0.shape[{d}]", False))
        depth += 1
    lines.append(_loop(depth, "j", "w", False))
    pad = "    " * (depth + 1)
    idx = ", ".join(f"i{d}" if d != last else "j0 + j" for d in range(ndim))
    lines += [f"{pad}a{k} = in{k}[{idx}]" for k in range(n_inputs)]
    lines.append(f"{pad}acc[j] += {expr}")
    out_idx = ", ".join([f"i{d}" for d in outer] + ["j0 + j"])
    lines.append(_loop(acc_depth, "j", "w", False))
    lines.append(f"{'    ' * (acc_depth + 1)}out[{out_idx}] = acc[j] * scale")
    return _HEADER + "\n".join(lines) + "\n"


def reduction_launch(
    expr: str, n_inputs: int, shape: tuple[int, ...], axes: Sequence[int], mean: bool
) -> Launch:
    """Lower ``sum(expr)`` (or the mean) over ``axes`` of inputs all shaped ``shape``."""
    merged, reduced, scale = reduction_plan(shape, axes, mean)
    out_view = tuple(n for n, r in zip(merged, reduced) if not r) or (1,)
    parallel = math.prod(shape) >= PARALLEL_MIN_ELEMENTS and not all(reduced)
    kernel = load_kernel(reduction_source(expr, n_inputs, reduced, parallel))

    def prepare(inputs: list[np.ndarray], out: np.ndarray):
        return functools.partial(
            kernel, *[a.reshape(merged) for a in inputs], out.reshape(out_view), scale
        )

    return preparable(prepare)


# --- transpose -----------------------------------------------------------------------------


def transpose_source(perm: Sequence[int], parallel: bool) -> str:
    inverse = np.argsort(perm)
    lines = [_decorator(parallel), "def kernel(in0, out):"]
    for d in range(len(perm)):
        lines.append(_loop(d + 1, f"i{d}", f"out.shape[{d}]", parallel and d == 0))
    src = ", ".join(f"i{inverse[d]}" for d in range(len(perm)))
    dst = ", ".join(f"i{d}" for d in range(len(perm)))
    lines.append(f"{'    ' * (len(perm) + 1)}out[{dst}] = in0[{src}]")
    return _HEADER + "\n".join(lines) + "\n"


def transpose_launch(perm: Sequence[int], size: int) -> Launch:
    kernel = load_kernel(transpose_source(perm, size >= PARALLEL_MIN_ELEMENTS))

    return preparable(lambda inputs, out: functools.partial(kernel, inputs[0], out))
