"""Shared by the ONNX tests that use PyTorch (imported after they skipped without torch, onnx,
onnxruntime): models of the zoo's families, exported by both exporters."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import torch
import torch_zoo as tz
from torch import nn

EXPORTERS = {"legacy": False, "dynamo": True}


def lenet5() -> nn.Module:
    """The zoo's modern LeNet-5 (models.lenet5), same layer indices."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv2d(16, 120, 5), nn.ReLU(), nn.Flatten(), nn.Linear(120, 84),
        nn.ReLU(), nn.Linear(84, 10),
    )  # fmt: skip


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Statistics and affine terms away from their defaults, so a wrong BatchNorm shows."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model


def perturb_parameters(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter moved by noise, so no two are equal: the dynamo exporter's optimizer
    stores equal initializers once (LayerNorm's ones, zero biases), which would tie them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


MODELS = {  # name -> (constructor, input shape)
    "lenet5": (lenet5, (2, 1, 32, 32)),
    "resnet18": (lambda: tz.resnet18(num_classes=10), (1, 3, 32, 32)),
    "vgg11": (lambda: tz.VGG(tz.VGG_CFGS["vgg11"], num_classes=10, hidden=32, side=1),
              (1, 3, 32, 32)),
    "googlenet": (lambda: tz.GoogLeNet(num_classes=10), (1, 3, 32, 32)),
    "transformer": (lambda: tz.TransformerClassifier(8, 6, 16, 2, 1, 32, 5), (2, 6, 8)),
    "lstm": (lambda: tz.LSTMClassifier(4, 5, 3, num_layers=2), (2, 6, 4)),
}  # fmt: skip


def export(model: nn.Module, shape, path: Path, exporter: str, opset=None, **kwargs) -> Path:
    """``torch.onnx.export`` of ``model`` (eval mode) on a random input of ``shape``, at
    ``opset`` (default: 17 legacy, 18 dynamo)."""
    model.eval()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    opset = opset or (18 if EXPORTERS[exporter] else 17)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=EXPORTERS[exporter],
                          opset_version=opset, **kwargs)  # fmt: skip
    return path


def export_zoo(name: str, folder: Path, exporter: str) -> tuple[Path, tuple[int, ...]]:
    torch.manual_seed(0)
    build, shape = MODELS[name]
    model = randomize_batchnorm(build())
    return export(model, shape, folder / f"{name}_{exporter}.onnx", exporter), shape
