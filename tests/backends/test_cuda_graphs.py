"""CUDA graphs (backends/cuda/graphs.py): a device executable captures its second run and
replays it afterwards. On the simulator, which has no graphs, a stand-in "graph" re-runs the
captured function on a stream, which checks the executable's side: when it captures, that
every launch and copy goes to the capture stream, that replays give the same training as
launching one by one, and that a failed capture falls back with a warning. The driver side
of ``graphs.capture`` (which calls, in which order, with which handles) is checked against a
recording stand-in for ``cuda.bindings.driver``. With
NUMBAGRAD_TEST_REAL_GPU=1 the last test runs real graphs against plain launches."""

from __future__ import annotations

import numpy as np
import pytest
from cuda_setup import REAL_GPU, require_cuda_backend  # first: it chooses the simulator

import numbagrad as ng
from numbagrad import nn, optim

require_cuda_backend()

from numbagrad.backends.cuda import graphs, runtime  # noqa: E402

# The simulator runs dropout's 64-bit hash in NumPy scalars, which warn as they wrap around.
pytestmark = [pytest.mark.cuda, pytest.mark.filterwarnings("ignore:overflow encountered")]
SPEC_X, SPEC_Y = ng.Spec((4, 1, 6, 6)), ng.Spec((4,), "int64")
STEPS = 4


def _model() -> nn.Sequential:
    ng.manual_seed(7)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.25),  # its mask changes every step: a replay must not freeze it
        nn.Linear(8, 3),
    )


def _train() -> tuple[list[float], dict, object]:
    rng = np.random.default_rng(3)
    model = _model()
    step = ng.compile_training(
        model, nn.CrossEntropyLoss(), optim.Adam(0.05), SPEC_X, SPEC_Y, backend="cuda"
    )
    losses = []
    for k in range(STEPS):
        x = rng.standard_normal(SPEC_X.shape).astype(np.float32)
        losses.append(step(x, rng.integers(0, 3, 4), lr=0.05 / (k + 1)))
    return losses, model.state_dict(), step


@pytest.fixture(scope="module")
def plain():
    """Losses and final state of the training launched one by one, without graphs."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(graphs.ENV, raising=False)
        return _train()[:2]


class StandInGraph:
    """What ``graphs.capture`` returns, for the simulator: each launch re-runs the captured
    function on a stream, counting the launches that reach that stream."""

    def __init__(self, launch_all, log) -> None:
        self.launch_all, self.log = launch_all, log
        self.stream = runtime.load_cuda().stream()
        log["captures"] += 1

    def launch(self) -> None:
        self.log["replays"] += 1
        calls = []
        original = runtime.launcher.__call__

        def on_stream(launcher, *args):
            calls.append(runtime._STREAMS[-1] is self.stream)
            original(launcher, *args)

        runtime.launcher.__call__ = on_stream
        try:
            with runtime.launching_on(self.stream):
                self.launch_all(self.stream)
        finally:
            runtime.launcher.__call__ = original
        assert calls and all(calls)


@pytest.mark.skipif(REAL_GPU, reason="the stand-in replaces real graphs")
def test_second_run_is_captured_and_later_runs_replay(plain, monkeypatch):
    expected_losses, expected_state = plain
    monkeypatch.setattr(graphs, "enabled", lambda: True)
    log = {"captures": 0, "replays": 0}
    monkeypatch.setattr(graphs, "capture", lambda launch_all: StandInGraph(launch_all, log))
    losses, state, step = _train()
    # Forward and backward each: run 1 plain, run 2 captured, runs 2-4 replayed.
    assert log == {"captures": 2, "replays": 2 * (STEPS - 1)}
    assert step.forward._graph is not None and step.backward._graph is not None
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-6)
    for key, value in expected_state.items():
        np.testing.assert_allclose(state[key], value, rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(REAL_GPU, reason="the stand-in replaces real graphs")
def test_failed_capture_warns_once_and_launches_one_by_one(plain, monkeypatch):
    expected_losses, _ = plain
    monkeypatch.setattr(graphs, "enabled", lambda: True)

    def fail(launch_all):
        raise RuntimeError("cuStreamBeginCapture failed with CUDA_ERROR_NOT_SUPPORTED")

    monkeypatch.setattr(graphs, "capture", fail)
    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed .*NOT_SUPPORTED"):
        losses, _, step = _train()
    assert step.forward._graph_failed and step.forward._graph is None
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-6)


def test_graphs_are_off_unless_asked_for_and_never_on_the_simulator(monkeypatch):
    monkeypatch.delenv(graphs.ENV, raising=False)
    assert not graphs.enabled()
    monkeypatch.setenv(graphs.ENV, "1")
    assert graphs.enabled() == (not runtime.simulated())


class RecordingDriver:
    """``cuda.bindings.driver`` for ``graphs.capture`` without a GPU: the real enums, and
    calls that are recorded and return what the real ones return ((CUresult, value...))."""

    def __init__(self, real, fail: str = "") -> None:
        self.CUresult, self.CUstreamCaptureMode = real.CUresult, real.CUstreamCaptureMode
        self.calls: list[tuple] = []
        self._fail = fail

    def _result(self, name: str, *values) -> tuple:
        ok = self.CUresult.CUDA_SUCCESS
        return (self.CUresult.CUDA_ERROR_INVALID_VALUE if name == self._fail else ok, *values)

    def __getattr__(self, name: str):
        values = {"cuStreamEndCapture": ("graph",), "cuGraphInstantiate": ("instance",)}

        def call(*args):
            self.calls.append((name, *args))
            return self._result(name, *values.get(name, ()))

        return call


class HandleStream:
    def __int__(self) -> int:
        return 1234


@pytest.fixture
def recording_driver(monkeypatch):
    bindings = pytest.importorskip("cuda.bindings")
    from cuda.bindings import driver

    def install(fail: str = "") -> RecordingDriver:
        fake = RecordingDriver(driver, fail)
        monkeypatch.setattr(bindings, "driver", fake)
        monkeypatch.setattr(graphs, "_STREAM", [HandleStream()])
        return fake

    return install


def test_capture_records_launches_on_the_graph_stream_then_instantiates(recording_driver):
    fake = recording_driver()
    seen = []
    graph = graphs.capture(lambda stream: seen.append((stream, runtime._STREAMS[-1])))
    stream = graphs._STREAM[0]
    assert seen == [(stream, stream)] and not runtime._STREAMS
    thread_local = fake.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
    assert fake.calls == [
        ("cuStreamBeginCapture", 1234, thread_local),
        ("cuStreamEndCapture", 1234),
        ("cuGraphInstantiate", "graph", 0),
    ]
    graph.launch()
    assert fake.calls[-1] == ("cuGraphLaunch", "instance", 1234)


def test_capture_ends_the_capture_when_a_launch_raises(recording_driver):
    fake = recording_driver()

    def launch_all(stream):
        raise ValueError("bad launch")

    with pytest.raises(ValueError, match="bad launch"):
        graphs.capture(launch_all)
    assert [c[0] for c in fake.calls] == ["cuStreamBeginCapture", "cuStreamEndCapture"]


def test_a_driver_error_names_the_call_and_the_error(recording_driver):
    recording_driver(fail="cuGraphInstantiate")
    with pytest.raises(RuntimeError, match="cuGraphInstantiate failed with CUDA_ERROR_INVALID"):
        graphs.capture(lambda stream: None)


@pytest.mark.gpu
@pytest.mark.skipif(not REAL_GPU, reason="needs a real GPU (NUMBAGRAD_TEST_REAL_GPU=1)")
def test_real_graph_replays_train_like_plain_launches(plain, monkeypatch):
    expected_losses, expected_state = plain
    monkeypatch.setenv(graphs.ENV, "1")
    losses, state, step = _train()
    assert step.forward._graph is not None and step.backward._graph is not None
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-6)
    for key, value in expected_state.items():
        np.testing.assert_allclose(state[key], value, rtol=1e-6, atol=1e-7)
