"""Activation functions as elementwise ops: each has a scalar template (so it fuses with its
neighbours into one kernel) and a VJP written with the op API. Constant hyper-parameters are
float attributes, written into the generated kernels as literals."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf as _erf
from scipy.special import expit

from ..builder import Value, as_values
from .common import unbroadcast
from .elementwise import _elementwise, exp, float_attrs, select, sigmoid


def _emit(op: str, x, **attrs) -> Value:
    (x,) = as_values(x)
    return x.builder.emit(op, [x], **attrs)


def _leaky_relu_ref(x, negative_slope):
    return np.where(x > 0, x, x * np.asarray(negative_slope, x.dtype))


_elementwise(
    "leaky_relu",
    1,
    "({0} if {0} > 0 else {0} * ({negative_slope}))",
    _leaky_relu_ref,
    lambda ctx, g: [select(ctx.input(0), g, g * ctx.attrs["negative_slope"])],
    doc="x where x > 0, else negative_slope * x",
    **float_attrs(negative_slope=0.01),
)


def _prelu_vjp(ctx, g):
    x, alpha = ctx.input(0), ctx.input(1)
    return [
        unbroadcast(select(x, g, g * alpha), ctx.shape(0)) if ctx.needs(0) else None,
        unbroadcast(select(x, 0.0, g * x), ctx.shape(1)) if ctx.needs(1) else None,
    ]


_elementwise(
    "prelu",
    2,
    "({0} if {0} > 0 else {1} * {0})",
    lambda x, alpha: np.where(x > 0, x, alpha * x),
    _prelu_vjp,
    doc="prelu(x, alpha): x where x > 0, else alpha * x; alpha broadcasts (a learned slope)",
)


def _elu_ref(x, alpha):
    return np.where(x > 0, x, np.asarray(alpha, x.dtype) * np.expm1(np.minimum(x, 0)))


_elementwise(
    "elu",
    1,
    "({0} if {0} > 0 else ({alpha}) * math.expm1({0}))",
    _elu_ref,
    # For x <= 0, alpha * exp(x) = y + alpha: the saved output gives the slope.
    lambda ctx, g: [select(ctx.input(0), g, g * (ctx.output + ctx.attrs["alpha"]))],
    doc="x where x > 0, else alpha * (exp(x) - 1)",
    **float_attrs(alpha=1.0),
)


def _silu_vjp(ctx, g):
    x = ctx.input(0)
    s = sigmoid(x)
    return [g * s * (1.0 + x * (1.0 - s))]


_elementwise(
    "silu",
    1,
    "({0} / (1.0 + math.exp(-{0})))",
    lambda x: x * expit(x).astype(x.dtype),
    _silu_vjp,
    doc="x * sigmoid(x) (swish)",
)


def _softplus_ref(x, beta, threshold):
    bx = x * np.asarray(beta, x.dtype)
    return np.where(bx > threshold, x, np.logaddexp(np.zeros((), x.dtype), bx) / beta)


def _softplus_vjp(ctx, g):
    x, beta, threshold = ctx.input(0), ctx.attrs["beta"], ctx.attrs["threshold"]
    bx = x * beta
    return [select(bx - threshold, g, g * sigmoid(bx))]


_elementwise(
    "softplus",
    1,
    "({0} if {0} * ({beta}) > ({threshold}) else math.log1p(math.exp({0} * ({beta}))) / ({beta}))",
    _softplus_ref,
    _softplus_vjp,
    doc="log(1 + exp(beta x)) / beta, and x where beta x > threshold (as torch)",
    **float_attrs(beta=1.0, threshold=20.0),
)

_elementwise(
    "erf",
    1,
    "math.erf({0})",
    lambda x: _erf(x).astype(x.dtype),
    lambda ctx, g: [g * exp(-(ctx.input(0) * ctx.input(0))) * (2.0 / math.sqrt(math.pi))],
    doc="the error function (exact GELU: x * (1 + erf(x / sqrt 2)) / 2)",
)

LECUN_AMPLITUDE = 1.7159
LECUN_SLOPE = 2.0 / 3.0


def _scaled_tanh_vjp(ctx, g):
    a, s = ctx.attrs["amplitude"], ctx.attrs["slope"]
    y = ctx.output
    # d/dx a tanh(s x) = a s (1 - tanh^2) = (s / a) (a^2 - y^2)
    return [g * ((a * a - y * y) * (s / a))]


_elementwise(
    "scaled_tanh",
    1,
    "(({amplitude}) * math.tanh(({slope}) * {0}))",
    lambda x, amplitude, slope: (amplitude * np.tanh(slope * x)).astype(x.dtype),
    _scaled_tanh_vjp,
    doc="amplitude * tanh(slope * x); LeCun's 1.7159 tanh(2x/3) by default",
    **float_attrs(amplitude=LECUN_AMPLITUDE, slope=LECUN_SLOPE),
)


def erf(x) -> Value:
    return _emit("erf", x)


def leaky_relu(x, negative_slope: float = 0.01) -> Value:
    return _emit("leaky_relu", x, negative_slope=negative_slope)


def prelu(x, alpha) -> Value:
    """``x`` where positive, else ``alpha * x``; ``alpha`` broadcasts against ``x``."""
    x, alpha = as_values(x, alpha)
    return x.builder.emit("prelu", [x, alpha])


def elu(x, alpha: float = 1.0) -> Value:
    return _emit("elu", x, alpha=alpha)


def silu(x) -> Value:
    return _emit("silu", x)


def softplus(x, beta: float = 1.0, threshold: float = 20.0) -> Value:
    return _emit("softplus", x, beta=beta, threshold=threshold)


def scaled_tanh(x, amplitude: float = LECUN_AMPLITUDE, slope: float = LECUN_SLOPE) -> Value:
    """LeCun's scaled tanh ``amplitude * tanh(slope * x)`` (default 1.7159 tanh(2x/3))."""
    return _emit("scaled_tanh", x, amplitude=amplitude, slope=slope)


__all__ = ["elu", "erf", "leaky_relu", "prelu", "scaled_tanh", "silu", "softplus"]
