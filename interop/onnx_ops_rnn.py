"""ONNX LSTM and GRU (forward, reverse or bidirectional; default activations), unrolled over the
static sequence length like ``nn.LSTM``: per direction one matmul projects every step's input,
then each step adds one (N, H) x (H, gates*H) matmul and splits the gates (ONNX's order: LSTM
input, output, forget, cell; GRU update, reset, hidden). W, R and B stay the ONNX tensors
(trainable when they are initializers); a direction reads its slice of them."""

from __future__ import annotations

import numpy as np

from ..engine import functional as F
from .onnx_ops import OnnxNode, converts, is_const

_DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"]}
_DIRECTIONS = {"forward": (False,), "reverse": (True,), "bidirectional": (False, True)}


def _refuse_variants(node: OnnxNode, unsupported_inputs: list) -> None:
    directions = _DIRECTIONS.get(node.attr("direction", "forward"))
    if directions is None:
        raise node.refuse(f"direction {node.attr('direction')!r} is not an ONNX direction")
    activations = node.attr("activations")
    if activations is not None:
        activations = [a.decode() if isinstance(a, bytes) else a for a in activations]
    if activations not in (None, _DEFAULT_ACTIVATIONS[node.op] * len(directions)):
        raise node.refuse("only the default activations are supported")
    if node.attr("clip") is not None or node.attr("input_forget", 0):
        raise node.refuse("clip and input_forget are not supported")
    if any(v is not None for v in unsupported_inputs):
        raise node.refuse("sequence_lens and peepholes (P) are not supported")


def _rows(v, start: int, stop: int):
    """Rows start:stop of axis 0 of a constant or traced ``v``."""
    if is_const(v):
        return v[start:stop]
    return v if (start, stop) == (0, v.shape[0]) else F.slice_(v, start, stop, 0)


def _part(v, d: int, shape: tuple[int, ...]):
    """Direction ``d`` of a (directions, ...) tensor, reshaped to ``shape``."""
    part = _rows(v, d, d + 1)
    return part.reshape(shape) if is_const(part) else F.reshape(part, shape)


def _batch_second(v, batch_first: bool):
    """A (N, D, ...) tensor of layout 1 as (D, N, ...); None stays None."""
    if v is None or not batch_first:
        return v
    return np.swapaxes(v, 0, 1) if is_const(v) else F.transpose(v, (1, 0, 2))


def _input_bias(bias, with_recurrent: bool):
    """The bias added to the input projection: Wb, or Wb + Rb (LSTM adds both, once)."""
    if bias is None or not with_recurrent:
        return None if bias is None else _rows(bias, 0, 1)
    return bias.sum(0, keepdims=True) if is_const(bias) else F.sum(bias, 0, keepdims=True)


def _recurrence(node: OnnxNode, inputs: list, n_gates: int, make_step, states: list) -> list:
    """Run every direction: ``make_step(R, B)`` (this direction's (gates*H, H) recurrence and
    (2, gates*H) biases, B None when omitted) returns ``step(x_gates, h, c) -> (h, c)`` (c None
    for a GRU); ``states`` are the initial (D, N, H) states (None: zeros). Returns ONNX's Y
    and the final states (Y_h, and Y_c for an LSTM)."""
    x, w, r, b = inputs[:4]
    batch_first = bool(node.attr("layout", 0))
    x = F.transpose(x, (1, 0, 2)) if batch_first else x
    steps, n, size = x.shape
    hidden = int(node.attr("hidden_size"))
    rows = n_gates * hidden
    flat = F.reshape(x, (steps * n, size))
    states = [_batch_second(s, batch_first) for s in states]
    ys, finals = [], []
    for d, reverse in enumerate(_DIRECTIONS[node.attr("direction", "forward")]):
        bias = None if b is None else _part(b, d, (2, rows))
        projected = F.matmul(flat, _part(w, d, (rows, size)), trans_b=True)
        if bias is not None:
            projected = projected + _input_bias(bias, node.op == "LSTM")
        step = make_step(_part(r, d, (rows, hidden)), bias)
        h, c = (np.zeros((n, hidden), x.dtype) if s is None else _part(s, d, (n, hidden))
                for s in states)  # fmt: skip
        outputs = [None] * steps
        for t in reversed(range(steps)) if reverse else range(steps):
            h, c = step(F.slice_(projected, t * n, (t + 1) * n, 0), h, c)
            outputs[t] = F.reshape(h, (1, 1, n, hidden))
        ys.append(F.concat(outputs, 0))  # (T, 1, N, H)
        finals.append([F.reshape(v, (1, n, hidden)) for v in (h, c) if v is not None])
    y = ys[0] if len(ys) == 1 else F.concat(ys, 1)
    last = [f[0] if len(f) == 1 else F.concat(f, 0) for f in zip(*finals)]
    if batch_first:
        y = F.transpose(y, (2, 0, 1, 3))
        last = [F.transpose(v, (1, 0, 2)) for v in last]
    return [y, *last]


@converts("LSTM")
def lstm(node: OnnxNode, inputs: list) -> list:
    inputs = (inputs + [None] * 8)[:8]
    _refuse_variants(node, [inputs[4], inputs[7]])
    hidden = int(node.attr("hidden_size"))

    def make_step(recurrent, _):
        def step(x_gates, h, c):
            gates = x_gates + F.matmul(h, recurrent, trans_b=True)  # (biases: in x_gates)
            i, o, f, g = F.split(gates, [hidden] * 4, 1)
            c = F.sigmoid(f) * c + F.sigmoid(i) * F.tanh(g)
            return F.sigmoid(o) * F.tanh(c), c

        return step

    return _recurrence(node, inputs, 4, make_step, [inputs[5], inputs[6]])[: node.n_outputs]


@converts("GRU")
def gru(node: OnnxNode, inputs: list) -> list:
    """``linear_before_reset`` (PyTorch's GRU) applies the reset gate after the hidden gate's
    recurrent matmul and bias; without it, before."""
    inputs = (inputs + [None] * 6)[:6]
    _refuse_variants(node, [inputs[4]])
    hidden = int(node.attr("hidden_size"))
    before_reset = bool(node.attr("linear_before_reset", 0))

    def make_step(recurrent, bias):
        def project(v, start: int, stop: int):
            """v @ R[start:stop]^T plus the recurrent bias's same columns."""
            y = F.matmul(v, _rows(recurrent, start, stop), trans_b=True)
            return y if bias is None else y + _columns(_rows(bias, 1, 2), start, stop)

        def step(x_gates, h, _):
            xz, xr, xh = F.split(x_gates, [hidden] * 3, 1)
            if before_reset:  # one matmul for all three gates
                rz, rr, rh = F.split(project(h, 0, 3 * hidden), [hidden] * 3, 1)
                z, r = F.sigmoid(xz + rz), F.sigmoid(xr + rr)
                candidate = F.tanh(xh + r * rh)
            else:
                rz, rr = F.split(project(h, 0, 2 * hidden), [hidden] * 2, 1)
                z, r = F.sigmoid(xz + rz), F.sigmoid(xr + rr)
                candidate = F.tanh(xh + project(r * h, 2 * hidden, 3 * hidden))
            return candidate + z * (h - candidate), None

        return step

    return _recurrence(node, inputs, 3, make_step, [inputs[5], None])[: min(node.n_outputs, 2)]


def _columns(v, start: int, stop: int):
    """Columns start:stop of a (1, k) constant or traced ``v``."""
    return v[:, start:stop] if is_const(v) else F.slice_(v, start, stop, 1)
