"""The models bench/gpu.py times, each with its PyTorch twin: LeNet-5, the CIFAR ResNet-18
without BatchNorm (``resnet18``: both sides run the same convolutions and little else) and the
zoo's BatchNorm ResNet-18 (``resnet18_bn``, against tests/models/torch_zoo.py's twin)."""

from __future__ import annotations

import os
import sys


def resnet18_numbagrad(num_classes: int = 10):
    """CIFAR ResNet-18 from numbagrad.nn, without BatchNorm (see the module docstring)."""
    from numbagrad import nn

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
            self.relu1 = nn.ReLU()
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
            self.relu2 = nn.ReLU()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
            else:
                self.shortcut = None

        def forward(self, x):
            y = self.conv2(self.relu1(self.conv1(x)))
            return self.relu2(y + (self.shortcut(x) if self.shortcut is not None else x))

    layers = [nn.Conv2d(3, 64, 3, padding=1, bias=False), nn.ReLU()]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [nn.AvgPool2d(4), nn.Flatten(), nn.Linear(512, num_classes)]
    return nn.Sequential(*layers)


def resnet18_torch(num_classes: int = 10):
    import torch.nn as tnn

    class BasicBlock(tnn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = tnn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
            self.conv2 = tnn.Conv2d(cout, cout, 3, padding=1, bias=False)
            self.shortcut = (
                tnn.Conv2d(cin, cout, 1, stride=stride, bias=False)
                if stride != 1 or cin != cout
                else tnn.Identity()
            )

        def forward(self, x):
            y = self.conv2(self.conv1(x).relu())
            return (y + self.shortcut(x)).relu()

    layers = [tnn.Conv2d(3, 64, 3, padding=1, bias=False), tnn.ReLU()]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [tnn.AvgPool2d(4), tnn.Flatten(), tnn.Linear(512, num_classes)]
    return tnn.Sequential(*layers)


def lenet5_torch(num_classes: int = 10):
    import torch.nn as tnn

    return tnn.Sequential(
        tnn.Conv2d(1, 6, 5), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(6, 16, 5), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(16, 120, 5), tnn.ReLU(), tnn.Flatten(),
        tnn.Linear(120, 84), tnn.ReLU(), tnn.Linear(84, num_classes),
    )  # fmt: skip


def resnet18_bn_torch(num_classes: int = 10):
    """The torchvision-style ResNet-18 of the zoo tests, with the CIFAR stem."""
    import torch.nn as tnn

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "models"))
    import torch_zoo

    model = torch_zoo.resnet18(num_classes=num_classes)
    model.conv1 = tnn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = tnn.Identity()
    return model


def setup(name: str, args):
    """(numbagrad model, torch model factory, input shape, batch)."""
    from numbagrad.models import resnet18
    from numbagrad.models.lenet import lenet5

    if name == "lenet5":
        return lenet5(), lenet5_torch, (1, 32, 32), args.lenet_batch
    if name == "resnet18_bn":
        model = resnet18(num_classes=10, small_input=True)
        return model, resnet18_bn_torch, (3, 32, 32), args.resnet_batch
    return resnet18_numbagrad(), resnet18_torch, (3, 32, 32), args.resnet_batch
