"""GoogLeNet / Inception v1 (Szegedy et al. 2014), as ``torchvision.models.GoogLeNet``."""

from __future__ import annotations

from numbagrad import functional as F
from numbagrad import nn


class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm (eps 0.001) -> ReLU, torchvision's building block."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    """Four parallel branches concatenated along channels: 1x1; 1x1 reduction -> 3x3;
    1x1 reduction -> 5x5 (3x3 in torchvision, kept for its weights; ``kernel_5x5=5`` for
    the paper's); 3x3/1 max-pool -> 1x1 projection."""

    def __init__(
        self, cin, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, kernel_5x5: int = 3
    ) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(cin, ch1x1, 1)
        self.branch2 = nn.Sequential(
            BasicConv2d(cin, ch3x3red, 1), BasicConv2d(ch3x3red, ch3x3, 3, padding=1)
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(cin, ch5x5red, 1),
            BasicConv2d(ch5x5red, ch5x5, kernel_5x5, padding=kernel_5x5 // 2),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, 1, 1, ceil_mode=True), BasicConv2d(cin, pool_proj, 1)
        )

    def forward(self, x):
        branches = (self.branch1, self.branch2, self.branch3, self.branch4)
        return F.concat([b(x) for b in branches], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier: 4x4 adaptive average pool, 1x1 conv 128, fc 1024, dropout 0.7,
    fc ``num_classes``."""

    def __init__(self, cin: int, num_classes: int, dropout: float = 0.7) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(4)
        self.conv = BasicConv2d(cin, 128, 1)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(2048, 1024)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x):
        x = self.flatten(self.conv(self.avgpool(x)))
        return self.fc2(self.dropout(self.relu(self.fc1(x))))


# (in, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj) of each Inception module.
INCEPTIONS = {
    "inception3a": (192, 64, 96, 128, 16, 32, 32),
    "inception3b": (256, 128, 128, 192, 32, 96, 64),
    "inception4a": (480, 192, 96, 208, 16, 48, 64),
    "inception4b": (512, 160, 112, 224, 24, 64, 64),
    "inception4c": (512, 128, 128, 256, 24, 64, 64),
    "inception4d": (512, 112, 144, 288, 32, 64, 64),
    "inception4e": (528, 256, 160, 320, 32, 128, 128),
    "inception5a": (832, 256, 160, 320, 32, 128, 128),
    "inception5b": (832, 384, 192, 384, 48, 128, 128),
}


class GoogLeNet(nn.Module):
    """The torchvision module tree (and state_dict keys). In training mode with
    ``aux_logits`` the forward returns ``(logits, aux2, aux1)`` like torchvision (so the
    loss must take a tuple); otherwise the logits."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        aux_logits: bool = False,
        dropout: float = 0.2,
        dropout_aux: float = 0.7,
        kernel_5x5: int = 3,
    ) -> None:
        super().__init__()
        self.conv1 = BasicConv2d(in_channels, 64, 7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, 1)
        self.conv3 = BasicConv2d(64, 192, 3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        for name in ("inception3a", "inception3b"):
            setattr(self, name, Inception(*INCEPTIONS[name], kernel_5x5=kernel_5x5))
        self.maxpool3 = nn.MaxPool2d(3, 2, ceil_mode=True)
        for name in ("inception4a", "inception4b", "inception4c", "inception4d", "inception4e"):
            setattr(self, name, Inception(*INCEPTIONS[name], kernel_5x5=kernel_5x5))
        self.maxpool4 = nn.MaxPool2d(2, 2, ceil_mode=True)
        for name in ("inception5a", "inception5b"):
            setattr(self, name, Inception(*INCEPTIONS[name], kernel_5x5=kernel_5x5))
        self.aux_logits = aux_logits
        if aux_logits:
            self.aux1 = InceptionAux(512, num_classes, dropout_aux)
            self.aux2 = InceptionAux(528, num_classes, dropout_aux)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(1024, num_classes)
        for _, m in self.named_modules():  # torchvision: truncated normal, std 0.01
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux = self.aux_logits and self.training
        aux1 = self.aux1(x) if aux else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if aux else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        x = self.fc(self.dropout(self.flatten(self.avgpool(x))))
        return (x, aux2, aux1) if aux else x


def googlenet(
    num_classes: int = 1000,
    in_channels: int = 3,
    aux_logits: bool = False,
    dropout: float = 0.2,
    kernel_5x5: int = 3,
) -> GoogLeNet:
    """GoogLeNet (Inception v1: nine Inception modules with 1x1 reductions, global average
    pooling, one fully-connected layer) following ``torchvision.models.GoogLeNet``: conv
    layers are conv-BN-ReLU (``BasicConv2d``), max-pools use ceil mode, and the "5x5"
    branch uses a 3x3 kernel as torchvision does (``kernel_5x5=5`` restores the paper's).
    Parameters at 3 channels and 1000 classes: 6,624,904 without the auxiliary heads,
    13,004,888 with them (``aux_logits=True``; as torchvision, they are used in training
    only). Runs on (N, ``in_channels``, S, S) for S >= 32 (1x1 before the average pool at
    32)."""
    return GoogLeNet(num_classes, in_channels, aux_logits, dropout, kernel_5x5=kernel_5x5)
