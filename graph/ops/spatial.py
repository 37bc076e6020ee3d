"""Spatial ops for decoders and segmentation nets (NCHW, PyTorch semantics):

- ``conv_transpose2d``: the adjoint of conv2d, i.e. what ``conv2d_grad_input`` computes, as a
  differentiable forward op with ``output_padding`` (backends reuse the grad-input kernels);
- ``max_pool2d_indices``: the argmax of each max-pooling window as a flat index into its
  (H, W) plane (int64, as ``torch.max_pool2d(..., return_indices=True)``);
- ``max_unpool2d``: scatter pooled values back to those indices, zeros elsewhere;
- ``upsample2d``: nearest or bilinear (``align_corners=False``) upsampling by integer factors.
"""

from __future__ import annotations

import numpy as np

from ...errors import DTypeError, OpError, ShapeError
from ..builder import Value, as_value, as_values
from .common import pair, require_float, same_dtype
from .conv import CONV_ATTRS, _grad_input_ref, _out_shape
from .conv import _normalize as _conv_normalize
from .pool import MAX_ATTRS, _infer_pool, _pool_out, emit_window_op, first_max_taps, window_flops
from .pool import _normalize as _pool_normalize
from .registry import OpDef, TensorType, register

# --- conv_transpose2d -----------------------------------------------------------------------


def _normalize_transpose(attrs: dict) -> dict:
    attrs = _conv_normalize(attrs)
    attrs["output_padding"] = pair(attrs["output_padding"], "output_padding", 0)
    for op_, s in zip(attrs["output_padding"], attrs["stride"]):
        if op_ >= s:
            raise OpError(
                f"output_padding {attrs['output_padding']} must be smaller than the stride "
                f"{attrs['stride']}"
            )
    return attrs


def conv_transpose_shape(x_shape, w_shape, attrs) -> tuple[int, int, int, int]:
    """(N, C_out, H_out, W_out) of a transposed conv of x (N, C_in, H, W) by w (C_in,
    C_out/groups, KH, KW): ``(H - 1) * stride - 2 * padding + dilation * (KH - 1) +
    output_padding + 1`` per axis, as PyTorch."""
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ShapeError(
            f"input must be 4-d (N, C, H, W) and weight 4-d (in, out/groups, kh, kw), got "
            f"{tuple(x_shape)} and {tuple(w_shape)}"
        )
    groups = attrs["groups"]
    if x_shape[1] != w_shape[0] or w_shape[0] % groups:
        raise ShapeError(
            f"input has {x_shape[1]} channels but the weight {tuple(w_shape)} expects "
            f"{w_shape[0]} (a multiple of groups={groups})"
        )
    hw = []
    for i in range(2):
        size = (x_shape[2 + i] - 1) * attrs["stride"][i] - 2 * attrs["padding"][i]
        size += attrs["dilation"][i] * (w_shape[2 + i] - 1) + attrs["output_padding"][i] + 1
        if size <= 0:
            raise ShapeError(f"the output would be empty ({size} rows/cols) for input {x_shape}")
        hw.append(size)
    out = (x_shape[0], w_shape[1] * groups, hw[0], hw[1])
    conv_attrs = {k: attrs[k] for k in CONV_ATTRS}
    if _out_shape(out, w_shape, conv_attrs) != tuple(x_shape):  # the adjoint must line up
        raise ShapeError(f"no conv of {out} by {tuple(w_shape)} gives {tuple(x_shape)}")
    return out


def _infer_transpose(types, attrs) -> TensorType:
    x, w = types
    require_float(x)
    return TensorType(conv_transpose_shape(x.shape, w.shape, attrs), same_dtype(types))


def _conv_attrs(attrs) -> dict:
    return {k: attrs[k] for k in CONV_ATTRS}


def _transpose_ref(x, w, *, output_padding, **conv):
    out = conv_transpose_shape(x.shape, w.shape, {**conv, "output_padding": output_padding})
    return _grad_input_ref(x, w, input_shape=out, **conv)


def _transpose_vjp(ctx, g):
    a = _conv_attrs(ctx.attrs)
    b = g.builder
    return [
        b.emit("conv2d", [g, ctx.input(1)], **a) if ctx.needs(0) else None,
        b.emit("conv2d_grad_weight", [g, ctx.input(0)], weight_shape=ctx.shape(1), **a)
        if ctx.needs(1)
        else None,
    ]


register(
    OpDef(
        name="conv_transpose2d",
        arity=(2, 2),
        infer=_infer_transpose,
        reference=_transpose_ref,
        vjp=_transpose_vjp,
        attrs={**CONV_ATTRS, "output_padding": (0, 0)},
        normalize=_normalize_transpose,
        flops=lambda ins, out, a: 2 * int(np.prod(ins[0].shape)) * int(np.prod(ins[1].shape[1:])),
        doc="inputs: x (N, C_in, H, W), weight (C_in, C_out/groups, KH, KW); the adjoint of "
        "conv2d (its grad_input), as torch.nn.functional.conv_transpose2d without bias",
    )
)


# --- max-pooling indices, unpooling ---------------------------------------------------------


def _infer_indices(types, attrs) -> TensorType:
    return TensorType(_infer_pool(types, attrs).shape, "int64")


def _indices_ref(x, **attrs):
    """Flat (H*W) index of each window's first maximum, as PyTorch's return_indices."""
    kernel, stride, padding, dilation = (attrs[k] for k in MAX_ATTRS)
    oh, ow = _pool_out(x.shape, attrs)[2:]
    i, j = np.divmod(first_max_taps(x, attrs, (oh, ow)), kernel[1])
    w = x.shape[3]
    rows = np.arange(oh).reshape(-1, 1) * stride[0] - padding[0] + i * dilation[0]
    cols = np.arange(ow) * stride[1] - padding[1] + j * dilation[1]
    return (rows * w + cols).astype(np.int64)


register(
    OpDef(
        name="max_pool2d_indices",
        arity=(1, 1),
        infer=_infer_indices,
        reference=_indices_ref,
        vjp=lambda ctx, g: [None],  # piecewise constant in x: no gradient, like sign
        attrs=MAX_ATTRS,
        normalize=_pool_normalize,
        flops=window_flops,
        doc="input x (N, C, H, W); output int64 (N, C, OH, OW): the flat index in the (H, W) "
        "plane of each max_pool2d window's first maximum",
    )
)


def _check_indices(indices: np.ndarray, plane: int) -> None:
    if indices.size and (indices.min() < 0 or indices.max() >= plane):
        raise ShapeError(
            f"max_unpool2d: indices must lie in [0, {plane}) (a flat index into the output "
            f"plane), got values in [{indices.min()}, {indices.max()}]"
        )


def _infer_unpool(types, attrs) -> TensorType:
    y, idx = types
    require_float(y)
    if idx.dtype != "int64":
        raise DTypeError(f"indices must be int64, not {idx.dtype}")
    if len(y.shape) != 4 or y.shape != idx.shape:
        raise ShapeError(f"input and indices must be 4-d of one shape, got {y.shape}, {idx.shape}")
    return TensorType((*y.shape[:2], *attrs["output_size"]), y.dtype)


def _unpool_ref(y, idx, *, output_size):
    n, c = y.shape[:2]
    plane = output_size[0] * output_size[1]
    _check_indices(idx, plane)
    out = np.zeros((n * c, plane), dtype=y.dtype)
    rows = np.arange(n * c).reshape(-1, 1)
    out[rows, idx.reshape(n * c, -1)] = y.reshape(n * c, -1)
    return out.reshape(n, c, *output_size)


def _infer_unpool_grad(types, attrs) -> TensorType:
    g, idx = types
    if idx.dtype != "int64" or len(g.shape) != 4 or g.shape[:2] != idx.shape[:2]:
        raise ShapeError(f"gradient {g.shape} and int64 indices {idx.shape} do not match")
    return TensorType(idx.shape, g.dtype)


def _unpool_grad_ref(g, idx):
    n, c = g.shape[:2]
    _check_indices(idx, g.shape[2] * g.shape[3])
    flat_g = g.reshape(n * c, -1)
    return np.take_along_axis(flat_g, idx.reshape(n * c, -1), axis=1).reshape(idx.shape)


def _normalize_unpool(attrs: dict) -> dict:
    return {"output_size": pair(attrs["output_size"], "output_size", 1)}


register(
    OpDef(
        name="max_unpool2d",
        arity=(2, 2),
        infer=_infer_unpool,
        reference=_unpool_ref,
        vjp=lambda ctx, g: [
            g.builder.emit("max_unpool2d_grad", [g, ctx.input(1)]) if ctx.needs(0) else None,
            None,
        ],
        attrs={"output_size": (1, 1)},
        normalize=_normalize_unpool,
        flops=lambda ins, out, a: 0,
        doc="inputs: y (N, C, h, w), int64 indices (N, C, h, w) into the output plane; output "
        "(N, C, *output_size), zeros except out[n, c].flat[indices] = y (as torch)",
    )
)
register(
    OpDef(
        name="max_unpool2d_grad",
        arity=(2, 2),
        infer=_infer_unpool_grad,
        reference=_unpool_grad_ref,
        flops=lambda ins, out, a: 0,
        doc="inputs: dL/dout (N, C, H, W), indices; output dL/dy = the gradient gathered at "
        "the indices (as torch, also where an index repeats)",
    )
)


# --- upsample2d -----------------------------------------------------------------------------

MODES = ("nearest", "bilinear")


def interpolation_taps(n_in: int, scale: int, mode: str):
    """Per output position along one axis, the two source positions and their weights:
    ``(i0, i1, w0, w1)``, arrays of length ``n_in * scale`` (int64, int64, float64, float64).
    Bilinear follows PyTorch's ``align_corners=False``: source ``(o + 0.5) / scale - 0.5``,
    clamped at 0, its right neighbour clamped to the last position."""
    o = np.arange(n_in * scale)
    if mode == "nearest":
        i0 = o // scale
        return i0, i0.copy(), np.ones(len(o)), np.zeros(len(o))
    src = np.maximum((o + 0.5) / scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    w1 = src - i0
    return i0, np.minimum(i0 + 1, n_in - 1), 1.0 - w1, w1


def _normalize_upsample(attrs: dict) -> dict:
    attrs = dict(attrs)
    if attrs["mode"] not in MODES:
        raise OpError(f"upsample mode must be one of {MODES}, not {attrs['mode']!r}")
    attrs["scale"] = pair(attrs["scale"], "scale_factor", 1)
    if "input_shape" in attrs:
        attrs["input_shape"] = tuple(int(d) for d in attrs["input_shape"])
    return attrs


def _infer_upsample(types, attrs) -> TensorType:
    (x,) = types
    require_float(x)
    if len(x.shape) != 4:
        raise ShapeError(f"input must be 4-d (N, C, H, W), got shape {x.shape}")
    sh, sw = attrs["scale"]
    return TensorType((*x.shape[:2], x.shape[2] * sh, x.shape[3] * sw), x.dtype)


def _infer_upsample_grad(types, attrs) -> TensorType:
    (g,) = types
    x_shape = attrs["input_shape"]
    if _infer_upsample([TensorType(x_shape, g.dtype)], attrs).shape != g.shape:
        raise ShapeError(f"gradient {g.shape} does not match upsampling {x_shape}")
    return TensorType(x_shape, g.dtype)


# The references read each output's taps, as torch does, rather than multiplying by the
# interpolation matrices: a zero weight times a NaN or Inf elsewhere in the row would be NaN.


def _taps(h, w, attrs) -> tuple[list, list]:
    """Per axis, the (positions, weights) of each tap in use: one for nearest, two for bilinear."""
    mode, (sh, sw) = attrs["mode"], attrs["scale"]
    per_axis = []
    for n_in, scale in ((h, sh), (w, sw)):
        i0, i1, w0, w1 = interpolation_taps(n_in, scale, mode)
        per_axis.append([(i0, w0)] if mode == "nearest" else [(i0, w0), (i1, w1)])
    return per_axis[0], per_axis[1]


def _upsample_ref(x, **attrs):
    rows, cols = _taps(*x.shape[2:], attrs)
    if attrs["mode"] == "nearest":
        return np.ascontiguousarray(x[:, :, rows[0][0]][..., cols[0][0]])
    out = 0.0
    for i, wi in rows:  # as torch: each row's two columns first, then the two rows
        xr = x[:, :, i]
        out = out + wi[:, None] * sum(xr[..., j] * wj for j, wj in cols)
    return out.astype(x.dtype)


def _upsample_grad_ref(g, *, input_shape, **attrs):
    """Each output's gradient times each tap's weight, added at the tap (zero weights too)."""
    rows, cols = _taps(*input_shape[2:], attrs)
    gx = np.zeros(input_shape)
    for i, wi in rows:
        for j, wj in cols:
            share = g if attrs["mode"] == "nearest" else (wi[:, None] * wj) * g
            np.add.at(gx, (slice(None), slice(None), i[:, None], j), share)
    return gx.astype(g.dtype)


UPSAMPLE_ATTRS = {"mode": "nearest", "scale": (2, 2)}

register(
    OpDef(
        name="upsample2d",
        arity=(1, 1),
        infer=_infer_upsample,
        reference=_upsample_ref,
        vjp=lambda ctx, g: [
            g.builder.emit("upsample2d_grad", [g], input_shape=ctx.shape(0), **ctx.attrs)
        ],
        attrs=UPSAMPLE_ATTRS,
        normalize=_normalize_upsample,
        flops=lambda ins, out, a: int(np.prod(out.shape)) * (1 if a["mode"] == "nearest" else 8),
        doc="input x (N, C, H, W); output (N, C, H*sh, W*sw): nearest or bilinear "
        "(align_corners=False) upsampling by integer scale factors",
    )
)
register(
    OpDef(
        name="upsample2d_grad",
        arity=(1, 1),
        infer=_infer_upsample_grad,
        reference=_upsample_grad_ref,
        attrs={**UPSAMPLE_ATTRS, "input_shape": ()},
        normalize=_normalize_upsample,
        doc="input dL/dy; output dL/dx of shape input_shape (each input sums the outputs it "
        "feeds, by their interpolation weights)",
    )
)


# --- the op API -----------------------------------------------------------------------------


def conv_transpose2d(
    x, weight, bias=None, stride=1, padding=0, output_padding=0, groups: int = 1, dilation=1
) -> Value:
    """Transposed convolution (PyTorch's argument order): x (N, C_in, H, W), weight (C_in,
    C_out/groups, KH, KW), bias (C_out,) -> (N, C_out, H_out, W_out)."""
    x, w = as_values(x, weight)
    y = x.builder.emit(
        "conv_transpose2d",
        [x, w],
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        groups=groups,
        dilation=dilation,
    )
    if bias is None:
        return y
    return y + as_value(bias).reshape((1, y.shape[1], 1, 1))


def max_pool2d_indices(x, kernel_size, stride=None, padding=0, dilation=1) -> Value:
    """The int64 flat (H*W) index of each max_pool2d window's first maximum."""
    return emit_window_op(
        "max_pool2d_indices", x, kernel_size, stride, padding=padding, dilation=dilation
    )


def max_unpool2d(x, indices, kernel_size, stride=None, padding=0, output_size=None) -> Value:
    """Inverse of max pooling (as ``torch.nn.functional.max_unpool2d``): x (N, C, h, w) goes to
    ``indices`` in planes of ``output_size`` (default ``(h - 1) * stride - 2 * padding +
    kernel``), zeros elsewhere."""
    x, indices = as_value(x), as_value(indices)
    if output_size is None:
        k, s = pair(kernel_size, "kernel_size", 1), pair(stride or kernel_size, "stride", 1)
        p = pair(padding, "padding", 0)
        output_size = tuple((x.shape[2 + i] - 1) * s[i] - 2 * p[i] + k[i] for i in range(2))
    else:
        output_size = tuple(output_size)[-2:]
    return x.builder.emit("max_unpool2d", [x, indices], output_size=output_size)


def upsample2d(x, scale_factor=2, mode: str = "nearest") -> Value:
    """Nearest or bilinear (``align_corners=False``) upsampling of x (N, C, H, W) by integer
    factors (an int or a pair)."""
    x = as_value(x)
    return x.builder.emit("upsample2d", [x], mode=mode, scale=scale_factor)
