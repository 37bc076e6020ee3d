"""The helper process of a CPU executable's first run (backends/cpu/compile_helper.py): its
compile-only mode compiles and runs nothing and skips what the run says it compiles; in a
fresh process with a cold cache it changes no result, leaves no process behind (not even when
the run dies), and starts only where it can help."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from cache_scenarios import run_script, unwritable
from numba import njit, typeof
from numba.core import event

from numbagrad.backends.cpu import compile_helper
from numbagrad.backends.executable import Kernel


def _kernel(launch, out, impl: str = "numba") -> Kernel:
    return Kernel(node=None, launch=launch, inputs=[], out=out, impl=impl)


def test_compile_kernels_compiles_every_launch_and_runs_none():
    @njit
    def fill(out, v):
        for i in range(out.shape[0]):
            out[i] = v

    @njit
    def has_room(out):
        return out.shape[0] > 0

    @njit
    def total(out):
        return out.sum()

    out = np.zeros(4)

    def guarded(inputs, o):  # as conv.py: a bool kernel picks the next kernel
        if has_room(o):
            fill(o, 2.0)

    def needs_a_value(inputs, o):
        fill(o, total(o) + 1.0)  # total's value cannot be made up: this launch stops there

    def reference(inputs, o):  # a NumPy reference: nothing to compile, not run
        pytest.fail("the helper ran a reference launch")

    launches = [
        _kernel(guarded, out),
        _kernel(needs_a_value, out),
        _kernel(reference, out, "reference"),
    ]
    compile_helper.compile_kernels(launches)
    assert len(fill.signatures) == len(has_room.signatures) == len(total.signatures) == 1
    assert not out.any()  # nothing ran
    fill(out, 3.0)  # out of the mode, kernels run again
    assert out.tolist() == [3.0] * 4


def test_the_child_skips_the_kernels_the_run_says_it_compiles(monkeypatch):
    @njit
    def claimed(out):
        out[0] = 1.0

    @njit
    def free(out):
        out[0] = 2.0

    read, write = os.pipe()
    os.set_blocking(read, False)
    with event.install_listener("numba:compile", compile_helper._RunCompiles(write)):
        claimed(np.zeros(1))  # compiled in "the run": its key goes down the pipe
    os.close(write)
    claims = compile_helper._Claims(read)
    assert compile_helper._key(claimed, (typeof(np.zeros(1)),)) in claims
    monkeypatch.setattr(compile_helper, "_claims", claims)
    out = np.zeros(1)
    again, other = njit(claimed.py_func), njit(free.py_func)  # fresh, nothing compiled
    compile_helper.compile_kernels(
        [_kernel(lambda i, o: again(o), out), _kernel(lambda i, o: other(o), out)]
    )
    os.close(read)
    assert (again.signatures, len(other.signatures)) == ([], 1)


SCRIPT = """
import json, os
import numpy as np
import numbagrad as ng
from numbagrad import nn
from numbagrad.backends.cpu import compile_helper as helper

started = []
start = helper._start_helper
helper._start_helper = lambda *a: started.append(start(*a)) or started[-1]
helper.MIN_KERNELS = 1

def predict():
    ng.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(27, 4)
    )
    return ng.compile(model, ng.Spec((2, 1, 8, 8)))

x = np.linspace(-1, 1, 128, dtype=np.float32).reshape(2, 1, 8, 8)
out = [predict()(x).tolist()]
first = len(started)
out.append(predict()(x).tolist())  # the same graph again: its first run is not cold
try:
    left = os.waitpid(-1, os.WNOHANG)[0] != 0 or "child running"
except ChildProcessError:
    left = False
print(json.dumps({"out": out, "helpers": [first, len(started)], "left": left}))
"""


def _run(tmp, numba_dir, helper: str) -> dict:
    env_line = f"import os; os.environ['{compile_helper.ENV}'] = '{helper}'\n"
    return run_script(env_line + SCRIPT, tmp, tmp / "ng", numba_dir)


def test_a_cold_first_run_with_the_helper_gives_the_same_values_and_leaves_no_process(tmp_path):
    (tmp_path / "on").mkdir()
    (tmp_path / "off").mkdir()
    on = _run(tmp_path / "on", tmp_path / "on" / "numba", "1")
    off = _run(tmp_path / "off", tmp_path / "off" / "numba", "0")
    assert on["out"] == off["out"]
    assert on["out"][0] == on["out"][1]
    assert on["helpers"] == [1, 1]  # once, for the cold first run only
    assert off["helpers"] == [0, 0]
    assert on["left"] is False and off["left"] is False


def test_no_helper_when_the_cache_cannot_be_written(tmp_path):
    bad = unwritable(tmp_path, "below a file")
    result = _run(tmp_path, bad, "1")
    assert result["helpers"] == [0, 0]
    assert result["out"][0] == result["out"][1]


@pytest.mark.parametrize(
    "setting, kernels", [("1", compile_helper.MIN_KERNELS - 1), ("0", compile_helper.MIN_KERNELS)]
)
def test_no_helper_for_a_few_kernels_or_when_turned_off(setting, kernels, monkeypatch):
    monkeypatch.setenv(compile_helper.ENV, setting)
    monkeypatch.setattr(compile_helper, "_start_helper", lambda *a: pytest.fail("forked"))
    ran = []
    with compile_helper.first_run(None, [_kernel(lambda i, o: None, None)] * kernels):
        ran.append(True)
    assert ran == [True]


ORPHAN_SCRIPT = """
import json, os, time
import numpy as np
import numbagrad as ng
from numbagrad import nn
from numbagrad.backends.cpu import compile_helper as helper

started = []
start = helper._start_helper
helper._start_helper = lambda *a: started.append(start(*a)) or started[-1]
helper._stop_helper = lambda pid: None  # as if the run died before it could stop the child
helper.compile_kernels = lambda kernels: time.sleep(600)  # a child still busy then
helper.MIN_KERNELS = 1
ng.manual_seed(0)
model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(108, 4))
ng.compile(model, ng.Spec((2, 1, 8, 8)))(np.ones((2, 1, 8, 8), np.float32))
print(json.dumps({"helpers": started}), flush=True)
os._exit(0)
"""


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in state  # exited, not yet reaped by its new parent


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_the_helper_dies_with_its_parent(tmp_path):
    (pid,) = run_script(ORPHAN_SCRIPT, tmp_path, tmp_path / "ng", tmp_path / "numba")["helpers"]
    deadline = time.monotonic() + 60
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(pid)
