"""Basic indexing of traced tensors (``x[1:, None, ..., 0]``): ints, step-1 slices, None and
Ellipsis, as NumPy's basic indexing, built from ``slice`` and ``reshape``."""

from __future__ import annotations

import operator
from typing import Any

from ...errors import ShapeError
from ..builder import Value, as_value
from .join import slice_
from .shape import reshape


def _expand(key: tuple, ndim: int) -> list:
    """``key`` with its Ellipsis (or, without one, the missing trailing axes) made explicit."""
    if sum(k is Ellipsis for k in key) > 1:
        raise ShapeError("an index can only have a single ellipsis ('...')")
    consumed = sum(k is not None and k is not Ellipsis for k in key)
    if consumed > ndim:
        raise ShapeError(f"too many indices ({consumed}) for a {ndim}-d tensor")
    fill = [slice(None)] * (ndim - consumed)
    if Ellipsis not in key:
        return [*key, *fill]
    at = key.index(Ellipsis)
    return [*key[:at], *fill, *key[at + 1 :]]


def _position(k: Any, size: int, axis: int) -> int:
    try:
        i = operator.index(k)
    except TypeError:
        raise ShapeError(
            f"cannot index a traced tensor with {type(k).__name__} (ints, slices, None and "
            "... only: select with F.select, gather classes with F.one_hot)"
        ) from None
    if isinstance(k, bool) or not -size <= i < size:
        raise ShapeError(f"index {k!r} is out of range for axis {axis} of size {size}")
    return i % size


def getitem(x, key) -> Value:
    """``x[key]`` for basic indices; the result is a new tensor (a copy), as every op's."""
    x = as_value(x)
    entries = _expand(key if isinstance(key, tuple) else (key,), x.ndim)
    out_shape: list[int] = []
    axis = 0
    for k in entries:
        if k is None:
            out_shape.append(1)
            continue
        size = x.shape[axis]
        if isinstance(k, slice):
            start, stop, step = k.indices(size)
            if step != 1:
                raise ShapeError(f"slice {k} of axis {axis}: only step 1 is supported")
            if stop <= start:
                raise ShapeError(f"slice {k} of axis {axis} (size {size}) is empty")
            x = slice_(x, start, stop, axis)
            out_shape.append(stop - start)
        else:
            i = _position(k, size, axis)
            x = slice_(x, i, i + 1, axis)
        axis += 1
    return reshape(x, tuple(out_shape))


__all__ = ["getitem"]
