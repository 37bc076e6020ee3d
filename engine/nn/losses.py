"""Loss modules: called as ``loss(prediction, target)`` inside a trace."""

from __future__ import annotations

from .. import functional as F
from .module import Module


class CrossEntropyLoss(Module):
    """Mean cross-entropy of (N, C) logits against int64 class indices (N,)."""

    def forward(self, logits, target):
        return F.cross_entropy(logits, target)


class MSELoss(Module):
    """Mean squared error."""

    def forward(self, prediction, target):
        return F.mse_loss(prediction, target)
