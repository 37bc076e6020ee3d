"""2-d convolution (cross-correlation, NCHW, PyTorch semantics) and its two gradients."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ...errors import OpError, ShapeError
from ..builder import Value, as_value, as_values
from .common import pair, require_float, same_dtype
from .registry import OpDef, TensorType, register

CONV_ATTRS = {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1}


def _normalize(attrs: dict) -> dict:
    attrs = dict(attrs)
    attrs["stride"] = pair(attrs["stride"], "stride", 1)
    attrs["padding"] = pair(attrs["padding"], "padding", 0)
    attrs["dilation"] = pair(attrs["dilation"], "dilation", 1)
    if not isinstance(attrs["groups"], int) or attrs["groups"] < 1:
        raise OpError(f"groups must be a positive int, got {attrs['groups']!r}")
    for key in ("input_shape", "weight_shape"):
        if key in attrs:
            attrs[key] = tuple(int(d) for d in attrs[key])
    return attrs


def window_output_size(size, kernel, stride, padding, dilation, what="kernel") -> tuple[int, int]:
    """Output height/width of a sliding window, refusing a window larger than its input."""
    out = []
    for n, k, s, p, d in zip(size, kernel, stride, padding, dilation):
        extent = d * (k - 1) + 1
        if extent > n + 2 * p:
            raise ShapeError(
                f"{what} {kernel[0]}x{kernel[1]} (dilation {dilation[0]}x{dilation[1]}) is larger "
                f"than the input {size[0]}x{size[1]} padded by {padding[0]}x{padding[1]}"
            )
        out.append((n + 2 * p - extent) // s + 1)
    return out[0], out[1]


def _check_operands(x_shape, w_shape, groups):
    if len(x_shape) != 4:
        raise ShapeError(f"input must be 4-d (N, C, H, W), got shape {tuple(x_shape)}")
    if len(w_shape) != 4:
        raise ShapeError(f"weight must be 4-d (out, in/groups, kh, kw), got {tuple(w_shape)}")
    k, cg = w_shape[:2]
    if x_shape[1] != cg * groups or k % groups:
        raise ShapeError(
            f"input has {x_shape[1]} channels but the weight {tuple(w_shape)} with groups={groups} "
            f"expects {cg * groups}"
        )


def _out_shape(x_shape, w_shape, attrs):
    _check_operands(x_shape, w_shape, attrs["groups"])
    oh, ow = window_output_size(
        x_shape[2:], w_shape[2:], attrs["stride"], attrs["padding"], attrs["dilation"]
    )
    return (x_shape[0], w_shape[0], oh, ow)


def _infer_conv(types, attrs) -> TensorType:
    x, w = types[:2]
    require_float(x)
    dtype = same_dtype(types)
    if len(types) == 3 and types[2].shape != (w.shape[0],):
        raise ShapeError(f"bias must have shape ({w.shape[0]},), got {types[2].shape}")
    return TensorType(_out_shape(x.shape, w.shape, attrs), dtype)


def _infer_grad_input(types, attrs) -> TensorType:
    g, w = types
    x_shape = attrs["input_shape"]
    if _out_shape(x_shape, w.shape, attrs) != g.shape:
        raise ShapeError(f"gradient {g.shape} does not match a conv of {x_shape} by {w.shape}")
    return TensorType(x_shape, same_dtype(types))


def _infer_grad_weight(types, attrs) -> TensorType:
    x, g = types
    w_shape = attrs["weight_shape"]
    if _out_shape(x.shape, w_shape, attrs) != g.shape:
        raise ShapeError(f"gradient {g.shape} does not match a conv of {x.shape} by {w_shape}")
    return TensorType(w_shape, same_dtype(types))


def _windows(x, kernel, stride, padding, dilation, out_hw, fill=0.0):
    """(N, C, OH, OW, KH, KW) view of the padded input under every window position."""
    (ph, pw), (dh, dw) = padding, dilation
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    extent = (dh * (kernel[0] - 1) + 1, dw * (kernel[1] - 1) + 1)
    v = sliding_window_view(xp, extent, axis=(2, 3))[:, :, :: stride[0], :: stride[1], ::dh, ::dw]
    return v[:, :, : out_hw[0], : out_hw[1]]


def _group_slices(total, groups):
    size = total // groups
    return [slice(i * size, (i + 1) * size) for i in range(groups)]


def _conv_ref(x, w, b=None, *, stride, padding, dilation, groups):
    attrs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    out_shape = _out_shape(x.shape, w.shape, attrs)
    win = _windows(x, w.shape[2:], stride, padding, dilation, out_shape[2:])
    out = np.empty(out_shape, dtype=x.dtype)
    for cs, ks in zip(_group_slices(x.shape[1], groups), _group_slices(w.shape[0], groups)):
        res = np.tensordot(win[:, cs], w[ks], axes=([1, 4, 5], [1, 2, 3]))
        out[:, ks] = res.transpose(0, 3, 1, 2)
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out


def scatter_windows(contributions, x_shape, kernel, stride, padding, dilation):
    """Sum per-window-position contributions (N, C, KH, KW, OH, OW) back into an input-shaped
    array: the adjoint of ``_windows``. Shared by the conv and pooling gradients."""
    n, c, h, w = x_shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh, ow = contributions.shape[-2:]
    gxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=contributions.dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            rows = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
            cols = slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)
            gxp[:, :, rows, cols] += contributions[:, :, i, j]
    return gxp[:, :, ph : ph + h, pw : pw + w]


def _grad_input_ref(g, w, *, stride, padding, dilation, groups, input_shape):
    kh, kw = w.shape[2:]
    contrib = np.empty((g.shape[0], input_shape[1], kh, kw, *g.shape[2:]), dtype=g.dtype)
    for cs, ks in zip(_group_slices(input_shape[1], groups), _group_slices(w.shape[0], groups)):
        # (N, K, OH, OW) x (K, C, KH, KW) -> (N, OH, OW, C, KH, KW)
        res = np.tensordot(g[:, ks], w[ks], axes=([1], [0]))
        contrib[:, cs] = res.transpose(0, 3, 4, 5, 1, 2)
    return np.ascontiguousarray(
        scatter_windows(contrib, input_shape, (kh, kw), stride, padding, dilation)
    )


def _grad_weight_ref(x, g, *, stride, padding, dilation, groups, weight_shape):
    win = _windows(x, weight_shape[2:], stride, padding, dilation, g.shape[2:])
    gw = np.empty(weight_shape, dtype=x.dtype)
    for cs, ks in zip(_group_slices(x.shape[1], groups), _group_slices(weight_shape[0], groups)):
        gw[ks] = np.tensordot(g[:, ks], win[:, cs], axes=([0, 2, 3], [0, 2, 3]))
    return gw


def _conv_vjp(ctx, g):
    a = {k: ctx.attrs[k] for k in CONV_ATTRS}
    grads = [
        g.builder.emit("conv2d_grad_input", [g, ctx.input(1)], input_shape=ctx.shape(0), **a)
        if ctx.needs(0)
        else None,
        g.builder.emit("conv2d_grad_weight", [ctx.input(0), g], weight_shape=ctx.shape(1), **a)
        if ctx.needs(1)
        else None,
    ]
    if len(ctx.node.inputs) == 3:
        grads.append(g.sum((0, 2, 3)) if ctx.needs(2) else None)
    return grads


def _conv_flops(ins, out, attrs) -> int:
    return 2 * int(np.prod(out.shape)) * int(np.prod(ins[1].shape[1:]))


def _grad_flops(ins, out, attrs) -> int:
    w_shape = ins[1].shape if "input_shape" in attrs else attrs["weight_shape"]
    g_shape = ins[0].shape if "input_shape" in attrs else ins[1].shape
    return 2 * int(np.prod(g_shape)) * int(np.prod(w_shape[1:]))


register(
    OpDef(
        name="conv2d",
        arity=(2, 3),
        infer=_infer_conv,
        reference=_conv_ref,
        vjp=_conv_vjp,
        attrs=CONV_ATTRS,
        normalize=_normalize,
        flops=_conv_flops,
        doc="inputs: x (N,C,H,W), weight (K,C/groups,KH,KW), optional bias (K,)",
    )
)
register(
    OpDef(
        name="conv2d_grad_input",
        arity=(2, 2),
        infer=_infer_grad_input,
        reference=_grad_input_ref,
        attrs={**CONV_ATTRS, "input_shape": ()},
        normalize=_normalize,
        flops=_grad_flops,
        doc="inputs: dL/dy, weight; output dL/dx of shape input_shape",
    )
)
register(
    OpDef(
        name="conv2d_grad_weight",
        arity=(2, 2),
        infer=_infer_grad_weight,
        reference=_grad_weight_ref,
        attrs={**CONV_ATTRS, "weight_shape": ()},
        normalize=_normalize,
        flops=_grad_flops,
        doc="inputs: x, dL/dy; output dL/dweight of shape weight_shape",
    )
)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups: int = 1) -> Value:
    """``y[n,k] = sum_c x[n,c] * w[k,c] + b[k]``: x (N,C,H,W), weight (K,C/groups,KH,KW)."""
    operands = as_values(x, weight) + ([as_value(bias)] if bias is not None else [])
    return operands[0].builder.emit(
        "conv2d", operands, stride=stride, padding=padding, dilation=dilation, groups=groups
    )
