"""LayerNorm and GroupNorm, as PyTorch's: per-sample normalization (no running statistics, the
same in training and eval) with a learned per-feature or per-channel scale and shift."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...errors import ShapeError
from ..composite import group_norm, layer_norm
from ..trace import layer_path
from .module import Module, Parameter


class LayerNorm(Module):
    """Normalization over the last axes (``normalized_shape``), with ``weight`` (ones) and
    ``bias`` (zeros) of that shape when ``elementwise_affine``."""

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
        self.normalized_shape, self.eps = tuple(int(d) for d in shape), eps
        self.weight = self.bias = None
        if elementwise_affine:
            self.weight = Parameter(np.ones(self.normalized_shape, dtype))
            if bias:
                self.bias = Parameter(np.zeros(self.normalized_shape, dtype))

    def forward(self, x):
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def summary_info(self, in_shape, out_shape):
        """For ``ng.summary``: about one multiply-add per element."""
        return None, None, None, int(np.prod(out_shape))

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"


class GroupNorm(Module):
    """Normalization of (N, C, ...) over groups of ``num_channels / num_groups`` channels, with
    per-channel ``weight`` (ones) and ``bias`` (zeros) when ``affine``."""

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        if num_groups < 1 or num_channels % num_groups:
            raise ShapeError(
                f"GroupNorm: num_channels={num_channels} must be divisible by "
                f"num_groups={num_groups}"
            )
        self.num_groups, self.num_channels, self.eps = num_groups, num_channels, eps
        self.weight = Parameter(np.ones(num_channels, dtype)) if affine else None
        self.bias = Parameter(np.zeros(num_channels, dtype)) if affine else None

    def forward(self, x):
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ShapeError(
                f"GroupNorm layer '{layer_path()}' expects input (N, {self.num_channels}, ...), "
                f"got shape {x.shape}"
            )
        return group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def summary_info(self, in_shape, out_shape):
        """For ``ng.summary``: about one multiply-add per element."""
        return None, None, None, int(np.prod(out_shape))

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}"
