"""VGG (Simonyan and Zisserman 2014), configurations A (VGG-11) and D (VGG-16)."""

from __future__ import annotations

from numbagrad import nn

# Output channels of the 3x3 convs; "M" is a 2x2 stride-2 max-pool (torchvision's cfgs).
CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M"]
    + [512, 512, 512, "M"],
}


class VGG(nn.Module):
    """``features`` (3x3 convs + ReLU, 2x2 max-pools), ``avgpool``, ``classifier``: the
    module tree and state_dict keys of ``torchvision.models.VGG``."""

    def __init__(
        self,
        config: list,
        num_classes: int = 1000,
        in_channels: int = 3,
        input_size: int = 224,
        batch_norm: bool = False,
        dropout: float = 0.5,
        hidden: int = 4096,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            conv = nn.Conv2d(channels, v, 3, padding=1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.BatchNorm2d(v), nn.ReLU()] if batch_norm else [conv, nn.ReLU()]
            channels = v
        self.features = nn.Sequential(*layers)
        # torchvision pools to 7x7 whatever the input; below 224 px the classifier reads
        # the feature map at its own size (1x1 at 32 px) instead of copying it to 7x7.
        side = 7 if input_size >= 224 else max(1, input_size // 32)
        self.avgpool = nn.AdaptiveAvgPool2d(side)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(channels * side * side, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        for layer in self.classifier.children():
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, 0.0, 0.01)
                nn.init.zeros_(layer.bias)

    def forward(self, x):
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


def vgg(name: str, **kwargs) -> VGG:
    """``vgg("vgg11" | "vgg13" | "vgg16", num_classes=..., in_channels=..., ...)``."""
    if name not in CONFIGS:
        raise ValueError(f"unknown VGG {name!r}; known: {', '.join(CONFIGS)}")
    return VGG(CONFIGS[name], **kwargs)


def vgg11(
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    batch_norm: bool = False,
    dropout: float = 0.5,
    hidden: int = 4096,
) -> VGG:
    """VGG-11 (configuration A) as ``torchvision.models.vgg11`` (132,863,336 parameters at
    3 channels, 1000 classes, 224 px). Inputs (N, ``in_channels``, S, S) with S a multiple
    of 32 (``input_size``; below 224 the classifier reads the 512 x (S/32)^2 features
    directly). ``hidden``: width of the two hidden fully-connected layers."""
    return VGG(CONFIGS["vgg11"], num_classes, in_channels, input_size, batch_norm, dropout, hidden)


def vgg16(
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    batch_norm: bool = False,
    dropout: float = 0.5,
    hidden: int = 4096,
) -> VGG:
    """VGG-16 (configuration D) as ``torchvision.models.vgg16``: 138,357,544 parameters at
    3 channels, 1000 classes, 224 px. Other arguments as ``vgg11``."""
    return VGG(CONFIGS["vgg16"], num_classes, in_channels, input_size, batch_norm, dropout, hidden)
