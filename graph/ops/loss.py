"""Losses that are single ops (so they fuse and have exact, stable backward rules)."""

from __future__ import annotations

import math

import numpy as np

from ...errors import DTypeError, ShapeError
from ..builder import Value, as_value, as_values
from .common import require_float, same_dtype
from .registry import OpDef, TensorType, register
from .softmax import _log_softmax_ref, _softmax_ref


def _check_targets(logits, targets) -> None:
    if len(logits.shape) != 2:
        raise ShapeError(f"logits must be 2-d (N, classes), got shape {logits.shape}")
    if targets.dtype != "int64":
        raise DTypeError(f"targets must be int64 class indices, not {targets.dtype}")
    if targets.shape != logits.shape[:1]:
        raise ShapeError(f"targets {targets.shape} must have shape ({logits.shape[0]},)")


def _infer_ce(types, attrs) -> TensorType:
    logits, targets = types
    require_float(logits)
    _check_targets(logits, targets)
    return TensorType((), logits.dtype)


def check_class_indices(targets: np.ndarray, classes: int) -> None:
    """Refuse class indices outside [0, classes) before they index out of bounds."""
    if targets.size and (targets.min() < 0 or targets.max() >= classes):
        bad = targets[(targets < 0) | (targets >= classes)][0]
        raise ValueError(f"cross_entropy: target {bad} is not a class index in [0, {classes})")


def _ce_ref(logits, targets):
    check_class_indices(targets, logits.shape[1])
    picked = np.take_along_axis(_log_softmax_ref(logits, 1), targets[:, None], axis=1)
    return np.asarray(-picked.mean(), dtype=logits.dtype)


def _ce_grad_ref(logits, targets, g):
    check_class_indices(targets, logits.shape[1])
    grad = _softmax_ref(logits, 1)
    grad[np.arange(len(targets)), targets] -= 1
    return (grad * (g / len(targets))).astype(logits.dtype)


def _infer_ce_grad(types, attrs) -> TensorType:
    logits, targets, g = types
    _check_targets(logits, targets)
    if g.shape != ():
        raise ShapeError(f"the loss gradient must be a scalar, got shape {g.shape}")
    return TensorType(logits.shape, logits.dtype)


register(
    OpDef(
        name="cross_entropy",
        arity=(2, 2),
        infer=_infer_ce,
        reference=_ce_ref,
        vjp=lambda ctx, g: [
            g.builder.emit("cross_entropy_grad", [ctx.input(0), ctx.input(1), g]),
            None,
        ],
        category="reduction",
        flops=lambda ins, out, attrs: 5 * math.prod(ins[0].shape),
        doc="mean over the batch of -log_softmax(logits)[n, target[n]]",
    )
)
register(
    OpDef(
        name="cross_entropy_grad",
        arity=(3, 3),
        infer=_infer_ce_grad,
        reference=_ce_grad_ref,
        category="reduction",
        flops=lambda ins, out, attrs: 5 * math.prod(ins[0].shape),
        doc="inputs: logits, targets, dL/dloss; output (softmax - onehot) * g / N",
    )
)


def _infer_mse(types, attrs) -> TensorType:
    dtype = same_dtype(types)
    require_float(types[0])
    if types[0].shape != types[1].shape:
        raise ShapeError(f"prediction {types[0].shape} and target {types[1].shape} differ")
    return TensorType((), dtype)


def _mse_vjp(ctx, g):
    scaled = (ctx.input(0) - ctx.input(1)) * (g * (2.0 / math.prod(ctx.shape(0))))
    return [scaled if ctx.needs(0) else None, -scaled if ctx.needs(1) else None]


register(
    OpDef(
        name="mse_loss",
        arity=(2, 2),
        infer=_infer_mse,
        reference=lambda a, b: np.asarray(np.mean((a - b) ** 2), dtype=a.dtype),
        vjp=_mse_vjp,
        category="reduction",
        flops=lambda ins, out, attrs: 3 * math.prod(ins[0].shape),
        doc="mean of squared differences",
    )
)


def cross_entropy(logits, targets) -> Value:
    """Mean cross-entropy of (N, C) logits against int64 class indices (N,)."""
    logits = as_value(logits)
    return logits.builder.emit("cross_entropy", [logits, as_value(targets)])


def mse_loss(prediction, target) -> Value:
    prediction, target = as_values(prediction, target)
    return prediction.builder.emit("mse_loss", [prediction, target])
