"""Compile every CUDA kernel numbagrad launches to PTX, with the argument types it launches
with, without a GPU: the check the CUDA simulator cannot make.

The simulator runs kernels as Python, so it accepts code that Numba's CUDA target rejects
(a value whose type changes, an unsupported call, a float64 where the kernel needs float32 is
only slower, but an untyped global fails). This script runs in its own process with the real
``numba.cuda`` (no simulator): device memory is replaced by host stand-ins, and each launch,
instead of running, compiles its kernel with ``numba.cuda.compile_ptx`` for the launch's
argument types, assembles the PTX with nvJitLink (ptxas) and checks the launch configuration
and the kernel's registers and shared memory against the device's limits. Nothing is
computed, so shapes can be the benchmarks' own.

    python tests/backends/cuda_compile_check.py             # op cases, LeNet-5, ResNet-18 step
    python tests/backends/cuda_compile_check.py --quick     # op cases and a small LeNet-5 only
    python tests/backends/cuda_compile_check.py --part ops  # one half (ops: op cases and
                                                            # tiles; models: the steps)
    python tests/backends/cuda_compile_check.py --dump DIR  # and write each kernel's PTX there

Prints one line per distinct (kernel, argument types) compiled, then ``FAILED <n>`` or
``OK <n>``; exits 0 when all compiled, 1 when some did not, 3 when this machine cannot compile
CUDA (no NVVM/NVRTC/nvJitLink libraries: the ``dev`` extra installs them).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import traceback
from pathlib import Path

import numpy as np

os.environ.pop("NUMBA_ENABLE_CUDASIM", None)  # the real CUDA target, or nothing to check
import numbagrad  # noqa: E402, F401 - first, for its thread-pool settings (tests/conftest.py)

CC = (9, 0)  # Hopper: what the GPU benchmark runs on
MAX_THREADS_PER_BLOCK = 1024
MAX_GRID_YZ = 65535
MAX_STATIC_SHARED = 48 * 1024  # bytes of static __shared__ per block
REGISTERS_PER_BLOCK = 64 * 1024  # 32-bit registers a block may use (every CUDA GPU since Kepler)


class StandInArray:
    """A host array standing in for a DeviceNDArray: the methods the backend calls on device
    arrays, and the numba type the real one would have at a launch."""

    def __init__(self, array: np.ndarray) -> None:
        self.host = array

    shape = property(lambda self: self.host.shape)
    dtype = property(lambda self: self.host.dtype)
    size = property(lambda self: self.host.size)
    ndim = property(lambda self: self.host.ndim)
    nbytes = property(lambda self: self.host.nbytes)
    strides = property(lambda self: self.host.strides)

    def __getitem__(self, index) -> StandInArray:
        return StandInArray(self.host[index])

    def reshape(self, *shape) -> StandInArray:
        return StandInArray(self.host.reshape(*shape))

    def view(self, dtype) -> StandInArray:
        return StandInArray(self.host.view(dtype))

    def copy_to_host(self, ary=None, stream=0) -> np.ndarray:
        if ary is None:
            return self.host.copy()
        np.copyto(ary, self.host.reshape(ary.shape))
        return ary

    def copy_to_device(self, ary, stream=0) -> None:
        source = ary.host if isinstance(ary, StandInArray) else np.asarray(ary)
        np.copyto(self.host, source.reshape(self.host.shape))


def _stand_in_memory(cuda) -> None:
    """Device allocation and transfers become host ones; there is a "device" to compile for."""
    cuda.is_available = lambda: True
    cuda.to_device = lambda array, stream=0: StandInArray(np.array(array, copy=True))
    cuda.device_array = lambda shape, dtype=np.float64, **_: StandInArray(np.zeros(shape, dtype))
    cuda.pinned_array = lambda shape, dtype=np.float64, **_: np.zeros(shape, dtype)
    cuda.synchronize = lambda: None
    # Device functions compile for the current device's compute capability: make it CC.
    from types import SimpleNamespace

    from numba.cuda import dispatcher

    dispatcher.get_current_device = lambda: SimpleNamespace(compute_capability=CC)


class Compiler:
    """Stands in for ``launcher.__call__``: compiles each distinct (kernel, types) once."""

    def __init__(self, compile_ptx, typeof, dump: Path | None = None) -> None:
        self.compile_ptx, self.typeof, self.dump = compile_ptx, typeof, dump
        self.done: dict[tuple, str | None] = {}

    def arg_type(self, arg):
        return self.typeof(arg.host if isinstance(arg, StandInArray) else arg)

    def launch(self, configured, *args) -> None:
        kernel = configured.kernel
        sig = tuple(self.arg_type(a) for a in args)
        key = (kernel.py_func, sig)
        if key in self.done:
            return
        name = _describe(kernel.py_func)
        stats = ""
        try:
            problem = _launch_problem(configured.grid, configured.block)
            if problem is None:
                ptx, _ = self.compile_ptx(kernel.py_func, sig, cc=CC)
                if self.dump is not None:
                    stem = re.sub(r"[^\w.=-]+", "_", name)[:150]
                    (self.dump / f"{len(self.done):03d}_{stem}.ptx").write_text(ptx)
                resources = sass_resources(ptx)
                problem = _resource_problem(resources, configured.block)
                stats = _stats(ptx, resources)
        except Exception as e:
            problem = f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"
            traceback.print_exc(file=sys.stderr)
        self.done[key] = problem
        types = ", ".join(str(t) for t in sig)
        outcome = f"FAIL {name}({types}): {problem}" if problem else f"ok   {name}({types}) {stats}"
        print(outcome, flush=True)

    @property
    def failures(self) -> int:
        return sum(p is not None for p in self.done.values())


def _describe(func) -> str:
    """The kernel's module and name, and for a kernel made by a factory (a closure), the
    factory's parameters that are plain values (tile sizes, flags)."""
    name = f"{func.__module__}.{func.__qualname__}".replace(".<locals>", "")
    cells = zip(func.__code__.co_freevars, func.__closure__ or ())
    plain = [f"{v}={c.cell_contents}" for v, c in cells if type(c.cell_contents) in (int, bool)]
    return f"{name}[{' '.join(plain)}]" if plain else name


def _dims(value) -> tuple:
    return tuple(value) if isinstance(value, tuple) else (value,)


def _launch_problem(grid, block) -> str | None:
    block, grid = _dims(block), _dims(grid)
    if np.prod(block) > MAX_THREADS_PER_BLOCK or min(block) < 1:
        return f"block {block} is not 1..{MAX_THREADS_PER_BLOCK} threads"
    if min(grid) < 1 or any(g > MAX_GRID_YZ for g in grid[1:]) or grid[0] > 2**31 - 1:
        return f"grid {grid} is outside the device's limits"
    return None


def assemble(ptx: str) -> tuple[bytes, str]:
    """``ptx`` assembled for sm_90 by nvJitLink (ptxas, no driver): the cubin and the log."""
    from cuda.bindings import nvjitlink

    handle = nvjitlink.create(2, [f"-arch=sm_{CC[0]}{CC[1]}", "-verbose"])
    try:
        data = ptx.encode()
        nvjitlink.add_data(handle, nvjitlink.InputType.PTX, data, len(data), "kernel.ptx")
        nvjitlink.complete(handle)
        log = bytearray(nvjitlink.get_info_log_size(handle))
        nvjitlink.get_info_log(handle, log)
        cubin = bytearray(nvjitlink.get_linked_cubin_size(handle))
        nvjitlink.get_linked_cubin(handle, cubin)
    finally:
        nvjitlink.destroy(handle)
    return bytes(cubin), log.decode(errors="replace")


def sass_resources(ptx: str) -> dict[str, int]:
    """What the assembled kernel uses, from the assembler's log: registers per thread, shared
    and local memory bytes per block/thread, spill stores and loads."""
    text = assemble(ptx)[1]
    found = {
        "regs": re.findall(r"used (\d+) registers", text),
        "smem": re.findall(r"(\d+) bytes smem", text),
        "lmem": re.findall(r"(\d+) bytes lmem", text),
        "spill_stores": re.findall(r"(\d+) bytes spill stores", text),
        "spill_loads": re.findall(r"(\d+) bytes spill loads", text),
    }
    return {key: max(map(int, values), default=0) for key, values in found.items()}


def _resource_problem(resources: dict[str, int], block) -> str | None:
    """Why the launch would fail on the device: too many registers for the block (the
    'too many resources requested for launch' error), or too much static shared memory."""
    threads = int(np.prod(_dims(block)))
    if resources["regs"] * threads > REGISTERS_PER_BLOCK:
        return f"{resources['regs']} registers x {threads} threads > {REGISTERS_PER_BLOCK}"
    if resources["smem"] > MAX_STATIC_SHARED:
        return f"{resources['smem']} bytes of static shared memory > {MAX_STATIC_SHARED}"
    return None


def _stats(ptx: str, resources: dict[str, int]) -> str:
    """What makes a kernel slow that the simulator hides: registers (occupancy), spills and
    local memory, and double-precision arithmetic in the PTX."""
    f64 = sum(
        op.endswith(".f64") and not op.startswith(("ld.", "st.", "mov."))
        for op in (line.strip().split(" ", 1)[0] for line in ptx.splitlines())
    )
    spills = resources["spill_stores"] + resources["spill_loads"]
    return (
        f"[regs {resources['regs']}, smem {resources['smem']}, lmem {resources['lmem']}, "
        f"spills {spills}, f64 {f64}]"
    )


# --- what to launch -----------------------------------------------------------------------


def op_cases() -> None:
    """Every op case (float32) and backward case (float64) of the op tests, at the CPU tests'
    shapes (larger than the simulator's)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import op_cases as oc

    cases = oc.op_cases(x4=(2, 3, 7, 6))
    for case in cases:
        graph, leaves = oc.build(case, "float32")
        oc.run("cuda", graph, oc.feeds(case[1], leaves, "float32"))
    by_id = {case[0]: case for case in cases}
    for forward_case, _ in oc.GRAD_CASES.values():
        bwd, bwd_feeds = oc.backward_inputs(by_id[forward_case])
        oc.run("cuda", bwd, bwd_feeds)


def gemm_tiles() -> None:
    """Every GEMM tile, chosen by the planner or not (bench/gpu.py --tile-sweep times them
    all), as a conv2d forward and as a plain matmul."""
    from numbagrad.backends.cuda import conv, gemm

    attrs = {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 1}
    x, w, y = (8, 64, 16, 16), (128, 64, 3, 3), (8, 128, 16, 16)
    buffers = [StandInArray(np.zeros(math.prod(s), np.float32)) for s in (x, w, y)]
    for tile in gemm.TILES.values():
        conv.forward_gemm(x, w, y, attrs, "float32", False, tile=tile)(*buffers)
        plan = gemm.matmul_gemm((256, 64), (64, 256), False, False, "float32", tile=tile)
        plan(*(StandInArray(np.zeros(n, np.float32)) for n in (256 * 64, 64 * 256, 256 * 256)))
    # As a numba-cuda without shared arrays' alignment= compiles it (the branch not taken).
    aligned, gemm._shared_alignment = gemm._shared_alignment, lambda: False
    try:
        gemm._KERNELS.clear()
        conv.forward_gemm(x, w, y, attrs, "float32", False, tile=gemm.TILES["large"])(*buffers)
    finally:
        gemm._shared_alignment = aligned
        gemm._KERNELS.clear()


def training_step(model, x_shape, classes: int, adam: bool = False):
    """One compiled training step of ``model`` on cuda, run once (and returned)."""
    import numbagrad as ng
    from numbagrad import nn, optim

    step = ng.compile_training(
        model,
        nn.CrossEntropyLoss(),
        optim.Adam(1e-3, weight_decay=1e-4) if adam else optim.SGD(0.01, momentum=0.9),
        ng.Spec(x_shape),
        ng.Spec((x_shape[0],), "int64"),
        backend="cuda",
    )
    x = np.zeros(x_shape, np.float32)
    step(x, np.zeros(x_shape[0], np.int64) % classes)
    ng.compile(model, ng.Spec(x_shape), backend="cuda")(x)
    return step


def models(quick: bool) -> None:
    from numbagrad import models as zoo

    sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
    if quick:
        training_step(zoo.lenet5(), (8, 1, 32, 32), 10)
        return
    import gpu  # bench/gpu.py: its FP32-peak kernel and its tile sweep
    import gpu_models  # bench/gpu_models.py: the ResNet-18 it times

    gpu.fp32_peak_tflops(argparse.Namespace(sim=False, repeat=1))
    lenet = training_step(zoo.lenet5(), (256, 1, 32, 32), 10)
    gpu.tile_sweep(lenet, argparse.Namespace(repeat=1))  # every tile on LeNet-5's convs
    training_step(zoo.lenet5(), (1, 1, 32, 32), 10, adam=True)
    training_step(gpu_models.resnet18_numbagrad(), (128, 3, 32, 32), 10)
    training_step(
        zoo.resnet18(num_classes=10, in_channels=1, small_input=True), (8, 1, 32, 32), 10, adam=True
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="op cases and a small LeNet-5 only")
    p.add_argument("--part", choices=("ops", "models"), help="only the op cases and GEMM tiles, "
                   "or only the models (two processes can share the work)")  # fmt: skip
    p.add_argument("--dump", type=Path, help="write each kernel's PTX into this directory")
    args = p.parse_args(argv)
    try:
        from numba import cuda, typeof
        from numba.cuda import compile_ptx

        sass_resources(compile_ptx(lambda a: None, "void(float32[::1])", cc=CC)[0])
    except Exception as e:
        print(f"cannot compile CUDA here: {str(e).strip().splitlines()[0]}")
        return 3
    _stand_in_memory(cuda)
    from numbagrad.backends.cuda import runtime

    if args.dump is not None:
        args.dump.mkdir(parents=True, exist_ok=True)
    compiler = Compiler(compile_ptx, typeof, args.dump)
    runtime.launcher.__call__ = lambda self, *a: compiler.launch(self, *a)
    if args.part != "models":
        op_cases()
        gemm_tiles()
    if args.part != "ops":
        models(args.quick)
    if compiler.failures:
        print(f"FAILED {compiler.failures} of {len(compiler.done)} kernels")
    else:
        print(f"OK {len(compiler.done)} kernels")
    return 1 if compiler.failures else 0


if __name__ == "__main__":
    sys.exit(main())
