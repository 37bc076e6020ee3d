"""numbagrad and PyTorch measured in separate, fresh processes, alternated round after round.

A benchmark script hands ``run_rounds`` its implementations (``Impl``) and cases (JSON-able
dicts); each round starts one child per case and implementation, rotating the order of the
implementations so that none always runs first and a change of load on the shared machine
hits them alike. A child is ``sys.executable <script> --child <spec>``: it imports exactly
what its implementation names (numbagrad without torch; torch without numbagrad; or, for the
"torch first" rows, ``import torch`` and then numbagrad, as many users do), lets the script's
``setup(child)`` build the model (then call ``child.baseline()``) and compile it, times the
first call, ``warmup`` untimed calls and ``calls`` timed ones, and prints one JSON line.
The per-call times of all rounds are pooled per implementation: median, interquartile
range, min, and the ratio of medians to PyTorch's. What the memory columns measure: see
bench/paired_child.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

# The child side, used through this module by the scripts.
from paired_child import Child, Impl, child_main, numbagrad_facts  # noqa: F401


def torch_available() -> bool:
    """Whether torch is installed (looked up, not imported)."""
    return importlib.util.find_spec("torch") is not None


def default_impls(backends: Sequence[str], use_torch: bool) -> list[Impl]:
    """numbagrad on each backend, numbagrad cpu with torch imported first, PyTorch eager."""
    rows = []
    for be in backends:
        rows.append(Impl(f"numbagrad {be}", "numbagrad", be))
        if be == "cpu" and use_torch:
            rows.append(Impl("ng cpu, torch 1st", "numbagrad", "cpu", torch_first=True))
    if use_torch:
        rows.append(Impl("torch eager", "torch"))
    return rows


class ChildFailed(Exception):
    pass


def run_child(script: str, impl: Impl, case: dict, calls: int, warmup: int, env=None) -> dict:
    """One child of ``script`` (a path); its JSON result plus "process" (wall seconds)."""
    spec = {"impl": asdict(impl), "case": case, "calls": calls, "warmup": warmup}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, script, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        raise ChildFailed(f"exit {proc.returncode}: {tail[:200]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "process": wall}


@dataclass
class Pooled:
    """One implementation's children for one case, pooled over the rounds."""

    runs: list[dict] = field(default_factory=list)
    error: str | None = None

    @property
    def times(self) -> list[float]:
        return [t for r in self.runs for t in r["times"]]

    def median_of(self, key: str) -> float | None:
        vals = [r[key] for r in self.runs if r.get(key) is not None]
        return float(np.median(vals)) if vals else None

    def memory_mib(self, key: str) -> float | None:
        """Median over the children of ``key`` (a peak) minus the baseline, in MiB."""
        vals = [r[key] - r["base_kib"] for r in self.runs if r[key] and r["base_kib"]]
        return float(np.median(vals)) / 1024 if vals else None


def _progress(line: str) -> None:
    """Overwrite the progress line on a terminal's stderr (nothing when redirected)."""
    if sys.stderr.isatty():
        print(f"\r{line[:99]:<99}\r" if line else f"\r{'':99}\r", end="", file=sys.stderr)


def run_rounds(
    script: str, impls: Sequence[Impl], cases: Sequence[dict], name, rounds: int, calls: int,
    warmup: int,
) -> list[dict[str, Pooled]]:  # fmt: skip
    """For each case, {impl label: Pooled} (``name(case)``: its label in the progress line
    on stderr); an implementation whose child fails for a case is not run again for it."""
    results = [{impl.label: Pooled() for impl in impls} for _ in cases]
    for r in range(rounds):
        order = [*impls[r % len(impls) :], *impls[: r % len(impls)]]
        for case, pooled in zip(cases, results):
            for impl in order:
                p = pooled[impl.label]
                if p.error:
                    continue
                _progress(f"round {r + 1}/{rounds}: {name(case)}, {impl.label}")
                try:
                    p.runs.append(run_child(script, impl, case, calls, warmup))
                except ChildFailed as e:
                    p.error = str(e)
    _progress("")
    return results


def stats(times: Sequence[float]) -> dict[str, float]:
    """Median, quartiles and min of ``times`` (seconds), in milliseconds."""
    q25, med, q75 = np.percentile(times, [25, 50, 75]) * 1e3
    return {"median": med, "q25": q25, "q75": q75, "min": min(times) * 1e3}


def cell(v: float | None, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:{width}{spec}}"


TABLE_HEAD = (
    f"{'case':<12} {'implementation':<18} {'setup s':>9} {'first ms':>9} {'median ms':>10} "
    f"{'IQR ms':>17} {'min ms':>9} {'img/s':>8} {'vs torch':>8} {'base MiB':>8} "
    f"{'+start':>7} {'+steady':>7}"
)


def print_table(cases: Sequence[dict], results: list[dict[str, Pooled]], name) -> None:
    """One row per case and implementation; ``name(case)`` is the case column. "setup" is
    the median time from ``child.baseline()`` to the end of ``setup`` (numbagrad: compile;
    PyTorch: building the optimizer); "first", the first call's; "img/s", the case's batch
    over the median call; "vs torch", the median over PyTorch eager's (below 1: numbagrad
    is faster); the memory columns are medians over the children (see the module's doc)."""
    print(TABLE_HEAD)
    print("-" * len(TABLE_HEAD))
    for case, pooled in zip(cases, results):
        ref = pooled.get("torch eager")
        ref_ms = stats(ref.times)["median"] if ref and ref.times else None
        for label, p in pooled.items():
            if p.error:
                print(f"{name(case):<12} {label:<18} child failed ({p.error})")
                continue
            if not p.runs:
                continue
            s = stats(p.times)
            ratio = None if ref_ms is None or label == "torch eager" else s["median"] / ref_ms
            first = p.median_of("first")
            base = p.median_of("base_kib")
            iqr = f"{s['q25']:.3f}-{s['q75']:.3f}"
            print(
                f"{name(case):<12} {label:<18} {cell(p.median_of('compile'), '.2f', 9)} "
                f"{first * 1e3:9.1f} {s['median']:10.3f} {iqr:>17} {s['min']:9.3f} "
                f"{case['batch'] / s['median'] * 1e3:8.0f} {cell(ratio, '.2f', 8)} "
                f"{cell(base and base / 1024, '.0f', 8)} "
                f"{cell(p.memory_mib('start_peak_kib'), '.0f', 7)} "
                f"{cell(p.memory_mib('steady_peak_kib'), '.0f', 7)}"
            )


def print_losses(cases: Sequence[dict], results: list[dict[str, Pooled]], name) -> None:
    """The first call's output (a training step's loss) of each child: the same weights
    and data everywhere, so every number on a line should agree."""
    print("first-step losses (same weights and data: should agree):")
    for case, pooled in zip(cases, results):
        losses = {
            label: sorted({f"{r['out']:.5f}" for r in p.runs})
            for label, p in pooled.items()
            if p.runs and p.runs[0]["out"] is not None
        }
        if losses:
            print(f"  {name(case)}: " + ", ".join(f"{k} {'/'.join(v)}" for k, v in losses.items()))


def fresh_starts(script: str, impl: Impl, case: dict, hows: Sequence[str]) -> None:
    """Print import, compile and first-call seconds of a child per ``hows`` entry, in order,
    sharing one temporary NUMBAGRAD_CACHE_DIR / NUMBA_CACHE_DIR that starts empty: the first
    child starts cold, the next ones warm. Each child gets ``case`` plus "start" (its
    ``hows`` entry) and "dir" (the temporary directory, for a file to save or load)."""
    print(f"{'start':<6} {'import':>8} {'compile':>9} {'1st call':>9} {'total':>9} {'process':>9}")
    with tempfile.TemporaryDirectory(prefix="numbagrad-bench-") as tmp:
        env = {**os.environ, "NUMBAGRAD_CACHE_DIR": f"{tmp}/numbagrad", "NUMBA_CACHE_DIR": tmp}
        for how in hows:
            try:
                r = run_child(script, impl, {**case, "start": how, "dir": tmp}, 0, 0, env)
            except ChildFailed as e:
                print(f"{how:<6} child failed ({e})")
                return
            print(
                f"{how:<6} {r['import']:8.2f} {r['compile']:9.2f} {r['first']:9.2f} "
                f"{r['compile'] + r['first']:9.2f} {r['process']:9.2f}"
            )


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        return names[0] if names else platform.processor() or "unknown"
    except OSError:
        return platform.processor() or "unknown"


def facts_of(results: list[dict[str, Pooled]]) -> dict[str, str]:
    """The versions and thread counts the children reported."""
    facts: dict[str, str] = {}
    for pooled in results:
        for p in pooled.values():
            for r in p.runs:
                for k, v in r["facts"].items():
                    facts.setdefault(k, v)
    return facts


def print_machine(facts: dict[str, str]) -> None:
    """The CPU, cores and load average, then ``facts`` (versions, thread counts)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"CPU: {_cpu_model()}; {os.cpu_count()} logical CPUs, {cores} usable")
    print(f"load average {load} (other work on the machine skews the times)")
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}")
    for k, v in facts.items():
        print(f"{k}: {v}")
