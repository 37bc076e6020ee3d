"""Scaled dot-product attention ``softmax(Q K^T / sqrt(d)) V`` and multi-head attention, as
PyTorch's ``F.scaled_dot_product_attention`` and ``nn.MultiheadAttention``, composed of
matmul, softmax, reshape/transpose and slice (so autodiff and every backend need nothing new).

Masks are constants of the trace (NumPy arrays; a traced float tensor works as an additive
mask too). Boolean masks follow each PyTorch API's convention: for
``scaled_dot_product_attention`` True means "may attend"; for ``MultiheadAttention``'s
``attn_mask`` and ``key_padding_mask`` True means "masked out".
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import OpError, ShapeError
from ...graph import Value
from ...graph.builder import as_value
from ...graph.ops import matmul, mean, reshape, softmax, split, transpose
from .. import functional as F
from .init import constant_, xavier_uniform_
from .layers import Linear
from .module import Module, Parameter


def _additive(mask, like: Value, true_means_masked: bool):
    """A mask as something to add to the scores: bool arrays become 0 / -inf constants."""
    if mask is None or isinstance(mask, Value) or hasattr(mask, "__graph_value__"):
        return mask
    mask = np.asarray(mask)
    if mask.dtype == bool:
        blocked = mask if true_means_masked else ~mask
        mask = np.where(blocked, -np.inf, 0.0)
    return like.builder.const(mask.astype(like.dtype), like.dtype)


def _causal(length: int, source: int) -> np.ndarray:
    """True where query i may attend key j (j <= i), as PyTorch's ``is_causal``."""
    return np.tril(np.ones((length, source), dtype=bool))


def scaled_dot_product_attention(
    query, key, value, attn_mask=None, dropout_p: float = 0.0, is_causal: bool = False, scale=None
):
    """``softmax(query key^T * scale + mask) value`` over the last two axes: query (..., L, E),
    key (..., S, E), value (..., S, Ev) -> (..., L, Ev); ``scale`` defaults to 1/sqrt(E).
    ``attn_mask``: bool (True = may attend) or additive float, broadcasting to (..., L, S)."""
    if query.ndim < 2 or query.ndim != key.ndim or key.ndim != value.ndim:
        raise ShapeError(
            f"attention: query, key and value need one rank >= 2, got {query.shape}, "
            f"{key.shape}, {value.shape}"
        )
    lead, (length, dim), source = query.shape[:-2], query.shape[-2:], key.shape[-2]
    if key.shape[:-2] != lead or value.shape[:-2] != lead or key.shape[-1] != dim:
        raise ShapeError(f"attention: shapes {query.shape}, {key.shape}, {value.shape} differ")
    if value.shape[-2] != source:
        raise ShapeError(f"attention: key {key.shape} and value {value.shape} lengths differ")
    batch = math.prod(lead)
    q, k, v = (reshape(t, (batch, *t.shape[-2:])) for t in (query, key, value))
    scores = matmul(q, k, trans_b=True) * (1.0 / math.sqrt(dim) if scale is None else scale)
    scores = reshape(scores, (*lead, length, source))
    if is_causal:
        scores = scores + _additive(_causal(length, source), scores, true_means_masked=False)
    if attn_mask is not None:
        scores = scores + _additive(attn_mask, scores, true_means_masked=False)
    weights = reshape(softmax(scores, -1), (batch, length, source))
    if dropout_p:
        weights = F.dropout(weights, dropout_p)
    return reshape(matmul(weights, v), (*lead, length, value.shape[-1]))


class MultiheadAttention(Module):
    """Multi-head attention as ``torch.nn.MultiheadAttention`` (kdim = vdim = embed_dim):
    parameters ``in_proj_weight`` (3E, E), ``in_proj_bias`` (3E,), ``out_proj.weight`` (E, E),
    ``out_proj.bias``. ``forward(query, key, value, key_padding_mask=None, need_weights=True,
    attn_mask=None, average_attn_weights=True, is_causal=False)`` takes (L, N, E) / (S, N, E)
    (batch_first: (N, L, E)) or unbatched (L, E), and returns ``(output, weights)``: output
    shaped like query, weights (N, L, S) averaged over heads (or (N, heads, L, S)), or None
    when ``need_weights`` is False."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim=None,
        vdim=None,
        batch_first: bool = False,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ShapeError(f"embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
        if (
            add_bias_kv
            or add_zero_attn
            or kdim not in (None, embed_dim)
            or vdim not in (None, embed_dim)
        ):
            raise OpError("MultiheadAttention: add_bias_kv, add_zero_attn, kdim/vdim unsupported")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.dropout, self.batch_first = float(dropout), batch_first
        self.in_proj_weight = Parameter(np.zeros((3 * embed_dim, embed_dim), dtype))
        xavier_uniform_(self.in_proj_weight)
        self.in_proj_bias = Parameter(np.zeros(3 * embed_dim, dtype)) if bias else None
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, dtype=dtype)
        if bias:
            constant_(self.out_proj.bias, 0.0)

    def _projections(self, query, key, value):
        """q, k, v from (rows, E) inputs; one GEMM serves the inputs that are one tensor."""
        e, w, b = self.embed_dim, self.in_proj_weight, self.in_proj_bias
        if query is key and key is value:
            return split(F.linear(query, w, b), [e] * 3, axis=1)
        weights = split(w, [e, 2 * e] if key is value else [e] * 3, axis=0)
        biases = [None] * len(weights)
        if b is not None:
            biases = split(b, [e, 2 * e] if key is value else [e] * 3, axis=0)
        if key is value:
            q = F.linear(query, weights[0], biases[0])
            return [q, *split(F.linear(key, weights[1], biases[1]), [e, e], axis=1)]
        return [F.linear(t, wi, bi) for t, wi, bi in zip((query, key, value), weights, biases)]

    def _to_rows(self, t):
        """(L, N, E), (N, L, E) with batch_first, or unbatched (L, E) -> (N, L, E)."""
        if t.ndim == 2:
            return reshape(t, (1, *t.shape))
        return t if self.batch_first else transpose(t, (1, 0, 2))

    def forward(
        self,
        query,
        key,
        value,
        key_padding_mask=None,
        need_weights: bool = True,
        attn_mask=None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ):
        query, key, value = (as_value(t) for t in (query, key, value))  # params: cached leaves
        unbatched = query.ndim == 2
        # Identity decides how many projection GEMMs run (self-attention: one), so convert
        # each distinct tensor once.
        converted: dict[int, object] = {}
        for t in (query, key, value):
            converted.setdefault(id(t), self._to_rows(t))
        query, key, value = (converted[id(t)] for t in (query, key, value))
        n, length, e = query.shape
        source = key.shape[1]
        if e != self.embed_dim or key.shape != (n, source, e) or value.shape != key.shape:
            raise ShapeError(
                f"MultiheadAttention: query {query.shape}, key {key.shape}, value {value.shape} "
                f"do not fit embed_dim={self.embed_dim}"
            )
        flat = {id(t): reshape(t, (n * t.shape[1], e)) for t in (query, key, value)}
        q, k, v = self._projections(*(flat[id(t)] for t in (query, key, value)))
        h, d = self.num_heads, self.head_dim
        q, k, v = (
            reshape(transpose(reshape(t, (n, size, h, d)), (0, 2, 1, 3)), (n * h, size, d))
            for t, size in ((q, length), (k, source), (v, source))
        )
        scores = reshape(matmul(q, k, trans_b=True) * (1.0 / math.sqrt(d)), (n, h, length, source))
        if is_causal and attn_mask is None:
            attn_mask = ~_causal(length, source)
        if attn_mask is not None:
            mask = _additive(attn_mask, scores, true_means_masked=True)
            if mask.ndim == 3:  # (N*heads, L, S)
                mask = reshape(mask, (n, h, length, source))
            scores = scores + mask
        if key_padding_mask is not None:
            pad = _additive(key_padding_mask, scores, true_means_masked=True)
            scores = scores + reshape(pad, (n, 1, 1, source))
        weights = softmax(scores, -1)
        attended = weights
        if self.dropout and self.training:
            attended = F.dropout(weights, self.dropout)
        out = matmul(reshape(attended, (n * h, length, source)), v)  # (N*h, L, d)
        out = reshape(transpose(reshape(out, (n, h, length, d)), (0, 2, 1, 3)), (n * length, e))
        out = reshape(self.out_proj(out), (n, length, e))
        if unbatched:
            out = reshape(out, (length, e))
        elif not self.batch_first:
            out = transpose(out, (1, 0, 2))
        if not need_weights:
            return out, None
        if average_attn_weights:
            weights = mean(weights, 1)
        if unbatched:
            weights = reshape(weights, weights.shape[1:])
        return out, weights

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"
