"""Recomputation under a memory budget (graph/remat.py): the same gradients and training, an
arena within the budget, a one-sentence refusal naming the smallest arena."""

from __future__ import annotations

import _vjp_harness as _h  # a sibling helper (tests/conftest.py puts tests/graph on sys.path)
import numpy as np
import pytest

import numbagrad as ng
from numbagrad import models, nn, optim
from numbagrad.backends import interp
from numbagrad.errors import MemoryBudgetError, OptionError
from numbagrad.graph import Builder
from numbagrad.graph import ops as O
from numbagrad.graph.ops.norm_stats import channel_row
from numbagrad.graph.pipeline import saved_ids
from numbagrad.graph.remat import candidate_phases, candidates, parse_bytes, rematerialize
from numbagrad.graph.training_memory import verify_training_plan
from numbagrad.models import lenet5


def test_sizes_parse_in_decimal_and_binary_units_and_nonsense_is_refused():
    assert parse_bytes("200MB") == 200_000_000
    assert parse_bytes("1.5GiB") == 3 * 2**29
    assert parse_bytes("64 kib") == 65536
    assert parse_bytes(4096) == parse_bytes("4096") == 4096
    for bad in ("-1MB", "0", "lots", "12 parsecs", 0):
        with pytest.raises(OptionError, match="not a positive size"):
            parse_bytes(bad)


def _conv_bn_relu_conv():
    """conv -> batch-norm (batch statistics) -> relu -> conv, float64: the relu output is saved
    for the second conv's weight gradient and can be recomputed from the saved conv output."""
    b = Builder()
    x = b.leaf("input", (2, 2, 5, 5), "float64", "x")
    w1 = b.leaf("param", (3, 2, 3, 3), "float64", "w1")
    w2 = b.leaf("param", (2, 3, 3, 3), "float64", "w2")
    gamma = b.leaf("param", (1, 3, 1, 1), "float64", "gamma")
    beta = b.leaf("param", (1, 3, 1, 1), "float64", "beta")
    c = O.conv2d(x, w1, padding=1)
    stats = O.batch_norm_stats(c)
    mean = channel_row(stats, 0, c.shape)
    inv = 1.0 / O.sqrt(channel_row(stats, 1, c.shape) + 1e-5)
    h = O.relu(O.batch_norm(c, mean, inv, gamma, beta))
    out = b.build([O.sum(O.conv2d(h, w2) ** 2.0)])
    rng = np.random.default_rng(0)
    return out, {n.id: rng.standard_normal(n.shape) for n in (x, w1, w2, gamma, beta)}, h.id


def test_recomputing_a_relu_output_gives_the_same_gradients():
    fwd, feeds, relu = _conv_bn_relu_conv()
    bwd = ng.backward(fwd)
    order = candidates(fwd, bwd)
    assert relu in order
    b2, info = rematerialize(fwd, bwd, [relu])
    assert relu in saved_ids(bwd) and relu not in saved_ids(b2)
    assert info.nodes >= 2 and info.flops > 0  # batch_norm and relu at least, not the conv
    assert not any(n.op == "conv2d" and n.name == fwd[relu].name for n in b2.ops())
    values = _h.forward_values(fwd, feeds)
    expected = interp.evaluate(bwd, _h.backward_feeds(fwd, bwd, values))
    got = interp.evaluate(b2, _h.backward_feeds(fwd, b2, values))
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)


def test_a_segment_of_two_convs_is_recomputed_from_the_input_with_the_same_gradients():
    fwd, feeds, relu = _conv_bn_relu_conv()
    bwd = ng.backward(fwd)
    conv1, conv2 = (n.id for n in fwd.ops() if n.op == "conv2d")
    phases = candidate_phases(fwd, bwd)
    # Depth 1 recomputes conv1's output from the input and the ReLU from conv1's output;
    # conv2's output (saved for the square's gradient) then needs both convs: depth 2.
    assert {relu, conv1} <= set(phases[0]) and phases[1] == [conv2]
    b2, info = rematerialize(fwd, bwd, candidates(fwd, bwd))
    assert not {conv1, relu, conv2} & saved_ids(b2)
    assert sum(n.op == "conv2d" for n in b2.ops()) == 2  # both convs, once each
    values = _h.forward_values(fwd, feeds)
    expected = interp.evaluate(bwd, _h.backward_feeds(fwd, bwd, values))
    got = interp.evaluate(b2, _h.backward_feeds(fwd, b2, values))
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)


def _step(model, shape, budget=None, batch=4, disable=()):
    return ng.compile_training(
        model,
        nn.CrossEntropyLoss(),
        optim.SGD(0.05, momentum=0.9, weight_decay=1e-3),
        ng.Spec((batch, *shape)),
        ng.Spec((batch,), "int64"),
        backend="interp",
        memory_budget=budget,
        disable=disable,
    )


def test_an_impossible_budget_is_refused_in_one_sentence_naming_the_smallest_arena():
    with pytest.raises(MemoryBudgetError) as info:
        _step(lenet5(), (1, 32, 32), budget="10KiB")
    message = str(info.value)
    assert message.count(". ") == 0 and "10.0 KiB" in message
    assert "smallest arena this training step can plan" in message and "KiB" in message


def test_resnet18_under_half_its_arena_trains_like_without_and_its_arena_fits():
    # Batch 8: at batch 4 one layer4 weight gradient (9 MiB) is ~half the arena. Half of the
    # arena planned without recomputation: the default (elementwise) recomputation alone plans
    # ~0.6x of it, and half of that is below the floor the weight gradients set.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    runs = []
    for budget in (None, "half"):
        ng.manual_seed(0)
        model = models.resnet18(num_classes=10, small_input=True)
        if budget == "half":  # of the arena without recomputation
            budget = runs[0][2] // 2
        disable = ("recompute",) if budget is None else ()
        step = _step(model, (3, 32, 32), budget, batch=8, disable=disable)
        losses = [step(x, y) for _ in range(3)]
        runs.append((losses, model.state_dict(), step.report.planned_bytes, step, budget))
    (l1, w1, _, _, _), (l2, w2, arena, step, budget) = runs
    assert arena <= budget
    recomputed = step.report.recomputed
    assert recomputed.nodes > 0 and recomputed.flops > 0 and "layer1.0.relu" in str(step.report)
    _assert_plan_verified_and_trains_alike(step, (l1, w1), (l2, w2), 1e-5, (1e-4, 1e-6))


def _assert_plan_verified_and_trains_alike(step, plain, recomputing, loss_rtol, weight_tol):
    """The memory verifier passes on ``step``'s plans, and its (losses, weights) match the
    run without recomputation."""
    f, b = step.forward_graph, step.backward_graph
    plans = (step.report.plans["forward"], step.report.plans["backward"])
    verify_training_plan(f, b, plans, saved_ids(b) | frozenset(f.outputs))
    (l1, w1), (l2, w2) = plain, recomputing
    np.testing.assert_allclose(l2, l1, rtol=loss_rtol)
    for k in w1:
        np.testing.assert_allclose(w2[k], w1[k], rtol=weight_tol[0], atol=weight_tol[1])


class _BnNet(nn.Module):
    """Conv-BatchNorm-ReLU stages with a residual add and a max pool: what remat rewrites."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c3, self.b3 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.pool, self.fc = nn.MaxPool2d(2), nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        h = self.b1(self.c1(x)).relu()
        h3 = (self.b3(self.c3(self.b2(self.c2(h)).relu())) + h).relu()
        return self.fc(self.pool(h3).flatten(1))


def test_by_default_the_activations_batchnorm_rebuilds_are_recomputed_and_train_the_same():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 3, 16, 16)).astype(np.float32), rng.integers(0, 10, 4)
    runs = []
    for disable in (("recompute",), ()):
        ng.manual_seed(0)
        model = _BnNet()
        step = _step(model, (3, 16, 16), disable=disable)
        runs.append(([step(x, y) for _ in range(3)], model.state_dict(), step))
    (l1, w1, plain), (l2, w2, step) = runs
    assert plain.report.recomputed is None
    assert step.report.planned_bytes < plain.report.planned_bytes
    recomputed = step.report.recomputed.values  # ReLU outputs, not BatchNorm statistics
    assert recomputed and set(recomputed.values()) == {"relu"}
    assert step.report.recomputed.flops < 20 * x.size * 8  # elementwise: a few per element
    _assert_plan_verified_and_trains_alike(step, (l1, w1), (l2, w2), 1e-6, (1e-5, 1e-7))


def test_lenet5_recomputes_nothing_by_default():
    # Its saved values are conv outputs and pooling taps: none is rebuilt by elementwise ops.
    assert _step(lenet5(), (1, 32, 32)).report.recomputed is None


@pytest.mark.slow  # compiles the cpu kernels of two training steps
def test_cpu_training_under_a_budget_matches_training_without_recomputation():
    # This net's smallest arena is the one the default (elementwise) recomputation plans.
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 3, 16, 16)).astype(np.float32), rng.integers(0, 10, 16)
    runs = []
    for fraction in (None, 0.9):
        ng.manual_seed(0)
        model = _BnNet()
        budget = None if fraction is None else int(fraction * runs[0][2])
        step = ng.compile_training(
            model,
            nn.CrossEntropyLoss(),
            optim.SGD(0.05, momentum=0.9, weight_decay=1e-3),
            ng.Spec(x.shape),
            ng.Spec((16,), "int64"),
            memory_budget=budget,
            disable=("recompute",) if budget is None else (),
        )
        runs.append(([step(x, y) for _ in range(3)], model.state_dict(), step.report.planned_bytes))
        report = step.report
    (l1, w1, _), (l2, w2, _) = runs
    assert report.recomputed.nodes > 0 and report.planned_bytes <= int(0.9 * runs[0][2])
    np.testing.assert_allclose(l2, l1, rtol=1e-6)
    for k in w1:
        np.testing.assert_allclose(w2[k], w1[k], rtol=1e-5, atol=1e-7)
