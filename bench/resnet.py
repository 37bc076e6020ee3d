"""ResNet-18 training-step times and memory: numbagrad next to PyTorch eager, in fresh processes.

    python bench/resnet.py            # CIFAR ResNet-18 at batch 32 and 128, the CLI's at 64
    python bench/resnet.py --quick    # smoke run: CIFAR at batch 32, the CLI's at 64, 2 calls
    python bench/resnet.py --batches 128 --cli-batch 0 --memory-budget 450MiB   # + a budget row

Two models: the CIFAR ResNet-18 (``models.resnet18(num_classes=10, small_input=True)``: 3x3
stride-1 stem, no max-pool) on 3x32x32 images, and the one ``numbagrad train resnet18``
trains (``cli.build_model``: the ImageNet stem, 7x7 stride-2 conv and max-pool, on 1x32x32
images, 10 classes) at that command's default batch, 64. Rows: numbagrad cpu; numbagrad cpu
in a process that imported torch first; PyTorch eager (the torchvision-style twin of
tests/models/torch_zoo.py). Each row is measured in fresh child processes, --rounds of them
alternated with the other rows (bench/paired.py: what the columns mean). Every
implementation starts from the same weights (numbagrad's at seed 0, saved to a file and
loaded through state_dict; BatchNorm in training mode) and trains with SGD(lr 0.01, momentum
0.9, weight decay 5e-4) on one fixed random batch, so the first-step losses printed under
the table must agree. Last, the start of a CIFAR training step at batch 32 in a fresh
process: import + compile_training + the first step with empty NUMBAGRAD_CACHE_DIR /
NUMBA_CACHE_DIR ("cold": every kernel compiled), then again with the caches it left ("warm").
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import paired  # bench/paired.py (this folder is sys.path[0])

# bench/lenet.py: the training step, compiled or PyTorch's, and the weights file.
from lenet import compile_train_step, load_weights, torch_train_step

# numbagrad and torch are imported inside the functions: a child process must choose which of
# them it loads, and in which order (paired.py).

SHAPES = {"cifar": (3, 32, 32), "cli": (1, 32, 32)}
TORCH_ZOO = Path(__file__).resolve().parents[1] / "tests" / "models" / "torch_zoo.py"


def fresh_model(which: str):
    """numbagrad's ResNet-18 at seed 0: 'cifar' or 'cli' (what ``numbagrad train`` builds)."""
    import numbagrad as ng
    from numbagrad import models
    from numbagrad.cli import build_model

    ng.manual_seed(0)
    if which == "cifar":
        return models.resnet18(num_classes=10, small_input=True)
    return build_model("resnet18")


def torch_twin(which: str, state: dict[str, np.ndarray]):
    """The PyTorch ResNet-18 of tests/models/torch_zoo.py holding ``state``; for 'cifar'
    with the CIFAR stem swapped in."""
    import torch

    spec = importlib.util.spec_from_file_location("torch_zoo", TORCH_ZOO)
    zoo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(zoo)
    model = zoo.resnet18(num_classes=10, in_channels=SHAPES[which][0])
    if which == "cifar":
        model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        model.maxpool = torch.nn.Identity()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return model


def batch(which: str, b: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(b)
    return rng.standard_normal((b, *SHAPES[which]), dtype=np.float32), rng.integers(0, 10, b)


def setup(child: paired.Child):
    """The training step a child times, for a case {"model": "cifar" | "cli", "batch",
    "weights"}."""
    which, b = child.case["model"], child.case["batch"]
    x, y = batch(which, b)
    state = load_weights(child.case["weights"])
    if child.impl.library == "torch":
        import torch

        model = torch_twin(which, state)
        child.baseline()
        return torch_train_step(model, torch.from_numpy(x), torch.from_numpy(y))
    model = fresh_model(which)
    model.load_state_dict(state)
    child.baseline()
    budget = {"memory_budget": child.impl.variant} if child.impl.variant else {}
    step = compile_train_step(model, b, SHAPES[which], backend=child.impl.backend, **budget)
    return lambda: step(x, y)


def case_name(case: dict) -> str:
    return f"{case['model']} b={case['batch']}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="32,128", help="CIFAR model's batches (32,128)")
    ap.add_argument("--cli-batch", type=int, default=64, help="the CLI model's (64; 0: skip)")
    ap.add_argument("--rounds", type=int, default=3, help="children per row, alternated (3)")
    ap.add_argument("--calls", type=int, default=5, help="timed calls per child (5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls after the first (1)")
    ap.add_argument("--quick", action="store_true", help="1 round of 2 calls; CIFAR at b=32")
    ap.add_argument("--no-torch", action="store_true", help="skip the rows that need torch")
    ap.add_argument("--no-cold-start", action="store_true", help="skip the fresh-start rows")
    budget_help = "add a numbagrad cpu row compiled under this memory budget (graph/remat.py)"
    ap.add_argument("--memory-budget", metavar="SIZE", help=budget_help)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    if opts.child:
        return paired.child_main(opts.child, setup)
    if opts.quick:
        opts.batches, opts.rounds, opts.calls = "32", 1, 2
    use_torch = paired.torch_available() and not opts.no_torch
    impls = paired.default_impls(["cpu"], use_torch)
    if opts.memory_budget:
        impls.insert(
            1, paired.Impl(f"ng cpu, {opts.memory_budget}", "numbagrad", variant=opts.memory_budget)
        )
    script = os.path.abspath(__file__)
    with tempfile.TemporaryDirectory(prefix="numbagrad-bench-") as tmp:
        weights = {}
        for which in SHAPES:
            weights[which] = f"{tmp}/resnet18_{which}.npz"
            np.savez(weights[which], **fresh_model(which).state_dict())
        cases = [{"model": "cifar", "batch": int(b)} for b in opts.batches.split(",") if b]
        cases += [{"model": "cli", "batch": opts.cli_batch}] if opts.cli_batch else []
        cases = [{**c, "weights": weights[c["model"]]} for c in cases]
        results = paired.run_rounds(
            script, impls, cases, case_name, opts.rounds, opts.calls, opts.warmup
        )
        paired.print_machine(paired.facts_of(results))
        print(f"ResNet-18 training step, {opts.rounds} rounds x {opts.calls} timed calls after "
              f"{opts.warmup} warm-up calls, each row in its own processes")  # fmt: skip
        paired.print_table(cases, results, case_name)
        paired.print_losses(cases, results, case_name)
        if not opts.no_cold_start:
            print("\ntraining-step start in a fresh process, numbagrad cpu, cifar b=32 (s):")
            impl = paired.Impl("numbagrad cpu", "numbagrad")
            case = {"model": "cifar", "batch": 32, "weights": weights["cifar"]}
            paired.fresh_starts(script, impl, case, ("cold", "warm"))
    failed = any(p.error for pooled in results for p in pooled.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
