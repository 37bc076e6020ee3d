"""What the graph passes buy: LeNet-5 training steps with passes off and on, beside PyTorch
eager, with each process's memory; planned arena against naive intermediate bytes.

    python bench/passes.py            # batch 64, 5 rounds of 20 calls per configuration
    python bench/passes.py --quick    # smoke run: 1 round of 5 calls

1. Training step (LeNet-5, SGD lr 0.01 momentum 0.9 weight decay 5e-4, one fixed random batch,
   cpu backend): "passes off" is passes=[] and no memory plan (every value its own buffer);
   "passes on" is the default pipeline; "on - epilogue" is the default pipeline without
   fuse_epilogue. Kernels per step count the launches of the forward and backward
   executables. Each configuration (and PyTorch) runs in fresh child processes, alternated
   round after round (bench/paired.py), so a load change on the machine hits them alike;
   the per-call times of all rounds are pooled: median, interquartile range, min. The memory
   columns are each child's resident set after the imports and the model's construction
   ("base"), its peak above that up to the end of the first step (compilation, Numba's
   included) and while running the later steps (MiB; bench/paired.py says how).
2. Memory: naive bytes (every intermediate its own buffer) against the planned arenas of the
   forward and backward graphs of LeNet-5 and of a small residual net, batch 32.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import paired  # bench/paired.py (this folder is sys.path[0])

# bench/lenet.py: LeNet-5's batch, weights, training step and PyTorch twin.
from lenet import batch, compile_train_step, fresh_model, load_weights, save_weights, torch_setup

# numbagrad is imported inside the functions: the PyTorch child must not load it (paired.py).

CONFIGS = {
    "passes off": {"passes": [], "disable": ["plan_memory"]},
    "passes on": {},
    "on - epilogue": {"disable": ["fuse_epilogue"]},
}


def residual_net(width: int = 8):
    """A small residual test net: conv stem, one basic residual block, pool, classifier."""
    from numbagrad import nn

    class ResidualNet(nn.Module):
        def __init__(self) -> None:
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

    return ResidualNet()


def setup(child: paired.Child):
    """A child's training step: the PyTorch twin, or numbagrad with the passes of
    CONFIGS[impl.variant]; reports its kernel count."""
    if child.impl.library == "torch":
        return torch_setup(child)
    b = child.case["batch"]
    x, y = batch(b)
    model = fresh_model()
    model.load_state_dict(load_weights(child.case["weights"]))
    child.baseline()
    step = compile_train_step(model, b, **CONFIGS[child.impl.variant])
    child.info["kernels"] = len(step.forward.kernels) + len(step.backward.kernels)
    return lambda: step(x, y)


def training_table(b: int, rounds: int, calls: int, use_torch: bool) -> None:
    impls = [paired.Impl(name, "numbagrad", variant=name) for name in CONFIGS]
    if use_torch:
        impls.append(paired.Impl("torch eager", "torch"))
    with tempfile.TemporaryDirectory(prefix="numbagrad-bench-") as tmp:
        case = {"kind": "train", "batch": b, "weights": save_weights(f"{tmp}/lenet5.npz")}
        (pooled,) = paired.run_rounds(
            os.path.abspath(__file__), impls, [case], lambda c: f"b={b}", rounds, calls, 3
        )
    paired.print_machine(paired.facts_of([pooled]))
    print(f"LeNet-5 training step, batch {b}, cpu backend ({rounds} rounds x {calls} calls)")
    head = f"{'config':<14}{'kernels':>8}{'median ms':>11}{'IQR ms':>16}{'min ms':>8}"
    head += f"{'vs off':>8}{'vs torch':>9}{'base MiB':>9}{'+start':>8}{'+steady':>8}"
    print(head)
    print("-" * len(head))
    med = {k: paired.stats(p.times)["median"] for k, p in pooled.items() if p.runs}
    for name, p in pooled.items():
        if not p.runs:
            print(f"{name:<14} child failed ({p.error})")
            continue
        s, info, base = paired.stats(p.times), p.runs[0]["info"], p.median_of("base_kib")
        ratios = [s["median"] / med[k] if k in med else None for k in ("passes off", "torch eager")]
        mem = (
            base and base / 1024,
            p.memory_mib("start_peak_kib"),
            p.memory_mib("steady_peak_kib"),
        )
        print(
            f"{name:<14}{paired.cell(info.get('kernels'), 'd', 8)}{s['median']:>11.2f}"
            f"{s['q25']:>9.2f}-{s['q75']:<6.2f}{s['min']:>8.2f}{paired.cell(ratios[0], '.2f', 8)}"
            f"{paired.cell(ratios[1], '.2f', 9)}{paired.cell(mem[0], '.0f', 9)}"
            f"{paired.cell(mem[1], '.0f', 8)}{paired.cell(mem[2], '.0f', 8)}"
        )
    kernels = {
        k: p.runs[0]["info"]["kernels"] for k, p in pooled.items() if k in CONFIGS and p.runs
    }
    if {"passes on", "passes off"} <= kernels.keys():
        on, off = kernels["passes on"], kernels["passes off"]
        print(f"kernels per step: {off} -> {on} ({1 - on / off:.0%} fewer)")
    print()


def memory_table(b: int) -> None:
    import numbagrad as ng

    print(f"Intermediate memory, forward + backward graphs, batch {b}")
    print("(unoptimized: every op's output in the traced graphs; naive: the same after the")
    print(" passes; planned: the arenas; ratios: planned / naive and planned / unoptimized)")
    head = f"{'model':<14}{'unoptimized KiB':>16}{'naive KiB':>11}{'planned KiB':>13}"
    head += f"{'/ naive':>9}{'/ unopt.':>10}"
    print(head)
    print("-" * len(head))
    for name, build in (("lenet5", fresh_model), ("residual net", residual_net)):
        ng.manual_seed(0)
        report = compile_train_step(build(), b, backend="interp").report
        unopt = sum(g.before["intermediate_bytes"] for g in report.graphs.values())
        naive, planned = report.naive_bytes, report.planned_bytes
        print(
            f"{name:<14}{unopt / 1024:>16.1f}{naive / 1024:>11.1f}{planned / 1024:>13.1f}"
            f"{planned / naive:>9.2f}{planned / unopt:>10.2f}"
        )
    print()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=64, help="training step batch (64)")
    ap.add_argument("--rounds", type=int, default=5, help="children per configuration (5)")
    ap.add_argument("--calls", type=int, default=20, help="timed calls per child (20)")
    ap.add_argument("--memory-batch", type=int, default=32, help="arena table batch (32)")
    ap.add_argument("--quick", action="store_true", help="1 round of 5 calls")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch row")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    if opts.child:
        return paired.child_main(opts.child, setup)
    if opts.quick:
        opts.rounds, opts.calls = 1, 5
    use_torch = paired.torch_available() and not opts.no_torch
    training_table(opts.batch_size, opts.rounds, opts.calls, use_torch)
    memory_table(opts.memory_batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
