"""Learning-rate schedules, applied at run time: the lr is a scalar input of the compiled
training step, so changing it never recompiles.

A schedule's first argument is what it schedules: a compiled ``TrainingStep`` (anything with a
settable ``lr``; its current lr is the base), or just the base lr as a number, for ``lr_at``.
``step()`` advances the counter (epochs or steps, as you call it) and sets the target's lr,
like ``torch.optim.lr_scheduler``::

    step = ng.compile_training(model, loss, optim.SGD(0.1), x_spec, y_spec)
    sched = optim.lr_scheduler.CosineAnnealing(step, T_max=10)
    for epoch in range(10):
        for x, y in batches:
            step(x, y)
        sched.step()
"""

from __future__ import annotations

import math
from typing import Any


class LRSchedule:
    """Base class: ``lr_at(n)`` is the lr after ``n`` calls of ``step()``; ``lr_at(0)`` is the
    base lr. Constructing a schedule on a target sets the target's lr to ``lr_at(0)``."""

    def __init__(self, target: Any) -> None:
        if isinstance(target, (int, float)):
            self.target, self.base_lr = None, float(target)
        else:
            if not hasattr(target, "lr"):
                raise TypeError(f"a schedule needs a base lr or an object with .lr, not {target!r}")
            self.target, self.base_lr = target, float(target.lr)
        if self.base_lr < 0:
            raise ValueError(f"{type(self).__name__}: the base lr must be >= 0, got {self.base_lr}")
        self.last_epoch = 0
        self._apply()

    def lr_at(self, n: int) -> float:
        raise NotImplementedError

    def __call__(self, n: int) -> float:
        return self.lr_at(n)

    def get_last_lr(self) -> float:
        """The lr the schedule set last (``lr_at(last_epoch)``)."""
        return self.lr_at(self.last_epoch)

    def step(self) -> float:
        """Advance one epoch (or step) and set the target's lr; returns the new lr."""
        self.last_epoch += 1
        return self._apply()

    def _apply(self) -> float:
        lr = self.lr_at(self.last_epoch)
        if self.target is not None:
            self.target.lr = lr
        return lr

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_lr={self.base_lr}, last_epoch={self.last_epoch})"


class ExponentialDecay(LRSchedule):
    """``lr(n) = lr0 * exp(-decay * n)``; torch's ``ExponentialLR`` with ``gamma = exp(-decay)``."""

    def __init__(self, target: Any, decay: float) -> None:
        if decay < 0:
            raise ValueError(f"ExponentialDecay: decay must be >= 0, got {decay}")
        self.decay = decay
        super().__init__(target)

    def lr_at(self, n: int) -> float:
        return self.base_lr * math.exp(-self.decay * n)


class ExponentialLR(LRSchedule):
    """``lr(n) = lr0 * gamma**n``, as ``torch.optim.lr_scheduler.ExponentialLR``."""

    def __init__(self, target: Any, gamma: float) -> None:
        if not gamma > 0:
            raise ValueError(f"ExponentialLR: gamma must be > 0, got {gamma}")
        self.gamma = gamma
        super().__init__(target)

    def lr_at(self, n: int) -> float:
        return self.base_lr * self.gamma**n


class StepDecay(LRSchedule):
    """``lr(n) = lr0 * gamma ** (n // step_size)``, as ``torch.optim.lr_scheduler.StepLR``."""

    def __init__(self, target: Any, step_size: int, gamma: float = 0.1) -> None:
        if not (isinstance(step_size, int) and step_size > 0):
            raise ValueError(f"StepDecay: step_size must be a positive int, got {step_size!r}")
        self.step_size, self.gamma = step_size, gamma
        super().__init__(target)

    def lr_at(self, n: int) -> float:
        return self.base_lr * self.gamma ** (n // self.step_size)


class CosineAnnealing(LRSchedule):
    """``lr(n) = eta_min + (lr0 - eta_min) * (1 + cos(pi * n / T_max)) / 2``: the closed form
    of ``torch.optim.lr_scheduler.CosineAnnealingLR`` (no restarts; past ``T_max`` the cosine
    rises again, as torch's does)."""

    def __init__(self, target: Any, T_max: int, eta_min: float = 0.0) -> None:  # noqa: N803
        if not T_max > 0:
            raise ValueError(f"CosineAnnealing: T_max must be > 0, got {T_max}")
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(target)

    def lr_at(self, n: int) -> float:
        cos = (1 + math.cos(math.pi * n / self.T_max)) / 2
        return self.eta_min + (self.base_lr - self.eta_min) * cos


class LinearWarmup(LRSchedule):
    """``lr(n) = lr0 * (n + 1) / warmup`` for ``n < warmup``, then ``lr0``: a warm-up to a
    constant lr, stepped once per batch."""

    def __init__(self, target: Any, warmup: int) -> None:
        if not (isinstance(warmup, int) and warmup >= 0):
            raise ValueError(f"LinearWarmup: warmup must be an int >= 0, got {warmup!r}")
        self.warmup = warmup
        super().__init__(target)

    def lr_at(self, n: int) -> float:
        return self.base_lr * min(1.0, (n + 1) / self.warmup) if self.warmup else self.base_lr


class WarmupCosine(LRSchedule):
    """A linear warm-up then cosine annealing, meant to be stepped once per batch:
    ``lr(n) = lr0 * (n + 1) / warmup`` for ``n < warmup``, then the cosine from ``lr0`` at
    ``n = warmup`` down to ``eta_min`` at ``n = total`` (and ``eta_min`` after it). With
    ``warmup=0`` it is ``CosineAnnealing`` over ``total`` steps, held at its end."""

    def __init__(self, target: Any, total: int, warmup: int = 0, eta_min: float = 0.0) -> None:
        if not (isinstance(total, int) and isinstance(warmup, int) and 0 <= warmup < total):
            raise ValueError(
                f"WarmupCosine: need integers 0 <= warmup < total, got {warmup} and {total}"
            )
        self.total, self.warmup, self.eta_min = total, warmup, eta_min
        super().__init__(target)

    def lr_at(self, n: int) -> float:
        if n < self.warmup:
            return self.base_lr * (n + 1) / self.warmup
        progress = min(1.0, (n - self.warmup) / (self.total - self.warmup))
        cos = (1 + math.cos(math.pi * progress)) / 2
        return self.eta_min + (self.base_lr - self.eta_min) * cos


StepLR = StepDecay
CosineAnnealingLR = CosineAnnealing

__all__ = [
    "CosineAnnealing",
    "CosineAnnealingLR",
    "ExponentialDecay",
    "ExponentialLR",
    "LRSchedule",
    "LinearWarmup",
    "StepDecay",
    "StepLR",
    "WarmupCosine",
]
