"""What the commands share: the zoo models and optimizers they know by name, the argument
parser that turns argparse's complaints into one-line errors, and argument types."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from .. import data, models
from ..engine import nn, optim
from ..errors import NumbagradError

PROG = "numbagrad"

# Model name -> zoo constructor; built by build_model for 10 classes, 1 channel, 32x32 inputs
# (MODEL_ARGS: the arguments that say so where the constructor's defaults differ).
MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet5": models.lenet5,
    "lenet5_classic": models.lenet5_classic,
    "alexnet": models.alexnet,
    "vgg11": models.vgg11,
    "vgg16": models.vgg16,
    "googlenet": models.googlenet,
    "resnet18": models.resnet18,
    "resnet34": models.resnet34,
    "resnet50": models.resnet50,
    "lstm_classifier": models.lstm_classifier,
    "transformer_encoder": models.transformer_encoder,
}
_SMALL = {"num_classes": 10, "in_channels": 1}
MODEL_ARGS: dict[str, dict] = {
    "alexnet": {**_SMALL, "input_size": 32},
    "vgg11": {**_SMALL, "input_size": 32},
    "vgg16": {**_SMALL, "input_size": 32},
    "googlenet": _SMALL,
    "resnet18": _SMALL,
    "resnet34": _SMALL,
    "resnet50": _SMALL,
    "lstm_classifier": {"input_size": 32},  # one step per image row
    "transformer_encoder": {"input_size": 32, "seq_len": 32},  # one token per row
}
INPUT_SHAPE = (1, 32, 32)  # what every model above takes: Fashion-MNIST as data.py loads it


class UsageError(NumbagradError):
    """A command-line argument that argparse or our checks refuse."""


def check_model(name: str) -> None:
    if name not in MODELS and not name.lower().endswith(".onnx"):
        raise UsageError(
            f"unknown model {name!r}; known models: {', '.join(MODELS)} (or an .onnx file)"
        )


def build_model(name: str) -> nn.Module:
    """The zoo model ``name`` for 1x32x32 inputs and 10 classes, or the ONNX file ``name``
    when its input takes 1x32x32 images."""
    check_model(name)
    if name.lower().endswith(".onnx"):
        from .onnx_model import check_fits_data, load_onnx

        model = load_onnx(name)
        check_fits_data(model, name, INPUT_SHAPE)
        return model
    return MODELS[name](**MODEL_ARGS.get(name, {}))


# --optimizer name -> (class, default lr, default momentum or None where it takes none).
OPTIMIZERS: dict[str, tuple[type[optim.Optimizer], float, float | None]] = {
    "sgd": (optim.SGD, 0.01, 0.9),
    "adam": (optim.Adam, 1e-3, None),
    "adamw": (optim.AdamW, 1e-3, None),
    "rmsprop": (optim.RMSprop, 1e-3, 0.0),
    "adagrad": (optim.Adagrad, 0.01, None),
}


def build_optimizer(
    name: str, lr: float | None, momentum: float | None, weight_decay: float, nesterov=False
) -> optim.Optimizer:
    """The ``--optimizer`` named ``name``; ``None`` takes the table's default."""
    cls, default_lr, default_momentum = OPTIMIZERS[name]
    lr = default_lr if lr is None else lr
    if default_momentum is None:
        if momentum is not None:
            raise UsageError(f"--momentum applies to sgd and rmsprop, not to --optimizer {name}")
        return cls(lr, weight_decay=weight_decay)
    momentum = default_momentum if momentum is None else momentum
    if name != "sgd":
        return cls(lr, momentum=momentum, weight_decay=weight_decay)
    if nesterov and momentum == 0:
        raise UsageError("--nesterov needs a momentum above 0")
    return cls(lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage block
        raise UsageError(message)


def int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def _finite(text: str, positive: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise argparse.ArgumentTypeError(
            f"must be a finite number {'> 0' if positive else '>= 0'}, got {text}"
        )
    return value


def non_negative(text: str) -> float:
    return _finite(text)


def positive(text: str) -> float:
    return _finite(text, positive=True)


def below_one(text: str) -> float:
    value = _finite(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be below 1, got {text}")
    return value


def add_check_finite(add) -> None:
    add(
        "--check-finite",
        action="store_true",
        default=None,  # absent: NUMBAGRAD_CHECK_FINITE decides
        help="anomaly mode: stop at the first NaN or infinity, naming the op and layer that "
        "made it (slow; also NUMBAGRAD_CHECK_FINITE=1)",
    )


def add_data_options(add) -> None:
    add("--data", metavar="DIR", help="directory with the four Fashion-MNIST IDX files")
    # Hidden: force the bundled subset even where the full data set is installed (tests).
    add("--bundled", action="store_true", help=argparse.SUPPRESS)


def load_split(args: argparse.Namespace, split: str):
    """The ``split`` of Fashion-MNIST that ``--data``/``--bundled`` select."""
    return data.load_fashion_mnist(split, args.data, bundled=True if args.bundled else None)


def describe_data(args: argparse.Namespace) -> str:
    return data.describe_source(args.data, True if args.bundled else None)
