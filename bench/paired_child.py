"""The child side of bench/paired.py: one fresh process, one implementation, one case.

Memory, per child, from /proc/self (Linux; '-' elsewhere), in MiB:
- "base": the resident set (``/proc/self/statm``) after the imports and the model's
  construction, when the script calls ``child.baseline()``;
- "+start": the peak resident set (VmHWM) from the start up to the end of the first call,
  minus "base": numbagrad's tracing, passes, arena and its kernels' compilation or loading
  (Numba compiles lazily, at the first call); PyTorch's optimizer and first step;
- "+steady": the peak resident set during the warm-up and timed calls, minus "base" (VmHWM
  is reset to the current resident set through ``/proc/self/clear_refs`` after the first
  call): what a process that keeps training holds, including what the first call left
  resident (Numba's compiled code, allocator caches) but not its transient peaks.
``getrusage(RUSAGE_SELF).ru_maxrss`` is not used: Linux carries the parent's peak across fork
and exec into the child, so every child would report at least the parent's size.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Impl:
    """One row kind: ``library`` 'numbagrad' (on ``backend``; ``torch_first``: torch is
    imported before numbagrad) or 'torch'; ``variant`` is the script's own option."""

    label: str
    library: str
    backend: str = "cpu"
    torch_first: bool = False
    variant: str = ""


def _rss_kib() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except OSError:
        return None


def _peak_kib() -> int | None:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident set
        return True
    except OSError:
        return False


class Child:
    """What ``setup`` gets in a child: the implementation, the case, and two hooks."""

    def __init__(self, impl: Impl, case: dict) -> None:
        self.impl, self.case = impl, case
        self.info: dict = {}  # extra JSON-able results for the parent (passes.py: kernels)
        self.base_kib: int | None = None
        self.t_base: float | None = None
        self.after: list[Callable[[], object]] = []

    def baseline(self) -> None:
        """Call once the model is built: memory is reported above this point, and "setup"
        is timed from it."""
        self.base_kib, self.t_base = _rss_kib(), time.perf_counter()

    def at_end(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` after the timed calls, untimed (e.g. saving the compiled step)."""
        self.after.append(fn)


def _import(impl: Impl) -> dict:
    """Import what ``impl`` names, in its order; PyTorch's version and thread counts."""
    facts = {}
    if impl.library == "torch" or impl.torch_first:
        import torch

        facts["torch"] = f"{torch.__version__}, {torch.get_num_threads()} threads by default"
    if impl.library == "torch":
        # As many threads as Numba's default (numba itself is not imported here).
        threads = int(os.environ.get("NUMBA_NUM_THREADS", os.cpu_count() or 1))
        torch.set_num_threads(threads)
        facts["torch eager threads"] = f"{torch.get_num_threads()} (Numba's default count)"
    else:
        _check_modules(impl)
        import numbagrad  # noqa: F401
    _check_modules(impl)
    return facts


def _check_modules(impl: Impl) -> None:
    """Fail the child if it loaded the other library (a plain numbagrad row with torch in
    the process, or a PyTorch row with numbagrad): its row would measure something else."""
    other = "numbagrad" if impl.library == "torch" else None if impl.torch_first else "torch"
    if other in sys.modules:
        raise RuntimeError(f"the {impl.label!r} child imported {other}")


def numbagrad_facts() -> dict:
    """numbagrad's and Numba's versions and threads, and the BLAS libraries loaded (after
    the kernels ran: Numba names its threading layer only then)."""
    import numba
    from threadpoolctl import threadpool_info

    import numbagrad
    from numbagrad.backends.cpu.kernels.packed_gemm import OWN_GEMM

    facts = {
        "numbagrad": numbagrad.__version__,
        "numba": f"{numba.__version__}, {numba.config.NUMBA_NUM_THREADS} threads",
    }
    try:
        facts["numba threading layer"] = numba.threading_layer()
    except ValueError:  # no parallel kernel ran
        pass
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    desc = [f"{i['internal_api']} {i.get('version')} ({i.get('architecture')})" for i in blas]
    facts["BLAS loaded"] = "; ".join(sorted(set(desc))) or "none"
    facts["float32 GEMM"] = (
        "numbagrad's packed micro-kernel (BLAS runs narrower vectors than the CPU)"
        if OWN_GEMM
        else "BLAS"
    )
    return facts


def _number(out) -> float | None:
    try:
        return float(out)
    except (TypeError, ValueError):
        return None


def child_main(spec_json: str, setup: Callable[[Child], Callable[[], object]]) -> int:
    """Run one child as ``spec_json`` says and print its JSON line; returns the exit code."""
    spec = json.loads(spec_json)
    impl = Impl(**spec["impl"])
    t0 = time.perf_counter()
    facts = _import(impl)
    imported = time.perf_counter()
    child = Child(impl, spec["case"])
    fn = setup(child)
    compiled = time.perf_counter()
    out = fn()
    first = time.perf_counter() - compiled
    start_peak = _peak_kib()
    steady_ok = _reset_peak()
    for _ in range(spec["warmup"]):
        fn()
    times = []
    for _ in range(spec["calls"]):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    steady_peak = _peak_kib() if steady_ok else None
    for after in child.after:
        after()
    _check_modules(impl)
    result = {
        "import": imported - t0,
        "compile": compiled - (child.t_base or imported),
        "first": first,
        "times": times,
        "out": _number(out),
        "base_kib": child.base_kib,
        "start_peak_kib": start_peak,
        "steady_peak_kib": steady_peak,
        "facts": {**facts, **(numbagrad_facts() if impl.library == "numbagrad" else {})},
        "info": child.info,
    }
    print(json.dumps(result))
    return 0
