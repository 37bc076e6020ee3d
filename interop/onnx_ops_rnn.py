"""ONNX LSTM (forward direction, default activations), unrolled over the static sequence
length like ``nn.LSTM``: one matmul projects every step's input, then each step adds one
(N, H) x (H, 4H) matmul and splits the gates (ONNX order: input, output, forget, cell).
W, R and B stay the ONNX tensors (trainable when they are initializers)."""

from __future__ import annotations

import numpy as np

from ..engine import functional as F
from .onnx_ops import OnnxNode, converts, is_const

_DEFAULT_ACTIVATIONS = (None, ["Sigmoid", "Tanh", "Tanh"])


def _refuse_variants(node: OnnxNode, inputs: list) -> None:
    if node.attr("direction", "forward") != "forward":
        raise node.refuse("only direction='forward' is supported")
    if node.attr("activations") not in _DEFAULT_ACTIVATIONS or node.attr("clip") is not None:
        raise node.refuse("only the default activations and no clip are supported")
    if node.attr("input_forget", 0) or any(v is not None for v in inputs[4:5] + inputs[7:8]):
        raise node.refuse("sequence_lens, peepholes (P) and input_forget are not supported")


def _state(v, n: int, hidden: int, dtype: str):
    """An initial state (1, N, H) as (N, H), zeros when omitted."""
    if v is None:
        return np.zeros((n, hidden), dtype)
    return v.reshape((n, hidden)) if is_const(v) else F.reshape(v, (n, hidden))


@converts("LSTM")
def lstm(node: OnnxNode, inputs: list) -> list:
    inputs = (inputs + [None] * 8)[:8]
    _refuse_variants(node, inputs)
    x, w, r, b, _, h0, c0, _ = inputs
    batch_first = bool(node.attr("layout", 0))
    x = F.transpose(x, (1, 0, 2)) if batch_first else x
    steps, n, size = x.shape
    hidden = int(node.attr("hidden_size"))
    projected = F.matmul(F.reshape(x, (steps * n, size)), F.reshape(w, (4 * hidden, size)),
                         trans_b=True)  # fmt: skip
    if b is not None:
        bias = F.reshape(b, (2, 4 * hidden))
        projected = projected + F.reshape(F.sum(bias, 0), (1, 4 * hidden))
    recurrent = F.reshape(r, (4 * hidden, hidden))
    h, c = _state(h0, n, hidden, x.dtype), _state(c0, n, hidden, x.dtype)
    outputs = []
    for t in range(steps):
        gates = F.slice_(projected, t * n, (t + 1) * n, 0)
        gates = gates + F.matmul(h, recurrent, trans_b=True)
        i, o, f, g = F.split(gates, [hidden] * 4, 1)
        c = F.sigmoid(f) * c + F.sigmoid(i) * F.tanh(g)
        h = F.sigmoid(o) * F.tanh(c)
        outputs.append(F.reshape(h, (1, 1, n, hidden)))
    y = F.concat(outputs, 0)  # (T, 1, N, H)
    last_h, last_c = F.reshape(h, (1, n, hidden)), F.reshape(c, (1, n, hidden))
    if batch_first:
        y = F.transpose(y, (2, 0, 1, 3))
        last_h, last_c = F.transpose(last_h, (1, 0, 2)), F.transpose(last_c, (1, 0, 2))
    return [y, last_h, last_c][: node.n_outputs]
