"""AlexNet (Krizhevsky, Sutskever and Hinton 2012)."""

from __future__ import annotations

from numbagrad import nn


def _features(in_channels: int, small: bool, lrn: bool) -> list[nn.Module]:
    def norm() -> list[nn.Module]:
        return [nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)] if lrn else []

    # Small inputs (< 63 px) get a 3x3 stride-2 stem instead of 11x11 stride 4, so that the
    # three overlapping 3x3/2 max-pools still have a window to pool (32 -> 16 -> 7 -> 3 -> 1).
    stem = nn.Conv2d(in_channels, 64, 3, 2, 1) if small else nn.Conv2d(in_channels, 64, 11, 4, 2)
    return [
        stem,
        nn.ReLU(),
        *norm(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2),
        nn.ReLU(),
        *norm(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(3, 2),
    ]


class AlexNet(nn.Module):
    """``features`` (convs, LRN, overlapping pools), ``avgpool``, ``classifier``."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        input_size: int = 224,
        lrn: bool = True,
        dropout: float = 0.5,
        hidden: int = 4096,
    ) -> None:
        super().__init__()
        small = input_size < 63
        self.features = nn.Sequential(*_features(in_channels, small, lrn))
        # torchvision pools the features to 6x6 whatever the input; small inputs keep their
        # 1x1 map (32 px) instead of copying it 36 times.
        side = _pooled_side(input_size) if small else 6
        self.avgpool = nn.AdaptiveAvgPool2d(side)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(256 * side * side, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


def _pooled_side(input_size: int) -> int:
    """The feature map's side after the small stem and the three 3x3/2 max-pools."""
    side = (input_size - 1) // 2 + 1  # 3x3 stride 2 pad 1 stem
    for _ in range(3):
        side = (side - 3) // 2 + 1
    if side < 1:
        raise ValueError(f"alexnet: input_size {input_size} is too small (at least 29 px)")
    return side


def alexnet(
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    lrn: bool = True,
    dropout: float = 0.5,
    hidden: int = 4096,
) -> AlexNet:
    """AlexNet with the layer sizes of ``torchvision.models.alexnet`` (64-192-384-256-256
    channels, one tower; the "one weird trick" variant), plus the paper's local response
    normalization (size 5, alpha 1e-4, beta 0.75, k 2) after the first two ReLUs; LRN has no
    parameters, so at 3 channels and 1000 classes the count is torchvision's 61,100,840.
    Overlapping 3x3 stride-2 max-pools; dropout ``dropout`` before the first two
    fully-connected layers (seeded by ``ng.manual_seed``).

    Inputs (N, ``in_channels``, ``input_size``, ``input_size``); for ``input_size`` below
    63 the stem is a 3x3 stride-2 conv and the classifier reads the unpooled feature map
    (256 features at 32x32). ``hidden`` is the width of the two hidden fully-connected
    layers (4096 in the paper); ``lrn=False`` gives torchvision's exact layer list."""
    return AlexNet(num_classes, in_channels, input_size, lrn, dropout, hidden)
