"""Plain multi-layer perceptrons."""

from __future__ import annotations

from collections.abc import Sequence

from numbagrad import nn


def mlp(sizes: Sequence[int], activation: type[nn.Module] = nn.ReLU, bias: bool = True):
    """Linear layers ``sizes[0] -> sizes[1] -> ... -> sizes[-1]`` with ``activation`` between
    them (none after the last). ``mlp([10, 32, 8, 1])`` is the course's 10-32-8-1 network."""
    if len(sizes) < 2:
        raise ValueError(f"mlp needs at least an input and an output size, got {list(sizes)}")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out, bias=bias))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)
