"""Ops that move data without arithmetic: reshape (a view) and transpose."""

from __future__ import annotations

import math

import numpy as np

from ...errors import ShapeError
from ..builder import Value, as_value
from .registry import OpDef, TensorType, register


def _infer_reshape(types, attrs) -> TensorType:
    (x,) = types
    shape = attrs["shape"]
    if math.prod(shape) != math.prod(x.shape):
        raise ShapeError(f"cannot reshape {x.shape} ({math.prod(x.shape)} elements) to {shape}")
    return TensorType(shape, x.dtype)


register(
    OpDef(
        name="reshape",
        arity=(1, 1),
        infer=_infer_reshape,
        reference=lambda x, shape: x.reshape(shape).copy(),
        vjp=lambda ctx, g: [g.reshape(ctx.shape(0))],
        category="shape",
        attrs={"shape": ()},
        normalize=lambda a: {"shape": tuple(int(d) for d in a["shape"])},
        flops=lambda ins, out, attrs: 0,
        doc="same elements, new shape; backends alias the input buffer",
    )
)


def _infer_transpose(types, attrs) -> TensorType:
    (x,) = types
    perm = attrs["perm"]
    if sorted(perm) != list(range(len(x.shape))):
        raise ShapeError(
            f"perm {perm} is not a permutation of the axes of a {len(x.shape)}-d tensor"
        )
    return TensorType(tuple(x.shape[p] for p in perm), x.dtype)


register(
    OpDef(
        name="transpose",
        arity=(1, 1),
        infer=_infer_transpose,
        reference=lambda x, perm: np.ascontiguousarray(np.transpose(x, perm)),
        vjp=lambda ctx, g: [g.transpose(tuple(np.argsort(ctx.attrs["perm"]).tolist()))],
        category="shape",
        attrs={"perm": ()},
        normalize=lambda a: {"perm": tuple(int(p) for p in a["perm"])},
        flops=lambda ins, out, attrs: 0,
    )
)


def reshape(x, shape) -> Value:
    """Reshape; one dimension may be -1 and is then inferred."""
    x = as_value(x)
    shape = (shape,) if isinstance(shape, int) else tuple(int(d) for d in shape)
    if shape.count(-1) > 1:
        raise ShapeError(f"reshape of {x.shape}: only one dimension can be -1, got {shape}")
    if -1 in shape:
        known = math.prod(d for d in shape if d != -1)
        if known == 0 or math.prod(x.shape) % known:
            raise ShapeError(f"cannot reshape {x.shape} to {shape}")
        shape = tuple(math.prod(x.shape) // known if d == -1 else d for d in shape)
    return x if shape == x.shape else x.builder.emit("reshape", [x], shape=shape)


def flatten(x, start_dim: int = 1) -> Value:
    """Merge the dimensions from ``start_dim`` on (as ``torch.flatten``)."""
    x = as_value(x)
    start = start_dim % max(x.ndim, 1)
    return reshape(x, (*x.shape[:start], math.prod(x.shape[start:])))


def transpose(x, perm=None) -> Value:
    """Permute axes (all reversed when ``perm`` is None)."""
    x = as_value(x)
    perm = tuple(reversed(range(x.ndim))) if perm is None or perm == () else tuple(perm)
    return x if perm == tuple(range(x.ndim)) else x.builder.emit("transpose", [x], perm=perm)
