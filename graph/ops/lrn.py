"""Local response normalization across channels (AlexNet), as ``torch.nn.LocalResponseNorm``:

``y[c] = x[c] / (k + alpha / size * sum_{c' in W(c)} x[c']^2) ** beta`` with the window
``W(c) = [c - size // 2, c + (size - 1) // 2]`` clipped to the channels (torch pads with
zeros and divides alpha by ``size`` whatever the clipping).

One op, not a composition of pow/avg_pool: the window sums are a short loop per element, and
the backward op recomputes them from x (nothing but x is saved). With ``d[c]`` the
denominator base and ``W'(j) = {c : j in W(c)} = [j - (size - 1) // 2, j + size // 2]``:
``dx[j] = g[j] d[j]^-beta - 2 beta alpha / size * x[j] * t[j]``, where
``t[j] = sum_{c in W'(j)} g[c] x[c] d[c]^(-beta-1)``.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ...errors import OpError, ShapeError
from ..builder import Value, as_value
from .common import require_float
from .registry import OpDef, TensorType, register

LRN_ATTRS = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 1.0}


def _normalize(attrs: dict) -> dict:
    attrs = dict(attrs)
    if not isinstance(attrs["size"], (int, np.integer)) or attrs["size"] < 1:
        raise OpError(f"size must be a positive int, got {attrs['size']!r}")
    attrs["size"] = int(attrs["size"])
    for key in ("alpha", "beta", "k"):
        attrs[key] = float(attrs[key])
    return attrs


def _infer(types, attrs) -> TensorType:
    (x,) = types[:1]
    require_float(x)
    if len(x.shape) < 3:
        raise ShapeError(f"input must be (N, C, ...) with at least 3 axes, got {x.shape}")
    if any(t.shape != x.shape or t.dtype != x.dtype for t in types):
        raise ShapeError(f"operands must share one shape and dtype, got {[t for t in types]}")
    return TensorType(x.shape, x.dtype)


def _window_sum(a: np.ndarray, before: int, after: int) -> np.ndarray:
    """``sum_{c' = c - before}^{c + after} a[:, c']`` per channel c, zeros outside."""
    pad = [(0, 0)] * a.ndim
    pad[1] = (before, after)
    windows = sliding_window_view(np.pad(a, pad), before + after + 1, axis=1)
    return windows.sum(axis=-1)


def _base(x, size, alpha, k):
    return k + alpha / size * _window_sum(x * x, size // 2, (size - 1) // 2)


def _reference(x, *, size, alpha, beta, k):
    return (x * _base(x, size, alpha, k) ** -beta).astype(x.dtype)


def _grad_reference(g, x, *, size, alpha, beta, k):
    d = _base(x, size, alpha, k)
    t = _window_sum(g * x * d ** (-beta - 1), (size - 1) // 2, size // 2)
    return (g * d**-beta - 2 * beta * alpha / size * x * t).astype(x.dtype)


def _flops(ins, out, attrs) -> int:
    return int(np.prod(out.shape)) * (attrs["size"] * 2 + 4)


register(
    OpDef(
        name="local_response_norm",
        arity=(1, 1),
        infer=_infer,
        reference=_reference,
        vjp=lambda ctx, g: [
            g.builder.emit("local_response_norm_grad", [g, ctx.input(0)], **ctx.attrs)
        ],
        attrs=LRN_ATTRS,
        normalize=_normalize,
        flops=_flops,
        doc="input x (N, C, ...); x / (k + alpha/size * window sum of x^2 over channels)^beta",
    )
)
register(
    OpDef(
        name="local_response_norm_grad",
        arity=(2, 2),
        infer=_infer,
        reference=_grad_reference,
        attrs=LRN_ATTRS,
        normalize=_normalize,
        flops=lambda ins, out, a: _flops(ins, out, a) * a["size"],
        doc="inputs: dL/dy, x; output dL/dx (the window sums recomputed from x)",
    )
)


def local_response_norm(
    x, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0
) -> Value:
    """LRN across channels (axis 1) of x (N, C, ...), as ``torch.nn.functional``'s."""
    x = as_value(x)
    return x.builder.emit("local_response_norm", [x], size=size, alpha=alpha, beta=beta, k=k)
