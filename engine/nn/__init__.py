"""Layers, losses, initializers: ``from numbagrad import nn``."""

from . import init
from .activations import (
    ELU,
    Dropout,
    LeakyReLU,
    LeCunTanh,
    LogSoftmax,
    PReLU,
    ScaledTanh,
    SiLU,
    Softmax,
    Softplus,
)
from .attention import MultiheadAttention, scaled_dot_product_attention
from .concat import Concat
from .layer_norm import GroupNorm, LayerNorm
from .layers import (
    AvgPool2d,
    Conv2d,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
)
from .lenet_layers import LENET5_C3_CONNECTIONS, Subsampling
from .losses import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    KLDivLoss,
    L1Loss,
    MAELoss,
    MarginRankingLoss,
    MSELoss,
    NLLLoss,
)
from .module import Buffer, Module, Parameter
from .norm import BatchNorm1d, BatchNorm2d
from .pooling import AdaptiveAvgPool2d, GlobalAvgPool2d, LocalResponseNorm, Upsample
from .recurrent import LSTM
from .spatial import ConvTranspose2d, MaxUnpool2d

__all__ = [
    "GroupNorm",
    "LayerNorm",
    "ConvTranspose2d",
    "LSTM",
    "MaxUnpool2d",
    "MultiheadAttention",
    "scaled_dot_product_attention",
    "AdaptiveAvgPool2d",
    "GlobalAvgPool2d",
    "LENET5_C3_CONNECTIONS",
    "LocalResponseNorm",
    "Subsampling",
    "Upsample",
    "BCELoss",
    "BCEWithLogitsLoss",
    "Dropout",
    "ELU",
    "KLDivLoss",
    "L1Loss",
    "LeCunTanh",
    "LeakyReLU",
    "LogSoftmax",
    "MAELoss",
    "MarginRankingLoss",
    "NLLLoss",
    "PReLU",
    "ScaledTanh",
    "SiLU",
    "Softmax",
    "Softplus",
    "BatchNorm1d",
    "BatchNorm2d",
    "Buffer",
    "Concat",
    "AvgPool2d",
    "Conv2d",
    "CrossEntropyLoss",
    "Flatten",
    "Linear",
    "MSELoss",
    "MaxPool2d",
    "Module",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Tanh",
    "init",
]
