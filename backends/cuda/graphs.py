"""CUDA graphs: a device executable's whole run recorded once and replayed with one call.

A compiled step is static: every buffer lives at a fixed address (the memory plan's arena,
the resident parameters), every launch configuration and argument is fixed at lowering time,
and the values that change between steps (the batch, the learning rate, Adam's bias
corrections, dropout's step counter) are read from device buffers. So the kernels and
device-to-device copies of one ``run()`` can be captured into a CUDA graph by stream capture
and replayed with a single ``cuGraphLaunch``: the per-launch cost of Python and Numba's
dispatch (tens of microseconds, times 50-100 launches for a small model) goes away.

Opt-in with ``NUMBAGRAD_CUDA_GRAPHS=1`` until it has run on a real GPU (the simulator has no
graphs). Capture happens at an executable's second run (the first compiles and loads the
kernels); a capture that fails warns once and the executable goes on launching one by one.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .runtime import launching_on, load_cuda, simulated

ENV = "NUMBAGRAD_CUDA_GRAPHS"
_STREAM: list = []


def enabled() -> bool:
    """Whether device executables capture their runs (``NUMBAGRAD_CUDA_GRAPHS=1``, on a GPU)."""
    return os.environ.get(ENV) == "1" and not simulated()


def graph_stream():
    """The one stream every graph is captured on and replayed on, so that the forward and
    backward graphs of a step run in order. It is a blocking stream: work on the default
    stream (the input and output copies) waits for it, and it for them."""
    if not _STREAM:
        _STREAM.append(load_cuda().stream())
    return _STREAM[0]


def _handle(stream) -> int:
    """The stream's driver handle as an int: numba-cuda's ``Stream.__int__`` gives it for both
    of its bindings (a ctypes ``c_void_p`` or a ``cuda.bindings`` ``CUstream``)."""
    return int(stream)


def _check(result: tuple, call: str):
    from cuda.bindings import driver

    err, *rest = result
    if err != driver.CUresult.CUDA_SUCCESS:
        raise RuntimeError(f"{call} failed with {err.name}")
    return rest[0] if rest else None


class CapturedGraph:
    """An instantiated CUDA graph and the stream it replays on."""

    def __init__(self, graph, instance, stream) -> None:
        self._graph, self._instance, self._stream = graph, instance, stream

    def launch(self) -> None:
        from cuda.bindings import driver

        _check(driver.cuGraphLaunch(self._instance, _handle(self._stream)), "cuGraphLaunch")

    def __del__(self) -> None:
        try:
            from cuda.bindings import driver

            driver.cuGraphExecDestroy(self._instance)
            driver.cuGraphDestroy(self._graph)
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


def capture(launch_all: Callable[[object], None]) -> CapturedGraph:
    """Record what ``launch_all(stream)`` enqueues (without running it) as a CUDA graph."""
    from cuda.bindings import driver

    stream = graph_stream()
    mode = driver.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
    _check(driver.cuStreamBeginCapture(_handle(stream), mode), "cuStreamBeginCapture")
    try:
        with launching_on(stream):
            launch_all(stream)
    except BaseException:
        driver.cuStreamEndCapture(_handle(stream))  # leaves the stream usable
        raise
    graph = _check(driver.cuStreamEndCapture(_handle(stream)), "cuStreamEndCapture")
    instance = _check(driver.cuGraphInstantiate(graph, 0), "cuGraphInstantiate")
    return CapturedGraph(graph, instance, stream)
