"""Elementwise ops with NumPy broadcasting. Each carries a scalar expression for codegen."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import expit

from ..builder import Value, as_values
from .common import broadcast_shapes, require_float, same_dtype, unbroadcast
from .registry import OpDef, TensorType, register


def _infer_same(types, attrs) -> TensorType:
    dtype = same_dtype(types)
    for t in types:
        require_float(t)
    return TensorType(broadcast_shapes(*(t.shape for t in types)), dtype)


def _elementwise(name: str, arity: int, scalar: str, reference: Callable, vjp=None, doc=""):
    return register(
        OpDef(
            name=name,
            arity=(arity, arity),
            infer=_infer_same,
            reference=reference,
            vjp=vjp,
            category="elementwise",
            scalar=scalar,
            doc=doc,
        )
    )


def _emit(op: str, *operands) -> Value:
    values = as_values(*operands)
    return values[0].builder.emit(op, values)


# --- binary arithmetic --------------------------------------------------------------------


def _add_vjp(ctx, g):
    return [unbroadcast(g, ctx.shape(0)), unbroadcast(g, ctx.shape(1))]


def _sub_vjp(ctx, g):
    return [unbroadcast(g, ctx.shape(0)), unbroadcast(-g, ctx.shape(1)) if ctx.needs(1) else None]


def _mul_vjp(ctx, g):
    return [
        unbroadcast(g * ctx.input(1), ctx.shape(0)) if ctx.needs(0) else None,
        unbroadcast(g * ctx.input(0), ctx.shape(1)) if ctx.needs(1) else None,
    ]


def _div_vjp(ctx, g):
    b = ctx.input(1)
    return [
        unbroadcast(g / b, ctx.shape(0)) if ctx.needs(0) else None,
        unbroadcast(-(g * ctx.output) / b, ctx.shape(1)) if ctx.needs(1) else None,
    ]


_elementwise("add", 2, "({0} + {1})", np.add, _add_vjp)
_elementwise("sub", 2, "({0} - {1})", np.subtract, _sub_vjp)
_elementwise("mul", 2, "({0} * {1})", np.multiply, _mul_vjp)
_elementwise("div", 2, "({0} / {1})", np.divide, _div_vjp)
_elementwise(
    "relu_grad",
    2,
    "({0} if {1} > 0 else 0.0)",
    lambda g, y: np.where(y > 0, g, np.zeros((), g.dtype)),
    doc="relu's backward: the gradient where the activation is positive, else 0",
)

# --- unary --------------------------------------------------------------------------------

_elementwise("neg", 1, "(-{0})", np.negative, lambda ctx, g: [-g])
_elementwise("exp", 1, "math.exp({0})", np.exp, lambda ctx, g: [g * ctx.output])
_elementwise("log", 1, "math.log({0})", np.log, lambda ctx, g: [g / ctx.input(0)])
_elementwise("sqrt", 1, "math.sqrt({0})", np.sqrt, lambda ctx, g: [g * 0.5 / ctx.output])
_elementwise("abs", 1, "abs({0})", np.abs, lambda ctx, g: [g * sign(ctx.input(0))])
_elementwise(
    "sign",
    1,
    "(1.0 if {0} > 0 else (-1.0 if {0} < 0 else 0.0))",
    lambda x: np.sign(x),
    lambda ctx, g: [None],
)
_elementwise(
    "relu",
    1,
    "({0} if {0} > 0 else 0.0)",
    lambda x: np.maximum(x, np.zeros((), x.dtype)),
    lambda ctx, g: [relu_grad(g, ctx.output)],
)
_elementwise(
    "tanh", 1, "math.tanh({0})", np.tanh, lambda ctx, g: [g * (1.0 - ctx.output * ctx.output)]
)
_elementwise(
    "sigmoid",
    1,
    "(1.0 / (1.0 + math.exp(-{0})))",
    lambda x: expit(x).astype(x.dtype),
    lambda ctx, g: [g * ctx.output * (1.0 - ctx.output)],
)


def add(a, b) -> Value:
    return _emit("add", a, b)


def sub(a, b) -> Value:
    return _emit("sub", a, b)


def mul(a, b) -> Value:
    return _emit("mul", a, b)


def div(a, b) -> Value:
    return _emit("div", a, b)


def relu_grad(g, y) -> Value:
    return _emit("relu_grad", g, y)


def neg(x) -> Value:
    return _emit("neg", x)


def exp(x) -> Value:
    return _emit("exp", x)


def log(x) -> Value:
    return _emit("log", x)


def sqrt(x) -> Value:
    return _emit("sqrt", x)


def abs(x) -> Value:  # noqa: A001 - mirrors torch.abs
    return _emit("abs", x)


def sign(x) -> Value:
    return _emit("sign", x)


def relu(x) -> Value:
    return _emit("relu", x)


def tanh(x) -> Value:
    return _emit("tanh", x)


def sigmoid(x) -> Value:
    return _emit("sigmoid", x)
