"""One training step in this process, cpu backend: its planned arena, the process's peak RSS and
the step time. Informal (one process, no PyTorch beside it: bench/resnet.py pairs them).

    python bench/step_memory.py resnet18 --batch-size 32 --steps 5
    python bench/step_memory.py vgg11 --memory-budget 60MiB
    python bench/step_memory.py lenet5 --batch-size 64 --disable schedule

Models as bench/memory.py (LeNet-5 1x32x32; ResNet-18 with the CIFAR stem and VGG-11, 3x32x32;
10 classes); SGD(0.01, momentum 0.9, weight decay 5e-4). Peak RSS is ``ru_maxrss`` (so it
includes compilation when the kernel caches are cold: run twice); "base" is the RSS after the
imports, before compiling.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np
from memory import training_step  # bench/memory.py (this folder is sys.path[0])


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", choices=("lenet5", "resnet18", "vgg11"))
    ap.add_argument("--batch-size", type=int, default=32, help="(32)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps after the first (5)")
    ap.add_argument("--memory-budget", metavar="SIZE", help="compile under this budget")
    ap.add_argument("--disable", nargs="*", default=[], metavar="PASS", help="passes off")
    opts = ap.parse_args(argv)
    import numbagrad  # noqa: F401  (counted in the base RSS)

    base = _rss_mib()
    step = training_step(
        opts.model, opts.batch_size, opts.memory_budget, "cpu", disable=opts.disable
    )
    shape = step.forward_graph.by_name("input", role="input").shape
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(shape).astype(np.float32), rng.integers(0, 10, shape[0])
    step(x, y)
    times = []
    for _ in range(opts.steps):
        t0 = time.perf_counter()
        step(x, y)
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    r, mib = step.report, 2**20
    print(
        f"{opts.model} b={opts.batch_size}: naive {r.naive_bytes / mib:.1f} MiB, planned "
        f"{r.planned_bytes / mib:.1f} MiB; RSS base {base:.0f} MiB, peak {peak:.0f} MiB "
        f"(+{peak - base:.0f}); step median {1e3 * np.median(times):.1f} ms, "
        f"min {1e3 * min(times):.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
