"""Joining and splitting along an axis: ``concat`` (Inception's channel merge) and ``slice``.

A node has one output, so a split is one ``slice`` node per piece. Their VJPs are each other:
concat's gradient is a slice per operand; slice's gradient is the gradient concatenated with
zeros on either side, so both backward passes are plain graph (and differentiable again).
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import OpError, ShapeError
from ..builder import Value, as_value, as_values
from .common import same_dtype
from .registry import OpDef, TensorType, register

MAX_CONCAT_INPUTS = 1024


def _axis(attrs: dict) -> dict:
    attrs = dict(attrs)
    if not isinstance(attrs["axis"], (int, np.integer)) or attrs["axis"] < 0:
        raise OpError(f"axis must be a non-negative int (normalized), got {attrs['axis']!r}")
    attrs["axis"] = int(attrs["axis"])
    for key in ("start", "stop"):
        if key in attrs:
            if not isinstance(attrs[key], (int, np.integer)):
                raise OpError(f"{key} must be an int, got {attrs[key]!r}")
            attrs[key] = int(attrs[key])
    return attrs


def outer_inner(shape, axis) -> tuple[int, int]:
    """(elements before ``axis``, elements after it): backends copy (outer, n * inner) rows."""
    return math.prod(shape[:axis]), math.prod(shape[axis + 1 :])


# --- concat ---------------------------------------------------------------------------------


def _infer_concat(types, attrs) -> TensorType:
    axis = attrs["axis"]
    first = types[0].shape
    if axis >= len(first):
        raise ShapeError(f"axis {axis} is out of range for {len(first)}-d operands")
    for t in types[1:]:
        rest_a = first[:axis] + first[axis + 1 :]
        rest_b = t.shape[:axis] + t.shape[axis + 1 :]
        if len(t.shape) != len(first) or rest_a != rest_b:
            shapes = ", ".join(str(tuple(u.shape)) for u in types)
            raise ShapeError(f"operands must match in every axis but {axis}; got shapes {shapes}")
    size = sum(t.shape[axis] for t in types)
    return TensorType((*first[:axis], size, *first[axis + 1 :]), same_dtype(types))


def _concat_vjp(ctx, g):
    axis, start, grads = ctx.attrs["axis"], 0, []
    for i in range(len(ctx.node.inputs)):
        size = ctx.shape(i)[axis]
        grads.append(slice_(g, start, start + size, axis) if ctx.needs(i) else None)
        start += size
    return grads


register(
    OpDef(
        name="concat",
        arity=(1, MAX_CONCAT_INPUTS),
        infer=_infer_concat,
        reference=lambda *xs, axis: np.concatenate(xs, axis=axis),
        vjp=_concat_vjp,
        category="shape",
        attrs={"axis": 0},
        normalize=_axis,
        flops=lambda ins, out, attrs: 0,
        doc="operands joined along axis (all other axes equal), as torch.cat",
    )
)


# --- slice ----------------------------------------------------------------------------------


def _infer_slice(types, attrs) -> TensorType:
    (x,) = types
    axis, start, stop = attrs["axis"], attrs["start"], attrs["stop"]
    if axis >= len(x.shape):
        raise ShapeError(f"axis {axis} is out of range for a {len(x.shape)}-d tensor")
    if not 0 <= start < stop <= x.shape[axis]:
        raise ShapeError(
            f"slice [{start}:{stop}] of axis {axis} is empty or outside 0..{x.shape[axis]}"
        )
    return TensorType((*x.shape[:axis], stop - start, *x.shape[axis + 1 :]), x.dtype)


def _slice_ref(x, axis, start, stop):
    index = (slice(None),) * axis + (slice(start, stop),)
    return np.ascontiguousarray(x[index])


def _zeros(like: Value, axis: int, size: int) -> Value:
    shape = (*like.shape[:axis], size, *like.shape[axis + 1 :])
    return like.builder.emit("broadcast_to", [like.builder.const(0.0, like.dtype)], shape=shape)


def _slice_vjp(ctx, g):
    axis, start, stop = ctx.attrs["axis"], ctx.attrs["start"], ctx.attrs["stop"]
    full = ctx.shape(0)[axis]
    pieces = ([_zeros(g, axis, start)] if start else []) + [g]
    pieces += [_zeros(g, axis, full - stop)] if stop < full else []
    return [concat(pieces, axis) if len(pieces) > 1 else g]


register(
    OpDef(
        name="slice",
        arity=(1, 1),
        infer=_infer_slice,
        reference=_slice_ref,
        vjp=_slice_vjp,
        category="shape",
        attrs={"axis": 0, "start": 0, "stop": 0},
        normalize=_axis,
        flops=lambda ins, out, attrs: 0,
        doc="x[..., start:stop, ...] along axis (a copy; step 1)",
    )
)


# --- the op API -----------------------------------------------------------------------------


def _norm_axis(axis: int, ndim: int, op: str) -> int:
    if not -ndim <= axis < ndim:
        raise ShapeError(f"{op}: axis {axis} is out of range for {ndim}-d operands")
    return axis % ndim


def concat(xs, axis: int = 0) -> Value:
    """Join tensors along ``axis`` (``torch.cat``); all other axes must match. One operand
    is returned as it is."""
    values = as_values(*xs)
    if not values:
        raise OpError("concat needs at least one tensor")
    if len(values) == 1:
        return values[0]
    axis = _norm_axis(axis, values[0].ndim, "concat")
    return values[0].builder.emit("concat", values, axis=axis)


def slice_(x, start: int, stop: int, axis: int = 0) -> Value:
    """``x[..., start:stop, ...]`` along ``axis`` (non-negative bounds, step 1)."""
    x = as_value(x)
    axis = _norm_axis(axis, x.ndim, "slice")
    if start == 0 and stop == x.shape[axis]:
        return x
    return x.builder.emit("slice", [x], axis=axis, start=start, stop=stop)


def split(x, sizes, axis: int = 0) -> list[Value]:
    """Pieces of ``x`` along ``axis`` with the given sizes (one ``slice`` node each); sizes
    must add up to the axis length (``torch.split`` with a list)."""
    x = as_value(x)
    axis = _norm_axis(axis, x.ndim, "split")
    sizes = [int(s) for s in sizes]
    if sum(sizes) != x.shape[axis] or min(sizes, default=0) <= 0:
        raise ShapeError(f"split: sizes {sizes} do not partition axis {axis} of {x.shape}")
    starts = np.cumsum([0, *sizes[:-1]]).tolist()
    return [slice_(x, s, s + n, axis) for s, n in zip(starts, sizes)]
