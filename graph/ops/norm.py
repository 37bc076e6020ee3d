"""Batch normalization as one op: ``batch_norm(x, mean, inv_std, gamma, beta)``.

``y = (x - mean) * inv_std * gamma + beta`` per channel (axis 1). The statistics are operands,
not the op's business: in training the BatchNorm layer feeds the batch mean and
``1/sqrt(var + eps)`` (computed with ``mean``/``sqrt`` ops, so autodiff differentiates through
them and the layer can also feed them to the running-statistics updates); in eval it feeds the
running buffers. Keeping the normalization one named op is what lets the ``fold_conv_bn``
pass find BatchNorm in an inference graph and fold it into the preceding conv.

Each per-channel operand has a shape that broadcasts to ``(1, C, 1, ...)`` (the layer passes
``(1, C, 1, 1)``; a scalar stands for "the same for every channel"). The op is elementwise with
broadcasting, so backends generate its kernel from the scalar template and fusion can merge
it with the activation that follows.
"""

from __future__ import annotations

import math

from ...errors import ShapeError
from ..builder import Value, as_values
from .common import broadcast_shapes, require_float, same_dtype, unbroadcast
from .registry import OpDef, TensorType, register

OPERANDS = ("x", "mean", "inv_std", "gamma", "beta")


def channel_shape(x_shape) -> tuple[int, ...]:
    """``(1, C, 1, ...)``: the shape a per-channel operand of an ``x_shape`` input has."""
    return (1, x_shape[1], *(1 for _ in x_shape[2:]))


def _infer(types, attrs) -> TensorType:
    x = types[0]
    require_float(x)
    dtype = same_dtype(types)
    if len(x.shape) < 2:
        raise ShapeError(f"input must be (N, C, ...) with at least 2 axes, got {x.shape}")
    per_channel = channel_shape(x.shape)
    for name, t in zip(OPERANDS[1:], types[1:]):
        try:
            fits = broadcast_shapes(t.shape, per_channel) == per_channel
        except ShapeError:
            fits = False
        if not fits:
            raise ShapeError(
                f"{name} has shape {tuple(t.shape)}; a per-channel operand of an input "
                f"{tuple(x.shape)} must broadcast to {per_channel}"
            )
    return TensorType(tuple(x.shape), dtype)


def _reference(x, mean, inv_std, gamma, beta):
    return ((x - mean) * inv_std * gamma + beta).astype(x.dtype, copy=False)


def _vjp(ctx, g):
    x, mean, inv, gamma = (ctx.input(i) for i in range(4))
    need = [ctx.needs(i) for i in range(5)]
    g_gamma = g * gamma if need[0] or need[1] or need[2] else None
    gx = g_gamma * inv if need[0] or need[1] else None
    centered = x - mean if need[2] or need[3] else None
    return [
        gx if need[0] else None,
        unbroadcast(-gx, ctx.shape(1)) if need[1] else None,
        unbroadcast(g_gamma * centered, ctx.shape(2)) if need[2] else None,
        unbroadcast(g * (centered * inv), ctx.shape(3)) if need[3] else None,
        unbroadcast(g, ctx.shape(4)) if need[4] else None,
    ]


register(
    OpDef(
        name="batch_norm",
        arity=(5, 5),
        infer=_infer,
        reference=_reference,
        vjp=_vjp,
        category="elementwise",
        scalar="((({0} - {1}) * {2}) * {3} + {4})",
        flops=lambda ins, out, attrs: 4 * math.prod(out.shape),
        doc="inputs: x (N, C, ...), then mean, inv_std, gamma, beta, each broadcasting to "
        "(1, C, 1, ...); y = (x - mean) * inv_std * gamma + beta",
    )
)


def batch_norm(x, mean, inv_std, gamma, beta) -> Value:
    """``(x - mean) * inv_std * gamma + beta`` per channel (axis 1) of x (N, C, ...); the
    other operands broadcast to (1, C, 1, ...)."""
    values = as_values(x, mean, inv_std, gamma, beta)
    return values[0].builder.emit("batch_norm", values)
