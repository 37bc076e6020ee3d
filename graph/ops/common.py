"""Helpers shared by op definitions: broadcasting, axes, attribute checks, gradient reduction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...errors import DTypeError, OpError, ShapeError
from ..builder import Value
from .registry import TensorType

FLOAT_DTYPES = ("float32", "float64")


def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...]:
    """NumPy broadcasting, with a ShapeError naming both shapes when they do not fit."""
    ndim = max((len(s) for s in shapes), default=0)
    padded = [(1,) * (ndim - len(s)) + tuple(s) for s in shapes]
    out = []
    for dims in zip(*padded):
        sizes = {d for d in dims if d != 1}
        if len(sizes) > 1:
            raise ShapeError(
                f"shapes {' and '.join(str(tuple(s)) for s in shapes)} do not broadcast"
            )
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def require_float(t: TensorType, what: str = "input") -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise DTypeError(f"{what} must be float32 or float64, not {t.dtype}")


def same_dtype(types: Sequence[TensorType]) -> str:
    dtypes = {t.dtype for t in types}
    if len(dtypes) != 1:
        raise DTypeError(f"operands have different dtypes {sorted(dtypes)}; cast one explicitly")
    return dtypes.pop()


def normalize_axes(axis: Any, ndim: int) -> tuple[int, ...]:
    """``None`` means every axis; negative axes count from the end; result sorted, unique."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    result = []
    for a in axes:
        if not -ndim <= a < max(ndim, 1):
            raise ShapeError(f"axis {a} is out of range for a {ndim}-d tensor")
        result.append(a % ndim if ndim else 0)
    if len(set(result)) != len(result):
        raise ShapeError(f"repeated axis in {axes}")
    return tuple(sorted(result))


def pair(value: Any, name: str, minimum: int = 0) -> tuple[int, int]:
    """``2`` or ``(2, 2)`` -> ``(2, 2)``, checked against ``minimum``."""
    p = (value, value) if isinstance(value, int) else tuple(value)
    if len(p) != 2 or not all(isinstance(v, int) for v in p):
        raise OpError(f"{name} must be an int or a pair of ints, not {value!r}")
    if min(p) < minimum:
        raise OpError(f"{name} must be >= {minimum}, got {value!r}")
    return p


def unbroadcast(g: Value, shape: tuple[int, ...]) -> Value:
    """Sum a gradient over the axes along which an operand of ``shape`` was broadcast."""
    if g.shape == shape:
        return g
    lead = len(g.shape) - len(shape)
    axes = [i for i in range(lead)]
    axes += [lead + i for i, d in enumerate(shape) if d == 1 and g.shape[lead + i] != 1]
    summed = g.sum(tuple(axes)) if axes else g
    return summed if summed.shape == shape else summed.reshape(shape)
