"""The two layers LeNet-5 (LeCun et al. 1998) needs beyond a plain conv net:

- ``Subsampling``: S2/S4's trainable subsampling, per map: the 2x2 window's sum (or mean)
  times a trainable coefficient plus a trainable bias;
- connection tables for ``Conv2d(connections=...)``: C3 connects each of its 16 maps to only
  some of S2's 6 maps (Table I of the paper). Only the connected kernels are parameters:
  they are stored packed and scattered into a full (out, in, kh, kw) weight by one constant
  0/1 matrix product in forward(), so parameter counts, gradients and optimizer state cover
  exactly the existing connections (C3: 60 kernels of 5x5 + 16 biases = 1,516).
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import ShapeError
from .. import functional as F
from .init import uniform_
from .module import Module, Parameter


def _lenet5_c3_table() -> np.ndarray:
    """Table I of the paper as (16 C3 maps, 6 S2 maps): maps 0-5 see 3 contiguous S2 maps,
    6-11 see 4 contiguous, 12-14 see 4 non-contiguous, 15 sees all 6."""
    table = np.zeros((16, 6), bool)
    for j in range(6):
        table[j, [(j + i) % 6 for i in range(3)]] = True
        table[6 + j, [(j + i) % 6 for i in range(4)]] = True
    for j, maps in enumerate(([0, 1, 3, 4], [1, 2, 4, 5], [0, 2, 3, 5])):
        table[12 + j, maps] = True
    table[15] = True
    return table


LENET5_C3_CONNECTIONS = _lenet5_c3_table()
"""LeNet-5's S2 -> C3 connection table, (out_maps=16, in_maps=6), True where connected."""


def connection_table(connections, out_channels: int, in_channels: int) -> np.ndarray:
    """Validate a connection table: a boolean (out_channels, in_channels) array in which
    every output map has at least one input map."""
    table = np.asarray(connections)
    if table.shape != (out_channels, in_channels):
        raise ShapeError(
            f"Conv2d connections must be a (out_channels={out_channels}, "
            f"in_channels={in_channels}) boolean table, got shape {table.shape}"
        )
    table = table.astype(bool)
    if not table.any(axis=1).all():
        empty = np.flatnonzero(~table.any(axis=1)).tolist()
        raise ShapeError(f"Conv2d connections: output maps {empty} have no input map")
    return table


def scatter_matrix(table: np.ndarray) -> np.ndarray:
    """(out*in, n_connections) 0/1 matrix putting connection i (row-major order over the
    table) at its (out, in) cell; unconnected cells stay zero."""
    cells = np.flatnonzero(table.ravel())
    s = np.zeros((table.size, cells.size), np.float32)
    s[cells, np.arange(cells.size)] = 1.0
    return s


def expand_connected(packed, table: np.ndarray):
    """The full (out, in, kh, kw) conv weight from the packed (n_connections, kh, kw) kernels
    (zeros where ``table`` is False). Its gradient with respect to ``packed`` is the full
    weight gradient gathered at the connected cells."""
    n, kh, kw = packed.shape
    full = F.matmul(scatter_matrix(table), packed.reshape(n, kh * kw))
    return full.reshape(*table.shape, kh, kw)


def pack_connected(weight: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The inverse of ``expand_connected`` on arrays: the connected kernels of a full
    (out, in, kh, kw) weight, in table order (copy them into ``Conv2d.weight.data``)."""
    return np.ascontiguousarray(weight[table])


class Subsampling(Module):
    """LeNet-5's trainable subsampling (S2, S4): per map c,
    ``y = coefficient[c] * pool(x)[c] + bias[c]`` where pool is the sum (``mode="sum"``, the
    paper's "the four inputs are added") or the mean (``mode="mean"``) of each
    ``kernel_size`` window (stride defaults to the kernel: non-overlapping). 2 parameters per
    map. The paper applies the squashing function after it (a separate layer here)."""

    def __init__(
        self, channels: int, kernel_size=2, stride=None, mode: str = "sum", dtype="float32"
    ) -> None:
        super().__init__()
        if mode not in ("sum", "mean"):
            raise ShapeError(f"Subsampling: mode must be 'sum' or 'mean', not {mode!r}")
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        self.channels, self.kernel_size, self.mode = channels, (kh, kw), mode
        self.stride = self.kernel_size if stride is None else stride
        self.weight = Parameter(np.zeros(channels, dtype))
        self.bias = Parameter(np.zeros(channels, dtype))
        bound = 1.0 / math.sqrt(kh * kw)  # PyTorch's default bound for a fan-in of kh*kw
        uniform_(self.weight, -bound, bound)
        uniform_(self.bias, -bound, bound)

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ShapeError(
                f"Subsampling expects input (N, {self.channels}, H, W), got shape {x.shape}"
            )
        pooled = F.avg_pool2d(x, self.kernel_size, self.stride)
        scale = self.weight.reshape(1, self.channels, 1, 1)
        if self.mode == "sum":
            scale = scale * float(self.kernel_size[0] * self.kernel_size[1])
        return pooled * scale + self.bias.reshape(1, self.channels, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}, mode={self.mode!r}"


__all__ = [
    "LENET5_C3_CONNECTIONS",
    "Subsampling",
    "connection_table",
    "expand_connected",
    "pack_connected",
    "scatter_matrix",
]
