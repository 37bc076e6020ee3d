"""Imported ONNX models on backend="cuda" (the CUDA simulator unless NUMBAGRAD_TEST_REAL_GPU=1,
so at simulator scale): a small conv net, a transformer encoder layer, LeNet-5, and the
ResNet-18, VGG-11 and GoogLeNet topologies give onnxruntime's outputs. The first two run from
both exporters; the zoo's four import to the same graph from either (checked here), so each
runs from one, the simulator's minutes not spent twice on the same kernels.

The simulator runs each GPU thread as Python, so the full-width ResNet-18 takes over 15 minutes
even at 16x16 (full widths are checked on interp and cpu, test_onnx_models.py). Here these
three families are onnx_narrow_zoo.py's: the same layers, blocks, kernels, strides, paddings
and pools (so the same ONNX operators and attributes in the same graph), only every channel
count divided by 16 and the input 16x16 (32x32 for VGG-11, whose five pools need it)."""

from __future__ import annotations

from collections import Counter

import pytest
from cuda_setup import REAL_GPU, require_cuda_backend  # first: it chooses the simulator

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

import torch_zoo as tz  # noqa: E402
from onnx_cases import EXPORTERS, export, lenet5, randomize_batchnorm  # noqa: E402
from onnx_narrow_zoo import NarrowGoogLeNet, NarrowResNet18, narrow_vgg11  # noqa: E402
from onnx_oracle import rel_err, run_ort, sample  # noqa: E402

import numbagrad as ng  # noqa: E402

require_cuda_backend()
pytestmark = [pytest.mark.cuda, pytest.mark.torch] + ([pytest.mark.gpu] if REAL_GPU else [])


def small_convnet() -> torch.nn.Module:
    """Conv, BatchNorm, ceil-mode max pooling (uneven padding), Linear."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.BatchNorm2d(3), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2, ceil_mode=True), torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5),
    )  # fmt: skip


CASES = {
    "convnet": (small_convnet, (2, 1, 7, 7)),
    "transformer": (lambda: tz.TransformerClassifier(4, 3, 8, 2, 1, 8, 3), (2, 3, 4)),
    "lenet5": (lenet5, (1, 1, 32, 32)),
    "resnet18": (NarrowResNet18, (1, 3, 16, 16)),
    "vgg11": (narrow_vgg11, (1, 3, 32, 32)),
    "googlenet": (NarrowGoogLeNet, (1, 3, 16, 16)),
}


# The zoo's topologies: the same traced graph from both exporters (test below), one on CUDA.
ONE_EXPORTER = {"lenet5": "legacy", "resnet18": "dynamo", "vgg11": "legacy", "googlenet": "dynamo"}


@pytest.mark.parametrize(
    "name, exporter",
    [(n, e) for n in CASES for e in EXPORTERS if ONE_EXPORTER.get(n, e) == e],
)
def test_imported_model_on_cuda_matches_onnxruntime(tmp_path, name, exporter):
    torch.manual_seed(0)
    build, shape = CASES[name]
    path = export(randomize_batchnorm(build()), shape, tmp_path / "m.onnx", exporter)
    x = sample(shape)
    got = ng.compile(ng.from_onnx(path), ng.Spec(shape), backend="cuda")(x)
    assert rel_err(got, run_ort(path, x)[0]) < 1e-4


def _traced_nodes(path, shape) -> Counter:
    """The traced graph of an imported model as a multiset of (op, shape, attributes)."""
    graph = ng.compile(ng.from_onnx(path), ng.Spec(shape), backend="interp").traced_graph
    return Counter((n.op, n.shape, repr(sorted(n.attrs.items()))) for n in graph.nodes)


@pytest.mark.parametrize("name", list(ONE_EXPORTER))
def test_both_exporters_give_the_same_graph(tmp_path, name):
    """What lets the test above run the zoo's topologies from one exporter only."""
    build, shape = CASES[name]
    graphs = []
    for exporter in EXPORTERS:
        torch.manual_seed(0)
        path = export(randomize_batchnorm(build()), shape, tmp_path / f"{exporter}.onnx", exporter)
        graphs.append(_traced_nodes(path, shape))
    assert graphs[0] == graphs[1]
