"""Memory-aware scheduling (graph/passes/schedule.py): the same values in an order with a lower
planned peak; updates right after their gradient; the memory verifier on every zoo model."""

from __future__ import annotations

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import nn, optim
from numbagrad.cli.common import MODELS, build_model
from numbagrad.graph import Builder
from numbagrad.graph import ops as O
from numbagrad.graph.memory import inplace_updates, plan_memory, verify_plan
from numbagrad.graph.passes import schedule
from numbagrad.graph.pipeline import saved_ids
from numbagrad.graph.training_memory import verify_training_plan
from numbagrad.models import lenet5

N = 64 * 64  # elements of each gradient below: 16 KiB in float32


def _late_updates():
    """Two params whose updates are emitted after both gradients, as optimizers append them:
    the first gradient stays live across the second's computation."""
    b = Builder()
    x = b.leaf("input", (N,), "float32", "x")
    lr = b.leaf("input", (), "float32", "lr")
    w1 = b.leaf("param", (N,), "float32", "w1")
    w2 = b.leaf("param", (N,), "float32", "w2")
    g1 = O.exp(x * w1)
    g2 = O.tanh(x * w2)
    u1, u2 = w1 - lr * g1, w2 - lr * g2
    return b.build([], updates=[(w1, u1), (w2, u2)]), g1, g2, u1, u2


def test_updates_move_up_to_their_gradient_and_the_arena_shrinks():
    g, g1, g2, u1, _ = _late_updates()
    s = schedule(g)
    order = [n.id for n in s.ops()]
    assert order.index(u1.id) < order.index(g2.id)  # g1's last reader runs before g2
    before, after = plan_memory(g), plan_memory(s)
    verify_plan(s, after)
    # In the traced order g1 and g2 (16 KiB each) are live together; scheduled, one at a time.
    assert before.arena_bytes >= 2 * N * 4 and after.arena_bytes <= N * 4
    assert inplace_updates(s) == inplace_updates(g)  # both updates still land in their params
    feeds = {n.id: np.random.default_rng(n.id).random(n.shape, np.float32) for n in g.leaves()}
    for a, b in zip(_updated(g, feeds), _updated(s, feeds)):
        np.testing.assert_array_equal(a, b)


def _updated(graph, feeds):
    from numbagrad.backends import interp

    exe = interp.compile(graph, {i: a.copy() for i, a in feeds.items()}, plan_memory(graph))
    exe.run()
    return [exe.read(state).copy() for state, _ in graph.updates]


def test_an_update_runs_after_every_other_reader_of_its_state():
    b = Builder()
    w = b.leaf("param", (N,), "float32", "w")
    x = b.leaf("input", (N,), "float32", "x")
    small = O.sum(O.exp(x))  # cheap to run first: the scheduler would like to
    big = O.exp(w * 2.0)  # reads w: the update of w must wait for it
    g = b.build([O.sum(big) + small], updates=[(w, w - small)])
    s = schedule(g)
    order = [n.id for n in s.ops()]
    update = s.updates[0][1]
    assert all(
        order.index(n.id) < order.index(update)
        for n in s.ops()
        if w.id in n.inputs and n.id != update
    )
    assert update in inplace_updates(s)


def _training_step(model, shape, batch=2, **kw):
    return ng.compile_training(
        model,
        nn.CrossEntropyLoss(),
        optim.SGD(0.05, momentum=0.9, weight_decay=1e-3),
        ng.Spec((batch, *shape)),
        ng.Spec((batch,), "int64"),
        backend="interp",
        **kw,
    )


def test_training_with_the_schedule_matches_training_without_it():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 1, 32, 32)).astype(np.float32), np.array([3, 7])
    results = []
    for disable in ((), ("schedule",)):
        ng.manual_seed(0)
        model = lenet5()
        step = _training_step(model, (1, 32, 32), disable=disable)
        losses = [step(x, y) for _ in range(3)]
        results.append((losses, model.state_dict(), step.backward_graph))
    (l1, w1, b1), (l2, w2, b2) = results
    assert [n.id for n in b1.ops()] != [n.id for n in b2.ops()]  # the pass reordered
    assert l1 == l2
    for k in w1:
        np.testing.assert_array_equal(w1[k], w2[k])


@pytest.mark.parametrize("name", list(MODELS))
def test_the_memory_verifier_passes_on_every_zoo_training_step(name):
    ng.manual_seed(0)
    step = _training_step(build_model(name), (1, 32, 32))
    f, b = step.forward_graph, step.backward_graph
    plans = (step.report.plans["forward"], step.report.plans["backward"])
    verify_training_plan(f, b, plans, saved_ids(b) | frozenset(f.outputs))
