"""Activation layers (beyond ReLU, Tanh and Sigmoid in layers.py) and Dropout. Each is a thin
Module over an op of the functional API; the elementwise ones fuse with their neighbours."""

from __future__ import annotations

import numpy as np

from ...errors import NumbagradError
from ...graph.ops.activation import LECUN_AMPLITUDE, LECUN_SLOPE
from .. import functional as F
from .init import default_generator
from .module import Module, Parameter


class LeakyReLU(Module):
    """``x`` where positive, else ``negative_slope * x``."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class PReLU(Module):
    """LeakyReLU with a learned slope: ``weight`` (num_parameters,), one slope shared by all
    channels (1, the default) or one per channel (dim 1 of the input), initialized to
    ``init`` — as torch.nn.PReLU."""

    def __init__(self, num_parameters: int = 1, init: float = 0.25, dtype: str = "float32"):
        super().__init__()
        self.num_parameters = num_parameters
        self.weight = Parameter(np.full(num_parameters, init, dtype))

    def forward(self, x):
        return F.prelu(x, self.weight)

    def extra_repr(self) -> str:
        return f"num_parameters={self.num_parameters}"


class SiLU(Module):
    """``x * sigmoid(x)`` (also called swish)."""

    def forward(self, x):
        return F.silu(x)


class ELU(Module):
    """``x`` where positive, else ``alpha * (exp(x) - 1)``."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x):
        return F.elu(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class Softplus(Module):
    """``log(1 + exp(beta x)) / beta``; linear where ``beta x > threshold`` (as torch)."""

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta, self.threshold = beta, threshold

    def forward(self, x):
        return F.softplus(x, self.beta, self.threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


class ScaledTanh(Module):
    """LeCun's scaled tanh ``amplitude * tanh(slope * x)``, by default 1.7159 tanh(2x/3)
    (LeCun et al. 1998, appendix A: f(±1) = ±1, with maximal second derivative at ±1)."""

    def __init__(self, amplitude: float = LECUN_AMPLITUDE, slope: float = LECUN_SLOPE) -> None:
        super().__init__()
        self.amplitude, self.slope = amplitude, slope

    def forward(self, x):
        return F.scaled_tanh(x, self.amplitude, self.slope)

    def extra_repr(self) -> str:
        return f"amplitude={self.amplitude}, slope={self.slope:.6g}"


LeCunTanh = ScaledTanh


class Softmax(Module):
    """Softmax along ``dim`` (default: the last axis)."""

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return F.softmax(x, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """Log-softmax along ``dim`` (default: the last axis)."""

    def forward(self, x):
        return F.log_softmax(x, self.dim)


class Dropout(Module):
    """While training, zero each element with probability ``p`` and scale the rest by
    ``1/(1-p)``; in eval mode the identity (the eval graph holds no dropout node).

    The mask is a hash of (``seed``, the compiled step's run counter, element index), so it
    changes every step, is the same on every backend, and the same seed replays the same
    masks. ``seed`` defaults to a draw from the generator of ``ng.manual_seed``."""

    def __init__(self, p: float = 0.5, seed: int | None = None) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise NumbagradError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = float(p)
        self.seed = int(default_generator().integers(0, 2**63 - 1)) if seed is None else seed

    def forward(self, x):
        return F.dropout(x, self.p, self.training, self.seed)

    def extra_repr(self) -> str:
        return f"p={self.p}"


__all__ = [
    "Dropout",
    "ELU",
    "LeCunTanh",
    "LeakyReLU",
    "LogSoftmax",
    "PReLU",
    "ScaledTanh",
    "SiLU",
    "Softmax",
    "Softplus",
]
