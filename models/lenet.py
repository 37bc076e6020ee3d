"""LeNet-5 variants."""

from __future__ import annotations

from numbagrad import nn


def lenet5(num_classes: int = 10, in_channels: int = 1) -> nn.Sequential:
    """The modern LeNet-5 on 32x32 inputs: conv 6@5x5 -> ReLU -> maxpool 2 -> conv 16@5x5 ->
    ReLU -> maxpool 2 -> conv 120@5x5 -> ReLU -> Linear 84 -> ReLU -> Linear ``num_classes``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 120, 5),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )
