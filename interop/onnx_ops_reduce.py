"""ONNX reductions: ReduceMean/Sum/SumSquare/L1/L2 through sum and mean, ReduceMax/Min and
ArgMax/ArgMin as a max pool (or its indices) whose one window spans the reduced axes, so they
have max_pool2d's kernels and gradient on every backend."""

from __future__ import annotations

import math

import numpy as np

from ..engine import functional as F
from ..graph.ops import max_pool2d_indices
from .onnx_ops import OnnxNode, axes_of, converts, is_const


def _windows(x, axes: tuple[int, ...]):
    """x as (rows, 1, 1, k): the kept axes' elements as rows, the reduced ones as one window."""
    kept = tuple(a for a in range(x.ndim) if a not in axes)
    if kept + axes != tuple(range(x.ndim)):
        x = F.transpose(x, kept + axes)
    k = math.prod(x.shape[len(kept) :])
    return F.reshape(x, (math.prod(x.shape[: len(kept)]), 1, 1, k)), k


def _kept_shape(shape, axes, keep: bool) -> tuple[int, ...]:
    return tuple(1 if a in axes else d for a, d in enumerate(shape) if keep or a not in axes)


def _max(x, axes: tuple[int, ...], keepdims: bool):
    rows, k = _windows(x, axes)
    return F.reshape(F.max_pool2d(rows, (1, k)), _kept_shape(x.shape, axes, keepdims))


def _min(x, axes: tuple[int, ...], keepdims: bool):
    return -_max(-x, axes, keepdims)


# op -> (traced function (x, axes, keepdims), NumPy function)
_REDUCTIONS = {
    "ReduceMean": (F.mean, np.mean),
    "ReduceSum": (F.sum, np.sum),
    "ReduceMax": (_max, np.max),
    "ReduceMin": (_min, np.min),
    "ReduceSumSquare": (lambda x, a, k: F.sum(x * x, a, keepdims=k),
                        lambda x, axis, keepdims: np.sum(x * x, axis, keepdims=keepdims)),
    "ReduceL1": (lambda x, a, k: F.sum(F.abs(x), a, keepdims=k),
                 lambda x, axis, keepdims: np.sum(np.abs(x), axis, keepdims=keepdims)),
    "ReduceL2": (lambda x, a, k: F.sqrt(F.sum(x * x, a, keepdims=k)),
                 lambda x, axis, keepdims: np.sqrt(np.sum(x * x, axis, keepdims=keepdims))),
}  # fmt: skip


@converts(*_REDUCTIONS)
def reduce(node: OnnxNode, inputs: list) -> list:
    x = inputs[0]
    axes = axes_of(node, inputs, 1)
    keep = bool(node.attr("keepdims", 1))
    if not axes:
        if node.attr("noop_with_empty_axes", 0):
            return [x]
        axes = list(range(x.ndim))
    axes = tuple(sorted(a % x.ndim for a in axes))
    fn, numpy_fn = _REDUCTIONS[node.op]
    if is_const(x):
        return [np.asarray(numpy_fn(x, axis=axes, keepdims=keep), x.dtype)]
    return [fn(x, axes, keep)]


@converts("ArgMax", "ArgMin")
def arg_max_min(node: OnnxNode, inputs: list) -> list:
    """int64 positions of the first maximum (minimum) along ``axis``."""
    (x,) = inputs
    axis, keep = int(node.attr("axis", 0)) % x.ndim, bool(node.attr("keepdims", 1))
    if node.attr("select_last_index", 0):
        raise node.refuse("select_last_index=1 is not supported")
    if is_const(x):
        found = (np.argmax if node.op == "ArgMax" else np.argmin)(x, axis, keepdims=keep)
        return [found.astype(np.int64)]
    rows, k = _windows(x if node.op == "ArgMax" else -x, (axis,))
    return [F.reshape(max_pool2d_indices(rows, (1, k)), _kept_shape(x.shape, (axis,), keep))]
