"""Reductions over axes, and broadcasting a value back to a larger shape."""

from __future__ import annotations

import math

import numpy as np

from ...errors import ShapeError
from ..builder import Value, as_value
from .common import broadcast_shapes, normalize_axes, require_float, unbroadcast
from .registry import OpDef, TensorType, register


def _reduced_shape(shape, axes, keepdims) -> tuple[int, ...]:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _infer_reduce(types, attrs) -> TensorType:
    (x,) = types
    require_float(x)
    axes = attrs["axes"]
    if any(not 0 <= a < len(x.shape) for a in axes) or list(axes) != sorted(set(axes)):
        raise ShapeError(f"axes {axes} are not sorted, unique axes of a {len(x.shape)}-d tensor")
    return TensorType(_reduced_shape(x.shape, axes, attrs["keepdims"]), x.dtype)


def _grad_to_input(ctx, g: Value) -> Value:
    """Broadcast an output gradient back over the reduced axes."""
    kept = _reduced_shape(ctx.shape(0), ctx.attrs["axes"], True)
    return broadcast_to(g.reshape(kept) if g.shape != kept else g, ctx.shape(0))


def _count(ctx) -> int:
    return math.prod(ctx.shape(0)[a] for a in ctx.attrs["axes"])


def _reduce_flops(ins, out, attrs) -> int:
    return math.prod(ins[0].shape)


for _name, _np, _vjp in (
    ("sum", np.sum, lambda ctx, g: [_grad_to_input(ctx, g)]),
    ("mean", np.mean, lambda ctx, g: [_grad_to_input(ctx, g * (1.0 / _count(ctx)))]),
):
    register(
        OpDef(
            name=_name,
            arity=(1, 1),
            infer=_infer_reduce,
            reference=(
                lambda x, axes, keepdims, _f=_np: np.asarray(
                    _f(x, axis=axes, keepdims=keepdims), dtype=x.dtype
                )
            ),
            vjp=_vjp,
            category="reduction",
            attrs={"axes": (), "keepdims": False},
            flops=_reduce_flops,
        )
    )


def _infer_broadcast(types, attrs) -> TensorType:
    (x,) = types
    shape = tuple(attrs["shape"])
    if broadcast_shapes(x.shape, shape) != shape:
        raise ShapeError(f"cannot broadcast {x.shape} to {shape}")
    return TensorType(shape, x.dtype)


register(
    OpDef(
        name="broadcast_to",
        arity=(1, 1),
        infer=_infer_broadcast,
        reference=lambda x, shape: np.ascontiguousarray(np.broadcast_to(x, shape)),
        vjp=lambda ctx, g: [unbroadcast(g, ctx.shape(0))],
        category="elementwise",
        attrs={"shape": ()},
        normalize=lambda a: {"shape": tuple(int(d) for d in a["shape"])},
        scalar="{0}",
    )
)


def sum(x, axis=None, keepdims: bool = False) -> Value:  # noqa: A001 - mirrors torch.sum
    x = as_value(x)
    return x.builder.emit("sum", [x], axes=normalize_axes(axis, x.ndim), keepdims=keepdims)


def mean(x, axis=None, keepdims: bool = False) -> Value:
    x = as_value(x)
    return x.builder.emit("mean", [x], axes=normalize_axes(axis, x.ndim), keepdims=keepdims)


def broadcast_to(x, shape) -> Value:
    x = as_value(x)
    return x if x.shape == tuple(shape) else x.builder.emit("broadcast_to", [x], shape=shape)
