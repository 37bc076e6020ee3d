"""Softmax and log-softmax along one axis, and their backward ops."""

from __future__ import annotations

import numpy as np

from ..builder import Value, as_value, as_values
from .common import normalize_axes, require_float, same_dtype
from .registry import OpDef, TensorType, register


def _infer(types, attrs) -> TensorType:
    dtype = same_dtype(types)
    require_float(types[0])
    normalize_axes(attrs["axis"], len(types[0].shape))
    return TensorType(types[0].shape, dtype)


def _softmax_ref(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax_ref(x, axis):
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def _softmax_grad_ref(g, y, axis):
    return y * (g - (g * y).sum(axis=axis, keepdims=True))


def _log_softmax_grad_ref(g, y, axis):
    return g - np.exp(y) * g.sum(axis=axis, keepdims=True)


def _flops(ins, out, attrs) -> int:
    return 4 * int(np.prod(out.shape))


for _name, _ref, _grad_name in (
    ("softmax", _softmax_ref, "softmax_grad"),
    ("log_softmax", _log_softmax_ref, "log_softmax_grad"),
):
    register(
        OpDef(
            name=_name,
            arity=(1, 1),
            infer=_infer,
            reference=_ref,
            vjp=lambda ctx, g, _grad=_grad_name: [
                g.builder.emit(_grad, [g, ctx.output], axis=ctx.attrs["axis"])
            ],
            category="reduction",
            attrs={"axis": -1},
            normalize=lambda a: {"axis": int(a["axis"])},
            flops=_flops,
        )
    )

for _name, _ref in (
    ("softmax_grad", _softmax_grad_ref),
    ("log_softmax_grad", _log_softmax_grad_ref),
):
    register(
        OpDef(
            name=_name,
            arity=(2, 2),
            infer=_infer,
            reference=_ref,
            category="reduction",
            attrs={"axis": -1},
            normalize=lambda a: {"axis": int(a["axis"])},
            flops=_flops,
            doc="inputs: dL/dy, y (the forward op's output)",
        )
    )


def _axis(x: Value, axis: int) -> int:
    return normalize_axes(axis, x.ndim)[0]


def softmax(x, axis: int = -1) -> Value:
    x = as_value(x)
    return x.builder.emit("softmax", [x], axis=_axis(x, axis))


def log_softmax(x, axis: int = -1) -> Value:
    x = as_value(x)
    return x.builder.emit("log_softmax", [x], axis=_axis(x, axis))


def softmax_grad(g, y, axis: int = -1) -> Value:
    g, y = as_values(g, y)
    return g.builder.emit("softmax_grad", [g, y], axis=_axis(g, axis))
