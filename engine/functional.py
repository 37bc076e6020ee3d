"""The functional op API (``numbagrad.functional``, like ``torch.nn.functional``)."""

from __future__ import annotations

from ..graph.builder import as_values
from ..graph.ops import (
    abs,
    add,
    avg_pool2d,
    conv2d,
    cross_entropy,
    div,
    exp,
    flatten,
    log,
    log_softmax,
    matmul,
    max_pool2d,
    mean,
    mse_loss,
    mul,
    neg,
    relu,
    reshape,
    sigmoid,
    sign,
    softmax,
    sqrt,
    sub,
    sum,
    tanh,
    transpose,
)


def linear(x, weight, bias=None):
    """``x @ weight.T + bias`` for x (N, in), weight (out, in), bias (out,)."""
    y = matmul(*as_values(x, weight), trans_b=True)
    return y if bias is None else y + bias


__all__ = [
    "abs",
    "add",
    "avg_pool2d",
    "conv2d",
    "cross_entropy",
    "div",
    "exp",
    "flatten",
    "linear",
    "log",
    "log_softmax",
    "matmul",
    "max_pool2d",
    "mean",
    "mse_loss",
    "mul",
    "neg",
    "relu",
    "reshape",
    "sigmoid",
    "sign",
    "softmax",
    "sqrt",
    "sub",
    "sum",
    "tanh",
    "transpose",
]
