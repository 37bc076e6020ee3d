"""Batch normalization as one op: ``batch_norm(x, mean, inv_std, gamma, beta)``.

``y = (x - mean) * inv_std * gamma + beta`` per channel (axis 1). The statistics are operands,
not the op's business: in training the BatchNorm layer feeds the batch mean and
``1/sqrt(var + eps)``, read from one ``batch_norm_stats`` pass (graph/ops/norm_stats.py), so
autodiff differentiates through them and the layer can also feed them to the
running-statistics updates; in eval it feeds the running buffers. Keeping the normalization
one named op is what lets the ``fold_conv_bn`` pass find BatchNorm in an inference graph and
fold it into the preceding conv.

Each per-channel operand has a shape that broadcasts to ``(1, C, 1, ...)`` (the layer passes
``(1, C, 1, 1)``; a scalar stands for "the same for every channel"). The op is elementwise with
broadcasting, so backends generate its kernel from the scalar template and fusion can merge
it with the activation that follows. Its VJP reads (g, x) once for every per-channel gradient
(``batch_norm_grad_stats``) and once more, elementwise, for the input's.
"""

from __future__ import annotations

import math

from ..builder import Value, as_values
from .common import same_dtype, unbroadcast
from .norm_stats import batch_norm_grad_stats, channel_row, require_channels, require_per_channel
from .registry import OpDef, TensorType, register

OPERANDS = ("x", "mean", "inv_std", "gamma", "beta")


def _infer(types, attrs) -> TensorType:
    x = types[0]
    require_channels(x)
    dtype = same_dtype(types)
    for name, t in zip(OPERANDS[1:], types[1:]):
        require_per_channel(name, t, x.shape)
    return TensorType(tuple(x.shape), dtype)


def _reference(x, mean, inv_std, gamma, beta):
    return ((x - mean) * inv_std * gamma + beta).astype(x.dtype, copy=False)


def _vjp(ctx, g):
    """The per-channel gradients (mean, inv_std, gamma; beta with them) all come from the two
    sums of one ``batch_norm_grad_stats`` pass over (g, x): with S0 = sum(g) and
    S1 = sum(g * (x - mean)), d mean = -gamma * inv_std * S0, d inv_std = gamma * S1,
    d gamma = inv_std * S1, d beta = S0."""
    x, mean, inv, gamma = (ctx.input(i) for i in range(4))
    need = [ctx.needs(i) for i in range(5)]
    grads: list[Value | None] = [None] * 5
    if need[0]:
        grads[0] = g * (gamma * inv)
    if need[1] or need[2] or need[3]:
        sums = batch_norm_grad_stats(g, x, mean)
        s0, s1 = (channel_row(sums, k, ctx.shape(0)) for k in (0, 1))
        per_channel = {
            1: lambda: -(gamma * inv) * s0,
            2: lambda: gamma * s1,
            3: lambda: inv * s1,
            4: lambda: s0,
        }
        for i, grad in per_channel.items():
            if need[i]:
                grads[i] = unbroadcast(grad(), ctx.shape(i))
    elif need[4]:
        grads[4] = unbroadcast(g, ctx.shape(4))
    return grads


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
