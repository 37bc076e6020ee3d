"""Training BatchNorm reads its activation as few times as the math needs, after the default
passes: forward, one ``batch_norm_stats`` pass and one elementwise pass that also holds the
ReLU (and the residual add); backward, one ``batch_norm_grad_stats`` pass over (g, x) and one
elementwise pass for dx."""

from __future__ import annotations

import numbagrad as ng
from numbagrad import nn, optim

SHAPE = (2, 4, 6, 6)


class Block(nn.Module):
    """A residual block: conv -> BN -> ReLU -> conv -> BN -> + x -> ReLU, then a classifier."""

    def __init__(self, c: int = SHAPE[1]) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, 3)

    def forward(self, x):
        h = self.bn1(self.conv1(x)).relu()
        h = (self.bn2(self.conv2(h)) + x).relu()
        return self.fc(h.mean((2, 3)))


def _step():
    spec, targets = ng.Spec(SHAPE), ng.Spec((2,), "int64")
    return ng.compile_training(Block(), nn.CrossEntropyLoss(), optim.SGD(0.1), spec, targets)


def _body_ops(node) -> set[str]:
    return {op for op, _, _ in node.attrs.get("body", ())} or {node.op}


def test_forward_reads_each_conv_output_twice_and_fuses_the_activation():
    graph = _step().forward_graph
    convs = [n for n in graph.ops() if n.op == "conv2d"]
    assert len(convs) == 2
    users = graph.users()
    expected = [{"batch_norm", "relu"}, {"batch_norm", "add", "relu"}]
    for conv, body in zip(convs, expected):
        readers = sorted((graph[u] for u in users[conv.id]), key=lambda n: n.op)
        assert [n.op for n in readers] == ["batch_norm_stats", "fused_elementwise"]
        assert _body_ops(readers[1]) == body


def test_backward_reads_each_activation_gradient_in_two_kernels():
    graph = _step().backward_graph
    for layer in ("bn1", "bn2"):
        passes = [
            n
            for n in graph.ops()
            if n.name == layer and any(graph[i].shape == SHAPE for i in n.inputs)
        ]
        assert sorted(n.op for n in passes) == ["batch_norm_grad_stats", "fused_elementwise"]
