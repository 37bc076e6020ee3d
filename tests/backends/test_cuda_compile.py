"""Every CUDA kernel that the op cases and the GPU benchmark's training steps (LeNet-5 at batch
256, ResNet-18 at 128) launch compiles for a real GPU (sm_90) with the argument types it is
launched with, and its launch configuration fits the device: cuda_compile_check.py, run in
processes of their own, because this one imports numba.cuda as the simulator."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba_cuda")
pytestmark = pytest.mark.cuda
CHECK = Path(__file__).with_name("cuda_compile_check.py")
CANNOT_COMPILE = 3  # the script's exit status when NVVM/NVRTC are missing
PARTS = ("ops", "models")


@pytest.fixture(scope="module")
def halves(tmp_path_factory) -> dict[str, tuple[int, str, str]]:
    """Both halves of the check, run at once in two processes (each compiles on one core):
    part -> (exit status, stdout, stderr)."""
    folder = tmp_path_factory.mktemp("cuda_compile_check")
    running = {}
    for part in PARTS:
        out, err = (open(folder / f"{part}.{kind}", "w+") for kind in ("out", "err"))
        command = [sys.executable, str(CHECK), "--part", part]
        running[part] = subprocess.Popen(command, stdout=out, stderr=err, text=True), out, err
    results = {}
    for part, (process, out, err) in running.items():
        status = process.wait(timeout=900)
        results[part] = status, *(f.seek(0) or f.read() for f in (out, err))
        out.close()
        err.close()
    return results


@pytest.mark.parametrize("part", PARTS)
def test_every_launched_kernel_compiles_for_sm90(part, halves):
    status, stdout, stderr = halves[part]
    if status == CANNOT_COMPILE:
        pytest.skip(stdout.strip())
    lines = stdout.splitlines()
    failed = [line for line in lines if line.startswith("FAIL")]
    assert status == 0 and not failed, "\n".join(failed) or stderr[-3000:]
    assert lines[-1].startswith("OK ") and int(lines[-1].split()[1]) > 40, lines[-1]
