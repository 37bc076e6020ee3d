"""Max and average pooling over 2-d windows (NCHW, PyTorch semantics, floor mode)."""

from __future__ import annotations

import numpy as np

from ...errors import ShapeError
from ..builder import Value, as_value
from .common import pair, require_float
from .conv import _windows, scatter_windows, window_output_size
from .registry import OpDef, TensorType, register

MAX_ATTRS = {"kernel": (1, 1), "stride": (1, 1), "padding": (0, 0), "dilation": (1, 1)}
AVG_ATTRS = {"kernel": (1, 1), "stride": (1, 1), "padding": (0, 0), "count_include_pad": True}


def _normalize(attrs: dict) -> dict:
    attrs = dict(attrs)
    attrs["kernel"] = pair(attrs["kernel"], "kernel_size", 1)
    attrs["stride"] = pair(attrs["stride"], "stride", 1)
    attrs["padding"] = pair(attrs["padding"], "padding", 0)
    attrs["dilation"] = pair(attrs.get("dilation", (1, 1)), "dilation", 1)
    if "count_include_pad" in attrs:
        attrs.pop("dilation")
        attrs["count_include_pad"] = bool(attrs["count_include_pad"])
    if "input_shape" in attrs:
        attrs["input_shape"] = tuple(int(d) for d in attrs["input_shape"])
    return attrs


def _pool_out(shape, attrs) -> tuple[int, ...]:
    if len(shape) != 4:
        raise ShapeError(f"input must be 4-d (N, C, H, W), got shape {tuple(shape)}")
    k, p = attrs["kernel"], attrs["padding"]
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ShapeError(f"padding {p} must be at most half the kernel {k}")
    dil = attrs.get("dilation", (1, 1))
    oh, ow = window_output_size(shape[2:], k, attrs["stride"], p, dil, what="pooling window")
    return (*shape[:2], oh, ow)


def _infer_pool(types, attrs) -> TensorType:
    require_float(types[0])
    return TensorType(_pool_out(types[0].shape, attrs), types[0].dtype)


def _infer_pool_grad(types, attrs) -> TensorType:
    g = types[0]
    x_shape = types[1].shape if len(types) == 2 else attrs["input_shape"]
    if _pool_out(x_shape, attrs) != g.shape:
        raise ShapeError(f"gradient {g.shape} does not match pooling of {x_shape}")
    return TensorType(tuple(x_shape), g.dtype)


def _max_windows(x, attrs, out_hw, fill=-np.inf):
    """(N, C, OH, OW, KH*KW): each window's taps, ``fill`` where a tap is padding."""
    win = _windows(
        x, attrs["kernel"], attrs["stride"], attrs["padding"], attrs["dilation"], out_hw, fill
    )
    return win.reshape(*win.shape[:4], -1)


def first_max_taps(x, attrs, out_hw):
    """Per window, the row-major tap (i * KW + j) of its maximum as PyTorch picks it: the
    first maximum among the taps inside the input, or the last NaN when the window holds one."""
    win = _max_windows(x, attrs, out_hw)
    inside = _max_windows(np.ones((1, 1, *x.shape[2:]), bool), attrs, out_hw, False)
    nan = np.isnan(win)
    first = (inside & (win == win.max(axis=-1, keepdims=True))).argmax(axis=-1)
    last_nan = win.shape[-1] - 1 - nan[..., ::-1].argmax(axis=-1)
    return np.where(nan.any(axis=-1), last_nan, first)


def window_flops(ins, out, attrs) -> int:
    """One operation per window tap per output."""
    return int(np.prod(out.shape)) * attrs["kernel"][0] * attrs["kernel"][1]


def _max_ref(x, **attrs):
    return _max_windows(x, attrs, _pool_out(x.shape, attrs)[2:]).max(axis=-1)


def scatter_taps(g, taps, x_shape, attrs):
    """(N, C, H, W): each g element added at tap ``taps`` (i * KW + j) of its window."""
    kh, kw = attrs["kernel"]
    contrib = np.zeros((*g.shape[:2], kh * kw, *g.shape[2:]), dtype=g.dtype)
    np.put_along_axis(contrib, taps[:, :, None], g[:, :, None], axis=2)
    contrib = contrib.reshape(*g.shape[:2], kh, kw, *g.shape[2:])
    return np.ascontiguousarray(
        scatter_windows(
            contrib, x_shape, attrs["kernel"], attrs["stride"], attrs["padding"], attrs["dilation"]
        )
    )


def _max_grad_ref(g, x, **attrs):
    return scatter_taps(g, first_max_taps(x, attrs, g.shape[2:]), x.shape, attrs)


def _avg_divisor(x_shape, attrs, out_hw, dtype):
    """Per output position, the number of elements averaged."""
    kh, kw = attrs["kernel"]
    if attrs["count_include_pad"]:
        return np.asarray(kh * kw, dtype=dtype)
    ones = np.ones((1, 1, *x_shape[2:]), dtype=dtype)
    win = _windows(ones, attrs["kernel"], attrs["stride"], attrs["padding"], (1, 1), out_hw)
    return win.sum(axis=(-2, -1))


def _avg_ref(x, **attrs):
    out_hw = _pool_out(x.shape, attrs)[2:]
    win = _windows(x, attrs["kernel"], attrs["stride"], attrs["padding"], (1, 1), out_hw)
    return (win.sum(axis=(-2, -1)) / _avg_divisor(x.shape, attrs, out_hw, x.dtype)).astype(x.dtype)


def _avg_grad_ref(g, *, input_shape, **attrs):
    kh, kw = attrs["kernel"]
    share = g / _avg_divisor(input_shape, attrs, g.shape[2:], g.dtype)
    contrib = np.broadcast_to(share[:, :, None, None], (*g.shape[:2], kh, kw, *g.shape[2:]))
    return np.ascontiguousarray(
        scatter_windows(
            contrib, input_shape, attrs["kernel"], attrs["stride"], attrs["padding"], (1, 1)
        )
    ).astype(g.dtype)


register(
    OpDef(
        name="max_pool2d",
        arity=(1, 1),
        infer=_infer_pool,
        reference=_max_ref,
        vjp=lambda ctx, g: [g.builder.emit("max_pool2d_grad", [g, ctx.input(0)], **ctx.attrs)],
        attrs=MAX_ATTRS,
        normalize=_normalize,
        flops=window_flops,
    )
)
register(
    OpDef(
        name="max_pool2d_grad",
        arity=(2, 2),
        infer=_infer_pool_grad,
        reference=_max_grad_ref,
        attrs=MAX_ATTRS,
        normalize=_normalize,
        doc="inputs: dL/dy, x (the argmax is recomputed from x)",
    )
)
register(
    OpDef(
        name="avg_pool2d",
        arity=(1, 1),
        infer=_infer_pool,
        reference=_avg_ref,
        vjp=lambda ctx, g: [
            g.builder.emit("avg_pool2d_grad", [g], input_shape=ctx.shape(0), **ctx.attrs)
        ],
        attrs=AVG_ATTRS,
        normalize=_normalize,
        flops=window_flops,
    )
)
register(
    OpDef(
        name="avg_pool2d_grad",
        arity=(1, 1),
        infer=_infer_pool_grad,
        reference=_avg_grad_ref,
        attrs={**AVG_ATTRS, "input_shape": ()},
        normalize=_normalize,
    )
)


def emit_window_op(op: str, x, kernel_size, stride, **attrs) -> Value:
    """Emit the pooling-window op ``op`` on x; ``stride`` defaults to ``kernel_size`` (as
    PyTorch)."""
    x = as_value(x)
    stride = kernel_size if stride is None else stride
    return x.builder.emit(op, [x], kernel=kernel_size, stride=stride, **attrs)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1) -> Value:
    """Max over windows; ``stride`` defaults to ``kernel_size`` (as PyTorch)."""
    return emit_window_op("max_pool2d", x, kernel_size, stride, padding=padding, dilation=dilation)


def avg_pool2d(x, kernel_size, stride=None, padding=0, count_include_pad: bool = True) -> Value:
    """Mean over windows; ``stride`` defaults to ``kernel_size`` (as PyTorch)."""
    return emit_window_op(
        "avg_pool2d", x, kernel_size, stride, padding=padding, count_include_pad=count_include_pad
    )
