"""Tracing: the printed graph with layer paths, parameters named by state_dict keys; state_dict
round trips into compiled steps, manual_seed reproducibility; conv2d string padding against
PyTorch. Reverse mode is in test_autodiff_backward.py, SGD training in test_sgd_training.py."""

from __future__ import annotations

import re

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import functional as F
from numbagrad import nn, optim
from numbagrad.models import lenet5, mlp

# --- printing and naming ------------------------------------------------------------------


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(F.flatten(self.features(x), 1))


def test_graph_prints_one_line_per_node_with_layer_paths(capsys):
    graph = ng.trace(Net(), ng.Spec((2, 1, 6, 6)))
    print(graph)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "graph Net:"
    assert lines[1:-1] == ["  " + n.format() for n in graph.nodes]
    assert lines[-1] == f"  return %{graph.outputs[0]}"
    body = "\n".join(lines)
    assert "%0 = input -> f32[2,1,6,6]  # input0" in body
    assert "%1 = param -> f32[2,1,3,3]  # features.0.weight" in body
    assert re.search(
        r"%3 = conv2d\(%0, %1, %2\) stride=1x1 padding=0x0 dilation=1x1 groups=1 "
        r"-> f32\[2,2,4,4\]  # features\.0$",
        body,
        re.M,
    )
    assert re.search(r"= relu\(%3\) -> f32\[2,2,4,4\]  # features\.1$", body, re.M)
    assert re.search(
        r"= max_pool2d\(%\d+\) kernel=2x2 stride=2x2 .*-> f32\[2,2,2,2\]  # features\.2$",
        body,
        re.M,
    )
    # The top-level module's own ops (flatten here) have the empty path and no comment.
    assert re.search(r"%6 = reshape\(%5\) shape=2x8 -> f32\[2,8\]$", body, re.M)
    assert re.search(
        r"= matmul\(%\d+, %\d+\) trans_a=False trans_b=True -> f32\[2,3\]  # head$", body, re.M
    )
    # Every op node carries the path of the module that emitted it.
    for n in graph.ops():
        assert n.name in {"features.0", "features.1", "features.2", "head", ""}, n.format()


def test_trace_names_parameters_by_state_dict_keys():
    model = lenet5()
    graph = ng.trace(model, ng.Spec((1, 1, 32, 32)))
    params = graph.leaves("param")
    assert [p.name for p in params] == list(model.state_dict())
    for p in params:
        assert p.shape == model.state_dict()[p.name].shape and p.dtype == "float32"
    # Nested modules: dotted paths, as PyTorch.
    net = Net()
    names = [p.name for p in ng.trace(net, ng.Spec((2, 1, 6, 6))).leaves("param")]
    assert names == ["features.0.weight", "features.0.bias", "head.weight", "head.bias"]
    assert names == list(net.state_dict())


# --- state ---------------------------------------------------------------------------------


def test_state_dict_round_trip_and_compiled_steps_see_loaded_values():
    ng.manual_seed(7)
    model = mlp([4, 8, 3])
    saved = model.state_dict()
    # state_dict hands out copies.
    saved_copy = {k: v.copy() for k, v in saved.items()}
    saved["0.weight"][...] = 123.0
    np.testing.assert_array_equal(model.state_dict()["0.weight"], saved_copy["0.weight"])

    x = np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32)
    y = np.arange(6) % 3
    predict = ng.compile(model, ng.Spec((6, 4)), backend="interp")
    out_before = predict(x)
    step = ng.compile_training(
        model,
        nn.CrossEntropyLoss(),
        optim.SGD(lr=0.5),
        ng.Spec((6, 4)),
        ng.Spec((6,), "int64"),
        "interp",
    )
    first_loss = step(x, y)
    second_loss = step(x, y)
    assert second_loss < first_loss  # training moved the parameters
    assert not np.allclose(predict(x), out_before)

    model.load_state_dict(saved_copy)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, saved_copy[key])
    # Loaded in place: the already-compiled executables see the restored values.
    np.testing.assert_array_equal(predict(x), out_before)
    assert step(x, y) == first_loss

    # Into a differently initialized model of the same architecture.
    ng.manual_seed(8)
    other = mlp([4, 8, 3])
    assert not np.array_equal(other.state_dict()["0.weight"], saved_copy["0.weight"])
    other.load_state_dict(model.state_dict())  # (one step past saved_copy by now)
    np.testing.assert_array_equal(
        ng.compile(other, ng.Spec((6, 4)), backend="interp")(x), predict(x)
    )


def test_manual_seed_makes_initialization_reproducible():
    ng.manual_seed(42)
    a = lenet5().state_dict()
    ng.manual_seed(42)
    b = lenet5().state_dict()
    ng.manual_seed(43)
    c = lenet5().state_dict()
    assert list(a) == list(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["0.weight"], c["0.weight"])
    # Without reseeding, the next model draws new numbers.
    ng.manual_seed(42)
    lenet5()
    d = lenet5().state_dict()
    assert not np.array_equal(a["0.weight"], d["0.weight"])
    # PyTorch's default bound for Linear/Conv2d: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    bound = 1 / np.sqrt(1 * 5 * 5)
    assert np.abs(a["0.weight"]).max() <= bound and np.abs(a["0.bias"]).max() <= bound
    assert np.abs(a["0.weight"]).max() > 0.8 * bound


@pytest.mark.parametrize(
    ("padding", "kernel", "dilation"), [("same", 3, 1), ("same", (5, 3), 2), ("valid", 4, 1)]
)
def test_conv2d_string_padding_matches_torch(padding, kernel, dilation):
    torch = pytest.importorskip("torch")
    layer = nn.Conv2d(2, 3, kernel, padding=padding, dilation=dilation)
    reference = torch.nn.Conv2d(2, 3, kernel, padding=padding, dilation=dilation)
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((1, 2, 9, 8)).astype(np.float32)
    got = ng.compile(nn.Sequential(layer), ng.Spec(x.shape), backend="cpu")(x)
    np.testing.assert_allclose(got, reference(torch.from_numpy(x)).detach().numpy(), atol=1e-5)


def test_conv2d_same_padding_refuses_what_it_cannot_do():
    with pytest.raises(ng.errors.ShapeError, match="needs stride 1"):
        nn.Conv2d(1, 1, 3, stride=2, padding="same")
    with pytest.raises(ng.errors.ShapeError, match="uneven padding"):
        nn.Conv2d(1, 1, 4, padding="same")
    with pytest.raises(ng.errors.ShapeError, match="'valid' or 'same'"):
        nn.Conv2d(1, 1, 3, padding="full")
