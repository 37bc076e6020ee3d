"""Scans along an axis: ``cumsum`` (running sums, forward or reverse). Its VJP is the scan the
other way: d(sum_j<=i x_j)/dx_k reaches every output i >= k."""

from __future__ import annotations

import numpy as np

from ...errors import OpError, ShapeError
from ..builder import Value, as_value
from .common import require_float
from .registry import OpDef, TensorType, register


def _normalize(attrs: dict) -> dict:
    axis, reverse = attrs["axis"], attrs["reverse"]
    if type(axis) is not int or axis < 0:
        raise OpError(f"axis must be a non-negative int (normalized), got {axis!r}")
    if type(reverse) is not bool:
        raise OpError(f"reverse must be True or False, got {reverse!r}")
    return attrs


def _infer(types, attrs) -> TensorType:
    (x,) = types
    require_float(x)
    if attrs["axis"] >= len(x.shape):
        raise ShapeError(f"axis {attrs['axis']} is out of range for a {len(x.shape)}-d tensor")
    return x


def cumsum_reference(x: np.ndarray, axis: int, reverse: bool) -> np.ndarray:
    if not reverse:
        return np.cumsum(x, axis=axis, dtype=x.dtype)
    flipped = np.flip(x, axis)
    return np.ascontiguousarray(np.flip(np.cumsum(flipped, axis=axis, dtype=x.dtype), axis))


register(
    OpDef(
        name="cumsum",
        arity=(1, 1),
        infer=_infer,
        reference=cumsum_reference,
        vjp=lambda ctx, g: [cumsum(g, ctx.attrs["axis"], not ctx.attrs["reverse"])],
        category="opaque",
        attrs={"axis": 0, "reverse": False},
        normalize=_normalize,
        doc="running sums along axis (from the end when reverse), as torch.cumsum",
    )
)


def cumsum(x, axis: int = -1, reverse: bool = False) -> Value:
    """Running sums of ``x`` along ``axis`` (``torch.cumsum``); from the last element back
    when ``reverse``."""
    x = as_value(x)
    if not -x.ndim <= axis < max(x.ndim, 1):
        raise ShapeError(f"cumsum: axis {axis} is out of range for a {x.ndim}-d tensor")
    return x.builder.emit("cumsum", [x], axis=axis % max(x.ndim, 1), reverse=bool(reverse))


__all__ = ["cumsum"]
