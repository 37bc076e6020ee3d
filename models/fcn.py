"""A small fully-convolutional segmentation network (after Long, Shelhamer and Darrell 2015)."""

from __future__ import annotations

from numbagrad import nn


class FCN(nn.Module):
    """Two conv stages (each halving the resolution), 1x1 class scores at both, and a
    skip: the coarse scores are upsampled 2x, added to the finer ones, and upsampled 2x
    again to the input size. Output (N, num_classes, H, W): one score per class per pixel
    (train it with ``nn.CrossEntropyLoss`` against (N, H, W) int64 labels).

    Upsampling is nearest-neighbour (``nn.Upsample``) where the paper learns a transposed
    convolution; numbagrad has no ConvTranspose2d yet."""

    def __init__(self, num_classes: int = 2, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        w = width
        self.stage1 = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.stage2 = nn.Sequential(nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.score1 = nn.Conv2d(w, num_classes, 1)
        self.score2 = nn.Conv2d(2 * w, num_classes, 1)
        self.up = nn.Upsample(2)

    def forward(self, x):
        f1 = self.stage1(x)
        f2 = self.stage2(f1)
        return self.up(self.up(self.score2(f2)) + self.score1(f1))


def fcn(num_classes: int = 2, in_channels: int = 1, width: int = 16) -> FCN:
    """Fully-convolutional segmentation net on (N, ``in_channels``, H, W) with H and W
    divisible by 4; output (N, ``num_classes``, H, W). See ``FCN``."""
    return FCN(num_classes, in_channels, width)
