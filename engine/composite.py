"""Functions built from other ops, with no op of their own (autodiff differentiates their
parts; fusion joins their elementwise steps): ``gelu``, ``layer_norm``, ``group_norm``."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..errors import OptionError, ShapeError
from ..graph.builder import Value, as_values
from ..graph.ops import erf, mean, pow, tanh


def gelu(x, approximate: str = "none") -> Value:
    """``x * Phi(x)`` (Phi the standard normal CDF, through erf), or with ``approximate=
    "tanh"`` the tanh approximation ``x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``, as
    ``torch.nn.functional.gelu``."""
    (x,) = as_values(x)
    if approximate == "none":
        return x * 0.5 * (1.0 + erf(x * (1.0 / math.sqrt(2.0))))
    if approximate == "tanh":
        inner = (x + pow(x, 3.0) * 0.044715) * math.sqrt(2.0 / math.pi)
        return x * 0.5 * (1.0 + tanh(inner))
    raise OptionError(f"gelu: approximate must be 'none' or 'tanh', not {approximate!r}")


def _normalized(x: Value, axes: tuple[int, ...], eps: float) -> Value:
    """``(x - mean) / sqrt(var + eps)`` over ``axes`` (biased variance, as torch)."""
    centered = x - mean(x, axes, keepdims=True)
    return centered * pow(mean(centered * centered, axes, keepdims=True) + eps, -0.5)


def layer_norm(
    x, normalized_shape: int | Sequence[int], weight=None, bias=None, eps: float = 1e-5
) -> Value:
    """Normalize over the last ``len(normalized_shape)`` axes, then scale by ``weight`` and
    shift by ``bias`` (both of ``normalized_shape``, optional), as
    ``torch.nn.functional.layer_norm``."""
    (x,) = as_values(x)
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    k = len(shape)
    if k == 0 or x.shape[x.ndim - k :] != shape:
        raise ShapeError(f"layer_norm: input {x.shape} does not end with normalized_shape {shape}")
    y = _normalized(x, tuple(range(x.ndim - k, x.ndim)), eps)
    y = y if weight is None else y * weight
    return y if bias is None else y + bias


def group_norm(x, num_groups: int, weight=None, bias=None, eps: float = 1e-5) -> Value:
    """Normalize (N, C, ...) over each group of ``C / num_groups`` channels (and all positions),
    then scale and shift per channel by ``weight`` and ``bias`` (C,), as
    ``torch.nn.functional.group_norm``."""
    (x,) = as_values(x)
    if x.ndim < 2 or num_groups < 1 or x.shape[1] % num_groups:
        raise ShapeError(
            f"group_norm: an input (N, C, ...) with C divisible by num_groups={num_groups} is "
            f"needed, got {x.shape}"
        )
    grouped = x.reshape((x.shape[0], num_groups, -1))
    y = _normalized(grouped, (2,), eps).reshape(x.shape)
    per_channel = (x.shape[1],) + (1,) * (x.ndim - 2)
    y = y if weight is None else y * as_values(weight)[0].reshape(per_channel)
    return y if bias is None else y + as_values(bias)[0].reshape(per_channel)


__all__ = ["gelu", "group_norm", "layer_norm"]
