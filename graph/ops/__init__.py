"""The op registry and the op API (functions that emit ops into a graph).

Importing this package registers every built-in op.
"""

from .activation import elu, erf, leaky_relu, prelu, scaled_tanh, silu, softplus
from .class_targets import class_indices, one_hot
from .collective import allreduce
from .compare import cast, greater, greater_equal, stop_gradient
from .conv import conv2d
from .elementwise import (
    abs,
    add,
    div,
    equal,
    exp,
    log,
    maximum,
    minimum,
    mul,
    neg,
    pow,
    relu,
    relu_grad,
    select,
    sigmoid,
    sign,
    sqrt,
    sub,
    tanh,
    xlogy,
)
from .indexing import getitem
from .join import concat, slice_, split
from .linalg import matmul
from .loss import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    kl_div,
    l1_loss,
    margin_ranking_loss,
    mse_loss,
    nll_loss,
)
from .lrn import local_response_norm
from .norm import batch_norm
from .norm_stats import batch_moments, batch_norm_grad_stats, batch_norm_stats
from .pool import avg_pool2d, max_pool2d
from .pool_taps import max_pool2d_grad_taps, max_pool2d_taps
from .random import dropout
from .reduce import broadcast_to, mean, sum
from .registry import OpDef, TensorType, all_ops, get_op, register, scalar_expression
from .scan import cumsum
from .shape import flatten, reshape, transpose
from .softmax import log_softmax, softmax, softmax_grad
from .spatial import (
    conv_transpose2d,
    max_pool2d_indices,
    max_unpool2d,
    upsample2d,
)

__all__ = [
    "allreduce",
    "getitem",
    "cast",
    "cumsum",
    "erf",
    "greater",
    "greater_equal",
    "stop_gradient",
    "conv_transpose2d",
    "local_response_norm",
    "max_pool2d_grad_taps",
    "max_pool2d_indices",
    "max_pool2d_taps",
    "max_unpool2d",
    "upsample2d",
    "elu",
    "leaky_relu",
    "prelu",
    "scaled_tanh",
    "silu",
    "softplus",
    "equal",
    "maximum",
    "minimum",
    "pow",
    "select",
    "xlogy",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "class_indices",
    "kl_div",
    "l1_loss",
    "margin_ranking_loss",
    "nll_loss",
    "one_hot",
    "dropout",
    "scalar_expression",
    "OpDef",
    "TensorType",
    "abs",
    "add",
    "all_ops",
    "avg_pool2d",
    "batch_norm",
    "batch_moments",
    "batch_norm_grad_stats",
    "batch_norm_stats",
    "broadcast_to",
    "concat",
    "conv2d",
    "cross_entropy",
    "div",
    "exp",
    "flatten",
    "get_op",
    "log",
    "log_softmax",
    "matmul",
    "max_pool2d",
    "mean",
    "mse_loss",
    "mul",
    "neg",
    "register",
    "relu",
    "relu_grad",
    "reshape",
    "sigmoid",
    "sign",
    "slice_",
    "softmax",
    "softmax_grad",
    "split",
    "sqrt",
    "sub",
    "sum",
    "tanh",
    "transpose",
]
