"""Width-reduced ResNet-18, VGG-11 and GoogLeNet for the CUDA simulator, which runs every GPU
thread in Python: the same module trees, block structure, kernel sizes, strides, paddings and
pooling as torch_zoo's (so the same ONNX operators and attributes, in the same topology), with
every channel count divided by ``divisor`` and tiny inputs. Imported only by tests that
already skipped without torch."""

from __future__ import annotations

import torch_zoo as tz
from torch import nn

# GoogLeNet's Inception blocks (torchvision's channels): (ch1x1, ch3x3red, ch3x3, ch5x5red,
# ch5x5, pool_proj); a max pool follows 3b and 4e.
INCEPTIONS = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}


def _narrow(channels: int, divisor: int) -> int:
    return max(channels // divisor, 1)


class NarrowResNet18(nn.Module):
    """torchvision's ResNet-18 (BasicBlocks [2, 2, 2, 2], 7x7/2 stem, 3x3/2 max pool,
    1x1/2 downsampling convs) at widths 64/d, 128/d, 256/d, 512/d."""

    _make_layer = tz.ResNet._make_layer
    forward = tz.ResNet.forward

    def __init__(self, divisor: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        widths = [_narrow(c, divisor) for c in (64, 128, 256, 512)]
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(tz.BasicBlock, widths[0], 2)
        self.layer2 = self._make_layer(tz.BasicBlock, widths[1], 2, 2)
        self.layer3 = self._make_layer(tz.BasicBlock, widths[2], 2, 2)
        self.layer4 = self._make_layer(tz.BasicBlock, widths[3], 2, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3], num_classes)


def narrow_vgg11(divisor: int = 16, hidden: int = 16, num_classes: int = 10) -> nn.Module:
    """torchvision's VGG-11 (8 3x3 convs, 5 max pools, three Linear layers with dropout) at
    widths 64/d ... 512/d, hidden layers of ``hidden``, average-pooled to 1x1."""
    cfg = [v if v == "M" else _narrow(v, divisor) for v in tz.VGG_CFGS["vgg11"]]
    model = tz.VGG(cfg, num_classes=num_classes, hidden=hidden, side=1)
    model.classifier[0] = nn.Linear(cfg[-2], hidden)  # tz.VGG assumes 512 channels here
    return model


class NarrowGoogLeNet(nn.Module):
    """torchvision's GoogLeNet without auxiliary heads (7x7/2 stem, 1x1 and 3x3 convs, ceil-mode
    max pools, nine Inception blocks of four branches) at every width divided by ``divisor``."""

    forward = tz.GoogLeNet.forward

    def __init__(self, divisor: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        c = [_narrow(n, divisor) for n in (64, 192)]
        self.conv1 = tz.BasicConv2d(3, c[0], kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = tz.BasicConv2d(c[0], c[0], kernel_size=1)
        self.conv3 = tz.BasicConv2d(c[0], c[1], kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        cin = c[1]
        for name, widths in INCEPTIONS.items():
            w = [_narrow(n, divisor) for n in widths]
            setattr(self, name, tz.Inception(cin, *w))
            cin = w[0] + w[2] + w[4] + w[5]
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(cin, num_classes)
