"""LeNet-5 training-step and inference times: numbagrad next to PyTorch eager, in fresh processes.

    python bench/lenet.py                          # cpu backend: train b=1,64,256, infer b=1,64
    python bench/lenet.py --backends cpu,interp    # several backends in one table
    python bench/lenet.py --quick                  # smoke run: one round, few calls

Rows: numbagrad on each backend; numbagrad cpu in a process that imported torch first
("ng cpu, torch 1st": numbagrad's speed must not depend on it); PyTorch eager. Each row is
measured in fresh child processes, --rounds of them alternated with the other rows, each
timing --calls calls after the first and --warmup more (bench/paired.py: what the columns
and the memory figures mean). Every implementation starts from the same weights (numbagrad's
LeNet-5 at seed 0, saved to a file and loaded through state_dict) and trains with SGD(lr
0.01, momentum 0.9, weight decay 5e-4) on one fixed random batch. "compile" is
ng.compile_training / ng.compile in the child (warm on-disk caches, if any); "first" is the
first call, which includes Numba's lazy compilation or loading. Last, the start of a training
step in a fresh process at batch 64: import + compile_training + the first step with empty
NUMBAGRAD_CACHE_DIR / NUMBA_CACHE_DIR ("cold"), again with the caches that left ("warm"),
then the step that run saved, loaded with ng.load ("load": the compile column is the load).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
import paired  # bench/paired.py (this folder is sys.path[0])

# numbagrad and torch are imported inside the functions: a child process must choose which of
# them it loads, and in which order (paired.py).

LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 5e-4
SHAPE = (1, 32, 32)


def batch(b: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(b)
    return rng.standard_normal((b, *SHAPE), dtype=np.float32), rng.integers(0, 10, b)


def fresh_model():
    """numbagrad's LeNet-5 at seed 0."""
    import numbagrad as ng
    from numbagrad import models

    ng.manual_seed(0)
    return models.lenet5()


def save_weights(path: str) -> str:
    """Write fresh_model()'s state_dict to ``path`` (.npz) for every child to start from."""
    np.savez(path, **fresh_model().state_dict())
    return path


def load_weights(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return dict(f)


def torch_lenet5(state: dict[str, np.ndarray]):
    """PyTorch's twin of models.lenet5() holding ``state`` (a numbagrad state_dict)."""
    import torch

    t = torch.nn
    model = t.Sequential(
        t.Conv2d(1, 6, 5), t.ReLU(), t.MaxPool2d(2),
        t.Conv2d(6, 16, 5), t.ReLU(), t.MaxPool2d(2),
        t.Conv2d(16, 120, 5), t.ReLU(), t.Flatten(),
        t.Linear(120, 84), t.ReLU(), t.Linear(84, 10),
    )  # fmt: skip
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return model


def compile_train_step(model, b: int, shape=SHAPE, **kw):
    """The compiled training step of ``model`` at batch ``b`` of ``shape`` images:
    cross-entropy, SGD(LR, MOMENTUM, WEIGHT_DECAY); ``kw`` goes to ng.compile_training."""
    import numbagrad as ng
    from numbagrad import nn, optim

    return ng.compile_training(
        model,
        loss=nn.CrossEntropyLoss(),
        optimizer=optim.SGD(LR, MOMENTUM, weight_decay=WEIGHT_DECAY),
        inputs=ng.Spec((b, *shape)),
        targets=ng.Spec((b,), "int64"),
        **kw,
    )


def torch_train_step(model, x, y):
    """A PyTorch eager training step on the tensors x, y with the same loss and optimizer."""
    import torch
    import torch.nn.functional as F

    opt = torch.optim.SGD(model.parameters(), LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def torch_setup(child: paired.Child):
    """The PyTorch twin's call for ``child`` (see setup)."""
    import torch

    b, train = child.case["batch"], child.case["kind"] == "train"
    x, y = (torch.from_numpy(a) for a in batch(b))
    model = torch_lenet5(load_weights(child.case["weights"]))
    child.baseline()
    if train:
        return torch_train_step(model, x, y)
    model.eval()

    def infer():
        with torch.no_grad():
            return model(x)

    return infer


def setup(child: paired.Child):
    """The call a child times, for a case {"kind": "train" | "infer", "batch", "weights"},
    plus "start" and "dir" for the fresh-start children (paired.fresh_starts)."""
    if child.impl.library == "torch":
        return torch_setup(child)
    import numbagrad as ng

    case, backend = child.case, child.impl.backend
    b = case["batch"]
    x, y = batch(b)
    model = fresh_model()
    model.load_state_dict(load_weights(case["weights"]))
    child.baseline()
    saved = os.path.join(case.get("dir", ""), "step.npz")
    if case.get("start") == "load":
        step = ng.load(saved)
        return lambda: step(x, y)
    if case["kind"] == "infer":
        predict = ng.compile(model, ng.Spec((b, *SHAPE)), backend=backend)
        return lambda: predict(x)
    step = compile_train_step(model, b, backend=backend)
    if "dir" in case:
        child.at_end(lambda: step.save(saved))
    return lambda: step(x, y)


def case_name(case: dict) -> str:
    return f"{case['kind']} b={case['batch']}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="cpu", help="comma-separated (default cpu)")
    ap.add_argument("--batches", default="1,64,256", help="training batches (1,64,256)")
    ap.add_argument("--infer-batches", default="1,64", help="inference batches (1,64)")
    ap.add_argument("--rounds", type=int, default=5, help="children per row, alternated (5)")
    ap.add_argument("--calls", type=int, default=30, help="timed calls per child (30)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls after the first (3)")
    ap.add_argument("--quick", action="store_true", help="1 round of 5 calls; train b=1,64")
    ap.add_argument("--no-torch", action="store_true", help="skip the rows that need torch")
    ap.add_argument("--no-cold-start", action="store_true", help="skip the fresh-start rows")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    if opts.child:
        return paired.child_main(opts.child, setup)
    if opts.quick:
        opts.batches, opts.infer_batches, opts.rounds, opts.calls, opts.warmup = (
            "1,64",
            "1",
            1,
            5,
            1,
        )
    backends = [s for s in opts.backends.split(",") if s]
    use_torch = paired.torch_available() and not opts.no_torch
    impls = paired.default_impls(backends, use_torch)
    script = os.path.abspath(__file__)
    with tempfile.TemporaryDirectory(prefix="numbagrad-bench-") as tmp:
        weights = save_weights(os.path.join(tmp, "lenet5.npz"))
        cases = [
            {"kind": kind, "batch": int(b), "weights": weights}
            for kind, batches in (("train", opts.batches), ("infer", opts.infer_batches))
            for b in batches.split(",")
            if b
        ]
        results = paired.run_rounds(
            script, impls, cases, case_name, opts.rounds, opts.calls, opts.warmup
        )
        paired.print_machine(paired.facts_of(results))
        print(f"LeNet-5, {opts.rounds} rounds x {opts.calls} timed calls after {opts.warmup} "
              "warm-up calls, each row in its own processes")  # fmt: skip
        paired.print_table(cases, results, case_name)
        paired.print_losses(cases, results, case_name)
        if not opts.no_cold_start:
            for be in backends:
                print(f"\ntraining-step start in a fresh process, numbagrad {be}, batch 64 (s):")
                impl = paired.Impl(f"numbagrad {be}", "numbagrad", be)
                case = {"kind": "train", "batch": 64, "weights": weights}
                paired.fresh_starts(script, impl, case, ("cold", "warm", "load"))
    failed = any(p.error for pooled in results for p in pooled.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
