"""Max pooling's backward from one byte per window instead of the whole input.

``max_pool2d_grad(g, x)`` reads the pooled input x (N, C, H, W) only to find each window's
first maximum, so a training step that differentiates a max pool keeps x alive until the
backward pass. These two ops split that work so only the answer is kept:

- ``max_pool2d_taps(x)`` -> uint8 (N, C, OH, OW): the row-major tap ``i * KW + j`` of each
  window's first maximum (as ``max_pool2d`` and PyTorch pick it: ties to the first, a NaN
  wins), computed in the forward pass. A 2x2 window's answer takes 1 byte where its four
  float32 inputs took 16.
- ``max_pool2d_grad_taps(g, taps)`` -> (N, C, H, W): each g element added at its window's
  tap; overlapping windows accumulate. The same values as ``max_pool2d_grad(g, x)``.

They are not differentiated (``graph/compact.py`` puts them into a training step after
autodiff), so neither has a VJP rule.
"""

from __future__ import annotations

import numpy as np

from ...errors import DTypeError, ShapeError
from ..builder import Value, as_value
from .pool import (
    MAX_ATTRS,
    _infer_pool,
    _normalize,
    _pool_out,
    first_max_taps,
    scatter_taps,
    window_flops,
)
from .registry import OpDef, TensorType, register

MAX_TAPS = 256
"""Windows of at most this many taps fit a uint8 tap index."""


def _infer_taps(types, attrs) -> TensorType:
    kh, kw = attrs["kernel"]
    if kh * kw > MAX_TAPS:
        raise ShapeError(f"max_pool2d_taps: a {kh}x{kw} window has more than {MAX_TAPS} taps")
    return TensorType(_infer_pool(types, attrs).shape, "uint8")


def _taps_ref(x, **attrs):
    return first_max_taps(x, attrs, _pool_out(x.shape, attrs)[2:]).astype(np.uint8)


def _infer_grad_taps(types, attrs) -> TensorType:
    g, taps = types
    if taps.dtype != "uint8":
        raise DTypeError(f"max_pool2d_grad_taps: taps must be uint8, not {taps.dtype}")
    x_shape = attrs["input_shape"]
    if g.shape != taps.shape or _pool_out(x_shape, attrs) != g.shape:
        raise ShapeError(
            f"max_pool2d_grad_taps: gradient {g.shape} and taps {taps.shape} must both be the "
            f"pooled shape of the input {x_shape}"
        )
    return TensorType(tuple(x_shape), g.dtype)


def _grad_taps_ref(g, taps, *, input_shape, **attrs):
    return scatter_taps(g, taps.astype(np.int64), input_shape, attrs)


register(
    OpDef(
        name="max_pool2d_taps",
        arity=(1, 1),
        infer=_infer_taps,
        reference=_taps_ref,
        attrs=MAX_ATTRS,
        normalize=_normalize,
        flops=window_flops,
        doc="input x (N, C, H, W); output uint8 (N, C, OH, OW): the row-major tap of each "
        "max_pool2d window's first maximum",
    )
)
register(
    OpDef(
        name="max_pool2d_grad_taps",
        arity=(2, 2),
        infer=_infer_grad_taps,
        reference=_grad_taps_ref,
        attrs={**MAX_ATTRS, "input_shape": ()},
        normalize=_normalize,
        doc="inputs: dL/dy (N, C, OH, OW), the uint8 taps of max_pool2d_taps; output dL/dx",
    )
)


def max_pool2d_taps(x, kernel_size, stride=None, padding=0, dilation=1) -> Value:
    """uint8 tap of each max-pooling window's first maximum; arguments as ``max_pool2d``."""
    x = as_value(x)
    stride = kernel_size if stride is None else stride
    return x.builder.emit(
        "max_pool2d_taps",
        [x],
        kernel=kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
    )


def max_pool2d_grad_taps(g, taps, input_shape, kernel_size, stride=None, padding=0, dilation=1):
    """dL/dx of max pooling from dL/dy and the taps of ``max_pool2d_taps``."""
    g = as_value(g)
    stride = kernel_size if stride is None else stride
    return g.builder.emit(
        "max_pool2d_grad_taps",
        [g, as_value(taps)],
        kernel=kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        input_shape=input_shape,
    )
