"""BatchNorm1d and BatchNorm2d, as PyTorch's.

Training: the batch's per-channel mean and biased variance (one ``batch_norm_stats`` pass over
the input, graph/ops/norm_stats.py) normalize the input; the running statistics move by
``momentum`` (the variance enters them unbiased, n/(n-1), as in PyTorch) through graph updates
applied after each forward run, and ``num_batches_tracked`` counts the steps. Eval: the running
statistics normalize. Both emit one ``batch_norm`` op, so an inference graph shows BatchNorm by
name and ``fold_conv_bn`` can fold it into a conv.
"""

from __future__ import annotations

import numpy as np

from ...errors import NumbagradError, ShapeError
from ...graph.ops import batch_moments, batch_norm, sqrt
from ...graph.ops.norm_stats import channel_count, channel_shape
from ..trace import current_tracer, layer_path
from .module import Module, Parameter


class _BatchNorm(Module):
    """Normalization over every axis but the channels (axis 1)."""

    ranks: tuple[int, ...] = ()
    expects = ""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        if momentum is None:
            raise NumbagradError(
                f"{type(self).__name__}: momentum=None (a cumulative average) is not "
                "supported; give a float momentum"
            )
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype))
            self.bias = Parameter(np.zeros(num_features, dtype))
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype))
            self.register_buffer("num_batches_tracked", np.zeros((), np.int64))

    def _check(self, x) -> None:
        if x.ndim not in self.ranks or x.shape[1] != self.num_features:
            raise ShapeError(
                f"{type(self).__name__} layer '{layer_path()}' expects input {self.expects} with "
                f"C={self.num_features}, got shape {x.shape}"
            )

    def forward(self, x):
        self._check(x)
        shape = channel_shape(x.shape)
        gamma = self.weight.reshape(shape) if self.affine else 1.0
        beta = self.bias.reshape(shape) if self.affine else 0.0
        if not self.training and self.track_running_stats:
            mean = self.running_mean.reshape(shape)
            inv_std = 1.0 / sqrt(self.running_var.reshape(shape) + self.eps)
            return batch_norm(x, mean, inv_std, gamma, beta)
        count = channel_count(x.shape)
        if count < 2:
            raise ShapeError(
                f"{type(self).__name__}: training needs more than one value per channel, "
                f"got input shape {x.shape}"
            )
        mean, var = batch_moments(x)  # the variance biased, as PyTorch normalizes
        out = batch_norm(x, mean, 1.0 / sqrt(var + self.eps), gamma, beta)
        if self.training and self.track_running_stats:
            self._update_running_stats(mean, var, count)
        return out

    def _update_running_stats(self, mean, var, count: int) -> None:
        m, c = self.momentum, self.num_features
        tracer = current_tracer()
        unbiased = var.reshape(c) * (m * count / (count - 1))
        tracer.update(self.running_mean, self.running_mean * (1.0 - m) + mean.reshape(c) * m)
        tracer.update(self.running_var, self.running_var * (1.0 - m) + unbiased)
        tracer.tick(self.num_batches_tracked)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNorm):
    """Batch normalization of (N, C) or (N, C, L) inputs over N (and L)."""

    ranks = (2, 3)
    expects = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalization of (N, C, H, W) inputs over N, H and W."""

    ranks = (4,)
    expects = "(N, C, H, W)"
