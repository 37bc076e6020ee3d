"""The per-channel reductions of training BatchNorm: one pass over the activation forward,
one backward.

- ``batch_norm_stats(x)`` -> (2, C): row 0 the mean of x (N, C, ...) over every axis but the
  channels (axis 1), row 1 its biased variance, both from ONE pass over x.
- ``batch_norm_grad_stats(g, x, mean)`` -> (2, C): row 0 ``sum(g)``, row 1
  ``sum(g * (x - mean))`` over the same axes, from one pass over (g, x). ``batch_norm``'s VJP
  derives all its per-channel gradients from these two rows (see graph/ops/norm.py).

Why a stacked (2, C) result: a node has one output, and a pass over the activation is a
kernel, so two statistics from one pass are one (2, C) tensor. Its rows are read with
``channel_row`` (a ``slice`` of C elements, then a reshape, which backends alias), so the
consumers stay ordinary ops on (1, C, 1, ...) values: the normalization itself remains the
elementwise ``batch_norm`` op, which fusion merges with the ReLU and residual add after it,
and ``fold_conv_bn`` still finds it in inference graphs.

Autodiff then gives the textbook two-pass backward without a hand-written composite rule:
``batch_norm``'s VJP emits ``batch_norm_grad_stats`` (one reduction pass) and the elementwise
``g * gamma * inv_std``; this module's ``batch_norm_stats`` VJP adds
``g_mean / n + g_var * 2 (x - mean) / n``, and elementwise fusion merges both into one pass:
``dx = gamma * inv_std * (g - mean(g) - xhat * mean(g * xhat))``. Every rule is the exact
derivative of its own op, so each is checked by finite differences on its own.

Precision: sums accumulate in float64 whatever the input's dtype. The kernels also shift x by
one of its own values per channel (its first, when finite) before squaring, so a large mean
(x ~ 1000 + N(0, 1)) does not cancel the variance away; the references compute the two-pass
definition in float64.
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import ShapeError
from ..builder import Value, as_values
from .common import broadcast_shapes, require_float, same_dtype, unbroadcast
from .join import slice_
from .registry import OpDef, TensorType, register
from .shape import reshape


def channel_shape(x_shape) -> tuple[int, ...]:
    """``(1, C, 1, ...)``: the shape a per-channel operand of an ``x_shape`` input has."""
    return (1, x_shape[1], *(1 for _ in x_shape[2:]))


def reduced_axes(ndim: int) -> tuple[int, ...]:
    """Every axis but the channels: (0, 2, 3, ...)."""
    return (0, *range(2, ndim))


def channel_count(x_shape) -> int:
    """How many values each channel's statistics reduce (N * H * W ...)."""
    return math.prod(d for a, d in enumerate(x_shape) if a != 1)


def channel_row(stats: Value, row: int, x_shape) -> Value:
    """Row ``row`` of a (2, C) statistics tensor as a (1, C, 1, ...) per-channel value."""
    return reshape(slice_(stats, row, row + 1, 0), channel_shape(x_shape))


def require_channels(x: TensorType, what: str = "input") -> None:
    require_float(x, what)
    if len(x.shape) < 2:
        raise ShapeError(f"{what} must be (N, C, ...) with at least 2 axes, got {x.shape}")


def require_per_channel(name: str, t: TensorType, x_shape) -> None:
    """``t`` must broadcast to (1, C, 1, ...): one value per channel, or one for all."""
    per_channel = channel_shape(x_shape)
    try:
        fits = broadcast_shapes(t.shape, per_channel) == per_channel
    except ShapeError:
        fits = False
    if not fits:
        raise ShapeError(
            f"{name} has shape {tuple(t.shape)}; a per-channel operand of an input "
            f"{tuple(x_shape)} must broadcast to {per_channel}"
        )


def _stats_flops(ins, out, attrs) -> int:
    return 4 * math.prod(ins[0].shape)  # shift, add, multiply, add per element


# --- batch_norm_stats ------------------------------------------------------------------------


def _infer_stats(types, attrs) -> TensorType:
    (x,) = types
    require_channels(x)
    return TensorType((2, x.shape[1]), x.dtype)


def _stats_reference(x):
    x64 = x.astype(np.float64)
    axes = reduced_axes(x.ndim)
    mean = x64.mean(axes, keepdims=True)
    var = ((x64 - mean) ** 2).mean(axes)
    return np.stack([mean.reshape(-1), var]).astype(x.dtype)


def _stats_vjp(ctx, g):
    """d mean / dx = 1/n; d var / dx = 2 (x - mean) / n (the mean's own dependence on x drops
    out: the deviations sum to zero)."""
    x, shape = ctx.input(0), ctx.shape(0)
    n = channel_count(shape)
    mean = channel_row(ctx.output, 0, shape)
    g_mean, g_var = channel_row(g, 0, shape), channel_row(g, 1, shape)
    return [g_mean * (1.0 / n) + g_var * (2.0 / n) * (x - mean)]


register(
    OpDef(
        name="batch_norm_stats",
        arity=(1, 1),
        infer=_infer_stats,
        reference=_stats_reference,
        vjp=_stats_vjp,
        category="reduction",
        flops=_stats_flops,
        doc="x (N, C, ...) -> (2, C): per-channel mean and biased variance over every axis but "
        "axis 1, in one pass",
    )
)


# --- batch_norm_grad_stats -------------------------------------------------------------------


def _infer_grad_stats(types, attrs) -> TensorType:
    g, x, mean = types
    require_channels(x, "x")
    same_dtype(types)
    if tuple(g.shape) != tuple(x.shape):
        raise ShapeError(
            f"g has shape {tuple(g.shape)} but x has {tuple(x.shape)}; they must match"
        )
    require_per_channel("mean", mean, x.shape)
    return TensorType((2, x.shape[1]), x.dtype)


def _grad_stats_reference(g, x, mean):
    g64 = g.astype(np.float64)
    axes = reduced_axes(x.ndim)
    centered = x.astype(np.float64) - mean.astype(np.float64)
    return np.stack([g64.sum(axes), (g64 * centered).sum(axes)]).astype(x.dtype)


def _grad_stats_vjp(ctx, h):
    g, x, mean = (ctx.input(i) for i in range(3))
    shape = ctx.shape(1)
    h_sum, h_dot = channel_row(h, 0, shape), channel_row(h, 1, shape)
    grads: list[Value | None] = [None, None, None]
    if ctx.needs(0):
        grads[0] = h_sum + h_dot * (x - mean)
    if ctx.needs(1):
        grads[1] = h_dot * g
    if ctx.needs(2):
        g_sum = channel_row(ctx.output, 0, shape)
        grads[2] = unbroadcast(-(h_dot * g_sum), ctx.shape(2))
    return grads


register(
    OpDef(
        name="batch_norm_grad_stats",
        arity=(3, 3),
        infer=_infer_grad_stats,
        reference=_grad_stats_reference,
        vjp=_grad_stats_vjp,
        category="reduction",
        flops=_stats_flops,
        doc="g, x (N, C, ...), mean broadcasting to (1, C, 1, ...) -> (2, C): per-channel "
        "sum(g) and sum(g * (x - mean)) over every axis but axis 1, in one pass",
    )
)


# --- the op API ------------------------------------------------------------------------------


def batch_norm_stats(x) -> Value:
    """(2, C): per-channel mean (row 0) and biased variance (row 1) of x (N, C, ...)."""
    (x,) = as_values(x)
    return x.builder.emit("batch_norm_stats", [x])


def batch_norm_grad_stats(g, x, mean) -> Value:
    """(2, C): per-channel ``sum(g)`` (row 0) and ``sum(g * (x - mean))`` (row 1)."""
    values = as_values(g, x, mean)
    return values[0].builder.emit("batch_norm_grad_stats", values)


def batch_moments(x) -> tuple[Value, Value]:
    """The batch's per-channel mean and biased variance of x (N, C, ...), each (1, C, 1, ...),
    from one ``batch_norm_stats`` pass."""
    stats = batch_norm_stats(x)
    return channel_row(stats, 0, x.shape), channel_row(stats, 1, x.shape)
