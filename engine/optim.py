"""Optimizers as graph builders: each appends its update ops to the backward graph.

Parameters and optimizer state (momentum buffers, ...) are leaves updated in place after the
step; the learning rate is a scalar input of the graph, so schedules never recompile.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import NumbagradError
from ..graph import Builder, Value
from ..graph.ops import sign

LR_NAME = "lr"


class Optimizer:
    """Base class: ``build`` returns the (state leaf, new value) updates of one step."""

    def __init__(self, lr: float, weight_decay: float = 0.0, l1: float = 0.0) -> None:
        for name, value in (("lr", lr), ("weight_decay", weight_decay), ("l1", l1)):
            if value < 0:
                raise NumbagradError(f"{type(self).__name__}: {name} must be >= 0, got {value}")
        self.lr, self.weight_decay, self.l1 = lr, weight_decay, l1

    def regularized(self, param: Value, grad: Value) -> Value:
        """The gradient with the L2 (weight decay) and L1 penalties' gradients added."""
        if self.weight_decay:
            grad = grad + param * self.weight_decay
        if self.l1:
            grad = grad + sign(param) * self.l1
        return grad

    def build(
        self, builder: Builder, params: Mapping[str, Value], grads: Mapping[str, Value], lr: Value
    ) -> list[tuple[Value, Value]]:
        raise NotImplementedError

    @staticmethod
    def state(builder: Builder, param: Value, name: str, slot: str) -> Value:
        """A zero-initialized state leaf shaped like ``param``, named ``<param>.<slot>``."""
        return builder.leaf("state", param.shape, param.dtype, f"{name}.{slot}")


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
    ) -> None:
        super().__init__(lr, weight_decay, l1)
        if momentum < 0:
            raise NumbagradError(f"SGD: momentum must be >= 0, got {momentum}")
        if nesterov and momentum == 0:
            raise NumbagradError("SGD: nesterov needs a positive momentum")
        self.momentum, self.nesterov = momentum, nesterov

    def build(self, builder, params, grads, lr):
        updates = []
        for name, p in params.items():
            g = self.regularized(p, grads[name])
            if self.momentum:
                buf = self.state(builder, p, name, "momentum_buffer")
                new_buf = buf * self.momentum + g
                updates.append((buf, new_buf))
                g = g + new_buf * self.momentum if self.nesterov else new_buf
            updates.append((p, p - g * lr))
        return updates

    def __repr__(self) -> str:
        return (
            f"SGD(lr={self.lr}, momentum={self.momentum}, nesterov={self.nesterov}, "
            f"weight_decay={self.weight_decay}, l1={self.l1})"
        )
