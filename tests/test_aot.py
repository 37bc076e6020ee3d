"""Ahead-of-time compilation (aot.py, graph/serialize.py): a compiled model saved to one .npz
file loads with the same graph, parameters and outputs, on any backend, in a fresh process
that has none of the model's code; graphs of every kind survive the JSON round trip; a file
that is not a saved model is refused in one sentence (tests/load/: tampered files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import models, nn, optim
from numbagrad.errors import BackendError, SavedModelError, ShapeError
from numbagrad.graph.serialize import graph_from_dict, graph_to_dict

X_SHAPE = (2, 2, 6, 6)


class Net(nn.Module):
    """conv+BN (folded), two parallel 1x1 convs (merged), a residual add, pooling, dropout
    (absent in eval), linear: the passes leave fused and folded nodes with nested attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.branches = nn.Concat(nn.Conv2d(4, 3, 1), nn.Sequential(nn.Conv2d(4, 1, 1), nn.Tanh()))
        self.head = nn.Sequential(
            nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.5), nn.Linear(4 * 3 * 3, 5)
        )

    def forward(self, x):
        y = self.stem(x)
        return self.head(self.branches(y) + y.sigmoid())


def _net() -> Net:
    ng.manual_seed(4)
    net = Net()
    rng = np.random.default_rng(4)
    bn = net.stem[1]
    bn.running_mean.data[:] = rng.standard_normal(4)
    bn.running_var.data[:] = rng.uniform(0.5, 2.0, 4)
    return net


def _x(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(X_SHAPE).astype(np.float32)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A cpu-compiled Net, saved; its outputs on two inputs and its state."""
    net = _net()
    compiled = ng.compile(net, ng.Spec(X_SHAPE), backend="cpu")
    path = compiled.save(tmp_path_factory.mktemp("aot") / "net")
    outputs = [compiled(_x(seed)) for seed in (1, 2)]
    return path, compiled, outputs, net.state_dict()


def test_save_adds_the_npz_suffix_and_writes_no_pickle(saved):
    path, *_ = saved
    assert path.name == "net.npz" and path.is_file()
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # like any file the user writes
    with np.load(path, allow_pickle=False) as f:  # would raise on any pickled member
        assert all(f[k].dtype != object for k in f.files)


@pytest.mark.parametrize("backend", ["cpu", "interp"])
def test_a_saved_model_loads_with_its_graph_parameters_and_outputs(saved, backend):
    path, compiled, outputs, state = saved
    loaded = ng.load(path, backend=backend)
    assert loaded.backend == backend
    assert str(loaded.forward_graph) == str(compiled.forward_graph)
    assert "batch_norm" not in str(loaded.forward_graph)  # the folded graph was saved
    assert loaded.executable.plan == compiled.executable.plan  # planned again, the same
    # Everything the inference graph reads (BatchNorm's batch counter it does not).
    assert set(state) - set(loaded.state_dict()) == {"stem.1.num_batches_tracked"}
    for key, value in loaded.state_dict().items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)
    for seed, expected in zip((1, 2), outputs):
        if backend == "cpu":  # the same graph, plan and kernels: the same bits
            np.testing.assert_array_equal(loaded(_x(seed)), expected)
        else:
            np.testing.assert_allclose(loaded(_x(seed)), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ShapeError, match="compile again with a new ng.Spec"):
        loaded(np.zeros((3, 2, 6, 6), np.float32))


def test_a_model_saved_after_training_holds_the_trained_values(tmp_path):
    net = _net()
    step = ng.compile_training(
        net, nn.CrossEntropyLoss(), optim.SGD(0.1), ng.Spec(X_SHAPE), ng.Spec((2,), "int64")
    )
    for _ in range(2):
        step(_x(), np.array([1, 3]))
    compiled = ng.compile(net, ng.Spec(X_SHAPE))
    loaded = ng.load(compiled.save(tmp_path / "trained.npz"))
    step.sync()
    trained = net.state_dict()
    for key, value in loaded.state_dict().items():
        np.testing.assert_array_equal(value, trained[key], err_msg=key)
    np.testing.assert_array_equal(loaded(_x()), compiled(_x()))


def test_a_loaded_training_step_plans_its_shared_arena_as_the_saved_one(tmp_path):
    ng.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
    step = ng.compile_training(
        nn.Sequential(net, nn.Linear(12, 3)),
        nn.CrossEntropyLoss(),
        optim.SGD(0.1, 0.9),
        ng.Spec(X_SHAPE),
        ng.Spec((2,), "int64"),
        backend="interp",
    )
    loaded = ng.load(step.save(tmp_path / "step"))
    assert loaded.forward.plan == step.forward.plan
    assert loaded.backward.plan == step.backward.plan
    assert loaded.forward.arena is loaded.backward.arena  # one arena for both graphs


def test_two_inputs_and_no_memory_plan_survive_saving(tmp_path):
    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(4, 2)

        def forward(self, x, z):
            return self.a(x) * self.b(z)

    ng.manual_seed(8)
    specs = ng.Spec((2, 3)), ng.Spec((2, 4))
    compiled = ng.compile(Pair(), *specs, disable=["plan_memory"])
    assert compiled.executable.plan is None
    loaded = ng.load(compiled.save(tmp_path / "pair"))
    assert loaded.input_names == ["input0", "input1"] and loaded.executable.plan is None
    x, z = np.ones((2, 3), np.float32), np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(loaded(x, z), compiled(x, z))


def _round_trip(graph: ng.Graph, saved_inputs: bool) -> ng.Graph:
    data, arrays = graph_to_dict(graph)
    return graph_from_dict(json.loads(json.dumps(data)), arrays, saved_inputs=saved_inputs)


def _graphs():
    """Optimized forward and backward graphs of training steps, and inference graphs."""
    x, y = ng.Spec((2, 1, 32, 32)), ng.Spec((2,), "int64")
    step = ng.compile_training(
        models.lenet5(), nn.CrossEntropyLoss(), optim.Adam(), x, y, backend="interp"
    )
    yield "lenet5 forward", step.forward_graph
    yield "lenet5 backward", step.backward_graph
    lstm = models.lstm_classifier(input_size=8)
    yield "lstm", ng.compile(lstm, ng.Spec((2, 5, 8)), backend="interp").forward_graph
    yield "net", ng.compile(_net(), ng.Spec(X_SHAPE), backend="interp").forward_graph


def test_graphs_survive_the_json_round_trip_node_for_node():
    for label, graph in _graphs():
        back = _round_trip(graph, saved_inputs="backward" in label)
        assert (back.inputs, back.outputs, back.updates) == (
            graph.inputs,
            graph.outputs,
            graph.updates,
        )
        assert back.output_names == graph.output_names, label
        for a, b in zip(graph.nodes, back.nodes, strict=True):
            assert (a.id, a.op, a.inputs, a.shape, a.dtype, a.name, a.role) == (
                b.id,
                b.op,
                b.inputs,
                b.shape,
                b.dtype,
                b.name,
                b.role,
            ), label
            assert dict(a.attrs) == dict(b.attrs), f"{label}: {a.format()}"
            assert repr(dict(a.attrs)) == repr(dict(b.attrs))  # tuples stay tuples
            if a.role == "const":
                np.testing.assert_array_equal(a.value, b.value)
                assert a.value.dtype == b.value.dtype


_FRESH = """
import sys, numpy as np, numbagrad as ng
model = ng.load(sys.argv[1])
np.save(sys.argv[2], model(np.load(sys.argv[3])))
"""


def _cache_files() -> set[str]:
    """The kernel cache entries; not the markers of finished first runs (compile_helper.py),
    which a fresh process may add without compiling anything."""
    files = set()
    for var in ("NUMBAGRAD_CACHE_DIR", "NUMBA_CACHE_DIR"):
        root = os.environ.get(var)
        if root and os.path.isdir(root):
            files |= {
                str(p) for p in Path(root).rglob("*") if p.is_file() and "first_runs" not in p.parts
            }
    return files


@pytest.mark.skipif(
    not os.environ.get("NUMBAGRAD_CACHE_DIR") or not os.environ.get("NUMBA_CACHE_DIR"),
    reason="counts the files of kernel caches the test run names (as CI and the README do)",
)
def test_a_fresh_process_runs_the_saved_model_without_its_code_or_new_kernels(saved, tmp_path):
    path, _, outputs, _ = saved
    np.save(tmp_path / "x.npy", _x(1))
    before = _cache_files()
    proc = subprocess.run(
        [sys.executable, "-c", _FRESH, str(path), str(tmp_path / "y.npy"), str(tmp_path / "x.npy")],
        cwd=tmp_path,  # Net, defined in this file, is not importable there
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), outputs[0])
    assert _cache_files() == before  # every kernel came from the caches


def _rewrite(path: Path, out: Path, edit) -> Path:
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["__numbagrad__"]))
    edit(meta)
    arrays["__numbagrad__"] = np.array(json.dumps(meta))
    np.savez(out, **arrays)
    return out


def test_files_that_are_not_saved_models_are_refused_in_one_sentence(saved, tmp_path):
    path, *_ = saved
    with pytest.raises(SavedModelError, match="no_such.npz: no such file"):
        ng.load(tmp_path / "no_such.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(SavedModelError, match="text.npz is not a file saved by numbagrad"):
        ng.load(tmp_path / "text.npz")
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(SavedModelError, match="plain.npz is an .npz file, but not a"):
        ng.load(tmp_path / "plain.npz")
    newer = _rewrite(path, tmp_path / "v9.npz", lambda m: m.update(version=9))
    with pytest.raises(SavedModelError, match="format version 9 .* reads version 2"):
        ng.load(newer)

    def rename_op(meta):
        node = next(n for n in meta["graph"]["nodes"] if n["role"] is None)
        node["op"] = "frobnicate"

    # An edit the content digest does not match (tests/load/ has the rest).
    with pytest.raises(SavedModelError, match="op.npz is corrupted: its content does not"):
        ng.load(_rewrite(path, tmp_path / "op.npz", rename_op))
    with pytest.raises(BackendError, match="unknown backend 'tpu'"):
        ng.load(path, backend="tpu")
