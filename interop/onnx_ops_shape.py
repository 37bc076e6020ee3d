"""ONNX shape and indexing operators: Shape, Reshape, Flatten, Transpose, Squeeze, Unsqueeze,
Concat, Split, Slice, Gather, Expand, Cast, Constant and friends. Shapes are static once the
model is traced, so Shape gives a constant and the arithmetic on it folds with NumPy."""

from __future__ import annotations

import math

import numpy as np
from onnx import helper, numpy_helper

from ..engine import functional as F
from ..graph.ops import broadcast_to
from .onnx_load import MAX_ELEMENTS
from .onnx_ops import OnnxNode, axes_of, const_ints, const_values, converts, is_const


def _shape(v) -> tuple[int, ...]:
    return tuple(v.shape)


def _guard_size(node: OnnxNode, shape) -> tuple[int, ...]:
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape) or math.prod(shape) > MAX_ELEMENTS:
        raise node.refuse(f"makes a tensor of shape {list(shape)}, beyond what numbagrad accepts")
    return shape


@converts("Shape")
def _shape_op(node: OnnxNode, inputs: list) -> list:
    dims = _shape(inputs[0])
    start, end = node.attr("start", 0), node.attr("end", len(dims))
    return [np.array(dims[start:end], np.int64)]


@converts("Size")
def _size(node: OnnxNode, inputs: list) -> list:
    return [np.array(math.prod(_shape(inputs[0])), np.int64)]


@converts("Constant")
def _constant(node: OnnxNode, inputs: list) -> list:
    for key, value in node.attrs.items():
        if key == "value":
            return [numpy_helper.to_array(value)]
        if key in ("value_float", "value_int"):
            return [np.array(value, np.float32 if key == "value_float" else np.int64)]
        if key in ("value_floats", "value_ints"):
            return [np.array(value, np.float32 if key == "value_floats" else np.int64)]
    raise node.refuse("only tensor, float(s) and int(s) values are supported")


@converts("ConstantOfShape")
def _constant_of_shape(node: OnnxNode, inputs: list) -> list:
    shape = _guard_size(node, const_ints(node, inputs[0], "the shape"))
    value = node.attr("value")
    fill = (
        numpy_helper.to_array(value).reshape(-1) if value is not None else np.zeros(1, np.float32)
    )
    return [np.full(shape, fill[0], fill.dtype)]


@converts("Range")
def _range(node: OnnxNode, inputs: list) -> list:
    start, limit, delta = (const_values(node, v, "a bound").reshape(()) for v in inputs)
    count = max(int(np.ceil((limit - start) / delta)), 0)
    _guard_size(node, (count,))
    return [np.arange(count, dtype=start.dtype) * delta + start]


def _target_shape(node: OnnxNode, in_shape, requested: list[int]) -> list[int]:
    """ONNX Reshape's shape: 0 copies the input's dimension (unless allowzero), -1 is inferred."""
    if node.attr("allowzero", 0):
        return requested
    return [in_shape[i] if d == 0 else d for i, d in enumerate(requested)]


@converts("Reshape")
def _reshape(node: OnnxNode, inputs: list) -> list:
    x, shape = inputs
    target = _target_shape(node, _shape(x), const_ints(node, shape, "the shape"))
    return [x.reshape(target) if is_const(x) else F.reshape(x, tuple(target))]


@converts("Flatten")
def _flatten(node: OnnxNode, inputs: list) -> list:
    (x,) = inputs
    axis = int(node.attr("axis", 1)) % (len(_shape(x)) + 1)
    target = (math.prod(_shape(x)[:axis]), math.prod(_shape(x)[axis:]))
    return [x.reshape(target) if is_const(x) else F.reshape(x, target)]


@converts("Transpose")
def _transpose(node: OnnxNode, inputs: list) -> list:
    (x,) = inputs
    perm = node.attr("perm")
    perm = tuple(perm) if perm is not None else tuple(reversed(range(len(_shape(x)))))
    return [np.transpose(x, perm) if is_const(x) else F.transpose(x, perm)]


@converts("Squeeze")
def _squeeze(node: OnnxNode, inputs: list) -> list:
    x, shape = inputs[0], _shape(inputs[0])
    axes = axes_of(node, inputs, 1)
    axes = [a % len(shape) for a in axes] if axes else [i for i, d in enumerate(shape) if d == 1]
    target = tuple(d for i, d in enumerate(shape) if i not in axes)
    return [x.reshape(target) if is_const(x) else F.reshape(x, target)]


@converts("Unsqueeze")
def _unsqueeze(node: OnnxNode, inputs: list) -> list:
    x, target = inputs[0], list(_shape(inputs[0]))
    rank = len(target) + len(axes_of(node, inputs, 1))
    for a in sorted(a % rank for a in axes_of(node, inputs, 1)):
        target.insert(a, 1)
    return [x.reshape(target) if is_const(x) else F.reshape(x, tuple(target))]


@converts("Concat")
def _concat(node: OnnxNode, inputs: list) -> list:
    axis = int(node.attr("axis"))
    parts = [v for v in inputs if math.prod(_shape(v))]  # (torch pads shape lists with [])
    if all(is_const(v) for v in parts):
        return [np.concatenate(parts, axis)]
    return [F.concat(parts, axis % len(_shape(parts[0])))]


@converts("Split")
def _split(node: OnnxNode, inputs: list) -> list:
    x = inputs[0]
    axis = int(node.attr("axis", 0)) % len(_shape(x))
    sizes = axes_of(node, inputs, 1, "split")
    if sizes is None:
        parts = node.attr("num_outputs", node.n_outputs)
        step = -(-_shape(x)[axis] // parts)
        sizes = [min(step, _shape(x)[axis] - i * step) for i in range(parts)]
    if is_const(x):
        return np.split(x, np.cumsum(sizes)[:-1], axis)
    return list(F.split(x, sizes, axis))


def _slice_bounds(node: OnnxNode, inputs: list, shape):
    starts, ends = const_ints(node, inputs[1], "starts"), const_ints(node, inputs[2], "ends")
    axes = axes_of(node, inputs, 3) or list(range(len(starts)))
    has_steps = len(inputs) > 4 and inputs[4] is not None
    steps = const_ints(node, inputs[4], "steps") if has_steps else [1] * len(starts)
    return [(a % len(shape), *slice(s, e, k).indices(shape[a % len(shape)]), k)[:4]
            for s, e, a, k in zip(starts, ends, axes, steps)]  # fmt: skip


@converts("Slice")
def _slice(node: OnnxNode, inputs: list) -> list:
    x = inputs[0]
    bounds = _slice_bounds(node, inputs, _shape(x))
    if is_const(x):
        index = [slice(None)] * x.ndim
        for axis, start, stop, step in bounds:
            index[axis] = slice(start, stop, step)
        return [x[tuple(index)]]
    for axis, start, stop, step in bounds:
        if step != 1:
            raise node.refuse("a slice with a step other than 1 is not supported")
        if (start, stop) != (0, _shape(x)[axis]):
            x = F.slice_(x, start, max(stop, start), axis)
    return [x]


@converts("Gather")
def _gather(node: OnnxNode, inputs: list) -> list:
    data, indices = inputs
    axis = int(node.attr("axis", 0)) % len(_shape(data))
    indices = const_values(node, indices, "the indices")
    if not np.issubdtype(indices.dtype, np.integer):
        raise node.refuse(f"its indices must be integers, not {indices.dtype}")
    size = _shape(data)[axis]
    if is_const(data):
        return [np.take(data, indices, axis)]
    flat = [int(i) % size for i in indices.reshape(-1)]
    if len(flat) == 1:  # one index: a slice, reshaped to the index's rank
        picked = F.slice_(data, flat[0], flat[0] + 1, axis)
    else:
        picked = F.concat([F.slice_(data, i, i + 1, axis) for i in flat], axis)
    shape = _shape(data)
    return [F.reshape(picked, (*shape[:axis], *indices.shape, *shape[axis + 1 :]))]


@converts("Expand")
def _expand(node: OnnxNode, inputs: list) -> list:
    x, shape = inputs
    target = np.broadcast_shapes(_shape(x), tuple(const_ints(node, shape, "the shape")))
    _guard_size(node, target)
    if is_const(x):
        return [np.broadcast_to(x, target).copy()]
    return [x if target == _shape(x) else broadcast_to(x, target)]


@converts("Tile")
def _tile(node: OnnxNode, inputs: list) -> list:
    x, repeats = inputs
    repeats = const_ints(node, repeats, "the repeats")
    if is_const(x):
        _guard_size(node, [d * r for d, r in zip(x.shape, repeats)])
        return [np.tile(x, repeats)]
    for axis, r in enumerate(repeats):
        x = F.concat([x] * r, axis) if r > 1 else x
    return [x]


@converts("Cast")
def _cast(node: OnnxNode, inputs: list) -> list:
    (x,) = inputs
    dtype = helper.tensor_dtype_to_np_dtype(int(node.attr("to")))
    if is_const(x):
        return [x.astype(dtype)]
    name = str(np.dtype(dtype))
    return [x if name == x.dtype else F.cast(x, name)]


@converts("CastLike")
def _cast_like(node: OnnxNode, inputs: list) -> list:
    x, like = inputs
    if is_const(x):
        return [x.astype(like.dtype)]
    return [x if x.dtype == str(like.dtype) else F.cast(x, str(like.dtype))]
