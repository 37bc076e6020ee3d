"""Losses: the fused single ops (cross_entropy, mse_loss: exact, stable backward rules), the
elementwise BCE terms, and every loss function of the op API with reductions none/mean/sum,
composed from ops (elementwise chains fuse into one kernel before the reduction)."""

from __future__ import annotations

import math

import numpy as np

from ...errors import DTypeError, OpError, ShapeError
from ..builder import Value, as_value, as_values
from .class_targets import _is_int, _one_hot, check_class_indices
from .common import require_float, same_dtype, unbroadcast
from .elementwise import _elementwise, abs, exp, log, maximum, relu, sigmoid, xlogy
from .registry import OpDef, TensorType, register
from .softmax import _log_softmax_ref, _softmax_ref, log_softmax


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


# --- elementwise loss terms (fused with their neighbours; reductions are composed) -----------


def _bce_ref(p, y):
    with np.errstate(divide="ignore"):
        log_p, log_q = np.log(p), np.log(1 - p)
    return -(y * np.maximum(log_p, -100) + (1 - y) * np.maximum(log_q, -100))


def _bce_vjp(ctx, g):
    p, y = ctx.input(0), ctx.input(1)
    # PyTorch's rule: (p - y) / max(p (1 - p), 1e-12) stays finite at p = 0 or 1.
    return [
        unbroadcast(g * (p - y) / maximum(p * (1.0 - p), 1e-12), ctx.shape(0))
        if ctx.needs(0)
        else None,
        unbroadcast(g * (maximum(log(1.0 - p), -100.0) - maximum(log(p), -100.0)), ctx.shape(1))
        if ctx.needs(1)
        else None,
    ]


_elementwise(
    "binary_cross_entropy",
    2,
    # Each log clamped at -100 by a compare that lets NaN through, not max(): numba-cuda
    # lowers max() to fmax, which drops a NaN.
    "(-({1} * (-100.0 if math.log({0}) < -100.0 else math.log({0}))"
    " + (1.0 - {1}) * (-100.0 if math.log(1.0 - {0}) < -100.0 else math.log(1.0 - {0}))))",
    _bce_ref,
    _bce_vjp,
    doc="-(y log p + (1 - y) log(1 - p)) per element, logs clamped at -100 (as torch)",
)


def _bce_logits_vjp(ctx, g):
    x, y = ctx.input(0), ctx.input(1)
    return [
        unbroadcast(g * (sigmoid(x) - y), ctx.shape(0)) if ctx.needs(0) else None,
        unbroadcast(-(g * x), ctx.shape(1)) if ctx.needs(1) else None,
    ]


def _bce_logits_ref(x, y):
    return (1 - y) * x - np.minimum(x, 0) + np.log1p(np.exp(-np.abs(x)))


_elementwise(
    "binary_cross_entropy_with_logits",
    2,
    # torch's form (1 - y) x - log_sigmoid(x): the same value, and the same NaN at infinite x.
    "((1.0 - {1}) * {0} - (0.0 if {0} >= 0.0 else {0}) + math.log1p(math.exp(-abs({0}))))",
    _bce_logits_ref,
    _bce_logits_vjp,
    doc="BCE of sigmoid(x) against y per element, stably (as torch): "
    "(1 - y) x - min(x, 0) + log1p(e^-|x|)",
)

# --- the loss functions (the op API; nn losses and F call these) ----------------------------

REDUCTIONS = ("none", "mean", "sum")


def _reduce(loss: Value, reduction: str, what: str, batch: int | None = None) -> Value:
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "batchmean" and batch is not None:
        return loss.sum() * (1.0 / batch)
    allowed = (*REDUCTIONS, "batchmean") if batch is not None else REDUCTIONS
    raise OpError(f"{what}: reduction must be one of {allowed}, not {reduction!r}")


def _where(what: str, value: Value) -> str:
    """``what`` with the layer being traced, as the builder names ops in its errors."""
    scope = value.builder.current_scope
    return f"{what} in layer '{scope}'" if scope else what


def _same_shape(what: str, *values: Value) -> None:
    shapes = {v.shape for v in values}
    if len(shapes) != 1:
        raise ShapeError(
            f"{_where(what, values[0])}: input and target shapes differ: "
            f"{[v.shape for v in values]}"
        )


def _class_targets(what: str, scores: Value, targets: Value) -> None:
    what = _where(what, scores)
    if scores.ndim < 2:
        raise ShapeError(f"{what}: input must be (N, C, ...), got shape {scores.shape}")
    expected = scores.shape[:1] + scores.shape[2:]
    if targets.dtype != "int64":
        raise DTypeError(f"{what}: targets must be int64 class indices, not {targets.dtype}")
    if targets.shape != expected:
        raise ShapeError(f"{what}: targets {targets.shape} must have shape {expected}")


def _class_weight(what: str, weight, logp: Value) -> Value | None:
    """``weight`` (one number per class) as a constant shaped to broadcast over (N, C, *d)."""
    if weight is None:
        return None
    c = logp.shape[1]
    w = np.asarray(weight.data if hasattr(weight, "data") else weight, dtype=logp.dtype)
    if w.shape != (c,):
        raise ShapeError(f"{what}: weight must have shape ({c},), one per class, got {w.shape}")
    if not np.all(np.isfinite(w)):
        raise OpError(f"{what}: weight must be finite, got {w}")
    return logp.builder.const(w.reshape((1, c) + (1,) * (logp.ndim - 2)), logp.dtype)


def _class_loss(what, logp, t, reduction, weight, ignore_index, smoothing=0.0) -> Value:
    """-sum_c q_c logp_c per target, q = ((1 - e) one_hot + e / C) * weight, 0 for ignored
    targets; "mean" divides by the summed weight of the targets not ignored (as torch)."""
    what = _where(what, logp)
    if ignore_index is not None and not _is_int(ignore_index):
        raise OpError(f"{what}: ignore_index must be an integer or None, got {ignore_index!r}")
    if reduction not in REDUCTIONS:
        raise OpError(f"{what}: reduction must be one of {REDUCTIONS}, not {reduction!r}")
    c = logp.shape[1]
    hot = _one_hot(t, c, logp.dtype, what, ignore_index=ignore_index)
    w = _class_weight(what, weight, logp)
    q = hot * (1.0 - smoothing) if smoothing else hot
    if smoothing:
        counted = hot.sum(1, keepdims=True) if ignore_index is not None else 1.0
        q = q + counted * (smoothing / c)
    if w is not None:
        q, hot = q * w, hot * w
    loss = -(q * logp).sum(1)
    if reduction != "mean" or (w is None and ignore_index is None):
        return _reduce(loss, reduction, what)
    return loss.sum() / hot.sum()


def nll_loss(
    log_probs,
    targets,
    reduction: str = "mean",
    *,
    weight=None,
    ignore_index: int | None = None,
) -> Value:
    """Negative log-likelihood of (N, C, *d) log-probabilities at int64 targets (N, *d), as
    torch's: ``weight`` scales each class's terms, targets equal to ``ignore_index`` count
    for nothing (torch ignores -100 by default; numbagrad only when asked, and refuses any
    other index outside the classes)."""
    logp, t = as_value(log_probs), as_value(targets)
    _class_targets("nll_loss", logp, t)
    return _class_loss("nll_loss", logp, t, reduction, weight, ignore_index)


def cross_entropy(
    logits,
    targets,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    weight=None,
    ignore_index: int | None = None,
) -> Value:
    """Cross-entropy of (N, C, *d) logits against int64 class indices (N, *d). With label
    smoothing the target distribution is (1 - e) one_hot + e / C; ``weight`` and
    ``ignore_index`` as in ``nll_loss`` (all as torch). The default (2-d, mean, no smoothing,
    weight or ignored index) is the fused ``cross_entropy`` op."""
    logits, t = as_value(logits), as_value(targets)
    _class_targets("cross_entropy", logits, t)
    if not 0.0 <= label_smoothing <= 1.0:
        raise OpError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    plain = not label_smoothing and weight is None and ignore_index is None
    if reduction == "mean" and plain and logits.ndim == 2:
        return logits.builder.emit("cross_entropy", [logits, t])
    logp = log_softmax(logits, 1)
    return _class_loss("cross_entropy", logp, t, reduction, weight, ignore_index, label_smoothing)


def mse_loss(prediction, target, reduction: str = "mean") -> Value:
    prediction, target = as_values(prediction, target)
    if reduction == "mean":
        return prediction.builder.emit("mse_loss", [prediction, target])
    _same_shape("mse_loss", prediction, target)
    d = prediction - target
    return _reduce(d * d, reduction, "mse_loss")


def l1_loss(prediction, target, reduction: str = "mean") -> Value:
    """Mean absolute error (MAE)."""
    prediction, target = as_values(prediction, target)
    _same_shape("l1_loss", prediction, target)
    return _reduce(abs(prediction - target), reduction, "l1_loss")


def binary_cross_entropy(probabilities, target, reduction: str = "mean") -> Value:
    """BCE of probabilities in [0, 1] against targets in [0, 1] (logs clamped at -100)."""
    p, y = as_values(probabilities, target)
    _same_shape("binary_cross_entropy", p, y)
    loss = p.builder.emit("binary_cross_entropy", [p, y])
    return _reduce(loss, reduction, "binary_cross_entropy")


def binary_cross_entropy_with_logits(logits, target, reduction: str = "mean") -> Value:
    """BCE of sigmoid(logits) against targets, computed stably from the logits."""
    x, y = as_values(logits, target)
    _same_shape("binary_cross_entropy_with_logits", x, y)
    loss = x.builder.emit("binary_cross_entropy_with_logits", [x, y])
    return _reduce(loss, reduction, "binary_cross_entropy_with_logits")


def margin_ranking_loss(x1, x2, target, margin: float = 0.0, reduction: str = "mean"):
    """max(0, -y (x1 - x2) + margin) for targets y in {1, -1}."""
    x1, x2, y = as_values(x1, x2, target)
    _same_shape("margin_ranking_loss", x1, x2, y)
    return _reduce(relu(-(y * (x1 - x2)) + margin), reduction, "margin_ranking_loss")


def kl_div(input, target, reduction: str = "mean", log_target: bool = False) -> Value:  # noqa: A002
    """KL(target || exp(input)) pointwise, for log-probabilities ``input`` and probabilities
    ``target`` (log-probabilities with ``log_target``). ``batchmean`` divides the sum by N
    (the true KL divergence per sample); ``mean`` averages over all elements (as torch)."""
    x, t = as_values(input, target)
    _same_shape("kl_div", x, t)
    pointwise = exp(t) * (t - x) if log_target else xlogy(t, t) - t * x
    batch = x.shape[0] if x.ndim else 1
    return _reduce(pointwise, reduction, "kl_div", batch=batch)
