"""The autodiff engine as users meet it: tensors, tracing, reverse mode, layers, optimizers."""

from . import functional, lr_scheduler, nn, optim
from .autodiff import backward, build_backward
from .tensor import Spec, Tensor
from .trace import trace

__all__ = [
    "Spec",
    "Tensor",
    "backward",
    "build_backward",
    "functional",
    "lr_scheduler",
    "nn",
    "optim",
    "trace",
]
