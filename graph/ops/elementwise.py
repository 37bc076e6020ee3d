"""Elementwise ops with NumPy broadcasting. Each carries a scalar expression for codegen."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.special import expit

from ...errors import DTypeError, OpError
from ..builder import Value, as_values
from .common import FLOAT_DTYPES, broadcast_shapes, require_float, same_dtype, unbroadcast
from .registry import OpDef, TensorType, register


def _infer_same(types, attrs) -> TensorType:
    dtype = same_dtype(types)
    for t in types:
        require_float(t)
    return TensorType(broadcast_shapes(*(t.shape for t in types)), dtype)


def float_attrs(**defaults: float) -> dict:
    """``attrs`` and ``normalize`` for an elementwise op whose template names float
    attributes: they are written into generated kernels as literals, so must be finite."""

    def normalize(attrs: dict) -> dict:
        out = {}
        for key, value in attrs.items():
            if key not in defaults:
                out[key] = value
                continue
            try:
                out[key] = float(value)
            except (TypeError, ValueError):
                raise OpError(f"{key} must be a number, got {value!r}") from None
            if not math.isfinite(out[key]):
                raise OpError(f"{key} must be finite, got {value!r}")
        return out

    return {"attrs": dict(defaults), "normalize": normalize}


def _elementwise(
    name: str,
    arity: int,
    scalar: str,
    reference: Callable,
    vjp=None,
    doc="",
    infer=_infer_same,
    attrs=None,
    normalize=None,
):
    return register(
        OpDef(
            name=name,
            arity=(arity, arity),
            infer=infer,
            reference=reference,
            vjp=vjp,
            category="elementwise",
            attrs=attrs or {},
            normalize=normalize,
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
    "(0.0 if {1} <= 0.0 else {0})",
    lambda g, y: np.where(y <= 0, np.zeros((), g.dtype), g),
    doc="relu's backward: 0 where the activation is <= 0, else the gradient (a NaN "
    "activation passes it, as torch's threshold_backward)",
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
    lambda x: np.where(np.isnan(x), np.zeros((), x.dtype), np.sign(x)),
    lambda ctx, g: [None],
    doc="1, -1 or 0; 0 for NaN, as torch.sign (numpy's sign gives NaN)",
)
_elementwise(
    "relu",
    1,
    # NaN fails `<=` and passes through, as in torch; one compare and a select (vectorizes).
    "(0.0 if {0} <= 0.0 else {0})",
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

# --- comparisons and selection ------------------------------------------------------------


def _max_min_vjp(toward: float):
    """maximum (toward=+1) / minimum (-1): as PyTorch, the gradient goes to the operand that
    won, half to each on ties, and whole to both where either is NaN (neither lost)."""

    def vjp(ctx, g):
        a, b = ctx.input(0), ctx.input(1)
        share = 1.0 - 0.5 * equal(a, b)
        lost_a = select((b - a) * toward, 1.0, 0.0)  # a < b for maximum; NaN: not lost
        lost_b = select((a - b) * toward, 1.0, 0.0)
        return [
            unbroadcast(g * (share - lost_a), ctx.shape(0)) if ctx.needs(0) else None,
            unbroadcast(g * (share - lost_b), ctx.shape(1)) if ctx.needs(1) else None,
        ]

    return vjp


# A NaN in either operand wins, as np.maximum and torch.maximum. Never Python's max()/min():
# numba-cuda lowers them to fmax/fmin, which return the other operand.
_elementwise(
    "maximum", 2, "({0} if ({0} >= {1} or {0} != {0}) else {1})", np.maximum, _max_min_vjp(1.0)
)
_elementwise(
    "minimum", 2, "({0} if ({0} <= {1} or {0} != {0}) else {1})", np.minimum, _max_min_vjp(-1.0)
)


def _select_vjp(ctx, g):
    c = ctx.input(0)
    return [
        None,
        unbroadcast(select(c, g, 0.0), ctx.shape(1)) if ctx.needs(1) else None,
        unbroadcast(select(c, 0.0, g), ctx.shape(2)) if ctx.needs(2) else None,
    ]


def _infer_select(types, attrs) -> TensorType:
    c, a, b = types
    out = _infer_same([a, b], attrs)
    if c.dtype not in (out.dtype, "bool"):
        raise DTypeError(f"select: the condition must be bool or {out.dtype}, not {c.dtype}")
    return TensorType(broadcast_shapes(c.shape, out.shape), out.dtype)


_elementwise(
    "select",
    3,
    "({1} if {0} > 0 else {2})",
    lambda c, a, b: np.where(c > 0, a, b),
    _select_vjp,
    doc="select(c, a, b): a where c > 0, else b (a bool condition, as x > y gives, or a float "
    "one, e.g. x itself or a mask)",
    infer=_infer_select,
)


def _equal_dtype(operand_dtype: str, dtype) -> str:
    return dtype or (operand_dtype if operand_dtype in FLOAT_DTYPES else "float32")


def _infer_equal(types, attrs) -> TensorType:
    dtypes = {t.dtype for t in types}
    if len(dtypes) != 1:
        raise DTypeError(f"equal: operands have different dtypes {sorted(dtypes)}")
    dtype = _equal_dtype(types[0].dtype, attrs["dtype"])
    if dtype not in FLOAT_DTYPES:
        raise DTypeError(f"equal: dtype must be float32 or float64, not {dtype}")
    return TensorType(broadcast_shapes(*(t.shape for t in types)), dtype)


_elementwise(
    "equal",
    2,
    "(1.0 if {0} == {1} else 0.0)",
    lambda a, b, dtype: (a == b).astype(_equal_dtype(str(a.dtype), dtype)),
    lambda ctx, g: [None, None],
    infer=_infer_equal,
    attrs={"dtype": None},
    doc="1.0 where a == b, else 0.0 (operands may be int64, e.g. class indices: one-hot)",
)

# --- powers and logs ----------------------------------------------------------------------


def _pow_vjp(ctx, g):
    e = ctx.attrs["exponent"]
    if e == 0:
        return [None]
    x = ctx.input(0)
    return [g if e == 1 else g * (x * 2.0 if e == 2 else pow(x, e - 1) * e)]


def _pow_ref(x, exponent):
    if exponent == -0.5:  # as torch: rsqrt, so rsqrt(-inf) is NaN and rsqrt(-0) is -inf
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.ones((), x.dtype) / np.sqrt(x)
    return np.power(x, np.asarray(exponent, x.dtype))  # 0.5: numpy takes sqrt, as torch


_elementwise(
    "pow",
    1,
    # Exponents +-0.5 are sqrt and 1/sqrt, as in torch and numpy: C's pow(-inf, 0.5) is +inf,
    # not NaN. The condition compares two literals, which the compiler folds away.
    "(math.sqrt({0}) if ({exponent}) == 0.5 else "
    "(1.0 / math.sqrt({0}) if ({exponent}) == -0.5 else {0} ** ({exponent})))",
    _pow_ref,
    _pow_vjp,
    doc="x ** exponent, for a constant (float attribute) exponent",
    **float_attrs(exponent=2.0),
)


def _xlogy_ref(x, y):
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(x == 0, np.zeros((), x.dtype), x * np.log(y))
    return np.where(np.isnan(y), y, out)


def _xlogy_vjp(ctx, g):
    x, y = ctx.input(0), ctx.input(1)
    # As torch: d/dx = log(y), except 0 where x == 0 and y <= 0 (where log(y) is not finite);
    # a NaN y is not <= 0, so its NaN goes through.
    y_at_most_0 = select(y, 0.0, equal(y, y))  # 1 where y <= 0, 0 where y > 0 or NaN
    masked = equal(x, 0.0) * y_at_most_0
    return [
        unbroadcast(select(masked, 0.0, g * log(y)), ctx.shape(0)) if ctx.needs(0) else None,
        unbroadcast(g * x / y, ctx.shape(1)) if ctx.needs(1) else None,
    ]


_elementwise(
    "xlogy",
    2,
    "({1} if {1} != {1} else (0.0 if {0} == 0 else {0} * math.log({1})))",
    _xlogy_ref,
    _xlogy_vjp,
    doc="x * log(y), and 0 where x == 0 unless y is NaN (as torch.xlogy): KL divergence, entropies",
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


def maximum(a, b) -> Value:
    return _emit("maximum", a, b)


def minimum(a, b) -> Value:
    return _emit("minimum", a, b)


def select(c, a, b) -> Value:
    """``a`` where ``c > 0``, else ``b`` (broadcasting all three); ``c`` may be bool."""
    a, b, c = as_values(a, b, c)  # number operands take a's or b's dtype, not a bool c's
    return a.builder.emit("select", [c, a, b])


def equal(a, b, dtype: str | None = None) -> Value:
    """1.0 where ``a == b`` else 0.0, as ``dtype`` (default: the operands' float dtype, or
    float32 for int operands)."""
    values = as_values(a, b)
    return values[0].builder.emit("equal", values, dtype=dtype)


def pow(x, exponent: float) -> Value:  # noqa: A001 - mirrors torch.pow
    """``x ** exponent`` for a constant exponent."""
    values = as_values(x)
    return values[0].builder.emit("pow", values, exponent=exponent)


def xlogy(x, y) -> Value:
    """``x * log(y)``, 0 where ``x == 0``."""
    return _emit("xlogy", x, y)
