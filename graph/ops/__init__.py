"""The op registry and the op API (functions that emit ops into a graph).

Importing this package registers every built-in op.
"""

from .conv import conv2d
from .elementwise import (
    abs,
    add,
    div,
    exp,
    log,
    mul,
    neg,
    relu,
    relu_grad,
    sigmoid,
    sign,
    sqrt,
    sub,
    tanh,
)
from .linalg import matmul
from .loss import cross_entropy, mse_loss
from .pool import avg_pool2d, max_pool2d
from .reduce import broadcast_to, mean, sum
from .registry import OpDef, TensorType, all_ops, get_op, register, scalar_expression
from .shape import flatten, reshape, transpose
from .softmax import log_softmax, softmax, softmax_grad

__all__ = [
    "scalar_expression",
    "OpDef",
    "TensorType",
    "abs",
    "add",
    "all_ops",
    "avg_pool2d",
    "broadcast_to",
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
    "softmax",
    "softmax_grad",
    "sqrt",
    "sub",
    "sum",
    "tanh",
    "transpose",
]
