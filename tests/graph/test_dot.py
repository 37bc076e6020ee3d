"""Graphviz export (graph/dot.py): fusion groups predicted in an unfused graph are the kernels
the fusion passes make; labels carry op, type, layer; edges carry bytes."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter

import pytest

import numbagrad as ng
from numbagrad import nn, optim
from numbagrad.graph.dot import format_bytes, fusion_groups, is_fused, to_dot
from numbagrad.graph.passes import fuse_elementwise, fuse_epilogue
from numbagrad.graph.pipeline import optimize, saved_ids
from numbagrad.models import lenet5, resnet18


def _training_graphs():
    ng.manual_seed(0)
    step = ng.compile_training(
        lenet5(),
        nn.CrossEntropyLoss(),
        optim.SGD(0.1, momentum=0.9),
        ng.Spec((2, 1, 32, 32)),
        ng.Spec((2,), "int64"),
        backend="interp",
        passes=["dce", "cse"],
        disable=["plan_memory"],
    )
    fwd, bwd = step.forward_graph, step.backward_graph
    return {"forward": (fwd, frozenset(saved_ids(bwd)) | set(fwd.outputs)), "backward": (bwd,)}


def _fused_ops(node) -> list[str]:
    """The ops a fused node stands for: the producer (and a reshape) of an epilogue, its body."""
    body = [op for op, _, _ in node.attrs["body"]]
    if node.op == "fused_elementwise":
        return body
    producer = node.op.removesuffix("_epilogue")
    return [producer, *(["reshape"] if node.attrs["view"] is not None else []), *body]


@pytest.fixture(scope="module")
def graphs():
    cases = _training_graphs()
    ng.manual_seed(0)
    resnet = ng.trace(resnet18(num_classes=10, in_channels=1).eval(), ng.Spec((1, 1, 32, 32)))
    cases["resnet18"] = (optimize(resnet, ["dce", "cse"], plan=False)[0],)
    return cases


@pytest.mark.parametrize("name", ["forward", "backward", "resnet18"])
def test_predicted_groups_are_the_kernels_fusion_makes(graphs, name):
    graph, *keep = graphs[name]
    keep = keep[0] if keep else frozenset()
    groups = fusion_groups(graph, keep)
    fused = fuse_epilogue(fuse_elementwise(graph, keep), keep)
    kernels = [n for n in fused.ops() if is_fused(n)]
    assert kernels and set(groups.values()) == {n.id for n in kernels}
    for kernel in kernels:
        members = [graph[i].op for i, g in groups.items() if g == kernel.id]
        assert Counter(members) == Counter(_fused_ops(kernel)), kernel.format()
    for node in graph.ops():  # every op left out of a group runs as it is
        assert node.id in groups or fused[node.id] == node


def test_dot_labels_nodes_and_edges():
    ng.manual_seed(0)
    graph = ng.trace(lenet5(), ng.Spec((1, 1, 32, 32)))
    dot = to_dot(graph, fusion_groups(graph))
    assert dot.startswith('digraph "')
    first_conv = next(n for n in graph.ops() if n.op == "conv2d")
    assert f'n{first_conv.id} [label="%{first_conv.id} conv2d\\nf32[1,6,28,28]\\n0"' in dot
    x = graph.inputs[0]
    assert f'n{x} -> n{first_conv.id} [label="4.0 KiB"];' in dot  # 1x1x32x32 float32
    relu = next(n for n in graph.ops() if n.op == "relu")
    colour = re.compile(r"n(\d+) \[.*fillcolor=(\w+)\];")
    lines = [line.strip() for line in dot.splitlines()]
    fills = {int(m[1]): m[2] for m in map(colour.match, lines) if m}
    assert fills[first_conv.id] == fills[relu.id] != "white"  # one kernel: conv + ReLU


def test_format_bytes():
    assert [format_bytes(n) for n in (0, 512, 1023, 12800, 3 << 20, 5 << 30)] == [
        "0 B",
        "512 B",
        "1023 B",
        "12.5 KiB",
        "3.0 MiB",
        "5120.0 MiB",
    ]


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot is not installed")
def test_graphviz_reads_the_backward_graph(graphs):
    graph = graphs["backward"][0]
    result = subprocess.run(
        ["dot", "-Tsvg"], input=to_dot(graph, fusion_groups(graph)), capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "<svg" in result.stdout
