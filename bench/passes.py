"""What the graph passes buy: LeNet-5 training steps with passes off and on, beside PyTorch
eager; planned arena against naive intermediate bytes; peak RSS of a training process.

    python bench/passes.py            # batch 64, 15 rounds of 10 steps per configuration
    python bench/passes.py --quick    # smoke run: 3 rounds of 3 steps

1. Training step (LeNet-5, SGD lr 0.01 momentum 0.9 weight decay 5e-4, one fixed random batch,
   cpu backend): "off" is passes=[] and no memory plan (every value its own buffer); "on" is
   the default pipeline; "on - epilogue" is the default pipeline without fuse_epilogue.
   Kernels per step count the launches of the forward and backward executables. The
   configurations (and PyTorch) run interleaved, round after round, so a load change on the
   machine hits them alike; the time is the median over rounds of the mean step in a round
   (the ratios use it), with its interquartile range and the best round (on a shared machine,
   the least disturbed one).
2. Memory: naive bytes (every intermediate its own buffer) against the planned arenas of the
   forward and backward graphs of LeNet-5 and of a small residual net, batch 32.
3. Peak RSS of a child process that imports, compiles (or builds) LeNet-5's training step at
   batch 64 and runs 20 steps; one child per row, so the libraries and allocators do not mix.
   Read as VmHWM from /proc/self/status: ``getrusage(RUSAGE_SELF).ru_maxrss`` would do on its
   own, but Linux carries the forking parent's peak across fork + exec into it (every child
   would report at least this process's size); ru_maxrss is the fallback off Linux.
"""

from __future__ import annotations

import os

# Before numpy/scipy/torch load their thread pools: see backends/cpu/kernels/_env.py.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "12")
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

# bench/lenet.py (this folder is sys.path[0]): LeNet-5's batch, weights, step and torch twin.
from lenet import batch, compile_train_step, fresh_model, torch_lenet5, torch_train_step  # noqa: E402

import numbagrad as ng  # noqa: E402
from numbagrad import nn  # noqa: E402

try:
    import torch
except ImportError:  # the table just loses its PyTorch rows
    torch = None

CONFIGS = {
    "passes off": {"passes": [], "disable": ["plan_memory"]},
    "passes on": {},
    "on - epilogue": {"disable": ["fuse_epilogue"]},
}


class ResidualNet(nn.Module):
    """A small residual test net: conv stem, one basic residual block, pool, classifier."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(width * 16 * 16, 10)

    def forward(self, x):
        x = self.stem(x).relu()
        y = self.conv2(self.conv1(x).relu())
        x = self.pool((x + y).relu())
        return self.fc(x.flatten(1))


def training_table(b: int, rounds: int, per_round: int, use_torch: bool) -> None:
    x, y = batch(b)
    runs, kernels = {}, {}
    for name, kw in CONFIGS.items():
        step = compile_train_step(fresh_model(), b, **kw)
        runs[name] = lambda step=step: step(x, y)
        kernels[name] = len(step.forward.kernels) + len(step.backward.kernels)
    if use_torch:
        runs["pytorch eager"] = torch_train_step(
            torch_lenet5(), *(torch.from_numpy(a) for a in batch(b))
        )
    for fn in runs.values():  # first calls compile; then warm the caches
        for _ in range(3):
            fn()
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            for _ in range(per_round):
                fn()
            times[name].append((time.perf_counter() - t0) / per_round * 1e3)
    off = np.median(times["passes off"])
    torch_ms = np.median(times["pytorch eager"]) if use_torch else None
    print(f"LeNet-5 training step, batch {b}, cpu backend ({rounds} rounds x {per_round} steps)")
    head = f"{'config':<16}{'kernels':>8}{'median ms':>11}{'IQR ms':>16}{'min ms':>8}"
    head += f"{'vs off':>8}{'vs torch':>9}"
    print(head)
    print("-" * len(head))
    for name, ts in times.items():
        med = np.median(ts)
        q25, q75 = np.percentile(ts, [25, 75])
        k = f"{kernels[name]:>8}" if name in kernels else f"{'-':>8}"
        vs_torch = f"{med / torch_ms:>9.2f}" if torch_ms else f"{'-':>9}"
        iqr = f"{q25:.2f}-{q75:.2f}"
        print(f"{name:<16}{k}{med:>11.2f}{iqr:>16}{min(ts):>8.2f}{med / off:>8.2f}{vs_torch}")
    on, off_k = kernels["passes on"], kernels["passes off"]
    print(f"kernels per step: {off_k} -> {on} ({1 - on / off_k:.0%} fewer)")
    print()


def memory_table(b: int) -> None:
    print(f"Intermediate memory, forward + backward graphs, batch {b}")
    print("(unoptimized: every op's output in the traced graphs; naive: the same after the")
    print(" passes; planned: the arenas; ratios: planned / naive and planned / unoptimized)")
    head = f"{'model':<14}{'unoptimized KiB':>16}{'naive KiB':>11}{'planned KiB':>13}"
    head += f"{'/ naive':>9}{'/ unopt.':>10}"
    print(head)
    print("-" * len(head))
    for name, build in (("lenet5", fresh_model), ("residual net", lambda: ResidualNet())):
        ng.manual_seed(0)
        report = compile_train_step(build(), b, backend="interp").report
        unopt = sum(g.before["intermediate_bytes"] for g in report.graphs.values())
        naive, planned = report.naive_bytes, report.planned_bytes
        print(
            f"{name:<14}{unopt / 1024:>16.1f}{naive / 1024:>11.1f}{planned / 1024:>13.1f}"
            f"{planned / naive:>9.2f}{planned / unopt:>10.2f}"
        )
    print()


CHILD = """
import json, resource, sys
import numpy as np
def peak_kib():
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
mode, b, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
x = rng.standard_normal((b, 1, 32, 32), dtype=np.float32)
y = rng.integers(0, 10, b)
if mode == "torch":
    import torch, torch.nn.functional as F
    t = torch.nn
    imported = peak_kib()
    model = t.Sequential(t.Conv2d(1, 6, 5), t.ReLU(), t.MaxPool2d(2), t.Conv2d(6, 16, 5), t.ReLU(),
        t.MaxPool2d(2), t.Conv2d(16, 120, 5), t.ReLU(), t.Flatten(), t.Linear(120, 84), t.ReLU(),
        t.Linear(84, 10))
    opt = torch.optim.SGD(model.parameters(), 0.01, momentum=0.9, weight_decay=5e-4)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    def step(x, y):
        opt.zero_grad(); loss = F.cross_entropy(model(xt), yt); loss.backward(); opt.step()
else:
    import numbagrad as ng
    from numbagrad import models, nn, optim
    imported = peak_kib()
    kw = {"passes": [], "disable": ["plan_memory"]} if mode == "off" else {}
    ng.manual_seed(0)
    step = ng.compile_training(models.lenet5(), loss=nn.CrossEntropyLoss(),
        optimizer=optim.SGD(0.01, 0.9, weight_decay=5e-4), inputs=ng.Spec((b, 1, 32, 32)),
        targets=ng.Spec((b,), "int64"), **kw)
for _ in range(steps):
    step(x, y)
peak = peak_kib()
print(json.dumps({"imported": imported, "peak": peak}))
"""


def rss_table(b: int, steps: int, use_torch: bool) -> None:
    print(f"Peak RSS of a LeNet-5 training process, batch {b}, {steps} steps (one child each)")
    head = f"{'process':<24}{'after import MiB':>17}{'peak MiB':>10}{'peak - import':>15}"
    print(head)
    print("-" * len(head))
    rows = [("numbagrad, passes on", "on"), ("numbagrad, passes off", "off")]
    if use_torch:
        rows.append(("pytorch eager", "torch"))
    for label, mode in rows:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, mode, str(b), str(steps)],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1]
            print(f"{label:<24} child failed (exit {proc.returncode}): {tail}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        imported, peak = r["imported"] / 1024, r["peak"] / 1024  # KiB -> MiB
        print(f"{label:<24}{imported:>17.1f}{peak:>10.1f}{peak - imported:>15.1f}")
    print()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=64, help="training step batch (64)")
    ap.add_argument("--rounds", type=int, default=15, help="timing rounds (15)")
    ap.add_argument("--per-round", type=int, default=10, help="steps per round (10)")
    ap.add_argument("--memory-batch", type=int, default=32, help="arena table batch (32)")
    ap.add_argument("--quick", action="store_true", help="3 rounds of 3 steps")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch rows")
    opts = ap.parse_args(argv)
    if opts.quick:
        opts.rounds, opts.per_round = 3, 3
    use_torch = torch is not None and not opts.no_torch
    if use_torch:
        torch.set_num_threads(os.cpu_count() or 1)
    training_table(opts.batch_size, opts.rounds, opts.per_round, use_torch)
    memory_table(opts.memory_batch)
    rss_table(opts.batch_size, 20, use_torch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
