"""Loss modules: called as ``loss(prediction, target)`` inside a trace, with PyTorch's names,
arguments and defaults (``reduction`` is ``"mean"``, ``"sum"`` or ``"none"``)."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .module import Module


class _Loss(Module):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = reduction

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class _ClassLoss(_Loss):
    """A loss of class-index targets: per-class ``weight`` and an ``ignore_index`` as torch's
    (which ignores -100 by default; numbagrad ignores nothing unless asked)."""

    def __init__(
        self, reduction: str = "mean", *, weight=None, ignore_index: int | None = None
    ) -> None:
        super().__init__(reduction)
        self.weight = None if weight is None else np.array(weight, dtype=np.float64)
        self.ignore_index = ignore_index

    def extra_repr(self) -> str:
        extra = "" if self.ignore_index is None else f", ignore_index={self.ignore_index}"
        weighted = "" if self.weight is None else ", weight=..."
        return f"{super().extra_repr()}{weighted}{extra}"


class CrossEntropyLoss(_ClassLoss):
    """Cross-entropy of (N, C, *d) logits against int64 class indices (N, *d), with optional
    label smoothing, class weights and ignored index. The default (2-d logits, mean, none of
    the options) is one fused op."""

    def __init__(
        self,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        *,
        weight=None,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(reduction, weight=weight, ignore_index=ignore_index)
        self.label_smoothing = label_smoothing

    def forward(self, logits, target):
        return F.cross_entropy(
            logits,
            target,
            self.reduction,
            self.label_smoothing,
            weight=self.weight,
            ignore_index=self.ignore_index,
        )


class NLLLoss(_ClassLoss):
    """Negative log-likelihood of (N, C, *d) log-probabilities at int64 targets (N, *d)."""

    def forward(self, log_probs, target):
        return F.nll_loss(
            log_probs, target, self.reduction, weight=self.weight, ignore_index=self.ignore_index
        )


class MSELoss(_Loss):
    """Squared error."""

    def forward(self, prediction, target):
        return F.mse_loss(prediction, target, self.reduction)


class L1Loss(_Loss):
    """Absolute error (MAE)."""

    def forward(self, prediction, target):
        return F.l1_loss(prediction, target, self.reduction)


MAELoss = L1Loss


class BCELoss(_Loss):
    """Binary cross-entropy of probabilities in [0, 1] (logs clamped at -100, as torch)."""

    def forward(self, probabilities, target):
        return F.binary_cross_entropy(probabilities, target, self.reduction)


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy of sigmoid(logits), computed stably from the logits."""

    def forward(self, logits, target):
        return F.binary_cross_entropy_with_logits(logits, target, self.reduction)


class MarginRankingLoss(_Loss):
    """``max(0, -y (x1 - x2) + margin)`` for y in {1, -1}; called as ``loss(x1, x2, y)``."""

    def __init__(self, margin: float = 0.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.margin = margin

    def forward(self, x1, x2, target):
        return F.margin_ranking_loss(x1, x2, target, self.margin, self.reduction)


class KLDivLoss(_Loss):
    """KL divergence of log-probabilities ``input`` from probabilities ``target``
    (log-probabilities with ``log_target``); ``reduction="batchmean"`` is the true KL per
    sample, ``"mean"`` (the default, as torch) averages over every element."""

    def __init__(self, reduction: str = "mean", log_target: bool = False) -> None:
        super().__init__(reduction)
        self.log_target = log_target

    def forward(self, input, target):  # noqa: A002 - torch's name
        return F.kl_div(input, target, self.reduction, self.log_target)


__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "KLDivLoss",
    "L1Loss",
    "MAELoss",
    "MSELoss",
    "MarginRankingLoss",
    "NLLLoss",
]
