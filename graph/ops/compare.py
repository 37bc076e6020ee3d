"""Comparisons, casts and gradient stops: the elementwise ops behind ``x > y`` (bool results,
for ``select`` and masks), ``x.astype(dtype)`` and ``F.stop_gradient(x)``."""

from __future__ import annotations

import numpy as np

from ...errors import DTypeError, OpError
from ..builder import Value, as_value, as_values
from ..ir import DTYPES
from .common import FLOAT_DTYPES, broadcast_shapes, require_float
from .elementwise import _elementwise
from .registry import TensorType


def _infer_compare(types, attrs) -> TensorType:
    dtypes = {t.dtype for t in types}
    if len(dtypes) != 1 or "bool" in dtypes:
        raise DTypeError(f"compares numbers of one dtype, not {sorted(dtypes)}; cast one first")
    return TensorType(broadcast_shapes(*(t.shape for t in types)), "bool")


# A NaN compares false, as in NumPy and torch. Flat: no gradient flows through a comparison.
for _name, _symbol, _ref in (
    ("greater", ">", np.greater),
    ("greater_equal", ">=", np.greater_equal),
):
    _elementwise(
        _name,
        2,
        f"({{0}} {_symbol} {{1}})",
        _ref,
        lambda ctx, g: [None, None],
        infer=_infer_compare,
        doc=f"a {_symbol} b as bool (a < b is greater(b, a)); no gradient",
    )


def _normalize_cast(attrs: dict) -> dict:
    if attrs["dtype"] not in DTYPES:
        raise OpError(f"dtype must be one of {DTYPES}, got {attrs['dtype']!r}")
    return attrs


def _cast_vjp(ctx, g):
    source = ctx.dtype(0)
    return [cast(g, source) if source in FLOAT_DTYPES and g.dtype in FLOAT_DTYPES else None]


_elementwise(
    "cast",
    1,
    "{0}",  # the kernel's store converts (C semantics, as numpy's astype)
    lambda x, dtype: x.astype(dtype),
    _cast_vjp,
    infer=lambda types, attrs: TensorType(types[0].shape, attrs["dtype"]),
    attrs={"dtype": "float32"},
    normalize=_normalize_cast,
    doc="x as another dtype (x.astype); float to float passes the gradient back, cast; a "
    "NaN or infinity cast to an integer dtype is undefined (as in C, NumPy and torch)",
)

_elementwise(
    "stop_gradient",
    1,
    "{0}",
    lambda x: x.copy(),
    lambda ctx, g: [None],
    infer=lambda types, attrs: types[0],
    doc="x itself, through which no gradient flows (jax.lax.stop_gradient, torch's detach)",
)


def greater(a, b) -> Value:
    """``a > b`` as a bool tensor (NaN compares false)."""
    a, b = as_values(a, b)
    return a.builder.emit("greater", [a, b])


def greater_equal(a, b) -> Value:
    """``a >= b`` as a bool tensor (NaN compares false)."""
    a, b = as_values(a, b)
    return a.builder.emit("greater_equal", [a, b])


def cast(x, dtype: str) -> Value:
    """``x`` converted to ``dtype`` (``x`` itself when it already has it)."""
    x = as_value(x)
    return x if x.dtype == dtype else x.builder.emit("cast", [x], dtype=str(dtype))


def stop_gradient(x) -> Value:
    """``x``, with no gradient flowing back through it (its producer sees none from here)."""
    x = as_value(x)
    require_float(TensorType(x.shape, x.dtype), "stop_gradient's input")
    return x.builder.emit("stop_gradient", [x])


__all__ = ["cast", "greater", "greater_equal", "stop_gradient"]
