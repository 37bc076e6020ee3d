"""Optimizers as graph builders: each appends its update ops to the backward graph.

Parameters and optimizer state (momentum buffers, moment estimates, ...) are leaves updated in
place after the step; the learning rate is a scalar input of the graph, so schedules never
recompile. Quantities that depend on the step number (Adam's bias corrections, Adagrad's
``lr_decay``) are scalar inputs too, computed on the host in float64 for each step (see
``Optimizer.scalar_inputs``), so the graph is the same at every step.

Every optimizer takes, besides its hyperparameters:

- ``groups``: per-parameter overrides, keyed by ``state_dict`` names, e.g.
  ``optim.Adam(1e-3, groups=[{"params": ["*.bias"], "weight_decay": 0.0}])``. ``params`` holds
  names or ``fnmatch`` patterns; any other key overrides that hyperparameter for the matched
  parameters. A parameter may match one group at most; the others use the defaults.
- ``clip_grad_norm``: rescale all gradients together so their global L2 norm is at most this
  (``torch.nn.utils.clip_grad_norm_``), before any penalty is added.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import NumbagradError
from ..graph.ops import sqrt
from .optimizer import HOST_SCALARS, LR_NAME, Optimizer, maximum


class SGD(Optimizer):
    """Stochastic gradient descent with momentum and Nesterov, as ``torch.optim.SGD``
    (dampening 0): ``v = m*v + g; p -= lr * (g + m*v if nesterov else v)``, where g carries
    the weight-decay (L2) and L1 terms."""

    def __init__(
        self,
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        l1: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, l1=l1, **kwargs
        )

    def _check(self, opts, where):
        super()._check(opts, where)
        if opts["nesterov"] and opts["momentum"] == 0:
            raise NumbagradError(f"{where}: nesterov needs a positive momentum")

    def update(self, builder, name, p, g, lr, o):
        g = self.regularized(p, g, o)
        updates = []
        if o["momentum"]:
            buf, new_buf = self.momentum_update(builder, p, name, g, o["momentum"])
            updates.append((buf, new_buf))
            g = g + new_buf * o["momentum"] if o["nesterov"] else new_buf
        updates.append((p, p - g * lr))
        return updates


class Adagrad(Optimizer):
    """``torch.optim.Adagrad``: ``s += g*g; p -= clr * g / (sqrt(s) + eps)`` with
    ``clr = lr / (1 + (t-1) * lr_decay)`` (a host-fed factor). The state holds
    ``s - initial_accumulator_value``, so it can start at zero like every state leaf."""

    def __init__(
        self,
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        l1: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            lr,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
            l1=l1,
            **kwargs,
        )

    def _check(self, opts, where):
        super()._check(opts, where)
        if not opts["initial_accumulator_value"] >= 0:
            raise NumbagradError(f"{where}: initial_accumulator_value must be >= 0")

    def update(self, builder, name, p, g, lr, o):
        g = self.regularized(p, g, o)
        if o["lr_decay"]:
            lr = lr * self.host_scalar(builder, "adagrad.lr_factor", o["lr_decay"], p.dtype)
        acc = self.state(builder, p, name, "sum")
        new_acc = acc + g * g
        total = (
            new_acc + o["initial_accumulator_value"] if o["initial_accumulator_value"] else new_acc
        )
        return [(acc, new_acc), (p, p - lr * g / (sqrt(total) + o["eps"]))]


def _adagrad_lr_factor(lr_decay: float, step: int) -> float:
    return 1.0 / (1.0 + (step - 1) * lr_decay)


HOST_SCALARS["adagrad.lr_factor"] = _adagrad_lr_factor


class RMSprop(Optimizer):
    """``torch.optim.RMSprop``: ``v = alpha*v + (1-alpha)*g*g``; centered subtracts the square
    of ``ga = alpha*ga + (1-alpha)*g``; ``d = g / (sqrt(v [- ga*ga]) + eps)``; with momentum
    ``b = momentum*b + d; p -= lr*b``, else ``p -= lr*d``."""

    def __init__(
        self,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        l1: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
            l1=l1,
            **kwargs,
        )

    def _check(self, opts, where):
        super()._check(opts, where)
        if not 0 <= opts["alpha"] <= 1:
            raise NumbagradError(f"{where}: alpha must be in [0, 1], got {opts['alpha']}")

    def update(self, builder, name, p, g, lr, o):
        g = self.regularized(p, g, o)
        alpha = o["alpha"]
        sq, new_sq = self.running_average(builder, p, name, "square_avg", g * g, alpha)
        updates = [(sq, new_sq)]
        if o["centered"]:
            ga, new_ga = self.running_average(builder, p, name, "grad_avg", g, alpha)
            updates.append((ga, new_ga))
            avg = sqrt(new_sq - new_ga * new_ga) + o["eps"]
        else:
            avg = sqrt(new_sq) + o["eps"]
        if o["momentum"]:
            buf, new_buf = self.momentum_update(builder, p, name, g / avg, o["momentum"])
            updates += [(buf, new_buf), (p, p - new_buf * lr)]
        else:
            updates.append((p, p - lr * g / avg))
        return updates


class Adam(Optimizer):
    """``torch.optim.Adam``: ``m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;
    p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)`` with ``bc_i = 1 - b_i**t``. The bias
    corrections are host-fed scalars (float64 on the host, as in torch), so no step counter
    or power op lives in the graph. ``amsgrad`` uses the running max of v."""

    decoupled = False

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        l1: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            l1=l1,
            **kwargs,
        )

    def _check(self, opts, where):
        super()._check(opts, where)
        betas = opts["betas"]
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise NumbagradError(f"{where}: betas must be two numbers in [0, 1), got {betas}")

    def update(self, builder, name, p, g, lr, o):
        b1, b2 = o["betas"]
        if self.decoupled:  # AdamW: p *= 1 - lr*wd, apart from the gradient
            if o["weight_decay"]:
                p_decayed = p * (1 - lr * o["weight_decay"])
            else:
                p_decayed = p
            g = self.regularized(p, g, {**o, "weight_decay": 0.0})
        else:
            p_decayed, g = p, self.regularized(p, g, o)
        m, new_m = self.running_average(builder, p, name, "exp_avg", g, b1)
        v, new_v = self.running_average(builder, p, name, "exp_avg_sq", g * g, b2)
        updates = [(m, new_m), (v, new_v)]
        if o["amsgrad"]:
            vmax = self.state(builder, p, name, "max_exp_avg_sq")
            new_v = maximum(vmax, new_v)
            updates.append((vmax, new_v))
        bc1 = self.host_scalar(builder, "adam.bias_correction1", b1, p.dtype)
        bc2_sqrt = self.host_scalar(builder, "adam.bias_correction2_sqrt", b2, p.dtype)
        denom = sqrt(new_v) / bc2_sqrt + o["eps"]
        updates.append((p, p_decayed - (lr / bc1) * new_m / denom))
        return updates


def _bc(beta: float, step: int) -> float:
    return 1.0 - beta**step


def _bc_sqrt(beta: float, step: int) -> float:
    return math.sqrt(1.0 - beta**step)


HOST_SCALARS["adam.bias_correction1"] = _bc
HOST_SCALARS["adam.bias_correction2_sqrt"] = _bc_sqrt


class AdamW(Adam):
    """``torch.optim.AdamW``: Adam with decoupled weight decay, ``p *= 1 - lr*weight_decay``
    before the Adam step (default 1e-2). ``l1`` is still a gradient penalty."""

    decoupled = True

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        l1: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(lr, betas, eps, weight_decay, amsgrad, l1, **kwargs)


from . import lr_scheduler  # noqa: E402  (torch's place for schedules: optim.lr_scheduler)

__all__ = [
    "LR_NAME",
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "Optimizer",
    "RMSprop",
    "lr_scheduler",
]
