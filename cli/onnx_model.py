"""ONNX files where the commands take a model: ``numbagrad compile model.onnx``, ``summary
model.onnx``, ``train model.onnx`` (when its input fits the data). The onnx package is
imported only here, on use: the commands work without the ``onnx`` extra otherwise."""

from __future__ import annotations

import argparse

from ..engine import nn
from .common import UsageError


def is_onnx(model: str) -> bool:
    return model.lower().endswith(".onnx")


def load_onnx(path: str) -> nn.Module:
    """``ng.from_onnx(path)``; a missing onnx package is a usage error that says what to do."""
    try:
        from ..interop import from_onnx
    except ImportError as e:
        raise UsageError(f"reading {path} needs the onnx package: pip install numbagrad[onnx] "
                         f"({e})") from None  # fmt: skip
    return from_onnx(path)


def parse_shape(text: str) -> tuple[int, ...]:
    """``--input-shape 1,3,224,224``."""
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"expected positive integers like 1,3,224,224, got {text!r}"
        )
    return shape


def input_shape(model: nn.Module, given: tuple[int, ...] | None, batch: int = 1):
    """``given``, else the model's declared input shape with a free batch axis set to
    ``batch``; a model whose other axes are free needs ``--input-shape``."""
    if given is not None:
        return given
    declared = model.declared_input_shape()
    if declared and None not in declared[1:]:
        return (batch if declared[0] is None else declared[0], *declared[1:])
    shown = ",".join("?" if d is None else str(d) for d in declared)
    raise UsageError(f"the ONNX model's input has shape [{shown}]; give --input-shape")


def check_fits_data(model: nn.Module, path: str, sample_shape: tuple[int, ...]) -> None:
    """Refuse an ONNX model whose declared input cannot take batches of ``sample_shape``."""
    declared = model.declared_input_shape()
    fits = len(declared) == 1 + len(sample_shape) and all(
        d is None or d == s for d, s in zip(declared[1:], sample_shape)
    )
    if declared and not fits:
        shown = ",".join("?" if d is None else str(d) for d in declared)
        raise UsageError(
            f"{path} takes input [{shown}], but the data are batches of "
            f"{'x'.join(map(str, sample_shape))} images"
        )
