"""Compact saved values (graph/compact.py): max pooling keeps one uint8 tap per window, a ReLU
before it reads the pooled output; the gradients are those of the uncompacted pair."""

from __future__ import annotations

import _vjp_harness as _h  # a sibling helper (tests/conftest.py puts tests/graph on sys.path)
import numpy as np
import pytest

import numbagrad as ng
from numbagrad import nn
from numbagrad.backends import interp
from numbagrad.graph import Builder
from numbagrad.graph import ops as O
from numbagrad.graph.compact import compact_saved
from numbagrad.graph.pipeline import saved_ids
from numbagrad.models import lenet5


def _grads(fwd, bwd, feeds):
    values = _h.forward_values(fwd, feeds)
    return interp.evaluate(bwd, _h.backward_feeds(fwd, bwd, values))


def _conv_relu_pool(kernel, stride, padding, dtype="float64"):
    """sum(maxpool(relu(conv(x, w))) * r): the stage compaction rewrites."""
    b = Builder()
    x = b.leaf("input", (2, 2, 7, 6), dtype, "x")
    w = b.leaf("param", (3, 2, 3, 3), dtype, "w")
    y = O.max_pool2d(O.relu(O.conv2d(x, w, padding=1)), kernel, stride, padding)
    r = b.leaf("input", y.shape, dtype, "r")
    fwd = b.build([O.sum(y * r)])
    rng = np.random.default_rng(0)
    feeds = {n.id: rng.standard_normal(n.shape).astype(dtype) for n in (x, w, r)}
    return fwd, feeds


@pytest.mark.parametrize("window", [(2, 2, 0), (3, 2, 1), (3, 1, 1)], ids=["2s2", "3s2p1", "3s1p1"])
def test_pool_and_relu_gradients_are_unchanged(window):
    fwd, feeds = _conv_relu_pool(*window)
    bwd = ng.backward(fwd)
    f2, b2 = compact_saved(fwd, bwd)
    ops = [n.op for n in b2.ops()]
    assert "max_pool2d_grad" not in ops and "max_pool2d_grad_taps" in ops
    relu_out = next(n.id for n in fwd.ops() if n.op == "relu")
    assert relu_out in saved_ids(bwd) and relu_out not in saved_ids(b2)  # no longer kept
    taps = [f2[i] for i in saved_ids(b2) if f2[i].op == "max_pool2d_taps"]
    assert [t.dtype for t in taps] == ["uint8"]
    for got, expected in zip(_grads(f2, b2, feeds), _grads(fwd, bwd, feeds)):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_a_pool_without_relu_keeps_only_taps_and_its_other_readers_stay():
    b = Builder()
    x = b.leaf("param", (1, 2, 4, 4), "float64", "x")
    y = O.max_pool2d(x * 3.0, 2)  # mul's VJP reads no output; the pool's reads x * 3
    out = b.build([O.sum(y * y)])  # y read by its own square's VJP: still saved
    bwd = ng.backward(out)
    f2, b2 = compact_saved(out, bwd)
    assert {f2[i].op for i in saved_ids(b2)} == {"max_pool2d", "max_pool2d_taps"}
    feeds = {x.id: np.random.default_rng(1).standard_normal(x.shape)}
    for got, expected in zip(_grads(f2, b2, feeds), _grads(out, bwd, feeds)):
        np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_lenet_saves_less_and_trains_the_same():
    rng = np.random.default_rng(0)
    n = 16  # at batch 2 the third conv's weight gradient sets the arena: no change to see
    x, y = rng.standard_normal((n, 1, 32, 32)).astype(np.float32), rng.integers(0, 10, n)
    runs = []
    for disable in ((), ("compact_saved",)):
        ng.manual_seed(0)
        model = lenet5()
        step = ng.compile_training(
            model,
            nn.CrossEntropyLoss(),
            ng.optim.SGD(0.05, momentum=0.9),
            ng.Spec((n, 1, 32, 32)),
            ng.Spec((n,), "int64"),
            backend="interp",
            disable=disable,
        )
        losses = [step(x, y) for _ in range(3)]
        saved = sum(step.forward_graph[i].nbytes for i in saved_ids(step.backward_graph))
        runs.append((losses, model.state_dict(), saved, step.report.planned_bytes))
    (l1, w1, saved1, arena1), (l2, w2, saved2, arena2) = runs
    # Both pool inputs (6x28x28 and 16x10x10 float32 per image) leave; 1 byte per window joins.
    assert saved2 - saved1 == n * (4 * (6 * 28 * 28 + 16 * 10 * 10) - (6 * 14 * 14 + 16 * 5 * 5))
    assert arena1 < arena2
    np.testing.assert_allclose(l1, l2, rtol=1e-6)
    for k in w1:
        np.testing.assert_allclose(w1[k], w2[k], rtol=1e-5, atol=1e-7)
