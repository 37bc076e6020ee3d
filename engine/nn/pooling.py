"""Pooling and resampling beyond MaxPool2d/AvgPool2d: global and adaptive average pooling,
ceil-mode max pooling (GoogLeNet's), nearest/bilinear upsampling, and local response
normalization (AlexNet's LRN, a pooling of squares across channels).

Everything here is written with the public op API, so each layer is also an example of a
custom layer: its VJP comes from the ops it is made of. Upsampling and LRN are one op each
(``upsample2d``, ``local_response_norm``: graph/ops/spatial.py, graph/ops/lrn.py).
"""

from __future__ import annotations

import numpy as np

from ...errors import ShapeError
from ...graph.ops.common import pair
from .. import functional as F
from .module import Module


def _check_4d(x, what: str) -> None:
    if x.ndim != 4:
        raise ShapeError(f"{what} expects input (N, C, H, W), got shape {x.shape}")


class GlobalAvgPool2d(Module):
    """Mean over H and W: (N, C, H, W) -> (N, C, 1, 1), or (N, C) with ``flatten=True``."""

    def __init__(self, flatten: bool = False) -> None:
        super().__init__()
        self.flatten = flatten

    def forward(self, x):
        _check_4d(x, "GlobalAvgPool2d")
        return F.mean(x, (2, 3), keepdims=not self.flatten)

    def extra_repr(self) -> str:
        return f"flatten={self.flatten}" if self.flatten else ""


def adaptive_pool_matrix(n_in: int, n_out: int, dtype: str = "float32") -> np.ndarray:
    """(n_out, n_in): row i averages input cells floor(i*n_in/n_out) .. ceil((i+1)*n_in/n_out)
    - 1, PyTorch's adaptive pooling windows (they overlap when n_out does not divide n_in)."""
    m = np.zeros((n_out, n_in), dtype)
    for i in range(n_out):
        start, stop = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        m[i, start:stop] = 1.0 / (stop - start)
    return m


def adaptive_avg_pool2d(x, output_size):
    """Average pooling to a fixed (oh, ow), as ``torch.nn.functional.adaptive_avg_pool2d``:
    one global mean for (1, 1), one avg_pool2d when the sizes divide, otherwise two small
    matrix products with constant window matrices (exact for every size, larger or smaller)."""
    _check_4d(x, "adaptive_avg_pool2d")
    n, c, h, w = x.shape
    oh, ow = pair(output_size, "output_size", 1)
    if (oh, ow) == (h, w):
        return x
    if (oh, ow) == (1, 1):
        return F.mean(x, (2, 3), keepdims=True)
    if h % oh == 0 and w % ow == 0:
        return F.avg_pool2d(x, (h // oh, w // ow))
    # rows: (N*C*H, W) @ Pw^T -> (N*C*H, ow); then the same along H after a transpose.
    y = F.matmul(x.reshape(n * c * h, w), adaptive_pool_matrix(w, ow, x.dtype), trans_b=True)
    y = y.reshape(n * c, h, ow).transpose(0, 2, 1).reshape(n * c * ow, h)
    y = F.matmul(y, adaptive_pool_matrix(h, oh, x.dtype), trans_b=True)
    return y.reshape(n, c, ow, oh).transpose(0, 1, 3, 2)


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed output size (oh, ow) whatever the input size, as
    ``torch.nn.AdaptiveAvgPool2d``; (1, 1) is global average pooling."""

    def __init__(self, output_size) -> None:
        super().__init__()
        self.output_size = pair(output_size, "output_size", 1)

    def forward(self, x):
        return adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


def ceil_pool_extra(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """Rows (or columns) to add at the bottom (right) so that floor-mode pooling gives
    PyTorch's ceil-mode output size (whose last window must start inside the input or the
    left padding)."""
    span = dilation * (kernel - 1) + 1
    out = -(-(size + 2 * padding - span) // stride) + 1
    if (out - 1) * stride >= size + padding:
        out -= 1
    return max(0, (out - 1) * stride + span - (size + 2 * padding))


def max_pool2d_ceil(x, kernel_size, stride=None, padding=0, dilation=1):
    """``max_pool2d`` with ``ceil_mode=True``: the input is extended at the bottom and right
    by the most negative float (never a window's max) and pooled in floor mode."""
    _check_4d(x, "max_pool2d (ceil_mode)")
    k = pair(kernel_size, "kernel_size", 1)
    s = pair(k if stride is None else stride, "stride", 1)
    p, d = pair(padding, "padding", 0), pair(dilation, "dilation", 1)
    eh = ceil_pool_extra(x.shape[2], k[0], s[0], p[0], d[0])
    ew = ceil_pool_extra(x.shape[3], k[1], s[1], p[1], d[1])
    low = np.finfo(x.dtype).min
    if eh:
        fill = x.builder.const(np.full((*x.shape[:2], eh, x.shape[3]), low), x.dtype)
        x = F.concat([x, fill], axis=2)
    if ew:
        fill = x.builder.const(np.full((*x.shape[:3], ew), low), x.dtype)
        x = F.concat([x, fill], axis=3)
    return F.max_pool2d(x, k, s, p, d)


class Upsample(Module):
    """Upsampling by integer ``scale_factor`` (one for both axes, or a pair), ``mode``
    ``"nearest"`` or ``"bilinear"`` (``align_corners=False``), as ``torch.nn.Upsample``; one
    ``upsample2d`` op. A target ``size`` is refused: give the factor."""

    def __init__(self, scale_factor=2, mode: str = "nearest", size=None, align_corners=None):
        super().__init__()
        if size is not None or scale_factor is None or align_corners:
            raise ShapeError(
                "Upsample: give an integer scale_factor (size= and align_corners=True are "
                "not supported)"
            )
        self.scale_factor, self.mode = pair(scale_factor, "scale_factor", 1), mode

    def forward(self, x):
        _check_4d(x, "Upsample")
        return F.upsample2d(x, self.scale_factor, self.mode)

    def extra_repr(self) -> str:
        return f"scale_factor={self.scale_factor}, mode={self.mode!r}"


class LocalResponseNorm(Module):
    """Local response normalization across channels (Krizhevsky et al. 2012), as
    ``torch.nn.LocalResponseNorm``: b_c = a_c / (k + alpha/n * sum_{c' near c} a_c'^2)^beta,
    the sum over ``size`` neighbouring channels (zero-padded at the ends); one
    ``local_response_norm`` op. AlexNet uses size 5, alpha 1e-4, beta 0.75, k 2."""

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x):
        return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


__all__ = [
    "AdaptiveAvgPool2d",
    "GlobalAvgPool2d",
    "LocalResponseNorm",
    "Upsample",
    "adaptive_avg_pool2d",
    "adaptive_pool_matrix",
    "ceil_pool_extra",
    "max_pool2d_ceil",
]
