"""Every CUDA kernel that the op cases and the GPU benchmark's training steps (LeNet-5 at batch
256, ResNet-18 at 128) launch compiles for a real GPU (sm_90) with the argument types it is
launched with, and its launch configuration fits the device: cuda_compile_check.py, run in a
process of its own, because this one imports numba.cuda as the simulator."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba_cuda")
pytestmark = pytest.mark.cuda
CHECK = Path(__file__).with_name("cuda_compile_check.py")
CANNOT_COMPILE = 3  # the script's exit status when NVVM/NVRTC are missing


def test_every_launched_kernel_compiles_for_sm90():
    done = subprocess.run([sys.executable, str(CHECK)], capture_output=True, text=True, timeout=900)
    if done.returncode == CANNOT_COMPILE:
        pytest.skip(done.stdout.strip())
    lines = done.stdout.splitlines()
    failed = [line for line in lines if line.startswith("FAIL")]
    assert done.returncode == 0 and not failed, "\n".join(failed) or done.stderr[-3000:]
    assert lines[-1].startswith("OK ") and int(lines[-1].split()[1]) > 100, lines[-1]
