"""ONNX operators as numbagrad ops: the converter table and the elementwise operators.

A converter takes an ``OnnxNode`` and its inputs and returns its outputs. An input is a traced
Tensor (or a Parameter standing for one), a NumPy array (a constant: an initializer that is
not a parameter, a Constant node, or shape arithmetic folded at import), or None (an omitted
optional input). Where every input is a constant the converter computes the output with
NumPy, so ``Shape -> Gather -> Concat -> Reshape`` chains fold to constants; otherwise it
emits the functional ops a hand-written model would.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..engine import functional as F
from ..errors import OnnxError

CONVERTERS: dict[str, Callable[[OnnxNode, list], list]] = {}

# Inputs that are settings, not data (a float initializer there stays a constant, never a
# parameter): op -> input positions.
SETTING_INPUTS: dict[str, tuple[int, ...]] = {
    "Clip": (1, 2), "Dropout": (1, 2), "Pow": (1,), "Resize": (1, 2, 3),
}  # fmt: skip


@dataclass(frozen=True)
class OnnxNode:
    """One ONNX node as converters see it: attributes as Python values."""

    op: str
    name: str
    attrs: dict[str, Any] = field(default_factory=dict)
    opset: int = 17
    training: bool = False
    n_outputs: int = 1
    outputs_used: tuple[bool, ...] = ()

    @property
    def extra_outputs_used(self) -> bool:
        """Whether any output after the first feeds another node or the graph's outputs."""
        return any(self.outputs_used[1:])

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def refuse(self, problem: str) -> OnnxError:
        return OnnxError(f"ONNX node {self.name!r} ({self.op}, opset {self.opset}): {problem}")


def converts(*ops: str):
    def register(fn):
        for op in ops:
            CONVERTERS[op] = fn
        return fn

    return register


def is_const(v: Any) -> bool:
    return isinstance(v, np.ndarray)


def const_values(node: OnnxNode, v: Any, what: str) -> np.ndarray:
    """``v`` as a constant, refused when it is computed from the model's inputs."""
    if not is_const(v):
        raise node.refuse(f"{what} must be a constant (computed from the model input here)")
    return v


def const_ints(node: OnnxNode, v: Any, what: str) -> list[int]:
    return [int(i) for i in const_values(node, v, what).reshape(-1)]


def axes_of(node: OnnxNode, inputs: list, position: int, attr: str = "axes") -> list[int] | None:
    """Axes given as an input (newer opsets) or as an attribute (older ones); None if absent."""
    if len(inputs) > position and inputs[position] is not None:
        return const_ints(node, inputs[position], attr)
    value = node.attr(attr)
    return None if value is None else [int(a) for a in value]


# --- binary arithmetic --------------------------------------------------------------------


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.trunc(np.true_divide(a, b)).astype(np.result_type(a, b))


_BINARY = {
    "Add": (np.add, F.add),
    "Sub": (np.subtract, F.sub),
    "Mul": (np.multiply, F.mul),
    "Div": (None, F.div),
}


@converts(*_BINARY)
def _binary(node: OnnxNode, inputs: list) -> list:
    a, b = inputs
    numpy_fn, graph_fn = _BINARY[node.op]
    if is_const(a) and is_const(b):
        if numpy_fn is None:
            integer = np.issubdtype(a.dtype, np.integer)
            return [_int_div(a, b) if integer else np.asarray(np.true_divide(a, b), a.dtype)]
        return [np.asarray(numpy_fn(a, b), np.result_type(a, b))]
    return [graph_fn(a, b)]


@converts("Mod")
def _mod(node: OnnxNode, inputs: list) -> list:
    a, b = (const_values(node, v, "an operand") for v in inputs)
    return [(np.fmod if node.attr("fmod", 0) else np.mod)(a, b)]


@converts("Pow")
def _pow(node: OnnxNode, inputs: list) -> list:
    x, y = inputs
    if is_const(x) and is_const(y):
        return [np.power(x, y).astype(x.dtype)]
    if is_const(y) and y.size == 1:
        return [F.pow(x, float(y.reshape(())))]
    return [F.exp(y * F.log(x))]


_COMPARE = {"Equal": np.equal, "Less": np.less, "Greater": np.greater,
            "LessOrEqual": np.less_equal, "GreaterOrEqual": np.greater_equal}  # fmt: skip


@converts(*_COMPARE)
def _compare(node: OnnxNode, inputs: list) -> list:
    a, b = inputs
    if is_const(a) and is_const(b):
        return [_COMPARE[node.op](a, b)]
    if node.op == "Equal":
        return [F.equal(a, b)]
    first, second = (a, b) if node.op.startswith("Greater") else (b, a)
    return [(F.greater if node.op in ("Greater", "Less") else F.greater_equal)(first, second)]


@converts("Where")
def _where(node: OnnxNode, inputs: list) -> list:
    c, a, b = inputs
    if all(is_const(v) for v in inputs):
        return [np.where(c, a, b)]
    return [F.select(c, a, b)]


@converts("Max", "Min")
def _max_min(node: OnnxNode, inputs: list) -> list:
    result = inputs[0]
    for other in inputs[1:]:
        if is_const(result) and is_const(other):
            result = (np.maximum if node.op == "Max" else np.minimum)(result, other)
        else:
            result = (F.maximum if node.op == "Max" else F.minimum)(result, other)
    return [result]


@converts("Clip")
def _clip(node: OnnxNode, inputs: list) -> list:
    """Bounds from inputs 1 and 2 (opset >= 11) or the min/max attributes (older opsets)."""
    x = inputs[0]
    bounds = [inputs[i] if len(inputs) > i else None for i in (1, 2)]
    bounds = [np.asarray(node.attr(k)) if b is None and node.attr(k) is not None else b
              for b, k in zip(bounds, ("min", "max"))]  # fmt: skip
    low, high = (None if b is None else const_values(node, b, "a bound") for b in bounds)
    if is_const(x):
        return [np.clip(x, low, high)]
    x = x if low is None else F.maximum(x, float(low.reshape(())))
    return [x if high is None else F.minimum(x, float(high.reshape(())))]


@converts("Sum", "Mean")
def _sum_mean(node: OnnxNode, inputs: list) -> list:
    total = inputs[0]
    for other in inputs[1:]:
        total = total + other
    return [total * (1.0 / len(inputs)) if node.op == "Mean" else total]


# --- unary ops and activations ------------------------------------------------------------

_UNARY = {
    "Neg": (np.negative, F.neg),
    "Abs": (np.abs, F.abs),
    "Sqrt": (np.sqrt, F.sqrt),
    "Exp": (np.exp, F.exp),
    "Log": (np.log, F.log),
    "Floor": (np.floor, None),
    "Ceil": (np.ceil, None),
    "Sign": (np.sign, F.sign),
    "Reciprocal": (np.reciprocal, lambda x: F.div(1.0, x)),
    "Relu": (lambda x: np.maximum(x, 0), F.relu),
    "Sigmoid": (None, F.sigmoid),
    "Tanh": (np.tanh, F.tanh),
    "Erf": (None, F.erf),
    "Softplus": (None, F.softplus),
}


@converts(*_UNARY)
def _unary(node: OnnxNode, inputs: list) -> list:
    (x,) = inputs
    numpy_fn, graph_fn = _UNARY[node.op]
    if is_const(x) and numpy_fn is not None:
        return [np.asarray(numpy_fn(x), x.dtype)]
    if graph_fn is None:
        raise node.refuse("only folds on constants, and its input is computed from the model")
    return [graph_fn(x)]


@converts("LeakyRelu")
def _leaky_relu(node: OnnxNode, inputs: list) -> list:
    return [F.leaky_relu(inputs[0], float(node.attr("alpha", 0.01)))]


@converts("Elu")
def _elu(node: OnnxNode, inputs: list) -> list:
    return [F.elu(inputs[0], float(node.attr("alpha", 1.0)))]


@converts("Selu")
def _selu(node: OnnxNode, inputs: list) -> list:
    alpha = float(node.attr("alpha", 1.67326319217681884765625))
    gamma = float(node.attr("gamma", 1.05070102214813232421875))
    return [F.elu(inputs[0], alpha) * gamma]


def _hard_sigmoid(x, alpha: float, beta: float):
    return F.maximum(F.minimum(x * alpha + beta, 1.0), 0.0)


@converts("HardSigmoid")
def _hard_sigmoid_node(node: OnnxNode, inputs: list) -> list:
    return [_hard_sigmoid(inputs[0], float(node.attr("alpha", 0.2)), float(node.attr("beta", 0.5)))]


@converts("HardSwish")
def _hard_swish(node: OnnxNode, inputs: list) -> list:
    return [inputs[0] * _hard_sigmoid(inputs[0], 1.0 / 6.0, 0.5)]


@converts("Gelu")
def _gelu(node: OnnxNode, inputs: list) -> list:
    return [F.gelu(inputs[0], node.attr("approximate", "none"))]


@converts("PRelu")
def _prelu(node: OnnxNode, inputs: list) -> list:
    x, slope = inputs
    if math.prod(slope.shape) == 1:
        return [F.prelu(x, slope.reshape((1,)))]
    if x.ndim >= 2 and math.prod(slope.shape) == x.shape[1]:
        return [F.prelu(x, slope.reshape((x.shape[1],)))]
    return [F.maximum(x, 0.0) + F.minimum(x, 0.0) * slope]


def _softmax_like(node: OnnxNode, inputs: list, fn) -> list:
    (x,) = inputs
    axis = int(node.attr("axis", -1 if node.opset >= 13 else 1)) % x.ndim
    if node.opset >= 13 or axis == x.ndim - 1:
        return [fn(x, axis)]
    # Before opset 13 the input is flattened to 2-d at ``axis`` and normalized per row.
    rows = x.reshape((math.prod(x.shape[:axis]), -1))
    return [fn(rows, 1).reshape(x.shape)]


@converts("Softmax")
def _softmax(node: OnnxNode, inputs: list) -> list:
    return _softmax_like(node, inputs, F.softmax)


@converts("LogSoftmax")
def _log_softmax(node: OnnxNode, inputs: list) -> list:
    return _softmax_like(node, inputs, F.log_softmax)


@converts("Identity")
def _identity(node: OnnxNode, inputs: list) -> list:
    return [inputs[0]]


@converts("Dropout")
def _dropout(node: OnnxNode, inputs: list) -> list:
    if node.extra_outputs_used:
        raise node.refuse("its mask output is not supported")
    ratio = inputs[1] if len(inputs) > 1 and inputs[1] is not None else node.attr("ratio", 0.5)
    p = float(const_values(node, np.asarray(ratio), "the ratio").reshape(()))
    return [F.dropout(inputs[0], p, training=node.training)]
