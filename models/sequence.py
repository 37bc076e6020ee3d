"""Sequence classifiers: an LSTM over the rows of an image (or any (N, T, features) input)."""

from __future__ import annotations

from numbagrad import functional as F
from numbagrad import nn


class LSTMClassifier(nn.Module):
    """``lstm`` (batch-first) over (N, T, input_size) — or (N, 1, T, input_size) images, one
    row per step — then ``fc`` on the last layer's final hidden state: logits (N,
    num_classes)."""

    def __init__(
        self,
        input_size: int = 28,
        hidden_size: int = 64,
        num_classes: int = 10,
        num_layers: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True, dropout=dropout)
        self.fc = nn.Linear(hidden_size, num_classes)

    def forward(self, x):
        if x.ndim == 4 and x.shape[1] == 1:  # images: the rows are the time steps
            x = x.reshape(x.shape[0], x.shape[2], x.shape[3])
        _, (h_n, _) = self.lstm(x)
        layers, n, hidden = h_n.shape
        return self.fc(F.slice_(h_n, layers - 1, layers, axis=0).reshape(n, hidden))


def lstm_classifier(
    input_size: int = 28,
    hidden_size: int = 64,
    num_classes: int = 10,
    num_layers: int = 1,
    dropout: float = 0.0,
) -> LSTMClassifier:
    """An LSTM classifier over (N, T, ``input_size``) sequences (or (N, 1, T,
    ``input_size``) images read row by row: 28 steps of 28 pixels for Fashion-MNIST);
    the sequence length is fixed when the model is compiled. See ``LSTMClassifier``."""
    return LSTMClassifier(input_size, hidden_size, num_classes, num_layers, dropout)
