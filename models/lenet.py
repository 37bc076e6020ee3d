"""LeNet-5 variants."""

from __future__ import annotations

import numpy as np

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


class LeNet5Classic(nn.Module):
    """LeNet-5 as LeCun, Bottou, Bengio and Haffner (1998) describe it, on 32x32 inputs:

    ======  ================================================  ==========  ===========
    layer   what                                              output      parameters
    ======  ================================================  ==========  ===========
    C1      conv 6@5x5                                        6x28x28     156
    S2      trainable subsampling 2x2 (sum x coef + bias)     6x14x14     12
    C3      conv 16@5x5, Table I connections (60 kernels)     16x10x10    1,516
    S4      trainable subsampling 2x2                         16x5x5      32
    C5      conv 120@5x5                                      120x1x1     48,120
    F6      full 120 -> 84                                    84          10,164
    output  Linear 84 -> ``num_classes``                      10          850
    ======  ================================================  ==========  ===========

    Every layer up to F6 is followed by the scaled tanh 1.7159 tanh(2x/3) (the paper's
    "units in layers up to F6 ... squashing function"). That is 60,000 trainable
    parameters up to F6. The paper's output layer is 10 Euclidean RBF units with fixed
    (untrained) +-1 centres, i.e. 0 trainable parameters; here it is a trainable Linear
    layer (84*10 + 10 = 850 parameters) so the model trains with a cross-entropy loss:
    60,850 in all.

    ``init``: ``"efficient_backprop"`` (default) draws each weight uniformly with standard
    deviation 1/sqrt(F_i), F_i the unit's fan-in (its connected inputs: C3's maps differ),
    and zero biases: the scaling LeCun, Bottou, Orr and Mueller's "Efficient BackProp"
    (1998) gives for this tanh, which plain SGD trains well. ``"paper"`` is the paper's
    uniform +-2.4/F_i for weights and biases: its signals shrink layer by layer (the paper
    trains with per-parameter second-order step sizes), so SGD barely moves at first.
    ``"default"`` keeps the layers' PyTorch-style initialization.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, init="efficient_backprop"):
        super().__init__()
        if init not in ("efficient_backprop", "paper", "default"):
            raise ValueError(f"lenet5_classic: unknown init {init!r}")
        self.C1 = nn.Conv2d(in_channels, 6, 5)
        self.S2 = nn.Subsampling(6, 2)
        self.C3 = nn.Conv2d(6, 16, 5, connections=nn.LENET5_C3_CONNECTIONS)
        self.S4 = nn.Subsampling(16, 2)
        self.C5 = nn.Conv2d(16, 120, 5)
        self.F6 = nn.Linear(120, 84)
        self.output = nn.Linear(84, num_classes)
        self.act = nn.ScaledTanh()  # parameter-free, shared by every layer
        self.flatten = nn.Flatten()
        if init != "default":
            self._init(paper=init == "paper")

    def _init(self, paper: bool) -> None:
        connected = self.C3.connections.sum(axis=1)  # S2 maps seen by each C3 map
        fan_in = {
            "C1": np.full(6, self.C1.in_channels * 25),
            "S2": np.full(6, 4),
            "C3": connected * 25,
            "S4": np.full(16, 4),
            "C5": np.full(120, 16 * 25),
            "F6": np.full(84, 120),
            "output": np.full(self.output.out_features, 84),
        }
        rng = nn.init.default_generator()
        for name, fans in fan_in.items():
            layer = getattr(self, name)
            bound = 2.4 / fans if paper else np.sqrt(3.0 / fans)  # per output unit
            if name == "C3":  # packed kernels: one per connection, grouped by output map
                bound = np.repeat(bound, connected)
            w = layer.weight.data
            shape = (len(bound),) + (1,) * (w.ndim - 1)
            w[...] = rng.uniform(-1.0, 1.0, w.shape) * bound.reshape(shape)
            b = layer.bias.data
            b[...] = rng.uniform(-1.0, 1.0, b.shape) * (2.4 / fans) if paper else 0.0

    def forward(self, x):
        a = self.act
        x = a(self.S2(a(self.C1(x))))
        x = a(self.S4(a(self.C3(x))))
        x = a(self.C5(x))
        return self.output(a(self.F6(self.flatten(x))))


def lenet5_classic(
    num_classes: int = 10, in_channels: int = 1, init: str = "efficient_backprop"
) -> LeNet5Classic:
    """LeCun et al. (1998)'s LeNet-5 on (N, ``in_channels``, 32, 32) inputs; see
    ``LeNet5Classic`` (60,000 parameters up to F6, plus a Linear output layer; ``init``)."""
    return LeNet5Classic(num_classes, in_channels, init)
