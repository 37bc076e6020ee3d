"""1x1-conv folding (graph/passes/fold_1x1.py) on graphs: each rewrite keeps the values and
fires exactly where it is valid. The whole-model checks (training steps, gradients, the
default pipeline) are in test_fold_1x1_models.py."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numbagrad.backends import interp
from numbagrad.graph import Builder, Graph
from numbagrad.graph import ops as O
from numbagrad.graph.passes import PASSES, fold_conv_bn, merge_1x1_chain, merge_parallel
from numbagrad.graph.passes.fold_1x1 import chain_pays

# --- graph-level harness ---------------------------------------------------------------------


def _values(graph: Graph, seed: int = 0) -> list[np.ndarray]:
    """Evaluate ``graph`` on random feeds for every non-const leaf (positive for names
    starting with ``pos``), keyed by leaf name so a rewritten graph gets the same feeds."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for leaf in sorted(graph.leaves(), key=lambda n: n.name):
        if leaf.role == "const":
            continue
        value = rng.standard_normal(leaf.shape)
        feeds[leaf.id] = np.abs(value) + 0.5 if leaf.name.startswith("pos") else value
    return interp.evaluate(graph, feeds)


def _assert_same_values(before: Graph, after: Graph) -> None:
    assert [before[o].shape for o in before.outputs] == [after[o].shape for o in after.outputs]
    for a, b in zip(_values(before), _values(after)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def _ops(graph: Graph, *names: str) -> list:
    return [n for n in graph.ops() if n.op in names]


def _param(b: Builder, name: str, *shape: int):
    return b.leaf("param", shape, "float64", name)


def _x(b: Builder, *shape: int):
    return b.leaf("input", shape, "float64", "x")


# --- fold_conv_bn ---------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("groups", [1, 2])
def test_fold_conv_bn_folds_every_affine_form(bias, groups):
    b = Builder()
    x = _x(b, 2, 4, 6, 5)
    w = _param(b, "w", 6, 4 // groups, 3, 3)
    y = O.conv2d(x, w, _param(b, "b", 6) if bias else None, padding=1, groups=groups)
    y = y * _param(b, "s", 6, 1, 1)  # mul by (C, 1, 1)
    y = _param(b, "t", 1, 6, 1, 1) + y  # add, conv second
    y = y - 0.5  # sub of a scalar constant
    y = y / _param(b, "pos_d", 6, 1, 1)  # div
    mean, gamma, beta = (_param(b, n, 1, 6, 1, 1) for n in ("mean", "gamma", "beta"))
    inv_std = 1.0 / O.sqrt(_param(b, "pos_var", 1, 6, 1, 1) + 1e-5)
    y = O.batch_norm(y, mean, inv_std, gamma, beta)
    graph = b.build([y.relu()])
    folded = PASSES["dce"](fold_conv_bn(graph))
    convs = _ops(folded, "conv2d")
    assert len(convs) == 1 and len(convs[0].inputs) == 3  # the folds produce a bias
    activation = convs[0].size
    assert all(n.size < activation for n in folded.ops() if n.op not in ("conv2d", "relu"))
    _assert_same_values(graph, folded)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(
    groups=st.sampled_from([1, 2]),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 2),
    padding=st.integers(0, 1),
    dilation=st.integers(1, 2),
    bias=st.booleans(),
    second=st.integers(1, 4),
)
def test_folds_over_conv_geometries(groups, kernel, stride, padding, dilation, bias, second):
    """BN folds into any conv; a following 1x1 conv merges into any ungrouped one."""
    b = Builder()
    x = _x(b, 2, 2 * groups, 7, 6)
    w = _param(b, "w", 2 * groups, 2, kernel, kernel)
    bias_ = _param(b, "b", 2 * groups) if bias else None
    y = O.conv2d(x, w, bias_, stride, padding, dilation, groups)
    channel = (1, 2 * groups, 1, 1)
    y = O.batch_norm(y, *(_param(b, n, *channel) for n in ("mean", "pos_inv", "gamma", "beta")))
    y = O.conv2d(y, _param(b, "w2", second, 2 * groups, 1, 1), _param(b, "b2", second))
    graph = b.build([y])
    folded = fold_conv_bn(graph)
    assert "batch_norm" not in {n.op for n in folded.ops()}
    _assert_same_values(graph, folded)
    merged = merge_1x1_chain(folded)
    pixels = 2 * y.shape[2] * y.shape[3]
    if groups == 1 and chain_pays((2, 2, kernel, kernel), second, pixels):
        assert len(_ops(PASSES["dce"](merged), "conv2d")) == 1
    _assert_same_values(graph, merged)


def _conv_then(build_tail, keep_conv=False):
    """conv(x, w, b) followed by ``build_tail(b, x, conv)``; returns graph, keep set."""
    b = Builder()
    x = _x(b, 2, 3, 5, 5)
    conv = O.conv2d(x, _param(b, "w", 4, 3, 1, 1), _param(b, "b", 4))
    out = build_tail(b, x, conv)
    graph = b.build([out])
    return graph, frozenset({conv.id} if keep_conv else ())


@pytest.mark.parametrize(
    "case",
    [
        "second_reader",
        "input_dependent_scale",
        "not_per_channel",
        "kept_conv_output",
        "reversed_sub",
    ],
)
def test_fold_conv_bn_leaves_what_it_may_not_fold(case):
    tails = {
        "second_reader": lambda b, x, c: c * _param(b, "s", 4, 1, 1) + c,
        "input_dependent_scale": lambda b, x, c: c * O.mean(x, (0, 1, 2, 3), keepdims=True),
        "not_per_channel": lambda b, x, c: c * _param(b, "s", 1, 1, 1, 5),
        "kept_conv_output": lambda b, x, c: c * _param(b, "s", 4, 1, 1),
        "reversed_sub": lambda b, x, c: _param(b, "t", 4, 1, 1) - c,
    }
    graph, keep = _conv_then(tails[case], keep_conv=case == "kept_conv_output")
    assert fold_conv_bn(graph, keep) is graph


# --- merge_1x1_chain ------------------------------------------------------------------------


def _chain(first_out, second_out, *, first_kernel=3, relu=False, first_bias=True):
    b = Builder()
    x = _x(b, 2, 5, 6, 6)
    w1 = _param(b, "w1", first_out, 5, first_kernel, first_kernel)
    y = O.conv2d(x, w1, _param(b, "b1", first_out) if first_bias else None, 2, 1, 1)
    y = y.relu() if relu else y
    y = O.conv2d(y, _param(b, "w2", second_out, first_out, 1, 1), _param(b, "b2", second_out))
    return b.build([y]), y.node.inputs[0]


@pytest.mark.parametrize("first_bias", [True, False])
def test_merge_1x1_chain_multiplies_the_weights(first_bias):
    graph, _ = _chain(6, 4, first_bias=first_bias)
    merged = PASSES["dce"](merge_1x1_chain(graph))
    (conv,) = _ops(merged, "conv2d")
    assert conv.attrs["stride"] == (2, 2) and conv.attrs["padding"] == (1, 1)
    assert conv.shape == graph[graph.outputs[0]].shape
    assert _ops(merged, "matmul")  # the weight product, recomputed from the parameters
    _assert_same_values(graph, merged)


def test_three_pointwise_convs_in_a_row_become_one():
    b = Builder()
    y = _x(b, 1, 4, 3, 3)
    for i, (cin, cout) in enumerate([(4, 4), (4, 3), (3, 2)]):
        y = O.conv2d(y, _param(b, f"w{i}", cout, cin, 1, 1), _param(b, f"b{i}", cout))
    graph = b.build([y])
    merged = PASSES["dce"](merge_1x1_chain(graph))
    assert len(_ops(merged, "conv2d")) == 1
    _assert_same_values(graph, merged)


def test_merge_1x1_chain_only_where_valid_and_cheaper():
    assert not chain_pays((2, 64, 1, 1), 64, 1000)  # a bottleneck stays two convs
    assert chain_pays((64, 8, 1, 1), 16, 1000)
    bottleneck, _ = _chain(2, 8, first_kernel=1)
    assert merge_1x1_chain(bottleneck) is bottleneck
    with_relu, _ = _chain(6, 4, relu=True)
    assert merge_1x1_chain(with_relu) is with_relu
    saved, middle = _chain(6, 4)  # the backward graph reads the middle value
    assert merge_1x1_chain(saved, frozenset({middle})) is saved


# --- merge_parallel -------------------------------------------------------------------------


def _inception(activation=("relu", "relu", "relu")):
    b = Builder()
    x = _x(b, 2, 4, 5, 5)
    outs, convs = [], []
    for i, (k, act) in enumerate(zip((3, 2, 4), activation)):
        bias = _param(b, f"b{i}", k) if i != 1 else None  # one branch without bias
        conv = O.conv2d(x, _param(b, f"w{i}", k, 4, 1, 1), bias)
        convs.append(conv)
        outs.append(getattr(conv, act)() if act else conv)
    pooled = O.max_pool2d(x, 3, 1, 1)
    outs.append(O.conv2d(pooled, _param(b, "w3", 2, 4, 1, 1)).relu())
    outs[1] = O.conv2d(outs[1], _param(b, "w4", 3, 2, 3, 3), padding=1)
    return b.build([O.concat(outs, 1)]), convs, x


def test_parallel_1x1_convs_become_one_wider_conv():
    graph, _, x = _inception()
    merged = PASSES["dce"](merge_parallel(graph))
    readers = [n for n in _ops(merged, "conv2d") if n.inputs[0] == x.id]
    assert len(readers) == 1 and readers[0].shape[1] == 3 + 2 + 4
    # The shared ReLU runs once, on the wide output, before the slices.
    relus = [n for n in _ops(merged, "relu") if n.inputs[0] == readers[0].id]
    assert len(relus) == 1 and len(_ops(merged, "slice")) == 3
    _assert_same_values(graph, merged)


def test_parallel_convs_with_different_activations_and_kept_outputs():
    graph, convs, x = _inception(("relu", "tanh", None))
    keep = frozenset(c.id for c in convs)
    merged = merge_parallel(graph, keep)
    for c in convs:  # kept ids keep their values, as slices of the wide conv
        assert merged[c.id].op == "slice"
    assert len([n for n in _ops(merged, "conv2d") if n.inputs[0] == x.id]) == 1
    _assert_same_values(graph, merged)
    everything = Graph(graph.nodes, graph.inputs, [c.id for c in convs])
    kept_after = Graph(merged.nodes, merged.inputs, [c.id for c in convs])
    _assert_same_values(everything, kept_after)
