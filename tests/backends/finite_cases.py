"""Tiny models that make an infinity at a known op, layer and index from finite inputs, for the
anomaly-mode (``check_finite``) tests on every backend.

``two_layers(middle)`` is ``Linear(4, 3) -> middle -> Linear(3, 2)`` with weights set so that
the first layer's output is exactly 0 at index (1, 2) and nowhere else (positive elsewhere):
``Reciprocal`` then divides by zero in the forward graph, and ``Sqrt`` is finite forward but
its backward divides by ``sqrt(0)``."""

from __future__ import annotations

import numpy as np

import numbagrad as ng
from numbagrad import functional as F
from numbagrad import nn, optim

X_SPEC, Y_SPEC = ng.Spec((2, 4)), ng.Spec((2,), "int64")
Y = np.array([0, 1])


class Reciprocal(nn.Module):
    def forward(self, x):
        return 1.0 / x


class Sqrt(nn.Module):
    def forward(self, x):
        return F.sqrt(x)


def batch() -> np.ndarray:
    x = np.zeros((2, 4), np.float32)
    x[:, 0] = [3.0, 1.0]  # first layer's unit 2: x[:, 0] - 1 = [2, 0]
    return x


def two_layers(middle: nn.Module) -> nn.Sequential:
    model = nn.Sequential(nn.Linear(4, 3), middle, nn.Linear(3, 2))
    model[0].weight.data[...] = 0.0
    model[0].weight.data[2, 0] = 1.0
    model[0].bias.data[...] = [1.0, 1.0, -1.0]
    model[2].weight.data[...] = [[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]]
    model[2].bias.data[...] = 0.0
    return model


def training_step(middle: nn.Module, backend: str, **options):
    """A compiled SGD-momentum step of ``two_layers(middle)`` with cross-entropy."""
    model = two_layers(middle)
    loss, sgd = nn.CrossEntropyLoss(), optim.SGD(0.1, momentum=0.9)
    return ng.compile_training(model, loss, sgd, X_SPEC, Y_SPEC, backend=backend, **options)


def node_id(graph: ng.Graph, op: str, name: str) -> int:
    (node,) = [n for n in graph.ops() if n.op == op and n.name == name]
    return node.id


def made_here(graph: str, node: str, value: str, index: str) -> str:
    """The message of an op that made a non-finite value from finite inputs."""
    return (
        f"non-finite value in the {graph} graph: {node} has {value} at index {index}; "
        "the inputs were finite, so this op made it"
    )
