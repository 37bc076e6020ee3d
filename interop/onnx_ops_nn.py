"""ONNX layer operators: Conv, ConvTranspose, the pools, Gemm/MatMul, BatchNormalization (as
a function; onnx_layers.py makes trainable BatchNorm layers), LRN, LayerNormalization,
InstanceNormalization, GroupNormalization and Resize. numbagrad's windows pad the same amount
on both sides; ONNX may pad unevenly (an ``auto_pad`` of SAME_*, pooling with ``ceil_mode``),
and then the extra rows and columns are joined on with ``concat`` (zeros for convolutions,
-inf for max pooling)."""

from __future__ import annotations

import math

import numpy as np

from ..engine import functional as F
from ..graph.ops import broadcast_to, sqrt
from .onnx_ops import OnnxNode, const_values, converts, is_const


def _window(node: OnnxNode, x_shape, kernel):
    """(strides, dilations, [(begin, end) pad per spatial axis]) of a windowed node."""
    n = len(kernel)
    strides = list(node.attr("strides", [1] * n))
    dilations = list(node.attr("dilations", [1] * n))
    auto = node.attr("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for size, k, s, d in zip(x_shape[2:], kernel, strides, dilations):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            pads.append((small, large) if auto == "SAME_UPPER" else (large, small))
    elif auto == "VALID":
        pads = [(0, 0)] * n
    else:
        flat = list(node.attr("pads", [0] * 2 * n))
        pads = list(zip(flat[:n], flat[n:]))
    return strides, dilations, pads


def _ceil_extra(node: OnnxNode, x_shape, kernel, strides, dilations, pads):
    """Pads grown at the end so that floor division gives ceil_mode's output size (PyTorch's
    rule: the last window must start inside the input or its left padding)."""
    if not node.attr("ceil_mode", 0):
        return pads
    grown = []
    for size, k, s, d, (lo, hi) in zip(x_shape[2:], kernel, strides, dilations, pads):
        extent = (k - 1) * d + 1
        out = -(-(size + lo + hi - extent) // s) + 1
        if (out - 1) * s >= size + lo:
            out -= 1
        grown.append((lo, max(hi, (out - 1) * s + extent - size - lo)))
    return grown


def pad_spatial(x, pads, value: float):
    """x with ``pads`` [(begin, end) per axis from axis 2] of ``value`` joined on."""
    for axis, (lo, hi) in enumerate(pads, start=2):
        if not (lo or hi):
            continue
        blocks = [_filled(x, axis, n, value) for n in (lo, hi)]
        x = F.concat(([blocks[0]] if lo else []) + [x] + ([blocks[1]] if hi else []), axis)
    return x


def _filled(x, axis: int, count: int, value: float) -> np.ndarray:
    shape = list(x.shape)
    shape[axis] = count
    return np.full(shape, value, x.dtype)


def _even_pads(pads, limit=None):
    """(padding numbagrad applies on both sides, at most ``limit`` per axis where given; the
    pads still to join on explicitly)."""
    limit = limit or [max(lo, hi) for lo, hi in pads]
    even = tuple(min(lo, hi, lim) for (lo, hi), lim in zip(pads, limit))
    rest = [(lo - e, hi - e) for (lo, hi), e in zip(pads, even)]
    return even, rest


def _as_2d(x, *weights):
    """1-d windows over (N, C, L) run as 2-d ones of height 1: (x, weights, the 1-d shape or
    None)."""
    if x.ndim != 3:
        return x, weights, None
    reshaped = [w if w is None else w.reshape((*w.shape[:2], 1, w.shape[2])) for w in weights]
    return F.reshape(x, (x.shape[0], x.shape[1], 1, x.shape[2])), reshaped, x.shape


def _back_to_1d(y, shape_1d):
    return y if shape_1d is None else F.reshape(y, (y.shape[0], y.shape[1], y.shape[3]))


@converts("Conv")
def conv(node: OnnxNode, inputs: list) -> list:
    x, w, b = (inputs + [None])[:3]
    if x.ndim not in (3, 4):
        raise node.refuse(f"only 1-d and 2-d convolutions are supported, input {x.shape}")
    strides, dilations, pads = _window(node, x.shape, w.shape[2:])
    x, (w,), shape_1d = _as_2d(x, w)
    if shape_1d is not None:
        strides, dilations, pads = [1, *strides], [1, *dilations], [(0, 0), *pads]
    even, rest = _even_pads(pads)
    x = pad_spatial(x, rest, 0.0)
    y = F.conv2d(x, w, b, tuple(strides), even, tuple(dilations), int(node.attr("group", 1)))
    return [_back_to_1d(y, shape_1d)]


@converts("ConvTranspose")
def conv_transpose(node: OnnxNode, inputs: list) -> list:
    x, w, b = (inputs + [None])[:3]
    if (
        x.ndim != 4
        or node.attr("output_shape") is not None
        or node.attr("auto_pad", "NOTSET") != "NOTSET"
    ):
        raise node.refuse("only 2-d transposed convolutions with explicit pads are supported")
    strides, dilations, pads = _window(node, x.shape, w.shape[2:])
    even, rest = _even_pads(pads)
    out_pad = tuple(node.attr("output_padding", [0, 0]))
    y = F.conv_transpose2d(x, w, None, tuple(strides), even, out_pad,
                           int(node.attr("group", 1)), tuple(dilations))  # fmt: skip
    for axis, (lo, hi) in enumerate(rest, start=2):
        y = F.slice_(y, lo, y.shape[axis] - hi, axis)
    return [y if b is None else y + F.reshape(b, (1, -1, 1, 1))]


@converts("MaxPool")
def max_pool(node: OnnxNode, inputs: list) -> list:
    if node.extra_outputs_used:
        raise node.refuse("its Indices output is not supported")
    x, _, shape_1d = _as_2d(inputs[0])
    kernel = list(node.attr("kernel_shape"))
    strides, dilations, pads = _window(node, inputs[0].shape, kernel)
    pads = _ceil_extra(node, inputs[0].shape, kernel, strides, dilations, pads)
    if shape_1d is not None:
        kernel, strides, dilations, pads = (
            [1, *kernel],
            [1, *strides],
            [1, *dilations],
            [(0, 0), *pads],
        )
    even, rest = _even_pads(pads, [k // 2 for k in kernel])
    x = pad_spatial(x, rest, -np.inf)
    y = F.max_pool2d(x, tuple(kernel), tuple(strides), even, tuple(dilations))
    return [_back_to_1d(y, shape_1d)]


@converts("AveragePool")
def average_pool(node: OnnxNode, inputs: list) -> list:
    x, _, shape_1d = _as_2d(inputs[0])
    kernel = list(node.attr("kernel_shape"))
    strides, dilations, pads = _window(node, inputs[0].shape, kernel)
    include = bool(node.attr("count_include_pad", 0))
    grown = _ceil_extra(node, inputs[0].shape, kernel, strides, dilations, pads)
    if grown != pads or any(d != 1 for d in dilations):
        raise node.refuse("ceil_mode windows past the input and dilations are not supported")
    if shape_1d is not None:
        kernel, strides, pads = [1, *kernel], [1, *strides], [(0, 0), *pads]
    even, rest = _even_pads(pads, [k // 2 for k in kernel])
    if any(lo or hi for lo, hi in rest):
        if not include:
            raise node.refuse("uneven pads are supported with count_include_pad=1 only")
        x = pad_spatial(x, rest, 0.0)
    y = F.avg_pool2d(x, tuple(kernel), tuple(strides), even, include)
    return [_back_to_1d(y, shape_1d)]


@converts("GlobalMaxPool")
def global_max_pool(node: OnnxNode, inputs: list) -> list:
    (x,) = inputs
    if x.ndim != 4:
        raise node.refuse(f"only (N, C, H, W) inputs are supported, got {x.shape}")
    return [F.max_pool2d(x, tuple(x.shape[2:]))]


@converts("GlobalAveragePool")
def global_average_pool(node: OnnxNode, inputs: list) -> list:
    (x,) = inputs
    return [F.mean(x, tuple(range(2, x.ndim)), keepdims=True)]


@converts("Gemm")
def gemm(node: OnnxNode, inputs: list) -> list:
    a, b, c = (inputs + [None])[:3]
    y = F.matmul(a, b, bool(node.attr("transA", 0)), bool(node.attr("transB", 0)))
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    y = y if alpha == 1.0 else y * alpha
    if c is None:
        return [y]
    return [y + (c if beta == 1.0 else c * beta)]


@converts("MatMul")
def matmul(node: OnnxNode, inputs: list) -> list:
    a, b = inputs
    if is_const(a) and is_const(b):
        return [np.matmul(a, b)]
    if b.ndim == 2 and a.ndim != 2:  # (..., K) @ (K, M): one 2-d product over the rows
        rows = F.reshape(a, (math.prod(a.shape[:-1]), a.shape[-1]))
        return [F.reshape(F.matmul(rows, b), (*a.shape[:-1], b.shape[1]))]
    if a.ndim == b.ndim == 2:
        return [F.matmul(a, b)]
    if min(a.ndim, b.ndim) < 2:
        raise node.refuse(f"1-d operands are not supported ({a.shape} @ {b.shape})")
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a3, b3 = (_batched(v, batch) for v in (a, b))
    y = F.matmul(a3, b3)
    return [F.reshape(y, (*batch, a.shape[-2], b.shape[-1]))]


def _batched(v, batch):
    v = broadcast_to(v, (*batch, *v.shape[-2:])) if tuple(v.shape[:-2]) != batch else v
    return F.reshape(v, (math.prod(batch), *v.shape[-2:]))


@converts("BatchNormalization")
def batch_normalization(node: OnnxNode, inputs: list) -> list:
    """Inference BatchNorm with computed (not initializer) statistics."""
    x, scale, bias, mean, var = inputs[:5]
    if node.extra_outputs_used:
        raise node.refuse("training_mode=1 (batch statistics as outputs) is not supported")
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    eps = float(node.attr("epsilon", 1e-5))
    inv_std = 1.0 / sqrt(F.reshape(var, shape) + eps) if not is_const(var) else (
        (1.0 / np.sqrt(var.reshape(shape) + eps)).astype(var.dtype))  # fmt: skip
    return [F.batch_norm(x, F.reshape(mean, shape), inv_std, F.reshape(scale, shape),
                         F.reshape(bias, shape))]  # fmt: skip


@converts("LRN")
def lrn(node: OnnxNode, inputs: list) -> list:
    alpha, beta = float(node.attr("alpha", 1e-4)), float(node.attr("beta", 0.75))
    size, bias = int(node.attr("size")), float(node.attr("bias", 1.0))
    return [F.local_response_norm(inputs[0], size, alpha, beta, bias)]


@converts("LayerNormalization")
def layer_normalization(node: OnnxNode, inputs: list) -> list:
    if node.extra_outputs_used:
        raise node.refuse("its Mean and InvStdDev outputs are not supported")
    x, scale, bias = (inputs + [None])[:3]
    axis = int(node.attr("axis", -1)) % x.ndim
    return [F.layer_norm(x, tuple(x.shape[axis:]), scale, bias, float(node.attr("epsilon", 1e-5)))]


@converts("InstanceNormalization")
def instance_normalization(node: OnnxNode, inputs: list) -> list:
    x, scale, bias = inputs
    return [_group_norm(x, x.shape[1], scale, bias, float(node.attr("epsilon", 1e-5)))]


@converts("GroupNormalization")
def group_normalization(node: OnnxNode, inputs: list) -> list:
    """Opset 21's, with per-channel scale and bias (onnx.checker refuses opset 18's per-group
    version as deprecated, so no model that loads has it)."""
    x, scale, bias = inputs
    groups = int(node.attr("num_groups"))
    return [_group_norm(x, groups, scale, bias, float(node.attr("epsilon", 1e-5)))]


def _group_norm(x, groups: int, scale, bias, eps: float):
    """group_norm with its affine terms applied here: they may be constants (the legacy
    exporter's GroupNorm feeds InstanceNormalization ones and zeros), which group_norm's
    operands may not be."""
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    scale, bias = (v.reshape(shape) if is_const(v) else F.reshape(v, shape) for v in (scale, bias))
    return F.group_norm(x, groups, None, None, eps) * scale + bias


def _upsample_mode(node: OnnxNode) -> str | None:
    """numbagrad's upsample2d mode for the node's interpolation, None where none matches
    (with integer scales, nearest picks input o // scale under every rounding convention)."""
    mode = node.attr("mode", "nearest")
    transform = node.attr("coordinate_transformation_mode", "half_pixel")
    if mode == "nearest" and transform not in ("align_corners", "tf_crop_and_resize"):
        return "nearest"
    if mode == "linear" and transform in ("half_pixel", "pytorch_half_pixel"):
        return "bilinear"
    return None


@converts("Resize")
def resize(node: OnnxNode, inputs: list) -> list:
    """Integer upsampling of H and W, nearest or bilinear (PyTorch's align_corners=False)."""
    x = inputs[0]  # then roi, scales, sizes
    scales = next((v for v in inputs[2:4] if v is not None and v.size), None)
    scales = const_values(node, scales, "the scales or sizes").astype(np.float64)
    if len(inputs) > 3 and inputs[3] is not None and inputs[3].size:
        scales = scales / np.asarray(x.shape)  # sizes were given
    mode = _upsample_mode(node)
    integer = len(scales) == 4 and scales[2] == scales[3] == int(scales[2]) >= 1
    if x.ndim != 4 or mode is None or list(scales[:2]) != [1, 1] or not integer:
        raise node.refuse(
            f"only equal integer scales of H and W, nearest or linear (half_pixel), are "
            f"supported; got scales {list(scales)}, mode {node.attr('mode', 'nearest')!r}"
        )
    return [F.upsample2d(x, int(scales[2]), mode)]
