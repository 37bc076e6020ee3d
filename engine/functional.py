"""The functional op API (``numbagrad.functional``, like ``torch.nn.functional``)."""

from __future__ import annotations

from ..errors import ShapeError
from ..graph.builder import as_values
from ..graph.ops import (
    abs,
    add,
    avg_pool2d,
    batch_norm,
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cast,
    concat,
    conv2d,
    conv_transpose2d,
    cross_entropy,
    cumsum,
    div,
    elu,
    equal,
    erf,
    exp,
    flatten,
    greater,
    greater_equal,
    kl_div,
    l1_loss,
    leaky_relu,
    local_response_norm,
    log,
    log_softmax,
    margin_ranking_loss,
    matmul,
    max_pool2d,
    max_pool2d_indices,
    max_unpool2d,
    maximum,
    mean,
    minimum,
    mse_loss,
    mul,
    neg,
    nll_loss,
    one_hot,
    pow,
    relu,
    reshape,
    scaled_tanh,
    select,
    sigmoid,
    sign,
    silu,
    slice_,
    softmax,
    softplus,
    split,
    sqrt,
    stop_gradient,
    sub,
    sum,
    tanh,
    transpose,
    upsample2d,
    xlogy,
)
from ..graph.ops import dropout as _dropout_op
from ..graph.ops import prelu as _prelu_op
from .composite import gelu, group_norm, layer_norm
from .trace import current_tracer


def prelu(x, weight):
    """PReLU as torch: ``weight`` has 1 or C elements, C = ``x.shape[1]`` (the channels)."""
    (x,) = as_values(x)
    n = weight.shape[0] if len(weight.shape) else 1
    if n != 1 and (x.ndim < 2 or x.shape[1] != n):
        raise ShapeError(
            f"prelu: {n} weights need an input with {n} channels (dim 1), got {x.shape}"
        )
    if n != 1:
        weight = weight.reshape((n,) + (1,) * (x.ndim - 2))
    return _prelu_op(x, weight)


def dropout(x, p: float = 0.5, training: bool = True, seed: int = 0):
    """Zero each element with probability ``p`` and scale the rest by ``1/(1-p)`` while
    training (a new mask every run, keyed by ``seed`` and the traced graph's step counter);
    the identity (no node at all) otherwise. The k-th dropout of a trace mixes k into its
    seed, so two calls (one layer called twice, or equal seeds) draw independent masks."""
    if not training or p == 0.0:
        return x
    (x,) = as_values(x)
    k = len([n for n in x.builder.nodes if n.op == "dropout"])  # (sum is the op here)
    seed = (seed + k * 0x9E3779B97F4A7C15) % 2**63
    return _dropout_op(x, current_tracer().step_counter(), p=p, seed=seed)


mae_loss = l1_loss


def linear(x, weight, bias=None):
    """``x @ weight.T + bias`` for x (N, in), weight (out, in), bias (out,)."""
    y = matmul(*as_values(x, weight), trans_b=True)
    return y if bias is None else y + bias


cat = concat  # torch.cat's name


def max_pool2d_with_indices(x, kernel_size, stride=None, padding=0, dilation=1):
    """``(max_pool2d(x, ...), indices)``: the int64 flat (H*W) index of each window's maximum
    (``torch.nn.functional.max_pool2d(..., return_indices=True)``), for ``max_unpool2d``."""
    args = (kernel_size, stride, padding, dilation)
    return max_pool2d(x, *args), max_pool2d_indices(x, *args)


def interpolate(x, size=None, scale_factor=None, mode: str = "nearest", align_corners=None):
    """Upsampling by integer ``scale_factor`` (``"nearest"`` or ``"bilinear"`` with
    ``align_corners=False``), as ``torch.nn.functional.interpolate``; ``size`` is refused."""
    if size is not None or scale_factor is None or align_corners:
        raise ShapeError("interpolate: give an integer scale_factor (size, align_corners=True "
                         "are not supported)")  # fmt: skip
    return upsample2d(x, scale_factor, mode)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, **kwargs):
    """``softmax(Q K^T / sqrt(E) + mask) V`` (see ``nn.attention``; imported on use: the
    layers import this module)."""
    from .nn.attention import scaled_dot_product_attention as attend

    return attend(query, key, value, attn_mask, dropout_p, **kwargs)


__all__ = [
    "cast",
    "cumsum",
    "erf",
    "gelu",
    "greater",
    "greater_equal",
    "group_norm",
    "layer_norm",
    "stop_gradient",
    "conv_transpose2d",
    "interpolate",
    "local_response_norm",
    "max_pool2d_indices",
    "max_pool2d_with_indices",
    "max_unpool2d",
    "scaled_dot_product_attention",
    "upsample2d",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "dropout",
    "elu",
    "equal",
    "kl_div",
    "l1_loss",
    "leaky_relu",
    "mae_loss",
    "margin_ranking_loss",
    "maximum",
    "minimum",
    "nll_loss",
    "one_hot",
    "pow",
    "prelu",
    "scaled_tanh",
    "select",
    "silu",
    "softplus",
    "xlogy",
    "abs",
    "add",
    "avg_pool2d",
    "batch_norm",
    "cat",
    "concat",
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
    "slice_",
    "softmax",
    "split",
    "sqrt",
    "sub",
    "sum",
    "tanh",
    "transpose",
]
