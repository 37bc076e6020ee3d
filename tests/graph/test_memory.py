"""Memory planning: liveness, in-place reuse, best-fit offsets, the verifier, arena views."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import nn, optim
from numbagrad.backends import get_backend, interp
from numbagrad.backends.executable import Executable
from numbagrad.graph import Builder
from numbagrad.graph import ops as O
from numbagrad.graph.memory import (
    ALIGNMENT,
    MemoryPlanError,
    arena_views,
    inplace_updates,
    liveness,
    plan_memory,
    verify_plan,
)
from numbagrad.graph.pipeline import optimize_training, saved_ids
from numbagrad.graph.training_memory import training_intervals, verify_training_plan
from numbagrad.models import lenet5


def _chain():
    b = Builder()
    x = b.leaf("input", (4, 8), "float32", "x")
    w = b.leaf("param", (8, 8), "float32", "w")
    m = O.matmul(x, w)  # read only at the end: lives across the chain
    h = O.matmul(x, w * 0.5)  # dies at exp: exp may write over it
    e = O.exp(h)
    t = O.tanh(e)  # e dies here: in place again
    r = O.reshape(t, (32,))  # alias: t lives as long as r is read
    s = O.sum(r * 2.0)
    g = b.build([s + O.sum(m)])
    return g, dict(h=h.id, e=e.id, t=t.id, r=r.id, m=m.id, s=s.id)


def test_liveness_intervals_aliases_and_pinned():
    g, ids = _chain()
    live = liveness(g, pinned={ids["e"]})
    assert ids["r"] not in live.intervals and live.aliases[ids["r"]] == ids["t"]
    assert live.intervals[ids["t"]][1] > live.schedule.index(ids["r"])  # read through r
    assert live.intervals[ids["e"]][1] == len(live.schedule)  # pinned: to the end
    assert live.intervals[g.outputs[0]][1] == len(live.schedule)


def test_inplace_reuse_and_best_fit():
    g, ids = _chain()
    plan = plan_memory(g)
    verify_plan(g, plan)
    assert plan.inplace[ids["e"]] == ids["h"] and plan.inplace[ids["t"]] == ids["e"]
    assert plan.offsets[ids["h"]] == plan.offsets[ids["e"]] == plan.offsets[ids["t"]]
    assert all(off % ALIGNMENT == 0 for off in plan.offsets.values())
    assert plan.peak_live_bytes <= plan.arena_bytes <= plan.naive_bytes
    pinned = plan_memory(g, pinned={ids["e"]})
    verify_plan(g, pinned)
    assert ids["e"] not in pinned.inplace.values()  # a pinned value is never overwritten


def test_dropout_writes_over_the_input_that_dies_at_it_on_every_backend():
    b = Builder()
    x = b.leaf("input", (4, 8), "float32", "x")
    step = b.leaf("input", (), "float64", "step")
    h = O.exp(x)  # dies at the dropout
    d = O.dropout(h, step, p=0.5, seed=3)
    g = b.build([O.tanh(d)])
    plan = plan_memory(g)
    verify_plan(g, plan)
    assert plan.inplace.get(d.id) == h.id and plan.offsets[d.id] == plan.offsets[h.id]
    feeds = {x.id: np.linspace(-2, 2, 32, dtype=np.float32).reshape(4, 8), step.id: np.array(5.0)}
    expected = interp.evaluate(g, feeds)[0]
    assert 0 < np.count_nonzero(expected) < expected.size  # some dropped, some kept
    cpu = get_backend("cpu").compile(g, feeds, plan)
    for exe in (Executable(g, interp.lower, bindings=feeds, plan=plan), cpu):
        exe.run()
        np.testing.assert_allclose(exe.output_arrays()[0], expected, rtol=1e-6)


def _lenet_training(batch=2):
    model = lenet5()
    fwd = ng.trace(
        model,
        ng.Spec((batch, 1, 32, 32)),
        ng.Spec((batch,), "int64"),
        fn=lambda x, y: nn.CrossEntropyLoss()(model(x), y),
        input_names=["input", "target"],
    )
    return fwd, ng.backward(fwd)


def _overlapping_pair(graph, plan):
    live = liveness(graph, plan.pinned)
    ids = sorted(live.intervals)
    for a in ids:
        for b in ids:
            (sa, ea), (sb, eb) = live.intervals[a], live.intervals[b]
            if a < b and sa <= eb and sb <= ea and plan.offsets[a] != plan.offsets[b]:
                return a, b
    raise AssertionError("no two values live together")


def test_lenet_plans_verify_and_broken_plans_are_caught():
    fwd, bwd = _lenet_training()
    f2, b2, report = optimize_training(fwd, bwd)
    plans = (report.plans["forward"], report.plans["backward"])
    keep = saved_ids(b2) | frozenset(f2.outputs)
    verify_training_plan(f2, b2, plans, keep)
    assert plans[0].arena_bytes == plans[1].arena_bytes  # one arena for both graphs
    separate = plan_memory(f2, keep).arena_bytes + plan_memory(b2).arena_bytes
    assert plans[0].arena_bytes < separate  # backward values reuse dead activations' bytes
    for graph, plan in zip((f2, b2), plans):
        verify_plan(graph, plan)
        a, b = _overlapping_pair(graph, plan)
        broken = dataclasses.replace(plan, offsets={**plan.offsets, b: plan.offsets[a]})
        with pytest.raises(MemoryPlanError, match="live together"):
            verify_plan(graph, broken)
        with pytest.raises(MemoryPlanError, match="no offset"):
            verify_plan(graph, dataclasses.replace(plan, offsets={}))
        with pytest.raises(MemoryPlanError, match="misaligned or outside"):
            verify_plan(graph, dataclasses.replace(plan, offsets={**plan.offsets, a: 8}))


def test_saved_values_live_until_the_backward_graph_reads_them():
    fwd, bwd = _lenet_training()
    f2, b2, report = optimize_training(fwd, bwd)
    keep = saved_ids(b2) | frozenset(f2.outputs)
    _, _, f_intervals, b_intervals = training_intervals(f2, b2, keep)
    end = max(e for _, e in b_intervals.values())
    backward_start = min(s for s, _ in b_intervals.values())
    read_early = [i for i in saved_ids(b2) if i in f_intervals and f_intervals[i][1] < end]
    assert read_early and all(f_intervals[i][1] >= backward_start for i in read_early)
    # A backward value placed over a saved activation while that one is still live is caught.
    f_plan, b_plan = report.plans["forward"], report.plans["backward"]
    saved = max(read_early, key=lambda i: f_intervals[i][1])
    late = next(b for b, (s, e) in b_intervals.items() if s <= f_intervals[saved][1])
    broken = dataclasses.replace(b_plan, offsets={**b_plan.offsets, late: f_plan.offsets[saved]})
    with pytest.raises(MemoryPlanError, match="share bytes"):
        verify_training_plan(f2, b2, (f_plan, broken), keep)


def test_arena_views_are_aligned_typed_views_of_one_buffer():
    g, ids = _chain()
    plan = plan_memory(g)
    views = arena_views(plan, g)
    assert set(views) == set(plan.offsets)
    base = views[ids["h"]].base
    while base.base is not None:
        base = base.base
    for i, v in views.items():
        assert v.shape == g[i].shape and str(v.dtype) == g[i].dtype and v.flags.c_contiguous
        assert v.ctypes.data % ALIGNMENT == 0
    assert np.shares_memory(views[ids["h"]], views[ids["t"]])  # in place
    assert not np.shares_memory(views[ids["h"]], views[ids["m"]])  # live together


def test_an_executable_on_the_arena_computes_the_same():
    g, ids = _chain()
    rng = np.random.default_rng(0)
    feeds = {n.id: rng.standard_normal(n.shape).astype(n.dtype) * 0.3 for n in g.leaves("input")}
    feeds |= {n.id: rng.standard_normal(n.shape).astype(n.dtype) * 0.3 for n in g.leaves("param")}
    expected = interp.evaluate(g, feeds)
    exe = Executable(g, interp.lower, bindings=feeds, plan=plan_memory(g))
    exe.run()
    exe.run()  # buffers reused across runs
    np.testing.assert_allclose(exe.output_arrays()[0], expected[0], rtol=1e-6)


def test_every_optimizer_update_runs_in_place_and_training_is_unchanged():
    # A Linear layer's weight gradient is a GEMM: fused with its momentum update as an
    # epilogue, the GEMM would write before the update reads the momentum, so that update
    # could not run in the state's buffer and would hold weight-sized arena bytes to the end.
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 1, 32, 32)).astype(np.float32), np.array([3, 7])
    runs = []
    for disable in ((), ("fuse_epilogue",)):
        ng.manual_seed(0)
        model = lenet5()
        step = ng.compile_training(
            model,
            nn.CrossEntropyLoss(),
            optim.SGD(0.05, momentum=0.9, weight_decay=1e-3),
            ng.Spec(x.shape),
            ng.Spec((2,), "int64"),
            backend="interp",
            disable=disable,
        )
        runs.append(([step(x, y) for _ in range(3)], model.state_dict(), step))
    (l1, w1, step), (l2, w2, _) = runs
    f, b = step.forward_graph, step.backward_graph
    assert any(n.op == "matmul_epilogue" for n in b.ops())  # epilogues were fused
    assert set(inplace_updates(b)) == {value for _, value in b.updates}
    plans = (step.report.plans["forward"], step.report.plans["backward"])
    assert plans[1].updates_inplace == inplace_updates(b)
    verify_training_plan(f, b, plans, saved_ids(b) | frozenset(f.outputs))
    np.testing.assert_allclose(l1, l2, rtol=1e-6)
    for k in w1:
        np.testing.assert_allclose(w1[k], w2[k], rtol=1e-6, atol=1e-7)
