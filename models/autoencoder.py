"""Autoencoders: dense (optionally with tied weights) and convolutional."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from numbagrad import functional as F
from numbagrad import nn


class TiedLinear(nn.Module):
    """A decoder layer that reuses an encoder Linear's weight W transposed: y = x W + b.

    ``weight`` is the encoder's Parameter object itself (not a copy): the model holds one
    parameter, the trace one ``param`` leaf used twice (once through a transpose), so the
    gradients of both uses add up into one gradient and one optimizer update. Only the
    bias (``out`` = the encoder's input size) is this layer's own."""

    def __init__(self, encoder: nn.Linear, bias: bool = True) -> None:
        super().__init__()
        self.weight = encoder.weight  # shared, listed once under the encoder's name
        self.in_features, self.out_features = encoder.out_features, encoder.in_features
        self.bias = (
            nn.Parameter(np.zeros(self.out_features, encoder.weight.dtype)) if bias else None
        )

    def forward(self, x):
        return F.linear(x, self.weight.transpose(1, 0), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, tied"


class Autoencoder(nn.Module):
    """``encoder`` then ``decoder``; ``encode(x)`` alone gives the code."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def encode(self, x):
        return self.encoder(x)

    def forward(self, x):
        return self.decoder(self.encoder(x))


def autoencoder(
    sizes: Sequence[int] = (784, 128, 32),
    tied: bool = False,
    activation: type[nn.Module] = nn.ReLU,
    output_activation: type[nn.Module] | None = nn.Sigmoid,
) -> Autoencoder:
    """Dense autoencoder on (N, ``sizes[0]``) inputs: Linear layers ``sizes[0] -> ... ->
    sizes[-1]`` (the code; ``activation`` after each) and back ``sizes[-1] -> ... ->
    sizes[0]`` (``activation`` between, ``output_activation`` at the end, None for none).
    With ``tied=True`` every decoder layer uses its mirror encoder layer's weight
    transposed (W' = W^T, one shared Parameter, see ``TiedLinear``) and has its own bias
    only."""
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"autoencoder needs at least an input and a code size, got {sizes}")
    enc_linears = [nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
    enc: list[nn.Module] = []
    for lin in enc_linears:
        enc += [lin, activation()]
    dec: list[nn.Module] = []
    for i, lin in enumerate(reversed(enc_linears)):
        dec.append(TiedLinear(lin) if tied else nn.Linear(lin.out_features, lin.in_features))
        if i < len(enc_linears) - 1:
            dec.append(activation())
        elif output_activation is not None:
            dec.append(output_activation())
    return Autoencoder(nn.Sequential(*enc), nn.Sequential(*dec))


def conv_autoencoder(
    in_channels: int = 1, channels: Sequence[int] = (16, 32), output_activation=nn.Sigmoid
) -> Autoencoder:
    """Convolutional autoencoder on (N, ``in_channels``, H, W), H and W divisible by
    2**len(channels): per stage a 3x3 conv + ReLU + 2x2 max-pool down, and back a 2x
    nearest upsample + 3x3 conv (+ ReLU, ``output_activation`` on the last). Output shape =
    input shape."""
    enc: list[nn.Module] = []
    cin = in_channels
    for c in channels:
        enc += [nn.Conv2d(cin, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        cin = c
    dec: list[nn.Module] = []
    outs = [*reversed(channels[:-1]), in_channels]
    for i, c in enumerate(outs):
        dec += [nn.Upsample(2), nn.Conv2d(cin, c, 3, padding=1)]
        if i < len(outs) - 1:
            dec.append(nn.ReLU())
        elif output_activation is not None:
            dec.append(output_activation())
        cin = c
    return Autoencoder(nn.Sequential(*enc), nn.Sequential(*dec))
