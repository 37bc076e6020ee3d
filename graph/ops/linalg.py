"""Matrix products: 2-d, or 3-d batched, with optional transposed operands."""

from __future__ import annotations

import numpy as np

from ...errors import ShapeError
from ..builder import Value, as_values
from .common import require_float, same_dtype
from .registry import OpDef, TensorType, register


def _operand(shape, transposed):
    return (*shape[:-2], shape[-1], shape[-2]) if transposed else tuple(shape)


def _infer_matmul(types, attrs) -> TensorType:
    a, b = types
    dtype = same_dtype(types)
    require_float(a)
    if len(a.shape) not in (2, 3) or len(a.shape) != len(b.shape):
        raise ShapeError("operands must both be 2-d, or both 3-d (batched)")
    sa, sb = _operand(a.shape, attrs["trans_a"]), _operand(b.shape, attrs["trans_b"])
    if sa[:-2] != sb[:-2] or sa[-1] != sb[-2]:
        raise ShapeError(f"cannot multiply {sa} by {sb}: inner sizes {sa[-1]} and {sb[-2]} differ")
    return TensorType((*sa[:-1], sb[-1]), dtype)


def _reference(a, b, trans_a, trans_b):
    a = np.swapaxes(a, -1, -2) if trans_a else a
    b = np.swapaxes(b, -1, -2) if trans_b else b
    return np.matmul(a, b)


def _vjp(ctx, g):
    a, b = ctx.input(0), ctx.input(1)
    ta, tb = ctx.attrs["trans_a"], ctx.attrs["trans_b"]
    ga = gb = None
    if ctx.needs(0):
        ga = matmul(g, b, trans_b=not tb) if not ta else matmul(b, g, trans_a=tb, trans_b=True)
    if ctx.needs(1):
        gb = matmul(a, g, trans_a=not ta) if not tb else matmul(g, a, trans_a=True, trans_b=ta)
    return [ga, gb]


def _flops(ins, out, attrs) -> int:
    inner = _operand(ins[0].shape, attrs["trans_a"])[-1]
    return 2 * int(np.prod(out.shape)) * inner


register(
    OpDef(
        name="matmul",
        arity=(2, 2),
        infer=_infer_matmul,
        reference=_reference,
        vjp=_vjp,
        attrs={"trans_a": False, "trans_b": False},
        flops=_flops,
    )
)


def matmul(a, b, trans_a: bool = False, trans_b: bool = False) -> Value:
    """``op(a) @ op(b)`` where op transposes the last two axes when its flag is set."""
    a, b = as_values(a, b)
    return a.builder.emit("matmul", [a, b], trans_a=bool(trans_a), trans_b=bool(trans_b))
