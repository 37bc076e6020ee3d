"""LSTM, unrolled over the static sequence length of the traced input, as ``torch.nn.LSTM``.

Per layer and step t (gate order i, f, g, o as PyTorch's weight rows)::

    gates = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh       (N, 4H)
    i, f, o = sigmoid(gates[input, forget, output]);  g = tanh(gates[candidate])
    c_t = f * c_{t-1} + i * g                              (the cell)
    h_t = o * tanh(c_t)                                    (the output)

The input projection of every step is one matmul over the whole sequence (T*N rows); each
step then adds one (N, H) x (H, 4H) matmul and slices the gates apart. Everything is built
from existing ops (matmul, slice, concat, sigmoid, tanh, mul, add), so autodiff and every
backend handle it with no LSTM-specific code.
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import OpError, ShapeError
from ...graph.ops import concat, matmul, reshape, sigmoid, slice_, split, tanh, transpose
from .. import functional as F
from ..trace import layer_path
from .init import uniform_
from .module import Module, Parameter


class LSTM(Module):
    """Long short-term memory over a sequence: input (T, N, input_size), or (N, T,
    input_size) with ``batch_first``, or unbatched (T, input_size). ``forward(x, hx=None)``
    returns ``output, (h_n, c_n)``: output (T, N, H) (batch_first: (N, T, H)) holds the last
    layer's h at every step; h_n and c_n (num_layers, N, H) the final states. ``hx`` = (h_0,
    c_0) of that shape, zeros when omitted. Parameters ``weight_ih_l{k}`` (4H, in),
    ``weight_hh_l{k}`` (4H, H), ``bias_ih_l{k}``, ``bias_hh_l{k}`` (4H,), as PyTorch's, so
    ``state_dict``s load both ways. ``dropout`` applies to every layer's output but the last
    while training."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        if bidirectional or proj_size:
            raise OpError("LSTM: bidirectional and proj_size are not supported")
        if num_layers < 1 or hidden_size < 1:
            raise OpError("LSTM: num_layers and hidden_size must be positive")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        bound = 1.0 / math.sqrt(hidden_size)  # PyTorch's init: every tensor U(-b, b)
        for k in range(num_layers):
            fan_in = input_size if k == 0 else hidden_size
            shapes = {
                f"weight_ih_l{k}": (4 * hidden_size, fan_in),
                f"weight_hh_l{k}": (4 * hidden_size, hidden_size),
            }
            if bias:
                shapes.update({f"bias_ih_l{k}": (4 * hidden_size,)})
                shapes.update({f"bias_hh_l{k}": (4 * hidden_size,)})
            for name, shape in shapes.items():
                setattr(self, name, uniform_(Parameter(np.zeros(shape, dtype)), -bound, bound))

    def _check(self, x, hx):
        if x.ndim not in (2, 3) or x.shape[-1] != self.input_size:
            raise ShapeError(
                f"LSTM layer '{layer_path()}' expects input (T, N, {self.input_size}) "
                f"{'(batch_first: (N, T, ...)) ' if self.batch_first else ''}or "
                f"(T, {self.input_size}), got shape {x.shape}"
            )
        batch = 1 if x.ndim == 2 else x.shape[0 if self.batch_first else 1]
        wanted = (self.num_layers, batch, self.hidden_size)
        for state in hx or ():
            if tuple(state.shape) not in (wanted, (wanted[0], wanted[2])):
                raise ShapeError(f"LSTM: h_0 and c_0 must have shape {wanted}, got {state.shape}")

    def forward(self, x, hx=None):
        self._check(x, hx)
        unbatched = x.ndim == 2
        if unbatched:
            x = reshape(x, (x.shape[0], 1, x.shape[1]))
        elif self.batch_first:
            x = transpose(x, (1, 0, 2))
        seq_len, batch = x.shape[:2]
        h_n, c_n = [], []
        for k in range(self.num_layers):
            h0 = c0 = None
            if hx is not None:
                h0, c0 = (reshape(slice_(s, k, k + 1, 0), (batch, self.hidden_size)) for s in hx)
            x, h, c = self._layer(k, x, h0, c0)
            h_n.append(h)
            c_n.append(c)
            if self.dropout and self.training and k < self.num_layers - 1:
                x = F.dropout(x, self.dropout, seed=k)
        states = [
            reshape(concat(s, 0), (self.num_layers, batch, self.hidden_size)) for s in (h_n, c_n)
        ]
        if unbatched:
            x = reshape(x, (seq_len, self.hidden_size))
            states = [reshape(s, (self.num_layers, self.hidden_size)) for s in states]
        elif self.batch_first:
            x = transpose(x, (1, 0, 2))
        return x, (states[0], states[1])

    def _layer(self, k: int, x, h, c):
        """One layer over the sequence x (T, N, in): outputs (T, N, H), final h and c (N, H)."""
        seq_len, batch, size = x.shape
        hidden = self.hidden_size
        w_ih, w_hh = getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}")
        projected = matmul(reshape(x, (seq_len * batch, size)), w_ih, trans_b=True)
        if self.bias:
            projected = projected + (
                getattr(self, f"bias_ih_l{k}") + getattr(self, f"bias_hh_l{k}")
            )
        projected = reshape(projected, (seq_len, batch, 4 * hidden))
        outputs = []
        for t in range(seq_len):
            gates = reshape(slice_(projected, t, t + 1, 0), (batch, 4 * hidden))
            if h is not None:
                gates = gates + matmul(h, w_hh, trans_b=True)
            i, f, g, o = split(gates, [hidden] * 4, axis=1)
            i, f, g, o = sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)
            c = i * g if c is None else f * c + i * g
            h = o * tanh(c)
            outputs.append(reshape(h, (1, batch, hidden)))
        return concat(outputs, 0), h, c

    def extra_repr(self) -> str:
        extra = f", num_layers={self.num_layers}" if self.num_layers > 1 else ""
        extra += ", batch_first=True" if self.batch_first else ""
        return f"{self.input_size}, {self.hidden_size}{extra}"
