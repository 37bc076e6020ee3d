"""A Transformer encoder classifier (Vaswani et al. 2017): ``torch.nn.TransformerEncoderLayer``
blocks (post-norm, ReLU) over a learned linear embedding, mean-pooled into a linear head."""

from __future__ import annotations

import numpy as np

from numbagrad import functional as F
from numbagrad import nn


class TransformerEncoderLayer(nn.Module):
    """``x = norm1(x + attention(x))``, ``x = norm2(x + linear2(relu(linear1(x))))`` on
    batch-first (N, T, d_model), with dropout after attention, inside and after the feed
    forward block; ``torch.nn.TransformerEncoderLayer(batch_first=True)``'s parameters and
    state_dict keys."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float = 0.1):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.relu = nn.ReLU()

    def _feed_forward(self, x):
        n, t, d = x.shape
        rows = x.reshape(n * t, d)
        out = self.linear2(self.dropout(self.relu(self.linear1(rows))))
        return out.reshape(n, t, d)

    def forward(self, x):
        attended, _ = self.self_attn(x, x, x, need_weights=False)
        x = self.norm1(x + self.dropout1(attended))
        return self.norm2(x + self.dropout2(self._feed_forward(x)))


class TransformerClassifier(nn.Module):
    """``embed`` (Linear input_size -> d_model per step) plus a learned positional embedding
    ``pos`` (seq_len, d_model), ``layers`` of TransformerEncoderLayer, the mean over the
    steps, ``fc`` to the classes."""

    def __init__(
        self,
        input_size: int,
        seq_len: int,
        d_model: int,
        nhead: int,
        num_layers: int,
        dim_feedforward: int,
        num_classes: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.seq_len, self.d_model = seq_len, d_model
        self.embed = nn.Linear(input_size, d_model)
        self.pos = nn.Parameter(np.zeros((seq_len, d_model), np.float32))
        nn.init.normal_(self.pos, 0.0, 0.02)
        blocks = [
            TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout)
            for _ in range(num_layers)
        ]
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(d_model, num_classes)

    def forward(self, x):
        if x.ndim == 4 and x.shape[1] == 1:  # images: the rows are the tokens
            x = x.reshape(x.shape[0], x.shape[2], x.shape[3])
        n, t, f = x.shape
        if t != self.seq_len:
            raise ValueError(f"transformer_encoder: built for {self.seq_len} steps, got {t}")
        h = self.embed(x.reshape(n * t, f)).reshape(n, t, self.d_model) + self.pos
        return self.fc(F.mean(self.layers(h), 1))


def transformer_encoder(
    input_size: int = 28,
    seq_len: int = 28,
    d_model: int = 32,
    nhead: int = 4,
    num_layers: int = 2,
    dim_feedforward: int = 64,
    num_classes: int = 10,
    dropout: float = 0.1,
) -> TransformerClassifier:
    """A Transformer encoder classifier over (N, ``seq_len``, ``input_size``) sequences or
    (N, 1, ``seq_len``, ``input_size``) images (one token per row): linear embedding plus
    learned positions, ``num_layers`` post-norm encoder layers (multi-head self-attention
    softmax(QK^T/sqrt(d))V with ``nhead`` heads, ReLU feed-forward of ``dim_feedforward``),
    mean pooling over the tokens, a linear head. See ``TransformerClassifier``."""
    return TransformerClassifier(
        input_size, seq_len, d_model, nhead, num_layers, dim_feedforward, num_classes, dropout
    )
