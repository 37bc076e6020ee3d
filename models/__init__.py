"""The model zoo, built only from the public API."""

from .alexnet import alexnet
from .autoencoder import autoencoder, conv_autoencoder
from .fcn import fcn
from .googlenet import googlenet
from .lenet import lenet5, lenet5_classic
from .mlp import mlp
from .resnet import resnet18, resnet34, resnet50
from .sequence import lstm_classifier
from .transformer import transformer_encoder
from .vgg import vgg11, vgg16

__all__ = [
    "alexnet",
    "autoencoder",
    "conv_autoencoder",
    "fcn",
    "googlenet",
    "lenet5",
    "lenet5_classic",
    "lstm_classifier",
    "mlp",
    "resnet18",
    "resnet34",
    "resnet50",
    "transformer_encoder",
    "vgg11",
    "vgg16",
]
