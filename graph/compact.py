"""Compact saved values: what a training step keeps for its backward pass, in the smallest form
that serves it. ``compact_saved(forward, backward)`` rewrites the traced pair (after autodiff,
before the passes) and returns a pair that computes the same gradients:

1. Max pooling: ``max_pool2d_grad(g, x)`` reads the saved input x only to find each window's
   first maximum. The forward graph now computes those answers (``max_pool2d_taps``: one
   uint8 tap per window) and the backward graph scatters g with them
   (``max_pool2d_grad_taps``), so x is no longer saved for it.
2. A ReLU (or any op whose VJP is ``relu_grad`` on its output) before that pool:
   ``relu_grad(scatter(g, taps), y)`` only needs the sign of y where the scatter put a value,
   which is each window's maximum, i.e. the pooled output. So it becomes
   ``scatter(relu_grad(g, pooled), taps)``, which reads the (already smaller, usually saved)
   pooled output instead of y. Exact: relu_grad is 0 or g per element, and the scatter moves
   each g to an element whose y equals its window's pooled value.

With both, a conv -> ReLU -> max-pool stage keeps its pooled output and one byte per window
instead of the full-size activation (LeNet-5's first stage: 16 bytes per window become 1).
BatchNorm already saves only what its fused backward reads (its input and per-channel
statistics: graph/ops/norm_stats.py), and a ReLU output that the next layer's weight gradient
reads is saved whole anyway, so a separate sign mask would add bytes there, not save them.
"""

from __future__ import annotations

import dataclasses

from .ir import Graph, Node
from .ops.pool import MAX_ATTRS
from .ops.pool_taps import MAX_TAPS
from .rewriter import Rewriter

COMPACT_OPS = ("max_pool2d_taps", "max_pool2d_grad_taps")
"""The ops this rewrite emits: not VJP rules' (tests/graph/test_compact.py checks them)."""


def _saved(backward: Graph) -> dict[int, int]:
    """Backward leaf id -> the forward id it holds."""
    return {n.id: n.attrs["saved_from"] for n in backward.leaves() if "saved_from" in n.attrs}


class _Pair:
    """The two graphs being rewritten: forward ops added through a Rewriter, backward nodes
    kept as an ordered dict, new saved leaves beside it."""

    def __init__(self, forward: Graph, backward: Graph) -> None:
        self.forward = Rewriter(forward)
        self.backward = backward
        self.nodes: dict[int, Node] = {n.id: n for n in backward.nodes}
        self.leaves: list[Node] = []
        self.next_id = max(self.nodes, default=-1) + 1
        self.leaf_of = {f: b for b, f in _saved(backward).items()}

    def fresh(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def saved_leaf(self, forward_id: int) -> int:
        """The backward leaf that holds forward value ``forward_id`` (made if missing)."""
        if forward_id not in self.leaf_of:
            f = self.forward[forward_id]
            leaf = Node(self.fresh(), "leaf", (), {"saved_from": forward_id}, f.shape, f.dtype,
                        f.name, role="input")  # fmt: skip
            self.leaves.append(leaf)
            self.leaf_of[forward_id] = leaf.id
        return self.leaf_of[forward_id]

    def build(self) -> tuple[Graph, Graph]:
        """Leaves first (a rewritten op may read a leaf the traced order makes later), saved
        leaves that nothing reads any more dropped."""
        ops = [n for n in self.nodes.values() if not n.is_leaf]
        leaves = [*self.leaves, *(n for n in self.nodes.values() if n.is_leaf)]
        read = {i for n in ops for i in n.inputs} | set(self.backward.roots())
        nodes = [n for n in leaves if "saved_from" not in n.attrs or n.id in read] + ops
        inputs = [n.id for n in nodes if n.role == "input"]  # input leaves in node order
        b = self.backward
        backward = Graph(nodes, inputs, b.outputs, b.updates, b.output_names, b.name)
        return self.forward.build(), backward


def _window(node: Node) -> dict:
    return {k: node.attrs[k] for k in MAX_ATTRS}


def _pool_taps(pair: _Pair, node: Node, saved: dict[int, int]) -> None:
    """max_pool2d_grad(g, saved x) -> max_pool2d_grad_taps(g, saved taps of x)."""
    g, x_leaf = node.inputs
    kh, kw = node.attrs["kernel"]
    if x_leaf not in saved or kh * kw > MAX_TAPS:
        return
    x = saved[x_leaf]
    taps = pair.forward.add("max_pool2d_taps", [x], name=node.name, **_window(node))
    attrs = {**_window(node), "input_shape": node.shape}
    inputs = (g, pair.saved_leaf(taps.id))
    pair.nodes[node.id] = dataclasses.replace(node, op="max_pool2d_grad_taps", inputs=inputs,
                                              attrs=attrs)  # fmt: skip


def _pooled(pair: _Pair, x: int, window: dict) -> int | None:
    """The forward max_pool2d of ``x`` with this window, if the forward graph has one."""
    for node in pair.forward.graph.ops():
        if node.op == "max_pool2d" and node.inputs == (x,) and _window(node) == window:
            return node.id
    return None


def _relu_before_pool(pair: _Pair, node: Node, saved: dict[int, int], readers) -> None:
    """relu_grad(scatter(g, taps of y), y) -> scatter(relu_grad(g, pooled y), taps)."""
    v, y_leaf = node.inputs
    scatter = pair.nodes.get(v)
    if scatter is None or scatter.op != "max_pool2d_grad_taps" or readers.get(v) != 1:
        return
    g, taps_leaf = scatter.inputs
    y = saved.get(y_leaf)
    if y is None or pair.forward[saved[taps_leaf]].inputs != (y,):
        return
    pooled = _pooled(pair, y, _window(scatter))
    if pooled is None:
        return
    mask = pair.saved_leaf(pooled)
    masked = dataclasses.replace(node, id=pair.fresh(), inputs=(g, mask), shape=pair.nodes[g].shape)
    rebuilt: dict[int, Node] = {}
    for k, n in pair.nodes.items():
        if k == node.id:  # its readers now read the scatter of the masked gradient
            rebuilt[masked.id] = masked
            n = dataclasses.replace(scatter, id=k, inputs=(masked.id, taps_leaf), name=n.name)
        if k != v:
            rebuilt[k] = n
    pair.nodes = rebuilt


def compact_saved(forward: Graph, backward: Graph) -> tuple[Graph, Graph]:
    """The traced pair with compact saved values (module docstring); the same gradients."""
    pair = _Pair(forward, backward)
    for node in backward.ops():
        if node.op == "max_pool2d_grad":
            _pool_taps(pair, node, _saved(backward))
    readers: dict[int, int] = {}
    for n in pair.nodes.values():
        for i in n.inputs:
            readers[i] = readers.get(i, 0) + 1
    saved = {**_saved(backward), **{n.id: n.attrs["saved_from"] for n in pair.leaves}}
    for node in list(pair.nodes.values()):
        if node.op == "relu_grad":
            _relu_before_pool(pair, node, saved, readers)
    return pair.build()
