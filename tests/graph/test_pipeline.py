"""The pipeline on LeNet-5: same values with every pass (and with each one off), the
forward graph keeps what the backward graph reads, the report, the dumps, memory numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import nn, optim
from numbagrad.backends import interp
from numbagrad.backends.executable import Executable
from numbagrad.engine.autodiff import SEED_NAME, build_backward
from numbagrad.errors import OptionError
from numbagrad.graph.memory import arena_views, verify_plan
from numbagrad.graph.passes import FUSED, PASSES
from numbagrad.graph.pipeline import DEFAULT_PASSES, optimize, optimize_training, saved_ids
from numbagrad.models import lenet5


class ArenaExecutable(Executable):
    """The proposed Executable change, as a test double: planned buffers are arena views."""

    def __init__(self, graph, lower, plan, bindings=None):
        self._views = arena_views(plan, graph) if plan is not None else {}
        super().__init__(graph, lower, bindings)

    def _buffer_for(self, node, bindings):
        if node.id in self._views and node.id not in bindings:
            return self._views[node.id]
        return super()._buffer_for(node, bindings)


def _training_graphs(batch=2, seed=0):
    ng.manual_seed(seed)
    model = lenet5()
    fwd = ng.trace(
        model,
        ng.Spec((batch, 1, 32, 32)),
        ng.Spec((batch,), "int64"),
        fn=lambda x, y: nn.CrossEntropyLoss()(model(x), y),
        input_names=["input", "target"],
        name="lenet5",
    )
    builder, values, grads = build_backward(fwd)
    params = {name: values.param(name) for name in grads}
    lr = builder.leaf("input", (), "float32", "lr")
    sgd = optim.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=1e-3, l1=1e-4)
    updates = sgd.build(builder, params, grads, lr)
    bwd = builder.build(list(grads.values()), updates=updates, output_names=list(grads))
    return model, fwd, bwd


def _step(model, fwd, bwd, lower, plans=(None, None), seed=1):
    """One training step; returns the loss, the gradients and the updated params/state."""
    rng = np.random.default_rng(seed)
    batch = fwd.by_name("input", "input").shape[0]
    params = dict(model.named_parameters())
    bind = {n.id: params[n.name].data.copy() for n in fwd.leaves("param")}
    bind[fwd.by_name("input", "input").id] = rng.standard_normal((batch, 1, 32, 32), np.float32)
    bind[fwd.by_name("target", "input").id] = rng.integers(0, 10, batch)
    fexe = ArenaExecutable(fwd, lower, plans[0], bind)
    fexe.run()
    bb = {n.id: params[n.name].data.copy() for n in bwd.leaves("param")}
    bb |= {n.id: np.full(n.shape, 0.01, n.dtype) for n in bwd.leaves("state")}
    for n in bwd.leaves("input"):
        if "saved_from" in n.attrs:
            bb[n.id] = fexe.buffers[n.attrs["saved_from"]]
        else:
            bb[n.id] = np.full(n.shape, 1.0 if n.name == SEED_NAME else 0.1, n.dtype)
    bexe = ArenaExecutable(bwd, lower, plans[1], bb)
    bexe.run()
    updated = [bb[s].copy() for s, _ in bwd.updates]
    return [fexe.output_arrays()[0].copy()] + [a.copy() for a in bexe.output_arrays()] + updated


@pytest.fixture(scope="module")
def lenet():
    model, fwd, bwd = _training_graphs()
    return model, fwd, bwd, _step(model, fwd, bwd, interp.lower)


@pytest.mark.parametrize("disable", [(), *[(p,) for p in PASSES], ("plan_memory",)])
def test_lenet_training_step_is_unchanged(lenet, disable):
    model, fwd, bwd, expected = lenet
    f2, b2, report = optimize_training(fwd, bwd, disable=disable)
    assert saved_ids(bwd) <= {n.id for n in f2}  # everything the backward graph reads
    plans = (report.plans.get("forward"), report.plans.get("backward"))
    for graph, plan in zip((f2, b2), plans):
        if plan is not None:
            verify_plan(graph, plan)
    got = _step(model, f2, b2, interp.lower, plans)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=2e-5, atol=1e-6)
    if "fuse_elementwise" not in disable:
        assert report.kernels_after < report.kernels_before


def test_lenet_inference_graph_is_unchanged_and_fused():
    ng.manual_seed(0)
    model = lenet5()
    g = ng.trace(model, ng.Spec((2, 1, 32, 32)))
    g2, report = optimize(g)
    # the linear layer's bias add + relu: fused, then folded into its GEMM as the epilogue
    assert any(n.op == "matmul_epilogue" and len(n.attrs["body"]) == 2 for n in g2.ops())
    params = dict(model.named_parameters())
    feeds = {n.id: params[n.name].data for n in g.leaves("param")}
    feeds[g.inputs[0]] = np.random.default_rng(0).standard_normal((2, 1, 32, 32), np.float32)
    np.testing.assert_allclose(
        interp.evaluate(g2, feeds)[0], interp.evaluate(g, feeds)[0], rtol=1e-5, atol=1e-6
    )
    assert report.plan is not None and report.planned_bytes == report.plan.arena_bytes


@pytest.fixture
def fresh_kernel_cache(tmp_path, monkeypatch):
    """Generated kernels compile into a private cache (isolates this test from stale entries
    in the shared one: see the report on backends/cpu/cache.py)."""
    from numbagrad.backends.cpu import cache

    monkeypatch.setenv("NUMBAGRAD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "_loaded", {})


def test_lenet_training_step_on_the_cpu_backend_with_fused_kernels_and_an_arena(
    lenet, fresh_kernel_cache
):
    """The lead's wiring, emulated: fused nodes lower through the existing elementwise
    codegen (reading ``attrs['scalar']``) and every buffer comes from the planned arena."""
    from numbagrad.backends.cpu import lowering
    from numbagrad.backends.cpu.codegen import elementwise_launch

    def lower(node, graph):
        if node.op == FUSED:
            expr = node.attrs["scalar"].format(*(f"a{k}" for k in range(len(node.inputs))))
            shapes = [graph[i].shape for i in node.inputs]
            return elementwise_launch(expr, shapes, node.shape), "numba"
        return lowering.lower(node, graph)

    model, fwd, bwd, expected = lenet
    f2, b2, report = optimize_training(fwd, bwd)
    got = _step(model, f2, b2, lower, (report.plans["forward"], report.plans["backward"]))
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


def test_lenet_batch32_memory_and_kernels():
    _, fwd, bwd = _training_graphs(batch=32)
    _, _, report = optimize_training(fwd, bwd)
    ratio = report.planned_bytes / report.naive_bytes
    summary = (
        f"LeNet-5 batch 32 forward+backward(+SGD): kernels {report.kernels_before} -> "
        f"{report.kernels_after}; intermediates naive {report.naive_bytes} B -> planned "
        f"{report.planned_bytes} B (ratio {ratio:.3f})"
    )
    print(summary)
    assert report.planned_bytes <= report.naive_bytes, summary
    # Fusion removes intermediates before planning (naive_bytes counts what is left), and
    # the arena is the same with or without the epilogue pass: hold it against the traced
    # graphs' intermediates, what would be allocated without the pipeline.
    unoptimized = sum(g.before["intermediate_bytes"] for g in report.graphs.values())
    assert report.planned_bytes / unoptimized < 0.5, summary
    assert report.kernels_after < report.kernels_before, summary


def test_report_table_json_and_dumps(tmp_path):
    _, fwd, bwd = _training_graphs()
    _, _, report = optimize_training(fwd, bwd, dump_dir=tmp_path / "dump")
    data = report.to_dict()
    for key in ("kernels_before", "kernels_after", "naive_bytes", "planned_bytes", "passes"):
        assert key in data
    names = [p["name"] for p in data["passes"] if p["graph"] == "forward"]
    assert names == list(DEFAULT_PASSES)
    assert [p["graph"] for p in data["passes"] if p["name"] == "plan_memory"] == ["both"]
    fused_dot = f"backward.{DEFAULT_PASSES.index('fuse_elementwise') + 1:02d}.fuse_elementwise.dot"
    first = data["passes"][0]
    assert {
        "ms",
        "nodes_before",
        "nodes_after",
        "kernels_before",
        "flops_after",
        "bytes_after",
        "planned_bytes",
    } <= set(first)
    report.to_json(tmp_path / "report.json")
    assert json.loads((tmp_path / "report.json").read_text()) == data
    assert data["kernels_before"] == sum(g["before"]["kernels"] for g in data["graphs"].values())
    table = str(report)
    assert "fuse_elementwise" in table and "planned" in table and "total:" in table
    dumps = sorted(p.name for p in (tmp_path / "dump").iterdir())
    assert "forward.00.input.txt" in dumps and fused_dot in dumps
    dot = (tmp_path / "dump" / fused_dot).read_text()
    assert dot.startswith('digraph "lenet5.backward"') and "fused_elementwise" in dot


def test_unknown_pass_and_custom_pass():
    _, fwd, _ = _training_graphs()
    with pytest.raises(OptionError, match="unknown pass"):
        optimize(fwd, passes=["nope"])

    def identity(graph, keep=frozenset()):
        return graph

    g, report = optimize(fwd, passes=[identity, "dce"], disable=["dce"], plan=False)
    assert g is fwd and [p.name for p in report.passes] == ["identity"]
